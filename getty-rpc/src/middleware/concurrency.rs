//! A server-side concurrency limit per method: at most `n` calls of a method run at once on an
//! endpoint (over all its connections); more are refused with `OVERLOADED` at once rather
//! than queued, so they neither hold window nor wait past their deadline unseen.
//!
//! A stream counts as one call of its method for its whole life: its open takes a permit and
//! the stream's end returns it, so `n` bounds the streams of a method open at once (an open
//! past it ends at once with `OVERLOADED`).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;

use super::{Call, Direction, Middleware, Next};
use crate::error::RpcError;
use crate::status::Status;

/// Limits per `service.method`, and optionally for every other method.
#[derive(Default)]
pub struct MethodConcurrencyLimit {
    /// Few entries, scanned by parts: no key is built per call.
    limits: Vec<(String, String, Arc<Semaphore>)>,
    /// One limit per unnamed method would need a map that grows with what peers send; the
    /// default limit is shared by all unnamed methods instead.
    others: Option<Arc<Semaphore>>,
}

impl MethodConcurrencyLimit {
    pub fn new() -> Self {
        Self::default()
    }
    /// At most `n` calls of `service`/`method` at once.
    pub fn limit(mut self, service: &str, method: &str, n: usize) -> Self {
        self.limits.retain(|(s, m, _)| s != service || m != method);
        self.limits.push((
            service.to_string(),
            method.to_string(),
            Arc::new(Semaphore::new(n)),
        ));
        self
    }
    /// At most `n` calls at once of all the methods without a limit of their own, together.
    pub fn others(mut self, n: usize) -> Self {
        self.others = Some(Arc::new(Semaphore::new(n)));
        self
    }

    fn semaphore(&self, call: &Call) -> Option<&Arc<Semaphore>> {
        self.limits
            .iter()
            .find(|(s, m, _)| *s == call.service && *m == call.method)
            .map(|(_, _, sem)| sem)
            .or(self.others.as_ref())
    }
}

impl Middleware for MethodConcurrencyLimit {
    fn call(&self, call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        if call.direction != Direction::Inbound {
            return next.run(call);
        }
        let Some(sem) = self.semaphore(&call) else {
            return next.run(call);
        };
        match sem.clone().try_acquire_owned() {
            Ok(permit) => Box::pin(async move {
                let r = next.run(call).await;
                drop(permit);
                r
            }),
            Err(_) => call.refuse(Status::Overloaded, "too many calls of this method at once"),
        }
    }
}
