//! Request-level metrics of the master: counters and histograms the RPC layer updates for every
//! request (per-operation requests and failures with Mooncake's names, latency per RPC kind,
//! value sizes, hit bytes), the Prometheus text rendering of those plus the state's own
//! counters ([`MasterStats`]), and a short rolling history the dashboard charts.
//!
//! Everything here is lock-free atomics except the history ring, which the sampler appends to
//! once a second and the dashboard copies; neither touches the state mutex.
//!
//! The text format is written by hand rather than through `prometheus-client`: the contract
//! keeps Mooncake's names, and some of them (`valid_get_nums_`, `master_evicted_key_count`) are
//! counters without the `_total` suffix that `prometheus-client` appends to every counter it
//! encodes, so that crate could not produce them. The set of metrics is fixed at compile time,
//! so a registry buys nothing; the unit tests parse the output back.
//!
//! Single calls and batches: tidepool's RPC has only batch forms (a single-key call is a batch
//! of one). A request with exactly one key counts as Mooncake's single operation
//! (`master_put_start_requests_total`), any other as its batch operation
//! (`master_batch_put_start_requests_total`, with items and failed items).

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tidepool_common::metrics::{Counter, Histogram, LATENCY_BOUNDS_NS};
use tidepool_proto::master::{MasterResponse, MasterStats, PutStartResult};

/// How many one-second samples the dashboard history keeps (five minutes).
pub const HISTORY_LEN: usize = 300;

/// Value-size buckets of `master_value_size_bytes`: 4 KiB, 8 KiB, ... 64 MiB (contract §4.6).
const VALUE_SIZE_BOUNDS: &[u64] = &[
    4 << 10,
    8 << 10,
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
    8 << 20,
    16 << 20,
    32 << 20,
    64 << 20,
];

/// The kinds of RPC the master serves, for per-kind latency and key counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    missing_docs,
    reason = "one variant per MasterRequest kind, same names"
)]
pub enum RpcOp {
    Hello,
    Heartbeat,
    MountSegment,
    UnmountSegment,
    PutStart,
    PutEnd,
    PutRevoke,
    GetReplicas,
    Exist,
    Remove,
    RemoveAll,
    RemoveByRegex,
    DescribeSegments,
    ListSegments,
    QueryKey,
    Stats,
    Goodbye,
}

impl RpcOp {
    /// Every kind, in label order.
    pub const ALL: [RpcOp; 17] = [
        RpcOp::Hello,
        RpcOp::Heartbeat,
        RpcOp::MountSegment,
        RpcOp::UnmountSegment,
        RpcOp::PutStart,
        RpcOp::PutEnd,
        RpcOp::PutRevoke,
        RpcOp::GetReplicas,
        RpcOp::Exist,
        RpcOp::Remove,
        RpcOp::RemoveAll,
        RpcOp::RemoveByRegex,
        RpcOp::DescribeSegments,
        RpcOp::ListSegments,
        RpcOp::QueryKey,
        RpcOp::Stats,
        RpcOp::Goodbye,
    ];

    /// The `op` label value.
    pub fn name(self) -> &'static str {
        match self {
            RpcOp::Hello => "hello",
            RpcOp::Heartbeat => "heartbeat",
            RpcOp::MountSegment => "mount_segment",
            RpcOp::UnmountSegment => "unmount_segment",
            RpcOp::PutStart => "put_start",
            RpcOp::PutEnd => "put_end",
            RpcOp::PutRevoke => "put_revoke",
            RpcOp::GetReplicas => "get_replicas",
            RpcOp::Exist => "exist",
            RpcOp::Remove => "remove",
            RpcOp::RemoveAll => "remove_all",
            RpcOp::RemoveByRegex => "remove_by_regex",
            RpcOp::DescribeSegments => "describe_segments",
            RpcOp::ListSegments => "list_segments",
            RpcOp::QueryKey => "query_key",
            RpcOp::Stats => "stats",
            RpcOp::Goodbye => "goodbye",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }

    /// The Mooncake operation this kind counts as, if any.
    fn mooncake(self) -> Option<McOp> {
        Some(match self {
            RpcOp::PutStart => McOp::PutStart,
            RpcOp::PutEnd => McOp::PutEnd,
            RpcOp::PutRevoke => McOp::PutRevoke,
            RpcOp::GetReplicas => McOp::GetReplicaList,
            RpcOp::Exist => McOp::ExistKey,
            RpcOp::Remove => McOp::Remove,
            RpcOp::RemoveByRegex => McOp::RemoveByRegex,
            RpcOp::RemoveAll => McOp::RemoveAll,
            RpcOp::MountSegment => McOp::MountSegment,
            RpcOp::UnmountSegment => McOp::UnmountSegment,
            RpcOp::Heartbeat => McOp::Ping,
            _ => return None,
        })
    }
}

