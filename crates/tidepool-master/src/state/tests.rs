//! Unit tests of the master state, driven by a mock clock.

use super::*;
use crate::settings::AllocationStrategy;
use removal::{DropOrder, Removal};
use tidepool_common::{Incarnation, MockClock, ObjectId};
use tidepool_proto::data::{Dropped, Seal};
use tidepool_proto::master::{PutEndItem, PutStartResult};
use tidepool_proto::types::{MemoryReplica, ReplicaStatus, ReplicateConfig, SoftPin};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const BASE: u64 = 0x7f00_0000_0000;

fn state_with(settings: MasterSettings) -> (MasterState, Arc<MockClock>) {
    let clock = MockClock::new(1_000);
    (MasterState::new(settings, clock.clone(), 7), clock)
}

fn state() -> (MasterState, Arc<MockClock>) {
    state_with(MasterSettings::default())
}

fn spec(name: &str, size: u64, inc: u64) -> SegmentSpec {
    SegmentSpec {
        name: name.to_string(),
        incarnation: Incarnation(inc),
        base_addr: BASE,
        size,
        endpoint: name.to_string(),
        host_id: format!("boot-{}", segments::host_of(name)),
        shm_socket: None,
        protocol: "tcp".into(),
    }
}

/// A client on `host` with one segment of `size` bytes named `host:port`.
fn node(st: &mut MasterState, host: &str, port: u16, size: u64) -> (ClientId, SegmentId) {
    let name = format!("{host}:{port}");
    let c = st.register_client(&name, host, &format!("boot-{host}"), None);
    let s = st.mount_segment(c, spec(&name, size, 1)).unwrap();
    (c, s)
}

fn cfg() -> ReplicateConfig {
    ReplicateConfig::default()
}

fn start(
    st: &mut MasterState,
    c: ClientId,
    key: &str,
    size: u64,
    cfg: &ReplicateConfig,
) -> PutStartResult {
    st.put_start(c, &[(key.to_string(), size)], cfg).remove(0)
}

fn allocated(r: PutStartResult) -> (ObjectId, Vec<MemoryReplica>) {
    match r {
        PutStartResult::Allocated {
            object_id,
            replicas,
            ..
        } => (object_id, replicas),
        other => panic!("expected Allocated, got {other:?}"),
    }
}

fn end(st: &mut MasterState, c: ClientId, key: &str, id: ObjectId) -> i32 {
    st.put_end(
        c,
        &[PutEndItem {
            key: key.to_string(),
            object_id: id,
            failed: vec![],
        }],
    )[0]
}

/// A whole put; returns 0 or the failure code.
fn put_with(st: &mut MasterState, c: ClientId, key: &str, size: u64, cfg: &ReplicateConfig) -> i32 {
    match start(st, c, key, size, cfg) {
        PutStartResult::Allocated { object_id, .. } => end(st, c, key, object_id),
        PutStartResult::Exists => 0,
        PutStartResult::InFlight => ErrorCode::ReplicaIsNotReady.as_i32(),
        PutStartResult::Failed(e) => e.as_i32(),
    }
}

fn put(st: &mut MasterState, c: ClientId, key: &str, size: u64) -> i32 {
    put_with(st, c, key, size, &cfg())
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

fn exist1(st: &mut MasterState, key: &str) -> i32 {
    st.exist(&keys(&[key]))[0]
}

fn remove1(st: &mut MasterState, key: &str, force: bool) -> i32 {
    let r = st.remove(&keys(&[key]), force);
    released(st, r)[0]
}

/// A removal's result once its owners acknowledged (here: at once) and its ranges went back.
fn released<T>(st: &mut MasterState, (out, removal): (T, Removal)) -> T {
    st.release(removal);
    out
}

// ----- object state machine -----

#[test]
fn put_then_read() {
    let (mut st, _clock) = state();
    let (c, seg) = node(&mut st, "a", 1, 64 * MIB);
    let (id, reps) = allocated(start(&mut st, c, "k", 100, &cfg()));
    assert_eq!(id.epoch, 7);
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0].segment, seg);
    assert_eq!(reps[0].len, 100);
    assert!(reps[0].addr >= BASE && reps[0].addr % 8 == 0);
    // In flight: invisible to readers.
    assert_eq!(exist1(&mut st, "k"), 0);
    assert_eq!(
        st.get_replicas(c, &keys(&["k"]))[0],
        Err(ErrorCode::ReplicaIsNotReady)
    );
    let q = st.query_key("k").unwrap();
    assert_eq!(q.replicas[0].status, ReplicaStatus::Processing);
    assert_eq!(end(&mut st, c, "k", id), 0);
    assert_eq!(exist1(&mut st, "k"), 1);
    let v = st.get_replicas(c, &keys(&["k"])).remove(0).unwrap();
    assert_eq!(v.object_id, id);
    assert_eq!(v.size, 100);
    assert_eq!(v.lease_ttl_ms, 10_000);
    assert_eq!(v.replicas.len(), 1);
    assert_eq!(v.replicas[0].status, ReplicaStatus::Complete);
    assert_eq!(v.replicas[0].memory().unwrap().addr, reps[0].addr);
    assert_eq!(
        st.get_replicas(c, &keys(&["nope"]))[0],
        Err(ErrorCode::ObjectNotFound)
    );
    assert_eq!(st.query_key("nope"), Err(ErrorCode::ObjectNotFound));
    let s = st.stats();
    assert_eq!((s.key_count, s.get_total, s.get_hits), (1, 3, 1));
    assert_eq!(s.allocated_bytes, 104);
    // Write-once: a second put reports Exists and allocates nothing.
    assert_eq!(start(&mut st, c, "k", 100, &cfg()), PutStartResult::Exists);
    assert_eq!(st.stats().allocated_bytes, 104);
    assert_eq!(st.all_keys(), vec!["k".to_string()]);
}

#[test]
fn bad_inputs_return_codes() {
    let (mut st, _clock) = state();
    let (c, _) = node(&mut st, "a", 1, MIB);
    let long = "x".repeat(MAX_KEY_LEN + 1);
    assert_eq!(
        start(&mut st, c, "", 8, &cfg()),
        PutStartResult::Failed(ErrorCode::InvalidParams)
    );
    assert_eq!(
        start(&mut st, c, &long, 8, &cfg()),
        PutStartResult::Failed(ErrorCode::InvalidKey)
    );
    assert_eq!(
        start(&mut st, c, "k", 0, &cfg()),
        PutStartResult::Failed(ErrorCode::InvalidParams)
    );
    assert_eq!(
        start(&mut st, c, "k", u64::MAX, &cfg()),
        PutStartResult::Failed(ErrorCode::NoAvailableHandle)
    );
    let zero = ReplicateConfig {
        replica_num: 0,
        ..cfg()
    };
    assert_eq!(
        start(&mut st, c, "k", 8, &zero),
        PutStartResult::Failed(ErrorCode::InvalidParams)
    );
    let pin = ReplicateConfig {
        soft_pin: SoftPin::Enable {
            ttl_ms: Some(86_400_001),
        },
        ..cfg()
    };
    assert_eq!(
        start(&mut st, c, "k", 8, &pin),
        PutStartResult::Failed(ErrorCode::InvalidParams)
    );
    assert_eq!(
        start(&mut st, ClientId(999), "k", 8, &cfg()),
        PutStartResult::Failed(ErrorCode::ClientNotFound)
    );
    assert_eq!(st.exist(&keys(&["", &long])), vec![-600, -400]);
    let r = st.remove(&keys(&[""]), true);
    assert!(r.1.is_empty());
    assert_eq!(released(&mut st, r), vec![-600]);
    assert_eq!(st.query_key(&long), Err(ErrorCode::InvalidKey));
    let fake = ObjectId { epoch: 7, seq: 999 };
    assert_eq!(end(&mut st, c, "nope", fake), -704);
    assert_eq!(st.put_revoke(c, &[("nope".into(), fake)]), vec![-704]);
    assert_eq!(st.stats().allocated_bytes, 0);
    assert_eq!(st.stats().key_count, 0);
}

