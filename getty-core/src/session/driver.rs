//! The tasks behind a session, the same for every transport.
//!
//! Each session has two tasks:
//! - the **session task** owns the read half: it reads in large chunks, deframes, dispatches
//!   `on_message` (inline, or to the task pool), ticks `on_cron`, and at the end runs the close
//!   sequence (`on_error`, `on_close`, close callbacks) exactly once;
//! - the **writer task** owns the write half: it takes every queued write that is ready and
//!   puts them on the socket in one batch, so many small frames cost one syscall.
//!
//! Transports plug in through [`Source`] and [`Sink`]; they only move bytes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::TaskTracker;

use futures_util::FutureExt;

use crate::codec::{DeframeError, Deframer, Step};
use crate::endpoint::budget::{Charge, PartialBudget};
use crate::error::{Error, Result};
use crate::pool::TaskPool;
use crate::session::callbacks::{panic_message, run_all};
use crate::session::config::SessionConfig;
use crate::session::listener::EventListener;
use crate::session::{NewInner, Session, WriteReq};

/// What one read produced.
pub(crate) enum Input {
    /// The peer closed its side.
    Eof,
    /// Bytes were appended to the buffer (stream transports).
    Stream(usize),
    /// The buffer holds exactly one message (WebSocket message, UDP datagram).
    Message { peer: Option<SocketAddr> },
    /// A transport keep-alive arrived (WebSocket ping or pong): activity, but no package.
    Control,
    /// Bytes of a message arrived but the message is not complete (WebSocket): not activity;
    /// the read timeout runs from the first such read.
    Partial,
}

/// The read half of a transport. `read` must be cancel-safe: it runs inside `select!`.
pub(crate) trait Source: Send + 'static {
    /// `chunk` is the session's read size: how much room a stream source makes in `buf`
    /// before a read (only once bytes are ready, so an idle session holds no buffer).
    fn read(
        &mut self,
        buf: &mut BytesMut,
        chunk: usize,
    ) -> impl Future<Output = io::Result<Input>> + Send;
}

/// The write half of a transport.
pub(crate) trait Sink: Send + 'static {
    /// Writes every request of the batch, in order; returns the bytes put on the wire.
    fn write_batch(&mut self, batch: &[WriteReq]) -> impl Future<Output = io::Result<u64>> + Send;
    /// Ends the connection politely (TCP FIN, WebSocket close 1000).
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
    /// Whether the session should queue a keep-alive each cron period (WebSocket).
    fn wants_pings(&self) -> bool {
        false
    }
}

/// Where a session's tasks are tracked and how messages are dispatched: shared by one endpoint.
#[derive(Clone)]
pub(crate) struct Runtime {
    pub(crate) tracker: TaskTracker,
    pub(crate) pool: Option<TaskPool>,
    /// The server's partial-package budget (stream transports; `None`: no cap).
    pub(crate) budget: Option<Arc<PartialBudget>>,
}

/// A session that passed the new-session callback and `on_open`, ready to run.
pub(crate) struct Opened<P, S, K> {
    pub(crate) session: Session<P>,
    listener: Arc<dyn EventListener<P>>,
    deframer: Deframer<P>,
    rx: mpsc::Receiver<WriteReq>,
    source: S,
    sink: K,
}

/// Builds the session from the callback's settings and calls `on_open`.
pub(crate) fn open<P, S, K>(
    mut cfg: SessionConfig<P>,
    new_session: &crate::session::config::NewSessionCallback<P>,
    source: S,
    sink: K,
    needs_peer: bool,
    on_created: impl FnOnce(&Session<P>),
) -> Result<Opened<P, S, K>>
where
    P: Send + 'static,
    S: Source,
    K: Sink,
{
    let id = cfg.id;
    // A panicking callback rejects the connection like an `Err` would (and the endpoint's
    // accept or dial loop goes on).
    catch_unwind(AssertUnwindSafe(|| new_session(&mut cfg)))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))))
        .map_err(|reason| Error::Rejected {
            session: id,
            by: "the new-session callback",
            reason,
        })?;
    cfg.options.validate()?;
    let not_set = |what| Error::NotConfigured { session: id, what };
    let deframer = cfg.deframer.ok_or_else(|| not_set("a reader"))?;
    let writer = cfg.writer.ok_or_else(|| not_set("a writer"))?;
    let listener = cfg.listener.ok_or_else(|| not_set("an event listener"))?;
    let (session, rx) = Session::new(NewInner {
        id,
        name: cfg.name,
        endpoint: cfg.endpoint,
        local: cfg.local,
        remote: cfg.remote,
        opts: cfg.options,
        writer,
        needs_peer,
    });
    // The endpoint lists the session before `on_open`, so the listener finds it there.
    on_created(&session);
    let opened = catch_unwind(AssertUnwindSafe(|| listener.on_open(&session)))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))));
    if let Err(reason) = opened {
        session.close();
        // No `on_close` for a rejected session, but what `on_open` registered is released and
        // `Session::closed` completes.
        run_close_callbacks(&session);
        return Err(Error::Rejected {
            session: id,
            by: "on_open",
            reason,
        });
    }
    Ok(Opened {
        session,
        listener,
        deframer,
        rx,
        source,
        sink,
    })
}

