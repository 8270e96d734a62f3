//! Bad input over real sockets. An RPC server serves healthy clients that call it all the time,
//! while raw TCP peers send it garbage, a wrong magic or version, a length of ~4 GiB, a frame cut
//! off by a close, an unknown kind, malformed meta, and bursts of 100,000 tiny frames. Each bad
//! peer's session, and only it, is closed (PROTOCOL.md section 15) with the reason logged; the
//! server allocates nothing near a claimed length; every healthy call succeeds.
//!
//! Also the limits over real sockets: the frame limit (at the limit passes, one byte over closes
//! the session, a sender refuses locally) and the in-flight limit, per connection.
//!
//! The tests of this binary measure process-wide memory, so they run one at a time.

mod reliability;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::frame::Frame;
use getty::rpc::{
    CallOptions, CodecId, Kind, Router, RpcClient, RpcError, RpcOptions, RpcServer, Status,
};
use reliability::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOC: Counting = Counting;

async fn server(o: RpcOptions) -> RpcServer {
    RpcServer::start(service("rel"), o, |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap()
}

/// Clients that call `Echo` in a loop until stopped, counting what happens.
struct Healthy {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    clients: Vec<Arc<RpcClient>>,
    /// Each client's one connection: it must stay the same throughout.
    sessions: Vec<u64>,
}

async fn healthy(addr: SocketAddr, n: usize) -> Healthy {
    let mut h = Healthy {
        stop: Arc::default(),
        ok: Arc::default(),
        failures: Arc::default(),
        tasks: Vec::new(),
        clients: Vec::new(),
        sessions: Vec::new(),
    };
    for i in 0..n {
        let c = RpcClient::start(Router::new(), opts(), |cb| {
            ClientBuilder::new(addr.to_string()).connect_tcp(cb)
        })
        .unwrap();
        c.ready().await.unwrap();
        h.sessions.push(c.peer().unwrap().id());
        let c = Arc::new(c);
        let (stop, ok, failures, c2) =
            (h.stop.clone(), h.ok.clone(), h.failures.clone(), c.clone());
        h.tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let msg = format!("healthy-{i}-{k}");
                let r = match c2.peer() {
                    Ok(p) => p.call_json::<_, String>(SVC, "Echo", &msg).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(back) if back == msg => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures
                        .lock()
                        .unwrap()
                        .push(format!("client {i}: {other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
        h.clients.push(c);
    }
    h
}

impl Healthy {
    /// Stops the callers; asserts every call succeeded. Returns how many there were.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        assert!(failures.is_empty(), "healthy calls failed: {failures:#?}");
        for (c, id) in self.clients.iter().zip(&self.sessions) {
            let now: Vec<u64> = c
                .peers()
                .iter()
                .filter(|p| !p.is_closed())
                .map(|p| p.id())
                .collect();
            assert_eq!(now, [*id], "a healthy client's connection was closed");
        }
        for c in &self.clients {
            c.close().await;
        }
        self.ok.load(Ordering::Relaxed)
    }
}

/// Connects a raw peer and finds the server's session for it.
async fn raw_peer(server: &RpcServer) -> (TcpStream, u64) {
    let s = TcpStream::connect(server.local_addr()).await.unwrap();
    let me = s.local_addr().unwrap();
    let mut sid = None;
    eventually(Duration::from_secs(5), "server lists the raw peer", || {
        sid = server
            .core()
            .sessions()
            .iter()
            .find(|x| x.remote_addr() == Some(me))
            .map(|x| x.id());
        sid.is_some()
    })
    .await;
    (s, sid.unwrap())
}

fn session_open(server: &RpcServer, sid: u64) -> bool {
    server.core().sessions().iter().any(|s| s.id() == sid)
}

/// Sends `bytes` (then half-closes if `fin`), and expects the server to close the session with
/// a logged error containing `why`, without allocating more than `max_alloc` while doing so.
/// Returns what the server sent before closing.
async fn expect_closed(
    server: &RpcServer,
    bytes: &[u8],
    fin: bool,
    why: &str,
    max_alloc: usize,
    verbose: bool,
) -> BytesMut {
    let (mut s, sid) = raw_peer(server).await;
    let base = reset_peak();
    let t = Instant::now();
    let _ = s.write_all(bytes).await; // the server may close before it has read everything
    if fin {
        let _ = s.shutdown().await;
    }
    let mut got = BytesMut::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read_buf(&mut got).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{why}: the server did not close the connection"
    );
    eventually(Duration::from_secs(5), "the session to end", || {
        !session_open(server, sid)
    })
    .await;
    let took = t.elapsed();
    let peak = peak_bytes().saturating_sub(base);
    let line = logged(
        &["session failed", &format!("session={sid} "), why],
        Duration::from_secs(5),
    )
    .await;
    if verbose {
        eprintln!(
            "closed after {took:?}, peak extra heap {}: {line}",
            mb(peak)
        );
    }
    assert!(
        peak < max_alloc,
        "{why}: allocated {} (limit {})",
        mb(peak),
        mb(max_alloc)
    );
    got
}

fn request(seq: u64, method: &str, body: &'static [u8]) -> Frame {
    Frame::request(seq, CodecId::Json, SVC, method, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_the_offending_session_and_others_keep_being_served() {
    let _serial = SERIAL.lock().await;
    capture_logs();
    let srv = server(opts()).await;
    let addr = srv.local_addr();
    let healthy = healthy(addr, 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_bytes();
    let live_before = live_bytes();

    for round in 0..10 {
        attacks(&srv, round == 0).await;
    }
    let rss_after_attacks = rss_bytes();
    assert!(
        rss_after_attacks < rss_before + 8 * MB,
        "RSS grew from {} to {} during the attacks",
        mb(rss_before),
        mb(rss_after_attacks)
    );

    let calls = healthy.finish().await;
    assert!(calls > 100, "healthy clients made only {calls} calls");
    eventually(Duration::from_secs(5), "every session closed", || {
        srv.core().session_count() == 0
    })
    .await;
    let (rss_after, live_after) = (rss_bytes(), live_bytes());
    eprintln!(
        "healthy calls: {calls}; RSS {} -> {}; live heap {} -> {}",
        mb(rss_before),
        mb(rss_after),
        mb(live_before),
        mb(live_after)
    );
    assert!(
        rss_after < rss_before + 8 * MB,
        "RSS grew by {}",
        mb(rss_after - rss_before)
    );
    srv.close().await;
}

/// One round of every bad input; each must close its own session with its reason logged.
async fn attacks(srv: &RpcServer, verbose: bool) {
    let closed = |bytes: Vec<u8>, fin: bool, why: &'static str| async move {
        expect_closed(srv, &bytes, fin, why, MB, verbose).await
    };
    // 1. Garbage: refused on its first two bytes.
    let mut junk = vec![0u8; 4096];
    junk.iter_mut().for_each(|b| *b = fastrand::u8(..));
    junk[0] = b'X';
    closed(junk, false, "bad magic").await;

    // 2. A wrong magic in an otherwise valid frame, and a wrong version.
    let mut f = encode(&request(1, "Echo", b"\"x\""));
    f[0] = b'g';
    closed(f.to_vec(), false, "bad magic 67 54").await;
    let mut f = encode(&request(1, "Echo", b"\"x\""));
    f[2] = 2;
    closed(f.to_vec(), false, "unsupported protocol version 2").await;

    // 3. A length field claiming ~4 GiB: refused from the 28 header bytes, nothing reserved.
    let huge = raw_header(Kind::Request.as_u8(), 1, 6, u32::MAX);
    closed(
        huge.to_vec(),
        false,
        "frame of 4294967329 bytes exceeds the limit",
    )
    .await;
    // meta_len over 65535 likewise.
    let meta = raw_header(Kind::Request.as_u8(), 1, 70_000, 0);
    closed(meta.to_vec(), false, "meta section of 70000 bytes exceeds").await;

    // 4. A frame cut off in the middle of its body, then the peer closes.
    let body: &'static [u8] = b"\"a body that will never arrive in full\"";
    let f = encode(&request(1, "Echo", body));
    closed(
        f[..f.len() - 10].to_vec(),
        true,
        "bytes of an unfinished package",
    )
    .await;

    // 5. An unknown frame kind.
    let mut f = encode(&Frame::ping(1));
    f[3] = 11;
    closed(f.to_vec(), false, "unknown frame kind 11").await;

    // 6. A malformed meta section: a service name that is not UTF-8, and a pair count that
    //    runs past the section.
    let mut f = raw_header(Kind::Request.as_u8(), 1, 7, 0);
    f.extend_from_slice(&[0, 1, 0xff, 0, 0, 0, 0]);
    closed(f.to_vec(), false, "service is not valid UTF-8").await;
    let mut f = raw_header(Kind::Request.as_u8(), 1, 6, 0);
    f.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff]);
    closed(f.to_vec(), false, "pair count runs past").await;

    // 7. A valid request read together with a violation is not answered: the session closes
    //    at once, sending nothing more (PROTOCOL.md section 15). Only the server's Hello, sent
    //    when the connection opened, may have arrived.
    let mut f = encode(&request(7, "Echo", b"\"first\""));
    f.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
    let mut got = closed(f.to_vec(), false, "bad magic 48 54").await;
    let answers = take_frames(&mut got);
    assert!(
        answers.is_empty(),
        "answered after a violation: {answers:?}"
    );
}

/// What a burst got back, per frame.
#[derive(Debug)]
struct Reply {
    kind: Kind,
    status: Status,
    seq: u64,
}

/// Writes `burst` on a raw connection while reading what comes back, until `want` frames came
/// back or nothing more arrives for 2 s; then closes. Returns the replies, how long it took and
/// the peak extra heap meanwhile (the test's own buffers are allocated before the baseline).
async fn burst(srv: &RpcServer, burst: Bytes, want: usize) -> (Vec<Reply>, Duration, usize) {
    let (s, sid) = raw_peer(srv).await;
    let (mut r, mut w) = s.into_split();
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut replies = Vec::with_capacity(want);
    let base = reset_peak();
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&burst).await;
        w
    });
    while replies.len() < want {
        if buf.capacity() - buf.len() < 64 << 10 {
            buf.reserve(64 << 10); // reuses the front once frames were taken off
        }
        match tokio::time::timeout(Duration::from_secs(2), r.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                for f in take_frames(&mut buf) {
                    replies.push(Reply {
                        kind: f.kind,
                        status: f.status,
                        seq: f.seq,
                    });
                }
            }
            _ => break,
        }
    }
    let took = t.elapsed();
    let peak = peak_bytes().saturating_sub(base);
    let w = writer.await.unwrap();
    assert!(
        session_open(srv, sid),
        "a burst of valid frames is not a reason to close"
    );
    drop((r, w));
    eventually(Duration::from_secs(5), "the session to end", || {
        !session_open(srv, sid)
    })
    .await;
    (replies, took, peak)
}

