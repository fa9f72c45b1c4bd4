//! Client-side metrics (contract §4.6, client rows): master RPC counts and latencies per RPC,
//! transfer latencies per operation kind, bytes moved. Relaxed atomics on the hot path; the
//! Prometheus text is rendered on demand by [`ClientMetrics::render`].
//!
//! Hand-written rather than a metrics crate: a dozen fixed series whose names the contract
//! pins, rendered in one function, are simpler than a registry. The histograms are the
//! master's ([`tidepool_common::metrics`]), in nanoseconds printed as seconds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tidepool_common::metrics::{Histogram, LATENCY_BOUNDS_NS};

fn latency() -> Histogram {
    Histogram::new(LATENCY_BOUNDS_NS, 1e9)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Master RPCs the client counts, by Mooncake-style name.
pub const RPCS: [&str; 12] = [
    "hello",
    "heartbeat",
    "mount_segment",
    "unmount_segment",
    "put_start",
    "put_end",
    "put_revoke",
    "get_replica_list",
    "exist_key",
    "remove",
    "describe_segments",
    "other",
];

/// Transfer operation kinds.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// A single-object put.
    Put,
    /// A single-object get.
    Get,
    /// A multi-object put.
    BatchPut,
    /// A multi-object get.
    BatchGet,
}

/// Every client-side series.
#[derive(Debug)]
pub struct ClientMetrics {
    rpc: [Histogram; RPCS.len()],
    ops: [Histogram; 4],
    write_bytes: AtomicU64,
    read_bytes: AtomicU64,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self {
            rpc: std::array::from_fn(|_| latency()),
            ops: std::array::from_fn(|_| latency()),
            write_bytes: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
        }
    }
}

impl ClientMetrics {
    /// Records one master RPC (index into [`RPCS`]).
    pub fn rpc(&self, which: usize, d: Duration) {
        if let Some(h) = self.rpc.get(which) {
            h.observe(nanos(d));
        }
    }

    /// Records one put/get call and the bytes it moved.
    pub fn op(&self, op: Op, d: Duration, bytes: u64) {
        self.ops[op as usize].observe(nanos(d));
        match op {
            Op::Put | Op::BatchPut => self.write_bytes.fetch_add(bytes, Relaxed),
            Op::Get | Op::BatchGet => self.read_bytes.fetch_add(bytes, Relaxed),
        };
    }

    /// Mean latency and count of one master RPC (by its name in [`RPCS`]).
    pub fn rpc_mean(&self, name: &str) -> Option<(Duration, u64)> {
        let h = &self.rpc[RPCS.iter().position(|&r| r == name)?];
        let n = h.count();
        (n > 0).then(|| (Duration::from_nanos(h.sum() / n), n))
    }

    /// Prometheus text of every series, plus the transfer engine's per-transport byte counts.
    pub fn render(&self, transfer: &tidepool_transfer::TransferStats) -> String {
        let mut out = String::new();
        out.push_str("# HELP mooncake_client_rpc_count Master RPCs sent, by RPC.\n");
        out.push_str("# TYPE mooncake_client_rpc_count counter\n");
        for (name, h) in RPCS.iter().zip(&self.rpc) {
            let _ = writeln!(
                out,
                "mooncake_client_rpc_count{{rpc=\"{name}\"}} {}",
                h.count()
            );
        }
        out.push_str("# HELP mooncake_client_rpc_latency Master RPC latency in seconds.\n");
        out.push_str("# TYPE mooncake_client_rpc_latency histogram\n");
        for (name, h) in RPCS.iter().zip(&self.rpc) {
            h.render(
                &mut out,
                "mooncake_client_rpc_latency",
                &format!("rpc=\"{name}\""),
            );
        }
        for (op, h) in ["put", "get", "batch_put", "batch_get"]
            .iter()
            .zip(&self.ops)
        {
            let name = format!("mooncake_transfer_{op}_latency");
            let _ = writeln!(out, "# HELP {name} Latency of {op} calls in seconds.");
            let _ = writeln!(out, "# TYPE {name} histogram");
            h.render(&mut out, &name, "");
        }
        for (name, v) in [
            (
                "mooncake_transfer_write_bytes",
                self.write_bytes.load(Relaxed),
            ),
            (
                "mooncake_transfer_read_bytes",
                self.read_bytes.load(Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} Object bytes moved.\n# TYPE {name} counter\n{name} {v}"
            );
        }
        out.push_str("# HELP tidepool_transfer_bytes_total Bytes moved by this client's engine, by transport and direction.\n");
        out.push_str("# TYPE tidepool_transfer_bytes_total counter\n");
        for (transport, dir, v) in [
            ("tcp", "write", transfer.tcp_bytes_written),
            ("tcp", "read", transfer.tcp_bytes_read),
            ("shm", "write", transfer.shm_bytes_written),
            ("shm", "read", transfer.shm_bytes_read),
            ("local", "write", transfer.local_bytes_written),
            ("local", "read", transfer.local_bytes_read),
        ] {
            let _ = writeln!(
                out,
                "tidepool_transfer_bytes_total{{transport=\"{transport}\",direction=\"{dir}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tidepool_open_data_connections Pooled outgoing data connections.\n# TYPE tidepool_open_data_connections gauge\ntidepool_open_data_connections {}",
            transfer.open_connections
        );
        out
    }

    /// One human-readable line (`/metrics/summary`).
    pub fn summary(&self) -> String {
        let [put, get, bput, bget] = &self.ops;
        format!(
            "puts={} gets={} batch_puts={} batch_gets={} write_bytes={} read_bytes={}",
            put.count(),
            get.count(),
            bput.count(),
            bget.count(),
            self.write_bytes.load(Relaxed),
            self.read_bytes.load(Relaxed)
        )
    }
}

/// Index into [`RPCS`] of a request.
pub fn rpc_index(req: &tidepool_proto::master::MasterRequest) -> usize {
    use tidepool_proto::master::MasterRequest as R;
    match req {
        R::Hello { .. } => 0,
        R::Heartbeat => 1,
        R::MountSegment(_) => 2,
        R::UnmountSegment(_) => 3,
        R::PutStart { .. } | R::UpsertStart { .. } => 4,
        R::PutEnd(_) => 5,
        R::PutRevoke(_) => 6,
        R::GetReplicas(_) => 7,
        R::Exist(_) => 8,
        R::Remove { .. } => 9,
        R::DescribeSegments(_) => 10,
        _ => 11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = ClientMetrics::default();
        m.op(Op::Put, Duration::from_micros(30), 4096);
        m.op(Op::Put, Duration::from_millis(3), 4096);
        m.rpc(4, Duration::from_micros(5));
        let text = m.render(&tidepool_transfer::TransferStats::default());
        assert!(
            text.contains("mooncake_transfer_put_latency_bucket{le=\"0.00005\"} 1"),
            "{text}"
        );
        assert!(text.contains("mooncake_transfer_put_latency_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("mooncake_transfer_put_latency_count 2"));
        assert!(text.contains("mooncake_transfer_write_bytes 8192"));
        assert!(text.contains("mooncake_client_rpc_count{rpc=\"put_start\"} 1"));
    }
}
