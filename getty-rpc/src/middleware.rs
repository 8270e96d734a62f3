//! Middleware: layers that every call passes through, on both paths of both peers.
//!
//! A call **arriving** (about to reach its handler) and a call **leaving** (about to be sent)
//! are the same [`Call`]: its direction, kind, service, method, codec, metadata, deadline, body
//! and the [`Peer`] of its connection. A [`Middleware`] gets the call and the [`Next`] step of
//! the chain; it may change the call and pass it on, answer or refuse it itself (an
//! [`RpcError`] with any status), and sees the outcome of what it passed on. Because the
//! connection is symmetric, one layer serves any side: installed with
//! [`RpcOptions::layer`](crate::RpcOptions::layer) it runs on the calls the endpoint serves and
//! on the calls it makes, whether it accepted the connection or opened it.
//!
//! Why a trait of our own and not a handler that *is* a tower `Service`: a getty handler is
//! shared (`&self`, called from any connection at once), has no readiness step, and the same
//! layer must also wrap outbound calls, whose end is the connection rather than a handler. The
//! trait keeps that one shape for both paths and for a stream's open, which a layer sees as a
//! [`Call`] of kind [`CallKind::Stream`] (see [`streams`]), and costs nothing when no layer is
//! installed: the connection then calls the handler and sends calls exactly as without this
//! module. Tower's layers (timeout, concurrency limit, load shed, rate limit) still apply
//! unchanged through [`tower`](crate::middleware::tower) (feature `tower`), which runs a tower
//! `Layer` as a `Middleware`.
//!
//! Streams: a stream's open passes through the same chain on both paths, before its first
//! frame; the future a layer gets lasts the whole stream and resolves with how it ended. Layers
//! never see its items, only their counts ([`StreamItems`]): see [`streams`] for why.
//!
//! Ready layers: [`BearerAuth`] (a token added outbound, checked inbound, `UNAUTHENTICATED`
//! without it), [`PeerRateLimit`] (a token bucket per connection) and
//! [`MethodConcurrencyLimit`] (calls of one method at once); each counts a stream as one
//! call. Observability: [`TracePropagation`] (W3C trace context in metadata; OpenTelemetry
//! with feature `tracing-opentelemetry`) and
//! `metrics::Metrics` (feature `metrics`: call counts, latency, in flight, connection traffic).
//!
//! Not layered: the built-in `getty.` services (Hello, reflection) and heartbeats, which are
//! the protocol's own and must work before any layer would let a call through.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::context::Context;
use crate::error::RpcError;
use crate::frame::CodecId;
use crate::peer::{Layered, Peer, PendingCall};
use crate::router::Handler;
use crate::stream::StreamKind;

pub mod auth;
pub mod concurrency;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod rate_limit;
pub mod streams;
#[cfg(feature = "tower")]
pub mod tower;
pub mod trace;

pub use auth::BearerAuth;
pub use concurrency::MethodConcurrencyLimit;
pub use rate_limit::PeerRateLimit;
pub use streams::StreamItems;
pub use trace::{TraceContext, TracePropagation};

/// Which path a call is on, seen from the endpoint running the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The other end called us: the call is about to reach a handler.
    Inbound,
    /// We call the other end: the call is about to be sent.
    Outbound,
}

impl Direction {
    /// `"inbound"` or `"outbound"` (metric labels, logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// What sort of call passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallKind {
    /// A Request and its Response.
    Unary,
    /// A OneWay: nothing comes back; the outcome is `Ok(empty)` once it is handled (inbound)
    /// or queued (outbound).
    OneWay,
    /// A stream's open (`PROTOCOL.md` section 20), of this shape: inbound the method's, as
    /// registered; outbound what the opener asked for (`open_stream_raw` and `open_stream` say
    /// `Bidi`: both halves are the caller's). The outcome is the stream's end: `Ok(empty)` for
    /// a normal end, else its status (see [`streams`]).
    Stream(StreamKind),
}

impl CallKind {
    /// Whether this is a stream's open.
    pub const fn is_stream(self) -> bool {
        matches!(self, CallKind::Stream(_))
    }
}

