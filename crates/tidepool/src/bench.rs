//! `tidepool bench`: a load generator against a running cluster, shaped like the side-by-side
//! harness (`mc_store_bench.py`): one pre-touched client buffer, batch puts from it and batch
//! gets into it per object size, single-op latency of 4 KiB objects, `exist` of 64-key
//! batches, and optionally the master's metadata scale (small-object puts/s, master memory
//! per object, single-op latency at that population).

use crate::cli::{bar, human, size_arg};
use anyhow::anyhow;
use clap::Parser;
use hdrhistogram::Histogram;
use std::time::Instant;
use tidepool_client::{Client, ClientConfig};
use tidepool_proto::ReplicateConfig;

/// Measures a running cluster.
#[derive(Parser, Debug)]
#[command(name = "tidepool bench")]
struct Args {
    /// Master RPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    master: String,
    /// Object sizes, comma separated.
    #[arg(long, value_delimiter = ',', value_parser = size_arg,
          default_value = "4KiB,64KiB,1MiB,8MiB,32MiB")]
    sizes: Vec<u64>,
    /// Bytes moved per size.
    #[arg(long, value_parser = size_arg, default_value = "256MiB")]
    total: u64,
    /// Objects per batch call.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Single-op latency samples (4 KiB put + get, 64-key exist).
    #[arg(long, default_value_t = 2000)]
    latency_ops: usize,
    /// Memory this bench client contributes (0: pure client, every byte crosses a transport).
    #[arg(long, value_parser = size_arg, default_value = "0")]
    segment_size: u64,
    /// Use TCP even for segments on this host.
    #[arg(long)]
    no_shm: bool,
    /// Pooled TCP connections per peer.
    #[arg(long, default_value_t = 8)]
    lanes: usize,
    /// Metadata scale: put this many 64-byte objects in batches of 1000, then measure.
    #[arg(long, default_value_t = 0)]
    meta_objects: u64,
    /// The master's pid, to report its memory per object (Linux /proc).
    #[arg(long)]
    master_pid: Option<u32>,
    /// Skip the throughput table.
    #[arg(long)]
    no_sizes: bool,
}

/// Resident set size of a process in bytes.
fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("statm has no rss field"))?
        .parse()?;
    Ok(pages * 4096)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Entry point of `tidepool bench`.
pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    // clap prints help or usage errors itself and exits (0 for --help, 2 for bad usage).
    let a = Args::parse_from(std::iter::once("bench".to_string()).chain(args));
    let client = Client::connect(ClientConfig {
        master_addr: a.master.clone(),
        segment_size: a.segment_size,
        enable_shm: !a.no_shm,
        lanes: a.lanes,
        ..ClientConfig::default()
    })
    .await
    .map_err(|e| anyhow!("connect to master {}: {e}", a.master))?;
    let run: u32 = rand::random();
    if !a.no_sizes {
        sizes(&client, &a, run).await?;
    }
    latency(&client, &a, run, "").await?;
    if a.meta_objects > 0 {
        meta(&client, &a, run).await?;
    }
    let means: Vec<String> = ["put_start", "put_end", "get_replica_list", "exist_key"]
        .iter()
        .filter_map(|&r| {
            let (mean, n) = client.metrics().rpc_mean(r)?;
            Some(format!("{r} {:.1} us (n={n})", mean.as_secs_f64() * 1e6))
        })
        .collect();
    println!("master RPC means: {}", means.join(", "));
    let _ = client.close().await;
    Ok(())
}

