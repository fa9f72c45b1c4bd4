//! Store semantics across real processes.

use crate::cluster::{master, node};
use std::io::{Read, Write};
use std::time::Duration;
use tidepool_client::{Client, ClientConfig};
use tidepool_common::ErrorCode;
use tidepool_proto::ReplicateConfig;

async fn client(rpc: &str) -> Client {
    Client::connect(ClientConfig {
        master_addr: rpc.to_string(),
        ..ClientConfig::default()
    })
    .await
    .expect("client connects")
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_exist_remove_across_processes() {
    let m = master(&["--default_kv_lease_ttl=300"]);
    let rpc = m.field("rpc");
    let _n = node(&rpc, "64MB");
    let c = client(&rpc).await;
    let cfg = ReplicateConfig::default();
    for (i, size) in [1usize, 4096, 1 << 20, 5 << 20].into_iter().enumerate() {
        let key = format!("obj-{i}");
        let data = pattern(i as u8, size);
        c.put(&key, &data, &cfg).await.expect("put");
        assert_eq!(c.get(&key).await.expect("get"), data);
        // A larger buffer receives the object and reports its size.
        let mut big = vec![0u8; size + 100];
        assert_eq!(
            c.get_into(&key, &mut big).await.expect("get_into"),
            size as u64
        );
        assert_eq!(&big[..size], &data[..]);
    }
    // Write-once: a second put of the same key succeeds and changes nothing.
    c.put("obj-1", b"other bytes", &cfg)
        .await
        .expect("second put");
    assert_eq!(c.get("obj-1").await.unwrap(), pattern(1, 4096));
    // A buffer smaller than the object is refused.
    let mut small = vec![0u8; 10];
    assert_eq!(
        c.get_into("obj-1", &mut small).await.unwrap_err().code(),
        ErrorCode::InvalidParams
    );
    assert_eq!(c.batch_exist(&["obj-0", "nope"]).await, vec![1, 0]);
    assert_eq!(
        c.get("nope").await.unwrap_err().code(),
        ErrorCode::ObjectNotFound
    );
    // Leased by the exist above: remove is refused until the TTL passes, unless forced.
    assert_eq!(
        c.batch_remove(&["obj-0"], false).await,
        vec![ErrorCode::ObjectHasLease.as_i32()]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        c.batch_remove(&["obj-0", "nope"], false).await,
        vec![0, ErrorCode::ObjectNotFound.as_i32()]
    );
    assert_eq!(c.batch_exist(&["obj-0"]).await, vec![0]);
    assert_eq!(c.batch_remove(&["obj-2"], true).await, vec![0]);
    let n = c.remove_all(true).await.unwrap();
    assert_eq!(n, 2);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_survives_node_death() {
    let m = master(&["--client_ttl=1"]);
    let rpc = m.field("rpc");
    let mut a = node(&rpc, "32MB");
    let _b = node(&rpc, "32MB");
    let c = client(&rpc).await;
    let cfg = ReplicateConfig {
        replica_num: 2,
        ..ReplicateConfig::default()
    };
    let data = pattern(9, 3 << 20);
    c.put("replicated", &data, &cfg).await.expect("put");
    a.kill9();
    // Within client_ttl + 1 s the master drops the dead node; the other replica serves.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        c.get("replicated").await.expect("get after node death"),
        data
    );
    assert_eq!(c.batch_exist(&["replicated"]).await, vec![1]);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pool_evicts_instead_of_failing() {
    let m = master(&["--default_kv_lease_ttl=200"]);
    let rpc = m.field("rpc");
    let _n = node(&rpc, "16MB");
    let c = client(&rpc).await;
    let cfg = ReplicateConfig::default();
    let data = pattern(3, 1 << 20);
    // Three times the capacity: eviction must make room for every put.
    for i in 0..48 {
        c.put(&format!("fill-{i}"), &data, &cfg)
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
    }
    // The newest object is readable.
    assert_eq!(c.get("fill-47").await.unwrap(), data);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_leave_the_master_serving() {
    let m = master(&[]);
    let rpc = m.field("rpc");
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xffu8; 64][..],
        &[0u8; 31][..],
    ] {
        let mut s = std::net::TcpStream::connect(&rpc).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(junk).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let _n = node(&rpc, "8MB");
    let c = client(&rpc).await;
    c.put("after-junk", b"still serving", &ReplicateConfig::default())
        .await
        .unwrap();
    assert_eq!(c.get("after-junk").await.unwrap(), b"still serving");
    c.close().await.unwrap();
}

#[test]
fn unknown_master_flag_exits_1() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .args(["master", "--definitely_not_a_flag=3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

fn metric(metrics_addr: &str, name: &str) -> u64 {
    let body = ureq::get(&format!("http://{metrics_addr}/metrics"))
        .call()
        .expect("metrics")
        .into_string()
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// W1: a writer killed with SIGKILL in the middle of large puts leaves no in-flight space
/// behind once its client TTL passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_mid_put_releases_its_space() {
    // 2 s, not 1: a loaded 2-core CI machine must not starve the node's heartbeats.
    let m = master(&["--client_ttl=2"]);
    let (rpc, metrics) = (m.field("rpc"), m.field("metrics"));
    let _n = node(&rpc, "512MB");
    let mut writer = std::process::Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .args([
            "bench", "--master", &rpc, "--sizes", "32MiB", "--total", "480MiB", "--batch", "1",
            "--no-shm",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while it is writing: wait until some objects exist, then SIGKILL at once.
    let t = std::time::Instant::now();
    // With batch 1 at most one put is in flight, so 4 keys mean at least 3 committed.
    while metric(&metrics, "master_key_count") < 4 && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.kill().unwrap();
    let _ = writer.wait();
    let killed = std::time::Instant::now();
    // The writer is declared dead within client_ttl (+ the master's scan period).
    while metric(&metrics, "master_active_clients") > 1 {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "dead writer not reaped within client_ttl + 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dead writer: every in-flight put was revoked, so allocated bytes are exactly the
    // committed objects' bytes, and those survive in the node's segment.
    let keys = metric(&metrics, "master_key_count");
    assert!(keys >= 3);
    assert_eq!(
        metric(&metrics, "master_allocated_bytes"),
        keys * (32 << 20)
    );
    assert_eq!(
        metric(&metrics, "master_active_clients"),
        1,
        "only the node remains"
    );
    // The pool takes new puts.
    let c = client(&rpc).await;
    c.put(
        "after-kill",
        &pattern(5, 1 << 20),
        &ReplicateConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(c.get("after-kill").await.unwrap(), pattern(5, 1 << 20));
    c.close().await.unwrap();
}
