//! Clients: keep N sessions to one address and reconnect with back-off when one drops.
//!
//! One supervisor task per client dials, opens sessions and waits for any to end; it is the only
//! place that reconnects, so a dead server never blocks a session's close (getty reconnected
//! inside `Close()`, which delayed `on_close` until the server came back).
//!
//! What counts as a failure: a dial that fails, and a session that ends before it did useful
//! work, i.e. before it delivered a whole package and before it had been open for
//! [`ClientBuilder::stable_after`]. A peer that accepts and closes at once therefore backs the
//! client off and exhausts its attempts like a peer that refuses. A session that did useful work
//! resets the count when it ends. The k-th consecutive failure waits
//! `min(interval × 2^(k-1), max_backoff)`, spread by the jitter.
//!
//! Dropping a [`Client`] closes it: reconnecting stops and every session starts closing (each
//! flushes for its wait time in the background). [`Client::close`] does the same and waits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
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

/// A dialled, ready transport with its addresses.
pub(crate) struct Connected<S, K> {
    pub(crate) source: S,
    pub(crate) sink: K,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
}

/// Dials one connection, handshake included (TCP, TLS, WebSocket).
pub(crate) trait Connector: Send + Sync + 'static {
    type Source: Source;
    type Sink: Sink;
    fn endpoint_type(&self) -> EndpointType;
    fn connect(&self) -> impl Future<Output = Result<Connected<Self::Source, Self::Sink>>> + Send;
}

/// Connects TCP to `addr` and applies the socket options.
pub(crate) async fn dial_tcp(addr: &str, socket: &SocketOptions) -> Result<TcpStream> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| Error::Connect {
            addr: addr.to_string(),
            source,
        })?;
    if let Err(e) = socket.apply(&tcp) {
        tracing::warn!(%addr, error = %e, "could not set socket options");
    }
    Ok(tcp)
}

pub(crate) struct TcpConnector {
    pub(crate) addr: String,
    pub(crate) socket: SocketOptions,
}

impl Connector for TcpConnector {
    type Source = TcpSource;
    type Sink = StreamSink<tokio::net::tcp::OwnedWriteHalf>;
    fn endpoint_type(&self) -> EndpointType {
        EndpointType::TcpClient
    }
    async fn connect(&self) -> Result<Connected<Self::Source, Self::Sink>> {
        let tcp = dial_tcp(&self.addr, &self.socket).await?;
        let (local, remote) = (tcp.local_addr().ok(), tcp.peer_addr().ok());
        let (r, w) = tcp.into_split();
        Ok(Connected {
            source: TcpSource(r),
            sink: StreamSink::new(w),
            local,
            remote,
        })
    }
}

/// Where a client stands.
#[derive(Clone, Debug)]
pub enum ClientState {
    /// Fewer than N sessions; dialling.
    Connecting,
    /// All N sessions are up.
    Ready,
    /// Gave up after the attempt limit; the error says why.
    Failed(Arc<Error>),
    Closed,
}

/// Options of a client, builder style.
#[derive(Clone)]
pub struct ClientBuilder {
    pub(crate) addr: String,
    pub(crate) connections: usize,
    pub(crate) reconnect_interval: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) stable_after: Duration,
    pub(crate) reconnect_attempts: u32,
    pub(crate) jitter: f64,
    pub(crate) connect_timeout: Duration,
    pub(crate) session: SessionOptions,
    pub(crate) socket: SocketOptions,
    pub(crate) pool: Option<TaskPool>,
}

