//! Tidepool's transfer engine: moves bytes between registered memory regions of processes.
//!
//! # Layout
//! - [`config`]: [`EngineConfig`], the knobs of one engine.
//! - [`copy`]: the byte copy of same-host and in-process transfers (memmove, except for the
//!   one layout where it is slow).
//! - [`engine`]: [`TransferEngine`], the public handle: registration, transport selection per
//!   call, batched `write`/`read`/`ping`, peer forgetting and statistics.
//! - `memory`: segments ([`LocalSegment`], memfd-backed), the registry of every region a remote
//!   peer may touch, and the few audited helpers that turn validated addresses into slices.
//! - `owner`: the owner side of the data plane (validation against the registry, epoch fencing,
//!   the sealed-replica directory), shared by the TCP server and the in-process transport.
//! - `sealring`: the shared-memory rings in which same-host writers leave their seals for the
//!   owner's directory instead of asking for each one.
//! - `server`: the TCP data server and the Unix socket that hands out segment fds.
//! - [`shmem`]: sealed memfd mappings ([`SharedMemory`]) and fd passing over Unix sockets,
//!   shared by segments, the shm transport and the thin-client channel of standalone mode.
//! - `transport`: the internal `Transport` trait and one file per transport
//!   (`local.rs`, `shm.rs`, `tcp.rs`).
//! - [`stats`]: [`TransferStats`] counters.
//!
//! # Completion and registration model
//! A `write` returns only once the owner has the bytes in place (W12): over TCP after the
//! owner's acknowledgement, through shared memory or in-process after the copy itself. Every
//! region a peer may address is a registry entry that carries its memory kind; a later RDMA
//! transport attaches its memory-region keys to those entries and completes a batch when its
//! work completions arrive, behind the same `Transport` trait.

#![deny(missing_docs)]

pub mod config;
pub mod copy;
pub mod engine;
mod join;
mod memory;
mod owner;
mod sealring;
mod server;
pub mod shmem;
pub mod stats;
mod transport;
mod wire;

pub use config::EngineConfig;
pub use engine::{ReadOp, Target, TransferEngine, WriteOp};
pub use memory::LocalSegment;
pub use shmem::SharedMemory;
pub use stats::TransferStats;