/// Mooncake's per-request operation names (contract §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum McOp {
    PutStart,
    PutEnd,
    PutRevoke,
    GetReplicaList,
    ExistKey,
    Remove,
    RemoveByRegex,
    RemoveAll,
    MountSegment,
    UnmountSegment,
    RemountSegment,
    Ping,
}

impl McOp {
    const ALL: [McOp; 12] = [
        McOp::PutStart,
        McOp::PutEnd,
        McOp::PutRevoke,
        McOp::GetReplicaList,
        McOp::ExistKey,
        McOp::Remove,
        McOp::RemoveByRegex,
        McOp::RemoveAll,
        McOp::MountSegment,
        McOp::UnmountSegment,
        McOp::RemountSegment,
        McOp::Ping,
    ];
    /// The first five have batch forms too.
    const BATCHED: usize = 5;

    fn name(self) -> &'static str {
        match self {
            McOp::PutStart => "put_start",
            McOp::PutEnd => "put_end",
            McOp::PutRevoke => "put_revoke",
            McOp::GetReplicaList => "get_replica_list",
            McOp::ExistKey => "exist_key",
            McOp::Remove => "remove",
            McOp::RemoveByRegex => "remove_by_regex",
            McOp::RemoveAll => "remove_all",
            McOp::MountSegment => "mount_segment",
            McOp::UnmountSegment => "unmount_segment",
            McOp::RemountSegment => "remount_segment",
            McOp::Ping => "ping",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// Requests and failures of one single-form operation.
#[derive(Debug, Default)]
struct OpCounters {
    requests: Counter,
    failures: Counter,
}

/// Counters of one batch-form operation.
#[derive(Debug, Default)]
struct BatchCounters {
    requests: Counter,
    failures: Counter,
    partial_successes: Counter,
    items: Counter,
    failed_items: Counter,
}

/// What the RPC layer knows about a request before handing it to the state (the request is
/// moved into the state call, so the facts the metrics need are taken first).
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// Keys in the request (0 for requests without keys).
    pub keys: usize,
    /// Object sizes of a `PutStart`, in item order.
    pub put_sizes: Vec<u64>,
    /// A `MountSegment` whose name is already mounted (it replaces or re-confirms it).
    pub remount: bool,
}

/// One point of the dashboard history: cumulative counters and gauges at time `t_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Unix time in ms.
    pub t_ms: u64,
    /// Keys asked to `PutStart` since start.
    pub put_keys: u64,
    /// Keys looked up by `GetReplicas` since start.
    pub get_keys: u64,
    /// Other keyed operations (exist, remove, put end/revoke) since start.
    pub other_keys: u64,
    /// Bytes reserved by puts (all replicas) since start.
    pub put_bytes: u64,
    /// Bytes of objects found by lookups since start.
    pub get_bytes: u64,
    /// Lookups since start.
    pub gets: u64,
    /// Lookups that found a readable object since start.
    pub hits: u64,
    /// Keys checked by `Exist` since start.
    pub exist_keys: u64,
    /// `Exist` keys found since start.
    pub exist_hits: u64,
    /// Allocated bytes now.
    pub allocated_bytes: u64,
    /// Objects now.
    pub key_count: u64,
    /// Objects evicted since start.
    pub evicted_keys: u64,
}

/// Rates between two consecutive samples, as the dashboard charts them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rate {
    /// Unix time in ms of the later sample.
    pub t_ms: u64,
    /// Put keys per second.
    pub put_ops: f64,
    /// Get keys per second.
    pub get_ops: f64,
    /// Other keyed operations per second.
    pub other_ops: f64,
    /// Put bytes per second.
    pub put_bytes_per_s: f64,
    /// Get bytes per second.
    pub get_bytes_per_s: f64,
    /// Hits / lookups in the interval; `None` when there were no lookups.
    pub hit_ratio: Option<f64>,
    /// Found / checked `Exist` keys in the interval; `None` when there were none.
    pub exist_hit_ratio: Option<f64>,
    /// Allocated bytes at the later sample.
    pub allocated_bytes: u64,
    /// Objects at the later sample.
    pub key_count: u64,
    /// Objects evicted in the interval.
    pub evicted_keys: u64,
}

