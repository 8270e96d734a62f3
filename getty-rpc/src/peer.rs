//! One end of an RPC connection: the handle to call the other side, and the per-connection
//! state that matches replies to calls.
//!
//! Sequence ids for calls come from this peer's own counter; replies are matched in `pending`.
//! Every pending call ends: with its reply, its timeout (which also sends a Cancel), its future
//! being dropped (Cancel too), or the connection closing (all fail at once).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskCx, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use getty_core::Session;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::body::{BodyCodec, Json, Prost};
use crate::error::RpcError;
use crate::frame::{CodecId, Frame, Kind};
use crate::options::RpcOptions;
use crate::router::Router;
use crate::status::Status;

type Waiter = oneshot::Sender<Result<Frame, RpcError>>;
/// Seeded per map, so keys chosen by a peer cannot force collisions; much cheaper than SipHash.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Calls waiting for a reply; `None` once the connection closed, so no call can be added after
/// the final sweep and wait forever.
pub(crate) struct Pending(Option<FastMap<u64, Waiter>>);

/// State of one connection shared by its `Peer` handles and its listener.
pub(crate) struct ConnState {
    pub(crate) router: Arc<Router>,
    pub(crate) opts: Arc<RpcOptions>,
    next_seq: AtomicU64,
    pending: Mutex<Pending>,
    /// Requests being served, by the caller's seq, so a Cancel can stop them.
    pub(crate) running: Mutex<FastMap<u64, AbortHandle>>,
    pub(crate) inflight: AtomicUsize,
    pub(crate) late_replies: AtomicU64,
    /// The instance id the other end announced with `getty.Peer/Hello`.
    pub(crate) remote_instance: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnState {
    pub(crate) fn new(router: Arc<Router>, opts: Arc<RpcOptions>) -> Self {
        ConnState {
            router,
            opts,
            next_seq: AtomicU64::new(1),
            pending: Mutex::new(Pending(Some(FastMap::default()))),
            running: Mutex::new(FastMap::default()),
            inflight: AtomicUsize::new(0),
            late_replies: AtomicU64::new(0),
            remote_instance: Mutex::new(None),
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    fn add_waiter(&self, seq: u64, w: Waiter) -> Result<(), RpcError> {
        match &mut lock(&self.pending).0 {
            Some(map) => {
                map.insert(seq, w);
                Ok(())
            }
            None => Err(RpcError::closed("connection closed")),
        }
    }

    pub(crate) fn take_waiter(&self, seq: u64) -> Option<Waiter> {
        lock(&self.pending).0.as_mut().and_then(|m| m.remove(&seq))
    }

    pub(crate) fn pending_len(&self) -> usize {
        lock(&self.pending).0.as_ref().map_or(0, HashMap::len)
    }

    /// The connection is gone: fail every pending call now and refuse new ones; stop handlers.
    pub(crate) fn shutdown(&self, why: &str) {
        let waiters = lock(&self.pending).0.take().unwrap_or_default();
        for (_, w) in waiters {
            let _ = w.send(Err(RpcError::closed(why.to_string())));
        }
        for (_, h) in lock(&self.running).drain() {
            h.abort();
        }
    }
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Overrides the connection's default timeout.
    pub timeout: Option<Duration>,
    pub metadata: Vec<(String, String)>,
    /// Overrides the message type's default codec.
    pub codec: Option<CodecId>,
}

impl CallOptions {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    pub fn meta(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.metadata.push((k.into(), v.into()));
        self
    }
    pub fn codec(mut self, c: CodecId) -> Self {
        self.codec = Some(c);
        self
    }
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Calls of ours waiting for a reply.
    pub pending: usize,
    /// Requests of theirs being served.
    pub inflight: usize,
    /// Replies that came after their call had ended (timed out or cancelled).
    pub late_replies: u64,
}

/// A handle to the other end of one connection. Cheap to clone; works from any task.
#[derive(Clone)]
pub struct Peer {
    pub(crate) session: Session<Frame>,
    pub(crate) state: Arc<ConnState>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("session", &self.session)
            .finish()
    }
}

/// The deadline as sent: milliseconds rounded up, within 1..=u32::MAX (PROTOCOL.md).
fn budget_ms(d: Duration) -> u32 {
    let ms = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)));
    ms.clamp(1, u64::from(u32::MAX)) as u32
}

