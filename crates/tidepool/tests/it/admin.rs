//! The admin surface across real processes: `/metrics` counts what clients did, the admin
//! JSON endpoints agree with it, `/query_key` takes no lease, and the admin CLI prints it.

use crate::cluster::{master, node};
use std::process::Command;
use tidepool_client::{Client, ClientConfig};
use tidepool_proto::ReplicateConfig;

fn http_get(addr: &str, path: &str) -> (u16, String) {
    match ureq::get(&format!("http://{addr}{path}")).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

fn json(addr: &str, path: &str) -> serde_json::Value {
    let (code, body) = http_get(addr, path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Value of the sample line `series` (name plus labels, exactly as printed) in `/metrics`.
fn series(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("series {series} missing"))
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_admin_endpoints_and_cli_agree() {
    let m = master(&[]);
    let (rpc, admin) = (m.field("rpc"), m.field("metrics"));
    let n = node(&rpc, "64MB");
    let seg = n.field("segment");
    let c = Client::connect(ClientConfig {
        master_addr: rpc.clone(),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let cfg = ReplicateConfig::default();
    for (k, size) in [("a", 4096usize), ("b", 1 << 20), ("c", 5 << 20)] {
        c.put(k, &vec![7u8; size], &cfg).await.unwrap();
    }
    c.get("a").await.unwrap();
    c.get("b").await.unwrap();
    assert!(c.get("missing").await.is_err());

    let text = http_get(&admin, "/metrics").1;
    assert_eq!(series(&text, "master_put_start_requests_total"), 3.0);
    assert_eq!(series(&text, "master_put_end_requests_total"), 3.0);
    assert_eq!(series(&text, "master_get_replica_list_requests_total"), 3.0);
    assert_eq!(series(&text, "master_get_replica_list_failures_total"), 1.0);
    assert_eq!(series(&text, "valid_get_nums_"), 2.0);
    assert_eq!(series(&text, "total_get_nums_"), 3.0);
    assert_eq!(series(&text, "mem_cache_hit_nums_"), 2.0);
    assert_eq!(
        series(&text, "mem_cache_hit_bytes_total"),
        (4096 + (1 << 20)) as f64
    );
    assert_eq!(series(&text, "master_value_size_bytes_count"), 3.0);
    assert_eq!(
        series(&text, "master_value_size_bytes_bucket{le=\"4096\"}"),
        1.0
    );
    assert_eq!(
        series(&text, "master_value_size_bytes_bucket{le=\"1048576\"}"),
        2.0
    );
    assert_eq!(series(&text, "master_key_count"), 3.0);
    assert!(series(&text, "master_mount_segment_requests_total") >= 1.0);
    assert_eq!(
        series(
            &text,
            "tidepool_rpc_latency_seconds_count{op=\"get_replicas\"}"
        ),
        3.0
    );
    let allocated = series(&text, "master_allocated_bytes") as u64;
    assert!(allocated >= 4096 + (1 << 20) + (5 << 20));

    // Lookups without a lease: after query_key and batch_query_keys, "c" (never read) can
    // still be removed without force.
    let q = json(&admin, "/query_key?key=c");
    assert_eq!(q["data"][0]["size_"], 5 << 20);
    let b = json(&admin, "/batch_query_keys?keys=c,missing");
    assert_eq!(b["data"]["c"]["ok"], true);
    assert_eq!(b["data"]["missing"]["ok"], false);
    assert_eq!(b["data"]["missing"]["error"], "OBJECT_NOT_FOUND");
    let (code, body) = http_get(&admin, "/query_key?key=missing");
    assert_eq!(code, 404);
    assert!(body.contains("-704"), "{body}");
    assert_eq!(c.batch_remove(&["c"], false).await, vec![0]);

    let d = json(&admin, "/get_segments_detail");
    assert_eq!(d["total_segments"], 1);
    assert_eq!(d["segments"][0]["segment_name"], seg.as_str());
    let used = d["segments"][0]["allocator_used_bytes"].as_u64().unwrap();
    assert_eq!(used, allocated - (5 << 20));
    let (code, body) = http_get(&admin, &format!("/query_segment?segment={seg}"));
    assert_eq!(code, 200);
    assert!(body.contains(&format!("Used(bytes): {used}\n")), "{body}");
    assert!(body.contains("Capacity(bytes): 67108864"), "{body}");
    assert_eq!(http_get(&admin, "/query_segment?segment=nope").0, 404);

    let dash = json(&admin, "/api/v1/dashboard");
    assert_eq!(dash["key_count"], 2);
    assert_eq!(dash["allocated_bytes"], used);
    assert_eq!(dash["role"], "leader");
    let (code, page) = http_get(&admin, "/dashboard");
    assert_eq!(code, 200);
    assert!(page.contains("/assets/dashboard.js"));
    assert!(
        http_get(&admin, "/assets/dashboard.js")
            .1
            .contains("/api/v1/dashboard")
    );

    // The admin CLI reads the same figures.
    let (code, out) = cli(&["status", "--admin", &admin]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 (0 soft-pinned)"), "{out}");
    assert!(out.contains("66.7 % (2 hits / 3 lookups)"), "{out}");
    let (code, out) = cli(&["segments", "--admin", &admin]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&seg), "{out}");
    assert!(out.contains("64.0 MiB"), "{out}");
    let (code, out) = cli(&["key", "b", "--admin", &admin]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 replica(s)") && out.contains("1.0 MiB"),
        "{out}"
    );
    let (code, out) = cli(&["key", "missing", "--admin", &admin]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("OBJECT_NOT_FOUND"), "{out}");

    // remove_all over HTTP: POST only, and it empties the pool.
    assert_eq!(http_get(&admin, "/api/v1/remove_all?force=true").0, 405);
    let r = ureq::post(&format!("http://{admin}/api/v1/remove_all?force=true"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let r: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert_eq!(r["removed"], 2);
    let text = http_get(&admin, "/metrics").1;
    assert_eq!(series(&text, "master_key_count"), 0.0);
    assert_eq!(series(&text, "master_remove_all_requests_total"), 1.0);
    c.close().await.unwrap();
}

#[test]
fn admin_cli_reports_an_unreachable_master() {
    // Port 1 on loopback: nothing listens there.
    let (code, out) = cli(&["status", "--admin", "127.0.0.1:1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot reach"), "{out}");
}
