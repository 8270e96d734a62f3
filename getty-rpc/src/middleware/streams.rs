//! Streams through the layers.
//!
//! A stream's open is a [`Call`] of kind [`CallKind::Stream`] on both paths of both peers:
//! **inbound**, a StreamOpen routed to its stream handler, before the handler runs;
//! **outbound**, before the StreamOpen is sent (`open_stream_raw` and the typed helpers). A
//! layer may change it (metadata, deadline), refuse it with a status or pass it on, as it does
//! a unary call, and the future it gets back lasts the **whole stream**: it resolves with the
//! stream's end, `Ok(empty)` for a normal end, else the status. So what a layer holds across
//! `next.run` (a concurrency permit, a span, a trace scope, a timer) it holds for the stream's
//! life, and a tower `Timeout` bounds the whole stream.
//!
//! - Refused inbound: the handler never runs; the opener's stream ends with the layer's status
//!   (the final StreamEnd) and the connection stays up.
//! - Refused outbound: nothing is sent; the open returns the layer's error.
//! - The outcome outbound is what the opener's receiving half sees of the end: the status it
//!   reads (the acceptor's final StreamEnd, the stream's deadline, the connection closing), or
//!   `CANCELLED` if it is dropped before. Once the opener holds its halves nothing else drives
//!   the rest of the chain, so it runs on a task of its own until that outcome.
//!
//! Why layers do not see each item: items are the path streams exist for (millions a second,
//! `BENCHMARKS.md`), and a layer per item would put a boxed future and the chain's dynamic calls
//! on every one of them, both ways; items also carry no metadata or status of their own for a
//! layer to act on. What layers need of them is how many went each way, which [`StreamItems`]
//! counts (one relaxed atomic add per item, only on streams opened while layers are installed).
//! Code that wants to change items wraps the handler or the typed halves instead.
//!
//! With no layer on a path, none of this runs: the open and the handler are exactly the path
//! without this module (one `Option` test).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::{Call, CallKind, Chain, End, Layers, Next};
use crate::context::Context;
use crate::error::RpcError;
use crate::peer::lock;
use crate::status::Status;
use crate::stream::{StreamHandler, StreamKind, StreamReceiver, StreamSender};

/// How many items a stream moved each way, seen from the endpoint running the layer; read it
/// from [`Call::stream_items`] once the chain's future has resolved.
#[derive(Clone, Debug, Default)]
pub struct StreamItems(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    received: AtomicU64,
    sent: AtomicU64,
}

impl StreamItems {
    /// Items this side's application took from its receiving half.
    pub fn received(&self) -> u64 {
        self.0.received.load(Ordering::Relaxed)
    }
    /// Items this side sent (each once credit let it go out).
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }
    pub(crate) fn received_one(&self) {
        self.0.received.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn sent_one(&self) {
        self.0.sent.fetch_add(1, Ordering::Relaxed);
    }
}

fn fail(e: RpcError) -> BoxFuture<'static, Result<Bytes, RpcError>> {
    Box::pin(async move { Err(e) })
}

/// The end of an inbound stream's chain: its handler, with both halves (taken once).
pub(crate) struct ServeEnd {
    handler: Arc<dyn StreamHandler>,
    halves: Mutex<Option<(StreamReceiver, StreamSender)>>,
}

impl ServeEnd {
    pub(super) fn run(&self, call: Call) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        if !call.kind.is_stream() {
            return fail(RpcError::internal(
                "a layer turned a stream's open into a call",
            ));
        }
        let Some((items, out)) = lock(&self.halves).take() else {
            return fail(RpcError::internal("a layer ran a stream's handler twice"));
        };
        let (ctx, _) = call.into_context();
        let fut = self.handler.call(ctx, items, out);
        Box::pin(async move { fut.await.map(|()| Bytes::new()) })
    }
}