#[test]
fn concurrent_put_inflight_then_takeover() {
    let (mut st, clock) = state();
    let (a, _) = node(&mut st, "a", 1, MIB);
    let (b, _) = node(&mut st, "b", 1, MIB);
    let (id_a, _) = allocated(start(&mut st, a, "k", 1000, &cfg()));
    // W11: the second writer is told to wait, not that the put succeeded.
    assert_eq!(
        start(&mut st, b, "k", 1000, &cfg()),
        PutStartResult::InFlight
    );
    assert_eq!(
        start(&mut st, a, "k", 1000, &cfg()),
        PutStartResult::InFlight
    );
    clock.advance(st.settings().put_start_discard_timeout_ms);
    st.heartbeat(a);
    let (id_b, _) = allocated(start(&mut st, b, "k", 1000, &cfg()));
    assert_ne!(id_a, id_b);
    assert_eq!(
        st.stats().allocated_bytes,
        1000,
        "the stale put's range was freed"
    );
    assert_eq!(
        end(&mut st, a, "k", id_a),
        ErrorCode::IllegalClient.as_i32()
    );
    assert_eq!(end(&mut st, b, "k", id_b), 0);
    assert_eq!(
        end(&mut st, b, "k", id_b),
        ErrorCode::InvalidWrite.as_i32(),
        "already readable"
    );
    assert_eq!(exist1(&mut st, "k"), 1);
}

#[test]
fn revoke_and_ownership() {
    let (mut st, _clock) = state();
    let (a, _) = node(&mut st, "a", 1, MIB);
    let (b, _) = node(&mut st, "b", 1, MIB);
    let (id, _) = allocated(start(&mut st, a, "k", 4096, &cfg()));
    assert_eq!(st.put_revoke(b, &[("k".into(), id)]), vec![-601]);
    let wrong = ObjectId {
        epoch: 7,
        seq: id.seq + 100,
    };
    assert_eq!(st.put_revoke(a, &[("k".into(), wrong)]), vec![-700]);
    assert_eq!(end(&mut st, a, "k", wrong), -700);
    assert_eq!(st.put_revoke(a, &[("k".into(), id)]), vec![0]);
    assert_eq!(exist1(&mut st, "k"), 0);
    assert_eq!(st.query_key("k"), Err(ErrorCode::ObjectNotFound));
    assert_eq!(st.stats().allocated_bytes, 0);
    assert_eq!(end(&mut st, a, "k", id), -704);
    // The key is free for a new put.
    assert_eq!(put(&mut st, b, "k", 10), 0);
}

#[test]
fn put_end_drops_failed_replicas() {
    let (mut st, _clock) = state();
    let (a, sa) = node(&mut st, "a", 1, MIB);
    let (_b, sb) = node(&mut st, "b", 1, MIB);
    let two = ReplicateConfig {
        replica_num: 2,
        ..cfg()
    };
    let (id, reps) = allocated(start(&mut st, a, "k", 100, &two));
    assert_eq!(reps.len(), 2);
    let r = st.put_end(
        a,
        &[PutEndItem {
            key: "k".into(),
            object_id: id,
            failed: vec![sb],
        }],
    );
    assert_eq!(r, vec![0]);
    let v = st.get_replicas(a, &keys(&["k"])).remove(0).unwrap();
    assert_eq!(v.replicas.len(), 1);
    assert_eq!(v.replicas[0].memory().unwrap().segment, sa);
    assert_eq!(st.stats().allocated_bytes, 104);
    let (id2, _) = allocated(start(&mut st, a, "k2", 100, &two));
    let r = st.put_end(
        a,
        &[PutEndItem {
            key: "k2".into(),
            object_id: id2,
            failed: vec![sa, sb],
        }],
    );
    assert_eq!(r, vec![-800]);
    assert_eq!(exist1(&mut st, "k2"), 0);
    assert_eq!(st.stats().allocated_bytes, 104);
}

// ----- leases and removal -----

#[test]
fn leases_block_remove_until_ttl() {
    let (mut st, clock) = state();
    let (c, _) = node(&mut st, "a", 1, MIB);
    assert_eq!(put(&mut st, c, "k", 10), 0);
    // A commit grants no lease.
    assert_eq!(put(&mut st, c, "j", 10), 0);
    assert_eq!(remove1(&mut st, "j", false), 0);
    assert_eq!(exist1(&mut st, "k"), 1);
    assert_eq!(remove1(&mut st, "k", false), -706);
    clock.advance(9_999);
    assert_eq!(remove1(&mut st, "k", false), -706);
    clock.advance(1);
    assert_eq!(remove1(&mut st, "k", false), 0);
    assert_eq!(remove1(&mut st, "k", false), -704);
    // get grants one too; force ignores it.
    assert_eq!(put(&mut st, c, "k", 10), 0);
    st.get_replicas(c, &keys(&["k"])).remove(0).unwrap();
    assert_eq!(remove1(&mut st, "k", false), -706);
    assert_eq!(remove1(&mut st, "k", true), 0);
    assert_eq!(st.stats().allocated_bytes, 0);
}

fn upsert_start(st: &mut MasterState, c: ClientId, key: &str, size: u64) -> PutStartResult {
    st.upsert_start(c, &[(key.to_string(), size)], &cfg())
        .remove(0)
}