/// Batch put / get throughput per object size, from and into one warm buffer.
async fn sizes(client: &Client, a: &Args, run: u32) -> anyhow::Result<()> {
    let cfg = ReplicateConfig::default();
    let batch = a.batch.max(1);
    let max = a.sizes.iter().copied().max().unwrap_or(0);
    let nbuf = usize::try_from(a.total.max(max * batch as u64) + (16 << 20))?;
    // Touched up front, as the harness memsets its buffer: page faults of a cold client
    // buffer are not what this measures.
    let mut buf: Vec<u8> = (0..nbuf).map(|i| (i % 251) as u8).collect();
    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>12} {:>12}",
        "size", "objects", "put GB/s", "get GB/s", "put obj/s", "get obj/s"
    );
    for &size in &a.sizes {
        let sz = usize::try_from(size)?;
        let mut n = (a.total / size).max(batch as u64) as usize;
        n -= n % batch;
        let keys: Vec<String> = (0..n).map(|i| format!("bench-{run}-{size}-{i}")).collect();
        let off = |i: usize| (i * sz) % (nbuf - sz);
        let pb = bar(n as u64, &format!("put {}", human(size)));
        let t = Instant::now();
        for (c, chunk) in keys.chunks(batch).enumerate() {
            let parts: Vec<[&[u8]; 1]> = (0..chunk.len())
                .map(|j| [&buf[off(c * batch + j)..off(c * batch + j) + sz]])
                .collect();
            let items: Vec<(&str, &[&[u8]])> = chunk
                .iter()
                .zip(&parts)
                .map(|(k, p)| (k.as_str(), &p[..]))
                .collect();
            for r in client.put_parts_batch(&items, &cfg).await {
                r.map_err(|e| anyhow!("put failed: {e}"))?;
            }
            pb.inc(chunk.len() as u64);
        }
        let put_s = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        // Gets land in a second region of the buffer so the check below sees fetched bytes.
        let mut dst = vec![0u8; sz * batch];
        dst.fill(1);
        let pb = bar(n as u64, &format!("get {}", human(size)));
        let t = Instant::now();
        for chunk in keys.chunks(batch) {
            let ks: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let mut slices: Vec<&mut [u8]> = dst.chunks_mut(sz).take(ks.len()).collect();
            for r in client.batch_get_into(&ks, &mut slices).await {
                r.map_err(|e| anyhow!("get failed: {e}"))?;
            }
            pb.inc(chunk.len() as u64);
        }
        let get_s = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let last = n - batch;
        if dst[..sz] != buf[off(last)..off(last) + sz] {
            return Err(anyhow!("data mismatch at size {size}"));
        }
        let bytes = (n as u64 * size) as f64;
        println!(
            "{:>8} {:>8} {:>10.2} {:>10.2} {:>12.0} {:>12.0}",
            human(size),
            n,
            bytes / put_s / 1e9,
            bytes / get_s / 1e9,
            n as f64 / put_s,
            n as f64 / get_s
        );
        let ks: Vec<&str> = keys.iter().map(String::as_str).collect();
        for chunk in ks.chunks(1024) {
            client.batch_remove(chunk, true).await;
        }
        buf[0] = buf[0].wrapping_add(1);
    }
    Ok(())
}

