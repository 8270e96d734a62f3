//! Servers: a listener, an accept loop, and the sessions it started.
//!
//! The accept loop only accepts: each connection gets its own task at once, which does the
//! handshake (TLS, WebSocket) under a timeout, the new-session callback and `on_open`, so one
//! slow or silent peer never delays the next accept.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::endpoint::EndpointType;
use crate::endpoint::sessions::SessionSet;
use crate::error::{Error, Result};
use crate::options::{SessionOptions, SocketOptions};
use crate::pool::TaskPool;
use crate::session::config::{NewSessionCallback, SessionConfig};
use crate::session::driver::{self, Runtime, Sink, Source};
use crate::session::{Session, next_id};
use crate::transport::stream::{StreamSink, TcpSource};

/// Turns an accepted TCP connection into a transport (identity for TCP; TLS or WebSocket
/// handshakes for the others).
pub(crate) trait Acceptor: Send + Sync + 'static {
    type Source: Source;
    type Sink: Sink;
    fn endpoint_type(&self) -> EndpointType;
    fn accept(
        &self,
        tcp: TcpStream,
    ) -> impl Future<Output = Result<(Self::Source, Self::Sink)>> + Send;
}

pub(crate) struct TcpAcceptor;

impl Acceptor for TcpAcceptor {
    type Source = TcpSource;
    type Sink = StreamSink<tokio::net::tcp::OwnedWriteHalf>;
    fn endpoint_type(&self) -> EndpointType {
        EndpointType::TcpServer
    }
    async fn accept(&self, tcp: TcpStream) -> Result<(Self::Source, Self::Sink)> {
        let (r, w) = tcp.into_split();
        Ok((TcpSource(r), StreamSink::new(w)))
    }
}

/// Options of a server, builder style.
#[derive(Clone)]
pub struct ServerBuilder {
    pub(crate) addr: String,
    pub(crate) session: SessionOptions,
    pub(crate) socket: SocketOptions,
    pub(crate) max_sessions: usize,
    pub(crate) pool: Option<TaskPool>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) partial_budget: usize,
    pub(crate) backlog: u32,
}

/// Default of [`ServerBuilder::backlog`]: Linux's default `somaxconn`, which caps it anyway.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Default of [`ServerBuilder::partial_budget`]: 32 packages of the default max length.
pub const DEFAULT_PARTIAL_BUDGET: usize = 128 << 20;

