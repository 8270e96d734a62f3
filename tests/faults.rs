//! Faults over real sockets: a peer that stops reading, a half-open connection (the peer
//! vanished without a FIN), the server process killed with 1,000 calls in flight, and 10,000
//! connect/close cycles. Each checks that nothing hangs, every call ends with a result or an
//! error in time, and memory, descriptors and tasks come back to where they were.
//!
//! The tests of this binary measure process-wide memory and descriptors, so they run one at a
//! time. `child_server` is not a test of its own: it is the server process of
//! `server_killed_with_1000_calls_in_flight`, started from this binary.

mod child;
mod reliability;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use getty::core::{ClientBuilder, ServerBuilder, SessionOptions, SocketOptions};
use getty::rpc::{CallOptions, CodecId, RpcClient, RpcError, RpcOptions, RpcServer, Status};
use reliability::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[global_allocator]
static ALLOC: Counting = Counting;

async fn server_with(o: RpcOptions, b: ServerBuilder) -> RpcServer {
    RpcServer::start(service("rel"), o, |cb| b.serve_tcp(cb))
        .await
        .unwrap()
}

fn client(addr: impl ToString, o: RpcOptions, connections: usize) -> RpcClient {
    let a = addr.to_string();
    RpcClient::start(service("cli"), o, |cb| {
        ClientBuilder::new(a)
            .connections(connections)
            .reconnect_interval(Duration::from_millis(50))
            .reconnect_attempts(0)
            .connect_tcp(cb)
    })
    .unwrap()
}

/// Counts call outcomes by status ("OK" for successes).
#[derive(Default, Debug)]
struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn add(&mut self, r: &Result<Bytes, RpcError>) {
        let k = match r {
            Ok(_) => "OK".to_string(),
            Err(e) => e.status.name().to_string(),
        };
        *self.0.entry(k).or_default() += 1;
    }
    fn get(&self, k: &str) -> u64 {
        self.0.get(k).copied().unwrap_or(0)
    }
    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

// ---------------------------------------------------------------------------------------------
// A peer that stops reading
// ---------------------------------------------------------------------------------------------

