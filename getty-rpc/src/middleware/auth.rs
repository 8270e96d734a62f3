//! Bearer-token authentication: the same layer adds the token to the calls an endpoint makes
//! and checks it on the calls it serves, refusing a call without it with `UNAUTHENTICATED`
//! (the handler never runs, the connection stays up).
//!
//! A stream's open is checked the same way: opened without the token, it ends at once with
//! `UNAUTHENTICATED` before its handler runs, and the connection's other calls and streams go
//! on. Its items carry no token (they belong to the open that was checked).

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{Call, Direction, Middleware, Next};
use crate::error::RpcError;
use crate::status::Status;

/// The metadata key the token travels in (as HTTP's `Authorization` header does).
pub const AUTHORIZATION: &str = "authorization";

/// Checks (inbound) and adds (outbound) `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct BearerAuth {
    /// The whole expected value, `Bearer <token>`.
    value: String,
    check_inbound: bool,
    add_outbound: bool,
}

impl std::fmt::Debug for BearerAuth {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("check_inbound", &self.check_inbound)
            .field("add_outbound", &self.add_outbound)
            .finish_non_exhaustive()
    }
}

impl BearerAuth {
    /// Both: served calls must carry `token`, calls made carry it.
    pub fn new(token: impl AsRef<str>) -> Self {
        BearerAuth {
            value: format!("Bearer {}", token.as_ref()),
            check_inbound: true,
            add_outbound: true,
        }
    }
    /// Only checks served calls (an endpoint that serves but calls with other credentials).
    pub fn check_only(mut self) -> Self {
        self.add_outbound = false;
        self
    }
    /// Only adds the token to calls made (a client of a checking server).
    pub fn add_only(mut self) -> Self {
        self.check_inbound = false;
        self
    }

    fn accepts(&self, call: &Call) -> bool {
        call.meta(AUTHORIZATION)
            .is_some_and(|v| constant_time_eq(v.as_bytes(), self.value.as_bytes()))
    }
}

/// Compares without an early exit on the first differing byte, so the time taken does not tell
/// how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Middleware for BearerAuth {
    fn call(&self, mut call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        match call.direction {
            Direction::Inbound if self.check_inbound && !self.accepts(&call) => call.refuse(
                Status::Unauthenticated,
                "missing or wrong bearer token in \"authorization\"",
            ),
            Direction::Outbound if self.add_outbound && call.meta(AUTHORIZATION).is_none() => {
                call.metadata
                    .push((AUTHORIZATION.to_string(), self.value.clone()));
                next.run(call)
            }
            _ => next.run(call),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equal_only_when_every_byte_is() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(constant_time_eq(b"", b""));
    }
}