fn encode_err(e: getty_core::Error) -> RpcError {
    match e {
        getty_core::Error::Encode { source, .. } => {
            RpcError::bad_request(format!("request not sendable: {source}"))
        }
        other => RpcError::from(other),
    }
}

impl Peer {
    /// The underlying getty-core session.
    pub fn session(&self) -> &Session<Frame> {
        &self.session
    }
    /// The session id, unique in this process.
    pub fn id(&self) -> u64 {
        self.session.id()
    }
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.session.remote_addr()
    }
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }
    /// Closes the connection; pending calls on it fail with `CONNECTION_CLOSED`.
    pub fn close(&self) {
        self.session.close();
    }
    /// The registry instance id the other end announced (see [`RpcOptions::identity`]).
    pub fn remote_instance(&self) -> Option<String> {
        lock(&self.state.remote_instance).clone()
    }
    pub fn stats(&self) -> PeerStats {
        PeerStats {
            pending: self.state.pending_len(),
            inflight: self.state.inflight.load(Ordering::Relaxed),
            late_replies: self.state.late_replies.load(Ordering::Relaxed),
        }
    }

    /// Sends a request now and returns the future of its reply: the form for many concurrent
    /// calls. Waits only while the connection's write queue is full.
    pub async fn start_call_raw(
        &self,
        service: &str,
        method: &str,
        codec: CodecId,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<PendingCall, RpcError> {
        let timeout = opts.timeout.unwrap_or(self.state.opts.default_timeout);
        let seq = self.state.next_seq();
        let (tx, rx) = oneshot::channel();
        self.state.add_waiter(seq, tx)?;
        let mut frame =
            Frame::request(seq, codec, service, method, body).with_timeout_ms(budget_ms(timeout));
        frame.metadata = opts.metadata;
        tracing::Span::current().record("seq", seq);
        tracing::trace!(service, method, seq, peer = self.id(), "rpc call");
        // From here on, dropping the call (even mid-send) removes the waiter and cancels.
        let mut call = PendingCall {
            seq,
            codec,
            rx,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            peer: Some(self.clone()),
        };
        if let Err(e) = self.session.send_pkg(&frame).await {
            call.peer = None;
            self.state.take_waiter(seq);
            return Err(encode_err(e));
        }
        Ok(call)
    }

    /// A two-way call on raw bodies.
    pub async fn call_raw(
        &self,
        service: &str,
        method: &str,
        codec: CodecId,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, RpcError> {
        let span = tracing::debug_span!(
            "rpc.call",
            service,
            method,
            seq = tracing::field::Empty,
            peer = self.id()
        );
        async {
            self.start_call_raw(service, method, codec, body, opts)
                .await?
                .await
        }
        .instrument(span)
        .await
    }

    /// A typed two-way call; `B` says how the messages are encoded (see [`crate::body`]).
    pub async fn call<B, Req, Resp>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Resp, RpcError>
    where
        B: BodyCodec<Req> + BodyCodec<Resp>,
    {
        let codec = opts.codec.unwrap_or(<B as BodyCodec<Req>>::CODECS[0]);
        let mut body = BytesMut::new();
        <B as BodyCodec<Req>>::encode(codec, req, &mut body)?;
        let reply = self
            .call_raw(service, method, codec, body.freeze(), opts)
            .await?;
        <B as BodyCodec<Resp>>::decode_shared(codec, &reply).map_err(|e| {
            RpcError::new(
                Status::BadRequest,
                format!("reply did not decode: {}", e.message),
            )
        })
    }

    /// A two-way call with serde types over JSON.
    pub async fn call_json<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
    ) -> Result<Resp, RpcError>
    where
        Json: BodyCodec<Req> + BodyCodec<Resp>,
    {
        self.call::<Json, Req, Resp>(service, method, req, CallOptions::default())
            .await
    }

    /// A two-way call with prost messages over Protobuf.
    pub async fn call_prost<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
    ) -> Result<Resp, RpcError>
    where
        Prost: BodyCodec<Req> + BodyCodec<Resp>,
    {
        self.call::<Prost, Req, Resp>(service, method, req, CallOptions::default())
            .await
    }

    /// A one-way call: no reply, no pending state. Returns once the request is queued.
    pub async fn notify_raw(
        &self,
        service: &str,
        method: &str,
        codec: CodecId,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<(), RpcError> {
        let seq = self.state.next_seq();
        let mut frame = Frame::one_way(seq, codec, service, method, body);
        if let Some(t) = opts.timeout {
            frame.timeout_ms = budget_ms(t);
        }
        frame.metadata = opts.metadata;
        self.session
            .send_pkg(&frame)
            .await
            .map(|_| ())
            .map_err(encode_err)
    }

    /// A typed one-way call.
    pub async fn notify<B, Req>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<(), RpcError>
    where
        B: BodyCodec<Req>,
    {
        let codec = opts.codec.unwrap_or(B::CODECS[0]);
        let mut body = BytesMut::new();
        B::encode(codec, req, &mut body)?;
        self.notify_raw(service, method, codec, body.freeze(), opts)
            .await
    }

    /// One heartbeat round trip; returns how long it took.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, RpcError> {
        let seq = self.state.next_seq();
        let (tx, rx) = oneshot::channel();
        self.state.add_waiter(seq, tx)?;
        let start = Instant::now();
        let call = PendingCall {
            seq,
            // A Pong carries no codec.
            codec: CodecId::None,
            rx,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            peer: Some(self.clone()),
        };
        if let Err(e) = self.session.send_pkg(&Frame::ping(seq)).await {
            self.state.take_waiter(seq);
            return Err(e.into());
        }
        call.await?;
        Ok(start.elapsed())
    }
}