/// The server calls a client that never reads (after its Hello). Its write queue (16 frames)
/// fills, callers wait for room within their deadline, the stuck socket write times out and
/// closes the session (failing every call at once), and memory stays flat. Another client is
/// served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_gets_a_bounded_queue_write_timeouts_and_flat_memory() {
    let _serial = SERIAL.lock().await;
    capture_logs();
    let write_timeout = Duration::from_secs(1);
    let o = opts().default_timeout(Duration::from_secs(3)).session(
        SessionOptions::default()
            .write_queue_len(16)
            .write_timeout(write_timeout),
    );
    let srv = server_with(
        o.clone(),
        ServerBuilder::new("127.0.0.1:0")
            .socket_options(SocketOptions::default().send_buffer_size(16 << 10)),
    )
    .await;
    let other = client(srv.local_addr(), opts(), 1);
    other.ready().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss_before = rss_bytes();

    // The stalled peer: a small receive buffer; it announces a large window in its Hello (so
    // the server sends as much as the socket takes), then never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 << 10).unwrap();
    let mut stalled = sock.connect(srv.local_addr()).await.unwrap();
    let hello = getty::rpc::frame::Frame::one_way(
        1,
        CodecId::Json,
        "getty.Peer",
        "Hello",
        r#"{"window":{"calls":100000,"bytes":1000000000},"features":["flow"]}"#,
    );
    stalled.write_all(&encode(&hello)).await.unwrap();
    let me = stalled.local_addr().unwrap();
    let mut peer = None;
    eventually(Duration::from_secs(5), "the server's peer", || {
        peer = srv
            .peers()
            .into_iter()
            .find(|p| p.remote_addr() == Some(me));
        peer.is_some()
    })
    .await;
    let peer = peer.unwrap();
    let sid = peer.id();

    let base = reset_peak();
    let t = Instant::now();
    let body = Bytes::from(vec![b'x'; 16 << 10]);
    let mut callers = Vec::new();
    for _ in 0..64 {
        let (peer, body) = (peer.clone(), body.clone());
        callers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut slowest = Duration::ZERO;
            while !peer.is_closed() {
                let start = Instant::now();
                let call = peer.call_raw(
                    "cli.Svc",
                    "Len",
                    CodecId::Json,
                    body.clone(),
                    CallOptions::new(),
                );
                let r = tokio::time::timeout(Duration::from_secs(10), call)
                    .await
                    .expect("a call hung");
                slowest = slowest.max(start.elapsed());
                tally.add(&r);
            }
            (tally, slowest)
        }));
    }
    // Meanwhile the other client is served.
    let mut served = 0;
    while !peer.is_closed() && t.elapsed() < Duration::from_secs(10) {
        let n: usize = other
            .peer()
            .unwrap()
            .call_json(SVC, "Len", &"hello".to_string())
            .await
            .expect("the other client is served");
        assert_eq!(n, 7);
        served += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let closed_after = t.elapsed();
    let mut tally = Tally::default();
    let mut slowest = Duration::ZERO;
    for c in callers {
        let (t, s) = c.await.unwrap();
        for (k, v) in t.0 {
            *tally.0.entry(k).or_default() += v;
        }
        slowest = slowest.max(s);
    }
    let peak = peak_bytes().saturating_sub(base);
    let written = peer.session().stats().write_bytes;
    let line = logged(
        &[
            "session failed",
            &format!("session={sid} "),
            "did not complete within",
        ],
        Duration::from_secs(5),
    )
    .await;
    eprintln!(
        "stalled peer closed after {closed_after:?}; calls {tally:?}, slowest {slowest:?}; \
         {written} bytes reached the socket; peak extra heap {}; other client served {served} \
         calls\n{line}",
        mb(peak)
    );
    assert!(
        closed_after < write_timeout * 4,
        "the stuck write must time out: closed after {closed_after:?}"
    );
    assert_eq!(tally.get("OK"), 0, "the peer never read anything");
    assert_eq!(
        tally.get("TIMEOUT") + tally.get("CONNECTION_CLOSED"),
        tally.total(),
        "{tally:?}"
    );
    // Callers waiting for room in the queue time out within their deadline or fail at once
    // when the stuck write closes the connection; none is left pending.
    assert_eq!(
        peer.stats().pending,
        0,
        "the close failed every pending call"
    );
    assert!(slowest < Duration::from_secs(4), "a call took {slowest:?}");
    // Only what the socket buffers hold ever left the queue.
    assert!(
        written < 4 * MB as u64,
        "{written} bytes written to a peer that never reads"
    );
    // 64 callers' 16 KiB frames, 16 queued: well under 8 MB however long the stall.
    assert!(peak < 8 * MB, "peak extra heap {}", mb(peak));
    drop(stalled);
    other.close().await;
    eventually(Duration::from_secs(5), "sessions closed", || {
        srv.core().session_count() == 0
    })
    .await;
    let rss_after = rss_bytes();
    assert!(
        rss_after < rss_before + 8 * MB,
        "RSS {} -> {}",
        mb(rss_before),
        mb(rss_after)
    );
    srv.close().await;
}

// ---------------------------------------------------------------------------------------------
// A half-open connection
// ---------------------------------------------------------------------------------------------