/// One call on its way through the layers. Layers may change any public field; the handler
/// (inbound) or the frame sent (outbound) sees what the last layer passed on.
#[non_exhaustive]
pub struct Call {
    pub direction: Direction,
    pub kind: CallKind,
    pub service: crate::frame::Name,
    pub method: crate::frame::Name,
    pub codec: CodecId,
    /// The call's metadata (`PROTOCOL.md` section 12): what travels with it outbound, what came
    /// with it inbound.
    pub metadata: Vec<(String, String)>,
    /// When the caller stops waiting. Outbound it is always set for a unary call (the call's
    /// timeout) and set for a stream with a timeout; a layer may shorten it. Inbound it is the
    /// caller's budget, if it sent one.
    pub deadline: Option<Instant>,
    /// The request body, in `codec`; empty for a stream's open (items travel on their own).
    pub body: Bytes,
    peer: Peer,
    seq: u64,
    /// A stream's item counts, for the layers to read at its end.
    items: Option<StreamItems>,
}

impl Call {
    /// The connection the call travels on (inbound: the caller, who can be called back).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
    /// The request's sequence id inbound (a stream's id); 0 outbound (the seq is taken when
    /// it is sent).
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// A stream's item counts so far (`None` for a unary call or a OneWay): read them once the
    /// chain's future has resolved to see the whole stream's.
    pub fn stream_items(&self) -> Option<&StreamItems> {
        self.items.as_ref()
    }
    /// The first metadata value for `key`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Sets `key` to `value`, replacing every earlier value of it.
    pub fn set_meta(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value.into()));
    }
    /// Removes `key`; returns its first value.
    pub fn remove_meta(&mut self, key: &str) -> Option<String> {
        let i = self.metadata.iter().position(|(k, _)| k == key)?;
        let (_, v) = self.metadata.remove(i);
        self.metadata.retain(|(k, _)| k != key);
        Some(v)
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("direction", &self.direction)
            .field("kind", &self.kind)
            .field("service", &self.service)
            .field("method", &self.method)
            .field("seq", &self.seq)
            .field("metadata", &self.metadata)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// One layer. Implemented for closures `Fn(Call, Next) -> impl Future<Output = Result<Bytes,
/// RpcError>>` too.
pub trait Middleware: Send + Sync + 'static {
    /// Handles `call`: usually changes it, then `next.run(call).await`, then looks at the
    /// outcome. Returning without running `next` answers the call here (inbound: the handler
    /// never runs; outbound: nothing is sent).
    fn call(&self, call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>>;
}

impl<F, Fut> Middleware for F
where
    F: Fn(Call, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, RpcError>> + Send + 'static,
{
    fn call(&self, call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        Box::pin(self(call, next))
    }
}

impl Call {
    /// What the handler gets: the call as the last layer left it.
    fn into_context(self) -> (Context, Bytes) {
        let ctx = Context {
            peer: self.peer.with_deadline(self.deadline),
            service: self.service,
            method: self.method,
            seq: self.seq,
            codec: self.codec,
            deadline: self.deadline,
            metadata: self.metadata,
        };
        (ctx, self.body)
    }

    /// An inbound call from a served call's context.
    fn inbound(kind: CallKind, ctx: Context, body: Bytes, items: Option<StreamItems>) -> Call {
        Call {
            direction: Direction::Inbound,
            kind,
            service: ctx.service,
            method: ctx.method,
            codec: ctx.codec,
            metadata: ctx.metadata,
            deadline: ctx.deadline,
            body,
            peer: ctx.peer,
            seq: ctx.seq,
            items,
        }
    }

    /// An outbound stream's open, before its first frame.
    pub(crate) fn stream_out(
        peer: &Peer,
        kind: StreamKind,
        service: &str,
        method: &str,
        codec: CodecId,
        metadata: Vec<(String, String)>,
        deadline: Option<Instant>,
    ) -> Call {
        Call {
            direction: Direction::Outbound,
            kind: CallKind::Stream(kind),
            service: service.into(),
            method: method.into(),
            codec,
            metadata,
            deadline,
            body: Bytes::new(),
            peer: peer.clone(),
            seq: 0,
            items: Some(StreamItems::default()),
        }
    }

    /// Answers the call here with `status` (the layer refuses it): the message names the
    /// method, then `why`.
    pub fn refuse(
        &self,
        status: crate::Status,
        why: &str,
    ) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        let e = RpcError::new(status, format!("{}.{}: {why}", self.service, self.method));
        Box::pin(async move { Err(e) })
    }
}

/// A shared layer: keep an `Arc` to look at its state (a limiter's peers) while it runs.
impl<M: Middleware + ?Sized> Middleware for Arc<M> {
    fn call(&self, call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        (**self).call(call, next)
    }
}

type Chain = Arc<[Arc<dyn Middleware>]>;

/// The rest of the chain after the current layer: more layers, then the handler (inbound) or
/// the connection (outbound). Owned and `'static`, so a layer may move it into a task or run
/// it more than once (a retry clones the call's parts and the `Next`).
#[derive(Clone)]
pub struct Next {
    chain: Chain,
    at: usize,
    end: End,
}

#[derive(Clone)]
enum End {
    Handler(Arc<dyn Handler>),
    Send,
    /// A stream handler with its halves (inbound stream open).
    Stream(Arc<streams::ServeEnd>),
    /// Opening the stream, handing its halves to the opener (outbound stream open).
    Open(Arc<streams::OpenEnd>),
}

impl Next {
    /// Passes `call` on to the next layer, or to its end.
    pub fn run(self, call: Call) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        if self.at < self.chain.len() {
            // The connection's own chain `Arc` keeps the layer alive (see `for_connection`).
            let chain = self.chain.clone();
            return chain[self.at].call(
                call,
                Next {
                    at: self.at + 1,
                    ..self
                },
            );
        }
        match self.end {
            End::Handler(h) => {
                let (ctx, body) = call.into_context();
                h.call(ctx, body)
            }
            End::Send => Box::pin(send(call)),
            End::Stream(s) => s.run(call),
            End::Open(o) => o.run(call),
        }
    }
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("layers_left", &(self.chain.len() - self.at))
            .finish()
    }
}

