//! Delivering removes to the segment owners (contract §8: `remove` returns 0 only after every
//! live replica owner dropped the entry from its directory, or was declared dead).
//!
//! The master is a small data-plane client here: it sends `DataRequest::Drop` to each owner's
//! data endpoint (the one every mounted segment names), over connections it keeps for the
//! next remove, all owners at once. An owner that does not answer is retried while its segment
//! stays mounted: once the master declares it dead (`client_ttl`) its segment, and with it the
//! directory, is gone, and the remove completes. An owner that stays mounted but never
//! answers fails the remove after [`deadline`], with its ranges returned all the same (they
//! cannot stay reserved for ever).

use crate::Master;
use crate::metrics::DropOutcome;
use crate::state::removal::{DropOrder, Removal};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidepool_common::ErrorCode;
use tidepool_proto::data::{DataRequest, DataResponse, Dropped};
use tidepool_proto::frame::{self, FrameKind};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Drops per request: keeps one `remove_all` of millions of objects within frame limits.
const DROPS_PER_REQUEST: usize = 64 << 10;
/// One attempt (connect, send, answer) gives up after this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts at an owner that did not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Idle connections kept per owner.
const POOL_PER_OWNER: usize = 4;

/// Idle data connections to owners, by endpoint.
#[derive(Default)]
pub struct OwnerConnections {
    idle: Mutex<HashMap<String, Vec<BufReader<TcpStream>>>>,
}

impl OwnerConnections {
    fn take(&self, endpoint: &str) -> Option<BufReader<TcpStream>> {
        self.idle.lock().get_mut(endpoint)?.pop()
    }

    fn put_back(&self, endpoint: &str, conn: BufReader<TcpStream>) {
        let mut idle = self.idle.lock();
        let v = idle.entry(endpoint.to_string()).or_default();
        if v.len() < POOL_PER_OWNER {
            v.push(conn);
        }
    }
}

/// How long a remove waits for an owner that stays mounted: past the client TTL, so an owner
/// that died is always declared dead (and excused) first.
fn deadline(client_ttl_ms: u64) -> Duration {
    Duration::from_millis(client_ttl_ms) + Duration::from_secs(1)
}

/// Has every owner of `removal` drop its entries, then frees the ranges. `Err` when an owner
/// still mounted refused (a newer master fenced this one) or never answered.
///
/// The work runs in a task of its own, so a caller that stops waiting (its connection closed)
/// neither leaves the ranges reserved nor the owners half told.
pub async fn settle(master: &Arc<Master>, removal: Removal) -> Result<(), ErrorCode> {
    if removal.is_empty() {
        return Ok(());
    }
    let master = master.clone();
    let task = tokio::spawn(async move {
        let (orders, epoch, ttl) = {
            let st = master.lock();
            (
                st.drop_orders(&removal),
                st.epoch(),
                st.settings().client_ttl_ms,
            )
        };
        let until = Instant::now() + deadline(ttl);
        let mut owners = JoinSet::new();
        for order in orders {
            let master = master.clone();
            owners.spawn(async move {
                let r = master.deliver(&order, epoch, until).await;
                let outcome = match r {
                    Ok(true) => DropOutcome::Acked,
                    Ok(false) => DropOutcome::Excused,
                    Err(_) => DropOutcome::Failed,
                };
                master.metrics.owner_drop(outcome);
                r.map(|_| ())
            });
        }
        let mut outcome = Ok(());
        while let Some(r) = owners.join_next().await {
            let r = r.unwrap_or(Err(ErrorCode::InternalError));
            if outcome.is_ok() {
                outcome = r;
            }
        }
        master.lock().release(removal);
        outcome
    });
    task.await.unwrap_or(Err(ErrorCode::InternalError))
}

impl Master {
    /// Delivers one owner's drops, retrying while its segment stays mounted: `Ok(true)` once
    /// acknowledged, `Ok(false)` when the owner went away first.
    async fn deliver(
        &self,
        order: &DropOrder,
        epoch: u64,
        until: Instant,
    ) -> Result<bool, ErrorCode> {
        for chunk in order.drops.chunks(DROPS_PER_REQUEST) {
            loop {
                match self.attempt(&order.endpoint, epoch, chunk).await {
                    Ok(()) => break,
                    // The owner answered with a refusal: retrying changes nothing.
                    Err(Some((code, message))) => {
                        tracing::warn!(endpoint = %order.endpoint, ?code, %message, "owner refused a drop");
                        return Err(code);
                    }
                    Err(None) => {}
                }
                if !self.lock().segment_mounted(order.segment) {
                    // Declared dead or unmounted: its directory went with it.
                    return Ok(false);
                }
                if Instant::now() >= until {
                    tracing::warn!(endpoint = %order.endpoint, "owner never acknowledged a drop");
                    return Err(ErrorCode::RpcTimeout);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        Ok(true)
    }

    /// One request: `Ok` once acknowledged, `Err(Some)` on a refusal, `Err(None)` when the
    /// owner could not be reached or did not answer in time. A kept connection that fails (the
    /// owner restarted, or closed it while idle) is replaced by a fresh one at once.
    async fn attempt(
        &self,
        endpoint: &str,
        epoch: u64,
        drops: &[Dropped],
    ) -> Result<(), Option<(ErrorCode, String)>> {
        let req = DataRequest::Drop {
            epoch,
            drops: drops.to_vec(),
        };
        let run = async {
            if let Some(kept) = self.owners.take(endpoint) {
                match self.exchange(endpoint, kept, &req).await {
                    Err(None) => {}
                    done => return done,
                }
            }
            let fresh = TcpStream::connect(endpoint).await.map_err(|_| None)?;
            let _ = fresh.set_nodelay(true);
            self.exchange(endpoint, BufReader::new(fresh), &req).await
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, run)
            .await
            .unwrap_or(Err(None))
    }

    /// Sends `req` on `conn` and reads the answer; the connection is kept for the next remove
    /// only after a clean `Ok`.
    async fn exchange(
        &self,
        endpoint: &str,
        mut conn: BufReader<TcpStream>,
        req: &DataRequest,
    ) -> Result<(), Option<(ErrorCode, String)>> {
        let mut buf = Vec::new();
        frame::write_frame(conn.get_mut(), &mut buf, FrameKind::Request, 1, req, &[])
            .await
            .map_err(|_| None)?;
        let (hdr, resp) = frame::read_frame::<_, DataResponse>(&mut conn, &mut buf)
            .await
            .map_err(|_| None)?;
        if hdr.payload_len > 0 {
            frame::discard(&mut conn, hdr.payload_len)
                .await
                .map_err(|_| None)?;
        }
        match resp {
            Ok(DataResponse::Ok) => {
                self.owners.put_back(endpoint, conn);
                Ok(())
            }
            Ok(DataResponse::Error { code, message }) => Err(Some((code, message))),
            // Any other answer is a protocol fault: dropped with the connection, retried.
            Ok(_) | Err(_) => Err(None),
        }
    }
}