impl<P: Send + 'static, S: Source, K: Sink> Opened<P, S, K> {
    /// Spawns the writer task and runs the session task body on the current task.
    pub(crate) async fn run(self, rt: Runtime) {
        let Opened {
            session,
            listener,
            mut deframer,
            rx,
            mut source,
            sink,
        } = self;
        let pings = sink.wants_pings();
        let writer = rt.tracker.spawn(write_loop(session.clone(), rx, sink));
        // A panic anywhere in the loop (the reader, a tokio decoder, `on_cron`) ends the session
        // like an error: the close sequence below still runs, once.
        let res = AssertUnwindSafe(read_loop(
            &session,
            &listener,
            &mut deframer,
            &mut source,
            pings,
            &rt,
        ))
        .catch_unwind()
        .await
        .unwrap_or_else(|p| {
            Err(Error::Panicked {
                session: session.id(),
                what: "a session callback (on_cron, the reader or the decoder)",
                message: panic_message(&*p),
            })
        });
        match res {
            // A framing violation: the stream cannot be trusted, so nothing more is sent.
            Err(e @ (Error::TooLong { .. } | Error::Decode { .. } | Error::BadReader { .. })) => {
                session.abort(e)
            }
            Err(e) => session.fail(e),
            Ok(()) => {}
        }
        session.close();
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| listener.on_closing(&session))) {
            tracing::error!(session = session.id(), panic = %panic_message(&*p), "on_closing panicked");
        }
        let _ = writer.await;
        drop(source);
        finish(&session, &*listener);
    }
}

/// The close sequence: `on_error` (if any), `on_close`, callbacks in order. Runs once.
fn finish<P: Send + 'static>(session: &Session<P>, listener: &dyn EventListener<P>) {
    let err = session
        .inner
        .close_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let guarded = |what: &'static str, f: &dyn Fn()| {
        if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
            tracing::error!(session = session.id(), panic = %panic_message(&*p), "{what} panicked");
        }
    };
    if let Some(e) = &err {
        tracing::debug!(session = session.id(), error = %e, "session failed");
        guarded("on_error", &|| listener.on_error(session, e));
    }
    guarded("on_close", &|| listener.on_close(session));
    // Kept for the endpoint (a client reports why a session that did no useful work ended).
    if let Some(e) = err {
        *session
            .inner
            .close_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(e);
    }
    run_close_callbacks(session);
}

/// The end of every close: close callbacks (once: the list is taken), attributes dropped, and
/// `Session::closed` woken.
fn run_close_callbacks<P: Send + 'static>(session: &Session<P>) {
    let cbs = session
        .inner
        .callbacks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    run_all(session.id(), cbs);
    session
        .inner
        .attrs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    session.inner.finished.cancel();
}

fn deframe_error(id: u64, e: DeframeError) -> Error {
    match e {
        DeframeError::TooLong(len) => Error::TooLong {
            session: id,
            len,
            max: 0,
        },
        DeframeError::Codec(source) => Error::Decode {
            session: id,
            source,
        },
        DeframeError::BadReader(reason) => Error::BadReader {
            session: id,
            reason,
        },
    }
}

/// Hands one package to the listener: inline (ordered) or on the pool.
async fn dispatch<P: Send + 'static>(
    session: &Session<P>,
    listener: &Arc<dyn EventListener<P>>,
    pool: Option<&TaskPool>,
    pkg: P,
) -> Result<()> {
    session.inner.stats.add_read_pkg();
    match pool {
        None => catch_unwind(AssertUnwindSafe(|| listener.on_message(session, pkg))).map_err(|p| {
            Error::Panicked {
                session: session.id(),
                what: "on_message",
                message: panic_message(&*p),
            }
        }),
        Some(pool) => {
            let (s, l) = (session.clone(), listener.clone());
            pool.submit(Box::new(move || {
                // As inline: a panicking handler closes its session (the close sequence runs).
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| l.on_message(&s, pkg))) {
                    s.fail(Error::Panicked {
                        session: s.id(),
                        what: "on_message",
                        message: panic_message(&*p),
                    });
                }
            }))
            .await;
            Ok(())
        }
    }?;
    wait_for_room(session).await;
    Ok(())
}