#[test]
fn upsert_replaces_and_respects_leases() {
    let (mut st, clock) = state();
    let (c, _) = node(&mut st, "a", 1, MIB);
    // Absent key: an upsert is an insert.
    let (id1, _) = allocated(upsert_start(&mut st, c, "k", 100));
    assert_eq!(end(&mut st, c, "k", id1), 0);
    // Readable, no lease: the old version goes, the key is in flight until the new commit.
    let (id2, _) = allocated(upsert_start(&mut st, c, "k", 300));
    assert_ne!(id1, id2);
    assert_eq!(st.stats().allocated_bytes, 304, "old range freed at once");
    assert_eq!(exist1(&mut st, "k"), 0);
    assert_eq!(
        st.get_replicas(c, &keys(&["k"]))[0],
        Err(ErrorCode::ReplicaIsNotReady)
    );
    // The old version's commit is refused: it is not the current one.
    assert_eq!(end(&mut st, c, "k", id1), ErrorCode::InvalidWrite.as_i32());
    // A second upsert while the first is in flight waits like a put (W11).
    assert_eq!(upsert_start(&mut st, c, "k", 8), PutStartResult::InFlight);
    assert_eq!(end(&mut st, c, "k", id2), 0);
    let v = st.get_replicas(c, &keys(&["k"])).remove(0).unwrap();
    assert_eq!((v.object_id, v.size), (id2, 300));
    // The read granted a lease: the replacement is refused (W13) until it expires.
    assert_eq!(
        upsert_start(&mut st, c, "k", 8),
        PutStartResult::Failed(ErrorCode::ObjectHasLease)
    );
    // A plain put of a readable key still writes nothing.
    assert_eq!(start(&mut st, c, "k", 8, &cfg()), PutStartResult::Exists);
    clock.advance(10_000);
    let (id3, _) = allocated(upsert_start(&mut st, c, "k", 8));
    assert_eq!(end(&mut st, c, "k", id3), 0);
    let s = st.stats();
    assert_eq!(
        (s.key_count, s.allocated_bytes, s.upsert_replacements),
        (1, 8, 2)
    );
}

#[test]
fn upsert_soft_pin_preserve_and_disable() {
    let (mut st, clock) = state();
    let (c, _) = node(&mut st, "a", 1, MIB);
    let pin = ReplicateConfig {
        soft_pin: SoftPin::Enable {
            ttl_ms: Some(5_000),
        },
        ..cfg()
    };
    assert_eq!(put_with(&mut st, c, "k", 10, &pin), 0);
    assert_eq!(st.stats().soft_pin_key_count, 1);
    clock.advance(1_000);
    // PRESERVE (the default config) keeps the pin for what is left of its period.
    let (id, _) = allocated(upsert_start(&mut st, c, "k", 10));
    assert_eq!(st.stats().soft_pin_key_count, 0, "in flight: not counted");
    assert_eq!(end(&mut st, c, "k", id), 0);
    assert_eq!(st.stats().soft_pin_key_count, 1);
    // DISABLE clears it.
    let off = ReplicateConfig {
        soft_pin: SoftPin::Disable,
        ..cfg()
    };
    let r = st.upsert_start(c, &[("k".to_string(), 10)], &off).remove(0);
    let (id, _) = allocated(r);
    assert_eq!(end(&mut st, c, "k", id), 0);
    assert_eq!(st.stats().soft_pin_key_count, 0);
}

#[test]
fn lease_is_extended_never_shortened() {
    let s = MasterSettings {
        default_kv_lease_ttl_ms: 1000,
        ..MasterSettings::default()
    };
    let (mut st, clock) = state_with(s);
    let (c, _) = node(&mut st, "a", 1, MIB);
    assert_eq!(put(&mut st, c, "k", 10), 0);
    assert_eq!(exist1(&mut st, "k"), 1);
    clock.advance(600);
    assert_eq!(exist1(&mut st, "k"), 1); // now deadline = +1600
    clock.advance(600);
    assert_eq!(remove1(&mut st, "k", false), -706);
    clock.advance(400);
    assert_eq!(remove1(&mut st, "k", false), 0);
}

#[test]
fn remove_in_flight_is_refused_even_forced() {
    let (mut st, _clock) = state();
    let (c, _) = node(&mut st, "a", 1, MIB);
    allocated(start(&mut st, c, "k", 10, &cfg()));
    assert_eq!(remove1(&mut st, "k", true), -703);
    assert_eq!(remove1(&mut st, "k", false), -703);
}

#[test]
fn remove_all_and_regex_counts() {
    let (mut st, _clock) = state();
    let (c, _) = node(&mut st, "a", 1, MIB);
    for k in ["a/1", "a/2", "b/1", "b/2", "c/1"] {
        assert_eq!(put(&mut st, c, k, 10), 0);
    }
    allocated(start(&mut st, c, "a/inflight", 10, &cfg()));
    assert_eq!(exist1(&mut st, "a/2"), 1); // leased
    let re = regex::Regex::new("^a/").unwrap();
    assert_eq!(
        {
            let r = st.remove_by_regex(&re, false);
            released(&mut st, r)
        },
        1,
        "a/1 only: a/2 leased, a/inflight in flight"
    );
    assert_eq!(
        {
            let r = st.remove_by_regex(&re, true);
            released(&mut st, r)
        },
        1,
        "a/2 forced"
    );
    let re = regex::Regex::new("/1").unwrap();
    assert_eq!(
        {
            let r = st.remove_by_regex(&re, false);
            released(&mut st, r)
        },
        2,
        "search anywhere: b/1, c/1"
    );
    assert_eq!(exist1(&mut st, "b/2"), 1);
    assert_eq!(
        {
            let r = st.remove_all(false);
            released(&mut st, r)
        },
        0
    );
    assert_eq!(
        {
            let r = st.remove_all(true);
            released(&mut st, r)
        },
        1
    );
    assert_eq!(st.all_keys(), vec!["a/inflight".to_string()]);
    assert_eq!(st.stats().allocated_bytes, 16);
}

// ----- eviction and pins -----

fn eviction_settings(hwm: f64, ratio: f64) -> MasterSettings {
    MasterSettings {
        eviction_high_watermark_ratio: hwm,
        eviction_ratio: ratio,
        ..MasterSettings::default()
    }
}

#[test]
fn proactive_eviction_reaches_target_in_one_tick_in_lru_order() {
    let (mut st, clock) = state_with(eviction_settings(0.9, 0.05));
    let (c, _) = node(&mut st, "a", 1, 100 * 4096);
    for i in 0..89 {
        assert_eq!(put(&mut st, c, &format!("k{i}"), 4096), 0);
        clock.advance(1);
    }
    st.tick();
    assert_eq!(st.stats().evicted_keys, 0, "at 89%, below the watermark");
    // Touch k0..k4: they become most recent; their leases run out before eviction.
    for i in 0..5 {
        assert_eq!(exist1(&mut st, &format!("k{i}")), 1);
    }
    clock.advance(20_000);
    for i in 89..95 {
        assert_eq!(put(&mut st, c, &format!("k{i}"), 4096), 0);
    }
    st.tick();
    let s = st.stats();
    assert!(
        s.allocated_bytes <= 85 * 4096,
        "used {} above target",
        s.allocated_bytes
    );
    assert_eq!(s.allocated_bytes, 85 * 4096, "evicts no more than needed");
    assert_eq!((s.evicted_keys, s.evicted_bytes), (10, 10 * 4096));
    assert_eq!((s.eviction_attempts, s.eviction_successes), (1, 1));
    // The least recently used went first: k5..k14; the touched k0..k4 survived.
    for i in 0..5 {
        assert_eq!(exist1(&mut st, &format!("k{i}")), 1);
    }
    for i in 5..15 {
        assert_eq!(exist1(&mut st, &format!("k{i}")), 0, "k{i}");
    }
    assert_eq!(exist1(&mut st, "k15"), 1);
    st.tick();
    assert_eq!(
        st.stats().eviction_attempts,
        1,
        "nothing to do below the watermark"
    );
}

