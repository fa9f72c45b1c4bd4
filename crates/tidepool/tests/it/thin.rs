//! Standalone mode across real processes: thin clients in the test process forward their calls
//! to a `tidepool node` (the real client), whose segment holds the objects.

use crate::cluster::{master, node_with};
use std::time::{Duration, Instant};
use tidepool_client::thin::{ThinClient, ThinConfig, alloc_shared, free_shared};
use tidepool_common::ErrorCode;
use tidepool_proto::ReplicateConfig;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

async fn thin(addr: &str, local: u64) -> ThinClient {
    ThinClient::connect(ThinConfig {
        server_addr: addr.to_string(),
        local_buffer_size: local,
        ..ThinConfig::default()
    })
    .await
    .expect("thin client connects")
}

/// A block of shareable memory as a mutable slice.
fn shared_block(len: usize) -> &'static mut [u8] {
    let addr = alloc_shared(len as u64).expect("alloc_shared");
    // SAFETY: `alloc_shared` returned `len` (rounded up) zeroed, mapped bytes that only this
    // test references until it frees them.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_clients_share_memory_and_objects_outlive_them() {
    let m = master(&["--default_kv_lease_ttl=200"]);
    let rpc = m.field("rpc");
    let n = node_with(
        &rpc,
        "64MB",
        &[
            "--host=127.0.0.1",
            "--port=0",
            "--metadata_server=P2PHANDSHAKE",
        ],
    );
    let addr = n.field("thin");
    assert!(
        !addr.is_empty(),
        "node reports its thin-client port: {}",
        n.ready
    );
    let cfg = ReplicateConfig::default();

    let a = thin(&addr, 1 << 20).await;
    assert_eq!(a.hostname(), n.field("segment"));

    // Zero-copy path: pointers inside shared blocks, one allocated after setup.
    let block = shared_block(4 << 20);
    let one = pattern(1, 1 << 20);
    let two = pattern(2, 3 << 20);
    block[..one.len()].copy_from_slice(&one);
    block[one.len()..one.len() + two.len()].copy_from_slice(&two);
    let (p1, p2) = block.split_at(one.len());
    let parts1 = [p1];
    let parts2 = [&p2[..two.len()]];
    let r = a
        .put_parts_batch(&[("z1", &parts1[..]), ("z2", &parts2[..])], &cfg)
        .await;
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    assert_eq!(
        a.bytes_moved(),
        (4 << 20, 0),
        "shared blocks travel by reference"
    );

    // Inline path: ordinary heap memory, a gather of two parts.
    let head = b"header:".to_vec();
    let body = pattern(3, 100_000);
    let inline_parts = [&head[..], &body[..]];
    assert!(
        a.put_parts_batch(&[("inline", &inline_parts[..])], &cfg)
            .await[0]
            .is_ok()
    );
    assert_eq!(a.bytes_moved(), (4 << 20, 100_007));
    // Write-once through the node as well.
    a.put("inline", b"other", &cfg).await.expect("second put");

    // Read back into a shared block (zero copy) and into heap memory (inline), with larger
    // capacities than the objects.
    let dst = shared_block(4 << 20);
    let (d1, d2) = dst.split_at_mut(2 << 20);
    let mut bufs: [&mut [u8]; 2] = [d1, d2];
    let got = a.batch_get_into(&["z1", "z2"], &mut bufs).await;
    assert_eq!(got[0].as_ref().ok(), Some(&(1 << 20)));
    assert_eq!(
        got[1].as_ref().unwrap_err().code(),
        ErrorCode::InvalidParams
    );
    assert_eq!(&bufs[0][..one.len()], &one[..]);
    let mut heap = vec![0u8; 200_000];
    assert_eq!(a.get_into("inline", &mut heap).await.unwrap(), 100_007);
    assert_eq!(&heap[..7], b"header:");
    assert_eq!(&heap[7..100_007], &body[..]);
    // Scatter of one object over a shared piece and a heap piece.
    let mut tail = vec![0u8; 2 << 20];
    {
        let (s1, _) = dst.split_at_mut(1 << 20);
        let mut pieces = vec![vec![s1, &mut tail[..]]];
        let got = a.batch_get_into_parts(&["z2"], &mut pieces).await;
        assert_eq!(got[0].as_ref().ok(), Some(&(3 << 20)));
    }
    assert_eq!(&dst[..1 << 20], &two[..1 << 20]);
    assert_eq!(&tail[..], &two[1 << 20..]);

    // Metadata calls travel through the node.
    assert_eq!(a.batch_exist(&["z1", "nope"]).await, vec![1, 0]);
    assert_eq!(a.get_size("z2").await.unwrap(), 3 << 20);
    assert_eq!(
        a.get_into("nope", &mut heap).await.unwrap_err().code(),
        ErrorCode::ObjectNotFound
    );
    let owned = a.batch_get_owned(&["inline", "z2"], 1 << 20).await;
    assert_eq!(owned[0].as_ref().unwrap().len(), 100_007);
    assert!(owned[1].is_err(), "larger than the limit");

    // A second thin client sees the objects; they survive the first one's close.
    a.close().await.unwrap();
    let b = thin(&addr, 0).await;
    assert_eq!(b.batch_exist(&["z1", "z2", "inline"]).await, vec![1, 1, 1]);
    let mut back = vec![0u8; 3 << 20];
    assert_eq!(b.get_into("z2", &mut back).await.unwrap(), 3 << 20);
    assert_eq!(back, two);

    // A thin client that vanishes in the middle of a call (as if killed: its sockets just
    // close) leaves the node serving everyone else.
    let c = thin(&addr, 0).await;
    let big = shared_block(32 << 20);
    big.fill(7);
    let big: &'static [u8] = big;
    let task = tokio::spawn(async move {
        let parts = [big];
        c.put_parts_batch(&[("big", &parts[..])], &ReplicateConfig::default())
            .await
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    task.abort();
    let _ = task.await;
    assert_eq!(b.batch_exist(&["z1"]).await, vec![1]);
    assert_eq!(b.batch_remove(&["z1"], true).await, vec![0]);
    assert!(b.remove_all(true).await.unwrap() >= 2);

    assert!(free_shared(block.as_ptr() as u64));
    assert!(!free_shared(block.as_ptr() as u64));
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_client_against_a_closed_port_fails_fast() {
    let port = crate::cluster::free_port();
    let t = Instant::now();
    let err = ThinClient::connect(ThinConfig {
        server_addr: format!("127.0.0.1:{port}"),
        ..ThinConfig::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RpcFail);
    assert!(t.elapsed() < Duration::from_secs(5));
}
