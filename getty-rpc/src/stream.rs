//! Streaming calls (`PROTOCOL.md` section 20), in either direction on one connection: a
//! [`StreamReceiver`] is a `futures::Stream` of items, a [`StreamSender`]'s `send().await` waits
//! for the receiver's credit, so a slow consumer holds back only its own stream. Typed halves
//! ([`Receiver`], [`Sender`]) encode items with a body strategy, as unary calls do.
//!
//! Ends: dropping or finishing the opener's sender half-closes the stream; dropping the
//! opener's receiver cancels the stream; the acceptor's handler returning ends the whole stream
//! with its outcome; the stream's deadline covers all of it; the connection closing fails every
//! open stream on both ends at once.
//!
//! Layers ([`middleware`](crate::middleware)) see a stream's open on both paths and its outcome;
//! they do not see its items (only their counts, [`StreamItems`]): see `middleware/streams.rs`.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskCx, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use getty_core::Session;
use tokio::sync::{mpsc, oneshot};

use crate::body::BodyCodec;
use crate::error::RpcError;
use crate::frame::{CodecId, Frame};
use crate::machine::{Await, SendCredit, StreamKey, due, spend_reserve};
use crate::middleware::StreamItems;
use crate::peer::{CallOptions, ConnState, Peer, settle};
use crate::router::BoxFuture;
use crate::status::Status;

/// The shape of a streaming method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// One request, many replies.
    Server,
    /// Many requests, one reply.
    Client,
    /// Many both ways.
    Bidi,
}

impl StreamKind {
    /// The name reflection uses: `server`, `client`, `bidi`.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Server => "server",
            StreamKind::Client => "client",
            StreamKind::Bidi => "bidi",
        }
    }
}

/// What reaches a receiving half.
#[derive(Debug)]
pub(crate) enum Event {
    Item(Bytes),
    End(Status, String),
}

fn closed() -> RpcError {
    RpcError::closed("connection closed")
}

/// The receiving half of a stream: raw item bodies in the stream's codec.
pub struct StreamReceiver {
    rx: mpsc::UnboundedReceiver<Event>,
    key: StreamKey,
    state: Arc<ConnState>,
    session: Session<Frame>,
    /// The opener's deadline for the whole stream.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
    done: bool,
    /// With layers installed: the item count they read at the end.
    tap: Option<StreamItems>,
    /// The opener's layers wait here for the stream's outcome (what this half saw of its end).
    outcome: Option<oneshot::Sender<Result<(), RpcError>>>,
    /// Items and bytes consumed since the last report to the machine, and how many more the
    /// machine said may go before a grant is due: reporting only then takes the lock once per
    /// grant instead of once per item, and grants go at the same item as ever.
    unreported: (u32, u64),
    left: (u32, u64),
}

impl StreamReceiver {
    /// The stream's id (the opener's seq).
    pub fn id(&self) -> u64 {
        self.key.seq
    }

    /// Attaches the layers' item count and (opener) where the outcome goes.
    pub(crate) fn tap(
        &mut self,
        items: Option<StreamItems>,
        outcome: Option<oneshot::Sender<Result<(), RpcError>>>,
    ) {
        self.tap = items;
        self.outcome = outcome;
    }

    /// Tells the opener's layers how the stream ended, once.
    fn report(&mut self, r: Result<(), RpcError>) {
        if let Some(tx) = self.outcome.take() {
            let _ = tx.send(r);
        }
    }

    fn give_up(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let mut m = self.state.machine();
        if self.key.ours {
            if let Some(wake) = m.cancel_ours(self.key) {
                drop(wake);
            }
        } else {
            m.drop_receiver(self.key);
        }
        settle(&mut m, &self.state, &self.session);
    }
}

