//! `tidepool replay`: replays a FAST'25 Mooncake request trace (JSON lines with `timestamp`
//! in ms and `hash_ids`, the request's 512-token prefix blocks) against a running cluster, as
//! a serving engine with a KV-cache pool would: look up the longest cached prefix, read those
//! blocks, and store the missing ones. Prints progress and a summary (requests/s, GB/s,
//! latency percentiles, block hit ratio).

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tidepool_client::{Client, ClientConfig};
use tidepool_proto::ReplicateConfig;

#[derive(serde::Deserialize)]
struct Request {
    timestamp: f64,
    hash_ids: Vec<u64>,
}

/// Replays a request trace against a running cluster.
#[derive(clap::Parser, Debug)]
#[command(name = "tidepool replay")]
struct Opts {
    /// Master RPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    master: String,
    /// Trace file (JSON lines with `timestamp` and `hash_ids`).
    #[arg(long)]
    trace: String,
    /// Replay speed-up over the trace's timestamps (> 0).
    #[arg(long, default_value_t = 10.0)]
    speedup: f64,
    /// Bytes per 512-token block object.
    #[arg(long = "block-size", value_parser = crate::cli::size_arg, default_value = "256KiB")]
    block: u64,
    /// Replay at most this many requests.
    #[arg(long, default_value_t = usize::MAX)]
    limit: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    use clap::Parser;
    let o =
        Opts::try_parse_from(std::iter::once("replay".to_string()).chain(args.iter().cloned()))?;
    if o.speedup <= 0.0 || !o.speedup.is_finite() {
        return Err(anyhow!("--speedup must be positive"));
    }
    Ok(o)
}

#[derive(Default)]
struct Totals {
    blocks: AtomicU64,
    hits: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
}

/// Entry point of `tidepool replay`.
pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let o = parse(&args)?;
    let text =
        std::fs::read_to_string(&o.trace).with_context(|| format!("read trace {}", o.trace))?;
    let mut reqs = Vec::new();
    for (n, line) in text.lines().enumerate().take(o.limit) {
        if line.trim().is_empty() {
            continue;
        }
        let r: Request =
            serde_json::from_str(line).with_context(|| format!("trace line {}", n + 1))?;
        reqs.push(r);
    }
    let client = Client::connect(ClientConfig {
        master_addr: o.master.clone(),
        ..ClientConfig::default()
    })
    .await
    .map_err(|e| anyhow!("connect to master {}: {e}", o.master))?;
    let totals = Arc::new(Totals::default());
    let lat = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let pb = ProgressBar::new(reqs.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("replay [{bar:30}] {pos}/{len} requests  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(o.concurrency.max(1)));
    let block = o.block as usize;
    let payload: Arc<Vec<u8>> = Arc::new((0..block).map(|i| (i % 253) as u8).collect());
    let start = Instant::now();
    let t0 = reqs.first().map(|r| r.timestamp).unwrap_or(0.0);
    let mut tasks = Vec::with_capacity(reqs.len());
    for r in reqs {
        let due = Duration::from_secs_f64(((r.timestamp - t0) / o.speedup / 1000.0).max(0.0));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let permit = sem.clone().acquire_owned().await?;
        let (client, totals, lat, payload, pb) = (
            client.clone(),
            totals.clone(),
            lat.clone(),
            payload.clone(),
            pb.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let keys: Vec<String> = r.hash_ids.iter().map(|h| format!("blk-{h}")).collect();
            let ks: Vec<&str> = keys.iter().map(String::as_str).collect();
            let exist = client.batch_exist(&ks).await;
            let hit = exist.iter().take_while(|&&v| v == 1).count();
            let mut bufs: Vec<Vec<u8>> = (0..hit).map(|_| vec![0u8; block]).collect();
            let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
            let mut ok_hits = 0u64;
            for res in client.batch_get_into(&ks[..hit], &mut slices).await {
                if res.is_ok() {
                    ok_hits += 1;
                }
            }
            let parts = [&payload[..]];
            let items: Vec<(&str, &[&[u8]])> = ks[hit..].iter().map(|k| (*k, &parts[..])).collect();
            let mut failed = 0;
            for res in client
                .put_parts_batch(&items, &ReplicateConfig::default())
                .await
            {
                if res.is_err() {
                    failed += 1;
                }
            }
            totals.blocks.fetch_add(ks.len() as u64, Ordering::Relaxed);
            totals.hits.fetch_add(ok_hits, Ordering::Relaxed);
            totals
                .bytes
                .fetch_add(ks.len() as u64 * block as u64, Ordering::Relaxed);
            totals.failed.fetch_add(failed, Ordering::Relaxed);
            let _ = lat.lock().record(t.elapsed().as_micros() as u64);
            let b = totals.blocks.load(Ordering::Relaxed).max(1);
            pb.set_message(format!(
                "hit ratio {:.3}",
                totals.hits.load(Ordering::Relaxed) as f64 / b as f64
            ));
            pb.inc(1);
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    pb.finish();
    let secs = start.elapsed().as_secs_f64();
    let h = lat.lock().clone();
    let blocks = totals.blocks.load(Ordering::Relaxed);
    println!("requests       {}", h.len());
    println!(
        "duration       {secs:.1} s ({:.0} requests/s)",
        h.len() as f64 / secs
    );
    println!(
        "blocks         {blocks} ({:.2} GB/s moved)",
        totals.bytes.load(Ordering::Relaxed) as f64 / secs / 1e9
    );
    println!(
        "hit ratio      {:.3}",
        totals.hits.load(Ordering::Relaxed) as f64 / blocks.max(1) as f64
    );
    println!("failed puts    {}", totals.failed.load(Ordering::Relaxed));
    println!(
        "latency        p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    let _ = client.close().await;
    Ok(())
}
