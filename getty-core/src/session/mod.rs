//! One connection: the session handle (this file), and what runs and describes it.
//!
//! The handle never touches the socket. Reads belong to the session task and writes to the
//! writer task (see `driver.rs`); the handle encodes on the caller and queues bytes, so many
//! tasks may write at once and packages never interleave.
//!
//! - `driver.rs` (internal): the session task and the writer task, shared by every transport.
//! - `config.rs`: [`SessionConfig`](config::SessionConfig), what the new-session callback sets.
//! - `listener.rs`: [`EventListener`](listener::EventListener), the events a session reports.
//! - `attributes.rs`, `stats.rs`: the per-session attribute map and counters.
//! - `callbacks.rs` (internal): close callbacks, run once when the session ends.

pub mod attributes;
pub(crate) mod callbacks;
pub mod config;
pub(crate) mod driver;
pub mod listener;
pub mod stats;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::codec::Writer;
use crate::endpoint::EndpointType;
use crate::error::{Error, Result};
use crate::options::SessionOptions;
use crate::session::attributes::{AttrKey, Attributes};
use crate::session::callbacks::CloseCallbacks;
use crate::session::stats::{Stats, StatsSnapshot};

/// One unit of work for the writer task.
pub(crate) struct WriteReq {
    pub(crate) kind: WriteKind,
    /// Destination on an unconnected UDP endpoint.
    pub(crate) peer: Option<SocketAddr>,
    /// Told the outcome once the bytes are on the socket (or not).
    pub(crate) done: Option<oneshot::Sender<std::io::Result<()>>>,
}

pub(crate) enum WriteKind {
    One(Bytes),
    /// One package in two parts: a head encoded for it and a body shared without a copy.
    Parts([Bytes; 2]),
    /// Several packages written back to back with nothing in between.
    Many(Vec<Bytes>),
    /// A transport-level keep-alive (a WebSocket ping); streams ignore it.
    Ping,
}

impl WriteReq {
    pub(crate) fn len(&self) -> usize {
        match &self.kind {
            WriteKind::One(b) => b.len(),
            WriteKind::Parts(p) => p[0].len() + p[1].len(),
            WriteKind::Many(v) => v.iter().map(Bytes::len).sum(),
            WriteKind::Ping => 0,
        }
    }
    pub(crate) fn pkgs(&self) -> u64 {
        match &self.kind {
            WriteKind::One(_) => 1,
            WriteKind::Parts(_) => 1,
            WriteKind::Many(v) => v.len() as u64,
            WriteKind::Ping => 0,
        }
    }
}

pub(crate) struct Inner<P> {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) endpoint: EndpointType,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) opts: SessionOptions,
    /// Cancelled when closing starts.
    pub(crate) closing: CancellationToken,
    /// The same fact as `closing`, readable without a lock (checked on every write).
    pub(crate) closed: std::sync::atomic::AtomicBool,
    /// Set by an abort: the writer drops what is queued instead of flushing it.
    pub(crate) discard: std::sync::atomic::AtomicBool,
    /// Holds on reads taken by the listener (`Session::hold_reads`).
    pub(crate) read_holds: std::sync::atomic::AtomicUsize,
    pub(crate) reads_released: tokio::sync::Notify,
    /// Cancelled when `on_close` and the close callbacks have run.
    pub(crate) finished: CancellationToken,
    /// The first error that ended the session, handed to `on_error` (and put back after it).
    pub(crate) close_error: Mutex<Option<Error>>,
    pub(crate) attrs: Mutex<Attributes>,
    /// Where packages are encoded (see [`Arena`]).
    arena: Mutex<Arena>,
    active_nanos: AtomicU64,
    pub(crate) stats: Stats,
    pub(crate) callbacks: Mutex<CloseCallbacks>,
    pub(crate) writer: Arc<dyn Writer<P>>,
    pub(crate) tx: mpsc::Sender<WriteReq>,
    /// True on an unconnected UDP endpoint: every write needs a peer address.
    pub(crate) needs_peer: bool,
}

impl<P> Inner<P> {
    /// The flag first, then the token: whoever is woken by the token finds the flag set (the
    /// session loops rely on it, see `driver.rs`).
    pub(crate) fn start_close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closing.cancel();
    }
}

/// The buffer a session encodes its packages into: each package is split off it, so small
/// packages share one allocation (freed when the writer has written them all) instead of a
/// `malloc` and a `free` each, the largest cost of sending a small frame. Blocks start small and
/// double each time one is used up, up to [`Arena::MAX_BLOCK`]; a package bigger than that gets
/// its own allocation. So an idle session keeps at most the unused rest of one block.
#[derive(Default)]
struct Arena {
    buf: BytesMut,
    /// The size of the next block.
    block: usize,
}

