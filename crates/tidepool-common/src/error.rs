//! The public error: a compatibility code, a message for humans, and nothing that cannot cross
//! a process boundary (errors travel over RPC as `(code, message)` and are rebuilt here).

use crate::code::{ErrorCode, ErrorKind};
use std::fmt;

/// A failure with its Mooncake-compatible code and a lowercase message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    msg: String,
}

/// Result with the public [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Creates an error with `code` and a message (lowercase, variables at the end as `key=value`).
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    /// The compatibility code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What the caller should do.
    pub fn kind(&self) -> ErrorKind {
        self.code.kind()
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.msg
    }

    /// Shorthand for [`ErrorCode::InvalidParams`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, msg)
    }

    /// Shorthand for [`ErrorCode::InternalError`].
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, msg)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.name(),
            self.code.as_i32(),
            self.msg
        )
    }
}

impl std::error::Error for Error {}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        Self {
            code,
            msg: code.name().to_ascii_lowercase().replace('_', " "),
        }
    }
}