/// Single 4 KiB put / get latency and 64-key exist latency.
async fn latency(client: &Client, a: &Args, run: u32, label: &str) -> anyhow::Result<()> {
    if a.latency_ops == 0 {
        return Ok(());
    }
    let cfg = ReplicateConfig::default();
    let data = vec![7u8; 4096];
    let mut buf = vec![0u8; 4096];
    let (mut put_h, mut get_h, mut ex_h) = (
        Histogram::<u64>::new(3)?,
        Histogram::<u64>::new(3)?,
        Histogram::<u64>::new(3)?,
    );
    let pb = bar(a.latency_ops as u64, "4KiB single ops");
    let keys: Vec<String> = (0..a.latency_ops.max(64))
        .map(|i| format!("lat-{run}-{label}{i}"))
        .collect();
    for key in keys.iter().take(a.latency_ops.max(64)) {
        let t = Instant::now();
        client
            .put(key, &data, &cfg)
            .await
            .map_err(|e| anyhow!("put: {e}"))?;
        put_h.record(t.elapsed().as_nanos() as u64)?;
        let t = Instant::now();
        client
            .get_into(key, &mut buf)
            .await
            .map_err(|e| anyhow!("get: {e}"))?;
        get_h.record(t.elapsed().as_nanos() as u64)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let ks: Vec<&str> = keys.iter().take(64).map(String::as_str).collect();
    for _ in 0..a.latency_ops {
        let t = Instant::now();
        let r = client.batch_exist(&ks).await;
        ex_h.record(t.elapsed().as_nanos() as u64)?;
        if r.iter().any(|&v| v != 1) {
            return Err(anyhow!("exist returned {r:?}"));
        }
    }
    let l = if label.is_empty() { "" } else { label };
    println!(
        "{l}4KiB put   p50 {:>7.1} us  p99 {:>7.1} us",
        us(&put_h, 0.5),
        us(&put_h, 0.99)
    );
    println!(
        "{l}4KiB get   p50 {:>7.1} us  p99 {:>7.1} us",
        us(&get_h, 0.5),
        us(&get_h, 0.99)
    );
    println!(
        "{l}exist x64  p50 {:>7.1} us  p99 {:>7.1} us",
        us(&ex_h, 0.5),
        us(&ex_h, 0.99)
    );
    let ks: Vec<&str> = keys.iter().map(String::as_str).collect();
    for chunk in ks.chunks(1024) {
        client.batch_remove(chunk, true).await;
    }
    Ok(())
}

/// Metadata scale: many 64-byte objects (keys `m-%09d`, as `mc_meta_scale_bench.py`).
async fn meta(client: &Client, a: &Args, run: u32) -> anyhow::Result<()> {
    let cfg = ReplicateConfig::default();
    let n = a.meta_objects;
    let rss0 = a.master_pid.map(rss_bytes).transpose()?;
    let value = [0x42u8; 64];
    let parts = [&value[..]];
    let pb = bar(n, "64B metadata puts");
    let t = Instant::now();
    let mut i = 0u64;
    while i < n {
        let end = (i + 1000).min(n);
        let keys: Vec<String> = (i..end).map(|k| format!("m-{run:x}-{k:09}")).collect();
        let items: Vec<(&str, &[&[u8]])> = keys.iter().map(|k| (k.as_str(), &parts[..])).collect();
        for r in client.put_parts_batch(&items, &cfg).await {
            r.map_err(|e| anyhow!("meta put failed: {e}"))?;
        }
        pb.inc(end - i);
        i = end;
    }
    let secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    println!(
        "meta puts  {n} objects of 64 B: {:.0} objects/s",
        n as f64 / secs
    );
    if let (Some(pid), Some(before)) = (a.master_pid, rss0) {
        let after = rss_bytes(pid)?;
        println!(
            "master RSS {:.1} MB -> {:.1} MB: {:.0} bytes per object (keys of {} bytes)",
            before as f64 / 1e6,
            after as f64 / 1e6,
            after.saturating_sub(before) as f64 / n as f64,
            format!("m-{run:x}-000000000").len()
        );
    }
    let t = Instant::now();
    let mut checked = 0u64;
    let mut i = 0u64;
    while i < n {
        let end = (i + 1000).min(n);
        let keys: Vec<String> = (i..end).map(|k| format!("m-{run:x}-{k:09}")).collect();
        let ks: Vec<&str> = keys.iter().map(String::as_str).collect();
        checked += client
            .batch_exist(&ks)
            .await
            .iter()
            .filter(|&&v| v == 1)
            .count() as u64;
        i = end;
    }
    println!(
        "meta exist {checked}/{n} found: {:.0} keys/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    // Single operations with the population in place must not be slower than on an empty
    // master.
    latency(client, a, run, &format!("@{n} ")).await?;
    let pattern = format!("^m-{run:x}-");
    let removed = client
        .remove_by_regex(&pattern, true)
        .await
        .map_err(|e| anyhow!("cleanup: {e}"))?;
    println!("removed {removed} metadata objects");
    Ok(())
}
