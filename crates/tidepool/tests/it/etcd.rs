//! The etcd metadata backend against a real `etcd` (Debian's `etcd-server`, which
//! scripts/test.sh installs): entries published with the contract's keys and JSON, readable
//! through etcd's gRPC API (`etcdctl`, as a Mooncake peer reads them), re-published when lost
//! (W6), withdrawn at close and, with `--enable_metadata_cleanup_on_timeout`, by the master on
//! client death; an unreachable etcd fails setup fast with -1000.

use crate::cluster::{die_with_parent, eventually, free_port, master, master_env, node_with};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tidepool_client::etcd::EtcdClient;
use tidepool_client::{Client, ClientConfig};
use tidepool_common::ErrorCode;
use tidepool_proto::ReplicateConfig;

/// A single-member etcd on loopback with a temporary data dir, killed on drop.
struct Etcd {
    child: Child,
    client_addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    fn start() -> Etcd {
        let bin = std::env::var("TIDEPOOL_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let dir = tempfile::tempdir().expect("temp dir");
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let mut cmd = Command::new(&bin);
        die_with_parent(&mut cmd);
        let child = cmd
            .arg("--name=tidepool-test")
            .arg(format!("--data-dir={}", dir.path().display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=tidepool-test={peer_url}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{bin}` ({e}): these tests need a real etcd server; install it \
                     with `apt-get install -y etcd-server` (scripts/test.sh does) or point \
                     TIDEPOOL_ETCD_BIN at the binary"
                )
            });
        let client_addr = client_url.trim_start_matches("http://").to_string();
        let etcd = Etcd {
            child,
            client_addr,
            _dir: dir,
        };
        let c = etcd.client();
        let t = Instant::now();
        while c.get("tidepool-test/probe").is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "etcd did not answer on {} within 20 s",
                etcd.client_addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    fn client(&self) -> EtcdClient {
        EtcdClient::new(std::slice::from_ref(&self.client_addr))
    }

    fn url(&self) -> String {
        format!("etcd://{}", self.client_addr)
    }

    /// `key`'s value as `etcdctl` (etcd's gRPC API) reads it.
    fn etcdctl_get(&self, key: &str) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.client_addr))
            .args(["get", "--print-value-only", key])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run etcdctl ({e}): install it with `apt-get install -y etcd-client` \
                     (scripts/test.sh does)"
                )
            });
        assert!(out.status.success(), "etcdctl get {key}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }
}

fn json(bytes: Option<Vec<u8>>, key: &str) -> serde_json::Value {
    let bytes = bytes.unwrap_or_else(|| panic!("{key} missing in etcd"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"))
}

async fn etcd_client(rpc: &str, metadata_server: &str, segment: u64) -> Client {
    Client::connect(ClientConfig {
        master_addr: rpc.to_string(),
        metadata_server: metadata_server.to_string(),
        segment_size: segment,
        ..ClientConfig::default()
    })
    .await
    .expect("client with etcd metadata connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_metadata_published_read_republished_and_withdrawn() {
    let etcd = Etcd::start();
    let kv = etcd.client();
    let m = master(&[]);
    let rpc = m.field("rpc");

    // A node publishes its entries under Mooncake's keys.
    let data_port = free_port();
    let name = format!("127.0.0.1:{data_port}");
    let _n = node_with(
        &rpc,
        "16MB",
        &[
            &format!("--host={name}"),
            &format!("--metadata_server={}", etcd.url()),
        ],
    );
    let ram_key = format!("mooncake/ram/{name}");
    let rpc_key = format!("mooncake/rpc_meta/{name}");
    let ram = json(kv.get(&ram_key).unwrap(), &ram_key);
    assert_eq!(ram["name"], name.as_str());
    assert_eq!(ram["protocol"], "tcp");
    assert_eq!(ram["tcp_data_port"], data_port);
    assert_eq!(ram["implementation"], "tidepool");
    assert!(ram["timestamp"].is_string(), "{ram}");
    let buffers = ram["buffers"].as_array().expect("buffers");
    assert!(!buffers.is_empty(), "{ram}");
    assert!(buffers.iter().any(|b| b["length"] == 16u64 << 20), "{ram}");
    assert!(
        buffers
            .iter()
            .all(|b| b["addr"].is_u64() && b["name"].is_string())
    );
    let rpc_meta = json(kv.get(&rpc_key).unwrap(), &rpc_key);
    assert_eq!(
        rpc_meta,
        serde_json::json!({"ip_or_host_name": "127.0.0.1", "rpc_port": data_port})
    );
    // A Mooncake peer reads etcd through gRPC: the same bytes are there.
    let via_grpc: serde_json::Value =
        serde_json::from_str(&etcd.etcdctl_get(&rpc_key)).expect("etcdctl value is JSON");
    assert_eq!(via_grpc, rpc_meta);

    // Two clients with etcd metadata (bare host:port = etcd) put and get through the pool.
    let a = etcd_client(&rpc, &etcd.url(), 8 << 20).await;
    let b = etcd_client(&rpc, &etcd.client_addr, 0).await;
    let a_ram = format!("mooncake/ram/{}", a.hostname());
    let a_rpc = format!("mooncake/rpc_meta/{}", a.hostname());
    let b_ram = format!("mooncake/ram/{}", b.hostname());
    assert!(kv.get(&a_ram).unwrap().is_some(), "{a_ram}");
    assert!(kv.get(&a_rpc).unwrap().is_some(), "{a_rpc}");
    assert!(kv.get(&b_ram).unwrap().is_some(), "{b_ram}");
    for i in 0..8u8 {
        let value = vec![i; 64 << 10];
        a.put(&format!("etcd-k{i}"), &value, &ReplicateConfig::default())
            .await
            .unwrap();
        assert_eq!(b.get(&format!("etcd-k{i}")).await.unwrap(), value);
    }

    // W6: an entry lost from etcd comes back within the check interval.
    assert!(kv.delete(&a_ram).unwrap());
    let back = eventually(Duration::from_secs(15), || {
        kv.get(&a_ram).ok().flatten().is_some()
    })
    .await;
    assert!(back, "{a_ram} was not re-published");

    // A clean close withdraws both entries; the other client's stay.
    a.close().await.unwrap();
    assert_eq!(kv.get(&a_ram).unwrap(), None, "{a_ram} withdrawn");
    assert_eq!(kv.get(&a_rpc).unwrap(), None, "{a_rpc} withdrawn");
    assert!(kv.get(&b_ram).unwrap().is_some());
    assert!(kv.get(&ram_key).unwrap().is_some());
    b.close().await.unwrap();
    assert_eq!(kv.get(&b_ram).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_fails_setup_fast_with_1000() {
    let m = master(&[]);
    let rpc = m.field("rpc");
    let t = Instant::now();
    let e = Client::connect(ClientConfig {
        master_addr: rpc.clone(),
        metadata_server: format!("etcd://127.0.0.1:{}", free_port()),
        segment_size: 4 << 20,
        ..ClientConfig::default()
    })
    .await
    .err()
    .expect("setup against a dead etcd fails");
    assert_eq!(e.code(), ErrorCode::EtcdOperationError, "{e}");
    assert!(e.to_string().contains("etcd"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // redis stays refused with -600 before anything is started.
    let e = Client::connect(ClientConfig {
        master_addr: rpc,
        metadata_server: "redis://127.0.0.1:6379".into(),
        ..ClientConfig::default()
    })
    .await
    .err()
    .expect("redis refused");
    assert_eq!(e.code(), ErrorCode::InvalidParams, "{e}");
}

/// `--enable_metadata_cleanup_on_timeout` with `MOONCAKE_TE_META_DATA_SERVER=etcd://…`: the
/// master deletes a `kill -9`ed node's entries once its client TTL runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_cleans_a_dead_clients_etcd_entries() {
    let etcd = Etcd::start();
    let kv = etcd.client();
    let url = etcd.url();
    let m = master_env(
        &[
            "--client_ttl=2",
            "--enable_metadata_cleanup_on_timeout=true",
        ],
        &[("MOONCAKE_TE_META_DATA_SERVER", url.as_str())],
    );
    let rpc = m.field("rpc");
    let name = format!("127.0.0.1:{}", free_port());
    let mut n = node_with(
        &rpc,
        "8MB",
        &[
            &format!("--host={name}"),
            &format!("--metadata_server={url}"),
        ],
    );
    let ram_key = format!("mooncake/ram/{name}");
    let rpc_key = format!("mooncake/rpc_meta/{name}");
    assert!(kv.get(&ram_key).unwrap().is_some());
    assert!(kv.get(&rpc_key).unwrap().is_some());
    n.kill9();
    let gone = eventually(Duration::from_secs(15), || {
        matches!((kv.get(&ram_key), kv.get(&rpc_key)), (Ok(None), Ok(None)))
    })
    .await;
    assert!(gone, "the master did not delete {ram_key} / {rpc_key}");
}
