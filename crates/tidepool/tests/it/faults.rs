//! Failures across real processes: a writer killed mid-put (W1), a node restarted under the
//! same name (W7), and garbage sent to the data port.

use crate::cluster::{
    die_with_parent, eventually, free_port, http_get, master, metric, node, node_with,
};
use std::io::{Read, Write};
use std::time::Duration;
use tidepool_client::{Client, ClientConfig};
use tidepool_proto::ReplicateConfig;

async fn client(rpc: &str) -> Client {
    Client::connect(ClientConfig {
        master_addr: rpc.to_string(),
        ..ClientConfig::default()
    })
    .await
    .expect("client connects")
}

/// W1 (contract §7): `kill -9` a writer inside a large put; within client_ttl + 1 s the key
/// is absent, a new put of it succeeds, `get` returns the new bytes, and
/// `master_allocated_bytes` is back where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_mid_put_is_revoked() {
    // 3 s: the node must keep heartbeating while a debug build on a loaded 2-core machine
    // pushes half a GiB through it.
    let m = master(&["--client_ttl=3"]);
    let (rpc, metrics) = (m.field("rpc"), m.field("metrics"));
    let _n = node(&rpc, "600MB");
    let before = metric(&metrics, "master_allocated_bytes");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidepool"));
    die_with_parent(&mut cmd);
    let mut writer = cmd
        .args([
            "fill", "--master", &rpc, "--prefix", "big", "--count", "1", "--size", "512MiB",
            "--no-shm",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The put is in flight once the master knows the key: query_key answers -703
    // (REPLICA_IS_NOT_READY, contract §4.4) while it is being written.
    let query = format!("http://{metrics}/query_key?key=big-0");
    let started = eventually(Duration::from_secs(20), || {
        let (code, body) = http_get(&query);
        code == 200 || body.contains("-703")
    })
    .await;
    assert!(started, "the writer never started its put");
    assert!(metric(&metrics, "master_allocated_bytes") >= before + (512 << 20));
    writer.kill().unwrap();
    let _ = writer.wait();
    let killed = std::time::Instant::now();
    let c = client(&rpc).await;
    let gone = eventually(Duration::from_secs(5), || {
        metric(&metrics, "master_allocated_bytes") == before
    })
    .await;
    assert!(gone, "in-flight space was not released");
    assert!(
        killed.elapsed() < Duration::from_secs(4) + Duration::from_millis(500),
        "released after {:?}, beyond client_ttl + 1 s",
        killed.elapsed()
    );
    assert_eq!(c.batch_exist(&["big-0"]).await, vec![0]);
    let fresh = vec![0xA5u8; 3 << 20];
    c.put("big-0", &fresh, &ReplicateConfig::default())
        .await
        .expect("new put of the revoked key");
    assert_eq!(c.get("big-0").await.unwrap(), fresh);
    assert_eq!(
        metric(&metrics, "tidepool_dead_clients_total"),
        1,
        "only the writer died (the node kept heartbeating)"
    );
    c.close().await.unwrap();
}

/// W7: a node killed with SIGKILL and restarted under the same `host:port` sets up again, and
/// its metadata entries (which the dead process left behind) are rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_under_the_same_name() {
    let m = master(&[
        "--enable_http_metadata_server",
        "--http_metadata_server_host=127.0.0.1",
        "--http_metadata_server_port=0",
    ]);
    let rpc = m.field("rpc");
    let meta = format!("http://{}/metadata", m.field("metadata"));
    let name = format!("127.0.0.1:{}", free_port());
    let host = format!("--host={name}");
    let md = format!("--metadata_server={meta}");
    let mut first = node_with(&rpc, "16MB", &[&host, &md]);
    assert_eq!(first.field("segment"), name);
    let rpc_key = format!(
        "{meta}?key=mooncake%2Frpc_meta%2F{}",
        name.replace(':', "%3A")
    );
    assert_eq!(http_get(&rpc_key).0, 200, "rpc_meta published");
    first.kill9();
    // Same name, right away: the stale rpc_meta entry and the still-mounted dead segment must
    // not block setup.
    let second = node_with(&rpc, "16MB", &[&host, &md]);
    assert_eq!(second.field("segment"), name);
    let (status, body) = http_get(&rpc_key);
    assert_eq!(status, 200);
    assert!(body.contains("rpc_port"), "{body}");
    let c = client(&rpc).await;
    c.put("after-restart", b"fresh node", &ReplicateConfig::default())
        .await
        .unwrap();
    assert_eq!(c.get("after-restart").await.unwrap(), b"fresh node");
    let segments = http_get(&format!("http://{}/get_all_segments", m.field("metrics"))).1;
    assert_eq!(
        segments,
        format!("{name}\n"),
        "only the new incarnation is mounted"
    );
    c.close().await.unwrap();
    drop(second);
}

