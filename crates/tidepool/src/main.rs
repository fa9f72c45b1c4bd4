//! The `tidepool` binary: a thin entry point. Argument parsing lives in [`flags`]; the
//! services live in the library crates.
//!
//! Subcommands:
//! - `tidepool master [gflags]`: metadata and allocation service (Mooncake's `mooncake_master`).
//! - `tidepool node [flags]`: a storage process contributing a segment (`mooncake_client`),
//!   serving thin clients (`setup_dummy`) on `--port`.
//! - `tidepool bench [options]`: load generator against a running cluster.
//! - `tidepool replay --trace FILE`: replays a FAST'25 request trace against a cluster.
//! - `tidepool fill`: writes objects into a cluster (loading by hand, writer in tests).
//! - `tidepool status|segments|key KEY [--admin HOST:PORT]`: admin views ([`admin_cli`]).

mod admin_cli;
mod bench;
mod cli;
mod fill;
mod flags;
mod meta_cleanup;
mod replay;

use anyhow::Context;
use std::time::Duration;
use tidepool_client::{Client, ClientConfig};
use tokio::net::TcpListener;
use tracing::{info, warn};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sub = args.get(1).map(String::as_str).unwrap_or("");
    let rest = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        Vec::new()
    };
    // Services log at info; load tools only warn, so their progress bars stay readable.
    let default_level = if matches!(sub, "master" | "node") {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let code = match sub {
        "master" => run(master(rest)),
        "node" => run(node(rest)),
        "bench" => run(bench::main(rest)),
        "replay" => run(replay::main(rest)),
        "fill" => run(fill::main(rest)),
        "status" | "segments" | "key" => admin_cli::main(&args[1..]),
        "-V" | "--version" | "version" => {
            println!("tidepool {}", env!("CARGO_PKG_VERSION"));
            0
        }
        _ => {
            eprintln!(
                "usage: tidepool <master|node|bench|replay|fill|status|segments|key> [flags]\n  master  metadata and allocation service (Mooncake master flags)\n  node    storage process contributing a segment\n  bench   load generator against a running cluster\n  replay  replay a request trace against a running cluster\n  fill    write objects into a running cluster\n  status | segments | key KEY  admin views of a running master (--admin HOST:PORT)"
            );
            if sub.is_empty() || sub == "-h" || sub == "--help" {
                0
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}

fn run(fut: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return 1;
        }
    };
    // The work runs on a worker thread, not on this one: a worker also drives the I/O
    // reactor, so a reply wakes the task directly instead of waking a worker that then has to
    // wake the blocked main thread (one thread wake-up fewer per round trip).
    let joined = rt.block_on(rt.spawn(fut));
    match joined.unwrap_or_else(|e| Err(anyhow::anyhow!("main task failed: {e}"))) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A parsed command line, or `None` after printing the usage text that `--help` asked for.
fn flags_or_help<T>(parsed: Result<T, String>) -> anyhow::Result<Option<T>> {
    match parsed {
        Ok(f) => Ok(Some(f)),
        Err(msg) if flags::is_help(&msg) => {
            println!("{msg}");
            Ok(None)
        }
        Err(msg) => Err(anyhow::anyhow!(msg)),
    }
}

async fn master(args: Vec<String>) -> anyhow::Result<()> {
    let Some(f) = flags_or_help(flags::parse_master_flags(&args))? else {
        return Ok(());
    };
    for w in &f.warnings {
        warn!("{w}");
    }
    let state = tidepool_master::new_state(f.settings.clone());
    let rpc = TcpListener::bind((f.rpc_address.as_str(), f.rpc_port))
        .await
        .with_context(|| format!("bind rpc {}:{}", f.rpc_address, f.rpc_port))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin = TcpListener::bind((f.metrics_host.as_str(), f.metrics_port))
        .await
        .with_context(|| format!("bind metrics {}:{}", f.metrics_host, f.metrics_port))?;
    let admin_addr = admin.local_addr()?;
    let router = tidepool_master::admin::router(state.clone());
    let mut stop = stop_rx.clone();
    tokio::spawn(async move {
        let _ = axum::serve(admin, router)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    });
    let mut meta_addr = None;
    if f.enable_http_metadata_server {
        let l = TcpListener::bind((
            f.http_metadata_server_host.as_str(),
            f.http_metadata_server_port,
        ))
        .await
        .with_context(|| {
            format!(
                "bind metadata {}:{}",
                f.http_metadata_server_host, f.http_metadata_server_port
            )
        })?;
        meta_addr = Some(l.local_addr()?);
        let store = tidepool_master::http_meta::MetadataStore::new();
        // The embedded server always cleans up after segments that go away (contract §4.1).
        let cleaner = store.clone();
        state
            .lock()
            .set_segment_gone_hook(move |name| cleaner.remove_segment_entries(name));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = tidepool_master::http_meta::serve(l, store, async move {
                let _ = stop.changed().await;
            })
            .await;
        });
    }
    if f.enable_metadata_cleanup_on_timeout && !f.enable_http_metadata_server {
        meta_cleanup::install(&state);
    }
    let rpc_addr = rpc.local_addr()?;
    info!(%rpc_addr, %admin_addr, ?meta_addr, dashboard = %format!("http://{admin_addr}/dashboard"), "tidepool master serving");
    // Machine-readable ready line for scripts and tests (ports may have been 0).
    println!(
        "READY rpc={rpc_addr} metrics={admin_addr} metadata={}",
        meta_addr.map(|a| a.to_string()).unwrap_or_default()
    );
    let server = tokio::spawn(tidepool_master::rpc::run(rpc, state.clone(), stop_rx));
    if f.enable_metric_reporting {
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let s = st.lock().stats();
                info!(
                    keys = s.key_count,
                    allocated = s.allocated_bytes,
                    capacity = s.capacity_bytes,
                    clients = s.active_clients,
                    evicted = s.evicted_keys,
                    "master summary"
                );
            }
        });
    }
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}