const N: usize = 100_000;

/// `N` frames, back to back.
fn many(f: impl Fn(u64) -> Frame) -> Bytes {
    let mut b = BytesMut::new();
    for i in 1..=N as u64 {
        getty::rpc::frame::encode(&f(i), &mut b).unwrap();
    }
    b.freeze()
}

/// 100,000 Pings, 100,000 Requests to an unknown service and 100,000 Echo Requests, each in one
/// burst: valid traffic, so the session stays up; the server's memory stays bounded (it never
/// buffers a burst) and the healthy clients are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_100k_tiny_frames_keep_memory_bounded_and_others_served() {
    let _serial = SERIAL.lock().await;
    capture_logs();
    let srv = server(opts()).await;
    let healthy = healthy(srv.local_addr(), 4).await;
    let bursts = [
        ("pings", many(Frame::ping), Kind::Pong, &[Status::Ok][..]),
        (
            "unknown-service requests",
            many(|i| Frame::request(i, CodecId::Json, "no.Such", "M", &b"1"[..])),
            Kind::Response,
            &[Status::UnknownService][..],
        ),
        (
            "echo requests",
            many(|i| Frame::request(i, CodecId::Json, SVC, "Echo", &b"\"e\""[..])),
            Kind::Response,
            &[Status::Ok, Status::Overloaded][..],
        ),
    ];
    for (what, bytes, kind, statuses) in bursts {
        let (replies, took, peak) = burst(&srv, bytes, N).await;
        eprintln!(
            "{what}: {} replies to {N} in {took:?}; peak extra heap {}",
            replies.len(),
            mb(peak)
        );
        assert!(!replies.is_empty(), "{what}: no reply at all");
        assert!(
            replies
                .iter()
                .all(|f| f.kind == kind && statuses.contains(&f.status)),
            "{what}: unexpected reply"
        );
        assert!(
            replies.windows(2).all(|w| w[0].seq != w[1].seq),
            "{what}: one reply per seq"
        );
        // The server holds a 64 KiB read buffer, the bounded write queue, and at most
        // `max_inflight` running handlers; never the 3.4 MB burst.
        assert!(peak < 16 * MB, "{what}: peak extra heap {}", mb(peak));
    }
    let calls = healthy.finish().await;
    assert!(calls > 100, "healthy clients made only {calls} calls");
    srv.close().await;
}