/// Back-pressure from writes to reads: when what the listener queued fills the write queue,
/// the session reads nothing more until the writer has made room (unless turned off with
/// `SessionOptions::pause_reads_when_queue_full`). Replies then never pile up anywhere, and a
/// peer that floods without reading its replies is slowed (and, once its own socket stops
/// taking bytes, timed out by the write timeout). Then, while the listener holds the reads
/// (`Session::hold_reads`), nothing more is read either.
async fn wait_for_room<P: Send + 'static>(session: &Session<P>) {
    let inner = &session.inner;
    if inner.opts.pause_reads_when_queue_full && inner.tx.capacity() == 0 {
        tokio::select! {
            biased;
            _ = inner.closing.cancelled() => return,
            permit = inner.tx.reserve() => drop(permit),
        }
    }
    while inner.read_holds.load(std::sync::atomic::Ordering::Acquire) > 0 {
        let released = inner.reads_released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if inner.read_holds.load(std::sync::atomic::Ordering::Acquire) == 0 {
            break;
        }
        tokio::select! {
            biased;
            _ = inner.closing.cancelled() => return,
            _ = released => {}
        }
    }
}

async fn read_loop<P: Send + 'static, S: Source>(
    session: &Session<P>,
    listener: &Arc<dyn EventListener<P>>,
    deframer: &mut Deframer<P>,
    source: &mut S,
    pings: bool,
    rt: &Runtime,
) -> Result<()> {
    let pool = rt.pool.as_ref();
    let id = session.id();
    let opts = session.options().clone();
    let max = opts.max_msg_len;
    let mut buf = BytesMut::new();
    let mut charge = Charge::new(rt.budget.clone());
    // The packages of one read, reused from read to read.
    let mut chunk: Vec<P> = Vec::new();
    let mut cron = tokio::time::interval_at(Instant::now() + opts.cron_period, opts.cron_period);
    cron.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut closing = Closing::new(session);
    // Set while a partial package sits in the buffer, from the read that brought its first
    // byte: the read timeout bounds the whole package, however slowly it trickles in.
    let mut stall_deadline: Option<Instant> = None;
    // Reads come first: when the socket is ready the other branches are not polled at all
    // (each poll of them costs a lock or a clock read). Every `FAIR_TURN`th wait the control
    // branches go first, so a peer that keeps the socket always readable cannot starve cron.
    let mut turn = 0u32;
    loop {
        if session.is_closed() {
            return Ok(());
        }
        turn = turn.wrapping_add(1);
        let event = if turn & (FAIR_TURN - 1) == 0 {
            tokio::select! {
                biased;
                _ = closing.wait(session) => Event::Closed,
                _ = cron.tick() => Event::Cron,
                _ = sleep_until_opt(stall_deadline) => Event::Stalled,
                r = source.read(&mut buf, opts.read_buf_size) => Event::Read(r),
            }
        } else {
            tokio::select! {
                biased;
                r = source.read(&mut buf, opts.read_buf_size) => Event::Read(r),
                _ = closing.wait(session) => Event::Closed,
                _ = cron.tick() => Event::Cron,
                _ = sleep_until_opt(stall_deadline) => Event::Stalled,
            }
        };
        let input = match event {
            Event::Read(r) => r.map_err(|source| Error::Io {
                session: id,
                source,
            })?,
            Event::Closed => return Ok(()),
            Event::Stalled => {
                return Err(Error::ReadTimeout {
                    session: id,
                    timeout: opts.read_timeout,
                });
            }
            Event::Cron => {
                if pings {
                    session.try_ping();
                }
                match pool {
                    None => listener.on_cron(session),
                    Some(pool) => {
                        let (s, l) = (session.clone(), listener.clone());
                        pool.submit(Box::new(move || {
                            if let Err(p) = catch_unwind(AssertUnwindSafe(|| l.on_cron(&s))) {
                                s.fail(Error::Panicked {
                                    session: s.id(),
                                    what: "on_cron",
                                    message: panic_message(&*p),
                                });
                            }
                        }))
                        .await;
                    }
                }
                continue;
            }
        };
        match input {
            Input::Eof => {
                if !buf.is_empty() {
                    // A stateful codec may still hold a final frame (tokio's `decode_eof`).
                    if let Deframer::Stateful(_) = deframer
                        && let Ok(Some(pkg)) = deframer.one(&mut buf)
                    {
                        // A whole package: activity.
                        session.update_active();
                        dispatch(session, listener, pool, pkg).await?;
                        return Ok(());
                    }
                    return Err(Error::Io {
                        session: id,
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "peer closed with {} bytes of an unfinished package",
                                buf.len()
                            ),
                        ),
                    });
                }
                return Ok(());
            }
            Input::Control => {
                // A whole frame: what was partial is complete.
                stall_deadline = None;
                session.update_active();
            }
            Input::Partial => {
                stall_deadline.get_or_insert_with(|| Instant::now() + opts.read_timeout);
            }
            Input::Stream(n) => {
                session.inner.stats.add_read(n as u64);
                // Only whole packages are activity (a trickle of bytes is not), marked once per
                // read, not per package: it reads the clock.
                // Deframe the whole read before dispatching any of it: after a framing
                // violation nothing is answered, not even packages that came just before it.
                let mut pkg_len = None;
                loop {
                    match deframer.step(&mut buf, max) {
                        Ok(Step::Package(pkg)) => {
                            chunk.push(pkg);
                            if buf.is_empty() {
                                break;
                            }
                        }
                        Ok(Step::NeedMore { pkg_len: n }) => {
                            pkg_len = n;
                            break;
                        }
                        Err(DeframeError::TooLong(len)) => {
                            return Err(Error::TooLong {
                                session: id,
                                len,
                                max,
                            });
                        }
                        Err(e) => return Err(deframe_error(id, e)),
                    }
                }
                let delivered = !chunk.is_empty();
                if delivered {
                    session.update_active();
                }
                for pkg in chunk.drain(..) {
                    if session.is_closed() {
                        return Ok(());
                    }
                    dispatch(session, listener, pool, pkg).await?;
                }
                if buf.is_empty() {
                    stall_deadline = None;
                } else if delivered || stall_deadline.is_none() {
                    // What is left began in this read.
                    stall_deadline = Some(Instant::now() + opts.read_timeout);
                }
                // Hold budget for the partial package (for what its buffer holds, or the whole
                // announced length) before reserving room for it and reading more of it.
                let want = if buf.is_empty() {
                    0
                } else {
                    buf.capacity().max(pkg_len.unwrap_or(0))
                };
                let settled = charge.try_settle(want).map_err(|o| Error::PartialBudget {
                    session: id,
                    want: o.want,
                    budget: o.total,
                })?;
                if !settled {
                    tracing::debug!(
                        session = id,
                        want,
                        "partial-package budget spent; reads paused"
                    );
                    tokio::select! {
                        _ = closing.wait(session) => return Ok(()),
                        _ = sleep_until_opt(stall_deadline) => {
                            return Err(Error::ReadTimeout { session: id, timeout: opts.read_timeout });
                        }
                        _ = charge.wait_for(want) => {}
                    }
                }
                if let Some(n) = pkg_len {
                    // Room for the whole package now, so a big body is read in few syscalls.
                    buf.reserve(n.saturating_sub(buf.len()));
                }
            }
            Input::Message { peer } => {
                stall_deadline = None;
                let n = buf.len();
                session.inner.stats.add_read(n as u64);
                let target = match peer {
                    Some(p) => session.to_peer(p),
                    None => session.clone(),
                };
                if max > 0 && n > max {
                    session.inner.stats.add_dropped();
                    tracing::debug!(
                        session = id,
                        len = n,
                        max,
                        "message over the max length dropped"
                    );
                } else {
                    match deframer.one(&mut buf) {
                        Ok(Some(pkg)) => {
                            session.update_active();
                            dispatch(&target, listener, pool, pkg).await?;
                        }
                        Ok(None) => {
                            session.inner.stats.add_dropped();
                            tracing::debug!(
                                session = id,
                                len = n,
                                "message holds no whole package; dropped"
                            );
                        }
                        Err(e) => {
                            session.inner.stats.add_dropped();
                            tracing::debug!(session = id, error = %deframe_error(id, e), "message rejected by the reader; dropped");
                        }
                    }
                }
                buf.clear();
            }
        }
    }
}

