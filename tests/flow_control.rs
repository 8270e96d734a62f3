//! Flow control over real sockets: an `RpcServer` and an `RpcClient` on one connection, each
//! serving an echo, each calling the other hard at the same time. Every call completes (the
//! windows make a getty caller wait for room instead of being refused), nothing stalls, memory
//! stays bounded and is reported — with the default options and with small queues, over TCP,
//! TLS and WebSocket. Then the other promises of the connection core: deadlines that cover
//! queueing and reach nested calls, a reply over the frame limit answered `INTERNAL`, and
//! handlers (one-way too) stopped on Cancel and close.
//!
//! The tests of this binary measure process-wide memory, so they run one at a time.

mod reliability;
#[path = "transport_common/mod.rs"]
mod transport_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use getty::core::{ClientBuilder, ServerBuilder, SessionOptions};
use getty::rpc::{
    CallOptions, CodecId, Context, MethodInfo, Peer, Router, RpcClient, RpcError, RpcOptions,
    RpcServer, Status,
};
use reliability::*;

#[global_allocator]
static ALLOC: Counting = Counting;

const SVC: &str = "flow.Echo";

fn raw(name: &str) -> MethodInfo {
    MethodInfo {
        name: name.into(),
        request_type: "bytes".into(),
        reply_type: "bytes".into(),
        one_way: false,
        codecs: vec![CodecId::Protobuf],
        stream: None,
    }
}

/// `Echo` answers its body; `Grow` answers its body and 64 bytes more.
fn echo_router() -> Router {
    let mut r = Router::new();
    r.add_raw(SVC, raw("Echo"), |_ctx: Context, body: Bytes| async move {
        Ok(body)
    });
    r.add_raw(SVC, raw("Grow"), |_ctx: Context, body: Bytes| async move {
        Ok(Bytes::from([&body[..], &[b'!'; 64]].concat()))
    });
    r
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Tls,
    Ws,
}

struct Pair {
    server: RpcServer,
    client: RpcClient,
    /// The server's end of the one connection, to call the client.
    to_client: Peer,
    to_server: Peer,
}

async fn pair(t: Transport, o: RpcOptions) -> Pair {
    let pki = transport_common::pki();
    let server = RpcServer::start(echo_router(), o.clone(), |cb| async {
        let b = ServerBuilder::new("127.0.0.1:0");
        match t {
            Transport::Tcp => b.serve_tcp(cb).await,
            Transport::Tls => b.serve_tls(pki.server(), cb).await,
            Transport::Ws => b.serve_ws("/rpc", cb).await,
        }
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    let client = RpcClient::start(echo_router(), o, |cb| match t {
        Transport::Tcp => ClientBuilder::new(addr.to_string()).connect_tcp(cb),
        Transport::Tls => ClientBuilder::new(addr.to_string()).connect_tls(pki.client(), cb),
        Transport::Ws => ClientBuilder::new(format!("ws://{addr}/rpc")).connect_ws(cb),
    })
    .unwrap();
    client.ready().await.unwrap();
    let to_server = client.peer().unwrap();
    let mut to_client = None;
    eventually(Duration::from_secs(5), "the server's peer", || {
        to_client = server.peers().into_iter().next();
        to_client.is_some()
    })
    .await;
    Pair {
        server,
        client,
        to_client: to_client.unwrap(),
        to_server,
    }
}

/// What one load run saw.
#[derive(Debug, Default)]
struct Report {
    ok: u64,
    overloaded: u64,
    other: Vec<String>,
    took: Duration,
    /// The longest time in which no call completed.
    longest_stall: Duration,
    peak_heap: usize,
    rss_before: usize,
    rss_peak: usize,
}

/// `n` concurrent Echo calls of `size` bytes from the client to the server and, if `both`,
/// `n` more from the server to the client at the same time.
async fn load(p: &Pair, n: usize, size: usize, both: bool) -> Report {
    let body = Bytes::from(vec![0xa5u8; size]);
    let done = Arc::new(AtomicU64::new(0));
    let rss_before = rss_bytes();
    let base = reset_peak();
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(2 * n);
    let directions: &[&Peer] = if both {
        &[&p.to_server, &p.to_client]
    } else {
        &[&p.to_server]
    };
    for peer in directions {
        for _ in 0..n {
            let (peer, body, done) = ((*peer).clone(), body.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let r = peer
                    .call_raw(
                        SVC,
                        "Echo",
                        CodecId::Protobuf,
                        body.clone(),
                        CallOptions::new().timeout(Duration::from_secs(120)),
                    )
                    .await;
                done.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(b) if b == body => Ok(()),
                    Ok(b) => Err(format!("wrong echo of {} bytes", b.len())),
                    Err(e) => Err(format!("{:?}: {}", e.status, e.message)),
                }
            }));
        }
    }
    let total = tasks.len() as u64;
    // Watch progress and memory while the calls run.
    let watch = {
        let done = done.clone();
        tokio::spawn(async move {
            let (mut last, mut last_at, mut stall, mut rss) =
                (0, Instant::now(), Duration::ZERO, 0);
            while last < total {
                tokio::time::sleep(Duration::from_millis(20)).await;
                rss = rss.max(rss_bytes());
                let now = done.load(Ordering::Relaxed);
                if now != last {
                    (last, last_at) = (now, Instant::now());
                }
                stall = stall.max(last_at.elapsed());
            }
            (stall, rss)
        })
    };
    let mut r = Report {
        rss_before,
        ..Report::default()
    };
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => r.ok += 1,
            Err(e) if e.starts_with("Overloaded") => r.overloaded += 1,
            Err(e) => r.other.push(e),
        }
    }
    r.took = t.elapsed();
    r.peak_heap = peak_bytes().saturating_sub(base);
    (r.longest_stall, r.rss_peak) = watch.await.unwrap();
    r
}

