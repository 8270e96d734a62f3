//! The error a call ends with: a status code and a message, whether it came from the other
//! peer (a Response with a non-zero status) or was decided locally (timeout, closed connection).

use std::fmt;

use crate::status::Status;

/// A failed call. `status` tells the caller what kind of failure it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RpcError {
    pub status: Status,
    pub message: String,
    /// The status came in a Response from the other peer rather than being decided here: a
    /// peer may send any code, even a local-only one such as `CONNECTION_CLOSED`, and that
    /// must not be mistaken for this connection closing (PROTOCOL.md section 8).
    from_peer: bool,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.name(),
            self.status.code(),
            self.message
        )
    }
}

impl RpcError {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        RpcError {
            status,
            message: message.into(),
            from_peer: false,
        }
    }
    /// The error a Response with a non-zero status carried.
    pub fn from_peer(status: Status, message: impl Into<String>) -> Self {
        RpcError {
            from_peer: true,
            ..Self::new(status, message)
        }
    }
    /// Whether the other peer sent this status (see [`RpcError::from_peer`]); false for what
    /// this side decided (timeout, closed connection, a reply that did not decode).
    pub fn is_from_peer(&self) -> bool {
        self.from_peer
    }
    /// The handler's own failure: what a service returns for "your request was fine, but no".
    pub fn handler(message: impl Into<String>) -> Self {
        Self::new(Status::HandlerError, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Status::Internal, message)
    }
    pub fn closed(message: impl Into<String>) -> Self {
        Self::new(Status::ConnectionClosed, message)
    }
    pub fn status(&self) -> Status {
        self.status
    }
}

impl From<getty_core::Error> for RpcError {
    fn from(e: getty_core::Error) -> Self {
        match e {
            getty_core::Error::SessionClosed(_) => RpcError::closed(e.to_string()),
            getty_core::Error::WriteTimeout { .. } => RpcError::new(Status::Timeout, e.to_string()),
            getty_core::Error::QueueFull { .. } => RpcError::new(Status::Overloaded, e.to_string()),
            other => RpcError::internal(other.to_string()),
        }
    }
}

pub type Result<T, E = RpcError> = std::result::Result<T, E>;