/// Waits for the session to start closing, cheaply enough to poll on every loop turn: the first
/// poll registers for the wake-up (the token's lock); later polls only read the closed flag,
/// which `Inner::start_close` (every close) sets before it cancels the token, and a task's
/// waker never changes.
struct Closing {
    token: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: bool,
}

impl Closing {
    fn new<P: Send + 'static>(session: &Session<P>) -> Closing {
        Closing {
            token: Box::pin(session.inner.closing.clone().cancelled_owned()),
            registered: false,
        }
    }

    fn wait<'a, P: Send + 'static>(
        &'a mut self,
        session: &'a Session<P>,
    ) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            if session.is_closed() {
                return Poll::Ready(());
            }
            if std::mem::replace(&mut self.registered, true) {
                return Poll::Pending;
            }
            self.token.as_mut().poll(cx)
        })
    }
}

/// One in this many waits of the read loop polls the control branches first (a power of two).
const FAIR_TURN: u32 = 16;

/// What woke the read loop.
enum Event {
    Read(io::Result<Input>),
    Closed,
    Cron,
    Stalled,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Most frames coalesced into one write.
const MAX_BATCH: usize = 256;
/// Most bytes coalesced into one write.
const MAX_BATCH_BYTES: usize = 1 << 20;

async fn write_loop<P: Send + 'static, K: Sink>(
    session: Session<P>,
    mut rx: mpsc::Receiver<WriteReq>,
    mut sink: K,
) {
    let id = session.id();
    let opts = session.options().clone();
    let mut closing = Closing::new(&session);
    let mut batch: Vec<WriteReq> = Vec::new();
    let mut healthy = true;
    // Normal operation: write whatever is queued, as one batch.
    loop {
        let first = tokio::select! {
            biased;
            r = rx.recv() => r,
            _ = closing.wait(&session) => break,
        };
        let Some(first) = first else { break };
        fill_batch(&mut batch, first, &mut rx);
        // Most writes finish on their first poll: only a write that has to wait for the socket
        // pays for a timer (and a clock read).
        let res = {
            let mut write = std::pin::pin!(sink.write_batch(&batch));
            match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
                Poll::Ready(r) => Ok(r),
                Poll::Pending => {
                    // A write that outlives close gets only the wait time, not the whole write timeout.
                    let grace = async {
                        closing.wait(&session).await;
                        tokio::time::sleep(opts.wait_time).await;
                    };
                    tokio::select! {
                        r = tokio::time::timeout(opts.write_timeout, write) => r.map_err(|_| opts.write_timeout),
                        _ = grace => Err(opts.wait_time),
                    }
                }
            }
        };
        if !complete(&session, &mut batch, res) {
            healthy = false;
            break;
        }
    }
    // Closing: flush what is already queued, for at most the wait time (nothing after an abort).
    rx.close();
    if session
        .inner
        .discard
        .load(std::sync::atomic::Ordering::Acquire)
    {
        healthy = false;
    }
    let deadline = Instant::now() + opts.wait_time;
    while healthy {
        let Ok(first) = rx.try_recv() else { break };
        fill_batch(&mut batch, first, &mut rx);
        let res = tokio::time::timeout_at(deadline, sink.write_batch(&batch))
            .await
            .map_err(|_| opts.wait_time);
        healthy = complete(&session, &mut batch, res);
    }
    while let Ok(req) = rx.try_recv() {
        if let Some(done) = req.done {
            let _ = done.send(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "session closed before the write",
            )));
        }
    }
    if healthy {
        let _ = tokio::time::timeout_at(
            deadline.max(Instant::now() + Duration::from_millis(100)),
            sink.shutdown(),
        )
        .await;
    }
    tracing::trace!(session = id, "writer finished");
}