/// The layers of an endpoint, per direction; the first added is the outermost. Part of
/// [`RpcOptions`](crate::RpcOptions).
#[derive(Clone, Default)]
pub struct Layers {
    inbound: Option<Chain>,
    outbound: Option<Chain>,
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |c: &Option<Chain>| c.as_ref().map_or(0, |c| c.len());
        f.debug_struct("Layers")
            .field("inbound", &n(&self.inbound))
            .field("outbound", &n(&self.outbound))
            .finish()
    }
}

fn push(chain: &mut Option<Chain>, layer: Arc<dyn Middleware>) {
    let mut v: Vec<_> = chain.as_deref().unwrap_or_default().to_vec();
    v.push(layer);
    *chain = Some(v.into());
}

impl Layers {
    /// Adds `layer` to both paths (one instance, so state such as a limiter is shared).
    pub fn both(&mut self, layer: impl Middleware) -> &mut Self {
        let layer: Arc<dyn Middleware> = Arc::new(layer);
        push(&mut self.inbound, layer.clone());
        push(&mut self.outbound, layer);
        self
    }
    /// Adds `layer` to the calls this endpoint serves.
    pub fn inbound(&mut self, layer: impl Middleware) -> &mut Self {
        push(&mut self.inbound, Arc::new(layer));
        self
    }
    /// Adds `layer` to the calls this endpoint makes.
    pub fn outbound(&mut self, layer: impl Middleware) -> &mut Self {
        push(&mut self.outbound, Arc::new(layer));
        self
    }
    pub fn is_empty(&self) -> bool {
        self.inbound.is_none() && self.outbound.is_none()
    }

    pub(crate) fn outbound_chain(&self) -> Option<&Chain> {
        self.outbound.as_ref()
    }

