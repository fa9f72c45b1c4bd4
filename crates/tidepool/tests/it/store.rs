//! Store semantics across real processes.

use crate::cluster::{eventually, master, node};
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
    let m = master(&["--client_ttl=2"]);
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
    // Reads retry on the other replica at once, before the master notices the death.
    assert_eq!(
        c.get("replicated")
            .await
            .expect("get right after node death"),
        data
    );
    // Within client_ttl + 1 s the master drops the dead node; the other replica serves.
    let metrics = m.field("metrics");
    assert!(
        eventually(Duration::from_secs(4), || crate::cluster::metric(
            &metrics,
            "master_active_clients"
        ) == 2)
        .await,
        "dead node not reaped"
    );
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

/// A pool full of leased data refuses puts with -200 (NO_AVAILABLE_HANDLE), and the same put
/// succeeds once the leases run out and eviction can make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_leased_pool_gives_200_then_succeeds() {
    // Proactive eviction off: at 8 of 8 MiB it would rightly evict the one object not yet
    // leased (the one just put) before this test's `exist` leases it. Reactive eviction in the
    // put path is what is under test.
    let m = master(&[
        "--default_kv_lease_ttl=1500",
        "--eviction_high_watermark_ratio=1.0",
    ]);
    let rpc = m.field("rpc");
    let _n = node(&rpc, "8MB");
    let c = client(&rpc).await;
    let cfg = ReplicateConfig::default();
    let data = pattern(4, 1 << 20);
    let mut stored = 0;
    for i in 0..8 {
        let key = format!("leased-{i}");
        match c.put(&key, &data, &cfg).await {
            Ok(()) => {
                assert_eq!(
                    c.batch_exist(&[key.as_str()]).await,
                    vec![1],
                    "exist grants a lease"
                );
                stored += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::NoAvailableHandle);
                break;
            }
        }
    }
    assert!(stored >= 6, "most of the pool was filled: {stored}");
    let err = c.put("one-more", &data, &cfg).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NoAvailableHandle, "{err}");
    // After the TTL the leased objects are evictable again: the put goes through.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    c.put("one-more", &data, &cfg)
        .await
        .expect("put after leases expired");
    assert_eq!(c.get("one-more").await.unwrap(), data);
    c.close().await.unwrap();
}

/// W3: filled to 97 % with unleased objects, the pool is back under (hwm - ratio) within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proactive_eviction_within_a_second() {
    let m = master(&[]);
    let (rpc, metrics) = (m.field("rpc"), m.field("metrics"));
    let _n = node(&rpc, "64MB");
    let c = client(&rpc).await;
    let cfg = ReplicateConfig::default();
    let cap = crate::cluster::metric(&metrics, "master_total_capacity_bytes");
    let obj = 1 << 20;
    let data = pattern(7, obj);
    // 62 x 1 MiB = 97 % of 64 MiB in ONE batch, so the pool really reaches 97 % before the
    // next eviction tick (one-by-one puts would be trimmed at 90 % along the way); never
    // read, so nothing holds a lease.
    let keys: Vec<String> = (0..62).map(|i| format!("w3-{i}")).collect();
    let parts = [&data[..]];
    let items: Vec<(&str, &[&[u8]])> = keys.iter().map(|k| (k.as_str(), &parts[..])).collect();
    for r in c.put_parts_batch(&items, &cfg).await {
        r.unwrap();
    }
    let filled = std::time::Instant::now();
    let target = (0.90 - 0.05) * cap as f64;
    let under = eventually(Duration::from_secs(1), || {
        (crate::cluster::metric(&metrics, "master_allocated_bytes") as f64) <= target
    })
    .await;
    assert!(
        under,
        "usage above hwm - ratio {:?} after filling",
        filled.elapsed()
    );
    // One batch is one instant: it ranks its first keys warmest (a KV-cache engine writes a
    // request's blocks in prefix order, and a block is useless without those before it), so
    // eviction took the batch's tail.
    assert_eq!(c.get("w3-0").await.unwrap(), data);
    assert_eq!(
        c.get("w3-61").await.unwrap_err().code(),
        ErrorCode::ObjectNotFound
    );
    c.close().await.unwrap();
}

