//! Typed errors: each variant says what went wrong and, where it matters, on which session.

use std::io;
use std::time::Duration;

/// An error raised by a [`Reader`](crate::Reader) or [`Writer`](crate::Writer).
///
/// Boxed so that user codecs can carry any error type without making every session generic over it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(#[source] pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl CodecError {
    /// An error from a plain message.
    pub fn msg(msg: impl Into<String>) -> Self {
        CodecError(msg.into().into())
    }

    /// Wraps any error type.
    pub fn new(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        CodecError(Box::new(err))
    }
}

impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        CodecError::new(e)
    }
}

/// Every error getty-core reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("session {0} is closed")]
    SessionClosed(u64),
    #[error("session {session} closed: {reason}")]
    Closed { session: u64, reason: String },
    #[error("session {session}: package of {len} bytes exceeds the max message length {max}")]
    TooLong {
        session: u64,
        len: usize,
        max: usize,
    },
    #[error("session {session}: decode failed: {source}")]
    Decode {
        session: u64,
        #[source]
        source: CodecError,
    },
    #[error("session {session}: encode failed: {source}")]
    Encode {
        session: u64,
        #[source]
        source: CodecError,
    },
    #[error("session {session}: reader returned {reason}")]
    BadReader { session: u64, reason: &'static str },
    #[error("session {session}: write did not complete within {timeout:?}")]
    WriteTimeout { session: u64, timeout: Duration },
    #[error("session {session}: the write queue is full")]
    QueueFull { session: u64 },
    #[error(
        "session {session}: a partial package stalled for longer than the read timeout {timeout:?}"
    )]
    ReadTimeout { session: u64, timeout: Duration },
    #[error(
        "session {session}: a partial package needs {want} bytes of buffer, more than the server's whole partial-package budget of {budget} bytes"
    )]
    PartialBudget {
        session: u64,
        want: usize,
        budget: usize,
    },
    #[error("session {session}: a write needs a peer address on an unconnected UDP endpoint")]
    NoPeerAddr { session: u64 },
    #[error("session {session}: {what} panicked: {message}")]
    Panicked {
        session: u64,
        what: &'static str,
        message: String,
    },
    #[error("session {session}: I/O error: {source}")]
    Io {
        session: u64,
        #[source]
        source: io::Error,
    },
    #[error("session {session}: rejected by {by}: {reason}")]
    Rejected {
        session: u64,
        by: &'static str,
        reason: String,
    },
    #[error("session {session}: {what} is not configured")]
    NotConfigured { session: u64, what: &'static str },
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("connect {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("connect {addr}: gave up after {attempts} failed attempts: {last}")]
    ReconnectExhausted {
        addr: String,
        attempts: u32,
        last: String,
    },
    #[error("{what}: endpoint is closed")]
    EndpointClosed { what: &'static str },
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("WebSocket: {0}")]
    WebSocket(String),
}

impl Error {
    /// A close that nobody needs to hear about (EOF, local close) is not an error; this helps
    /// code that wants to treat "peer went away" separately from real failures.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::SessionClosed(_) | Error::EndpointClosed { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