    /// A copy for one connection: its chains are its own `Arc`s, so the per-call reference
    /// counting touches memory of that connection only, never a count every connection's
    /// threads contend on.
    pub(crate) fn for_connection(&self) -> Layers {
        let copy = |c: &Option<Chain>| c.as_deref().map(|c| Chain::from(c.to_vec()));
        Layers {
            inbound: copy(&self.inbound),
            outbound: copy(&self.outbound),
        }
    }
}

/// The handler's future for a served call: the handler itself when no inbound layer is
/// installed (the path without this module), else the chain ending in it.
pub(crate) fn serve(
    layers: &Layers,
    handler: &Arc<dyn Handler>,
    ctx: Context,
    body: Bytes,
    two_way: bool,
) -> BoxFuture<'static, Result<Bytes, RpcError>> {
    let Some(chain) = &layers.inbound else {
        return handler.call(ctx, body);
    };
    let kind = if two_way {
        CallKind::Unary
    } else {
        CallKind::OneWay
    };
    let call = Call::inbound(kind, ctx, body, None);
    Next {
        chain: chain.clone(),
        at: 0,
        end: End::Handler(handler.clone()),
    }
    .run(call)
}

/// Runs an outbound call through `chain`; its end sends it on `peer`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn outbound(
    chain: &Chain,
    peer: &Peer,
    kind: CallKind,
    service: &str,
    method: &str,
    codec: CodecId,
    body: Bytes,
    metadata: Vec<(String, String)>,
    deadline: Option<Instant>,
) -> BoxFuture<'static, Result<Bytes, RpcError>> {
    let call = Call {
        direction: Direction::Outbound,
        kind,
        service: service.into(),
        method: method.into(),
        codec,
        metadata,
        deadline,
        body,
        peer: peer.clone(),
        seq: 0,
        items: None,
    };
    Next {
        chain: chain.clone(),
        at: 0,
        end: End::Send,
    }
    .run(call)
}

/// [`Peer::start_call_raw`] with outbound layers: the chain starts at once (polled here, so
/// with layers that do not wait the request is queued before this returns, as without layers)
/// and the returned [`PendingCall`] drives the rest.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_outbound(
    chain: &Chain,
    peer: &Peer,
    service: &str,
    method: &str,
    codec: CodecId,
    body: Bytes,
    metadata: Vec<(String, String)>,
    deadline: Instant,
) -> Result<PendingCall, RpcError> {
    let mut fut = outbound(
        chain,
        peer,
        CallKind::Unary,
        service,
        method,
        codec,
        body,
        metadata,
        Some(deadline),
    );
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Pending => Ok(PendingCall::layered(Layered::Running(fut))),
        std::task::Poll::Ready(Err(e)) => Err(e),
        std::task::Poll::Ready(Ok(b)) => Ok(PendingCall::layered(Layered::Done(Some(Ok(b))))),
    }
}

/// The end of an outbound chain: sends the call as the last layer left it (its names and
/// metadata move into the frame, nothing is copied).
async fn send(call: Call) -> Result<Bytes, RpcError> {
    let Call {
        kind,
        service,
        method,
        codec,
        metadata,
        deadline,
        body,
        peer,
        ..
    } = call;
    let now = Instant::now();
    let has_deadline = deadline.is_some();
    let deadline = deadline.unwrap_or_else(|| {
        let d = now + peer.state.opts.default_timeout;
        peer.deadline.map_or(d, |p| p.min(d))
    });
    let timeout = deadline.saturating_duration_since(now);
    match kind {
        CallKind::Unary => {
            peer.start_call_at(service, method, codec, body, metadata, deadline, timeout)
                .await?
                .await
        }
        // A stream's open ends in `End::Open`: a layer that made a call one opens nothing.
        CallKind::Stream(_) => Err(RpcError::internal(
            "a layer turned a call into a stream's open",
        )),
        CallKind::OneWay => peer
            .notify_at(
                service,
                method,
                codec,
                body,
                metadata,
                has_deadline,
                deadline,
                timeout,
            )
            .await
            .map(|()| Bytes::new()),
    }
}