#[test]
fn a_read_ranks_by_its_lease_deadline() {
    // Mooncake's order: a read object counts as used until its lease ends, so data written
    // after the read but before the deadline goes first.
    let (mut st, clock) = state_with(eviction_settings(0.5, 0.2));
    let (c, _) = node(&mut st, "a", 1, 10 * 4096);
    assert_eq!(put(&mut st, c, "read", 4096), 0);
    assert_eq!(exist1(&mut st, "read"), 1); // deadline 1000 + 10 000
    clock.advance(5_000);
    assert_eq!(put(&mut st, c, "written-before-deadline", 4096), 0);
    clock.advance(10_000); // 16 000: the lease has ended
    assert_eq!(put(&mut st, c, "written-after-deadline", 4096), 0);
    for i in 0..3 {
        assert_eq!(put(&mut st, c, &format!("new{i}"), 4096), 0);
    }
    // 6 of 10 blocks used > 50 %: evict down to 30 %, i.e. the three coldest.
    st.tick();
    assert_eq!(st.stats().evicted_keys, 3);
    assert_eq!(exist1(&mut st, "written-before-deadline"), 0);
    assert_eq!(exist1(&mut st, "read"), 0);
    assert_eq!(exist1(&mut st, "written-after-deadline"), 0);
    for i in 0..3 {
        assert_eq!(exist1(&mut st, &format!("new{i}")), 1);
    }
}

#[test]
fn leased_reads_stop_a_walk_without_skipping_them_one_by_one() {
    let (mut st, clock) = state_with(eviction_settings(0.5, 0.1));
    let (c, _) = node(&mut st, "a", 1, 1000 * 4096);
    for i in 0..600 {
        assert_eq!(put(&mut st, c, &format!("k{i}"), 4096), 0);
    }
    // Every object leased: nothing is evictable, and the walk ends at the first lease.
    let all: Vec<String> = (0..600).map(|i| format!("k{i}")).collect();
    assert!(st.exist(&all).iter().all(|&e| e == 1));
    st.tick();
    assert_eq!(st.stats().evicted_keys, 0);
    clock.advance(5_000);
    assert!(st.heartbeat(c));
    clock.advance(5_000);
    st.tick();
    // Leases over: evicted down to (0.5 - 0.1) x capacity. All were read in one batch, which
    // ranks its first keys warmest (prefix order), so the last 200 went.
    assert_eq!(st.stats().allocated_bytes, 400 * 4096);
    assert_eq!(exist1(&mut st, "k399"), 1);
    assert_eq!(exist1(&mut st, "k400"), 0);
    assert_eq!(exist1(&mut st, "k599"), 0);
}

#[test]
fn watermark_one_disables_proactive_eviction() {
    let (mut st, _clock) = state_with(eviction_settings(1.0, 0.05));
    let (c, _) = node(&mut st, "a", 1, 10 * 4096);
    for i in 0..10 {
        assert_eq!(put(&mut st, c, &format!("k{i}"), 4096), 0);
    }
    st.tick();
    assert_eq!(st.stats().evicted_keys, 0);
}

#[test]
fn leased_inflight_and_hard_pinned_are_never_evicted() {
    let (mut st, clock) = state_with(eviction_settings(0.5, 0.1));
    let (c, _) = node(&mut st, "a", 1, 10 * 4096);
    let hard = ReplicateConfig {
        hard_pin: true,
        ..cfg()
    };
    for i in 0..3 {
        assert_eq!(put_with(&mut st, c, &format!("h{i}"), 4096, &hard), 0);
    }
    for i in 0..3 {
        assert_eq!(put(&mut st, c, &format!("l{i}"), 4096), 0);
        assert_eq!(exist1(&mut st, &format!("l{i}")), 1);
    }
    for i in 0..3 {
        allocated(start(&mut st, c, &format!("f{i}"), 4096, &cfg()));
    }
    clock.advance(10);
    st.heartbeat(c);
    st.tick();
    let s = st.stats();
    assert_eq!(s.evicted_keys, 0);
    assert_eq!(s.allocated_bytes, 9 * 4096);
    // A put needing space finds nothing evictable: -200, counted.
    assert_eq!(put(&mut st, c, "x", 2 * 4096), -200);
    assert_eq!(st.stats().alloc_failures, 1);
    // Once the leases run out, the leased objects go (and only they).
    clock.advance(10_000);
    st.heartbeat(c);
    st.tick();
    for i in 0..3 {
        assert_eq!(exist1(&mut st, &format!("h{i}")), 1);
        assert_eq!(exist1(&mut st, &format!("l{i}")), 0);
    }
    assert_eq!(
        st.query_key("f0").unwrap().replicas[0].status,
        ReplicaStatus::Processing
    );
}

#[test]
fn full_pool_of_leased_data_gives_200() {
    let (mut st, clock) = state_with(eviction_settings(1.0, 0.05));
    let (c, _) = node(&mut st, "a", 1, 8 * MIB);
    for i in 0..8 {
        assert_eq!(put(&mut st, c, &format!("k{i}"), MIB), 0);
        assert_eq!(exist1(&mut st, &format!("k{i}")), 1);
    }
    assert_eq!(put(&mut st, c, "x", MIB), -200);
    assert_eq!(st.stats().alloc_failures, 1);
    // After an allocation failure the next tick owes eviction_ratio x capacity (once leases end).
    clock.advance(10_001);
    st.heartbeat(c);
    assert_eq!(
        put(&mut st, c, "y", 2 * MIB),
        0,
        "reactive eviction once evictable"
    );
}

#[test]
fn allocation_failure_makes_next_tick_free_ratio_of_capacity() {
    let (mut st, clock) = state_with(eviction_settings(1.0, 0.25));
    let (c, _) = node(&mut st, "a", 1, 8 * MIB);
    for i in 0..8 {
        assert_eq!(put(&mut st, c, &format!("k{i}"), MIB), 0);
    }
    for i in 0..8 {
        assert_eq!(exist1(&mut st, &format!("k{i}")), 1);
    }
    assert_eq!(put(&mut st, c, "x", MIB), -200);
    clock.advance(10_001);
    st.heartbeat(c);
    st.tick();
    let s = st.stats();
    assert_eq!(s.allocated_bytes, 6 * MIB, "freed 25% of capacity");
    assert_eq!(s.evicted_keys, 2);
}