impl ClientBuilder {
    /// `addr` is `host:port` for TCP/TLS, or a `ws://`/`wss://` URL for WebSocket.
    pub fn new(addr: impl Into<String>) -> Self {
        ClientBuilder {
            addr: addr.into(),
            connections: 1,
            reconnect_interval: Duration::from_millis(300),
            max_backoff: Duration::from_secs(10),
            stable_after: Duration::from_secs(1),
            reconnect_attempts: 50,
            jitter: 0.2,
            connect_timeout: Duration::from_secs(3),
            session: SessionOptions::default(),
            socket: SocketOptions::default(),
            pool: None,
        }
    }
    /// How many sessions to keep (getty's `WithConnectionNumber`).
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n.max(1);
        self
    }
    /// First back-off: the k-th consecutive failure waits `min(interval × 2^(k-1), max_backoff)`.
    /// Default 300 ms.
    pub fn reconnect_interval(mut self, d: Duration) -> Self {
        self.reconnect_interval = d;
        self
    }
    /// Longest back-off (before jitter). Default 10 s.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }
    /// A session that ends before it delivered a package and before it was open this long
    /// counts as a failed attempt (see the module docs). Default 1 s.
    pub fn stable_after(mut self, d: Duration) -> Self {
        self.stable_after = d;
        self
    }
    /// Consecutive failed attempts before giving up (0: never give up). Default 50.
    pub fn reconnect_attempts(mut self, n: u32) -> Self {
        self.reconnect_attempts = n;
        self
    }
    /// Random spread of each back-off, as a fraction (0.2 = ±20%), so clients do not stampede.
    pub fn jitter(mut self, f: f64) -> Self {
        self.jitter = f.clamp(0.0, 1.0);
        self
    }
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    pub fn session_options(mut self, o: SessionOptions) -> Self {
        self.session = o;
        self
    }
    pub fn socket_options(mut self, o: SocketOptions) -> Self {
        self.socket = o;
        self
    }
    pub fn task_pool(mut self, pool: TaskPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Starts a TCP client. Returns at once; await [`Client::ready`] for the sessions.
    pub fn connect_tcp<P: Send + 'static>(
        self,
        new_session: NewSessionCallback<P>,
    ) -> Result<Client<P>> {
        let c = TcpConnector {
            addr: self.addr.clone(),
            socket: self.socket.clone(),
        };
        self.start_with(c, new_session)
    }

    pub(crate) fn start_with<P: Send + 'static, C: Connector>(
        self,
        connector: C,
        new_session: NewSessionCallback<P>,
    ) -> Result<Client<P>> {
        self.session.validate()?;
        // A back-off is scaled by the jitter (`Duration::mul_f64` panics on overflow).
        crate::options::check_duration("reconnect_interval", self.reconnect_interval)?;
        crate::options::check_duration("max_backoff", self.max_backoff)?;
        let (state_tx, state) = watch::channel(ClientState::Connecting);
        let shared = Arc::new(ClientShared {
            sessions: SessionSet::new(),
            closing: CancellationToken::new(),
            rt: Runtime {
                tracker: TaskTracker::new(),
                pool: self.pool.clone(),
                budget: None,
            },
            state: state_tx,
            next: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            last_end: std::sync::Mutex::new(String::new()),
        });
        let endpoint = connector.endpoint_type();
        shared
            .rt
            .tracker
            .spawn(supervise(self, connector, new_session, shared.clone()));
        Ok(Client {
            shared,
            state,
            endpoint,
        })
    }
}

struct ClientShared<P> {
    sessions: SessionSet<P>,
    closing: CancellationToken,
    rt: Runtime,
    state: watch::Sender<ClientState>,
    next: AtomicUsize,
    /// Consecutive failed attempts: dials that failed and sessions that ended before they did
    /// useful work. Reset by a session that did.
    failures: AtomicU32,
    /// Why the last session that did no useful work ended, for the `Failed` state.
    last_end: std::sync::Mutex<String>,
}

impl<P> ClientShared<P> {
    /// Stops reconnecting and starts closing every session. A session the supervisor lists
    /// after this finds `closing` cancelled and closes itself (see `supervise`).
    fn start_close(&self) {
        self.closing.cancel();
        self.sessions.close_all();
        self.rt.tracker.close();
    }
}

