//! One end of an RPC connection: the handle to call the other side, and the per-connection
//! state (the protocol [`Machine`] under a lock) that matches replies to calls.
//!
//! Every call ends exactly once: with its reply, its deadline (which also sends a Cancel; the
//! deadline covers waiting for window and for the write queue too), its future being dropped
//! (Cancel too), or the connection closing (all fail at once).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskCx, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use getty_core::Session;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::body::{BodyCodec, Json, Prost};
use crate::error::RpcError;
use crate::frame::{self, CodecId, Frame, Kind};
use crate::machine::{Await, Io, Machine, Start};
use crate::options::RpcOptions;
use crate::router::Router;
use crate::status::Status;

/// Seeded per map, so keys chosen by a peer cannot force collisions; much cheaper than SipHash.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What the connection machine is driven with at run time.
pub(crate) struct RtIo;

impl Io for RtIo {
    type Waiter = oneshot::Sender<Result<Frame, RpcError>>;
    type Grant = oneshot::Sender<u64>;
    type Handle = AbortHandle;
    fn gave_up(grant: &oneshot::Sender<u64>) -> bool {
        grant.is_closed()
    }
    type Items = tokio::sync::mpsc::UnboundedSender<crate::stream::Event>;
    type Wake = oneshot::Sender<()>;
}

/// State of one connection shared by its `Peer` handles and its listener: the protocol
/// machine under one lock, plus what the driver needs around it.
pub(crate) struct ConnState {
    pub(crate) router: Arc<Router>,
    pub(crate) opts: Arc<RpcOptions>,
    pub(crate) machine: Mutex<Machine<RtIo>>,
    /// Mirrors `Machine::peer_known`, so the per-frame check takes no lock.
    pub(crate) peer_known: AtomicBool,
    /// Woken once the peer's first frame arrived (stream openers wait for it).
    pub(crate) peer_known_now: tokio::sync::Notify,
    /// Where handler tasks run: the endpoint waits for them on close.
    pub(crate) handlers: TaskTracker,
    /// The instance id the other end announced with `getty.Peer/Hello`.
    pub(crate) remote_instance: Mutex<Option<String>>,
    /// Whether the other end announced zstd bodies in its Hello (compression.rs).
    pub(crate) peer_zstd: AtomicBool,
    /// This connection's copy of `opts.layers` (middleware.rs).
    pub(crate) layers: crate::middleware::Layers,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnState {
    pub(crate) fn new(router: Arc<Router>, opts: Arc<RpcOptions>, handlers: TaskTracker) -> Self {
        ConnState {
            machine: Mutex::new(Machine::new(opts.machine_config())),
            layers: opts.layers.for_connection(),
            router,
            opts,
            peer_known: AtomicBool::new(false),
            peer_zstd: AtomicBool::new(false),
            peer_known_now: tokio::sync::Notify::new(),
            handlers,
            remote_instance: Mutex::new(None),
        }
    }

    pub(crate) fn machine(&self) -> MutexGuard<'_, Machine<RtIo>> {
        lock(&self.machine)
    }
}

/// Runs what an event left for the driver: wakes the callers that now fit the peer's window
/// and queues the frames the machine owes the peer. Called with the machine locked, after
/// every event that may produce either.
#[inline]
pub(crate) fn settle(m: &mut Machine<RtIo>, state: &Arc<ConnState>, session: &Session<Frame>) {
    if !m.quiet() {
        settle_slow(m, state, session);
    }
}

#[inline(never)]
fn settle_slow(m: &mut Machine<RtIo>, state: &Arc<ConnState>, session: &Session<Frame>) {
    while let Some((grant, seq, bytes)) = m.poll_grant() {
        if grant.send(seq).is_err() {
            // The caller gave up while we granted: its call never leaves.
            m.unsend(seq, bytes);
        }
    }
    while let Some(f) = m.poll_transmit() {
        send_owed(m, state, session, f);
    }
}

/// Queues a frame the protocol requires (a reply, a Pong, a Cancel, a Credit) without ever
/// blocking the caller: when the write queue is full the frame is deferred to the one flusher
/// task of the connection. A reply over the frame limit becomes an `INTERNAL` answer.
pub(crate) fn send_owed(
    m: &mut Machine<RtIo>,
    state: &Arc<ConnState>,
    session: &Session<Frame>,
    f: Frame,
) {
    match session.try_send_pkg(&f) {
        Ok(_) => {}
        Err(getty_core::Error::QueueFull { .. }) => defer(m, state, session, f),
        Err(getty_core::Error::Encode { source, .. }) if f.kind == Kind::Response => {
            let msg = format!("reply not sendable: {source}");
            send_owed(
                m,
                state,
                session,
                Frame::error(f.seq, Status::Internal, msg),
            );
        }
        Err(e) => tracing::debug!(seq = f.seq, kind = %f.kind, error = %e, "frame not sent"),
    }
}

