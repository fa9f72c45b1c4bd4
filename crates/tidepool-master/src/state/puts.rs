//! Put start / end / revoke (contract §3.2): reserving ranges, committing, abandoning.

use super::objects::{ListId, MAX_OBJECTS, Object, Rep, Replicas};
use super::placement::{self, Writer};
use super::{MasterState, check_key};
use tidepool_common::{ClientId, ErrorCode, ObjectId};
use tidepool_proto::master::{PutEndItem, PutStartResult};
use tidepool_proto::types::{MemoryReplica, ReplicateConfig, SoftPin};

/// What every key of one put/upsert batch shares.
#[derive(Clone, Copy)]
struct StartReq<'a> {
    client: ClientId,
    cfg: &'a ReplicateConfig,
    /// Soft-pin TTL the config asks for (0 = none).
    pin_ttl: u64,
    writer: Writer<'a>,
    now: u64,
    /// Upsert: replace a readable version instead of answering `Exists`.
    replace: bool,
}

impl MasterState {
    /// Soft-pin TTL asked by `cfg` for a new object (0 = none), or -600.
    fn soft_pin_ttl(&self, cfg: &ReplicateConfig) -> Result<u64, ErrorCode> {
        match cfg.soft_pin {
            SoftPin::Preserve | SoftPin::Disable => Ok(0),
            SoftPin::Enable { ttl_ms: None } => Ok(self.settings.default_kv_soft_pin_ttl_ms),
            SoftPin::Enable { ttl_ms: Some(t) } if t > self.settings.max_kv_soft_pin_ttl_ms => {
                Err(ErrorCode::InvalidParams)
            }
            SoftPin::Enable { ttl_ms: Some(t) } => Ok(t),
        }
    }

    /// Reserves space for each `(key, size)`: `Exists` if readable, `InFlight` if another put
    /// is in progress (younger than the discard timeout; older ones are taken over), else
    /// `Allocated` with one range per replica, or `Failed(code)`.
    pub fn put_start(
        &mut self,
        client: ClientId,
        items: &[(String, u64)],
        cfg: &ReplicateConfig,
    ) -> Vec<PutStartResult> {
        self.start(client, items, cfg, false)
    }

    /// Insert-or-replace (contract §1.5 `upsert*`): as [`MasterState::put_start`], but a
    /// readable key is replaced: its old version is dropped (space freed, the key is in flight
    /// and reads get -703 until the new version commits). A live read lease refuses the
    /// replacement with -706 (W13): the old bytes may be in a reader's transfer right now, and
    /// freeing them would let the new allocation overwrite what that reader is copying.
    pub fn upsert_start(
        &mut self,
        client: ClientId,
        items: &[(String, u64)],
        cfg: &ReplicateConfig,
    ) -> Vec<PutStartResult> {
        self.start(client, items, cfg, true)
    }

    fn start(
        &mut self,
        client: ClientId,
        items: &[(String, u64)],
        cfg: &ReplicateConfig,
        replace: bool,
    ) -> Vec<PutStartResult> {
        let now = self.now();
        // Only known clients may own in-flight puts: they are revoked by the writer's liveness,
        // which an unknown client has none of.
        let Some(w) = self.clients.get(client) else {
            return vec![PutStartResult::Failed(ErrorCode::ClientNotFound); items.len()];
        };
        let (host, host_id) = (w.host.clone(), w.host_id.clone());
        self.clients.touch(client, now);
        if cfg.replica_num == 0 {
            return vec![PutStartResult::Failed(ErrorCode::InvalidParams); items.len()];
        }
        let pin_ttl = match self.soft_pin_ttl(cfg) {
            Ok(t) => t,
            Err(e) => return vec![PutStartResult::Failed(e); items.len()],
        };
        let writer = Writer {
            host: &host,
            host_id: &host_id,
        };
        let req = StartReq {
            client,
            cfg,
            pin_ttl,
            writer,
            now,
            replace,
        };
        items
            .iter()
            .map(|(key, size)| self.put_start_one(&req, key, *size))
            .collect()
    }