impl Stream for StreamReceiver {
    type Item = Result<Bytes, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Event::Item(b))) => {
                let this = &mut *self;
                if let Some(t) = &this.tap {
                    t.received_one();
                }
                this.unreported.0 = this.unreported.0.saturating_add(1);
                this.unreported.1 = this.unreported.1.saturating_add(b.len() as u64);
                if due(this.unreported, this.left) {
                    let (items, bytes) = std::mem::take(&mut this.unreported);
                    let mut m = this.state.machine();
                    this.left = m.consumed(this.key, items, bytes);
                    settle(&mut m, &this.state, &this.session);
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Event::End(Status::Ok, _))) => {
                self.done = true;
                self.report(Ok(()));
                Poll::Ready(None)
            }
            Poll::Ready(Some(Event::End(status, msg))) => {
                self.done = true;
                let e = RpcError::new(status, msg);
                self.report(Err(e.clone()));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                self.report(Err(closed()));
                Poll::Ready(Some(Err(closed())))
            }
            Poll::Pending => {
                if let Some(sleep) = self.sleep.as_mut()
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    self.give_up();
                    let t = self.timeout;
                    let e =
                        RpcError::new(Status::Timeout, format!("stream not finished within {t:?}"));
                    self.report(Err(e.clone()));
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        // The opener dropping its receiver cancels the stream (the acceptor is told).
        if !self.done {
            self.report(Err(RpcError::new(
                Status::Cancelled,
                "the receiver was dropped before the stream ended",
            )));
        }
        self.give_up();
    }
}

/// The sending half of a stream: raw item bodies in the stream's codec.
pub struct StreamSender {
    key: StreamKey,
    state: Arc<ConnState>,
    session: Session<Frame>,
    codec: CodecId,
    deadline: Option<Instant>,
    ended: bool,
    /// With layers installed: the item count they read at the end.
    tap: Option<StreamItems>,
    /// Credit taken from the machine for later items (items, bytes), spent without the lock
    /// while `epoch` still reads `seen` (no stream on the connection ended since).
    reserve: (u32, u64),
    epoch: Option<Arc<AtomicU64>>,
    seen: u64,
}

impl StreamSender {
    /// Attaches the layers' item count.
    pub(crate) fn tap(&mut self, items: Option<StreamItems>) {
        self.tap = items;
    }

    /// The stream's id (the opener's seq).
    pub fn id(&self) -> u64 {
        self.key.seq
    }

    /// Sends one item, waiting while the receiver has granted no credit for it (never past
    /// the stream's deadline). Fails once the stream is over.
    pub async fn send(&mut self, item: Bytes) -> Result<(), RpcError> {
        let bytes = item.len() as u64;
        let reserved = !self.ended
            && self
                .epoch
                .as_ref()
                .is_some_and(|e| e.load(Ordering::Acquire) == self.seen)
            && spend_reserve(&mut self.reserve, bytes);
        if !reserved {
            self.take_credit(bytes).await?;
        }
        let f = Frame::stream_item(self.key.seq, !self.key.ours, self.codec, item);
        // The common case queues at once, with no future; a full queue waits below.
        match self.session.try_send_pkg(&f) {
            Ok(_) => {}
            Err(getty_core::Error::QueueFull { .. }) => {
                let send = self.session.send_pkg(&f);
                let r = match self.deadline {
                    Some(d) => tokio::time::timeout_at(d.into(), send).await.map_err(|_| {
                        RpcError::new(Status::Timeout, "the write queue stayed full")
                    })?,
                    None => send.await,
                };
                r.map_err(RpcError::from)?;
            }
            Err(e) => return Err(RpcError::from(e)),
        }
        if let Some(t) = &self.tap {
            t.sent_one();
        }
        Ok(())
    }