/// Host the client HTTP endpoint binds: the node's own host without a port.
fn client_http_host(host: &str) -> String {
    tidepool_client::split_host_port(host)
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .unwrap_or_else(|_| "127.0.0.1".to_string())
}

async fn node(args: Vec<String>) -> anyhow::Result<()> {
    let Some(f) = flags_or_help(flags::parse_node_flags(&args))? else {
        return Ok(());
    };
    for w in &f.warnings {
        warn!("{w}");
    }
    // The data server binds the host's address; a wildcard host advertises loopback unless
    // MC_TCP_BIND_ADDRESS names the address peers should use.
    let (host, port) = tidepool_client::split_host_port(&f.host)
        .map_err(|e| anyhow::anyhow!("bad --host: {e}"))?;
    let bind_host = match std::env::var("MC_TCP_BIND_ADDRESS") {
        Ok(a) if !a.trim().is_empty() => a.trim().to_string(),
        _ if host == "0.0.0.0" => "127.0.0.1".to_string(),
        _ => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    };
    let client = Client::connect(ClientConfig {
        master_addr: f.master_server_address.clone(),
        local_hostname: port.map(|p| format!("{bind_host}:{p}")).unwrap_or_default(),
        bind_host,
        metadata_server: f.metadata_server.clone(),
        segment_size: f.global_segment_size,
        ..ClientConfig::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("node setup failed: {e}"))?;
    info!(
        segment = client.hostname(),
        size = f.global_segment_size,
        "tidepool node serving"
    );
    let mut http = String::new();
    if f.enable_http_server {
        let l = TcpListener::bind((client_http_host(&f.host), f.http_port))
            .await
            .with_context(|| format!("bind client http port {}", f.http_port))?;
        http = format!(" http={}", l.local_addr()?);
        tokio::spawn(tidepool_client::http::serve(l, client.clone()));
    }
    let (thin, ipc_path) = start_thin_server(&f, &client).await;
    println!(
        "READY segment={} data={}{http}{thin}",
        client.hostname(),
        client.engine().endpoint()
    );
    shutdown_signal().await;
    if let Some(p) = ipc_path {
        let _ = std::fs::remove_file(p);
    }
    client
        .close()
        .await
        .map_err(|e| anyhow::anyhow!("close: {e}"))?;
    Ok(())
}

/// Serves thin clients (`setup_dummy`) on `--port` of the node's host, with their memory
/// channel on a fresh Unix socket. A port that cannot be bound only disables thin clients
/// (the segment is still useful); returns the READY-line part and the socket path to remove.
async fn start_thin_server(f: &flags::NodeFlags, client: &Client) -> (String, Option<String>) {
    let host = client_http_host(&f.host);
    let tcp = match TcpListener::bind((host.as_str(), f.port)).await {
        Ok(l) => l,
        Err(e) => {
            warn!(port = f.port, error = %e, "cannot bind the thin-client port; setup_dummy clients cannot connect");
            return (String::new(), None);
        }
    };
    let path = tidepool_client::thin::ThinServer::default_ipc_path();
    let ipc = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(path, error = %e, "cannot bind the thin-client socket; setup_dummy clients cannot connect");
            return (String::new(), None);
        }
    };
    let addr = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    info!(addr, ipc = path, "serving thin clients");
    let server = tidepool_client::thin::ThinServer::new(client.clone(), path.clone());
    tokio::spawn(server.run(tcp, ipc));
    (format!(" thin={addr}"), Some(path))
}