/// Replies the protocol requires are never dropped, even when a burst of more than
/// `write_queue_len` (1024) frames arrives in one read: every one of 100,000 Pings gets its Pong,
/// every Request to an unknown service its `UNKNOWN_SERVICE`, and with handlers run as tasks
/// (so the in-flight limit is reached) every Echo Request gets its reply or its `OVERLOADED`.
/// PROTOCOL.md: a Ping MUST be answered (section 10), a Request gets exactly one Response
/// (section 8). (Before the fix, replies that found the queue full were dropped: ~1,024 of
/// 100,000 answered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ping_and_every_refused_request_of_a_100k_burst_is_answered() {
    let _serial = SERIAL.lock().await;
    let srv = server(opts().inline_first_poll(false)).await;
    let (pongs, _, _) = burst(&srv, many(Frame::ping), N).await;
    let (unknown, _, _) = burst(
        &srv,
        many(|i| Frame::request(i, CodecId::Json, "no.Such", "M", &b"1"[..])),
        N,
    )
    .await;
    let (echo, _, _) = burst(
        &srv,
        many(|i| Frame::request(i, CodecId::Json, SVC, "Echo", &b"\"e\""[..])),
        N,
    )
    .await;
    srv.close().await;
    assert_eq!(
        (pongs.len(), unknown.len(), echo.len()),
        (N, N, N),
        "(Pongs, UNKNOWN_SERVICE Responses, Echo Responses (OK or OVERLOADED)) for {N} Pings, \
         {N} Requests to an unknown service and {N} Echo Requests: every Ping MUST be answered \
         (PROTOCOL.md section 10) and every Request gets one Response (section 8)"
    );
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_limit_at_the_limit_passes_one_byte_over_closes_and_a_sender_refuses_locally() {
    let _serial = SERIAL.lock().await;
    capture_logs();
    let limit = 1024;
    let o = opts().max_frame(limit);
    let srv = server(o.clone()).await;
    let healthy = healthy(srv.local_addr(), 1).await;
    let empty =
        getty::rpc::frame::encoded_len(&Frame::request(1, CodecId::Json, SVC, "Len", Bytes::new()));
    let frame_of =
        |total: usize| Frame::request(1, CodecId::Json, SVC, "Len", vec![b'x'; total - empty]);
    // Exactly at the limit: served.
    let (mut s, sid) = raw_peer(&srv).await;
    let f = encode(&frame_of(limit));
    assert_eq!(f.len(), limit);
    s.write_all(&f).await.unwrap();
    let mut buf = BytesMut::new();
    let reply = loop {
        s.read_buf(&mut buf).await.unwrap();
        if let Some(r) = take_frames(&mut buf).pop() {
            break r;
        }
    };
    assert_eq!(reply.status, Status::Ok);
    assert_eq!(reply.body, Bytes::from((limit - empty).to_string()));
    assert!(session_open(&srv, sid));
    drop(s);
    // One byte over: the session is closed from the header alone (no body sent at all).
    let f = encode(&frame_of(limit + 1));
    expect_closed(
        &srv,
        &f[..28],
        false,
        "frame of 1025 bytes exceeds the limit of 1024",
        MB,
        true,
    )
    .await;
    // A sender never puts an over-limit frame on the wire: the call fails locally and its
    // connection stays up.
    let c = RpcClient::start(Router::new(), o, |cb| {
        ClientBuilder::new(srv.local_addr().to_string()).connect_tcp(cb)
    })
    .unwrap();
    c.ready().await.unwrap();
    let peer = c.peer().unwrap();
    let e = peer
        .call_raw(
            SVC,
            "Len",
            CodecId::Json,
            Bytes::from(vec![b'x'; 2000]),
            CallOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("exceeds the limit"), "{e}");
    let n: usize = peer.call_json(SVC, "Len", &"y".repeat(100)).await.unwrap();
    assert_eq!(n, 102);
    assert!(!peer.is_closed());
    c.close().await;
    healthy.finish().await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limit_is_enforced_per_connection_over_real_sockets() {
    let _serial = SERIAL.lock().await;
    let limit = 4;
    let o = opts().max_inflight(limit);
    let srv = server(o.clone()).await;
    let connect = || {
        let a = srv.local_addr().to_string();
        RpcClient::start(Router::new(), o.clone(), |cb| {
            ClientBuilder::new(a).connect_tcp(cb)
        })
        .unwrap()
    };
    let (a, b) = (connect(), connect());
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    let (pa, pb) = (a.peer().unwrap(), b.peer().unwrap());
    // 10 slow calls at once on each connection: getty clients know the server's window from
    // its Hello, so `limit` run at a time per connection, the rest wait, and none is refused.
    let start = |p: getty::rpc::Peer| async move {
        let r: Result<u64, RpcError> = p.call_json(SVC, "Sleep", &200u64).await;
        r
    };
    let calls: Vec<_> = (0..10)
        .flat_map(|_| [start(pa.clone()), start(pb.clone())])
        .collect();
    let running = tokio::spawn(futures_util::future::join_all(calls));
    let mut most = 0;
    while !running.is_finished() {
        for p in srv.peers() {
            most = most.max(p.stats().inflight);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let results = running.await.unwrap();
    assert!(results.iter().all(|r| matches!(r, Ok(200))), "{results:?}");
    assert!(
        most <= limit,
        "{most} calls ran at once on one connection, limit {limit}"
    );
    assert_eq!(most, limit, "the window was used");
    assert!(srv.peers().iter().all(|p| p.stats().refused == 0));
    // A peer that ignores the window (it sent no Hello) gets `OVERLOADED` at once for what is
    // over the limit, per connection.
    let (mut s, _) = raw_peer(&srv).await;
    let mut burst = BytesMut::new();
    for i in 1..=10u64 {
        getty::rpc::frame::encode(
            &Frame::request(i, CodecId::Json, SVC, "Sleep", &b"200"[..]),
            &mut burst,
        )
        .unwrap();
    }
    s.write_all(&burst).await.unwrap();
    let mut buf = BytesMut::new();
    let mut answers = Vec::new();
    while answers.len() < 10 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_buf(&mut buf))
            .await
            .expect("every request is answered")
            .unwrap();
        assert!(n > 0, "closed");
        answers.extend(take_frames(&mut buf).into_iter().map(|f| f.status));
    }
    let over = answers.iter().filter(|s| **s == Status::Overloaded).count();
    let ok = answers.iter().filter(|s| **s == Status::Ok).count();
    assert_eq!((ok, over), (limit, 10 - limit), "{answers:?}");
    drop(s);
    assert_eq!(
        srv.peers()
            .iter()
            .map(|p| p.stats().inflight)
            .sum::<usize>(),
        0
    );
    a.close().await;
    b.close().await;
    srv.close().await;
}

/// A WebSocket peer that never finishes its upgrade request, even one that trickles a byte at
/// a time (slowloris), is cut at the handshake timeout; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_trickling_websocket_handshake_is_cut_at_the_timeout() {
    let _serial = SERIAL.lock().await;
    let limit = Duration::from_millis(300);
    let srv = RpcServer::start(service("rel"), opts(), |cb| {
        ServerBuilder::new("127.0.0.1:0")
            .handshake_timeout(limit)
            .serve_ws("/rpc", cb)
    })
    .await
    .unwrap();
    let addr = srv.local_addr();
    let silent = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /rpc HTTP/1.1\r\n").await.unwrap();
        let t = Instant::now();
        let mut b = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
        (
            r.expect("a silent peer must be cut").unwrap_or(0),
            t.elapsed(),
        )
    };
    let trickle = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t = Instant::now();
        let req = b"GET /rpc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
        for b in req.iter().cycle() {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            if t.elapsed() > Duration::from_secs(5) {
                panic!("a trickling peer must be cut");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.elapsed()
    };
    let ((n, silent_took), trickle_took) = tokio::join!(silent, trickle);
    eprintln!("silent peer cut after {silent_took:?}, trickling peer after {trickle_took:?}");
    assert_eq!(n, 0, "closed without an answer");
    for took in [silent_took, trickle_took] {
        assert!(
            took >= limit - Duration::from_millis(50) && took < limit * 5,
            "{took:?}"
        );
    }
    assert_eq!(srv.core().session_count(), 0);
    // A real client is served.
    let c = RpcClient::start(Router::new(), opts(), |cb| {
        ClientBuilder::new(format!("ws://{addr}/rpc")).connect_ws(cb)
    })
    .unwrap();
    c.ready().await.unwrap();
    let s: String = c
        .peer()
        .unwrap()
        .call_json(SVC, "Echo", &"ws".to_string())
        .await
        .unwrap();
    assert_eq!(s, "ws");
    c.close().await;
    srv.close().await;
}