#[test]
fn mixed_sizes_reactive_eviction_frees_contiguous_room() {
    // W4: byte-based, contiguous. Proactive eviction off so the pool really fills up.
    let (mut st, clock) = state_with(eviction_settings(1.0, 0.05));
    let (c, _) = node(&mut st, "a", 1, 256 * MIB);
    let mut i = 0;
    loop {
        let size = if i % 64 == 63 { 64 * MIB } else { 4 * KIB };
        let r = put(&mut st, c, &format!("k{i}"), size);
        if st.stats().evicted_keys > 0 || r != 0 {
            break;
        }
        i += 1;
        clock.advance(1);
        assert!(i < 200_000);
    }
    // The fill ended with a 64 MiB put that found no hole and evicted to make one.
    let s = st.stats();
    assert!(s.evicted_keys > 0);
    assert_eq!(s.alloc_failures, 0);
    // Another 64 MiB put succeeds too: reactive eviction frees a contiguous range.
    assert_eq!(put(&mut st, c, "big", 64 * MIB), 0);
    assert_eq!(exist1(&mut st, "big"), 1);
    let v = st.query_key("big").unwrap();
    assert_eq!(
        v.replicas[0].memory().unwrap().addr % 4096,
        0,
        "64 MiB range page aligned"
    );
    assert!(st.stats().allocated_bytes <= 256 * MIB);
}

#[test]
fn soft_pinned_evicted_only_as_last_resort() {
    let (mut st, _clock) = state_with(eviction_settings(1.0, 0.05));
    let (c, _) = node(&mut st, "a", 1, 4 * MIB);
    let soft = ReplicateConfig {
        soft_pin: SoftPin::Enable { ttl_ms: None },
        ..cfg()
    };
    assert_eq!(put_with(&mut st, c, "s0", MIB, &soft), 0);
    assert_eq!(put_with(&mut st, c, "s1", MIB, &soft), 0);
    assert_eq!(put(&mut st, c, "u0", MIB), 0);
    assert_eq!(put(&mut st, c, "u1", MIB), 0);
    assert_eq!(st.stats().soft_pin_key_count, 2);
    // The soft-pinned objects are the coldest, but unpinned ones go first.
    assert_eq!(put(&mut st, c, "n0", MIB), 0);
    assert_eq!(put(&mut st, c, "n1", MIB), 0);
    assert_eq!(st.exist(&keys(&["s0", "s1", "u0", "u1"])), vec![1, 1, 0, 0]);
    // Last resort: with only a leased object and a soft-pinned one, the pin gives way.
    let (mut st2, clock2) = state_with(eviction_settings(1.0, 0.05));
    let (c2, _) = node(&mut st2, "a", 1, 2 * MIB);
    assert_eq!(put_with(&mut st2, c2, "s", MIB, &soft), 0);
    assert_eq!(put(&mut st2, c2, "u", MIB), 0);
    assert_eq!(exist1(&mut st2, "u"), 1);
    clock2.advance(5);
    st2.heartbeat(c2);
    assert_eq!(
        put(&mut st2, c2, "n", MIB),
        0,
        "soft-pinned s evicted: nothing else evictable"
    );
    assert_eq!(st2.exist(&keys(&["s", "u", "n"])), vec![0, 1, 1]);
    assert_eq!(st2.stats().soft_pin_key_count, 0);
}

#[test]
fn soft_pinned_kept_when_not_allowed_and_pin_expiry() {
    let s = MasterSettings {
        allow_evict_soft_pinned_objects: false,
        ..eviction_settings(1.0, 0.05)
    };
    let (mut st, clock) = state_with(s);
    let (c, _) = node(&mut st, "a", 1, MIB);
    let soft = ReplicateConfig {
        soft_pin: SoftPin::Enable {
            ttl_ms: Some(60_000),
        },
        ..cfg()
    };
    assert_eq!(put_with(&mut st, c, "s", MIB, &soft), 0);
    assert_eq!(put(&mut st, c, "n", MIB), -200);
    clock.advance(60_000);
    st.heartbeat(c);
    assert_eq!(put(&mut st, c, "n", MIB), 0, "pin expired: evictable");
    assert_eq!(exist1(&mut st, "s"), 0);
    // ttl 0 means not pinned.
    let zero = ReplicateConfig {
        soft_pin: SoftPin::Enable { ttl_ms: Some(0) },
        ..cfg()
    };
    clock.advance(10_001);
    assert_eq!(put_with(&mut st, c, "z", MIB, &zero), 0);
    assert_eq!(st.stats().soft_pin_key_count, 0);
}

/// The LRU list is exact for unpinned, unleased objects: a trace replay (get, put on miss)
/// must match a reference LRU's hit ratio.
#[test]
fn lru_matches_exact_lru_hit_ratio() {
    let s = MasterSettings {
        default_kv_lease_ttl_ms: 0,
        ..eviction_settings(1.0, 0.05)
    };
    let (mut st, clock) = state_with(s);
    let cap = 100u64;
    let (c, _) = node(&mut st, "a", 1, cap * 4096);
    let mut rng = placement::Rng::new(42);
    let mut reference: std::collections::VecDeque<u64> = Default::default();
    let (mut hits, mut ref_hits, n) = (0u64, 0u64, 20_000u64);
    for _ in 0..n {
        // Skewed keys: a hot set of 60 and a long tail.
        let k = if rng.below(10) < 7 {
            rng.below(60) as u64
        } else {
            rng.below(1000) as u64
        };
        let key = format!("k{k}");
        clock.advance(1);
        if st.get_replicas(c, std::slice::from_ref(&key))[0].is_ok() {
            hits += 1;
        } else {
            assert_eq!(put(&mut st, c, &key, 4096), 0);
        }
        if let Some(p) = reference.iter().position(|&x| x == k) {
            ref_hits += 1;
            reference.remove(p);
        } else if reference.len() as u64 == cap {
            reference.pop_front();
        }
        reference.push_back(k);
    }
    let (h, r) = (hits as f64 / n as f64, ref_hits as f64 / n as f64);
    assert!((h - r).abs() <= 0.01, "hit ratio {h} vs exact LRU {r}");
}

// ----- clients, liveness, segments -----

