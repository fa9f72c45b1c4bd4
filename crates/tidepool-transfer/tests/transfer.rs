//! End-to-end tests of the transfer engine over each transport, on loopback.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidepool_common::{ErrorCode, ObjectId};
use tidepool_proto::data::Seal;
use tidepool_transfer::{EngineConfig, LocalSegment, ReadOp, Target, TransferEngine, WriteOp};

const SEG: u64 = 80 << 20;

fn cfg(shm: bool) -> EngineConfig {
    EngineConfig {
        enable_shm: shm,
        // Large transfers split over lanes on any host, so the split path is tested on two
        // cores too (where the default would keep them on one lane).
        split_lanes: 8,
        ..EngineConfig::default()
    }
}

async fn engine(shm: bool) -> TransferEngine {
    TransferEngine::start(cfg(shm))
        .await
        .expect("engine starts")
}

fn target(owner: &TransferEngine, seg: &LocalSegment) -> Target {
    Target {
        endpoint: owner.endpoint(),
        host_id: owner.host_id(),
        shm_socket: owner.shm_socket(),
        base_addr: seg.base_addr(),
        size: seg.size(),
    }
}

/// Deterministic, position- and seed-dependent bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn seal(key: &str, seq: u64, addr: u64, len: u64) -> Seal {
    Seal {
        key: key.to_string(),
        object_id: ObjectId { epoch: 1, seq },
        addr,
        len,
        flags: 0,
    }
}

const SIZES: &[usize] = &[
    1,
    4096,
    4097,
    12_345,
    1 << 20,
    (1 << 20) + 3,
    (33 << 20) + 7,
];