/// Runs each (calls, size) of `cases` and checks the promises: every call completes (or is
/// refused `OVERLOADED`, never timed out, never a closed connection), no stall over 1 s, the
/// connection is the same one throughout, and the heap stays within `heap_bound`.
async fn check_cases(
    t: Transport,
    o: RpcOptions,
    both: bool,
    cases: &[(usize, usize)],
    heap_bound: usize,
) {
    let _serial = SERIAL.lock().await;
    let p = pair(t, o).await;
    let (sid, cid) = (p.to_client.id(), p.to_server.id());
    for &(n, size) in cases {
        let r = load(&p, n, size, both).await;
        eprintln!(
            "{t:?} {} x {n} of {size} B: {} ok, {} overloaded in {:?}; longest stall {:?}; \
             peak extra heap {}; RSS {} -> peak {}",
            if both { "both ways" } else { "one way" },
            r.ok,
            r.overloaded,
            r.took,
            r.longest_stall,
            mb(r.peak_heap),
            mb(r.rss_before),
            mb(r.rss_peak),
        );
        let want = if both { 2 * n } else { n } as u64;
        assert!(
            r.other.is_empty(),
            "{t:?} {n} x {size}: {:?}",
            &r.other[..r.other.len().min(5)]
        );
        assert_eq!(r.ok + r.overloaded, want);
        assert_eq!(
            r.overloaded, 0,
            "getty peers keep within each other's window"
        );
        assert!(
            r.longest_stall < Duration::from_secs(1),
            "stalled for {:?}",
            r.longest_stall
        );
        assert!(
            r.peak_heap < heap_bound,
            "peak extra heap {}",
            mb(r.peak_heap)
        );
        assert!(!p.to_server.is_closed() && !p.to_client.is_closed());
    }
    assert_eq!(
        (p.to_client.id(), p.to_server.id()),
        (sid, cid),
        "one connection throughout"
    );
    assert_eq!(p.server.peers().len(), 1);
    p.client.close().await;
    p.server.close().await;
}

fn defaults() -> RpcOptions {
    RpcOptions::default()
}

/// Small queues and windows: far below the number of calls.
fn small() -> RpcOptions {
    RpcOptions::default()
        .max_inflight(16)
        .max_inflight_bytes(1 << 20)
        .session(SessionOptions::default().write_queue_len(4))
}

