//! The master's synchronous state machine: clients, segments, objects, allocation, leases,
//! pinning, eviction and liveness (contract §3). No I/O and no locks: the RPC layer holds one
//! [`MasterState`] under a mutex, feeds it requests, and calls [`MasterState::tick`] every
//! 20 ms. Time comes from a [`Clock`], so every rule is tested with a mock clock.
//!
//! # Layout
//! - [`allocator`]: free-range map of one segment (best fit, coalescing, aligned ranges).
//! - [`segments`]: mounted segments and cluster byte totals.
//! - [`clients`]: registered clients and liveness.
//! - [`objects`]: the object slab, key index and intrusive LRU / in-flight lists.
//! - [`placement`]: which segments get a new object's replicas.
//! - `puts.rs`: put start / end / revoke. `reads.rs`: lookups, existence, removal.
//! - [`removal`]: removed objects' ranges held until their owners dropped them.
//! - `restore.rs`: the index rebuilt from a re-mounting owner's directory (W5).
//! - [`eviction`]: proactive (watermark) and reactive (allocation failure) eviction.
//!
//! Invariants: every range reserved in a live segment belongs to exactly one replica of one
//! object; an object is in flight (all replicas PROCESSING, on the in-flight list), or
//! readable (all replicas COMPLETE on live segments); an object left without replicas is
//! removed at once. Unmounting is synchronous, so a readable object never points at a dead
//! segment. Client input never panics the state: bad transitions return codes.

pub mod allocator;
pub mod clients;
pub mod eviction;
pub mod objects;
pub mod placement;
mod puts;
mod reads;
pub mod removal;
mod restore;
pub mod segments;

#[cfg(test)]
mod tests;

use crate::settings::MasterSettings;
use clients::ClientTable;
use objects::{ListId, Object, ObjectTable};
use placement::Rng;
use segments::SegmentTable;
use std::sync::Arc;
use tidepool_common::{ClientId, Clock, ErrorCode, SegmentId};
use tidepool_proto::master::MasterStats;
use tidepool_proto::types::{SegmentSpec, SegmentView};

/// Called with the name of a segment that went away.
pub type SegmentGoneHook = Box<dyn FnMut(&str) + Send>;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 4096;

/// How often (at most) `tick` scans clients for silence; bounds detection delay after the TTL.
const CLIENT_SCAN_INTERVAL_MS: u64 = 100;

/// The master's whole mutable state. See the module docs.
pub struct MasterState {
    settings: MasterSettings,
    clock: Arc<dyn Clock>,
    epoch: u64,
    clients: ClientTable,
    segments: SegmentTable,
    objects: ObjectTable,
    rng: Rng,
    /// Next object sequence number within this epoch.
    next_seq: u64,
    /// Counters (the gauge fields are filled in by [`MasterState::stats`]).
    counters: MasterStats,
    /// Readable objects committed with a soft pin whose expiry has not been noticed yet.
    soft_pinned: u64,
    /// Bytes the next tick must evict after an allocation failure (contract §3.6 reactive rule).
    pending_evict_bytes: u64,
    /// When `tick` next scans clients for silence.
    next_client_scan_ms: u64,
    /// Told the name of every segment that goes away (unmount, owner death), so the embedded
    /// metadata server drops its `ram/` and `rpc_meta/` entries.
    on_segment_gone: Option<SegmentGoneHook>,
}

/// Validates a key: empty -> -600, longer than [`MAX_KEY_LEN`] -> -400.
fn check_key(key: &str) -> Result<(), ErrorCode> {
    if key.is_empty() {
        Err(ErrorCode::InvalidParams)
    } else if key.len() > MAX_KEY_LEN {
        Err(ErrorCode::InvalidKey)
    } else {
        Ok(())
    }
}

impl MasterState {
    /// A fresh state for a master of `epoch` (which must differ from every earlier master's).
    pub fn new(settings: MasterSettings, clock: Arc<dyn Clock>, epoch: u64) -> Self {
        MasterState {
            settings,
            clock,
            epoch,
            clients: ClientTable::new(epoch),
            segments: SegmentTable::new(epoch),
            objects: ObjectTable::new(),
            rng: Rng::new(epoch),
            next_seq: 1,
            counters: MasterStats::default(),
            soft_pinned: 0,
            pending_evict_bytes: 0,
            next_client_scan_ms: 0,
            on_segment_gone: None,
        }
    }