fn fill_batch(batch: &mut Vec<WriteReq>, first: WriteReq, rx: &mut mpsc::Receiver<WriteReq>) {
    let mut bytes = first.len();
    batch.push(first);
    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(r) => {
                bytes += r.len();
                batch.push(r);
            }
            Err(_) => break,
        }
    }
}

/// Reports a batch's outcome to its writers; on failure the session ends with the error.
fn complete<P: Send + 'static>(
    session: &Session<P>,
    batch: &mut Vec<WriteReq>,
    res: std::result::Result<io::Result<u64>, Duration>,
) -> bool {
    let id = session.id();
    let (ok, err) = match res {
        Ok(Ok(n)) => {
            let pkgs = batch.iter().map(WriteReq::pkgs).sum();
            session.inner.stats.add_written(n, pkgs);
            (true, None)
        }
        Ok(Err(e)) => (
            false,
            Some(Error::Io {
                session: id,
                source: e,
            }),
        ),
        Err(timeout) => (
            false,
            Some(Error::WriteTimeout {
                session: id,
                timeout,
            }),
        ),
    };
    for req in batch.drain(..) {
        if let Some(done) = req.done {
            let _ = done.send(match &err {
                None => Ok(()),
                Some(e) => Err(io::Error::other(e.to_string())),
            });
        }
    }
    if let Some(e) = err {
        session.fail(e);
    }
    ok
}