const KB: usize = 1 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_at_once_complete_with_the_default_options() {
    check_cases(
        Transport::Tcp,
        defaults(),
        true,
        &[
            (1, 64),
            (1_000, 64),
            (10_000, 64),
            (1, 64 * KB),
            (1_300, 64 * KB),
            (10_000, 64 * KB),
            (1, MB),
            (100, MB),
            (1_000, MB),
            (10_000, MB),
        ],
        512 * MB,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_at_once_complete_with_small_queues() {
    check_cases(
        Transport::Tcp,
        small(),
        true,
        &[(10_000, 64), (10_000, 64 * KB), (200, MB)],
        64 * MB,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_direction_completes_with_the_default_options_and_small_queues() {
    let cases = [(10_000, 64), (10_000, 64 * KB), (300, MB)];
    check_cases(
        Transport::Tcp,
        defaults(),
        false,
        &[(10_000, 64), (10_000, 64 * KB), (10_000, MB)],
        512 * MB,
    )
    .await;
    check_cases(Transport::Tcp, small(), false, &cases, 64 * MB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_at_once_complete_over_tls_and_websocket() {
    let cases = [(10_000, 64), (1_300, 64 * KB), (20, MB)];
    check_cases(
        Transport::Tls,
        defaults(),
        true,
        &[(10_000, 64), (10_000, 64 * KB), (1_000, MB)],
        512 * MB,
    )
    .await;
    check_cases(Transport::Ws, defaults(), true, &cases, 512 * MB).await;
    check_cases(Transport::Tls, small(), true, &cases, 64 * MB).await;
}

// ---------------------------------------------------------------------------------------------
// Deadlines, limits and handlers
// ---------------------------------------------------------------------------------------------

/// A client connected to a peer that accepts, says nothing and never reads (for 30 s), and the
/// task that holds that peer's socket.
async fn client_of_a_silent_peer(o: RpcOptions) -> (RpcClient, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let c = RpcClient::start(Router::new(), o, |cb| {
        ClientBuilder::new(addr.to_string()).connect_tcp(cb)
    })
    .unwrap();
    c.ready().await.unwrap();
    (c, hold)
}

/// A peer that accepts and then never reads: calls with a 100 ms deadline fail with `TIMEOUT`
/// after about 100 ms, whether they wait for the peer's window or for room in the write queue
/// (before, a call waited for the queue up to the 10 s write timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_covers_waiting_for_window_and_for_the_write_queue() {
    let _serial = SERIAL.lock().await;
    let o = RpcOptions::default().session(SessionOptions::default().write_queue_len(2));
    let (c, hold) = client_of_a_silent_peer(o).await;
    let peer = c.peer().unwrap();
    let body = Bytes::from(vec![0u8; 256 * KB]);
    let mut calls = Vec::new();
    for _ in 0..40 {
        let (peer, body) = (peer.clone(), body.clone());
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = peer
                .call_raw(
                    SVC,
                    "Echo",
                    CodecId::Protobuf,
                    body,
                    CallOptions::new().timeout(Duration::from_millis(100)),
                )
                .await;
            (r, t.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (r, took) = call.await.unwrap();
        assert_eq!(r.unwrap_err().status, Status::Timeout);
        slowest = slowest.max(took);
    }
    eprintln!("40 calls of 256 KiB to a peer that never reads: slowest TIMEOUT after {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "a 100 ms call took {slowest:?}"
    );
    assert_eq!(peer.stats().pending, 0);
    assert_eq!(peer.stats().waiting, 0);
    c.close().await;
    hold.abort();
}

/// A request of exactly the frame limit whose answer is longer: the caller gets
/// `INTERNAL` (PROTOCOL.md section 8), even with no deadline of its own that would end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_the_frame_limit_is_answered_internal() {
    let _serial = SERIAL.lock().await;
    let o = RpcOptions::default().max_frame(64 * KB);
    let p = pair(Transport::Tcp, o).await;
    let empty = getty::rpc::frame::encoded_len(&getty::rpc::Frame::request(
        1,
        CodecId::Protobuf,
        SVC,
        "Grow",
        Bytes::new(),
    ));
    let body = Bytes::from(vec![1u8; 64 * KB - empty]);
    {
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            p.to_server.call_raw(
                SVC,
                "Grow",
                CodecId::Protobuf,
                body.clone(),
                CallOptions::new().timeout(Duration::from_secs(3600)),
            ),
        )
        .await
        .expect("the caller must be told, not left waiting");
        let e = r.map(|b| b.len()).unwrap_err();
        assert_eq!(e.status, Status::Internal, "{e}");
        assert!(e.message.contains("exceeds the limit"), "{e}");
    }
    // The connection is fine afterwards.
    let r = p
        .to_server
        .call_raw(
            SVC,
            "Echo",
            CodecId::Protobuf,
            Bytes::from_static(b"ok"),
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(&r[..], b"ok");
    p.client.close().await;
    p.server.close().await;
}

/// A handler's calls through `ctx.peer()` inherit what is left of the deadline of the call it
/// serves (PROTOCOL.md section 9), even when they ask for a longer timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_calls_inherit_the_remaining_deadline() {
    let _serial = SERIAL.lock().await;
    let seen = Arc::new(AtomicU64::new(u64::MAX));
    let mut client_router = Router::new();
    {
        let seen = seen.clone();
        client_router.add_json("cli.Svc", "Budget", move |ctx: Context, _: ()| {
            let seen = seen.clone();
            async move {
                let left = ctx.deadline().map_or(u64::MAX, |d| {
                    d.saturating_duration_since(Instant::now()).as_millis() as u64
                });
                seen.store(left, Ordering::SeqCst);
                Ok(left)
            }
        });
    }
    let mut server_router = Router::new();
    server_router.add_json("srv.Svc", "Nest", |ctx: Context, _: ()| async move {
        let inner: u64 = ctx
            .peer()
            .call::<getty::rpc::Json, _, _>(
                "cli.Svc",
                "Budget",
                &(),
                CallOptions::new().timeout(Duration::from_secs(60)),
            )
            .await?;
        Ok::<u64, RpcError>(inner)
    });
    let server = RpcServer::start(server_router, RpcOptions::default(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(client_router, RpcOptions::default(), |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    let inner: u64 = client
        .peer()
        .unwrap()
        .call::<getty::rpc::Json, _, _>(
            "srv.Svc",
            "Nest",
            &(),
            CallOptions::new().timeout(Duration::from_millis(800)),
        )
        .await
        .unwrap();
    assert!(
        inner <= 800,
        "the nested call had {inner} ms, the outer call only 800"
    );
    assert!(inner > 0);
    client.close().await;
    server.close().await;
}

/// One-way and two-way handlers are tracked: a Cancel stops a two-way one, and the server's
/// `close().await` returns only once every handler (one-way too) has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_stop_on_cancel_and_close_returns_after_they_stopped() {
    let _serial = SERIAL.lock().await;
    let started = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    struct Stop(Arc<AtomicUsize>);
    impl Drop for Stop {
        fn drop(&mut self) {
            // Slow enough that a close that does not wait for it returns first.
            std::thread::sleep(Duration::from_millis(50));
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let forever = {
        let (started, stopped) = (started.clone(), stopped.clone());
        move || {
            let (started, stopped) = (started.clone(), stopped.clone());
            async move {
                let _stop = Stop(stopped);
                started.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
        }
    };
    let mut r = Router::new();
    {
        let forever = forever.clone();
        r.add_json("h.Svc", "Forever", move |_ctx: Context, _: ()| {
            let f = forever();
            async move {
                f.await;
                Ok::<(), RpcError>(())
            }
        });
    }
    r.add_one_way::<getty::rpc::Json, (), _, _>("h.Svc", "ForeverOneWay", move |_ctx, _: ()| {
        forever()
    });
    let server = RpcServer::start(r, RpcOptions::default(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(Router::new(), RpcOptions::default(), |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    let peer = client.peer().unwrap();
    // A Cancel (the caller's timeout) stops a two-way handler.
    let e = peer
        .call::<getty::rpc::Json, _, ()>(
            "h.Svc",
            "Forever",
            &(),
            CallOptions::new().timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::Timeout);
    eventually(
        Duration::from_secs(5),
        "the cancelled handler stops",
        || stopped.load(Ordering::SeqCst) == 1,
    )
    .await;
    // Two more two-way calls and three one-way calls that never finish.
    let pending: Vec<_> = (0..2)
        .map(|_| {
            let peer = peer.clone();
            tokio::spawn(async move {
                peer.call::<getty::rpc::Json, _, ()>("h.Svc", "Forever", &(), CallOptions::new())
                    .await
            })
        })
        .collect();
    for _ in 0..3 {
        peer.notify::<getty::rpc::Json, _>("h.Svc", "ForeverOneWay", &(), CallOptions::new())
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(5), "all handlers run", || {
        started.load(Ordering::SeqCst) == 6
    })
    .await;
    server.close().await;
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        6,
        "close().await returned while handlers still ran"
    );
    for p in pending {
        assert_eq!(
            p.await.unwrap().unwrap_err().status,
            Status::ConnectionClosed
        );
    }
    client.close().await;
}

/// Pending calls fail as soon as the connection starts closing, not once the writer has spent
/// its wait time flushing to a peer that does not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_calls_fail_when_the_close_starts_not_after_the_flush() {
    let _serial = SERIAL.lock().await;
    let o =
        RpcOptions::default().session(SessionOptions::default().wait_time(Duration::from_secs(5)));
    let (c, hold) = client_of_a_silent_peer(o).await;
    let peer = c.peer().unwrap();
    let body = Bytes::from(vec![0u8; 512 * KB]);
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (peer, body) = (peer.clone(), body.clone());
            tokio::spawn(async move {
                peer.call_raw(
                    SVC,
                    "Echo",
                    CodecId::Protobuf,
                    body,
                    CallOptions::new().timeout(Duration::from_secs(60)),
                )
                .await
            })
        })
        .collect();
    // The socket's buffers fill; the writer is stuck in a write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(peer.stats().pending > 0);
    let t = Instant::now();
    peer.close();
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap_err().status,
            Status::ConnectionClosed
        );
    }
    let took = t.elapsed();
    eprintln!("pending calls failed {took:?} after the close started");
    assert!(
        took < Duration::from_secs(2),
        "pending calls waited {took:?} for the flush"
    );
    c.close().await;
    hold.abort();
}