impl Rate {
    /// The rates between `a` and a later `b`.
    pub fn between(a: &Sample, b: &Sample) -> Rate {
        let dt = (b.t_ms.saturating_sub(a.t_ms) as f64 / 1000.0).max(1e-3);
        let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
        let gets = b.gets.saturating_sub(a.gets);
        let checks = b.exist_keys.saturating_sub(a.exist_keys);
        Rate {
            t_ms: b.t_ms,
            put_ops: per_s(a.put_keys, b.put_keys),
            get_ops: per_s(a.get_keys, b.get_keys),
            other_ops: per_s(a.other_keys, b.other_keys),
            put_bytes_per_s: per_s(a.put_bytes, b.put_bytes),
            get_bytes_per_s: per_s(a.get_bytes, b.get_bytes),
            hit_ratio: (gets > 0).then(|| b.hits.saturating_sub(a.hits) as f64 / gets as f64),
            exist_hit_ratio: (checks > 0)
                .then(|| b.exist_hits.saturating_sub(a.exist_hits) as f64 / checks as f64),
            allocated_bytes: b.allocated_bytes,
            key_count: b.key_count,
            evicted_keys: b.evicted_keys.saturating_sub(a.evicted_keys),
        }
    }
}

/// How one owner's part of a remove ended (`crate::drops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropOutcome {
    /// The owner dropped the entries.
    Acked,
    /// The owner was declared dead or unmounted before it answered.
    Excused,
    /// The owner refused, or never answered while mounted.
    Failed,
}