impl Arena {
    const FIRST_BLOCK: usize = 128;
    const MAX_BLOCK: usize = 4096;
    /// Below this much room a new block is taken (a bigger package reserves what it needs).
    const MIN_ROOM: usize = 128;

    fn make_room(&mut self) {
        if self.buf.capacity() < Self::MIN_ROOM {
            // Reclaims the old block in place when the writer has dropped every package in it.
            self.block = (self.block * 2).clamp(Self::FIRST_BLOCK, Self::MAX_BLOCK);
            self.buf.reserve(self.block);
        }
    }
}

/// A connection's handle. Clones share the same connection.
///
/// On an unconnected UDP endpoint, the handle given to `on_message` is bound to the sender's
/// address, so a reply with `write_pkg` goes back to that peer and listener code stays the same
/// for every transport.
pub struct Session<P> {
    pub(crate) inner: Arc<Inner<P>>,
    pub(crate) peer: Option<SocketAddr>,
}

impl<P> Clone for Session<P> {
    fn clone(&self) -> Self {
        Session {
            inner: self.inner.clone(),
            peer: self.peer,
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct NewInner<P> {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) endpoint: EndpointType,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) opts: SessionOptions,
    pub(crate) writer: Arc<dyn Writer<P>>,
    pub(crate) needs_peer: bool,
}

impl<P: Send + 'static> Session<P> {
    pub(crate) fn new(n: NewInner<P>) -> (Session<P>, mpsc::Receiver<WriteReq>) {
        let (tx, rx) = mpsc::channel(n.opts.write_queue_len);
        let inner = Inner {
            id: n.id,
            name: n.name,
            endpoint: n.endpoint,
            local: n.local,
            remote: n.remote,
            opts: n.opts,
            closing: CancellationToken::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            discard: std::sync::atomic::AtomicBool::new(false),
            read_holds: std::sync::atomic::AtomicUsize::new(0),
            reads_released: tokio::sync::Notify::new(),
            finished: CancellationToken::new(),
            close_error: Mutex::new(None),
            attrs: Mutex::new(Attributes::default()),
            arena: Mutex::new(Arena::default()),
            active_nanos: AtomicU64::new(0),
            stats: Stats::default(),
            callbacks: Mutex::new(CloseCallbacks::default()),
            writer: n.writer,
            tx,
            needs_peer: n.needs_peer,
        };
        let s = Session {
            inner: Arc::new(inner),
            peer: None,
        };
        s.update_active();
        (s, rx)
    }

    // ---- identity ----