    fn put_start_one(&mut self, req: &StartReq<'_>, key: &str, size: u64) -> PutStartResult {
        let StartReq {
            client,
            cfg,
            mut pin_ttl,
            writer,
            now,
            replace,
        } = *req;
        if let Err(e) = check_key(key) {
            return PutStartResult::Failed(e);
        }
        if size == 0 {
            return PutStartResult::Failed(ErrorCode::InvalidParams);
        }
        if let Some(idx) = self.objects.find(key) {
            let o = self.objects.get(idx);
            if !o.in_flight {
                if !replace {
                    return PutStartResult::Exists;
                }
                if o.lease_deadline > now {
                    return PutStartResult::Failed(ErrorCode::ObjectHasLease);
                }
                // PRESERVE carries the remaining soft-pin period over to the new version.
                if matches!(cfg.soft_pin, SoftPin::Preserve) && o.soft_pin > now {
                    pin_ttl = o.soft_pin - now;
                }
                self.counters.upsert_replacements += 1;
                self.drop_object(idx);
            } else if now.saturating_sub(o.stamp_ms) < self.settings.put_start_discard_timeout_ms {
                return PutStartResult::InFlight;
            } else {
                // A stale put: take it over (its writer's put_end will get -704/-601).
                self.counters.put_discards += 1;
                self.drop_object(idx);
            }
        }
        if self.objects.slot_count() >= MAX_OBJECTS && self.objects.len() >= MAX_OBJECTS {
            return PutStartResult::Failed(ErrorCode::NoAvailableHandle);
        }
        let strategy = self.settings.allocation_strategy;
        let place = |st: &mut MasterState| {
            placement::place(&mut st.segments, &mut st.rng, strategy, cfg, size, writer)
        };
        let mut reps = place(self);
        // Reactive eviction (contract §3.6): make room in the put path, then try once more.
        if reps.is_empty() && self.settings.eviction_ratio > 0.0 && self.reactive_evict(now, size) {
            reps = place(self);
        }
        if reps.is_empty() {
            self.counters.alloc_failures += 1;
            // Contract §3.6: after a failure the background frees eviction_ratio x capacity.
            let want = (self.settings.eviction_ratio * self.segments.capacity() as f64) as u64;
            self.pending_evict_bytes = self.pending_evict_bytes.max(want);
            return PutStartResult::Failed(ErrorCode::NoAvailableHandle);
        }
        if reps.len() < cfg.replica_num as usize {
            self.counters.partial_allocations += 1;
        }
        let id = ObjectId {
            epoch: self.epoch,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let replicas: Vec<MemoryReplica> = reps
            .iter()
            .filter_map(|r| {
                let s = self.segments.get(r.seg)?;
                Some(MemoryReplica {
                    segment: s.id,
                    addr: s.spec.base_addr + r.off,
                    len: size,
                })
            })
            .collect();
        let obj = Object {
            key: key.into(),
            id,
            size,
            replicas: Replicas::from_vec(reps),
            writer: client,
            stamp_ms: now,
            lease_deadline: 0,
            soft_pin: pin_ttl,
            prev: 0,
            next: 0,
            list: ListId::None,
            hard_pin: cfg.hard_pin,
            in_flight: true,
        };
        let idx = self.objects.insert(obj);
        self.objects.push_tail(ListId::InFlight, idx);
        PutStartResult::Allocated {
            object_id: id,
            epoch: self.epoch,
            replicas,
        }
    }

    /// Checks that `key` is an in-flight put `id` of `client`; returns its slot or the code.
    fn own_put(&self, client: ClientId, key: &str, id: ObjectId) -> Result<u32, ErrorCode> {
        check_key(key)?;
        let idx = self.objects.find(key).ok_or(ErrorCode::ObjectNotFound)?;
        let o = self.objects.get(idx);
        if !o.in_flight {
            return Err(ErrorCode::InvalidWrite);
        }
        if o.writer != client {
            return Err(ErrorCode::IllegalClient);
        }
        if o.id != id {
            return Err(ErrorCode::InvalidWrite);
        }
        Ok(idx)
    }

    /// Commits written objects: replicas on `failed` segments are dropped (-800 if none is
    /// left), the rest become COMPLETE. The commit stamps recency and starts the soft-pin
    /// period but grants no lease.
    pub fn put_end(&mut self, client: ClientId, items: &[PutEndItem]) -> Vec<i32> {
        let now = self.now();
        self.clients.touch(client, now);
        // Last item first: the batch's first keys end up warmest (`reads.rs`, batch order).
        let mut out: Vec<i32> = items
            .iter()
            .rev()
            .map(|it| {
                self.put_end_one(client, it, now)
                    .map_or_else(|e| e.as_i32(), |()| 0)
            })
            .collect();
        out.reverse();
        out
    }

    fn put_end_one(
        &mut self,
        client: ClientId,
        it: &PutEndItem,
        now: u64,
    ) -> Result<(), ErrorCode> {
        let idx = self.own_put(client, &it.key, it.object_id)?;
        if !it.failed.is_empty() {
            let failed: Vec<u32> = it
                .failed
                .iter()
                .filter_map(|&s| self.segments.index_of(s))
                .collect();
            let o = self.objects.get(idx);
            let size = o.size;
            let (gone, kept): (Vec<Rep>, Vec<Rep>) = o
                .replicas
                .as_slice()
                .iter()
                .partition(|r| failed.contains(&r.seg));
            if !gone.is_empty() {
                if kept.is_empty() {
                    self.drop_object(idx);
                    return Err(ErrorCode::TransferFail);
                }
                for r in gone {
                    self.segments.free(r.seg, r.off, size);
                }
                self.objects.get_mut(idx).replicas = Replicas::from_vec(kept);
            }
        }
        let o = self.objects.get_mut(idx);
        o.in_flight = false;
        o.stamp_ms = now;
        o.writer = ClientId(0);
        o.soft_pin = if o.soft_pin > 0 {
            now.saturating_add(o.soft_pin)
        } else {
            0
        };
        let (pinned, hard) = (o.soft_pin != 0, o.hard_pin);
        if pinned {
            self.soft_pinned += 1;
        }
        // Hard-pinned objects are never evicted, so they stay off the LRU list for good.
        self.objects
            .push_tail(if hard { ListId::None } else { ListId::Lru }, idx);
        Ok(())
    }

    /// Abandons puts this client started: ranges freed, keys absent again.
    pub fn put_revoke(&mut self, client: ClientId, items: &[(String, ObjectId)]) -> Vec<i32> {
        let now = self.now();
        self.clients.touch(client, now);
        items
            .iter()
            .map(|(key, id)| match self.own_put(client, key, *id) {
                Ok(idx) => {
                    self.drop_object(idx);
                    0
                }
                Err(e) => e.as_i32(),
            })
            .collect()
    }
}