/// A header that announces a frame within the limit, then no body: the server reserves room
/// for that frame (so a big body is read in few syscalls), never more than the frame limit, and
/// the stalled partial frame is cut at the read timeout. The reserved pages are never touched,
/// so the resident size does not grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_within_the_limit_reserves_at_most_the_limit_and_a_stalled_body_times_out() {
    let _serial = SERIAL.lock().await;
    capture_logs();
    let read_timeout = Duration::from_millis(500);
    let o = opts().session(getty::core::SessionOptions::default().read_timeout(read_timeout));
    let limit = o.max_frame;
    let srv = server(o).await;
    let rss_before = rss_bytes();
    let claim = raw_header(Kind::Request.as_u8(), 1, 6, (limit - 28 - 6) as u32);
    let t = Instant::now();
    let (mut s, sid) = raw_peer(&srv).await;
    let base = reset_peak();
    s.write_all(&claim).await.unwrap();
    let rss_stalled = {
        tokio::time::sleep(read_timeout / 2).await;
        rss_bytes()
    };
    // Only the server's Hello comes back, then the close.
    let mut got = BytesMut::new();
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read_buf(&mut got).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "not closed");
    assert!(take_frames(&mut got).is_empty());
    let took = t.elapsed();
    let peak = peak_bytes().saturating_sub(base);
    logged(
        &[
            "session failed",
            &format!("session={sid} "),
            "stalled for longer than the read timeout",
        ],
        Duration::from_secs(5),
    )
    .await;
    eprintln!(
        "a {} MB claim: peak extra heap {}, RSS {} -> {}, cut after {took:?}",
        limit / MB,
        mb(peak),
        mb(rss_before),
        mb(rss_stalled)
    );
    assert!(
        peak <= limit + MB,
        "reserved {} for a {} limit",
        mb(peak),
        mb(limit)
    );
    assert!(
        rss_stalled < rss_before + 8 * MB,
        "RSS {} -> {}",
        mb(rss_before),
        mb(rss_stalled)
    );
    assert!(took >= read_timeout && took < read_timeout * 6, "{took:?}");
    srv.close().await;
}

