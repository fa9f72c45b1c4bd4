//! Lookups, existence checks and removal (contract §3.3, §3.4), with their read leases.
//!
//! Batch order: a batch grants its leases last key first, so that within one batch (one
//! instant) the first keys end up warmest and are evicted last. A KV-cache engine asks for a
//! request's blocks in prefix order, and a block is only worth anything while every block before
//! it is cached too: losing the deepest blocks first keeps the most prefixes whole. Commits do
//! the same (`put_end`). Across instants the order stays by time.

use super::objects::ListId;
use super::removal::Removal;
use super::{MasterState, check_key};
use regex::Regex;
use tidepool_common::{ClientId, ErrorCode};
use tidepool_proto::types::{MemoryReplica, ObjectView, ReplicaDesc, ReplicaKind, ReplicaStatus};

impl MasterState {
    /// Grants (extends, never shortens) a read lease on readable object `idx` and moves it to
    /// the warm end of the `Read` list (eviction order: its lease deadline).
    fn grant_lease(&mut self, idx: u32, now: u64) {
        let ttl = self.settings.default_kv_lease_ttl_ms;
        let o = self.objects.get_mut(idx);
        o.lease_deadline = o.lease_deadline.max(now.saturating_add(ttl));
        if o.list != ListId::None {
            self.objects.push_tail(ListId::Read, idx);
        }
    }

    /// Builds the view of object `idx`: replicas ordered by `rank` (lower first).
    fn view(&self, idx: u32, lease_ttl_ms: u64, rank: impl Fn(u32) -> u8) -> ObjectView {
        let o = self.objects.get(idx);
        let status = if o.in_flight {
            ReplicaStatus::Processing
        } else {
            ReplicaStatus::Complete
        };
        let mut reps: Vec<(u8, ReplicaDesc)> = o
            .replicas
            .as_slice()
            .iter()
            .filter_map(|r| {
                let s = self.segments.get(r.seg)?;
                let m = MemoryReplica {
                    segment: s.id,
                    addr: s.spec.base_addr + r.off,
                    len: o.size,
                };
                Some((
                    rank(r.seg),
                    ReplicaDesc {
                        kind: ReplicaKind::Memory(m),
                        status,
                    },
                ))
            })
            .collect();
        reps.sort_by_key(|(k, _)| *k);
        ObjectView {
            object_id: o.id,
            size: o.size,
            replicas: reps.into_iter().map(|(_, d)| d).collect(),
            lease_ttl_ms,
        }
    }

    /// Looks objects up for reading. Readable: COMPLETE replicas, the caller's own segments
    /// first, then its host's, then the rest; grants a lease. In flight -> -703; absent -> -704.
    pub fn get_replicas<K: AsRef<str>>(
        &mut self,
        client: ClientId,
        keys: &[K],
    ) -> Vec<Result<ObjectView, ErrorCode>> {
        let now = self.now();
        self.clients.touch(client, now);
        let host_id = self
            .clients
            .get(client)
            .map(|c| c.host_id.clone())
            .unwrap_or_default();
        let ttl = self.settings.default_kv_lease_ttl_ms;
        // Last key first: see the module docs (batch order).
        let mut out: Vec<_> = keys
            .iter()
            .rev()
            .map(|key| {
                let key = key.as_ref();
                check_key(key)?;
                self.counters.get_total += 1;
                let idx = self.objects.find(key).ok_or(ErrorCode::ObjectNotFound)?;
                if self.objects.get(idx).in_flight {
                    return Err(ErrorCode::ReplicaIsNotReady);
                }
                self.counters.get_hits += 1;
                self.grant_lease(idx, now);
                let segs = &self.segments;
                Ok(self.view(idx, ttl, |seg| match segs.get(seg) {
                    Some(s) if s.client == client => 0,
                    Some(s) if !host_id.is_empty() && *s.spec.host_id == *host_id => 1,
                    _ => 2,
                }))
            })
            .collect();
        out.reverse();
        out
    }

    /// Existence: 1 readable (grants a lease), 0 absent or in flight, negative for a bad key.
    pub fn exist<K: AsRef<str>>(&mut self, keys: &[K]) -> Vec<i32> {
        let now = self.now();
        // Last key first: see the module docs (batch order).
        let mut out: Vec<i32> = keys
            .iter()
            .rev()
            .map(|key| {
                let key = key.as_ref();
                if let Err(e) = check_key(key) {
                    return e.as_i32();
                }
                match self.objects.find(key) {
                    Some(idx) if !self.objects.get(idx).in_flight => {
                        self.grant_lease(idx, now);
                        1
                    }
                    _ => 0,
                }
            })
            .collect();
        out.reverse();
        out
    }

    /// Removes objects: 0; -704 absent; -703 in flight (even forced); -706 leased unless `force`.
    /// The removed objects' ranges stay reserved in the returned [`Removal`] until their owners
    /// dropped them (see `removal.rs`).
    pub fn remove(&mut self, keys: &[String], force: bool) -> (Vec<i32>, Removal) {
        let now = self.now();
        let mut removal = Removal::default();
        let codes = keys
            .iter()
            .map(|key| {
                if let Err(e) = check_key(key) {
                    return e.as_i32();
                }
                let Some(idx) = self.objects.find(key) else {
                    return ErrorCode::ObjectNotFound.as_i32();
                };
                let o = self.objects.get(idx);
                if o.in_flight {
                    return ErrorCode::ReplicaIsNotReady.as_i32();
                }
                if !force && o.lease_deadline > now {
                    return ErrorCode::ObjectHasLease.as_i32();
                }
                self.bury_object(idx, &mut removal);
                0
            })
            .collect();
        (codes, removal)
    }

    /// Removes every readable object whose key passes `filter`, skipping leased ones unless
    /// `force`; returns the count (ranges held as in [`MasterState::remove`]).
    fn remove_where(&mut self, force: bool, filter: impl Fn(&str) -> bool) -> (u64, Removal) {
        let now = self.now();
        let mut removal = Removal::default();
        let mut n = 0;
        for idx in self.objects.indices() {
            let o = self.objects.get(idx);
            if o.in_flight || (!force && o.lease_deadline > now) || !filter(&o.key) {
                continue;
            }
            self.bury_object(idx, &mut removal);
            n += 1;
        }
        (n, removal)
    }

    /// Removes every object of the cluster (skip rules as [`MasterState::remove_where`]).
    pub fn remove_all(&mut self, force: bool) -> (u64, Removal) {
        self.remove_where(force, |_| true)
    }

    /// Removes objects whose key contains a match of `re` (search, not full match).
    pub fn remove_by_regex(&mut self, re: &Regex, force: bool) -> (u64, Removal) {
        self.remove_where(force, |k| re.is_match(k))
    }

    /// Every replica of a key, in flight included, with no lease side effect; -704 absent.
    pub fn query_key(&self, key: &str) -> Result<ObjectView, ErrorCode> {
        check_key(key)?;
        let idx = self.objects.find(key).ok_or(ErrorCode::ObjectNotFound)?;
        Ok(self.view(idx, 0, |_| 0))
    }
}