    pub fn id(&self) -> u64 {
        self.inner.id
    }
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    pub fn endpoint_type(&self) -> EndpointType {
        self.inner.endpoint
    }
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local
    }
    /// The peer: the connected address, or on a UDP endpoint the address this handle is bound to.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.peer.or(self.inner.remote)
    }
    /// A handle whose writes go to `peer` (for unconnected UDP endpoints).
    pub fn to_peer(&self, peer: SocketAddr) -> Session<P> {
        Session {
            inner: self.inner.clone(),
            peer: Some(peer),
        }
    }

    // ---- lifecycle ----

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
    /// Starts closing: reads stop, queued writes are flushed for at most the wait time, then
    /// `on_close` runs. Idempotent and callable from any task.
    pub fn close(&self) {
        self.inner.start_close();
    }
    /// Completes when the session is fully closed (`on_close` and callbacks have run).
    pub async fn closed(&self) {
        self.inner.finished.cancelled().await
    }
    /// Closes and reports `reason` to `on_error` (for closes that are failures, such as a
    /// peer that stopped answering heartbeats).
    pub fn close_with_reason(&self, reason: impl Into<String>) {
        self.fail(Error::Closed {
            session: self.id(),
            reason: reason.into(),
        });
    }
    /// Closes at once, sending nothing more: what is queued is dropped, not flushed. For
    /// protocol violations, after which the byte stream can no longer be trusted.
    pub fn abort_with_reason(&self, reason: impl Into<String>) {
        self.abort(Error::Closed {
            session: self.id(),
            reason: reason.into(),
        });
    }
    /// As [`Session::abort_with_reason`], with the error `on_error` will receive.
    pub(crate) fn abort(&self, err: Error) {
        self.inner.discard.store(true, Ordering::Release);
        self.fail(err);
    }
    /// Closes with an error that `on_error` will receive (if it is the first).
    pub(crate) fn fail(&self, err: Error) {
        {
            let mut slot = lock(&self.inner.close_error);
            if slot.is_none() && !self.is_closed() {
                *slot = Some(err);
            }
        }
        self.close();
    }

    // ---- settings ----

    /// Back-pressure of the listener's own: after the package being handled, the session reads
    /// nothing more until every hold is released with [`Session::release_reads`]. getty-rpc
    /// holds the reads of a peer without flow control while the replies it owes that peer
    /// cannot be queued.
    pub fn hold_reads(&self) {
        self.inner.read_holds.fetch_add(1, Ordering::AcqRel);
    }
    /// Releases one [`Session::hold_reads`]; reads resume when none is left.
    pub fn release_reads(&self) {
        let prev = self
            .inner
            .read_holds
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if prev == Ok(1) {
            self.inner.reads_released.notify_waiters();
        }
    }

    pub fn options(&self) -> &SessionOptions {
        &self.inner.opts
    }
    pub fn max_msg_len(&self) -> usize {
        self.inner.opts.max_msg_len
    }
    pub fn read_timeout(&self) -> Duration {
        self.inner.opts.read_timeout
    }
    pub fn write_timeout(&self) -> Duration {
        self.inner.opts.write_timeout
    }
    pub fn cron_period(&self) -> Duration {
        self.inner.opts.cron_period
    }
    pub fn wait_time(&self) -> Duration {
        self.inner.opts.wait_time
    }

    // ---- attributes ----

    pub fn attr<T: Clone + Send + Sync + 'static>(&self, key: &AttrKey<T>) -> Option<T> {
        lock(&self.inner.attrs).get(key)
    }
    /// Sets a value, returning the previous one.
    pub fn set_attr<T: Send + Sync + 'static>(&self, key: &AttrKey<T>, v: T) -> Option<T> {
        lock(&self.inner.attrs).set(key, v)
    }
    pub fn remove_attr<T: Send + Sync + 'static>(&self, key: &AttrKey<T>) -> Option<T> {
        lock(&self.inner.attrs).remove(key)
    }

    // ---- activity and stats ----

    /// When a whole package (or a WebSocket ping/pong) last arrived. Writes never move it, nor
    /// do the bytes of an unfinished package (a trickling peer is not alive).
    pub fn active(&self) -> Instant {
        epoch() + Duration::from_nanos(self.inner.active_nanos.load(Ordering::Relaxed))
    }
    pub fn update_active(&self) {
        let n = epoch().elapsed().as_nanos() as u64;
        self.inner.active_nanos.store(n, Ordering::Relaxed);
    }
    /// Time since the last activity.
    pub fn idle(&self) -> Duration {
        self.active().elapsed()
    }
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }
    /// Writes queued and not yet taken by the writer task (the write queue's depth).
    pub fn queued_writes(&self) -> usize {
        self.inner.tx.max_capacity() - self.inner.tx.capacity()
    }
    /// getty's `Stat()` line: who, then the counters.
    pub fn stat(&self) -> String {
        self.to_string()
    }

    // ---- close callbacks ----

    /// Adds a callback run once when the session closes; an existing (handler, key) is replaced
    /// in place. Returns false if the session already ran its callbacks.
    pub fn add_close_callback(
        &self,
        handler: impl Into<String>,
        key: impl Into<String>,
        f: impl FnOnce() + Send + 'static,
    ) -> bool {
        lock(&self.inner.callbacks).add(handler.into(), key.into(), Box::new(f))
    }
    /// Removes a callback; a missing one is a no-op (returns false).
    pub fn remove_close_callback(&self, handler: &str, key: &str) -> bool {
        lock(&self.inner.callbacks).remove(handler, key)
    }
    pub fn close_callback_count(&self) -> usize {
        lock(&self.inner.callbacks).len()
    }

    // ---- writes ----

    /// Encodes on the caller's thread; returns the write and its length.
    fn encode(&self, pkg: &P) -> Result<(WriteKind, usize)> {
        let mut arena = lock(&self.inner.arena);
        // Empty but for what a writer that failed or panicked here left of its package.
        arena.buf.clear();
        arena.make_room();
        let tail = self
            .inner
            .writer
            .write_parts(pkg, &mut arena.buf)
            .map_err(|source| Error::Encode {
                session: self.id(),
                source,
            })?;
        let head = arena.buf.split().freeze();
        if head.len() > Arena::MAX_BLOCK {
            // A big package got a block of its own: it is freed with the package, not kept.
            *arena = Arena::default();
        }
        drop(arena);
        Ok(match tail {
            None => {
                let n = head.len();
                (WriteKind::One(head), n)
            }
            Some(tail) => {
                let n = head.len() + tail.len();
                (WriteKind::Parts([head, tail]), n)
            }
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::SessionClosed(self.id()));
        }
        if self.inner.needs_peer && self.peer.is_none() {
            return Err(Error::NoPeerAddr { session: self.id() });
        }
        Ok(())
    }

    /// Queues `req` and, if `wait`, waits until it is on the socket, all within `timeout`
    /// (the session's write timeout when `None`).
    async fn submit(&self, kind: WriteKind, timeout: Option<Duration>, wait: bool) -> Result<()> {
        self.check_open()?;
        let timeout = timeout.unwrap_or(self.inner.opts.write_timeout);
        let (done, rx) = if wait {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let mut req = WriteReq {
            kind,
            peer: self.peer,
            done,
        };
        let id = self.id();
        if !wait {
            // The common case costs no timer: only a full queue takes the timed path.
            match self.inner.tx.try_send(req) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::SessionClosed(id)),
                Err(mpsc::error::TrySendError::Full(r)) => req = r,
            }
        }
        let work = async {
            self.inner
                .tx
                .send(req)
                .await
                .map_err(|_| Error::SessionClosed(id))?;
            if let Some(rx) = rx {
                match rx.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return Err(Error::Io {
                            session: id,
                            source: e,
                        });
                    }
                    Err(_) => return Err(Error::SessionClosed(id)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::WriteTimeout {
                session: id,
                timeout,
            }),
        }
    }

    /// Encodes `pkg` and waits until its bytes are written; returns the encoded length.
    /// A failure is the caller's to handle: nothing is retried.
    pub async fn write_pkg(&self, pkg: &P, timeout: Option<Duration>) -> Result<usize> {
        self.check_open()?;
        let (kind, n) = self.encode(pkg)?;
        self.submit(kind, timeout, true).await?;
        Ok(n)
    }

    /// Encodes and queues `pkg` without waiting for the socket: the cheap path for protocols
    /// (like RPC) that learn about failures another way. Waits only while the queue is full.
    pub async fn send_pkg(&self, pkg: &P) -> Result<usize> {
        self.check_open()?;
        let (kind, n) = self.encode(pkg)?;
        self.submit(kind, None, false).await?;
        Ok(n)
    }

    /// Encodes and queues `pkg` without waiting at all: for synchronous handlers. Fails with
    /// [`Error::QueueFull`] rather than block when the write queue is full.
    pub fn try_send_pkg(&self, pkg: &P) -> Result<usize> {
        self.check_open()?;
        let (kind, n) = self.encode(pkg)?;
        let req = WriteReq {
            kind,
            peer: self.peer,
            done: None,
        };
        self.inner.tx.try_send(req).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::QueueFull { session: self.id() },
            mpsc::error::TrySendError::Closed(_) => Error::SessionClosed(self.id()),
        })?;
        Ok(n)
    }

    /// Writes raw bytes as they are, bypassing the Writer.
    pub async fn write_bytes(&self, b: Bytes, timeout: Option<Duration>) -> Result<usize> {
        let n = b.len();
        self.submit(WriteKind::One(b), timeout, true).await?;
        Ok(n)
    }

    /// Writes several buffers back to back in one go (one writev-like batch); on message
    /// transports each buffer is one message. Returns the total length.
    pub async fn write_bytes_array(
        &self,
        bufs: Vec<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<usize> {
        let n = bufs.iter().map(Bytes::len).sum();
        self.submit(WriteKind::Many(bufs), timeout, true).await?;
        Ok(n)
    }

    /// Queues a transport keep-alive (a WebSocket ping) unless the queue is full.
    pub(crate) fn try_ping(&self) {
        let _ = self.inner.tx.try_send(WriteReq {
            kind: WriteKind::Ping,
            peer: None,
            done: None,
        });
    }
}

impl<P> fmt::Display for Session<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
        write!(
            f,
            "session {{{}:{}:{}:{}<->{}}}, {}",
            i.name,
            i.endpoint,
            i.id,
            addr(i.local),
            addr(self.peer.or(i.remote)),
            i.stats.snapshot()
        )
    }
}

impl<P> fmt::Debug for Session<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .field("endpoint", &self.inner.endpoint)
            .field("remote", &self.peer.or(self.inner.remote))
            .finish()
    }
}