/// A TCP proxy whose connections can be frozen: they stop forwarding in both directions but are
/// never closed, as when the peer's machine vanished (no FIN, no RST).
struct Proxy {
    addr: SocketAddr,
    freeze: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (freeze, _) = watch::channel(false);
        let f = freeze.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((a, _)) = l.accept().await else { return };
                let Ok(b) = TcpStream::connect(target).await else {
                    continue;
                };
                // Each connection freezes on the next `freeze`, not on an earlier one.
                let mut frozen = f.subscribe();
                frozen.mark_unchanged();
                let (ar, aw) = a.into_split();
                let (br, bw) = b.into_split();
                conns.spawn(pipe(ar, bw, frozen.clone()));
                conns.spawn(pipe(br, aw, frozen));
            }
        });
        Proxy { addr, freeze, task }
    }
    /// Stops forwarding on every connection open now, without closing any.
    fn freeze(&self) {
        self.freeze.send_modify(|v| *v = !*v);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if to.write_all(&buf[..n]).await.is_err() { return },
            },
            _ = frozen.changed() => {
                // Vanished: hold both sockets open and never touch them again.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_detected_by_heartbeats_and_its_calls_fail() {
    let _serial = SERIAL.lock().await;
    let (period, misses) = (Duration::from_millis(300), 3);
    let o = opts()
        .heartbeat_period(period)
        .heartbeat_misses(misses)
        .default_timeout(Duration::from_secs(30));
    let srv = server_with(o.clone(), ServerBuilder::new("127.0.0.1:0")).await;
    let proxy = Proxy::start(srv.local_addr()).await;
    let c = client(proxy.addr, o, 1);
    c.ready().await.unwrap();
    let peer = c.peer().unwrap();
    let _: String = peer
        .call_json(SVC, "Echo", &"up".to_string())
        .await
        .unwrap();
    let server_side = srv.peers().pop().unwrap();
    // Calls that would take a minute, both ways.
    let mut calls = Vec::new();
    for _ in 0..50 {
        calls.push(
            peer.start_call_raw(
                SVC,
                "Sleep",
                CodecId::Json,
                "60000".into(),
                CallOptions::new(),
            )
            .await
            .unwrap(),
        );
    }
    let mut reverse = Vec::new();
    for _ in 0..10 {
        reverse.push(
            server_side
                .start_call_raw(
                    "cli.Svc",
                    "Sleep",
                    CodecId::Json,
                    "60000".into(),
                    CallOptions::new(),
                )
                .await
                .unwrap(),
        );
    }
    // Let some heartbeats pass, then the network path dies silently.
    tokio::time::sleep(period * 2).await;
    proxy.freeze();
    let t = Instant::now();
    let all = futures_util::future::join_all(calls.into_iter().chain(reverse)).await;
    let took = t.elapsed();
    for r in &all {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.status, Status::ConnectionClosed, "{e}");
    }
    eprintln!("half-open connection detected after {took:?} (period {period:?} x {misses})");
    // Silence is measured from the last frame received (a Ping at most one period before the
    // freeze) and checked once per period.
    let (low, high) = (
        period * (misses - 1),
        period * (misses + 2) + Duration::from_millis(500),
    );
    assert!(
        took >= low && took <= high,
        "detected after {took:?}, expected {low:?}..{high:?}"
    );
    eventually(high, "the server side closed too", || {
        server_side.is_closed()
    })
    .await;
    assert!(peer.is_closed());
    // The client reconnects (a new connection through the proxy) and calls succeed again.
    let mut ok = false;
    for _ in 0..300 {
        if let Ok(p) = c.peer()
            && let Ok(s) = p
                .call_json::<_, String>(SVC, "Echo", &"again".to_string())
                .await
        {
            assert_eq!(s, "again");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the client did not recover");
    c.close().await;
    srv.close().await;
}

// ---------------------------------------------------------------------------------------------
// The server process killed mid-call
// ---------------------------------------------------------------------------------------------

/// The server process of `server_killed_with_1000_calls_in_flight`: serves `rel.Svc` on
/// `GETTY_CHILD_ADDR`, prints `READY <addr>`, and waits to be killed. A no-op as a plain test.
#[test]
fn child_server() {
    let Ok(addr) = std::env::var("GETTY_CHILD_ADDR") else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let srv = server_with(opts(), ServerBuilder::new(addr)).await;
            println!("READY {}", srv.local_addr());
            tokio::time::sleep(Duration::from_secs(120)).await;
        });
}