/// The future of a served stream: the handler's own when no inbound layer is installed, else
/// the chain ending in it (see the module docs).
pub(crate) fn serve(
    layers: &Layers,
    handler: &Arc<dyn StreamHandler>,
    kind: StreamKind,
    ctx: Context,
    mut items: StreamReceiver,
    mut out: StreamSender,
) -> crate::router::BoxFuture<Result<(), RpcError>> {
    let Some(chain) = &layers.inbound else {
        return handler.call(ctx, items, out);
    };
    let counts = StreamItems::default();
    items.tap(Some(counts.clone()), None);
    out.tap(Some(counts.clone()));
    let call = Call::inbound(CallKind::Stream(kind), ctx, Bytes::new(), Some(counts));
    let end = ServeEnd {
        handler: handler.clone(),
        halves: Mutex::new(Some((items, out))),
    };
    let fut = Next {
        chain: chain.clone(),
        at: 0,
        end: End::Stream(Arc::new(end)),
    }
    .run(call);
    Box::pin(async move { fut.await.map(drop) })
}

type Halves = (StreamSender, StreamReceiver);

/// The end of an outbound stream's chain: opens the stream as the last layer left the call,
/// hands the halves to the opener, then waits for the stream's outcome.
pub(crate) struct OpenEnd {
    opener: Mutex<Option<oneshot::Sender<Halves>>>,
}

impl OpenEnd {
    pub(super) fn run(&self, call: Call) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        let Some(opener) = lock(&self.opener).take() else {
            return fail(RpcError::internal("a layer ran a stream's open twice"));
        };
        Box::pin(async move {
            let Call {
                kind,
                service,
                method,
                codec,
                metadata,
                deadline,
                peer,
                items,
                ..
            } = call;
            if !kind.is_stream() {
                return Err(RpcError::internal(
                    "a layer turned a stream's open into a call",
                ));
            }
            // A layer may shorten the deadline, never past a served call's.
            let deadline = match (deadline, peer.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let (mut out, mut rx) = peer
                .open_at(&service, &method, codec, metadata, deadline, Instant::now())
                .await?;
            let (done, outcome) = oneshot::channel();
            rx.tap(items.clone(), Some(done));
            out.tap(items);
            if opener.send((out, rx)).is_err() {
                // Dropping the halves cancelled the stream.
                return Err(RpcError::new(
                    Status::Cancelled,
                    "the opener gave up before the stream opened",
                ));
            }
            match outcome.await {
                Ok(r) => r.map(|()| Bytes::new()),
                Err(_) => Err(RpcError::new(Status::Cancelled, "the stream was dropped")),
            }
        })
    }
}

/// Opens an outbound stream through `chain`: drives the chain (on the opener's task, so its
/// task-locals, such as the current trace, are the layers') until the stream is open or the
/// chain gave up, then leaves the rest of it (the wait for the outcome) to a task.
pub(crate) async fn open(chain: &Chain, call: Call) -> Result<Halves, RpcError> {
    let (tx, rx) = oneshot::channel();
    let end = OpenEnd {
        opener: Mutex::new(Some(tx)),
    };
    let mut fut = Next {
        chain: chain.clone(),
        at: 0,
        end: End::Open(Arc::new(end)),
    }
    .run(call);
    let mut rx = Some(rx);
    let first = std::future::poll_fn(|cx| {
        if let Some(r) = rx.as_mut() {
            match Pin::new(r).poll(cx) {
                Poll::Ready(Ok(h)) => return Poll::Ready(Ok(h)),
                // No open will come (a layer dropped the rest of the chain): it says why.
                Poll::Ready(Err(_)) => rx = None,
                Poll::Pending => {}
            }
        }
        fut.as_mut().poll(cx).map(Err)
    })
    .await;
    match first {
        Ok(halves) => {
            tokio::spawn(fut);
            Ok(halves)
        }
        // The chain ended before the opener had its halves: a refusal, or a layer that
        // stopped waiting after the open (its halves, if any, are the opener's).
        Err(res) => match (res, rx.and_then(|mut rx| rx.try_recv().ok())) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(halves)) => Ok(halves),
            (Ok(_), None) => Err(RpcError::internal(
                "a layer answered a stream's open without opening it",
            )),
        },
    }
}
