//! Per-peer rate limiting: a token bucket for each connection, so one chatty peer is slowed
//! without touching the others. Calls over the rate are refused with `OVERLOADED` at once (the
//! handler never runs); a peer's bucket goes when its connection closes.
//!
//! A stream's open counts as one call (one token); its items take none, since their rate is
//! already held to the receiver's credit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{Call, Direction, Middleware, Next};
use crate::error::RpcError;
use crate::peer::{FastMap, lock};
use crate::status::Status;

/// Distinguishes limiters in a session's close callbacks.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Lets each peer make `rate` calls per second on average and `burst` at once; applies to the
/// calls an endpoint serves (outbound calls pass untouched).
pub struct PeerRateLimit {
    id: u64,
    rate: f64,
    burst: f64,
    buckets: Arc<Mutex<FastMap<u64, Bucket>>>,
}

impl PeerRateLimit {
    /// `rate` calls per `per`, up to `burst` at once (at least 1).
    pub fn new(rate: u32, per: Duration, burst: u32) -> Self {
        let secs = per.as_secs_f64().max(1e-9);
        PeerRateLimit {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            rate: f64::from(rate) / secs,
            burst: f64::from(burst.max(1)),
            buckets: Arc::default(),
        }
    }

    /// Takes one token from the peer's bucket; false if it is empty.
    fn take(&self, call: &Call) -> bool {
        let id = call.peer().id();
        let now = Instant::now();
        let mut map = lock(&self.buckets);
        let fresh = !map.contains_key(&id);
        let b = map.entry(id).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        let ok = b.tokens >= 1.0;
        if ok {
            b.tokens -= 1.0;
        }
        drop(map);
        if fresh {
            let weak: Weak<Mutex<FastMap<u64, Bucket>>> = Arc::downgrade(&self.buckets);
            let added = call.peer().session().add_close_callback(
                "getty-rpc.rate-limit",
                self.id.to_string(),
                move || {
                    if let Some(m) = weak.upgrade() {
                        lock(&m).remove(&id);
                    }
                },
            );
            if !added {
                lock(&self.buckets).remove(&id);
            }
        }
        ok
    }

    /// Peers that currently have a bucket (for tests and stats).
    pub fn tracked_peers(&self) -> usize {
        lock(&self.buckets).len()
    }
}

impl Middleware for PeerRateLimit {
    fn call(&self, call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        if call.direction == Direction::Inbound && !self.take(&call) {
            return call.refuse(Status::Overloaded, "over this peer's rate limit");
        }
        next.run(call)
    }
}