/// A running client. Dropping it closes it in the background (see the module docs).
pub struct Client<P> {
    shared: Arc<ClientShared<P>>,
    state: watch::Receiver<ClientState>,
    endpoint: EndpointType,
}

impl<P: Send + 'static> Client<P> {
    pub fn endpoint_type(&self) -> EndpointType {
        self.endpoint
    }
    pub fn state(&self) -> ClientState {
        self.state.borrow().clone()
    }
    /// Waits until all N sessions are up; fails if the client gave up or was closed.
    pub async fn ready(&self) -> Result<()> {
        let mut rx = self.state.clone();
        loop {
            match &*rx.borrow_and_update() {
                ClientState::Ready => return Ok(()),
                ClientState::Failed(e) => return Err(clone_err(e)),
                ClientState::Closed => return Err(Error::EndpointClosed { what: "client" }),
                ClientState::Connecting => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::EndpointClosed { what: "client" });
            }
        }
    }
    /// Completes when the state changes next (after this future is first polled).
    pub async fn state_changed(&self) -> ClientState {
        let mut rx = self.state.clone();
        // A clone remembers what the original saw, which may be long ago.
        rx.mark_unchanged();
        let _ = rx.changed().await;
        rx.borrow().clone()
    }
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }
    pub fn sessions(&self) -> Vec<Session<P>> {
        self.shared.sessions.all()
    }
    /// One open session, round robin.
    pub fn session(&self) -> Option<Session<P>> {
        let all = self.shared.sessions.all();
        let open: Vec<_> = all.into_iter().filter(|s| !s.is_closed()).collect();
        if open.is_empty() {
            return None;
        }
        let i = self.shared.next.fetch_add(1, Ordering::Relaxed) % open.len();
        open.into_iter().nth(i)
    }
    pub fn is_closed(&self) -> bool {
        self.shared.closing.is_cancelled()
    }
    /// Stops reconnecting, closes every session and waits for their tasks. Idempotent.
    pub async fn close(&self) {
        self.shared.start_close();
        self.shared.rt.tracker.wait().await;
        self.shared.state.send_replace(ClientState::Closed);
    }
}

impl<P> Drop for Client<P> {
    fn drop(&mut self) {
        self.shared.start_close();
    }
}