/// Keeps an owed frame the write queue has no room for, and starts the flusher if none runs.
/// A peer without flow control is not bound by a window, so while the flusher has work its
/// reads are held (the old back-pressure, but only for what we owe, never for our own calls).
fn defer(m: &mut Machine<RtIo>, state: &Arc<ConnState>, session: &Session<Frame>, f: Frame) {
    if let Err(why) = m.defer(f) {
        tracing::warn!(peer = session.id(), "{why}; closing");
        session.close_with_reason(why);
        return;
    }
    if m.start_flush() {
        let hold = !m.peer_flow();
        if hold {
            session.hold_reads();
        }
        let (state, session) = (state.clone(), session.clone());
        tokio::spawn(async move {
            loop {
                let next = state.machine().pop_deferred();
                let Some(f) = next else { break };
                if let Err(e) = session.send_pkg(&f).await {
                    tracing::debug!(seq = f.seq, error = %e, "owed frame not sent");
                    break;
                }
            }
            if hold {
                session.release_reads();
            }
        });
    }
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
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
    /// Calls of ours waiting for room in the other end's window.
    pub waiting: usize,
    /// Requests of theirs being served.
    pub inflight: usize,
    /// Replies that came after their call had ended (timed out or cancelled).
    pub late_replies: u64,
    /// Calls of theirs refused with `OVERLOADED` (over this end's window).
    pub refused: u64,
    /// Whether the other end announced flow control (a getty peer of this version).
    pub peer_flow_control: bool,
    /// Streams open on the connection, both directions.
    pub streams: usize,
}

/// A handle to the other end of one connection. Cheap to clone; works from any task.
#[derive(Clone)]
pub struct Peer {
    pub(crate) session: Session<Frame>,
    pub(crate) state: Arc<ConnState>,
    /// The deadline of the call being served, for a handler's `ctx.peer()`: calls made through
    /// it inherit what is left of it (`PROTOCOL.md` section 9).
    pub(crate) deadline: Option<Instant>,
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

fn timeout_err(t: Duration) -> RpcError {
    RpcError::new(Status::Timeout, format!("no reply within {t:?}"))
}

/// A call that holds window but is not queued yet: dropping it (the caller gave up, or the
/// queue refused the frame) returns the window.
struct Unsent<'a> {
    state: &'a ConnState,
    seq: u64,
    bytes: u64,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        self.state.machine().unsend(self.seq, self.bytes);
    }
}

/// A caller's place in the queue for window. If it is dropped after the grant came, the
/// granted call never leaves: its window goes back.
struct GrantWait<'a> {
    rx: oneshot::Receiver<u64>,
    state: &'a ConnState,
    bytes: u64,
}

impl Drop for GrantWait<'_> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(seq) = self.rx.try_recv() {
            self.state.machine().unsend(seq, self.bytes);
        }
    }
}

impl Peer {
    pub(crate) fn new(session: Session<Frame>, state: Arc<ConnState>) -> Peer {
        Peer {
            session,
            state,
            deadline: None,
        }
    }

