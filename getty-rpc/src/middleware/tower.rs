//! Tower layers as getty middleware (feature `tower`).
//!
//! [`TowerLayer::new`] builds the tower service **once**, over [`NextService`] (the rest of the
//! getty chain, carried in each request), so state a tower layer keeps across calls (a
//! `ConcurrencyLimit`'s semaphore, a `RateLimit`'s bucket) is shared by every call through it.
//! Each call clones that service, waits for `poll_ready`, and calls it, as tower's contract
//! asks.
//!
//! Tower's errors become statuses: an [`RpcError`] passes as it is, tower's timeout becomes
//! `DEADLINE_EXCEEDED` (inbound) or `TIMEOUT` (outbound), its load shedding `OVERLOADED`, and
//! anything else `INTERNAL` with the error's text.

use std::sync::Mutex;
use std::task::{Context as TaskCx, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tower::{Layer, Service};

use super::{Call, Direction, Middleware, Next};
use crate::error::RpcError;
use crate::status::Status;

/// What a tower service in a getty chain is called with: the call, and where it goes next.
#[derive(Debug)]
pub struct TowerRequest {
    pub call: Call,
    next: Next,
}

/// The rest of the getty chain as a tower service: the inner service tower layers wrap.
#[derive(Clone, Copy, Debug, Default)]
pub struct NextService;

impl Service<TowerRequest> for NextService {
    type Response = Bytes;
    type Error = RpcError;
    type Future = BoxFuture<'static, Result<Bytes, RpcError>>;

    fn poll_ready(&mut self, _: &mut TaskCx<'_>) -> Poll<Result<(), RpcError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: TowerRequest) -> Self::Future {
        req.next.run(req.call)
    }
}

/// A tower layer running as a getty [`Middleware`], e.g.
/// `TowerLayer::new(tower::limit::ConcurrencyLimitLayer::new(8))`.
pub struct TowerLayer<S> {
    /// The service built once; cloned per call (a tower service is `&mut` and may not be
    /// `Sync`, hence the lock, held only for the clone).
    svc: Mutex<S>,
}

impl<S> TowerLayer<S> {
    pub fn new<L>(layer: L) -> Self
    where
        L: Layer<NextService, Service = S>,
    {
        TowerLayer {
            svc: Mutex::new(layer.layer(NextService)),
        }
    }
}

impl<S> Middleware for TowerLayer<S>
where
    S: Service<TowerRequest, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        let mut svc = self.svc.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let dir = call.direction;
        Box::pin(async move {
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(|e| status_of(e.into(), dir))?;
            svc.call(TowerRequest { call, next })
                .await
                .map_err(|e| status_of(e.into(), dir))
        })
    }
}

fn status_of(e: tower::BoxError, dir: Direction) -> RpcError {
    let e = match e.downcast::<RpcError>() {
        Ok(e) => return *e,
        Err(e) => e,
    };
    if e.is::<tower::timeout::error::Elapsed>() {
        return match dir {
            Direction::Inbound => RpcError::new(Status::DeadlineExceeded, "timed out in a layer"),
            Direction::Outbound => RpcError::new(Status::Timeout, "timed out in a layer"),
        };
    }
    if e.is::<tower::load_shed::error::Overloaded>() {
        return RpcError::new(Status::Overloaded, "shed by a layer: not ready");
    }
    RpcError::internal(format!("layer failed: {e}"))
}