#[test]
fn dead_client_segments_and_puts_go() {
    let (mut st, clock) = state();
    let (a, sa) = node(&mut st, "a", 1, MIB);
    let (b, _sb) = node(&mut st, "b", 1, MIB);
    let pure = st.register_client("pure", "c", "boot-c", None);
    let pref_a = ReplicateConfig {
        preferred_segments: vec!["a:1".into()],
        ..cfg()
    };
    assert_eq!(put_with(&mut st, a, "on-a", 100, &pref_a), 0);
    let prior = st.stats().allocated_bytes;
    // The pure client starts puts; one lands on a's segment via preference.
    let (_, reps) = allocated(start(&mut st, pure, "p1", 50_000, &pref_a));
    assert_eq!(reps[0].segment, sa);
    allocated(start(&mut st, pure, "p2", 70_000, &cfg()));
    assert!(st.stats().allocated_bytes > prior);
    // a and b keep heartbeating; the pure client goes silent.
    for _ in 0..11 {
        clock.advance(1000);
        st.heartbeat(a);
        st.heartbeat(b);
        st.tick();
    }
    let s = st.stats();
    assert_eq!(s.dead_clients, 1);
    assert_eq!(s.revoked_by_liveness, 2);
    assert_eq!(
        s.allocated_bytes, prior,
        "allocated bytes back to the prior value (W1)"
    );
    assert!(!st.heartbeat(pure));
    assert_eq!(st.query_key("p1"), Err(ErrorCode::ObjectNotFound));
    assert_eq!(put(&mut st, b, "p1", 10), 0, "the key is free again");
    // Now a dies: its segment and the objects only there go.
    for _ in 0..11 {
        clock.advance(1000);
        st.heartbeat(b);
        st.tick();
    }
    assert!(!st.heartbeat(a));
    assert_eq!(exist1(&mut st, "on-a"), 0);
    assert_eq!(st.describe_segments(&[sa]), vec![]);
    assert_eq!(st.stats().segments, 1);
    assert_eq!(st.stats().active_clients, 1);
}

#[test]
fn close_client_unmounts_and_revokes() {
    let (mut st, _clock) = state();
    let (a, sa) = node(&mut st, "a", 1, MIB);
    let (b, sb) = node(&mut st, "b", 1, MIB);
    let two = ReplicateConfig {
        replica_num: 2,
        ..cfg()
    };
    assert_eq!(put_with(&mut st, a, "both", 100, &two), 0);
    assert_eq!(
        put_with(
            &mut st,
            a,
            "only-a",
            100,
            &ReplicateConfig {
                preferred_segments: vec!["a:1".into()],
                ..cfg()
            }
        ),
        0
    );
    allocated(start(
        &mut st,
        a,
        "inflight-on-b",
        100,
        &ReplicateConfig {
            preferred_segments: vec!["b:1".into()],
            ..cfg()
        },
    ));
    st.close_client(a);
    assert_eq!(exist1(&mut st, "only-a"), 0);
    assert_eq!(
        st.query_key("inflight-on-b"),
        Err(ErrorCode::ObjectNotFound)
    );
    let v = st.get_replicas(b, &keys(&["both"])).remove(0).unwrap();
    assert_eq!(
        v.replicas.len(),
        1,
        "replicated data survives the writer's close"
    );
    assert_eq!(v.replicas[0].memory().unwrap().segment, sb);
    assert_eq!(st.stats().revoked_by_liveness, 1);
    assert_eq!(st.stats().allocated_bytes, 104);
    assert!(!st.heartbeat(a));
    assert_eq!(st.describe_segments(&[sa, sb]).len(), 1);
    st.close_client(a); // idempotent
    st.close_client(ClientId(12345));
}

#[test]
fn release_timeout_revokes_old_puts() {
    let s = MasterSettings {
        put_start_release_timeout_ms: 5_000,
        ..MasterSettings::default()
    };
    let (mut st, clock) = state_with(s);
    let (c, _) = node(&mut st, "a", 1, MIB);
    allocated(start(&mut st, c, "old", 100, &cfg()));
    clock.advance(3_000);
    st.heartbeat(c);
    allocated(start(&mut st, c, "young", 100, &cfg()));
    clock.advance(2_000);
    st.heartbeat(c);
    st.tick();
    assert_eq!(st.query_key("old"), Err(ErrorCode::ObjectNotFound));
    assert!(st.query_key("young").is_ok());
    assert_eq!(st.stats().allocated_bytes, 104);
}

#[test]
fn segment_mount_rules() {
    let (mut st, _clock) = state();
    let a = st.register_client("a:1", "a", "boot-a", None);
    let b = st.register_client("b:1", "b", "boot-b", None);
    assert_eq!(
        st.mount_segment(ClientId(999), spec("x:1", MIB, 1)),
        Err(ErrorCode::ClientNotFound)
    );
    assert_eq!(
        st.mount_segment(a, spec("a:1", 0, 1)),
        Err(ErrorCode::InvalidParams)
    );
    let s1 = st.mount_segment(a, spec("a:1", MIB, 1)).unwrap();
    assert_eq!(
        st.mount_segment(a, spec("a:1", MIB, 1)),
        Ok(s1),
        "idempotent retry"
    );
    assert_eq!(st.unmount_segment(b, s1), Err(ErrorCode::IllegalClient));
    assert_eq!(
        st.unmount_segment(a, SegmentId(1)),
        Err(ErrorCode::SegmentNotFound)
    );
    assert_eq!(put(&mut st, a, "k", 100), 0);
    // A restarted process under the same name (new incarnation) replaces the old segment.
    let a2 = st.register_client("a:1", "a", "boot-a", None);
    let s2 = st.mount_segment(a2, spec("a:1", 2 * MIB, 2)).unwrap();
    assert_ne!(s1, s2);
    assert_eq!(
        exist1(&mut st, "k"),
        0,
        "objects of the replaced segment are gone"
    );
    assert_eq!(st.describe_segments(&[s1, s2]).len(), 1);
    assert_eq!(st.list_segments().len(), 1);
    assert_eq!(st.segment_usage(), vec![("a:1".to_string(), 0, 2 * MIB)]);
    assert_eq!(st.stats().capacity_bytes, 2 * MIB);
    assert_eq!(st.unmount_segment(a2, s2), Ok(()));
    assert_eq!(st.unmount_segment(a2, s2), Err(ErrorCode::SegmentNotFound));
    assert_eq!(st.stats().capacity_bytes, 0);
    assert_eq!(put(&mut st, a2, "k", 100), -200);
}

#[test]
fn register_resume_keeps_id() {
    let (mut st, _clock) = state();
    let a = st.register_client("a:1", "a", "boot-a", None);
    assert_eq!(st.register_client("a:1", "a", "boot-a", Some(a)), a);
    let other = st.register_client("x:1", "x", "boot-x", Some(a));
    assert_ne!(other, a, "a different client cannot take an id over");
    let fresh = st.register_client("a:1", "a", "boot-a", Some(ClientId(424242)));
    assert_ne!(fresh, ClientId(424242));
    assert!(st.heartbeat(fresh));
    assert!(!st.heartbeat(ClientId(424242)));
}

// ----- placement -----

#[test]
fn replica_num_larger_than_segments_is_partial() {
    let (mut st, _clock) = state();
    let (a, _) = node(&mut st, "a", 1, MIB);
    let (_b, _) = node(&mut st, "b", 1, MIB);
    let three = ReplicateConfig {
        replica_num: 3,
        ..cfg()
    };
    let (id, reps) = allocated(start(&mut st, a, "k", 100, &three));
    assert_eq!(reps.len(), 2);
    assert_ne!(reps[0].segment, reps[1].segment, "distinct segments");
    assert_eq!(st.stats().partial_allocations, 1);
    assert_eq!(end(&mut st, a, "k", id), 0);
    assert_eq!(st.query_key("k").unwrap().replicas.len(), 2);
}