/// Writes and reads back each size at a few offsets, then a 16 x 4 KiB batch.
async fn round_trips(client: &TransferEngine, t: &Target) {
    let mut off = 0u64;
    for (i, &size) in SIZES.iter().enumerate() {
        let data = pattern(size, i as u64 + 1);
        let addr = t.base_addr + off;
        client
            .write(
                t,
                0,
                &[WriteOp {
                    src: &data,
                    remote_addr: addr,
                }],
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("write size={size}: {e}"));
        let mut back = vec![0u8; size];
        client
            .read(
                t,
                &mut [ReadOp {
                    dst: &mut back,
                    remote_addr: addr,
                    expect: None,
                }],
            )
            .await
            .unwrap_or_else(|e| panic!("read size={size}: {e}"));
        assert!(back == data, "bytes differ for size={size}");
        off = (off + size as u64 + 4095) & !4095;
        if off + (34 << 20) > t.size {
            off = 0;
        }
    }
    let bufs: Vec<Vec<u8>> = (0..16).map(|i| pattern(4096, 100 + i)).collect();
    let ops: Vec<WriteOp> = bufs
        .iter()
        .enumerate()
        .map(|(i, b)| WriteOp {
            src: b,
            remote_addr: t.base_addr + (i as u64) * 8192,
        })
        .collect();
    client.write(t, 0, &ops, &[]).await.expect("batch write");
    let mut outs: Vec<Vec<u8>> = vec![vec![0u8; 4096]; 16];
    let mut rops: Vec<ReadOp> = outs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| ReadOp {
            dst: b,
            remote_addr: t.base_addr + (i as u64) * 8192,
            expect: None,
        })
        .collect();
    client.read(t, &mut rops).await.expect("batch read");
    assert_eq!(outs, bufs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_round_trips_and_batching() {
    let owner = engine(true).await;
    let client = engine(false).await;
    let seg = owner.create_segment(SEG).unwrap();
    let t = target(&owner, &seg);
    round_trips(&client, &t).await;
    let s = client.stats();
    assert!(s.tcp_bytes_written > 33 << 20, "{s:?}");
    assert!(s.tcp_bytes_read > 33 << 20, "{s:?}");
    assert_eq!(s.shm_bytes_written + s.local_bytes_written, 0);

    // 16 small writes to one peer travel as ONE request frame; so does the batched read.
    let before = owner.stats().requests_served;
    let bufs: Vec<Vec<u8>> = (0..16).map(|i| pattern(4096, i)).collect();
    let ops: Vec<WriteOp> = bufs
        .iter()
        .enumerate()
        .map(|(i, b)| WriteOp {
            src: b,
            remote_addr: t.base_addr + 4096 * i as u64,
        })
        .collect();
    client.write(&t, 0, &ops, &[]).await.unwrap();
    assert_eq!(owner.stats().requests_served, before + 1);
    let mut outs = vec![vec![0u8; 4096]; 16];
    let mut rops: Vec<ReadOp> = outs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| ReadOp {
            dst: b,
            remote_addr: t.base_addr + 4096 * i as u64,
            expect: None,
        })
        .collect();
    client.read(&t, &mut rops).await.unwrap();
    assert_eq!(owner.stats().requests_served, before + 2);
    assert_eq!(outs, bufs);
    client.shutdown().await;
    owner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_round_trips() {
    let owner = engine(true).await;
    let client = engine(true).await;
    let seg = owner.create_segment(SEG).unwrap();
    let t = target(&owner, &seg);
    assert!(t.shm_socket.is_some());
    round_trips(&client, &t).await;
    let s = client.stats();
    assert!(s.shm_bytes_written > 33 << 20, "{s:?}");
    assert!(s.shm_bytes_read > 33 << 20, "{s:?}");
    assert_eq!(s.tcp_bytes_written, 0, "{s:?}");
    assert_eq!(s.shm_mappings, 1);

    // Bytes written through the mapping are visible to the owner's own memory.
    let data = pattern(777, 9);
    let addr = t.base_addr + 5000;
    client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: addr,
            }],
            &[],
        )
        .await
        .unwrap();
    let mut back = vec![0u8; 777];
    owner
        .read(
            &t,
            &mut [ReadOp {
                dst: &mut back,
                remote_addr: addr,
                expect: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(back, data);

    // Seals of shm writes reach the owner's directory (sent over TCP).
    client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: addr,
            }],
            &[seal("k", 1, addr, 777)],
        )
        .await
        .unwrap();
    assert_eq!(seg.directory(), vec![seal("k", 1, addr, 777)]);

    // Out of the mapped segment: refused locally, nothing copied.
    let err = client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: t.base_addr + t.size - 10,
            }],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParams);

    client.forget_peer(&t.endpoint);
    assert_eq!(client.stats().shm_mappings, 0);
    client.shutdown().await;
    owner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_attach_failure_falls_back_to_tcp() {
    let owner = engine(true).await;
    let client = engine(true).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    let mut t = target(&owner, &seg);
    t.shm_socket = Some("/nonexistent/tidepool.sock".into());
    let data = pattern(4096, 3);
    client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: t.base_addr,
            }],
            &[],
        )
        .await
        .unwrap();
    let s = client.stats();
    assert_eq!(s.tcp_bytes_written, 4096);
    assert_eq!(s.shm_bytes_written, 0);
    owner.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_round_trips() {
    let owner = engine(true).await;
    let seg = owner.create_segment(SEG).unwrap();
    let t = target(&owner, &seg);
    round_trips(&owner, &t).await;
    let s = owner.stats();
    assert!(s.local_bytes_written > 33 << 20);
    assert!(s.local_bytes_read > 33 << 20);
    assert_eq!(s.tcp_bytes_written + s.shm_bytes_written, 0);
    assert_eq!(s.connections_opened, 0);
    owner.shutdown().await;
}