    /// The same connection, with calls bounded by `deadline` (a served call's).
    pub(crate) fn with_deadline(&self, deadline: Option<Instant>) -> Peer {
        Peer {
            deadline,
            ..self.clone()
        }
    }

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
        let m = self.state.machine();
        let c = m.counters();
        PeerStats {
            pending: m.pending_len(),
            waiting: m.waiting_len(),
            inflight: m.inflight(),
            late_replies: c.late_replies,
            refused: c.refused,
            peer_flow_control: m.peer_flow(),
            streams: m.stream_count(),
        }
    }

    /// The time this call may take: its own timeout (or the default), and never past the
    /// deadline of the call this peer handle serves.
    fn call_deadline(&self, timeout: Option<Duration>) -> (Instant, Duration) {
        let now = Instant::now();
        let t = timeout.unwrap_or(self.state.opts.default_timeout);
        let t = match self.deadline {
            Some(d) => t.min(d.saturating_duration_since(now)),
            None => t,
        };
        (now + t, t)
    }

    /// Takes window for a call of `frame`'s size (waiting for it until `deadline`), then queues
    /// the frame with its seq and budget. Returns the seq.
    pub(crate) async fn send_call(
        &self,
        mut frame: Frame,
        what: Await<RtIo>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<u64, RpcError> {
        crate::compression::deflate(&self.state, &mut frame);
        let bytes = frame::encoded_len(&frame) as u64;
        if bytes > self.state.opts.max_frame as u64 {
            return Err(RpcError::bad_request(format!(
                "request not sendable: frame of {bytes} bytes exceeds the limit of {} bytes",
                self.state.opts.max_frame
            )));
        }
        let started = {
            let mut m = self.state.machine();
            match m.start_call(bytes, what) {
                Start::Send(seq) => Ok(seq),
                Start::Closed(_) => return Err(RpcError::closed("connection closed")),
                Start::Full(w) => {
                    let (tx, rx) = oneshot::channel();
                    m.wait(bytes, w, tx);
                    Err(rx)
                }
            }
        };
        let waited = started.is_err();
        let seq = match started {
            Ok(seq) => seq,
            Err(rx) => {
                let mut wait = GrantWait {
                    rx,
                    state: &self.state,
                    bytes,
                };
                match tokio::time::timeout_at(deadline.into(), &mut wait.rx).await {
                    Ok(Ok(seq)) => seq,
                    Ok(Err(_)) => return Err(RpcError::closed("connection closed")),
                    Err(_) => return Err(timeout_err(timeout)),
                }
            }
        };
        let unsent = Unsent {
            state: &self.state,
            seq,
            bytes,
        };
        frame.seq = seq;
        if frame.kind == Kind::Request || frame.timeout_ms > 0 {
            // Without a wait the whole budget is left (no clock read on the common path).
            let left = if waited {
                deadline.saturating_duration_since(Instant::now())
            } else {
                timeout
            };
            if left.is_zero() {
                return Err(timeout_err(timeout));
            }
            frame.timeout_ms = budget_ms(left);
        }
        tracing::Span::current().record("seq", seq);
        // The common case: room in the queue, no timer.
        match self.session.try_send_pkg(&frame) {
            Ok(_) => {
                std::mem::forget(unsent);
                return Ok(seq);
            }
            Err(getty_core::Error::QueueFull { .. }) => {}
            Err(e) => return Err(encode_err(e)),
        }
        match tokio::time::timeout_at(deadline.into(), self.session.send_pkg(&frame)).await {
            Ok(Ok(_)) => {
                std::mem::forget(unsent);
                Ok(seq)
            }
            Ok(Err(e)) => Err(encode_err(e)),
            Err(_) => Err(timeout_err(timeout)),
        }
    }

    /// Sends a request now and returns the future of its reply: the form for many concurrent
    /// calls. Waits while the other end's window or the write queue is full, never past the
    /// call's deadline.
    pub async fn start_call_raw(
        &self,
        service: &str,
        method: &str,
        codec: CodecId,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<PendingCall, RpcError> {
        let (deadline, timeout) = self.call_deadline(opts.timeout);
        // Middleware hook: with outbound layers the call runs through them (see middleware.rs).
        if let Some(chain) = self.state.layers.outbound_chain() {
            return crate::middleware::start_outbound(
                chain,
                self,
                service,
                method,
                codec,
                body,
                opts.metadata,
                deadline,
            )
            .await;
        }
        self.start_call_at(
            service,
            method,
            codec,
            body,
            opts.metadata,
            deadline,
            timeout,
        )
        .await
    }

    /// [`Peer::start_call_raw`] past the layers, with the deadline already fixed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_call_at(
        &self,
        service: impl Into<crate::frame::Name>,
        method: impl Into<crate::frame::Name>,
        codec: CodecId,
        body: Bytes,
        metadata: Vec<(String, String)>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<PendingCall, RpcError> {
        let (tx, rx) = oneshot::channel();
        let mut frame = Frame::request(0, codec, service, method, body);
        frame.metadata = metadata;
        tracing::trace!(service = %frame.service, method = %frame.method, peer = self.id(), "rpc call");
        let seq = self
            .send_call(frame, Await::Reply(tx), deadline, timeout)
            .await?;
        // From here on, dropping the call removes the waiter and cancels.
        Ok(PendingCall {
            seq,
            codec,
            rx: Some(rx),
            sleep: Some(Box::pin(tokio::time::sleep_until(deadline.into()))),
            timeout,
            peer: Some(self.clone()),
            layered: None,
        })
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

    /// A one-way call: no reply, no pending state. Returns once the request is queued; waits
    /// while the other end's window or the write queue is full (for at most the timeout).
    pub async fn notify_raw(
        &self,
        service: &str,
        method: &str,
        codec: CodecId,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<(), RpcError> {
        let has_deadline = opts.timeout.is_some() || self.deadline.is_some();
        let (deadline, timeout) = self.call_deadline(opts.timeout);
        // Middleware hook: with outbound layers the call runs through them (see middleware.rs).
        if let Some(chain) = self.state.layers.outbound_chain() {
            let d = has_deadline.then_some(deadline);
            let kind = crate::middleware::CallKind::OneWay;
            let call = crate::middleware::outbound(
                chain,
                self,
                kind,
                service,
                method,
                codec,
                body,
                opts.metadata,
                d,
            );
            return call.await.map(|_| ());
        }
        self.notify_at(
            service,
            method,
            codec,
            body,
            opts.metadata,
            has_deadline,
            deadline,
            timeout,
        )
        .await
    }

    /// [`Peer::notify_raw`] past the layers, with the deadline already fixed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn notify_at(
        &self,
        service: impl Into<crate::frame::Name>,
        method: impl Into<crate::frame::Name>,
        codec: CodecId,
        body: Bytes,
        metadata: Vec<(String, String)>,
        has_deadline: bool,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), RpcError> {
        let mut frame = Frame::one_way(0, codec, service, method, body);
        // A budget travels only if the caller set one (or serves a call that has one).
        frame.timeout_ms = u32::from(has_deadline);
        frame.metadata = metadata;
        self.send_call(frame, Await::Nothing, deadline, timeout)
            .await
            .map(|_| ())
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
        let (tx, rx) = oneshot::channel();
        let seq = self
            .state
            .machine()
            .start_ping(tx)
            .map_err(|_| RpcError::closed("connection closed"))?;
        let start = Instant::now();
        let call = PendingCall {
            seq,
            // A Pong carries no codec.
            codec: CodecId::None,
            rx: Some(rx),
            sleep: Some(Box::pin(tokio::time::sleep(timeout))),
            timeout,
            peer: Some(self.clone()),
            layered: None,
        };
        if let Err(e) = self.session.send_pkg(&Frame::ping(seq)).await {
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
    /// The reply and the deadline's timer; `None` for a layered call, which has its own.
    rx: Option<oneshot::Receiver<Result<Frame, RpcError>>>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
    /// `Some` while the call is pending.
    peer: Option<Peer>,
    /// With outbound layers: the chain, which sends the call and waits for its reply itself.
    layered: Option<Layered>,
}

/// A call that outbound layers run.
pub(crate) enum Layered {
    /// The chain is still running: it sends the call and waits for the reply itself.
    Running(futures_util::future::BoxFuture<'static, Result<Bytes, RpcError>>),
    /// The chain finished on its first poll (a layer answered, or the reply was already in).
    Done(Option<Result<Bytes, RpcError>>),
}

impl PendingCall {
    /// The call's seq; 0 for a call running through outbound layers (the layers send it).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// A call that outbound layers run (no channel and no timer of its own).
    pub(crate) fn layered(l: Layered) -> PendingCall {
        PendingCall {
            seq: 0,
            codec: CodecId::None,
            rx: None,
            sleep: None,
            timeout: Duration::MAX,
            peer: None,
            layered: Some(l),
        }
    }

    /// Gives up on the call: forget the waiter and tell the callee (a Cancel, queued by the
    /// machine so it is never lost to a full write queue).
    fn abandon(&mut self) {
        if let Some(peer) = self.peer.take() {
            let mut m = peer.state.machine();
            m.abandon(self.seq);
            settle(&mut m, &peer.state, &peer.session);
        }
    }
}

impl Future for PendingCall {
    type Output = Result<Bytes, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        match &mut self.layered {
            Some(Layered::Running(f)) => return f.as_mut().poll(cx),
            Some(Layered::Done(r)) => {
                return Poll::Ready(
                    r.take()
                        .unwrap_or_else(|| Err(RpcError::internal("polled after completion"))),
                );
            }
            None => {}
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(Err(RpcError::internal("polled after completion")));
        };
        if let Poll::Ready(r) = Pin::new(rx).poll(cx) {
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
        if self
            .sleep
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
        {
            self.abandon();
            return Poll::Ready(Err(timeout_err(self.timeout)));
        }
        Poll::Pending
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.abandon();
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
