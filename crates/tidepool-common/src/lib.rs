//! Shared vocabulary of Tidepool.
//!
//! # Layout
//! - [`code`]: the Mooncake-compatible integer error codes and the coarse [`ErrorKind`]s behind them.
//! - [`error`]: the one public [`Error`] type that crosses crate and process boundaries as `(code, message)`.
//! - [`ids`]: identifiers of clients, segments, objects and their incarnations.
//! - [`parse`]: the human grammars for sizes, durations and booleans (contract §5.2).
//! - [`metrics`]: counters and histograms with Prometheus text output.
//! - [`clock`]: time behind a trait, so leases and liveness can be tested without sleeping.

pub mod clock;
pub mod code;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod parse;

pub use clock::{Clock, MockClock, SystemClock};
pub use code::{ErrorCode, ErrorKind};
pub use error::{Error, Result};
pub use ids::{ClientId, Incarnation, ObjectId, SegmentId};
pub use parse::{parse_bool, parse_duration_ms, parse_size};