/// Seal semantics, checked over one transport: recording, overlap replacement, expect checks.
async fn seal_semantics(
    client: &TransferEngine,
    owner: &TransferEngine,
    seg: &LocalSegment,
    check_expect: bool,
) {
    let t = target(owner, seg);
    let b = t.base_addr;
    let data = pattern(8192, 5);
    let s1 = seal("a", 1, b, 4096);
    let s2 = seal("b", 2, b + 4096, 4096);
    client
        .write(
            &t,
            1,
            &[WriteOp {
                src: &data,
                remote_addr: b,
            }],
            &[s1.clone(), s2.clone()],
        )
        .await
        .unwrap();
    assert_eq!(seg.directory(), vec![s1.clone(), s2.clone()]);

    // An entry overlapping both replaces them.
    let s3 = seal("c", 3, b + 2048, 4096);
    client
        .write(
            &t,
            1,
            &[WriteOp {
                src: &data[..4096],
                remote_addr: b + 2048,
            }],
            std::slice::from_ref(&s3),
        )
        .await
        .unwrap();
    assert_eq!(seg.directory(), vec![s3.clone()]);

    if check_expect {
        let mut out = vec![0u8; 4096];
        client
            .read(
                &t,
                &mut [ReadOp {
                    dst: &mut out,
                    remote_addr: b + 2048,
                    expect: Some(s3.object_id),
                }],
            )
            .await
            .expect("read of the sealed object");
        assert_eq!(&out[..], &data[..4096]);
        let err = client
            .read(
                &t,
                &mut [ReadOp {
                    dst: &mut out,
                    remote_addr: b + 2048,
                    expect: Some(s1.object_id),
                }],
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::ReplicaIsGone);
        assert_eq!(err.code().as_i32(), -712);
        let err = client
            .read(
                &t,
                &mut [ReadOp {
                    dst: &mut out,
                    remote_addr: b,
                    expect: Some(s1.object_id),
                }],
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::ReplicaIsGone);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seals_directory_and_expect() {
    let owner = engine(true).await;
    let tcp_client = engine(false).await;
    let shm_client = engine(true).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    seal_semantics(&tcp_client, &owner, &seg, true).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    seal_semantics(&owner, &owner, &seg, true).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    seal_semantics(&shm_client, &owner, &seg, false).await;
    assert!(shm_client.stats().shm_bytes_written > 0);

    // A large (split) TCP write records its seals after every chunk landed.
    let seg = owner.create_segment(16 << 20).unwrap();
    let t = target(&owner, &seg);
    let big = pattern(9 << 20, 7);
    let s = seal("big", 9, t.base_addr, big.len() as u64);
    tcp_client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &big,
                remote_addr: t.base_addr,
            }],
            std::slice::from_ref(&s),
        )
        .await
        .unwrap();
    assert_eq!(seg.directory(), vec![s.clone()]);
    let mut back = vec![0u8; big.len()];
    tcp_client
        .read(
            &t,
            &mut [ReadOp {
                dst: &mut back,
                remote_addr: t.base_addr,
                expect: Some(s.object_id),
            }],
        )
        .await
        .unwrap();
    assert!(back == big);
    for e in [owner, tcp_client, shm_client] {
        e.shutdown().await;
    }
}