#[test]
fn preferred_and_same_node_placement() {
    for strategy in [
        AllocationStrategy::Random,
        AllocationStrategy::FreeRatioFirst,
    ] {
        let s = MasterSettings {
            allocation_strategy: strategy,
            ..MasterSettings::default()
        };
        let (mut st, _clock) = state_with(s);
        let mut segs = Vec::new();
        for h in ["a", "b", "c", "d"] {
            segs.push(node(&mut st, h, 1, MIB));
        }
        let pref = ReplicateConfig {
            preferred_segments: vec!["zzz:1".into(), "c:1".into()],
            ..cfg()
        };
        let local = ReplicateConfig {
            prefer_same_node: true,
            ..cfg()
        };
        for i in 0..20 {
            let (_, r) = allocated(start(&mut st, segs[0].0, &format!("p{i}"), 64, &pref));
            assert_eq!(r[0].segment, segs[2].1, "preferred segment honored");
            let (_, r) = allocated(start(&mut st, segs[3].0, &format!("l{i}"), 64, &local));
            assert_eq!(r[0].segment, segs[3].1, "writer's own host");
        }
        // A full preferred segment falls back to the strategy.
        let (_, r) = allocated(start(&mut st, segs[0].0, "big", MIB - 8192, &pref));
        assert_eq!(r[0].segment, segs[2].1);
        let (_, r) = allocated(start(&mut st, segs[0].0, "next", 8192, &pref));
        assert_ne!(r[0].segment, segs[2].1);
        // Random spreads over every segment.
        let mut seen = std::collections::HashSet::new();
        for i in 0..64 {
            let (_, r) = allocated(start(&mut st, segs[0].0, &format!("r{i}"), 64, &cfg()));
            seen.insert(r[0].segment);
        }
        assert!(seen.len() >= 2, "{strategy:?} used {seen:?}");
    }
}

#[test]
fn local_first_strategy_uses_writer_host() {
    let s = MasterSettings {
        allocation_strategy: AllocationStrategy::LocalFirst,
        ..MasterSettings::default()
    };
    let (mut st, _clock) = state_with(s);
    let (_a, _) = node(&mut st, "a", 1, MIB);
    let (b, sb) = node(&mut st, "b", 1, MIB);
    let (_c, _) = node(&mut st, "c", 1, MIB);
    for i in 0..10 {
        let (_, r) = allocated(start(&mut st, b, &format!("k{i}"), 64, &cfg()));
        assert_eq!(r[0].segment, sb);
    }
}

#[test]
fn get_orders_own_then_same_host_then_others() {
    let (mut st, _clock) = state();
    let (a, sa) = node(&mut st, "a", 1, MIB);
    let (_b, sb) = node(&mut st, "b", 1, MIB);
    // A second process on host b, with its own segment.
    let b2 = st.register_client("b:2", "b", "boot-b", None);
    let sb2 = st.mount_segment(b2, spec("b:2", MIB, 1)).unwrap();
    let all = ReplicateConfig {
        replica_num: 3,
        ..cfg()
    };
    assert_eq!(put_with(&mut st, a, "k", 100, &all), 0);
    let order = |st: &mut MasterState, c: ClientId| -> Vec<SegmentId> {
        let v = st.get_replicas(c, &keys(&["k"])).remove(0).unwrap();
        v.replicas
            .iter()
            .map(|r| r.memory().unwrap().segment)
            .collect()
    };
    assert_eq!(order(&mut st, b2)[..2], [sb2, sb]);
    assert_eq!(order(&mut st, a)[0], sa);
    let pure = st.register_client("reader", "b", "boot-b", None);
    assert_eq!(order(&mut st, pure)[2], sa, "other host last");
}

// ----- scale -----

/// 1M put_start + put_end of 64-byte objects in one segment; prints throughput and a memory
/// estimate. Asserts correctness only (timing depends on the build profile and machine).
#[test]
fn scale_one_million_objects() {
    let n: u64 = 1_000_000;
    let (mut st, _clock) = state_with(eviction_settings(1.0, 0.05));
    let (c, _) = node(&mut st, "a", 1, n * 64 + MIB);
    let cfg = cfg();
    let keys: Vec<String> = (0..n).map(|i| format!("key-{i:08}")).collect();
    let t = std::time::Instant::now();
    for k in &keys {
        let item = [(k.clone(), 64u64)];
        let PutStartResult::Allocated { object_id, .. } = st.put_start(c, &item, &cfg).remove(0)
        else {
            panic!("put_start failed for {k}");
        };
        let end = [PutEndItem {
            key: item[0].0.clone(),
            object_id,
            failed: vec![],
        }];
        assert_eq!(st.put_end(c, &end)[0], 0);
    }
    let secs = t.elapsed().as_secs_f64();
    let t2 = std::time::Instant::now();
    let mut found = 0;
    for chunk in keys.chunks(1000) {
        found += st.exist(chunk).iter().filter(|&&x| x == 1).count();
    }
    let secs2 = t2.elapsed().as_secs_f64();
    assert_eq!(found as u64, n);
    let s = st.stats();
    assert_eq!(s.key_count, n);
    assert_eq!(s.allocated_bytes, n * 64);
    let obj = std::mem::size_of::<objects::Object>();
    // Hash index: 4-byte slot index + 1 control byte per bucket at <= 87.5% load; keys are
    // heap blocks of their length (rounded to 16 by the allocator, plus its header).
    let index = 5.0 / 0.875;
    println!(
        "scale: {n} put_start+put_end in {secs:.2}s = {:.0} ops/s; {n} exist in {secs2:.2}s = {:.0} ops/s; \
         Object = {obj} B, ~{:.0} B/object + key bytes",
        2.0 * n as f64 / secs,
        n as f64 / secs2,
        obj as f64 + index + 16.0,
    );
    assert!(obj <= 128, "Object grew to {obj} bytes");
    // Closing the only segment's owner drops every object synchronously.
    let t3 = std::time::Instant::now();
    st.close_client(c);
    println!(
        "scale: close_client with {n} objects in {:.1} ms",
        t3.elapsed().as_secs_f64() * 1e3
    );
    let s = st.stats();
    assert_eq!((s.key_count, s.allocated_bytes, s.segments), (0, 0, 0));
    assert_eq!(st.exist(&keys[..10]), vec![0; 10]);
}

/// Objects of a GiB and more go where a segment has room, aligned for the SSD tier, and an
/// object no segment could ever hold is refused without evicting anything.
#[test]
fn gigabyte_objects_where_a_segment_has_room() {
    let (mut st, _clock) = state();
    let (c, _) = node(&mut st, "a", 1, 1 << 30);
    let (_, big) = node(&mut st, "b", 2, 6 << 30);
    let (id, reps) = allocated(start(&mut st, c, "huge", 5 << 30, &cfg()));
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0].segment, big, "only the 6 GiB segment can hold it");
    assert_eq!(reps[0].addr % 4096, 0, "large ranges are page aligned");
    assert_eq!(end(&mut st, c, "huge", id), 0);
    assert_eq!(put(&mut st, c, "one-gib", 1 << 30), 0);
    assert_eq!(put(&mut st, c, "small", 4096), 0);
    let before = st.stats();
    assert_eq!(
        put(&mut st, c, "too-big", 7 << 30),
        ErrorCode::NoAvailableHandle.as_i32()
    );
    assert_eq!(
        st.stats().evicted_keys,
        before.evicted_keys,
        "nothing evicted in vain"
    );
    assert_eq!(exist1(&mut st, "huge"), 1);
}