/// The master's request metrics. One per master, shared by the RPC and admin services.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    latency: Vec<Histogram>,
    keys: Vec<Counter>,
    single: Vec<OpCounters>,
    batch: Vec<BatchCounters>,
    value_size: Histogram,
    hit_bytes: Counter,
    put_bytes: Counter,
    /// `Exist` keys answered 1. A KV-cache engine finds its prefix hits with `exist`, so
    /// this ratio is the one its operators mean by "hit ratio"; Mooncake's counters see gets.
    exist_hits: Counter,
    connections_open: AtomicU64,
    connections_total: Counter,
    malformed_frames: Counter,
    version_rejections: Counter,
    /// Owners that acknowledged a remove's drops, that were excused (declared dead or
    /// unmounted first), and that refused or never answered (`drops`).
    drops_acked: Counter,
    drops_excused: Counter,
    drops_failed: Counter,
    history: Mutex<VecDeque<Sample>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All zero.
    pub fn new() -> Self {
        Metrics {
            started: Instant::now(),
            latency: RpcOp::ALL
                .iter()
                .map(|_| Histogram::new(LATENCY_BOUNDS_NS, 1e9))
                .collect(),
            keys: RpcOp::ALL.iter().map(|_| Counter::default()).collect(),
            single: McOp::ALL.iter().map(|_| OpCounters::default()).collect(),
            batch: (0..McOp::BATCHED)
                .map(|_| BatchCounters::default())
                .collect(),
            value_size: Histogram::new(VALUE_SIZE_BOUNDS, 1.0),
            hit_bytes: Counter::default(),
            put_bytes: Counter::default(),
            exist_hits: Counter::default(),
            connections_open: AtomicU64::new(0),
            connections_total: Counter::default(),
            malformed_frames: Counter::default(),
            version_rejections: Counter::default(),
            drops_acked: Counter::default(),
            drops_excused: Counter::default(),
            drops_failed: Counter::default(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_LEN)),
        }
    }

    /// Time since the master started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_total.inc();
        self.connections_open.fetch_add(1, Relaxed);
    }

    /// A connection ended.
    pub fn connection_closed(&self) {
        // Saturating: a close without a matching open would be a bug, never a wrap to 2^64.
        let _ = self
            .connections_open
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }

    /// A frame could not be decoded.
    pub fn malformed_frame(&self) {
        self.malformed_frames.inc();
    }

    /// One owner's part of a remove: acknowledged, excused, or failed.
    pub fn owner_drop(&self, outcome: DropOutcome) {
        match outcome {
            DropOutcome::Acked => self.drops_acked.inc(),
            DropOutcome::Excused => self.drops_excused.inc(),
            DropOutcome::Failed => self.drops_failed.inc(),
        }
    }

    /// A client with an incompatible protocol version was turned away.
    pub fn version_rejected(&self) {
        self.version_rejections.inc();
    }

    /// Requests of kind `op` served so far.
    pub fn requests(&self, op: RpcOp) -> u64 {
        self.latency[op.idx()].count()
    }

    /// Per RPC kind that was served at least once: `(kind, requests, p50, p99)`, latencies
    /// in seconds (bucket-interpolated, as Prometheus would estimate them).
    pub fn latency_summary(&self) -> Vec<(RpcOp, u64, f64, f64)> {
        RpcOp::ALL
            .iter()
            .filter_map(|&op| {
                let h = &self.latency[op.idx()];
                let secs = |q| h.quantile(q).map(|ns| ns as f64 / 1e9);
                Some((op, h.count(), secs(0.5)?, secs(0.99)?))
            })
            .collect()
    }

    /// `(found, checked)` keys of `Exist` requests so far.
    pub fn exist_counts(&self) -> (u64, u64) {
        (self.exist_hits.get(), self.keys[RpcOp::Exist.idx()].get())
    }

    /// Bytes of objects found by lookups so far.
    pub fn hit_bytes(&self) -> u64 {
        self.hit_bytes.get()
    }

    /// `(hits, lookups)` as every view reports them: the state's `GetReplicas` counts (admin
    /// queries, RPC `QueryKey` included, take no lease and are not lookups).
    pub fn lookups(&self, stats: &MasterStats) -> (u64, u64) {
        (stats.get_hits, stats.get_total)
    }

    /// Records one served request: its kind, what it asked, what it got and how long it took.
    pub fn record(&self, op: RpcOp, facts: &RequestFacts, resp: &MasterResponse, took: Duration) {
        self.latency[op.idx()].observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        self.keys[op.idx()].add(facts.keys as u64);
        let whole_failed = matches!(resp, MasterResponse::Error { .. });
        // Failed keys of a keyed request.
        let failed_items = match resp {
            MasterResponse::Error { .. } => facts.keys,
            MasterResponse::PutStart(r) => r
                .iter()
                .filter(|x| matches!(x, PutStartResult::Failed(_)))
                .count(),
            MasterResponse::Codes(c) => c.iter().filter(|&&c| c < 0).count(),
            MasterResponse::Replicas(r) => r.iter().filter(|x| x.is_err()).count(),
            _ => 0,
        };
        match resp {
            MasterResponse::PutStart(r) => {
                for (res, size) in r.iter().zip(&facts.put_sizes) {
                    if let PutStartResult::Allocated { replicas, .. } = res {
                        self.value_size.observe(*size);
                        self.put_bytes
                            .add(size.saturating_mul(replicas.len() as u64));
                    }
                }
            }
            MasterResponse::Replicas(r) => {
                let bytes: u64 = r.iter().flatten().map(|v| v.size).sum();
                self.hit_bytes.add(bytes);
            }
            MasterResponse::Codes(c) if op == RpcOp::Exist => {
                self.exist_hits
                    .add(c.iter().filter(|&&v| v == 1).count() as u64);
            }
            _ => {}
        }
        let Some(mc) = op.mooncake() else {
            return;
        };
        let mc = if mc == McOp::MountSegment && facts.remount {
            McOp::RemountSegment
        } else {
            mc
        };
        let keyed = mc.idx() < McOp::BATCHED;
        if keyed && facts.keys != 1 {
            let b = &self.batch[mc.idx()];
            b.requests.inc();
            b.items.add(facts.keys as u64);
            b.failed_items.add(failed_items as u64);
            if whole_failed || (facts.keys > 0 && failed_items == facts.keys) {
                b.failures.inc();
            } else if failed_items > 0 {
                b.partial_successes.inc();
            }
            return;
        }
        let c = &self.single[mc.idx()];
        c.requests.inc();
        let failed = whole_failed
            || failed_items > 0
            || matches!(resp, MasterResponse::Heartbeat { known: false });
        if failed {
            c.failures.inc();
        }
    }

    /// Appends a history sample built from `stats` (dropping the oldest beyond
    /// [`HISTORY_LEN`]).
    pub fn sample(&self, stats: &MasterStats, t_ms: u64) {
        let k = |op: RpcOp| self.keys[op.idx()].get();
        let (hits, gets) = self.lookups(stats);
        let s = Sample {
            t_ms,
            put_keys: k(RpcOp::PutStart),
            get_keys: k(RpcOp::GetReplicas),
            other_keys: k(RpcOp::Exist) + k(RpcOp::Remove) + k(RpcOp::PutEnd) + k(RpcOp::PutRevoke),
            put_bytes: self.put_bytes.get(),
            get_bytes: self.hit_bytes.get(),
            gets,
            hits,
            exist_keys: k(RpcOp::Exist),
            exist_hits: self.exist_hits.get(),
            allocated_bytes: stats.allocated_bytes,
            key_count: stats.key_count,
            evicted_keys: stats.evicted_keys,
        };
        let mut h = self.history.lock();
        if h.len() >= HISTORY_LEN {
            h.pop_front();
        }
        h.push_back(s);
    }

    /// Rates between consecutive history samples, oldest first.
    pub fn rates(&self) -> Vec<Rate> {
        let h = self.history.lock();
        h.iter()
            .zip(h.iter().skip(1))
            .map(|(a, b)| Rate::between(a, b))
            .collect()
    }

    /// The whole `/metrics` body: the state's gauges and counters (`stats`, `segments` as
    /// `(name, used, capacity)`) and this struct's request metrics.
    pub fn render(&self, stats: &MasterStats, segments: &[(String, u64, u64)]) -> String {
        let mut out = String::with_capacity(32 << 10);
        let o = &mut out;
        let s = stats;
        let (hits, gets) = self.lookups(stats);
        // Capacity.
        gauge(
            o,
            "master_allocated_bytes",
            "Bytes allocated over all segments.",
            s.allocated_bytes,
        );
        gauge(
            o,
            "master_total_capacity_bytes",
            "Capacity over all segments.",
            s.capacity_bytes,
        );
        family(
            o,
            "segment_allocated_bytes",
            "Bytes allocated per segment.",
            "gauge",
        );
        for (name, used, _) in segments {
            let _ = writeln!(
                o,
                "segment_allocated_bytes{{segment=\"{}\"}} {used}",
                escape(name)
            );
        }
        family(
            o,
            "segment_total_capacity_bytes",
            "Capacity per segment.",
            "gauge",
        );
        for (name, _, cap) in segments {
            let _ = writeln!(
                o,
                "segment_total_capacity_bytes{{segment=\"{}\"}} {cap}",
                escape(name)
            );
        }
        // Population.
        gauge(
            o,
            "master_key_count",
            "Objects known to the master (readable and in flight).",
            s.key_count,
        );
        gauge(
            o,
            "master_soft_pin_key_count",
            "Soft-pinned objects.",
            s.soft_pin_key_count,
        );
        gauge(
            o,
            "master_active_clients",
            "Live clients.",
            s.active_clients,
        );
        family(
            o,
            "master_value_size_bytes",
            "Sizes of objects whose space was reserved.",
            "histogram",
        );
        self.value_size.render(o, "master_value_size_bytes", "");
        // Per request.
        for op in McOp::ALL {
            let c = &self.single[op.idx()];
            let n = op.name();
            counter(
                o,
                &format!("master_{n}_requests_total"),
                &format!("{n} requests (single-key form)."),
                c.requests.get(),
            );
            counter(
                o,
                &format!("master_{n}_failures_total"),
                &format!("{n} requests that failed."),
                c.failures.get(),
            );
        }
        for op in &McOp::ALL[..McOp::BATCHED] {
            let b = &self.batch[op.idx()];
            let n = op.name();
            counter(
                o,
                &format!("master_batch_{n}_requests_total"),
                &format!("Batch {n} requests."),
                b.requests.get(),
            );
            counter(
                o,
                &format!("master_batch_{n}_failures_total"),
                &format!("Batch {n} requests where every item failed."),
                b.failures.get(),
            );
            counter(
                o,
                &format!("master_batch_{n}_partial_successes_total"),
                &format!("Batch {n} requests where some items failed."),
                b.partial_successes.get(),
            );
            counter(
                o,
                &format!("master_batch_{n}_items_total"),
                &format!("Items in batch {n} requests."),
                b.items.get(),
            );
            counter(
                o,
                &format!("master_batch_{n}_failed_items_total"),
                &format!("Failed items in batch {n} requests."),
                b.failed_items.get(),
            );
        }
        // Allocation.
        counter(
            o,
            "master_put_start_alloc_failures_total",
            "Puts refused for lack of space.",
            s.alloc_failures,
        );
        counter(
            o,
            "master_put_start_partial_allocations_total",
            "Puts with fewer replicas than asked.",
            s.partial_allocations,
        );
        counter(
            o,
            "master_put_start_discard_cnt",
            "Stale in-flight puts taken over by a newer put.",
            s.put_discards,
        );
        counter(
            o,
            "master_put_start_release_cnt",
            "In-flight puts reclaimed after the release timeout.",
            s.put_releases,
        );
        counter(
            o,
            "tidepool_upsert_replacements_total",
            "Readable versions replaced by an upsert.",
            s.upsert_replacements,
        );
        // Eviction.
        counter(
            o,
            "master_attempted_evictions_total",
            "Eviction passes attempted.",
            s.eviction_attempts,
        );
        counter(
            o,
            "master_successful_evictions_total",
            "Eviction passes that freed space.",
            s.eviction_successes,
        );
        counter(
            o,
            "master_evicted_key_count",
            "Objects evicted.",
            s.evicted_keys,
        );
        counter(
            o,
            "master_evicted_size_bytes",
            "Bytes evicted.",
            s.evicted_bytes,
        );
        // Hits. Every replica is in memory, so a memory hit is any lookup that found the object.
        counter(
            o,
            "mem_cache_hit_nums_",
            "Lookups served from a memory replica.",
            hits,
        );
        counter(
            o,
            "mem_cache_hit_bytes_total",
            "Bytes of objects served from memory replicas.",
            self.hit_bytes.get(),
        );
        counter(o, "valid_get_nums_", "Lookups that found the object.", hits);
        counter(o, "total_get_nums_", "Lookups in total.", gets);
        // Tidepool's own.
        gauge(
            o,
            "tidepool_up",
            "1 while the master serves (role leader, state serving).",
            1,
        );
        gauge(
            o,
            "tidepool_uptime_seconds",
            "Seconds since the master started.",
            self.uptime().as_secs(),
        );
        gauge(o, "tidepool_segments", "Mounted segments.", s.segments);
        family(
            o,
            "tidepool_tier_allocated_bytes",
            "Bytes allocated per storage tier.",
            "gauge",
        );
        let _ = writeln!(
            o,
            "tidepool_tier_allocated_bytes{{tier=\"memory\"}} {}",
            s.allocated_bytes
        );
        family(
            o,
            "tidepool_tier_capacity_bytes",
            "Capacity per storage tier.",
            "gauge",
        );
        let _ = writeln!(
            o,
            "tidepool_tier_capacity_bytes{{tier=\"memory\"}} {}",
            s.capacity_bytes
        );
        counter(
            o,
            "tidepool_get_misses_total",
            "Lookups that did not find a readable object.",
            gets.saturating_sub(hits),
        );
        counter(
            o,
            "tidepool_exist_hits_total",
            "Exist checks that found a readable object (ratio: over tidepool_rpc_keys_total{op=\"exist\"}).",
            self.exist_hits.get(),
        );
        counter(
            o,
            "tidepool_put_reserved_bytes_total",
            "Bytes reserved by puts, all replicas.",
            self.put_bytes.get(),
        );
        counter(
            o,
            "tidepool_evictions_total",
            "Objects evicted.",
            s.evicted_keys,
        );
        counter(
            o,
            "tidepool_dead_clients_total",
            "Clients declared dead after missing heartbeats.",
            s.dead_clients,
        );
        counter(
            o,
            "tidepool_revoked_puts_by_liveness_total",
            "In-flight puts revoked after writer death or close.",
            s.revoked_by_liveness,
        );
        gauge(
            o,
            "tidepool_rpc_connections",
            "Open RPC connections.",
            self.connections_open.load(Relaxed),
        );
        counter(
            o,
            "tidepool_rpc_connections_total",
            "RPC connections accepted.",
            self.connections_total.get(),
        );
        counter(
            o,
            "tidepool_rpc_malformed_frames_total",
            "RPC frames that could not be decoded.",
            self.malformed_frames.get(),
        );
        family(
            o,
            "tidepool_remove_owner_drops_total",
            "Owners told to drop removed objects from their directories, by outcome: acked, excused (declared dead or unmounted first), failed (refused, or no answer within client_ttl + 1 s).",
            "counter",
        );
        for (outcome, c) in [
            ("acked", &self.drops_acked),
            ("excused", &self.drops_excused),
            ("failed", &self.drops_failed),
        ] {
            let _ = writeln!(
                o,
                "tidepool_remove_owner_drops_total{{outcome=\"{outcome}\"}} {}",
                c.get()
            );
        }
        counter(
            o,
            "tidepool_rpc_version_rejections_total",
            "Clients turned away for an incompatible protocol version.",
            self.version_rejections.get(),
        );
        family(
            o,
            "tidepool_rpc_keys_total",
            "Keys carried by RPC requests, per kind.",
            "counter",
        );
        for op in RpcOp::ALL {
            let _ = writeln!(
                o,
                "tidepool_rpc_keys_total{{op=\"{}\"}} {}",
                op.name(),
                self.keys[op.idx()].get()
            );
        }
        family(
            o,
            "tidepool_rpc_latency_seconds",
            "Time the master took to serve one RPC, per kind.",
            "histogram",
        );
        for op in RpcOp::ALL {
            self.latency[op.idx()].render(
                o,
                "tidepool_rpc_latency_seconds",
                &format!("op=\"{}\"", op.name()),
            );
        }
        out
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    family(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    family(out, name, help, "counter");
    let _ = writeln!(out, "{name} {v}");
}

/// Escapes a Prometheus label value.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidepool_common::{ErrorCode, ObjectId, SegmentId};
    use tidepool_proto::types::{MemoryReplica, ObjectView};

    /// Value of the sample line `series` (name plus labels, exactly as printed).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("series {series} missing"))
    }

    fn allocated(size: u64, reps: usize) -> PutStartResult {
        PutStartResult::Allocated {
            object_id: ObjectId { epoch: 1, seq: 1 },
            epoch: 1,
            replicas: vec![
                MemoryReplica {
                    segment: SegmentId(1),
                    addr: 0,
                    len: size
                };
                reps
            ],
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_bounded() {
        let h = Histogram::new(VALUE_SIZE_BOUNDS, 1.0);
        h.observe(1); // first bucket
        h.observe(4096); // bound is inclusive
        h.observe(4097); // 8 KiB
        h.observe(1 << 30); // +Inf only
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert_eq!(value(&out, "x_bucket{le=\"4096\"}"), 2.0);
        assert_eq!(value(&out, "x_bucket{le=\"8192\"}"), 3.0);
        assert_eq!(value(&out, "x_bucket{le=\"67108864\"}"), 3.0);
        assert_eq!(value(&out, "x_bucket{le=\"+Inf\"}"), 4.0);
        assert_eq!(value(&out, "x_count"), 4.0);
        assert_eq!(
            value(&out, "x_sum"),
            (1 + 4096 + 4097 + (1u64 << 30)) as f64
        );
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let h = Histogram::new(LATENCY_BOUNDS_NS, 1e9);
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..100 {
            h.observe(30_000); // (25 us, 50 us]
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((25_000..=50_000).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), Some(50_000));
        h.observe(5_000_000_000); // beyond 1 s
        assert_eq!(h.quantile(1.0), Some(1_000_000_000));
        assert!(h.quantile(0.5).unwrap() <= 50_000);
    }

    #[test]
    fn single_and_batch_requests_count_separately() {
        let m = Metrics::new();
        let one = RequestFacts {
            keys: 1,
            put_sizes: vec![8192],
            ..Default::default()
        };
        m.record(
            RpcOp::PutStart,
            &one,
            &MasterResponse::PutStart(vec![allocated(8192, 2)]),
            Duration::from_micros(30),
        );
        let three = RequestFacts {
            keys: 3,
            put_sizes: vec![100, 200, 300],
            ..Default::default()
        };
        m.record(
            RpcOp::PutStart,
            &three,
            &MasterResponse::PutStart(vec![
                allocated(100, 1),
                PutStartResult::Failed(ErrorCode::NoAvailableHandle),
                PutStartResult::Exists,
            ]),
            Duration::from_millis(2),
        );
        let text = m.render(&MasterStats::default(), &[]);
        assert_eq!(value(&text, "master_put_start_requests_total"), 1.0);
        assert_eq!(value(&text, "master_put_start_failures_total"), 0.0);
        assert_eq!(value(&text, "master_batch_put_start_requests_total"), 1.0);
        assert_eq!(value(&text, "master_batch_put_start_items_total"), 3.0);
        assert_eq!(
            value(&text, "master_batch_put_start_failed_items_total"),
            1.0
        );
        assert_eq!(
            value(&text, "master_batch_put_start_partial_successes_total"),
            1.0
        );
        assert_eq!(value(&text, "master_batch_put_start_failures_total"), 0.0);
        // Two allocated objects: 8 KiB and 100 B; bytes reserved count every replica.
        assert_eq!(value(&text, "master_value_size_bytes_count"), 2.0);
        assert_eq!(
            value(&text, "master_value_size_bytes_bucket{le=\"4096\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "tidepool_put_reserved_bytes_total"),
            (2 * 8192 + 100) as f64
        );
        assert_eq!(
            value(&text, "tidepool_rpc_keys_total{op=\"put_start\"}"),
            4.0
        );
        assert_eq!(
            value(
                &text,
                "tidepool_rpc_latency_seconds_count{op=\"put_start\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "tidepool_rpc_latency_seconds_bucket{op=\"put_start\",le=\"0.00005\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "tidepool_rpc_latency_seconds_bucket{op=\"put_start\",le=\"0.0025\"}"
            ),
            2.0
        );
    }

    #[test]
    fn failures_hits_and_remounts() {
        let m = Metrics::new();
        let one = RequestFacts {
            keys: 1,
            ..Default::default()
        };
        let view = ObjectView {
            object_id: ObjectId { epoch: 1, seq: 2 },
            size: 5000,
            replicas: vec![],
            lease_ttl_ms: 10,
        };
        m.record(
            RpcOp::GetReplicas,
            &one,
            &MasterResponse::Replicas(vec![Ok(view)]),
            Duration::ZERO,
        );
        m.record(
            RpcOp::GetReplicas,
            &one,
            &MasterResponse::Replicas(vec![Err(ErrorCode::ObjectNotFound)]),
            Duration::ZERO,
        );
        let two = RequestFacts {
            keys: 2,
            ..Default::default()
        };
        m.record(
            RpcOp::Exist,
            &RequestFacts {
                keys: 3,
                ..Default::default()
            },
            &MasterResponse::Codes(vec![1, 0, 1]),
            Duration::ZERO,
        );
        assert_eq!(m.exist_counts(), (2, 3));
        m.record(
            RpcOp::Exist,
            &two,
            &MasterResponse::Codes(vec![-600, -600]),
            Duration::ZERO,
        );
        m.record(
            RpcOp::Heartbeat,
            &RequestFacts::default(),
            &MasterResponse::Heartbeat { known: false },
            Duration::ZERO,
        );
        let remount = RequestFacts {
            remount: true,
            ..Default::default()
        };
        m.record(
            RpcOp::MountSegment,
            &remount,
            &MasterResponse::Mounted(SegmentId(3)),
            Duration::ZERO,
        );
        m.record(
            RpcOp::RemoveAll,
            &RequestFacts::default(),
            &MasterResponse::Error {
                code: ErrorCode::InternalError,
                message: String::new(),
            },
            Duration::ZERO,
        );
        let text = m.render(&MasterStats::default(), &[]);
        assert_eq!(value(&text, "master_get_replica_list_requests_total"), 2.0);
        assert_eq!(value(&text, "master_get_replica_list_failures_total"), 1.0);
        assert_eq!(value(&text, "mem_cache_hit_bytes_total"), 5000.0);
        assert_eq!(value(&text, "master_batch_exist_key_failures_total"), 1.0);
        assert_eq!(value(&text, "tidepool_exist_hits_total"), 2.0);
        assert_eq!(value(&text, "tidepool_rpc_keys_total{op=\"exist\"}"), 5.0);
        assert_eq!(
            value(&text, "master_batch_exist_key_failed_items_total"),
            2.0
        );
        assert_eq!(value(&text, "master_ping_failures_total"), 1.0);
        assert_eq!(value(&text, "master_remount_segment_requests_total"), 1.0);
        assert_eq!(value(&text, "master_mount_segment_requests_total"), 0.0);
        assert_eq!(value(&text, "master_remove_all_failures_total"), 1.0);
    }

    #[test]
    fn history_rates_and_ring_bound() {
        let m = Metrics::new();
        let mut st = MasterStats::default();
        m.sample(&st, 1000);
        st.get_total = 10;
        st.get_hits = 4;
        m.sample(&st, 3000);
        let r = m.rates();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].hit_ratio, Some(0.4));
        assert_eq!(r[0].t_ms, 3000);
        for i in 0..(HISTORY_LEN as u64 + 10) {
            m.sample(&st, 4000 + i * 1000);
        }
        assert_eq!(m.rates().len(), HISTORY_LEN - 1);
        assert_eq!(
            m.rates()[0].hit_ratio,
            None,
            "no lookups between equal samples"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        let text = m.render(&MasterStats::default(), &[("a\"b\\c\nd".into(), 1, 2)]);
        assert!(text.contains(r#"segment_allocated_bytes{segment="a\"b\\c\nd"} 1"#));
    }
}