impl ServerBuilder {
    /// `addr` such as `127.0.0.1:0` (port 0 picks a free port; read it with `local_addr`).
    pub fn new(addr: impl Into<String>) -> Self {
        ServerBuilder {
            addr: addr.into(),
            session: SessionOptions::default(),
            socket: SocketOptions::default(),
            max_sessions: 0,
            pool: None,
            handshake_timeout: Duration::from_secs(5),
            partial_budget: DEFAULT_PARTIAL_BUDGET,
            backlog: DEFAULT_BACKLOG,
        }
    }
    /// Connections the kernel queues before `accept` takes them (TCP, TLS and WebSocket
    /// listeners). A burst of connects beyond it is dropped and retried by the clients' SYN
    /// timers, which makes mass reconnects slow. Default [`DEFAULT_BACKLOG`].
    pub fn backlog(mut self, n: u32) -> Self {
        self.backlog = n;
        self
    }
    /// Defaults for every session; the new-session callback may still change them.
    pub fn session_options(mut self, o: SessionOptions) -> Self {
        self.session = o;
        self
    }
    pub fn socket_options(mut self, o: SocketOptions) -> Self {
        self.socket = o;
        self
    }
    /// Most sessions at once (0: no cap). Connections beyond it are closed at accept.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n;
        self
    }
    /// Runs `on_message`/`on_cron` on a pool instead of the session task (see [`TaskPool`]).
    pub fn task_pool(mut self, pool: TaskPool) -> Self {
        self.pool = Some(pool);
        self
    }
    /// Limit for TLS and WebSocket handshakes.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Most bytes all sessions together may hold in packages they have begun but not finished
    /// receiving (0: no cap). A session that cannot get budget for its partial package stops
    /// reading until others release some, and is cut by its read timeout if that takes too
    /// long; one whose partial package alone exceeds the budget is closed at once. Keep it
    /// above the max message length; at least two reads (`2 × read_buf_size`) are required. Default [`DEFAULT_PARTIAL_BUDGET`] (128 MiB). Stream
    /// transports (TCP, TLS); WebSocket and UDP buffer whole messages in their transport.
    pub fn partial_budget(mut self, bytes: usize) -> Self {
        self.partial_budget = bytes;
        self
    }

    /// Listens for plain TCP connections.
    pub async fn serve_tcp<P: Send + 'static>(
        self,
        new_session: NewSessionCallback<P>,
    ) -> Result<Server<P>> {
        self.serve_with(TcpAcceptor, new_session).await
    }

    pub(crate) async fn serve_with<P: Send + 'static, A: Acceptor>(
        self,
        acceptor: A,
        new_session: NewSessionCallback<P>,
    ) -> Result<Server<P>> {
        self.session.validate()?;
        // Any partial package holds at least one read's buffer.
        let min_budget = 2 * self.session.read_buf_size;
        if self.partial_budget > 0 && self.partial_budget < min_budget {
            return Err(Error::InvalidOption {
                name: "partial_budget",
                reason: format!(
                    "{} bytes is below two reads of read_buf_size ({min_budget} bytes)",
                    self.partial_budget
                ),
            });
        }
        let listener = listen(&self.addr, self.backlog)
            .await
            .map_err(|source| Error::Bind {
                addr: self.addr.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.addr.clone(),
            source,
        })?;
        let endpoint = acceptor.endpoint_type();
        let (pool, budget) = (self.pool.clone(), self.partial_budget);
        Ok(Server::start_custom(
            pool,
            budget,
            local,
            endpoint,
            move |shared| {
                accept_loop(
                    listener,
                    Arc::new(acceptor),
                    self,
                    new_session,
                    shared,
                    local,
                )
            },
        ))
    }
}

pub(crate) struct Shared<P> {
    pub(crate) sessions: SessionSet<P>,
    /// Connections accepted and not yet ended, including those still in their handshake.
    pub(crate) slots: AtomicUsize,
    pub(crate) closing: CancellationToken,
    pub(crate) rt: Runtime,
}

/// A running server. Dropping it stops accepting and starts closing every session (each
/// flushes for its wait time in the background); `close` does the same and waits for them.
pub struct Server<P> {
    local: SocketAddr,
    endpoint: EndpointType,
    shared: Arc<Shared<P>>,
    accept: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<P: Send + 'static> Server<P> {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
    pub fn endpoint_type(&self) -> EndpointType {
        self.endpoint
    }
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }
    pub fn sessions(&self) -> Vec<Session<P>> {
        self.shared.sessions.all()
    }
    /// Bytes the sessions currently hold of the partial-package budget (0 without a budget).
    pub fn partial_bytes(&self) -> usize {
        self.shared.rt.budget.as_ref().map_or(0, |b| b.in_use())
    }
    pub fn is_closed(&self) -> bool {
        self.shared.closing.is_cancelled()
    }
    /// Stops accepting, closes every session (each flushes for its wait time) and waits for
    /// all of their tasks to end. Idempotent.
    pub async fn close(&self) {
        self.shared.closing.cancel();
        let accept = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = accept {
            let _ = h.await;
        }
        self.shared.sessions.close_all();
        self.shared.rt.tracker.close();
        self.shared.rt.tracker.wait().await;
    }
}

impl<P> Drop for Server<P> {
    fn drop(&mut self) {
        // A session opened after this finds `closing` cancelled and closes itself.
        self.shared.closing.cancel();
        self.shared.sessions.close_all();
        self.shared.rt.tracker.close();
    }
}