/// A peer floods Echo Requests and never reads the Responses. Its replies cannot all be queued;
/// whatever waits for room must stay bounded (by the write queue and `max_inflight`), not grow
/// with the flood, until the stuck write times out and closes the session.
///
/// (Before the fix, a reply that found the queue full spawned a task that held nothing: a 4 MB
/// flood made the server hold ~150 MB. Now the session stops reading while its write queue is
/// full, and a waiting reply keeps its in-flight slot.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_a_peer_that_never_reads_its_replies_keeps_memory_bounded() {
    let _serial = SERIAL.lock().await;
    capture_logs();
    let o = opts()
        .session(getty::core::SessionOptions::default().write_timeout(Duration::from_secs(2)));
    // Small socket buffers on both ends, so the stuck write shows at once.
    let srv = RpcServer::start(service("rel"), o, |cb| {
        ServerBuilder::new("127.0.0.1:0")
            .socket_options(getty::core::SocketOptions::default().send_buffer_size(16 << 10))
            .serve_tcp(cb)
    })
    .await
    .unwrap();
    let healthy = healthy(srv.local_addr(), 2).await;
    let flood = many(|i| Frame::request(i, CodecId::Json, SVC, "Echo", &b"\"e\""[..]));
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 << 10).unwrap();
    let mut s = sock.connect(srv.local_addr()).await.unwrap();
    let me = s.local_addr().unwrap();
    let mut sid = 0;
    eventually(Duration::from_secs(5), "the server's session", || {
        let found = srv
            .core()
            .sessions()
            .into_iter()
            .find(|x| x.remote_addr() == Some(me));
        sid = found.map_or(0, |x| x.id());
        sid != 0
    })
    .await;
    let base = reset_peak();
    let t = Instant::now();
    // The server reads the whole flood (it is valid), so this completes.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&flood)).await;
    let wrote = t.elapsed();
    eventually(
        Duration::from_secs(10),
        "the stuck write to close the session",
        || !session_open(&srv, sid),
    )
    .await;
    let peak = peak_bytes().saturating_sub(base);
    eprintln!(
        "{N} requests ({} MB) written in {wrote:?}, session closed after {:?}; peak extra heap {}",
        flood.len() / MB,
        t.elapsed(),
        mb(peak)
    );
    drop(s);
    healthy.finish().await;
    // 1024 queued replies, `max_inflight` (4096) handlers: a few MB, whatever the flood's size.
    assert!(
        peak < 16 * MB,
        "peak extra heap {} for a {} MB flood",
        mb(peak),
        flood.len() / MB
    );
    srv.close().await;
}