async fn assert_out_of_range(client: &TransferEngine, t: &Target) {
    let data = pattern(4096, 1);
    let mut out = vec![0u8; 4096];
    for addr in [
        16u64,
        t.base_addr + t.size - 100,
        t.base_addr + t.size,
        u64::MAX - 10,
    ] {
        let err = client
            .write(
                t,
                0,
                &[WriteOp {
                    src: &data,
                    remote_addr: addr,
                }],
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::InvalidParams,
            "write addr={addr:#x}: {err}"
        );
        let err = client
            .read(
                t,
                &mut [ReadOp {
                    dst: &mut out,
                    remote_addr: addr,
                    expect: None,
                }],
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::InvalidParams,
            "read addr={addr:#x}: {err}"
        );
    }
    // One good range plus one bad one: the whole request is refused, nothing written.
    let ok_addr = t.base_addr + 8192;
    client
        .write(
            t,
            0,
            &[WriteOp {
                src: &[0u8; 4096],
                remote_addr: ok_addr,
            }],
            &[],
        )
        .await
        .unwrap();
    let err = client
        .write(
            t,
            0,
            &[
                WriteOp {
                    src: &data,
                    remote_addr: ok_addr,
                },
                WriteOp {
                    src: &data,
                    remote_addr: t.base_addr + t.size - 1,
                },
            ],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().as_i32(), -600);
    client
        .read(
            t,
            &mut [ReadOp {
                dst: &mut out,
                remote_addr: ok_addr,
                expect: None,
            }],
        )
        .await
        .unwrap();
    assert!(out.iter().all(|&b| b == 0), "refused write touched memory");
    // A seal outside the segment is refused too.
    let err = client
        .write(t, 0, &[], &[seal("x", 1, t.base_addr + t.size, 1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParams);
    // The same engine (and connection) keeps serving valid requests.
    client
        .write(
            t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: ok_addr,
            }],
            &[],
        )
        .await
        .unwrap();
    client
        .read(
            t,
            &mut [ReadOp {
                dst: &mut out,
                remote_addr: ok_addr,
                expect: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(out, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_is_refused_and_server_keeps_serving() {
    let owner = engine(true).await;
    let client = engine(false).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    let t = target(&owner, &seg);
    assert_out_of_range(&client, &t).await;
    let s = client.stats();
    assert_eq!(
        s.connections_opened, 1,
        "refusals must not cost the connection: {s:?}"
    );
    assert!(owner.stats().requests_rejected >= 9);
    // In-process path applies the same validation.
    assert_out_of_range(&owner, &t).await;
    // Over shm, the mapping bounds are checked.
    let shm_client = engine(true).await;
    let data = [1u8; 64];
    let err = shm_client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: t.base_addr + t.size - 1,
            }],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParams);

    // A removed segment is no longer served.
    owner.remove_segment(seg.base_addr());
    let err = client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: t.base_addr,
            }],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParams);
    for e in [owner, client, shm_client] {
        e.shutdown().await;
    }
}