/// Garbage on a node's data port closes that connection only; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_leave_the_node_serving() {
    let m = master(&[]);
    let rpc = m.field("rpc");
    let n = node(&rpc, "8MB");
    let data = n.field("data");
    // A frame with a valid header whose message does not decode, then plain junk.
    let mut bad_msg = Vec::new();
    bad_msg.extend_from_slice(&tidepool_proto::frame::MAGIC.to_le_bytes());
    bad_msg.extend_from_slice(&tidepool_proto::PROTOCOL_VERSION.to_le_bytes());
    bad_msg.push(1); // request
    bad_msg.push(0);
    bad_msg.extend_from_slice(&9u64.to_le_bytes());
    bad_msg.extend_from_slice(&3u32.to_le_bytes());
    bad_msg.extend_from_slice(&0u32.to_le_bytes());
    bad_msg.extend_from_slice(&0u64.to_le_bytes());
    bad_msg.extend_from_slice(&[0xff, 0xff, 0xff]);
    for junk in [
        &bad_msg[..],
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xffu8; 64][..],
    ] {
        let mut s = std::net::TcpStream::connect(&data).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(junk).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        if junk == &bad_msg[..] {
            // Answered with an error frame (-600) instead of silence.
            assert!(
                answer.len() >= tidepool_proto::frame::HEADER_LEN,
                "no error answer"
            );
        }
    }
    let c = client(&rpc).await;
    c.put(
        "after-junk",
        b"node still serving",
        &ReplicateConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(c.get("after-junk").await.unwrap(), b"node still serving");
    c.close().await.unwrap();
}

/// W5 (contract §7, §8): a master restarted with live clients serves the objects whose bytes
/// are still in live segments. The node re-mounts with its directory and every object comes
/// back under its old id; replicas kept on two owners come back as two replicas; new puts,
/// removes and reads work as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_master_serves_the_objects_still_in_live_segments() {
    let port = free_port();
    let flags = [format!("--rpc_port={port}"), "--client_ttl=3".to_string()];
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut m = master(&flag_refs);
    let rpc = m.field("rpc");
    let _a = node(&rpc, "32MB");
    let _b = node(&rpc, "32MB");
    let c = client(&rpc).await;
    let one = ReplicateConfig::default();
    let two = ReplicateConfig {
        replica_num: 2,
        ..ReplicateConfig::default()
    };
    let data = |i: usize| -> Vec<u8> { (0..100_000).map(|j| (i * 7 + j) as u8).collect() };
    let keys: Vec<String> = (0..8).map(|i| format!("w5/{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let cfg = if i % 2 == 0 { &one } else { &two };
        c.put(k, &data(i), cfg)
            .await
            .expect("put before the restart");
    }
    let before = c.lookup(&["w5/1"]).await.remove(0).expect("lookup");
    assert_eq!(before.replicas.len(), 2);
    // A removed object must not come back.
    assert_eq!(c.batch_remove(&["w5/7"], true).await, vec![0]);

    m.kill9();
    let m = master(&flag_refs);
    assert_eq!(m.field("rpc"), rpc);
    let want: Vec<i32> = (0..7).map(|_| 1).collect();
    let live: Vec<&str> = keys[..7].iter().map(String::as_str).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    // Every kept master connection now leads to the dead master: each is replaced on first
    // use and the call sent again, so no call fails (objects may still be missing until the
    // owners re-mount).
    let mut seen = c.batch_exist(&live).await;
    assert!(seen.iter().all(|&r| r >= 0), "call after restart: {seen:?}");
    while seen != want && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = c.batch_exist(&live).await;
        assert!(seen.iter().all(|&r| r >= 0), "call after restart: {seen:?}");
    }
    assert_eq!(seen, want, "objects not restored after the master restart");
    for (i, k) in live.iter().enumerate() {
        assert_eq!(
            c.get(k).await.expect("get after the restart"),
            data(i),
            "{k}"
        );
    }
    // Each node re-mounts on its own heartbeat: the second replica follows the first.
    let mut after = c.lookup(&["w5/1"]).await.remove(0).expect("lookup");
    while after.replicas.len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = c.lookup(&["w5/1"]).await.remove(0).expect("lookup");
    }
    assert_eq!(
        after.object_id, before.object_id,
        "restored under its old id"
    );
    assert_eq!(after.replicas.len(), 2, "both replicas restored");
    assert_eq!(
        c.batch_exist(&["w5/7"]).await,
        vec![0],
        "a removed object came back"
    );
    // The restored pool works as any other: put, remove (acknowledged by the owner), put again.
    c.put("w5/new", b"after the restart", &one)
        .await
        .expect("put after restart");
    assert_eq!(c.get("w5/new").await.unwrap(), b"after the restart");
    assert_eq!(c.batch_remove(&["w5/0"], true).await, vec![0]);
    assert_eq!(c.batch_exist(&["w5/0"]).await, vec![0]);
    let _ = m;
    c.close().await.unwrap();
}
