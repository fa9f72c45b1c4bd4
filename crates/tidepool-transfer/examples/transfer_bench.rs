//! Transfer engine micro-benchmark: two engines in one process on loopback.
//!
//! Measures batch write/read throughput for 1, 8 and 32 MiB transfers and the p50/p99 of a
//! single 4 KiB write and read round trip, first over TCP (shm disabled on the writer), then
//! over shared memory. Run with
//! `cargo run --release -p tidepool-transfer --example transfer_bench`.

use std::time::{Duration, Instant};
use tidepool_transfer::{EngineConfig, ReadOp, Target, TransferEngine, WriteOp};

const MIB: usize = 1 << 20;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() - 1) as f64 * p) as usize]
}

async fn run(label: &str, client: &TransferEngine, t: &Target) {
    for size in [MIB, 8 * MIB, 32 * MIB] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        let mut back = vec![0u8; size];
        // About 2 GiB per measurement, at least 8 transfers.
        let iters = ((2usize << 30) / size).max(8);
        // Warm up (connections, mappings, page faults on the reader's buffer).
        client
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
            .unwrap();
        client
            .read(
                t,
                &mut [ReadOp {
                    dst: &mut back,
                    remote_addr: t.base_addr,
                    expect: None,
                }],
            )
            .await
            .unwrap();
        let start = Instant::now();
        for _ in 0..iters {
            client
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
                .unwrap();
        }
        let w = (size * iters) as f64 / start.elapsed().as_secs_f64() / 1e9;
        let start = Instant::now();
        for _ in 0..iters {
            client
                .read(
                    t,
                    &mut [ReadOp {
                        dst: &mut back,
                        remote_addr: t.base_addr,
                        expect: None,
                    }],
                )
                .await
                .unwrap();
        }
        let r = (size * iters) as f64 / start.elapsed().as_secs_f64() / 1e9;
        assert!(back == data, "read back differs");
        println!(
            "{label:4} {:>3} MiB  write {w:6.2} GB/s  read {r:6.2} GB/s",
            size / MIB
        );
    }
    let small = vec![5u8; 4096];
    let mut out = vec![0u8; 4096];
    let n = 20_000;
    let mut ws = Vec::with_capacity(n);
    let mut rs = Vec::with_capacity(n);
    for i in 0..n {
        let addr = t.base_addr + ((i % 1024) * 4096) as u64;
        let s = Instant::now();
        client
            .write(
                t,
                0,
                &[WriteOp {
                    src: &small,
                    remote_addr: addr,
                }],
                &[],
            )
            .await
            .unwrap();
        ws.push(s.elapsed());
        let s = Instant::now();
        client
            .read(
                t,
                &mut [ReadOp {
                    dst: &mut out,
                    remote_addr: addr,
                    expect: None,
                }],
            )
            .await
            .unwrap();
        rs.push(s.elapsed());
    }
    println!(
        "{label:4} 4 KiB round trip  write p50 {:.1} us p99 {:.1} us  read p50 {:.1} us p99 {:.1} us",
        percentile(&mut ws, 0.5).as_secs_f64() * 1e6,
        percentile(&mut ws, 0.99).as_secs_f64() * 1e6,
        percentile(&mut rs, 0.5).as_secs_f64() * 1e6,
        percentile(&mut rs, 0.99).as_secs_f64() * 1e6,
    );
}

/// Same-conditions yardsticks: a raw blocking loopback TCP stream (1 MiB writes, 1-byte ack
/// per message, like a write round trip) and a plain memcpy, so figures on a busy box compare.
fn baselines() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let iters = 2048;
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; MIB];
        for _ in 0..iters {
            s.read_exact(&mut buf).unwrap();
            s.write_all(&[1]).unwrap();
        }
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let data = vec![3u8; MIB];
    let mut ack = [0u8; 1];
    let start = Instant::now();
    for _ in 0..iters {
        c.write_all(&data).unwrap();
        c.read_exact(&mut ack).unwrap();
    }
    let gbs = (MIB * iters) as f64 / start.elapsed().as_secs_f64() / 1e9;
    server.join().unwrap();
    let src = vec![1u8; 32 * MIB];
    let mut dst = vec![0u8; 32 * MIB];
    dst.copy_from_slice(&src);
    let start = Instant::now();
    for _ in 0..64 {
        std::hint::black_box(&mut dst).copy_from_slice(std::hint::black_box(&src));
    }
    let mc = (32 * MIB * 64) as f64 / start.elapsed().as_secs_f64() / 1e9;
    println!("base raw std tcp 1 MiB+ack {gbs:6.2} GB/s   memcpy 32 MiB {mc:6.2} GB/s");
}

fn main() {
    baselines();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let owner = TransferEngine::start(EngineConfig::default())
            .await
            .unwrap();
        let seg = owner.create_segment(64 << 20).unwrap();
        let t = Target {
            endpoint: owner.endpoint(),
            host_id: owner.host_id(),
            shm_socket: owner.shm_socket(),
            base_addr: seg.base_addr(),
            size: seg.size(),
        };
        let tcp = TransferEngine::start(EngineConfig {
            enable_shm: false,
            ..EngineConfig::default()
        })
        .await
        .unwrap();
        run("tcp", &tcp, &t).await;
        let shm = TransferEngine::start(EngineConfig::default())
            .await
            .unwrap();
        run("shm", &shm, &t).await;
        println!("tcp client stats: {:?}", tcp.stats());
        tcp.shutdown().await;
        shm.shutdown().await;
        owner.shutdown().await;
    });
}
