//! `tidepool bench`: a load generator against a running cluster. It joins as a pure client
//! (or with `--segment-size`, contributing memory) and measures batch put/get throughput per
//! object size, single-op latency of 4 KiB objects, and `exist` of 64-key batches.

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};
use tidepool_client::{Client, ClientConfig};
use tidepool_proto::ReplicateConfig;

struct Opts {
    master: String,
    sizes: Vec<u64>,
    total_bytes: u64,
    batch: usize,
    latency_ops: usize,
    segment_size: u64,
    no_shm: bool,
    /// Leave the written objects in the pool (to look at them on the dashboard or with
    /// `tidepool key`) instead of removing them at the end.
    keep: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        master: "127.0.0.1:50051".into(),
        sizes: vec![4 << 10, 64 << 10, 1 << 20, 8 << 20, 32 << 20],
        total_bytes: 512 << 20,
        batch: 16,
        latency_ops: 2000,
        segment_size: 0,
        no_shm: false,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut val = || -> anyhow::Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| anyhow!("{name} needs a value"))
        };
        match name.trim_start_matches('-').replace('_', "-").as_str() {
            "master" => o.master = val()?,
            "sizes" => {
                o.sizes = val()?
                    .split(',')
                    .map(|s| tidepool_common::parse_size(s).map_err(|e| anyhow!("{e}")))
                    .collect::<anyhow::Result<_>>()?
            }
            "total" => {
                o.total_bytes = tidepool_common::parse_size(&val()?).map_err(|e| anyhow!("{e}"))?
            }
            "batch" => o.batch = val()?.parse().context("batch")?,
            "latency-ops" => o.latency_ops = val()?.parse().context("latency-ops")?,
            "segment-size" => {
                o.segment_size = tidepool_common::parse_size(&val()?).map_err(|e| anyhow!("{e}"))?
            }
            "no-shm" => o.no_shm = true,
            "keep" => o.keep = true,
            other => return Err(anyhow!("unknown bench option: {other}")),
        }
    }
    Ok(o)
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Entry point of `tidepool bench`.
pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let o = parse(&args)?;
    let client = Client::connect(ClientConfig {
        master_addr: o.master.clone(),
        segment_size: o.segment_size,
        enable_shm: !o.no_shm,
        ..ClientConfig::default()
    })
    .await
    .map_err(|e| anyhow!("connect to master {}: {e}", o.master))?;
    let cfg = ReplicateConfig::default();
    let run_id: u32 = rand::random();
    println!(
        "{:>10} {:>8} {:>12} {:>12}",
        "size", "objects", "put GB/s", "get GB/s"
    );
    for &size in &o.sizes {
        let count = (o.total_bytes / size).clamp(o.batch as u64, 100_000) as usize;
        let count = count - count % o.batch.max(1);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let keys: Vec<String> = (0..count)
            .map(|i| format!("bench-{run_id}-{size}-{i}"))
            .collect();
        let pb = bar(count as u64, &format!("put {}", human(size)));
        let t = Instant::now();
        for chunk in keys.chunks(o.batch) {
            let parts = [&data[..]];
            let items: Vec<(&str, &[&[u8]])> =
                chunk.iter().map(|k| (k.as_str(), &parts[..])).collect();
            for r in client.put_parts_batch(&items, &cfg).await {
                r.map_err(|e| anyhow!("put failed: {e}"))?;
            }
            pb.inc(chunk.len() as u64);
        }
        let put_s = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let pb = bar(count as u64, &format!("get {}", human(size)));
        let mut bufs: Vec<Vec<u8>> = (0..o.batch).map(|_| vec![0u8; size as usize]).collect();
        let t = Instant::now();
        for chunk in keys.chunks(o.batch) {
            let ks: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let mut slices: Vec<&mut [u8]> =
                bufs.iter_mut().take(ks.len()).map(|b| &mut b[..]).collect();
            for r in client.batch_get_into(&ks, &mut slices).await {
                r.map_err(|e| anyhow!("get failed: {e}"))?;
            }
            pb.inc(chunk.len() as u64);
        }
        let get_s = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        if bufs[0] != data {
            return Err(anyhow!("data mismatch at size {size}"));
        }
        let bytes = (count as u64 * size) as f64;
        println!(
            "{:>10} {:>8} {:>12.2} {:>12.2}   ({:.0} objects/s put, {:.0} get)",
            human(size),
            count,
            bytes / put_s / 1e9,
            bytes / get_s / 1e9,
            count as f64 / put_s,
            count as f64 / get_s
        );
        if !o.keep {
            let ks: Vec<&str> = keys.iter().map(String::as_str).collect();
            for chunk in ks.chunks(1024) {
                client.batch_remove(chunk, true).await;
            }
        }
    }

    // Single-op latency of 4 KiB objects.
    let data = vec![7u8; 4096];
    let mut put_h = Histogram::<u64>::new(3)?;
    let mut get_h = Histogram::<u64>::new(3)?;
    let mut buf = vec![0u8; 4096];
    let pb = bar(o.latency_ops as u64, "4KiB single ops");
    for i in 0..o.latency_ops {
        let key = format!("lat-{run_id}-{i}");
        let t = Instant::now();
        client
            .put(&key, &data, &cfg)
            .await
            .map_err(|e| anyhow!("put: {e}"))?;
        put_h.record(t.elapsed().as_nanos() as u64)?;
        let t = Instant::now();
        client
            .get_into(&key, &mut buf)
            .await
            .map_err(|e| anyhow!("get: {e}"))?;
        get_h.record(t.elapsed().as_nanos() as u64)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let keys: Vec<String> = (0..64).map(|i| format!("lat-{run_id}-{i}")).collect();
    let ks: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut ex_h = Histogram::<u64>::new(3)?;
    for _ in 0..o.latency_ops {
        let t = Instant::now();
        let r = client.batch_exist(&ks).await;
        ex_h.record(t.elapsed().as_nanos() as u64)?;
        if r.iter().any(|&v| v != 1) {
            return Err(anyhow!("exist returned {r:?}"));
        }
    }
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "4KiB put     p50 {:>8.1} us  p99 {:>8.1} us",
        us(&put_h, 0.5),
        us(&put_h, 0.99)
    );
    println!(
        "4KiB get     p50 {:>8.1} us  p99 {:>8.1} us",
        us(&get_h, 0.5),
        us(&get_h, 0.99)
    );
    println!(
        "exist x64    p50 {:>8.1} us  p99 {:>8.1} us",
        us(&ex_h, 0.5),
        us(&ex_h, 0.99)
    );
    let ks: Vec<String> = (0..o.latency_ops)
        .map(|i| format!("lat-{run_id}-{i}"))
        .collect();
    let ks: Vec<&str> = ks.iter().map(String::as_str).collect();
    if !o.keep {
        for chunk in ks.chunks(1024) {
            client.batch_remove(chunk, true).await;
        }
    }
    let _ = client.close().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

fn human(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}
