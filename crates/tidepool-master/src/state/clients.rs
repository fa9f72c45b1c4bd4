//! Registered clients and their liveness.
//!
//! Every client, including pure clients without a segment, heartbeats (W1), because in-flight
//! puts belong to their writer's liveness: when a client is declared dead its segments and its
//! in-flight puts go with it (done by `MasterState`, which owns the other tables).

use hashbrown::HashMap;
use tidepool_common::{ClientId, SegmentId};

/// One registered client.
#[derive(Debug)]
pub struct Client {
    /// Human name (segment name or a generated one).
    pub name: Box<str>,
    /// Host part of its segment name, for same-node placement.
    pub host: Box<str>,
    /// Kernel boot id of its host, for same-host replica ordering.
    pub host_id: Box<str>,
    /// Last sign of life.
    pub last_seen_ms: u64,
    /// Segments it mounted (few, so a Vec).
    pub segments: Vec<SegmentId>,
}

/// All clients.
pub struct ClientTable {
    map: HashMap<ClientId, Client>,
    next: u64,
}

impl ClientTable {
    /// An empty table whose ids derive from `epoch`, so a restarted master does not hand out
    /// the id a surviving client still holds from its predecessor.
    pub fn new(epoch: u64) -> Self {
        ClientTable {
            map: HashMap::new(),
            next: ((epoch & 0xFFFF_FFFF) << 32) | 1,
        }
    }

    /// Registers a client, keeping `resume` if it is still known under the same name and host.
    pub fn register(
        &mut self,
        name: &str,
        host: &str,
        host_id: &str,
        resume: Option<ClientId>,
        now: u64,
    ) -> ClientId {
        if let Some(id) = resume
            && let Some(c) = self.map.get_mut(&id)
            && &*c.name == name
            && &*c.host_id == host_id
        {
            c.host = host.into();
            c.last_seen_ms = now;
            return id;
        }
        let id = ClientId(self.next);
        self.next += 1;
        self.map.insert(
            id,
            Client {
                name: name.into(),
                host: host.into(),
                host_id: host_id.into(),
                last_seen_ms: now,
                segments: Vec::new(),
            },
        );
        id
    }

    /// The client, if known.
    pub fn get(&self, id: ClientId) -> Option<&Client> {
        self.map.get(&id)
    }

    /// The client, mutably.
    pub fn get_mut(&mut self, id: ClientId) -> Option<&mut Client> {
        self.map.get_mut(&id)
    }

    /// Records a sign of life; false if unknown.
    pub fn touch(&mut self, id: ClientId, now: u64) -> bool {
        match self.map.get_mut(&id) {
            Some(c) => {
                c.last_seen_ms = c.last_seen_ms.max(now);
                true
            }
            None => false,
        }
    }

    /// Forgets a client.
    pub fn remove(&mut self, id: ClientId) -> Option<Client> {
        self.map.remove(&id)
    }

    /// Clients silent for at least `ttl_ms`.
    pub fn silent(&self, now: u64, ttl_ms: u64) -> Vec<ClientId> {
        self.map
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last_seen_ms) >= ttl_ms)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Number of known clients.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no client is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