/// A batch large enough to be cut into concurrent chunks answers per item in order: a key
/// given twice (in two chunks) is stored once, with one of the two values, and both report
/// success; an empty key fails alone; every object reads back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batch_put_in_chunks() {
    let m = master(&[]);
    let rpc = m.field("rpc");
    let _n = node(&rpc, "64MB");
    let c = client(&rpc).await;
    let mut keys: Vec<String> = (0..1100).map(|i| format!("big-{i}")).collect();
    keys[1000] = keys[10].clone();
    keys[500] = String::new();
    let values: Vec<Vec<u8>> = (0..1100).map(|i| pattern(i as u8, 1000 + i % 7)).collect();
    let parts: Vec<[&[u8]; 1]> = values.iter().map(|v| [&v[..]]).collect();
    let items: Vec<(&str, &[&[u8]])> = keys
        .iter()
        .zip(&parts)
        .map(|(k, p)| (k.as_str(), &p[..]))
        .collect();
    let results = c.put_parts_batch(&items, &ReplicateConfig::default()).await;
    assert_eq!(results.len(), 1100);
    for (i, r) in results.iter().enumerate() {
        if i == 500 {
            assert_eq!(r.as_ref().unwrap_err().code(), ErrorCode::InvalidParams);
        } else {
            assert!(r.is_ok(), "item {i}: {r:?}");
        }
    }
    for (i, k) in keys.iter().enumerate() {
        if i == 500 || i == 1000 || i == 10 {
            continue;
        }
        assert!(c.get(k).await.unwrap() == values[i], "{k}: wrong bytes");
    }
    let twice = c.get(&keys[10]).await.unwrap();
    assert!(
        twice == values[10] || twice == values[1000],
        "the duplicated key holds one of its two values"
    );
    c.close().await.unwrap();
}

/// W12: a put acknowledged to one client is immediately readable, byte for byte, by another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_immediate_get_from_another_client() {
    let m = master(&[]);
    let rpc = m.field("rpc");
    let _n = node(&rpc, "64MB");
    let writer = client(&rpc).await;
    let reader = client(&rpc).await;
    let cfg = ReplicateConfig::default();
    for i in 0..2000u32 {
        let len = 1 + (i as usize * 7919) % (256 << 10);
        let data = pattern(i as u8, len);
        let key = format!("w12-{i}");
        writer.put(&key, &data, &cfg).await.unwrap();
        let got = reader
            .get(&key)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert!(got == data, "torn or stale read of {key}");
        if i % 64 == 63 {
            let old: Vec<String> = (i - 63..=i).map(|k| format!("w12-{k}")).collect();
            let old: Vec<&str> = old.iter().map(String::as_str).collect();
            reader.batch_remove(&old, true).await;
        }
    }
    writer.close().await.unwrap();
    reader.close().await.unwrap();
}