    /// Installs the hook told about every segment that goes away.
    pub fn set_segment_gone_hook(&mut self, hook: impl FnMut(&str) + Send + 'static) {
        self.on_segment_gone = Some(Box::new(hook));
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &MasterSettings {
        &self.settings
    }

    /// The master epoch stamped on every object id and allocation.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    // ----- clients -----

    /// Registers a client (or re-registers it, keeping `resume` if the master still knows that
    /// id under the same name and host id). Registration counts as a heartbeat.
    pub fn register_client(
        &mut self,
        name: &str,
        host: &str,
        host_id: &str,
        resume: Option<ClientId>,
    ) -> ClientId {
        let now = self.now();
        self.clients.register(name, host, host_id, resume, now)
    }

    /// Records a heartbeat. `false`: the client is unknown (never registered or declared dead)
    /// and must register and mount again.
    pub fn heartbeat(&mut self, client: ClientId) -> bool {
        let now = self.now();
        self.clients.touch(client, now)
    }

    /// Clean close: unmounts the client's segments (their objects vanish at once), revokes its
    /// in-flight puts, and forgets it. Unknown clients are ignored.
    pub fn close_client(&mut self, client: ClientId) {
        self.forget_client(client);
    }

    /// Shared by close and death.
    fn forget_client(&mut self, client: ClientId) {
        let Some(c) = self.clients.remove(client) else {
            return;
        };
        for seg in c.segments {
            if let Some(idx) = self.segments.index_of(seg) {
                self.drop_segment(idx);
            }
        }
        // Every put this client started, wherever its ranges are (W1). The in-flight list is
        // as long as the number of puts in progress, so this walk is short.
        let mut cur = self.objects.head(ListId::InFlight);
        let mut victims = Vec::new();
        while let Some(i) = cur {
            if self.objects.get(i).writer == client {
                victims.push(i);
            }
            cur = self.objects.next_of(i);
        }
        self.counters.revoked_by_liveness += victims.len() as u64;
        for i in victims {
            self.drop_object(i);
        }
    }

    // ----- segments -----

    /// Mounts a segment. A segment of the same name that is still mounted is replaced (its
    /// objects dropped), unless it is the same client and incarnation (idempotent retry).
    pub fn mount_segment(
        &mut self,
        client: ClientId,
        spec: SegmentSpec,
    ) -> Result<SegmentId, ErrorCode> {
        let now = self.now();
        if !self.clients.touch(client, now) {
            return Err(ErrorCode::ClientNotFound);
        }
        if spec.size == 0 || spec.name.is_empty() || spec.base_addr.checked_add(spec.size).is_none()
        {
            return Err(ErrorCode::InvalidParams);
        }
        if let Some(old) = self.segments.index_by_name(&spec.name) {
            if let Some(s) = self.segments.get(old)
                && s.client == client
                && s.spec.incarnation == spec.incarnation
            {
                return Ok(s.id);
            }
            self.unmount_idx(old);
        }
        let (id, _) = self.segments.mount(client, spec);
        if let Some(c) = self.clients.get_mut(client) {
            c.segments.push(id);
        }
        Ok(id)
    }

    /// [`MasterState::mount_segment`], then the segment's directory restored as readable
    /// objects (`restore.rs`) before any put can be placed there; returns the id and how many
    /// replicas came back.
    pub fn mount_restoring(
        &mut self,
        client: ClientId,
        spec: SegmentSpec,
        seals: &[tidepool_proto::data::Seal],
    ) -> Result<(SegmentId, u64), ErrorCode> {
        let id = self.mount_segment(client, spec)?;
        let restored = match self.segments.index_of(id) {
            Some(idx) => self.restore_into(idx, seals),
            None => 0,
        };
        Ok((id, restored))
    }

    /// Unmounts a segment synchronously: objects that lived only there are absent on return.
    pub fn unmount_segment(&mut self, client: ClientId, seg: SegmentId) -> Result<(), ErrorCode> {
        let idx = self
            .segments
            .index_of(seg)
            .ok_or(ErrorCode::SegmentNotFound)?;
        let owner = self.segments.get(idx).map(|s| s.client);
        if owner != Some(client) {
            return Err(ErrorCode::IllegalClient);
        }
        let now = self.now();
        self.clients.touch(client, now);
        self.unmount_idx(idx);
        Ok(())
    }

    /// Unmounts slot `idx` and detaches it from its owner.
    fn unmount_idx(&mut self, idx: u32) {
        let Some(s) = self.segments.get(idx) else {
            return;
        };
        let (owner, id) = (s.client, s.id);
        if let Some(c) = self.clients.get_mut(owner) {
            c.segments.retain(|&x| x != id);
        }
        self.drop_segment(idx);
    }

    /// Removes segment `idx` and every replica in it; objects left with none are removed (in
    /// flight ones too: their writer's put_end then gets -704).
    ///
    /// This scans the object slab once: unmounts are rare, and a reverse index would cost
    /// memory on every object (W17). At 1M objects the scan takes a few milliseconds.
    fn drop_segment(&mut self, idx: u32) {
        let Some(gone) = self.segments.unmount(idx) else {
            return;
        };
        if let Some(hook) = self.on_segment_gone.as_mut() {
            hook(&gone.spec.name);
        }
        for i in self.objects.indices() {
            let o = self.objects.get(i);
            if !o.replicas.as_slice().iter().any(|r| r.seg == idx) {
                continue;
            }
            let kept: Vec<_> = o
                .replicas
                .as_slice()
                .iter()
                .copied()
                .filter(|r| r.seg != idx)
                .collect();
            if kept.is_empty() {
                self.drop_object(i);
            } else {
                self.objects.get_mut(i).replicas = objects::Replicas::from_vec(kept);
            }
        }
    }

    /// Segments by id; unknown ids are omitted.
    pub fn describe_segments(&self, ids: &[SegmentId]) -> Vec<SegmentView> {
        ids.iter()
            .filter_map(|&id| self.segments.index_of(id))
            .filter_map(|i| self.segments.get(i))
            .map(|s| s.view())
            .collect()
    }

    /// Every mounted segment, by id.
    pub fn list_segments(&self) -> Vec<SegmentView> {
        let mut v = self.segments.views();
        v.sort_by_key(|s| s.id);
        v
    }

    /// `(name, used, capacity)` of every mounted segment, by id.
    pub fn segment_usage(&self) -> Vec<(String, u64, u64)> {
        self.list_segments()
            .into_iter()
            .map(|v| (v.spec.name, v.used, v.spec.size))
            .collect()
    }

    // ----- objects: shared helpers -----

    /// Removes object `idx`, returning its ranges to their segments.
    fn drop_object(&mut self, idx: u32) -> Object {
        let o = self.unlink_object(idx);
        for r in o.replicas.as_slice() {
            self.segments.free(r.seg, r.off, o.size);
        }
        o
    }

    /// Removes object `idx` from the slab and its lists; its ranges stay reserved.
    fn unlink_object(&mut self, idx: u32) -> Object {
        let o = self.objects.remove(idx);
        if !o.in_flight && o.soft_pin != 0 {
            self.soft_pinned = self.soft_pinned.saturating_sub(1);
        }
        o
    }

    /// Every key (readable and in flight).
    pub fn all_keys(&self) -> Vec<String> {
        self.objects.iter().map(|o| o.key.to_string()).collect()
    }

    /// Gauges and counters.
    pub fn stats(&self) -> MasterStats {
        MasterStats {
            key_count: self.objects.len() as u64,
            soft_pin_key_count: self.soft_pinned,
            allocated_bytes: self.segments.used(),
            capacity_bytes: self.segments.capacity(),
            active_clients: self.clients.len() as u64,
            segments: self.segments.live().len() as u64,
            ..self.counters.clone()
        }
    }

    /// Periodic work: reaps silent clients, revokes puts past `put_start_release_timeout_ms`,
    /// and evicts (proactive watermark and pending reactive target). Cheap when idle.
    pub fn tick(&mut self) {
        let now = self.now();
        if now >= self.next_client_scan_ms {
            self.next_client_scan_ms = now
                + CLIENT_SCAN_INTERVAL_MS
                    .min(self.settings.client_ttl_ms / 4)
                    .max(1);
            for dead in self.clients.silent(now, self.settings.client_ttl_ms) {
                self.counters.dead_clients += 1;
                self.forget_client(dead);
            }
        }
        // The in-flight list is ordered by start time: only its head can be due.
        let release = self.settings.put_start_release_timeout_ms;
        while let Some(i) = self.objects.head(ListId::InFlight) {
            if now.saturating_sub(self.objects.get(i).stamp_ms) < release {
                break;
            }
            self.counters.put_releases += 1;
            self.drop_object(i);
        }
        self.evict_in_tick(now);
    }
}