fn header(magic: u32, version: u16, meta_len: u32, payload_len: u64) -> Vec<u8> {
    let mut b = vec![0u8; 32];
    b[0..4].copy_from_slice(&magic.to_le_bytes());
    b[4..6].copy_from_slice(&version.to_le_bytes());
    b[6] = 1;
    b[8..16].copy_from_slice(&7u64.to_le_bytes());
    b[16..20].copy_from_slice(&meta_len.to_le_bytes());
    b[24..32].copy_from_slice(&payload_len.to_le_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_do_not_stop_the_server() {
    let owner = engine(true).await;
    let client = engine(false).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    let t = target(&owner, &seg);
    let data = pattern(4096, 2);
    // An established client connection before the garbage arrives.
    client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: t.base_addr,
            }],
            &[],
        )
        .await
        .unwrap();

    let magic = tidepool_proto::frame::MAGIC;
    let v = tidepool_proto::PROTOCOL_VERSION;
    let mut undecodable = header(magic, v, 4, 0);
    undecodable.extend_from_slice(&[0xff; 4]);
    let attacks: Vec<Vec<u8>> = vec![
        pattern(10_000, 42),
        header(0xdead_beef, v, 0, 0),
        header(magic, 999, 0, 0),
        header(magic, v, u32::MAX, 0),
        header(magic, v, 0, u64::MAX),
        header(magic, v, 16, 1 << 30),
        undecodable,
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ];
    let ep = owner.endpoint();
    tokio::task::spawn_blocking(move || {
        for a in attacks {
            let mut s = std::net::TcpStream::connect(&ep).unwrap();
            let _ = s.write_all(&a);
            let _ = s.flush();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut sink = [0u8; 256];
            let _ = std::io::Read::read(&mut s, &mut sink);
        }
    })
    .await
    .unwrap();

    // The pre-existing connection and a fresh client both still get served.
    let mut out = vec![0u8; 4096];
    client
        .read(
            &t,
            &mut [ReadOp {
                dst: &mut out,
                remote_addr: t.base_addr,
                expect: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(out, data);
    let fresh = engine(false).await;
    let mut out2 = vec![0u8; 4096];
    fresh
        .read(
            &t,
            &mut [ReadOp {
                dst: &mut out2,
                remote_addr: t.base_addr,
                expect: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(out2, data);
    fresh.ping(&t).await.unwrap();
    for e in [owner, client, fresh] {
        e.shutdown().await;
    }
}

async fn assert_fails_fast(client: &TransferEngine, t: &Target) {
    let data = [7u8; 4096];
    let start = Instant::now();
    let err = client
        .write(
            t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: t.base_addr,
            }],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TransferFail, "{err}");
    assert_eq!(err.code().as_i32(), -800);
    let mut out = [0u8; 16];
    let err = client
        .read(
            t,
            &mut [ReadOp {
                dst: &mut out,
                remote_addr: t.base_addr,
                expect: None,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TransferFail, "{err}");
    let err = client.ping(t).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::TransferFail, "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peers_fail_fast() {
    let client = engine(false).await;
    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = Target {
        endpoint: format!("127.0.0.1:{port}"),
        host_id: "elsewhere".into(),
        shm_socket: None,
        base_addr: 0x1000_0000,
        size: 1 << 20,
    };
    assert_fails_fast(&client, &t).await;

    // A peer that was shut down while the client held pooled connections to it.
    let owner = engine(true).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    let t = target(&owner, &seg);
    let data = [1u8; 4096];
    client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: t.base_addr,
            }],
            &[],
        )
        .await
        .unwrap();
    owner.shutdown().await;
    assert_fails_fast(&client, &t).await;

    // An unroutable address: the connect timeout bounds the wait.
    let t = Target {
        endpoint: "10.255.255.1:9".into(),
        ..t
    };
    let start = Instant::now();
    let err = client.ping(&t).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::TransferFail);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        start.elapsed()
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_requests_stay_within_lanes() {
    let owner = engine(true).await;
    let lanes = 4;
    let client = TransferEngine::start(EngineConfig {
        enable_shm: false,
        lanes,
        ..EngineConfig::default()
    })
    .await
    .unwrap();
    let seg = owner.create_segment(8 << 20).unwrap();
    let t = Arc::new(target(&owner, &seg));
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let client = client.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..125u64 {
                let data = pattern(4096, task * 1000 + i);
                let addr = t.base_addr + (task * 125 + i) * 4096;
                client
                    .write(
                        &t,
                        0,
                        &[WriteOp {
                            src: &data,
                            remote_addr: addr,
                        }],
                        &[],
                    )
                    .await
                    .unwrap();
                let mut out = vec![0u8; 4096];
                client
                    .read(
                        &t,
                        &mut [ReadOp {
                            dst: &mut out,
                            remote_addr: addr,
                            expect: None,
                        }],
                    )
                    .await
                    .unwrap();
                assert_eq!(out, data);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = client.stats();
    assert!(s.connections_opened <= lanes as u64, "{s:?}");
    assert!(s.open_connections <= lanes as u64, "{s:?}");
    assert!(owner.stats().server_connections <= lanes as u64);
    assert_eq!(owner.stats().requests_served, 4000);

    // Forgetting the peer closes its lanes; the next call reconnects.
    client.forget_peer(&t.endpoint);
    assert_eq!(client.stats().open_connections, 0);
    client.ping(&t).await.unwrap();
    assert_eq!(client.stats().open_connections, 1);
    owner.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_epochs_are_fenced() {
    let owner = engine(true).await;
    let client = engine(false).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    let t = target(&owner, &seg);
    seg.set_epoch(5);
    let data = [3u8; 4096];
    for e in [&client, &owner] {
        let err = e
            .write(
                &t,
                4,
                &[WriteOp {
                    src: &data,
                    remote_addr: t.base_addr,
                }],
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidWrite);
        assert_eq!(err.code().as_i32(), -700);
        let err = e
            .write(&t, 4, &[], &[seal("k", 1, t.base_addr, 10)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidWrite);
        e.write(
            &t,
            5,
            &[WriteOp {
                src: &data,
                remote_addr: t.base_addr,
            }],
            &[],
        )
        .await
        .unwrap();
        e.write(
            &t,
            6,
            &[WriteOp {
                src: &data,
                remote_addr: t.base_addr,
            }],
            &[],
        )
        .await
        .unwrap();
    }
    assert!(seg.directory().is_empty());
    owner.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_memory() {
    let owner = engine(true).await;
    let client = engine(false).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let addr = buf.as_mut_ptr() as u64;
    owner.register_memory(addr, buf.len() as u64).unwrap();
    // Overlaps: same range, inside, straddling, and over a segment.
    for (a, l) in [
        (addr, 10),
        (addr + 100, 10),
        (addr - 10, 20),
        (addr + 65_530, 100),
    ] {
        assert_eq!(
            owner.register_memory(a, l).unwrap_err().code(),
            ErrorCode::InvalidParams
        );
    }
    assert_eq!(
        owner
            .register_memory(seg.base_addr() + 4096, 10)
            .unwrap_err()
            .code()
            .as_i32(),
        -600
    );
    assert_eq!(
        owner.unregister_memory(addr + 1).unwrap_err().code(),
        ErrorCode::InvalidParams
    );
    assert_eq!(
        owner.unregister_memory(12345).unwrap_err().code(),
        ErrorCode::InvalidParams
    );
    // A segment is not "registered memory" to unregister.
    assert_eq!(
        owner.unregister_memory(seg.base_addr()).unwrap_err().code(),
        ErrorCode::InvalidParams
    );

    // Peers can write into a registered caller buffer.
    let t = Target {
        endpoint: owner.endpoint(),
        host_id: owner.host_id(),
        shm_socket: None,
        base_addr: addr,
        size: buf.len() as u64,
    };
    let data = pattern(1000, 4);
    client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: addr + 10,
            }],
            &[],
        )
        .await
        .unwrap();
    owner.unregister_memory(addr).unwrap();
    assert_eq!(&buf[10..1010], &data[..]);
    let err = client
        .write(
            &t,
            0,
            &[WriteOp {
                src: &data,
                remote_addr: addr,
            }],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidParams);
    owner.shutdown().await;
    client.shutdown().await;
}

/// Same-host writers leave their seals in the owner's seal ring (no request each): the owner's
/// directory and its `expect` checks see them at once, the epoch fence still refuses stale
/// writers, the unmounted segment and a dead owner make the seal fail like a request would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_rings_reach_the_directory_and_keep_the_fences() {
    let owner = engine(true).await;
    let writer = engine(true).await;
    let reader = engine(false).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    let t = target(&owner, &seg);
    let b = t.base_addr;
    let data = pattern(4096, 3);
    let put = |addr: u64, epoch: u64, s: Seal| {
        let (writer, t, data) = (&writer, &t, &data);
        async move {
            writer
                .write(
                    t,
                    epoch,
                    &[WriteOp {
                        src: data,
                        remote_addr: addr,
                    }],
                    &[s],
                )
                .await
        }
    };
    let served = owner.stats().requests_served;
    for i in 0..100u64 {
        put(
            b + i * 4096,
            1,
            seal(&format!("k{i}"), 10 + i, b + i * 4096, 4096),
        )
        .await
        .unwrap();
        // A reader that names the object right after the writer's seal finds it.
        let mut out = vec![0u8; 4096];
        reader
            .read(
                &t,
                &mut [ReadOp {
                    dst: &mut out,
                    remote_addr: b + i * 4096,
                    expect: Some(ObjectId {
                        epoch: 1,
                        seq: 10 + i,
                    }),
                }],
            )
            .await
            .unwrap();
        assert_eq!(out, data);
    }
    assert_eq!(writer.stats().ring_seals, 100);
    // The reads were served; no seal needed a request.
    assert_eq!(owner.stats().requests_served - served, 100);
    let dir = seg.directory();
    assert_eq!(dir.len(), 100);
    assert_eq!(dir[7], seal("k7", 17, b + 7 * 4096, 4096));

    // A late seal of an older object never displaces a newer one at the same place.
    put(b, 1, seal("late", 5, b, 4096)).await.unwrap();
    assert_eq!(seg.directory()[0], seal("k0", 10, b, 4096));

    // The timer drains rings without anyone asking.
    put(b + 200 * 4096, 1, seal("timer", 500, b + 200 * 4096, 4096))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(writer.stats().ring_seals, 102);

    // Fenced epoch: the ring refuses it, the request that follows is refused by the owner.
    seg.set_epoch(3);
    let err = put(b, 2, seal("old", 600, b, 4096)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidWrite);
    put(b, 3, seal("new", 601, b, 4096)).await.unwrap();
    assert_eq!(seg.directory()[0], seal("new", 601, b, 4096));

    // Unmounted: the ring is closed, the seal request finds no segment.
    owner.remove_segment(seg.base_addr());
    assert!(put(b, 3, seal("gone", 700, b, 4096)).await.is_err());
    assert!(seg.directory().iter().all(|s| s.key != "gone"));

    // A dead owner: the mapping still takes the bytes, but the seal must fail.
    let seg2 = owner.create_segment(1 << 20).unwrap();
    let t2 = target(&owner, &seg2);
    let w = |t: Target, s: Seal| {
        let (writer, data) = (&writer, &data);
        async move {
            writer
                .write(
                    &t,
                    3,
                    &[WriteOp {
                        src: data,
                        remote_addr: t.base_addr,
                    }],
                    &[s],
                )
                .await
        }
    };
    w(t2.clone(), seal("alive", 800, t2.base_addr, 4096))
        .await
        .unwrap();
    owner.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rings = writer.stats().ring_seals;
    let err = w(t2.clone(), seal("dead", 801, t2.base_addr, 4096))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TransferFail, "{err}");
    assert_eq!(writer.stats().ring_seals, rings);
    // What was sealed before the owner went down is in its directory.
    assert_eq!(
        seg2.directory(),
        vec![seal("alive", 800, t2.base_addr, 4096)]
    );
    writer.shutdown().await;
    reader.shutdown().await;
}

/// Sends one `Drop` to `owner` over a fresh TCP connection, as the master does.
async fn send_drop(
    owner: &TransferEngine,
    epoch: u64,
    drops: Vec<tidepool_proto::data::Dropped>,
) -> tidepool_proto::data::DataResponse {
    use tidepool_proto::data::{DataRequest, DataResponse};
    use tidepool_proto::frame::{self, FrameKind};
    let mut s = tokio::net::TcpStream::connect(owner.endpoint())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let req = DataRequest::Drop { epoch, drops };
    frame::write_frame(&mut s, &mut buf, FrameKind::Request, 1, &req, &[])
        .await
        .unwrap();
    let (_, resp) = frame::read_frame::<_, DataResponse>(&mut s, &mut buf)
        .await
        .unwrap();
    resp.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_forget_only_the_object_named() {
    use tidepool_proto::data::{DataResponse, Dropped};
    let owner = engine(true).await;
    let tcp = engine(false).await;
    let shm = engine(true).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    let t = target(&owner, &seg);
    let b = t.base_addr;
    let data = pattern(4096, 3);
    let (s1, s2, s3) = (
        seal("a", 1, b, 4096),
        seal("b", 2, b + 4096, 4096),
        seal("c", 3, b + 8192, 4096),
    );
    for (client, s) in [(&tcp, &s1), (&tcp, &s2), (&shm, &s3)] {
        let op = WriteOp {
            src: &data,
            remote_addr: s.addr,
        };
        client
            .write(&t, 1, &[op], std::slice::from_ref(s))
            .await
            .unwrap();
    }
    let drop_of = |addr, seq| Dropped {
        addr,
        object_id: ObjectId { epoch: 1, seq },
    };
    // `a` by its object; `b` named with another object (a late drop) stays; `c`'s seal may
    // still sit in the shm writer's ring and is dropped all the same; an address this owner
    // does not serve has nothing to drop.
    let resp = send_drop(
        &owner,
        1,
        vec![
            drop_of(b, 1),
            drop_of(b + 4096, 99),
            drop_of(b + 8192, 3),
            drop_of(16, 1),
        ],
    )
    .await;
    assert_eq!(resp, DataResponse::Ok);
    assert_eq!(seg.directory(), vec![s2.clone()]);
    // Repeating a drop is harmless.
    assert_eq!(
        send_drop(&owner, 1, vec![drop_of(b, 1)]).await,
        DataResponse::Ok
    );
    // A master older than the segment's fence drops nothing.
    seg.set_epoch(5);
    match send_drop(&owner, 4, vec![drop_of(b + 4096, 2)]).await {
        DataResponse::Error { code, message } => {
            assert_eq!(code, ErrorCode::InvalidWrite, "{message}");
            assert!(message.contains("stale master epoch"), "{message}");
        }
        other => panic!("stale drop answered {other:?}"),
    }
    assert_eq!(seg.directory(), vec![s2.clone()]);
    assert_eq!(
        send_drop(&owner, 5, vec![drop_of(b + 4096, 2)]).await,
        DataResponse::Ok
    );
    assert!(seg.directory().is_empty());
    for e in [owner, tcp, shm] {
        e.shutdown().await;
    }
}

/// A writer that dies mid-payload leaves a claim (`Seal::PENDING`): neither the old object's
/// entry over torn bytes nor a sealed entry for the new one, and reads of the old object there
/// are refused. A late write (older than the object now in its range) is refused before any
/// byte lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_writes_leave_claims_and_late_writes_are_refused() {
    use tidepool_proto::data::{DataRequest, Range};
    use tidepool_proto::frame::{self, FrameKind};
    use tokio::io::AsyncWriteExt;
    let owner = engine(true).await;
    let tcp = engine(false).await;
    let seg = owner.create_segment(1 << 20).unwrap();
    let t = target(&owner, &seg);
    let b = t.base_addr;
    let old = seal("old", 1, b, 8192);
    let data = pattern(8192, 9);
    let op = WriteOp {
        src: &data,
        remote_addr: b,
    };
    tcp.write(&t, 1, &[op], std::slice::from_ref(&old))
        .await
        .unwrap();
    assert_eq!(seg.directory(), vec![old.clone()]);

    // A newer object over half of it; the writer sends a quarter of the payload and dies.
    let new = seal("new", 2, b + 4096, 4096);
    let mut s = tokio::net::TcpStream::connect(owner.endpoint())
        .await
        .unwrap();
    let req = DataRequest::Write {
        epoch: 1,
        ranges: vec![Range {
            addr: new.addr,
            len: new.len,
        }],
        seals: vec![new.clone()],
    };
    let mut buf = Vec::new();
    frame::encode_frame(&mut buf, FrameKind::Request, 1, &req, new.len).unwrap();
    buf.extend_from_slice(&[0xEE; 1024]);
    s.write_all(&buf).await.unwrap();
    s.flush().await.unwrap();
    drop(s);
    let claimed = || seg.directory().is_empty();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !claimed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(claimed(), "old entry still listed: {:?}", seg.directory());
    let mut out = vec![0u8; 4096];
    let err = tcp
        .read(
            &t,
            &mut [ReadOp {
                dst: &mut out,
                remote_addr: b,
                expect: Some(old.object_id),
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ReplicaIsGone);
    // The newer object's whole write seals; then a late write of the older object (a revoked
    // put) is refused before its bytes land over the newer one's.
    let whole = WriteOp {
        src: &data[..4096],
        remote_addr: new.addr,
    };
    tcp.write(&t, 1, &[whole], std::slice::from_ref(&new))
        .await
        .unwrap();
    assert_eq!(seg.directory(), vec![new.clone()]);
    let stale = WriteOp {
        src: &data[..4096],
        remote_addr: b + 4096,
    };
    let late = seal("old", 1, b, 8192);
    for writer in [&tcp, &owner] {
        let err = writer
            .write(
                &t,
                1,
                std::slice::from_ref(&stale),
                std::slice::from_ref(&late),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidWrite, "{err}");
        assert!(err.message().contains("newer object"), "{err}");
    }
    assert_eq!(seg.directory(), vec![new.clone()]);
    let mut back = vec![0u8; 4096];
    tcp.read(
        &t,
        &mut [ReadOp {
            dst: &mut back,
            remote_addr: new.addr,
            expect: Some(new.object_id),
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        &back[..],
        &data[..4096],
        "the newer object's bytes are intact"
    );
    for e in [owner, tcp] {
        e.shutdown().await;
    }
}
