//! Status codes: the `u16` a Response carries, plus the two that are only ever reported locally.
//!
//! The numbers are part of the wire format (see `PROTOCOL.md`, "Status codes"). A code this
//! version does not name is kept as [`Status::Other`], never rejected.

use std::fmt;

/// The outcome of a call.
///
/// [`Status::Other`] holds only codes without a name here: build a `Status` from a number with
/// [`Status::from_code`] (or `From<u16>`), which never yields `Other(n)` for a named code, so
/// that equal codes compare equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Status {
    /// 0: success; the body is the reply message in the request's codec.
    #[default]
    Ok,
    /// 1: no service of that name is registered on the callee.
    UnknownService,
    /// 2: the service exists but has no method of that name.
    UnknownMethod,
    /// 3: the request body did not decode as the method's request message.
    BadRequest,
    /// 4: the handler ran and returned its own error; the body is its message.
    HandlerError,
    /// 5: too many requests in flight on this connection; the handler did not run.
    Overloaded,
    /// 6: the callee gave up because the caller's time budget ran out.
    DeadlineExceeded,
    /// 7: the callee stopped the request before it completed (a Cancel, or its own shutdown).
    Cancelled,
    /// 8: the callee does not support the request's codec.
    UnsupportedCodec,
    /// 9: the callee failed for a reason that is not the handler's (it panicked, or the reply
    /// did not encode).
    Internal,
    /// 10: local only, never sent: the connection closed while the call was pending.
    ConnectionClosed,
    /// 11: local only, never sent: the caller's own timeout fired before a reply arrived.
    Timeout,
    /// 12: the callee refused the call because it did not carry valid credentials (an
    /// authentication layer); the handler did not run.
    Unauthenticated,
    /// A code this version does not name, kept as received.
    Other(u16),
}

impl Status {
    /// The status for a wire code; unnamed codes become [`Status::Other`].
    pub const fn from_code(code: u16) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::UnknownService,
            2 => Status::UnknownMethod,
            3 => Status::BadRequest,
            4 => Status::HandlerError,
            5 => Status::Overloaded,
            6 => Status::DeadlineExceeded,
            7 => Status::Cancelled,
            8 => Status::UnsupportedCodec,
            9 => Status::Internal,
            10 => Status::ConnectionClosed,
            11 => Status::Timeout,
            12 => Status::Unauthenticated,
            n => Status::Other(n),
        }
    }

    /// The wire code.
    pub const fn code(self) -> u16 {
        match self {
            Status::Ok => 0,
            Status::UnknownService => 1,
            Status::UnknownMethod => 2,
            Status::BadRequest => 3,
            Status::HandlerError => 4,
            Status::Overloaded => 5,
            Status::DeadlineExceeded => 6,
            Status::Cancelled => 7,
            Status::UnsupportedCodec => 8,
            Status::Internal => 9,
            Status::ConnectionClosed => 10,
            Status::Timeout => 11,
            Status::Unauthenticated => 12,
            Status::Other(n) => n,
        }
    }

    /// The name used in `PROTOCOL.md` and in messages, e.g. `UNKNOWN_METHOD`; `OTHER` for
    /// unnamed codes.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::UnknownService => "UNKNOWN_SERVICE",
            Status::UnknownMethod => "UNKNOWN_METHOD",
            Status::BadRequest => "BAD_REQUEST",
            Status::HandlerError => "HANDLER_ERROR",
            Status::Overloaded => "OVERLOADED",
            Status::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Status::Cancelled => "CANCELLED",
            Status::UnsupportedCodec => "UNSUPPORTED_CODEC",
            Status::Internal => "INTERNAL",
            Status::ConnectionClosed => "CONNECTION_CLOSED",
            Status::Timeout => "TIMEOUT",
            Status::Unauthenticated => "UNAUTHENTICATED",
            Status::Other(_) => "OTHER",
        }
    }

    /// True for [`Status::Ok`] only.
    pub const fn is_ok(self) -> bool {
        matches!(self, Status::Ok)
    }

    /// True for the codes that are reported locally and never sent on the wire
    /// ([`Status::ConnectionClosed`], [`Status::Timeout`]).
    pub const fn is_local(self) -> bool {
        matches!(self, Status::ConnectionClosed | Status::Timeout)
    }
}

impl From<u16> for Status {
    fn from(code: u16) -> Status {
        Status::from_code(code)
    }
}

impl From<Status> for u16 {
    fn from(s: Status) -> u16 {
        s.code()
    }
}

impl fmt::Display for Status {
    /// `UNKNOWN_METHOD (2)`, or `status 4711` for an unnamed code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Other(n) => write!(f, "status {n}"),
            s => write!(f, "{} ({})", s.name(), s.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for code in 0..=u16::MAX {
            let s = Status::from_code(code);
            assert_eq!(s.code(), code);
            assert_eq!(Status::from(u16::from(s)), s);
            assert_eq!(matches!(s, Status::Other(_)), code > 12, "code {code}");
        }
    }

    #[test]
    fn names_and_display() {
        assert_eq!(Status::Ok.name(), "OK");
        assert_eq!(Status::UnknownMethod.to_string(), "UNKNOWN_METHOD (2)");
        assert_eq!(Status::Other(4711).to_string(), "status 4711");
        assert!(Status::Ok.is_ok() && !Status::Internal.is_ok());
        assert!(Status::Timeout.is_local() && Status::ConnectionClosed.is_local());
        assert!(!Status::Cancelled.is_local());
        assert_eq!(Status::default(), Status::Ok);
    }
}