/// The client HTTP endpoint (contract §4.5) of a node that enables it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_http_endpoint() {
    use crate::cluster::{http_get, node_with};
    let m = master(&[]);
    let rpc = m.field("rpc");
    let n = node_with(
        &rpc,
        "8MB",
        &[
            "--host=127.0.0.1",
            "--metadata_server=P2PHANDSHAKE",
            "--enable_http_server",
            "--http_port=0",
        ],
    );
    let base = format!("http://{}", n.field("http"));
    let (status, body) = http_get(&format!("{base}/health"));
    assert_eq!(status, 200);
    assert!(body.contains(r#""status":"healthy""#), "{body}");
    let (status, text) = http_get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    let hb = text
        .lines()
        .find_map(|l| l.strip_prefix("mooncake_client_rpc_count{rpc=\"heartbeat\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("heartbeat count");
    assert!(hb >= 1, "the node heartbeats: {hb}");
    assert!(text.contains("mooncake_transfer_put_latency_bucket"));
    assert_eq!(http_get(&format!("{base}/metrics/summary")).0, 200);
}

/// Calls driven from a thread of the caller's own (`on_caller_thread`, as the Python binding
/// does) use blocking sockets to the master and, for seals and transfers up to 1 MiB, to the
/// owner: puts through shared memory (sealed over a blocking lane) are read back at once by a
/// TCP-only reader (the owner's directory holds the seal, so its `expect` check passes) and
/// through the mapping; the TCP client's own puts, small (blocking lane) and split over the
/// runtime's lanes, read back on both paths; once the owner dies, a put fails promptly with
/// -800, and once the master dies, calls fail with -900, instead of hanging.
#[test]
fn caller_thread_calls_over_blocking_sockets() {
    use tidepool_client::rpc::on_caller_thread;
    let mut m = master(&["--default_kv_lease_ttl=300"]);
    let rpc = m.field("rpc");
    let mut n = node(&rpc, "64MB");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let writer = rt.block_on(client(&rpc));
    let reader = rt
        .block_on(Client::connect(ClientConfig {
            master_addr: rpc.clone(),
            enable_shm: false,
            ..ClientConfig::default()
        }))
        .expect("tcp reader connects");
    on_caller_thread(|| {
        rt.block_on(async {
            for i in 0..40u8 {
                let key = format!("ct-{i}");
                let value = pattern(i, 20_000 + usize::from(i) * 1000);
                writer
                    .put(&key, &value, &ReplicateConfig::default())
                    .await
                    .expect("put on a caller thread");
                assert_eq!(reader.get(&key).await.expect("tcp read"), value, "{key}");
                assert_eq!(writer.get(&key).await.expect("shm read"), value, "{key}");
            }
            for (i, len) in [4096usize, 1 << 20, (3 << 20) + 17].into_iter().enumerate() {
                let key = format!("tcp-{i}");
                let value = pattern(i as u8 + 100, len);
                reader
                    .put(&key, &value, &ReplicateConfig::default())
                    .await
                    .expect("tcp put on a caller thread");
                assert_eq!(reader.get(&key).await.expect("tcp read"), value, "{key}");
                assert_eq!(writer.get(&key).await.expect("shm read"), value, "{key}");
            }
            assert_eq!(writer.batch_exist(&["ct-0", "ct-none"]).await, vec![1, 0]);
        })
    });
    n.kill9();
    let started = std::time::Instant::now();
    let r = on_caller_thread(|| {
        rt.block_on(reader.put("after-owner", &[7u8; 4096], &ReplicateConfig::default()))
    });
    let err = r.expect_err("the owner is gone");
    assert_eq!(err.code(), ErrorCode::TransferFail, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    m.kill9();
    let started = std::time::Instant::now();
    let r = on_caller_thread(|| rt.block_on(writer.get("ct-1")));
    let err = r.expect_err("the master is gone");
    assert!(
        matches!(err.code(), ErrorCode::RpcFail | ErrorCode::RpcTimeout),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(writer);
    drop(reader);
}

/// A caller thread's connections are served by master threads of their own (`Dedicate`):
/// requests from several caller threads at once are answered, and such a connection, idle,
/// does not hold up the master's exit on SIGTERM.
#[test]
fn dedicated_master_connections_answer_and_let_the_master_stop() {
    use tidepool_client::rpc::on_caller_thread;
    let mut m = master(&[]);
    let rpc = m.field("rpc");
    let _n = node(&rpc, "16MB");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = std::sync::Arc::new(rt.block_on(client(&rpc)));
    let rt = std::sync::Arc::new(rt);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (c, rt) = (c.clone(), rt.clone());
            std::thread::spawn(move || {
                on_caller_thread(|| {
                    for i in 0..50 {
                        let key = format!("ded-{t}-{i}");
                        rt.block_on(c.put(&key, &[t as u8; 512], &ReplicateConfig::default()))
                            .expect("put");
                        assert_eq!(rt.block_on(c.batch_exist(&[&key, "ded-none"])), vec![1, 0]);
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().expect("caller thread");
    }
    // The master is on this host: the caller threads' connections use its abstract Unix
    // socket (listed with the name of the listener, once per accepted connection).
    let name = format!("@tidepool-master/{rpc}");
    let unix = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    let n = unix.lines().filter(|l| l.ends_with(&name)).count();
    assert!(n >= 2, "{n} sockets named {name}");
    // ... and their requests go through mailboxes the master has mapped.
    assert!(master_mailboxes(m.child.id()) >= 2);
    let pid = nix::unistd::Pid::from_raw(m.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let started = std::time::Instant::now();
    loop {
        if m.child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "master still running {:?} after SIGTERM",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mailboxes (`tidepool-mailbox` memfds) the master process has mapped.
fn master_mailboxes(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("master maps");
    maps.lines()
        .filter(|l| l.contains("memfd:tidepool-mailbox"))
        .count()
}

/// A caller thread's master calls go through a mailbox, and messages too large for it (a
/// 10 000-key batch put, exist and lookup: about 1 MiB each way) go over the socket beside it:
/// every answer is right, and small calls after them still are (the two stay in step). All of
/// one thread's calls go over one connection.
#[test]
fn master_mailbox_carries_small_and_oversized_messages() {
    use tidepool_client::rpc::on_caller_thread;
    let m = master(&["--default_kv_lease_ttl=100"]);
    let rpc = m.field("rpc");
    let _n = node(&rpc, "64MB");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let before = master_mailboxes(m.child.id());
    let c = rt.block_on(client(&rpc));
    let keys: Vec<String> = (0..10_000).map(|i| format!("{i:0>96}")).collect();
    let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let values: Vec<Vec<u8>> = (0..keys.len()).map(|i| pattern(i as u8, 64)).collect();
    let parts: Vec<[&[u8]; 1]> = values.iter().map(|v| [&v[..]]).collect();
    let items: Vec<(&str, &[&[u8]])> = refs.iter().zip(&parts).map(|(k, p)| (*k, &p[..])).collect();
    on_caller_thread(|| {
        rt.block_on(async {
            for r in c
                .store_parts_batch(&items, &ReplicateConfig::default(), false)
                .await
            {
                r.expect("batch put");
            }
            assert!(c.batch_exist(&refs).await.iter().all(|&x| x == 1));
            let views = c.lookup(&refs).await;
            assert_eq!(views.len(), keys.len());
            for v in &views {
                assert_eq!(v.as_ref().expect("lookup").size, 64);
            }
            for i in [0usize, 4321, 9999] {
                assert_eq!(c.get(&keys[i]).await.expect("get"), values[i]);
                assert_eq!(c.batch_exist(&[&keys[i], "mbx-none"]).await, vec![1, 0]);
            }
            c.put("mbx-small", &[9u8; 4096], &ReplicateConfig::default())
                .await
                .expect("small put after the large ones");
            assert_eq!(c.get("mbx-small").await.expect("get"), vec![9u8; 4096]);
        })
    });
    // One thread, one connection: its calls keep to the connection it used last (rotating
    // over the pool would have opened, and dedicated a master thread to, every one of them).
    assert_eq!(master_mailboxes(m.child.id()) - before, 1);
}

/// Something else holds the master's Unix socket name (a process that hangs up at once, one
/// that never answers): caller-thread connections fall back to TCP within the `Hello` timeout,
/// and every call succeeds.
#[test]
fn master_unix_socket_impostors_fall_back_to_tcp() {
    use std::os::linux::net::SocketAddrExt;
    use tidepool_client::rpc::on_caller_thread;
    for silent in [false, true] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let name = format!("tidepool-master/127.0.0.1:{port}");
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let fake = std::os::unix::net::UnixListener::bind_addr(&sa).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in fake.incoming().flatten() {
                if silent {
                    held.push(s);
                }
            }
        });
        let m = master(&[&format!("--rpc_port={port}")]);
        let rpc = m.field("rpc");
        assert_eq!(rpc, format!("127.0.0.1:{port}"));
        let _n = node(&rpc, "16MB");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let c = rt.block_on(client(&rpc));
        let started = std::time::Instant::now();
        on_caller_thread(|| {
            for i in 0..20 {
                let key = format!("imp-{silent}-{i}");
                rt.block_on(c.put(&key, &pattern(3, 4096), &ReplicateConfig::default()))
                    .expect("put");
                assert_eq!(rt.block_on(c.batch_exist(&[&key])), vec![1]);
                assert_eq!(rt.block_on(c.get(&key)).expect("get"), pattern(3, 4096));
            }
        });
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "silent={silent}: {:?}",
            started.elapsed()
        );
    }
}

async fn client_with_segment(rpc: &str, segment_size: u64) -> Client {
    Client::connect(ClientConfig {
        master_addr: rpc.to_string(),
        segment_size,
        ..ClientConfig::default()
    })
    .await
    .expect("client connects")
}

/// Contract §8: a remove answers 0 only once the owner dropped the object from its
/// directory, so a master rebuilt from the directories cannot bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removes_are_dropped_from_the_owner_directory_before_they_return() {
    let m = master(&[]);
    let rpc = m.field("rpc");
    // The only segment of the cluster is the owner client's, so every replica lands there.
    let owner = client_with_segment(&rpc, 16 << 20).await;
    let writer = client(&rpc).await;
    let cfg = ReplicateConfig::default();
    let keys: Vec<String> = (0..6).map(|i| format!("dir/{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        writer
            .put(k, &pattern(i as u8, 64 << 10), &cfg)
            .await
            .expect("put");
    }
    let held = |c: &Client| -> Vec<String> {
        let mut v: Vec<String> = c.segment_directory().into_iter().map(|s| s.key).collect();
        v.sort();
        v
    };
    assert_eq!(held(&owner), keys);
    assert_eq!(
        writer.batch_remove(&["dir/0", "dir/1"], true).await,
        vec![0, 0]
    );
    // No waiting: the answer came after the owner's acknowledgement.
    assert_eq!(held(&owner), keys[2..].to_vec());
    assert_eq!(writer.remove_by_regex("^dir/[23]$", true).await.unwrap(), 2);
    assert_eq!(held(&owner), keys[4..].to_vec());
    // The owner removing its own objects waits on its own data server, which keeps serving.
    assert_eq!(owner.remove_all(true).await.unwrap(), 2);
    assert!(held(&owner).is_empty());
    // The ranges came back: the segment takes a full load again.
    for i in 0..15 {
        writer
            .put(&format!("again/{i}"), &pattern(1, 1 << 20), &cfg)
            .await
            .unwrap_or_else(|e| panic!("put {i} after removes: {e}"));
    }
    assert_eq!(held(&owner).len(), 15);
    let drops = |outcome: &str| {
        crate::cluster::metric(
            &m.field("metrics"),
            &format!("tidepool_remove_owner_drops_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        (drops("acked"), drops("excused"), drops("failed")),
        (3, 0, 0)
    );
    writer.close().await.unwrap();
    owner.close().await.unwrap();
}

/// An owner that stops answering delays a remove only until the master declares it dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_waits_for_a_frozen_owner_only_until_it_is_declared_dead() {
    let m = master(&["--client_ttl=2"]);
    let rpc = m.field("rpc");
    let n = node(&rpc, "16MB");
    let c = client(&rpc).await;
    c.put("frozen", &pattern(4, 4096), &ReplicateConfig::default())
        .await
        .expect("put");
    let pid = n.child.id().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    assert!(stop.success());
    // The signal lands asynchronously: wait until every thread of the node is stopped.
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat"))
                        .ok()
                        .and_then(|s| {
                            s.rsplit(')')
                                .next()
                                .map(|r| r.trim_start().starts_with('T'))
                        })
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false)
    };
    assert!(
        eventually(Duration::from_secs(2), stopped).await,
        "node did not stop"
    );
    let started = std::time::Instant::now();
    let codes = c.batch_remove(&["frozen"], true).await;
    let took = started.elapsed();
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert_eq!(
        codes,
        vec![0],
        "a dead owner's directory needs no acknowledgement"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(8),
        "remove took {took:?}: it must wait for the owner's death (client_ttl 2 s), not fail or hang"
    );
    assert_eq!(c.batch_exist(&["frozen"]).await, vec![0]);
    let excused = crate::cluster::metric(
        &m.field("metrics"),
        "tidepool_remove_owner_drops_total{outcome=\"excused\"}",
    );
    assert_eq!(excused, 1);
    c.close().await.unwrap();
}
