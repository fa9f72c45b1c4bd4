//! `tidepool fill`: writes `count` objects of `size` bytes under a prefix, in batches, with a
//! progress bar. Used to load a pool by hand, and by tests as a writer process that can be
//! killed in the middle of a large put (W1).

use crate::cli::{bar, size_arg};
use anyhow::anyhow;
use clap::Parser;
use tidepool_client::{Client, ClientConfig};
use tidepool_proto::ReplicateConfig;

/// Writes objects into a running cluster.
#[derive(Parser, Debug)]
#[command(name = "tidepool fill")]
struct Args {
    /// Master RPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    master: String,
    /// Key prefix; keys are `<prefix>-<i>`.
    #[arg(long, default_value = "fill")]
    prefix: String,
    /// Number of objects.
    #[arg(long, default_value_t = 16)]
    count: u64,
    /// Object size (`4KiB`, `32MiB`, ...).
    #[arg(long, value_parser = size_arg, default_value = "1MiB")]
    size: u64,
    /// Objects per batch put.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Replicas per object.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Use TCP even for segments on this host.
    #[arg(long)]
    no_shm: bool,
}

/// Entry point of `tidepool fill`.
pub async fn main(args: Vec<String>) -> anyhow::Result<()> {
    let a = Args::parse_from(std::iter::once("fill".to_string()).chain(args));
    let size = usize::try_from(a.size).map_err(|_| anyhow!("size too large"))?;
    let client = Client::connect(ClientConfig {
        master_addr: a.master.clone(),
        enable_shm: !a.no_shm,
        ..ClientConfig::default()
    })
    .await
    .map_err(|e| anyhow!("connect to master {}: {e}", a.master))?;
    let cfg = ReplicateConfig {
        replica_num: a.replicas,
        ..ReplicateConfig::default()
    };
    // A memset, so even a debug build prepares a large object at once.
    let data = vec![0x5Au8; size];
    let pb = bar(a.count, &format!("fill {}", crate::cli::human(a.size)));
    let mut failed = 0u64;
    let keys: Vec<String> = (0..a.count).map(|i| format!("{}-{i}", a.prefix)).collect();
    for chunk in keys.chunks(a.batch.max(1)) {
        let parts = [&data[..]];
        let items: Vec<(&str, &[&[u8]])> = chunk.iter().map(|k| (k.as_str(), &parts[..])).collect();
        for (k, r) in chunk.iter().zip(client.put_parts_batch(&items, &cfg).await) {
            if let Err(e) = r {
                failed += 1;
                pb.println(format!("put {k} failed: {e}"));
            }
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    println!("filled {} objects, {failed} failed", a.count - failed);
    let _ = client.close().await;
    if failed > 0 {
        return Err(anyhow!("{failed} puts failed"));
    }
    Ok(())
}