// ----- removes acknowledged by the owners (contract §8) -----

#[test]
fn removed_ranges_stay_reserved_until_released() {
    let (mut st, _clock) = state();
    let (a, seg_a) = node(&mut st, "a", 1, 64 * KIB);
    let (_b, seg_b) = node(&mut st, "b", 1, 64 * KIB);
    let two = ReplicateConfig {
        replica_num: 2,
        ..cfg()
    };
    let (id, reps) = allocated(start(&mut st, a, "k", 64 * KIB, &two));
    assert_eq!(end(&mut st, a, "k", id), 0);
    let (codes, removal) = st.remove(&keys(&["k", "absent"]), true);
    assert_eq!(codes, vec![0, -704]);
    // Gone from the index at once: no lookup finds it, a new put of the key may start.
    assert_eq!(exist1(&mut st, "k"), 0);
    // The ranges are not: both segments are full until the owners dropped the entries.
    assert_eq!(st.stats().allocated_bytes, 128 * KIB);
    assert_eq!(put(&mut st, a, "other", 64 * KIB), -200);
    let mut orders = st.drop_orders(&removal);
    orders.sort_by_key(|o| o.segment);
    let want: Vec<DropOrder> = [(seg_a, "a:1"), (seg_b, "b:1")]
        .into_iter()
        .map(|(segment, endpoint)| DropOrder {
            segment,
            endpoint: endpoint.into(),
            drops: vec![Dropped {
                addr: reps.iter().find(|r| r.segment == segment).unwrap().addr,
                object_id: id,
            }],
        })
        .collect();
    assert_eq!(
        orders, want,
        "one order per owner, with the address readers were given"
    );
    st.release(removal);
    assert_eq!(st.stats().allocated_bytes, 0);
    assert_eq!(put(&mut st, a, "other", 64 * KIB), 0);
}

#[test]
fn release_after_the_owner_left_touches_nothing() {
    let (mut st, _clock) = state();
    let (a, seg_a) = node(&mut st, "a", 1, 64 * KIB);
    assert_eq!(put(&mut st, a, "k", 4 * KIB), 0);
    let (codes, removal) = st.remove(&keys(&["k"]), false);
    assert_eq!(codes, vec![0]);
    assert!(st.segment_mounted(seg_a));
    st.close_client(a);
    assert!(
        !st.segment_mounted(seg_a),
        "a dead owner needs no acknowledgement"
    );
    assert!(st.drop_orders(&removal).is_empty());
    let (b, _) = node(&mut st, "a", 2, 64 * KIB);
    assert_eq!(put(&mut st, b, "fill", 64 * KIB), 0);
    // Freeing into the slot of a segment that is gone must not touch the new one.
    st.release(removal);
    assert_eq!(st.stats().allocated_bytes, 64 * KIB);
}

#[test]
fn remove_all_and_regex_hold_every_range() {
    let (mut st, _clock) = state();
    let (a, _) = node(&mut st, "a", 1, MIB);
    for k in ["x/1", "x/2", "y/1"] {
        assert_eq!(put(&mut st, a, k, 4 * KIB), 0);
    }
    let re = regex::Regex::new("^x/").unwrap();
    let (n, removal) = st.remove_by_regex(&re, true);
    assert_eq!(n, 2);
    assert_eq!(st.drop_orders(&removal)[0].drops.len(), 2);
    let (m, rest) = st.remove_all(true);
    assert_eq!(m, 1);
    assert_eq!(st.stats().allocated_bytes, 12 * KIB);
    st.release(removal);
    st.release(rest);
    assert_eq!(st.stats().allocated_bytes, 0);
}

// ----- the index rebuilt from a re-mounting owner's directory (W5) -----

fn sealed(key: &str, epoch: u64, seq: u64, addr: u64, len: u64) -> Seal {
    Seal {
        key: key.into(),
        object_id: ObjectId { epoch, seq },
        addr,
        len,
        flags: 0,
    }
}

#[test]
fn mount_restoring_brings_back_the_directory() {
    let (mut st, _clock) = state();
    let a = st.register_client("a:1", "a", "boot-a", None);
    let b = st.register_client("b:1", "b", "boot-b", None);
    let old = 3; // an earlier master's epoch
    let seals_a = vec![
        sealed("k1", old, 1, BASE, 4096),
        sealed("k2", old, 2, BASE + 8192, 100),
        // Outside the segment, a claim, an empty key: skipped.
        sealed("far", old, 3, BASE + 64 * KIB, 10),
        Seal {
            flags: Seal::PENDING,
            ..sealed("claim", old, 4, BASE + 16384, 10)
        },
        sealed("", old, 5, BASE + 20000, 8),
        // Overlaps k1's range: skipped.
        sealed("overlap", old, 6, BASE + 2048, 4096),
        // An older version of k2 elsewhere: the newest id wins.
        sealed("k2", old, 1, BASE + 32768, 100),
    ];
    let (seg_a, n) = st
        .mount_restoring(a, spec("a:1", 64 * KIB, 1), &seals_a)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(st.all_keys().len(), 2);
    let v = st.query_key("k1").unwrap();
    assert_eq!(v.object_id, ObjectId { epoch: old, seq: 1 });
    assert_eq!(st.stats().allocated_bytes, 4096 + 104);
    // A second owner holding another replica of k1 adds it; its older k2 changes nothing.
    let seals_b = vec![
        sealed("k1", old, 1, BASE, 4096),
        sealed("k2", old, 1, BASE, 100),
    ];
    let mut spec_b = spec("b:1", 64 * KIB, 1);
    spec_b.base_addr = BASE;
    let (_seg_b, n) = st.mount_restoring(b, spec_b, &seals_b).unwrap();
    assert_eq!(n, 1);
    assert_eq!(st.query_key("k1").unwrap().replicas.len(), 2);
    assert_eq!(st.query_key("k2").unwrap().replicas.len(), 1);
    // Restored objects are readable, removable (their ranges come back) and evictable.
    assert_eq!(exist1(&mut st, "k2"), 1);
    assert_eq!(remove1(&mut st, "k2", true), 0);
    assert_eq!(st.stats().allocated_bytes, 2 * 4096);
    // A new put is never placed over a restored range.
    let (_, reps) = allocated(start(&mut st, a, "fresh", 4096, &cfg()));
    assert!(
        reps.iter()
            .all(|r| r.segment != seg_a || r.addr >= BASE + 4096)
    );
}