/// Errors are not `Clone`; a failed state is shared, so callers get an equivalent copy.
fn clone_err(e: &Error) -> Error {
    match e {
        Error::ReconnectExhausted {
            addr,
            attempts,
            last,
        } => Error::ReconnectExhausted {
            addr: addr.clone(),
            attempts: *attempts,
            last: last.clone(),
        },
        other => Error::Connect {
            addr: String::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// The wait after the `failures`-th consecutive failure: `interval × 2^(failures-1)` up to the
/// cap, spread by ±jitter. A pure function of the count the attempt limit also uses, so it needs
/// no back-off crate's iterator state beside it.
pub(crate) fn backoff(opts: &ClientBuilder, failures: u32) -> Duration {
    let doublings = failures.clamp(1, 32) - 1;
    let base = opts
        .reconnect_interval
        .checked_mul(1u32 << doublings)
        .unwrap_or(opts.max_backoff)
        .min(opts.max_backoff);
    let spread = 1.0 + opts.jitter * (fastrand::f64() * 2.0 - 1.0);
    base.mul_f64(spread.max(0.0))
}

async fn supervise<P: Send + 'static, C: Connector>(
    opts: ClientBuilder,
    connector: C,
    new_session: NewSessionCallback<P>,
    shared: Arc<ClientShared<P>>,
) {
    loop {
        while shared.sessions.len() < opts.connections {
            if shared.closing.is_cancelled() {
                return;
            }
            let dialled = tokio::select! {
                _ = shared.closing.cancelled() => return,
                r = tokio::time::timeout(opts.connect_timeout, connector.connect()) => r,
            };
            let res = match dialled {
                Ok(Ok(c)) => {
                    let cfg = SessionConfig::new(
                        next_id(),
                        connector.endpoint_type(),
                        c.local,
                        c.remote,
                        opts.session.clone(),
                    );
                    let id = cfg.id();
                    let r = driver::open(cfg, &new_session, c.source, c.sink, false, |s| {
                        shared.sessions.insert(s.clone());
                        // `close` may have run `close_all` before this insert (the new-session
                        // callback can take long): such a session is closed here, or it would
                        // live on and `close` would wait for it forever.
                        if shared.closing.is_cancelled() {
                            s.close();
                        }
                    });
                    if r.is_err() {
                        shared.sessions.remove(id);
                    }
                    r
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(Error::Connect {
                    addr: opts.addr.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                }),
            };
            match res {
                Ok(opened) => {
                    let session = opened.session.clone();
                    let sh = shared.clone();
                    let stable_after = opts.stable_after;
                    shared.rt.tracker.spawn(async move {
                        let started = tokio::time::Instant::now();
                        opened.run(sh.rt.clone()).await;
                        let useful = session.stats().read_pkgs > 0 || started.elapsed() >= stable_after;
                        if useful {
                            sh.failures.store(0, Ordering::Release);
                        } else {
                            let why = session.inner.close_error.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or_else(|| "closed".to_string(), ToString::to_string);
                            tracing::info!(session = session.id(), %why, "session ended before it did useful work");
                            *sh.last_end.lock().unwrap_or_else(|e| e.into_inner()) = format!("a session ended before it did useful work: {why}");
                            sh.failures.fetch_add(1, Ordering::AcqRel);
                        }
                        sh.sessions.remove(session.id());
                    });
                }
                Err(e) => {
                    let failures = shared.failures.fetch_add(1, Ordering::AcqRel) + 1;
                    tracing::warn!(addr = %opts.addr, attempt = failures, error = %e, "connect failed");
                    if gave_up(&opts, &shared, failures, &e.to_string()) {
                        return;
                    }
                    shared.state.send_replace(ClientState::Connecting);
                    tokio::select! {
                        _ = shared.closing.cancelled() => return,
                        _ = tokio::time::sleep(backoff(&opts, failures)) => {}
                    }
                }
            }
        }
        shared.state.send_replace(ClientState::Ready);
        // Wait for a session to end (or for close), then refill after the back-off its failure
        // count asks for (a short pause when it had done useful work).
        // A wake-up may be stale (a permit `remove` left earlier): wait again while all N are up.
        loop {
            let changed = shared.sessions.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if shared.sessions.len() < opts.connections {
                break;
            }
            tokio::select! {
                _ = shared.closing.cancelled() => return,
                _ = &mut changed => {}
            }
        }
        if shared.closing.is_cancelled() {
            return;
        }
        let failures = shared.failures.load(Ordering::Acquire);
        let last = shared
            .last_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if gave_up(&opts, &shared, failures, &last) {
            return;
        }
        shared.state.send_replace(ClientState::Connecting);
        let pause = if failures == 0 {
            backoff(&opts, 1).min(opts.reconnect_interval)
        } else {
            backoff(&opts, failures)
        };
        tokio::select! {
            _ = shared.closing.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Whether `failures` reached the attempt limit; if so the client says `Failed` with `last`.
fn gave_up<P>(opts: &ClientBuilder, shared: &ClientShared<P>, failures: u32, last: &str) -> bool {
    if opts.reconnect_attempts == 0 || failures < opts.reconnect_attempts {
        return false;
    }
    let err = Error::ReconnectExhausted {
        addr: opts.addr.clone(),
        attempts: failures,
        last: last.to_string(),
    };
    tracing::error!(error = %err, "client gives up");
    shared
        .state
        .send_replace(ClientState::Failed(Arc::new(err)));
    true
}
