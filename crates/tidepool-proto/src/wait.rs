//! Waiting for the next frame with a short busy-poll before parking.
//!
//! On the machines Tidepool targets (VMs with few cores), waking a thread parked in
//! `epoll_wait` costs 12–17 µs per hop, which is most of a loopback round trip (measured here:
//! 25–35 µs with blocking sockets, 0.5 µs between two spinning cores). A put is three round
//! trips and a get two, so the wake-ups dominate small-object latency. A task that expects an
//! answer (or its peer's next request) within microseconds therefore keeps polling the runtime
//! for a bounded window before it parks: each iteration yields, which lets every other ready
//! task run and makes tokio poll the I/O driver without blocking, so nothing is starved and the
//! window costs at most its length in CPU per frame.
//!
//! Measured on the 2-core VM this project is benchmarked on, with master, node and client
//! sharing the cores, spinning made single-op latency worse (a spinner takes the core its peer
//! needs), so it is off unless `TIDEPOOL_SPIN_US` (microseconds, read once) turns it on: use it
//! where each process has a spare core.

use std::future::Future;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, Instant};

/// `TIDEPOOL_SPIN_US`, read once; `None` when unset or unparsable.
fn env_spin_us() -> Option<u64> {
    static ENV: OnceLock<Option<u64>> = OnceLock::new();
    *ENV.get_or_init(|| {
        std::env::var("TIDEPOOL_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The configured window: `TIDEPOOL_SPIN_US` capped at the caller's `max`, or zero (no
/// spinning) when the variable is unset or unparsable.
pub fn spin_window(max: Duration) -> Duration {
    env_spin_us().map_or(Duration::ZERO, |us| Duration::from_micros(us).min(max))
}

/// The window of a thread that waits for its own answer and has nothing else to run (a
/// caller's thread on blocking sockets): `TIDEPOOL_SPIN_US` when set (0 turns it off), else
/// `default`; capped at `max`. Unlike a runtime worker, such a thread delays no other task by
/// polling, and it yields the core between polls. Measured on the 2-vCPU VM with the Python
/// harness (master, storage process and client sharing the cores), spinning there took 4 KiB
/// get p50 from 59–63 to 33–49 µs and put p50 from 181–192 to 104–159 µs.
pub fn caller_spin_window(default: Duration, max: Duration) -> Duration {
    env_spin_us()
        .map_or(default, Duration::from_micros)
        .min(max)
}

/// Awaits `ready` (a readiness future such as `TcpStream::readable()`), polling it and yielding
/// for up to `window` before awaiting it normally.
pub async fn spin_ready<F: Future<Output = std::io::Result<()>>>(
    ready: F,
    window: Duration,
) -> std::io::Result<()> {
    let mut ready = std::pin::pin!(ready);
    if window.is_zero() {
        return ready.await;
    }
    let start = Instant::now();
    loop {
        let polled = std::future::poll_fn(|cx| Poll::Ready(ready.as_mut().poll(cx))).await;
        if let Poll::Ready(r) = polled {
            return r;
        }
        if start.elapsed() >= window {
            return ready.await;
        }
        tokio::task::yield_now().await;
        // Also offer the core to other runnable threads: with more busy processes than
        // cores, a spinner must not delay the very peer it waits for.
        std::thread::yield_now();
    }
}