/// The reply of a call already sent. Dropping it before it completes cancels the call: the
/// callee is told (a Cancel frame) and a reply that still comes is dropped and counted.
pub struct PendingCall {
    seq: u64,
    /// The request's codec: an OK reply must come in it (PROTOCOL.md section 6).
    codec: CodecId,
    rx: oneshot::Receiver<Result<Frame, RpcError>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    /// `Some` while the call is pending.
    peer: Option<Peer>,
}

impl PendingCall {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Gives up on the call: forget the waiter and tell the callee.
    fn abandon(&mut self) {
        if let Some(peer) = self.peer.take()
            && peer.state.take_waiter(self.seq).is_some()
            && !peer.is_closed()
        {
            // Best effort: if the queue is full the callee's own deadline still stops it.
            let _ = peer.session.try_send_pkg(&Frame::cancel(self.seq));
        }
    }
}

impl Future for PendingCall {
    type Output = Result<Bytes, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(r) = Pin::new(&mut self.rx).poll(cx) {
            self.peer = None;
            return Poll::Ready(match r {
                Ok(Ok(f)) if f.status == Status::Ok && f.codec == self.codec => Ok(f.body),
                // Not a framing violation: the call fails here, the connection stays up.
                Ok(Ok(f)) if f.status == Status::Ok => Err(RpcError::new(
                    Status::BadRequest,
                    format!(
                        "reply did not decode: an OK reply in codec {} to a {} request",
                        f.codec, self.codec
                    ),
                )),
                Ok(Ok(f)) => Err(RpcError::from_peer(
                    f.status,
                    String::from_utf8_lossy(&f.body).into_owned(),
                )),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(RpcError::closed("connection closed")),
            });
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.abandon();
            let t = self.timeout;
            return Poll::Ready(Err(RpcError::new(
                Status::Timeout,
                format!("no reply within {t:?}"),
            )));
        }
        Poll::Pending
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// A reply frame arrived: hand it to its call, or count it as late.
pub(crate) fn complete(state: &ConnState, f: Frame) {
    let kind = f.kind;
    match state.take_waiter(f.seq) {
        Some(w) => {
            let _ = w.send(Ok(f));
        }
        None if kind == Kind::Response => {
            state.late_replies.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(seq = f.seq, "late reply dropped");
        }
        None => {} // a Pong to a heartbeat ping nobody waits for
    }
}

#[cfg(test)]
mod tests {
    use super::budget_ms;
    use std::time::Duration;

    #[test]
    fn budgets_round_up_to_whole_milliseconds_within_u32() {
        assert_eq!(budget_ms(Duration::ZERO), 1);
        assert_eq!(budget_ms(Duration::from_nanos(1)), 1);
        assert_eq!(budget_ms(Duration::from_millis(300)), 300);
        assert_eq!(budget_ms(Duration::from_micros(300_001)), 301);
        assert_eq!(budget_ms(Duration::new(2, 999_999_999)), 3000);
        assert_eq!(budget_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