    /// Takes credit for one item of `bytes` from the machine (and the rest into the reserve),
    /// waiting while there is none.
    async fn take_credit(&mut self, bytes: u64) -> Result<(), RpcError> {
        loop {
            let wait = {
                let mut m = self.state.machine();
                let epoch = self.epoch.get_or_insert_with(|| m.stream_epoch().clone());
                // Read under the lock: every end the machine counted so far is seen below.
                self.seen = epoch.load(Ordering::Acquire);
                match m.take_send_credit(self.key, bytes, &mut self.reserve) {
                    SendCredit::Go => None,
                    SendCredit::Blocked => {
                        let (tx, rx) = oneshot::channel();
                        m.block_sender(self.key, tx);
                        Some(rx)
                    }
                    SendCredit::Ended(status) => {
                        return Err(ended(status, m.is_closed()));
                    }
                }
            };
            let Some(rx) = wait else { return Ok(()) };
            match self.deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d.into(), rx).await.is_err() {
                        return Err(RpcError::new(
                            Status::Timeout,
                            "no credit to send within the stream's deadline",
                        ));
                    }
                }
                None => {
                    let _ = rx.await;
                }
            }
        }
    }

    /// Ends this side's items (the opener's half-close); the acceptor's side ends when its
    /// handler returns. Also what dropping the sender does.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.ended, true) || !self.key.ours {
            return;
        }
        let mut m = self.state.machine();
        m.end_our_half(self.key);
        settle(&mut m, &self.state, &self.session);
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        self.finish();
    }
}

fn ended(status: Status, conn_closed: bool) -> RpcError {
    if conn_closed {
        return closed();
    }
    match status {
        Status::Ok => RpcError::new(Status::Cancelled, "this side of the stream has ended"),
        s => RpcError::new(s, "the stream has ended"),
    }
}

/// Builds the two halves of the stream `key` on `peer`'s connection.
pub(crate) fn halves(
    peer: &Peer,
    key: StreamKey,
    codec: CodecId,
    rx: mpsc::UnboundedReceiver<Event>,
    deadline: Option<Instant>,
    timeout: Duration,
) -> (StreamSender, StreamReceiver) {
    let sender = StreamSender {
        key,
        state: peer.state.clone(),
        session: peer.session.clone(),
        codec,
        deadline,
        ended: false,
        tap: None,
        reserve: (0, 0),
        epoch: None,
        seen: 0,
    };
    let receiver = StreamReceiver {
        rx,
        key,
        state: peer.state.clone(),
        session: peer.session.clone(),
        // Only the opener runs the deadline here; the acceptor's handler task is bounded by it.
        sleep: deadline
            .filter(|_| key.ours)
            .map(|d| Box::pin(tokio::time::sleep_until(d.into()))),
        timeout,
        done: false,
        tap: None,
        outcome: None,
        unreported: (0, 0),
        left: (0, 0),
    };
    (sender, receiver)
}

impl Peer {
    /// Opens a stream to `service`/`method` on the other end and returns both halves (for any
    /// kind: a server stream sends one item and finishes, a client stream reads one reply).
    /// Without `opts.timeout` a stream has no deadline of its own (only a served call's).
    /// Layers see it as a [`CallKind::Stream`](crate::CallKind::Stream) of kind `Bidi`: both
    /// halves are the caller's to use.
    pub async fn open_stream_raw(
        &self,
        service: &str,
        method: &str,
        codec: CodecId,
        opts: CallOptions,
    ) -> Result<(StreamSender, StreamReceiver), RpcError> {
        self.open_kind(StreamKind::Bidi, service, method, codec, opts)
            .await
    }

    /// [`open_stream_raw`](Self::open_stream_raw) telling the layers which kind it opens.
    pub(crate) async fn open_kind(
        &self,
        kind: StreamKind,
        service: &str,
        method: &str,
        codec: CodecId,
        opts: CallOptions,
    ) -> Result<(StreamSender, StreamReceiver), RpcError> {
        let now = Instant::now();
        let mut deadline = opts.timeout.map(|t| now + t);
        if let Some(d) = self.deadline {
            deadline = Some(deadline.map_or(d, |x| x.min(d)));
        }
        // Middleware hook: with outbound layers the open runs through them (middleware/streams.rs).
        if let Some(chain) = self.state.layers.outbound_chain() {
            let call = crate::middleware::Call::stream_out(
                self,
                kind,
                service,
                method,
                codec,
                opts.metadata,
                deadline,
            );
            return crate::middleware::streams::open(chain, call).await;
        }
        self.open_at(service, method, codec, opts.metadata, deadline, now)
            .await
    }

