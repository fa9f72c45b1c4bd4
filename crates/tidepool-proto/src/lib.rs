//! Tidepool's wire formats. No I/O policy lives here: only what the bytes mean.
//!
//! # Layout
//! - [`frame`]: the one framing used on every Tidepool TCP and Unix socket: a fixed 32-byte
//!   header (magic, version, kind, request id, metadata length, payload length), a postcard
//!   encoded message, then raw payload bytes that the receiver may read straight into place.
//! - [`master`]: client <-> master RPC messages.
//! - [`data`]: client <-> segment owner data-plane messages.
//! - [`thin`]: thin client <-> real client (`tidepool node`) messages of standalone mode.
//! - [`types`]: descriptors shared by both (replicas, segments, replicate config).
//! - [`wait`]: waiting for the next frame with a bounded busy-poll (small-op latency).
//! - [`blocking`]: blocking sockets for calls a caller drives from its own thread.
//! - [`mailbox`]: a same-host client's master requests through shared memory.
//!
//! # Versioning (W19)
//! Every frame carries [`PROTOCOL_VERSION`]. A peer accepts frames whose version lies in
//! [`MIN_COMPATIBLE_VERSION`, `PROTOCOL_VERSION`]; the master's `Hello` answer names both sides'
//! ranges, so a mismatch is reported once at setup as -300 instead of failing every call.

pub mod blocking;
pub mod data;
pub mod frame;
pub mod mailbox;
pub mod master;
pub mod thin;
pub mod types;
pub mod wait;

pub use frame::{FrameError, FrameHeader, FrameKind};
pub use types::*;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest peer version this build still understands.
pub const MIN_COMPATIBLE_VERSION: u16 = 1;
