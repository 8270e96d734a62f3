//! Lifecycles over real loopback sockets: dropping a handle closes what it owns, `close`
//! finishes however it races the dialler, a panic in any user callback closes the session with
//! the close sequence run once, options that would overflow are refused, and reconnect back-off
//! holds against a peer that accepts and closes at once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use getty::core::{
    ClientBuilder, ClientState, CodecError, Decoded, Error, EventListener, LengthPrefixed, Reader,
    Server, ServerBuilder, Session, SessionConfig, SessionOptions, TaskPool, TokioCodec,
    new_session,
};
use getty::rpc::{Router, RpcClient, RpcOptions, RpcServer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

fn opts() -> SessionOptions {
    SessionOptions::default().cron_period(Duration::from_secs(3600))
}

async fn server() -> (Server<Bytes>, tokio::sync::mpsc::UnboundedReceiver<Ev>) {
    let (l, rx) = recorder(true);
    let s = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(setup(l, opts()))
        .await
        .unwrap();
    (s, rx)
}

/// Reads from `peer` until EOF (at most `within`): the other end closed the connection.
async fn expect_eof(peer: &mut TcpStream, within: Duration, what: &str) {
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(within, peer.read(&mut b))
        .await
        .unwrap_or_else(|_| panic!("{what}: not closed within {within:?}"))
        .unwrap_or(0);
    assert_eq!(n, 0, "{what}: EOF");
}

/// Waits (at most 1 s) until `count()` is 0.
async fn reaches_zero(what: &str, count: impl Fn() -> usize) {
    let t = tokio::time::Instant::now();
    while count() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{what}: still {} sessions after 1 s",
            count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- dropping a handle closes what it owns ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_client_closes_its_sessions() {
    let (srv, _rx) = server().await;
    let (l, _crx) = recorder(false);
    let client = ClientBuilder::new(srv.local_addr().to_string())
        .connections(3)
        .connect_tcp(setup(l, opts()))
        .unwrap();
    client.ready().await.unwrap();
    eventually("server sees 3 sessions", || srv.session_count() == 3).await;
    drop(client);
    reaches_zero("server after the client was dropped", || {
        srv.session_count()
    })
    .await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_server_closes_its_sessions() {
    let (srv, _rx) = server().await;
    let mut peer = TcpStream::connect(srv.local_addr()).await.unwrap();
    eventually("server sees the peer", || srv.session_count() == 1).await;
    drop(srv);
    expect_eof(
        &mut peer,
        Duration::from_secs(1),
        "the dropped server's connection",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_rpc_client_closes_its_connections() {
    let srv = RpcServer::start(Router::new(), RpcOptions::default(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = srv.local_addr().to_string();
    let client = RpcClient::start(Router::new(), RpcOptions::default(), |cb| {
        ClientBuilder::new(addr).connections(2).connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    eventually("server sees 2 connections", || {
        srv.core().session_count() == 2
    })
    .await;
    drop(client);
    reaches_zero("RPC server after the client was dropped", || {
        srv.core().session_count()
    })
    .await;
}

// ---- close never hangs ----

/// A listener that accepts and keeps every connection open until `clear`.
struct Holder {
    addr: String,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

async fn holder() -> Holder {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            h.lock().unwrap().push(s);
        }
    });
    Holder { addr, held }
}

fn spin(d: Duration) {
    let t = std::time::Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_while_dialling_never_hangs_in_1000_tries() {
    let h = holder().await;
    let (l, _rx) = recorder(false);
    let cb = setup(l, opts());
    let mut hung = 0;
    for i in 0..1000u64 {
        let client = ClientBuilder::new(h.addr.clone())
            .connect_tcp::<Bytes>(cb.clone())
            .unwrap();
        spin(Duration::from_micros(i * 7 % 400));
        if tokio::time::timeout(Duration::from_secs(2), client.close())
            .await
            .is_err()
        {
            hung += 1;
        }
        h.held.lock().unwrap().clear();
    }
    assert_eq!(hung, 0, "{hung} of 1000 closes hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_during_a_slow_new_session_callback_does_not_hang() {
    let h = holder().await;
    let (l, _rx) = recorder(false);
    let inner = setup(l, opts());
    let slow = new_session(move |c: &mut SessionConfig<Bytes>| {
        std::thread::sleep(Duration::from_millis(20));
        inner(c)
    });
    for _ in 0..10 {
        let client = ClientBuilder::new(h.addr.clone())
            .connect_tcp(slow.clone())
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        tokio::time::timeout(Duration::from_secs(2), client.close())
            .await
            .expect("close returns although the session registers after it began");
        h.held.lock().unwrap().clear();
    }
}

// ---- every user callback is panic-safe ----

/// Counts closes and close callbacks; panics where it is told to.
#[derive(Default)]
struct Fragile {
    panic_in_cron: bool,
    panic_in_open: bool,
    panic_in_message: bool,
    closes: AtomicUsize,
    callbacks: Arc<AtomicUsize>,
    errors: Mutex<Vec<String>>,
}

impl EventListener<Bytes> for Fragile {
    fn on_open(&self, s: &Session<Bytes>) -> Result<(), String> {
        let n = self.callbacks.clone();
        s.add_close_callback("test", "count", move || {
            n.fetch_add(1, Ordering::SeqCst);
        });
        if self.panic_in_open {
            panic!("on_open blew up");
        }
        Ok(())
    }
    fn on_cron(&self, _s: &Session<Bytes>) {
        if self.panic_in_cron {
            panic!("on_cron blew up");
        }
    }
    fn on_error(&self, _s: &Session<Bytes>, e: &Error) {
        self.errors.lock().unwrap().push(e.to_string());
    }
    fn on_close(&self, _s: &Session<Bytes>) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
    fn on_message(&self, _s: &Session<Bytes>, _pkg: Bytes) {
        if self.panic_in_message {
            panic!("on_message blew up");
        }
    }
}

/// A reader that panics on a package starting with 0xFF.
struct PanickyReader;
impl Reader<Bytes> for PanickyReader {
    fn read(&self, buf: &[u8]) -> Result<Decoded<Bytes>, CodecError> {
        if buf.first() == Some(&0xFF) {
            panic!("reader blew up");
        }
        LengthPrefixed.read(buf)
    }
    fn read_owned(&self, pkg: Bytes) -> Result<Bytes, CodecError> {
        LengthPrefixed.read_owned(pkg)
    }
}

/// A tokio decoder that panics on 0xFF.
#[derive(Clone)]
struct PanickyDecoder;
impl tokio_util::codec::Decoder for PanickyDecoder {
    type Item = Bytes;
    type Error = std::io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, std::io::Error> {
        if src.first() == Some(&0xFF) {
            panic!("decoder blew up");
        }
        Ok((!src.is_empty()).then(|| src.split().freeze()))
    }
}
impl tokio_util::codec::Encoder<Bytes> for PanickyDecoder {
    type Error = std::io::Error;
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Framing {
    LengthPrefixed,
    PanickyReader,
    PanickyDecoder,
}

/// A server whose sessions use `l` and `framing`; a peer connects and sends `send`; the
/// session must end (the peer sees EOF) with `on_close` and the close callback run once.
async fn panic_closes_the_session_once(
    l: Arc<Fragile>,
    framing: Framing,
    send: &[u8],
    cron: Duration,
    pool: Option<TaskPool>,
) {
    let listener: Arc<dyn EventListener<Bytes>> = l.clone();
    let mut builder = ServerBuilder::new("127.0.0.1:0");
    if let Some(pool) = pool {
        builder = builder.task_pool(pool);
    }
    let srv = builder
        .serve_tcp(new_session(move |c: &mut SessionConfig<Bytes>| {
            match framing {
                Framing::LengthPrefixed => c.set_pkg_handler(Arc::new(LengthPrefixed)),
                Framing::PanickyReader => c
                    .set_reader(Arc::new(PanickyReader))
                    .set_writer(Arc::new(LengthPrefixed)),
                Framing::PanickyDecoder => c.set_tokio_codec(TokioCodec::new(PanickyDecoder)),
            };
            c.set_event_listener(listener.clone())
                .set_options(SessionOptions::default().cron_period(cron));
            Ok(())
        }))
        .await
        .unwrap();
    let mut peer = TcpStream::connect(srv.local_addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut peer, send)
        .await
        .unwrap();
    expect_eof(&mut peer, Duration::from_secs(5), "the panicking session").await;
    eventually("the session leaves the server", || srv.session_count() == 0).await;
    srv.close().await;
    assert_eq!(l.closes.load(Ordering::SeqCst), 1, "on_close once");
    assert_eq!(l.callbacks.load(Ordering::SeqCst), 1, "close callback once");
    let errors = l.errors.lock().unwrap().clone();
    assert!(
        errors.len() == 1 && errors[0].contains("panicked"),
        "one on_error that names the panic: {errors:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_on_cron_closes_the_session_and_runs_on_close_once() {
    let l = Arc::new(Fragile {
        panic_in_cron: true,
        ..Default::default()
    });
    panic_closes_the_session_once(
        l,
        Framing::LengthPrefixed,
        b"",
        Duration::from_millis(100),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_on_cron_on_a_task_pool_closes_the_session_and_runs_on_close_once() {
    let l = Arc::new(Fragile {
        panic_in_cron: true,
        ..Default::default()
    });
    let pool = TaskPool::new(2, 16).unwrap();
    panic_closes_the_session_once(
        l,
        Framing::LengthPrefixed,
        b"",
        Duration::from_millis(50),
        Some(pool),
    )
    .await;
}

/// On a task pool too, a panicking `on_message` closes its session (inline, it always did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_on_message_on_a_task_pool_closes_the_session_and_runs_on_close_once() {
    let l = Arc::new(Fragile {
        panic_in_message: true,
        ..Default::default()
    });
    let pool = TaskPool::new(2, 16).unwrap();
    let mut pkg = 4u32.to_be_bytes().to_vec();
    pkg.extend_from_slice(b"boom");
    panic_closes_the_session_once(
        l,
        Framing::LengthPrefixed,
        &pkg,
        Duration::from_secs(3600),
        Some(pool),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_reader_closes_the_session_and_runs_on_close_once() {
    let l = Arc::new(Fragile::default());
    panic_closes_the_session_once(
        l,
        Framing::PanickyReader,
        &[0xFF, 0, 0, 0],
        Duration::from_secs(3600),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_tokio_decoder_closes_the_session_and_runs_on_close_once() {
    let l = Arc::new(Fragile::default());
    panic_closes_the_session_once(
        l,
        Framing::PanickyDecoder,
        &[0xFF],
        Duration::from_secs(3600),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_on_open_rejects_the_session_and_runs_its_close_callbacks() {
    let l = Arc::new(Fragile {
        panic_in_open: true,
        ..Default::default()
    });
    let listener: Arc<dyn EventListener<Bytes>> = l.clone();
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(setup(listener, opts()))
        .await
        .unwrap();
    let mut peer = TcpStream::connect(srv.local_addr()).await.unwrap();
    expect_eof(&mut peer, Duration::from_secs(5), "the rejected connection").await;
    eventually("the close callback ran", || {
        l.callbacks.load(Ordering::SeqCst) == 1
    })
    .await;
    // The server forgets the session once its task ends, just after the callbacks.
    eventually("the rejected session left the server", || {
        srv.session_count() == 0
    })
    .await;
    assert_eq!(
        l.closes.load(Ordering::SeqCst),
        0,
        "a rejected session gets no on_close"
    );
    // The server goes on accepting.
    let _peer2 = TcpStream::connect(srv.local_addr()).await.unwrap();
    eventually("a second connection is handled", || {
        l.callbacks.load(Ordering::SeqCst) == 2
    })
    .await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_new_session_callback_is_a_failed_attempt_and_the_client_retries() {
    let (srv, _rx) = server().await;
    let (l, _crx) = recorder(false);
    let inner = setup(l, opts());
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let cb = new_session(move |c: &mut SessionConfig<Bytes>| {
        if c2.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("new-session callback blew up");
        }
        inner(c)
    });
    let client = ClientBuilder::new(srv.local_addr().to_string())
        .reconnect_interval(Duration::from_millis(10))
        .connect_tcp(cb)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), client.ready())
        .await
        .expect("the client's dial loop survives the panic")
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    client.close().await;
    srv.close().await;
}

// ---- options whose arithmetic overflows are refused ----

#[tokio::test]
async fn durations_that_would_overflow_a_deadline_are_refused() {
    for (name, o) in [
        (
            "cron_period",
            SessionOptions::default().cron_period(Duration::MAX),
        ),
        (
            "read_timeout",
            SessionOptions::default().read_timeout(Duration::MAX),
        ),
        (
            "write_timeout",
            SessionOptions::default().write_timeout(Duration::MAX),
        ),
        (
            "wait_time",
            SessionOptions::default().wait_time(Duration::MAX),
        ),
    ] {
        let (l, _rx) = recorder(false);
        let err = ServerBuilder::new("127.0.0.1:0")
            .session_options(o.clone())
            .serve_tcp(setup(l.clone(), o.clone()))
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} = Duration::MAX accepted"));
        assert!(
            matches!(err, Error::InvalidOption { name: n, .. } if n == name),
            "{name}: {err}"
        );
        let err = ClientBuilder::new("127.0.0.1:1")
            .session_options(o)
            .connect_tcp(setup(l, opts()))
            .err()
            .unwrap_or_else(|| panic!("client {name} = Duration::MAX accepted"));
        assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
    }
    let (l, _rx) = recorder(false);
    let err = ClientBuilder::new("127.0.0.1:1")
        .max_backoff(Duration::MAX)
        .connect_tcp(setup(l, opts()))
        .err()
        .expect("max_backoff = Duration::MAX refused");
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                name: "max_backoff",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn rpc_heartbeats_that_would_overflow_are_refused() {
    let o = RpcOptions::default()
        .heartbeat_period(Duration::from_secs(u64::MAX / 2))
        .heartbeat_misses(3);
    let err = o.validate().unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
    let err = RpcServer::start(Router::new(), o.clone(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .err()
    .expect("the server refuses the options");
    assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
    let err = RpcClient::start(Router::new(), o, |cb| {
        ClientBuilder::new("127.0.0.1:1").connect_tcp(cb)
    })
    .err()
    .expect("the client refuses the options");
    assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
    let ok = RpcOptions::default();
    ok.validate().unwrap();
}

// ---- reconnect back-off against a peer that accepts and closes at once ----

/// A listener that accepts and closes each connection at once; reports each accept's time.
async fn slammer() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<tokio::time::Instant>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = tx.send(tokio::time::Instant::now());
            drop(s);
        }
    });
    (addr, rx)
}

#[tokio::test(start_paused = true)]
async fn connect_then_drop_backs_off_exponentially_and_reaches_failed() {
    let (addr, mut accepts) = slammer().await;
    let (l, _rx) = recorder(false);
    let client = ClientBuilder::new(addr)
        .reconnect_interval(Duration::from_millis(100))
        .max_backoff(Duration::from_millis(1000))
        .jitter(0.2)
        // The paused clock jumps ahead whenever the runtime idles, even while a socket event
        // is on its way: a session's age is no measure here, only its (absent) packages.
        .stable_after(Duration::from_secs(24 * 3600))
        .reconnect_attempts(6)
        .connect_tcp(setup(l, opts()))
        .unwrap();
    // Each connection is up for a moment (`ready` may even succeed), then dropped.
    let failed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let ClientState::Failed(e) = client.state() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the client gives up");
    assert!(
        matches!(*failed, Error::ReconnectExhausted { attempts: 6, .. }),
        "{failed}"
    );
    let err = client.ready().await.unwrap_err();
    assert!(matches!(err, Error::ReconnectExhausted { .. }), "{err}");
    let mut times = Vec::new();
    while let Ok(t) = accepts.try_recv() {
        times.push(t);
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(times.len(), 6, "one connection per attempt; gaps {gaps:?}");
    // 100, 200, 400, 800, then the 1 s cap; each ±20%.
    for (gap, base) in gaps.iter().zip([100u64, 200, 400, 800, 1000]) {
        let base = Duration::from_millis(base);
        assert!(
            *gap >= base.mul_f64(0.8) && *gap <= base.mul_f64(1.2) + Duration::from_millis(5),
            "gaps {gaps:?}"
        );
    }
    client.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_session_that_did_useful_work_resets_the_failure_count() {
    // The server answers one package, then closes: each session delivered a package, so the
    // client keeps reconnecting at the short pause and never gives up.
    let (srv, _rx) = server().await;
    let (l, mut crx) = recorder(false);
    let client = ClientBuilder::new(srv.local_addr().to_string())
        .reconnect_interval(Duration::from_millis(100))
        .reconnect_attempts(2)
        .connect_tcp(setup(l, opts()))
        .unwrap();
    for _ in 0..4 {
        eventually("reconnected", || client.session().is_some()).await;
        let s = client.session().unwrap();
        s.write_pkg(&Bytes::from_static(b"ping"), None)
            .await
            .unwrap();
        loop {
            if let Ev::Msg(..) = next(&mut crx).await {
                break;
            }
        }
        for s in srv.sessions() {
            s.close();
        }
        loop {
            if let Ev::Close(_) = next(&mut crx).await {
                break;
            }
        }
    }
    assert!(!matches!(client.state(), ClientState::Failed(_)));
    client.close().await;
    srv.close().await;
}