    /// Sends the StreamOpen (once the peer is known to take streams) and builds the halves;
    /// `now` is when the stream's timeout started.
    pub(crate) async fn open_at(
        &self,
        service: &str,
        method: &str,
        codec: CodecId,
        metadata: Vec<(String, String)>,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Result<(StreamSender, StreamReceiver), RpcError> {
        let timeout = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
        // Whether the peer takes streams is known from its first frame.
        let wait_until = deadline.unwrap_or(now + self.state.opts.default_timeout);
        loop {
            let known = self.state.peer_known_now.notified();
            tokio::pin!(known);
            known.as_mut().enable();
            match self.state.machine().peer_streams() {
                Some(true) => break,
                Some(false) => {
                    return Err(RpcError::new(
                        Status::UnknownMethod,
                        "the other end does not take streams (its Hello announced none)",
                    ));
                }
                None => {}
            }
            if tokio::time::timeout_at(wait_until.into(), known)
                .await
                .is_err()
            {
                return Err(RpcError::new(
                    Status::Timeout,
                    "the other end said nothing before the stream's deadline",
                ));
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut frame = Frame::stream_open(0, codec, service, method);
        frame.metadata = metadata;
        // A budget travels only with a deadline.
        frame.timeout_ms = u32::from(deadline.is_some());
        let far = now + Duration::from_secs(365 * 24 * 3600);
        let seq = self
            .send_call(frame, Await::Stream(tx), deadline.unwrap_or(far), timeout)
            .await?;
        Ok(halves(
            self,
            StreamKey { seq, ours: true },
            codec,
            rx,
            deadline,
            timeout,
        ))
    }

    /// Opens a typed bidirectional stream: items of `Out` go, items of `In` come back.
    pub async fn open_stream<B, Out, In>(
        &self,
        service: &str,
        method: &str,
        opts: CallOptions,
    ) -> Result<(Sender<B, Out>, Receiver<B, In>), RpcError>
    where
        B: BodyCodec<Out> + BodyCodec<In>,
    {
        self.open_typed(StreamKind::Bidi, service, method, opts)
            .await
    }

    async fn open_typed<B, Out, In>(
        &self,
        kind: StreamKind,
        service: &str,
        method: &str,
        opts: CallOptions,
    ) -> Result<(Sender<B, Out>, Receiver<B, In>), RpcError>
    where
        B: BodyCodec<Out> + BodyCodec<In>,
    {
        let codec = opts.codec.unwrap_or(<B as BodyCodec<Out>>::CODECS[0]);
        let (tx, rx) = self.open_kind(kind, service, method, codec, opts).await?;
        Ok((Sender::new(tx, codec), Receiver::new(rx, codec)))
    }

    /// A server stream: sends `req`, then receives the items.
    pub async fn server_stream<B, Req, Item>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Receiver<B, Item>, RpcError>
    where
        B: BodyCodec<Req> + BodyCodec<Item>,
    {
        let (mut tx, mut rx) = self
            .open_typed::<B, Req, Item>(StreamKind::Server, service, method, opts)
            .await?;
        if let Err(e) = tx.send(req).await {
            // A stream the acceptor already ended (a refused open) says why in its receiver.
            use futures_util::{FutureExt, StreamExt};
            return Err(match rx.next().now_or_never() {
                Some(Some(Err(end))) => end,
                _ => e,
            });
        }
        tx.finish();
        Ok(rx)
    }

    /// A client stream: send items with the sender, then await the one reply.
    pub async fn client_stream<B, Item, Resp>(
        &self,
        service: &str,
        method: &str,
        opts: CallOptions,
    ) -> Result<(Sender<B, Item>, Receiver<B, Resp>), RpcError>
    where
        B: BodyCodec<Item> + BodyCodec<Resp>,
    {
        self.open_typed::<B, Item, Resp>(StreamKind::Client, service, method, opts)
            .await
    }
}

/// A typed receiving half: a `futures::Stream` of `Result<T, RpcError>`.
pub struct Receiver<B, T> {
    inner: StreamReceiver,
    codec: CodecId,
    _t: PhantomData<fn() -> (B, T)>,
}

impl<B: BodyCodec<T>, T> Receiver<B, T> {
    pub(crate) fn new(inner: StreamReceiver, codec: CodecId) -> Self {
        Receiver {
            inner,
            codec,
            _t: PhantomData,
        }
    }

    /// The raw half.
    pub fn into_raw(self) -> StreamReceiver {
        self.inner
    }

    /// The one reply of a client stream: its only item, then the end.
    pub async fn reply(mut self) -> Result<T, RpcError> {
        use futures_util::StreamExt;
        let first = match self.next().await {
            Some(r) => r?,
            None => {
                return Err(RpcError::new(
                    Status::Internal,
                    "the stream ended without a reply",
                ));
            }
        };
        match self.next().await {
            None => Ok(first),
            Some(Err(e)) => Err(e),
            Some(Ok(_)) => Err(RpcError::new(
                Status::Internal,
                "a client stream answered more than one reply",
            )),
        }
    }
}

impl<B: BodyCodec<T>, T> Stream for Receiver<B, T> {
    type Item = Result<T, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Option<Self::Item>> {
        let codec = self.codec;
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                Poll::Ready(Some(B::decode_shared(codec, &b).map_err(|e| {
                    RpcError::new(
                        Status::BadRequest,
                        format!("stream item did not decode: {}", e.message),
                    )
                })))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

// A typed half holds no pinned state of its own.
impl<B, T> Unpin for Receiver<B, T> {}

/// A typed sending half.
pub struct Sender<B, T> {
    inner: StreamSender,
    codec: CodecId,
    _t: PhantomData<fn(B, T)>,
}

impl<B: BodyCodec<T>, T> Sender<B, T> {
    pub(crate) fn new(inner: StreamSender, codec: CodecId) -> Self {
        Sender {
            inner,
            codec,
            _t: PhantomData,
        }
    }

    /// Encodes and sends one item, waiting for credit (see [`StreamSender::send`]).
    pub fn send(
        &mut self,
        item: &T,
    ) -> impl std::future::Future<Output = Result<(), RpcError>> + Send + '_ {
        // Encoded before the future, so it holds no reference to `item`.
        let mut body = BytesMut::new();
        let encoded = B::encode(self.codec, item, &mut body).map(|()| body.freeze());
        async move { self.inner.send(encoded?).await }
    }

    /// Ends this side's items (see [`StreamSender::finish`]).
    pub fn finish(&mut self) {
        self.inner.finish();
    }

    /// The raw half.
    pub fn into_raw(self) -> StreamSender {
        self.inner
    }
}

/// A raw stream handler: gets the call's context and both halves of the stream; its outcome
/// ends the stream (`Ok`: a normal end).
pub trait StreamHandler: Send + Sync + 'static {
    fn call(
        &self,
        ctx: crate::context::Context,
        items: StreamReceiver,
        out: StreamSender,
    ) -> BoxFuture<Result<(), RpcError>>;
}

impl<F, Fut> StreamHandler for F
where
    F: Fn(crate::context::Context, StreamReceiver, StreamSender) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), RpcError>> + Send + 'static,
{
    fn call(
        &self,
        ctx: crate::context::Context,
        items: StreamReceiver,
        out: StreamSender,
    ) -> BoxFuture<Result<(), RpcError>> {
        Box::pin(self(ctx, items, out))
    }
}