/// A child process running `child_server`; killed (SIGKILL) when dropped.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn start(addr: &str) -> ChildServer {
        let (child, rest) =
            child::spawn_test("child_server", &[("GETTY_CHILD_ADDR", addr)], "READY ");
        let addr = rest.parse::<SocketAddr>().unwrap();
        ChildServer { child, addr }
    }
    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL: no close, no flush; the kernel resets the sockets
        self.child.wait().unwrap();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_with_1000_calls_in_flight() {
    let _serial = SERIAL.lock().await;
    let mut server = ChildServer::start("127.0.0.1:0");
    let c = client(server.addr, opts(), 4);
    c.ready().await.unwrap();
    let timeout = Duration::from_secs(5);
    // 1,000 calls of 0..1000 ms over 4 connections; the server dies at 500 ms.
    let mut calls = Vec::new();
    for _ in 0..1000 {
        let ms = fastrand::u64(0..1000);
        let call = c
            .peer()
            .unwrap()
            .start_call_raw(
                SVC,
                "Sleep",
                CodecId::Json,
                ms.to_string().into(),
                CallOptions::new().timeout(timeout),
            )
            .await
            .unwrap();
        calls.push(tokio::spawn(async move {
            let r = tokio::time::timeout(timeout + Duration::from_secs(1), call).await;
            (r.ok(), Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    server.kill();
    let mut tally = Tally::default();
    let mut last_failure = Duration::ZERO;
    for c in calls {
        let (r, at) = c.await.unwrap();
        let r = r.expect("a call outlived its timeout: it hung");
        if r.is_err() {
            last_failure = last_failure.max(at.saturating_duration_since(killed_at));
        }
        tally.add(&r);
    }
    eprintln!("after the kill: {tally:?}; the last failure came {last_failure:?} after the kill");
    assert_eq!(tally.total(), 1000);
    assert!(
        tally.get("OK") > 0 && tally.get("CONNECTION_CLOSED") > 0,
        "{tally:?}"
    );
    assert_eq!(
        tally.get("OK") + tally.get("CONNECTION_CLOSED"),
        1000,
        "every call succeeded or failed with CONNECTION_CLOSED: {tally:?}"
    );
    assert!(
        last_failure < Duration::from_secs(2),
        "calls failed only {last_failure:?} after the kill"
    );
    // A new server process on the same address: the client reconnects by itself.
    let again = ChildServer::start(&server.addr.to_string());
    let t = Instant::now();
    let mut ok = 0;
    while ok < 100 {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the client did not recover"
        );
        if let Ok(p) = c.peer()
            && let Ok(s) = p
                .call_json::<_, String>(SVC, "Echo", &"back".to_string())
                .await
        {
            assert_eq!(s, "back");
            ok += 1;
            continue;
        }
        assert_eq!(ok, 0, "once recovered, every call succeeds");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("recovered {:?} after the restart", t.elapsed());
    c.close().await;
    drop(again);
}

// ---------------------------------------------------------------------------------------------
// Churn
// ---------------------------------------------------------------------------------------------

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// One connect/close cycle of one of three kinds.
async fn cycle(addr: SocketAddr, i: u64) {
    match i % 10 {
        // An RPC client: connect, one call, close.
        0..=6 => {
            let c = client(addr, opts(), 1);
            c.ready().await.unwrap();
            let s: String = c
                .peer()
                .unwrap()
                .call_json(SVC, "Echo", &i.to_string())
                .await
                .unwrap();
            assert_eq!(s, i.to_string());
            c.close().await;
        }
        // A raw connection dropped at once.
        7 | 8 => drop(TcpStream::connect(addr).await.unwrap()),
        // A raw connection that dies in the middle of a frame.
        _ => {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let f = encode(&getty::rpc::Frame::request(
                1,
                CodecId::Json,
                SVC,
                "Echo",
                "\"x\"",
            ));
            s.write_all(&f[..f.len() / 2]).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_close_cycles_leak_no_tasks_descriptors_or_memory() {
    let _serial = SERIAL.lock().await;
    // Captured log lines would count as growth of the heap.
    set_capture(false);
    let srv = Arc::new(server_with(opts(), ServerBuilder::new("127.0.0.1:0")).await);
    let addr = srv.local_addr();
    let settle = |srv: Arc<RpcServer>| async move {
        eventually(Duration::from_secs(10), "every session closed", || {
            srv.core().session_count() == 0 && srv.peers().is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Warm-up: the runtime, the allocator and the logger reach their steady sizes.
    for i in 0..300 {
        cycle(addr, i).await;
    }
    settle(srv.clone()).await;
    let (fds0, tasks0, live0, rss0) = (open_fds(), alive_tasks(), live_bytes(), rss_bytes());

    let t = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let done = done.clone();
            tokio::spawn(async move {
                for k in 0..1250u64 {
                    cycle(addr, w * 1250 + k).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), 10_000);
    let took = t.elapsed();
    settle(srv.clone()).await;
    // Descriptors of sockets closed a moment ago may take a moment to go.
    let mut fds1 = open_fds();
    for _ in 0..100 {
        if fds1 <= fds0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        fds1 = open_fds();
    }
    let (tasks1, live1, rss1) = (alive_tasks(), live_bytes(), rss_bytes());
    eprintln!(
        "10,000 cycles in {took:?}: fds {fds0} -> {fds1}, tasks {tasks0} -> {tasks1}, \
         live heap {} -> {}, RSS {} -> {}",
        mb(live0),
        mb(live1),
        mb(rss0),
        mb(rss1)
    );
    assert!(fds1 <= fds0, "descriptors leaked: {fds0} -> {fds1}");
    assert!(tasks1 <= tasks0, "tasks leaked: {tasks0} -> {tasks1}");
    assert!(
        live1 < live0 + MB / 2,
        "heap grew {} -> {}",
        mb(live0),
        mb(live1)
    );
    assert!(
        rss1 < rss0 + 16 * MB,
        "RSS grew {} -> {}",
        mb(rss0),
        mb(rss1)
    );
    srv.close().await;
    set_capture(true);
}