/// Releases a connection slot when its task ends, however it ends.
pub(crate) struct Slot<'a>(pub(crate) &'a AtomicUsize);
impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_loop<P: Send + 'static, A: Acceptor>(
    listener: TcpListener,
    acceptor: Arc<A>,
    opts: ServerBuilder,
    new_session: NewSessionCallback<P>,
    shared: Arc<Shared<P>>,
    local: SocketAddr,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shared.closing.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // Out of descriptors and the like: wait, then go on serving.
                tracing::warn!(%local, error = %e, ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if opts.max_sessions > 0 && shared.slots.load(Ordering::Acquire) >= opts.max_sessions {
            tracing::warn!(%local, %remote, max = opts.max_sessions, "session cap reached; connection closed");
            continue;
        }
        shared.slots.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = opts.socket.apply(&tcp) {
            tracing::warn!(%remote, error = %e, "could not set socket options");
        }
        let (acceptor, shared2, new_session) =
            (acceptor.clone(), shared.clone(), new_session.clone());
        let (session_opts, handshake) = (opts.session.clone(), opts.handshake_timeout);
        shared.rt.tracker.spawn(async move {
            let shared = shared2;
            let _slot = Slot(&shared.slots);
            let transport = tokio::select! {
                _ = shared.closing.cancelled() => return,
                r = tokio::time::timeout(handshake, acceptor.accept(tcp)) => r,
            };
            let (source, sink) = match transport {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, ?handshake, "handshake timed out");
                    return;
                }
            };
            let cfg = SessionConfig::new(
                next_id(),
                acceptor.endpoint_type(),
                Some(local),
                Some(remote),
                session_opts,
            );
            run_session(&shared, &new_session, cfg, source, sink).await;
        });
    }
}

/// Opens and runs one accepted connection's session until it ends (every server transport).
pub(crate) async fn run_session<P: Send + 'static, S: Source, K: Sink>(
    shared: &Shared<P>,
    new_session: &NewSessionCallback<P>,
    cfg: SessionConfig<P>,
    source: S,
    sink: K,
) {
    let id = cfg.id();
    let remote = cfg.remote_addr();
    match driver::open(cfg, new_session, source, sink, false, |s| {
        shared.sessions.insert(s.clone())
    }) {
        Ok(opened) => {
            let session = opened.session.clone();
            if shared.closing.is_cancelled() {
                session.close();
            }
            opened.run(shared.rt.clone()).await;
            shared.sessions.remove(session.id());
        }
        Err(e) => {
            shared.sessions.remove(id);
            tracing::info!(?remote, error = %e, "session not opened");
        }
    }
}

impl<P: Send + 'static> Server<P> {
    /// A server whose accept loop is `accept` (the TCP listener's, or that of a transport with
    /// a listener of its own, see `transport/incoming.rs`), with the session set, slots and tasks every
    /// server has. `local` is what `local_addr` reports.
    pub(crate) fn start_custom<F, Fut>(
        pool: Option<TaskPool>,
        partial_budget: usize,
        local: SocketAddr,
        endpoint: EndpointType,
        accept: F,
    ) -> Server<P>
    where
        F: FnOnce(Arc<Shared<P>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            sessions: SessionSet::new(),
            slots: AtomicUsize::new(0),
            closing: CancellationToken::new(),
            rt: Runtime {
                tracker: TaskTracker::new(),
                pool,
                budget: (partial_budget > 0)
                    .then(|| crate::endpoint::budget::PartialBudget::new(partial_budget)),
            },
        });
        let accept = shared.rt.tracker.spawn(accept(shared.clone()));
        Server {
            local,
            endpoint,
            shared,
            accept: std::sync::Mutex::new(Some(accept)),
        }
    }
}

/// Binds the first address `addr` resolves to that accepts, listening with `backlog` (what
/// `TcpListener::bind` does, with its fixed backlog of 1,024 made a choice).
async fn listen(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let sock = match a {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        #[cfg(unix)]
        sock.set_reuseaddr(true)?;
        match sock.bind(a).and_then(|()| sock.listen(backlog)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}
