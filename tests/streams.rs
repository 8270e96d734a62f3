//! Streaming calls over real loopback sockets: server, client and bidirectional streams, opened
//! by the client and (on the same connection) by the server, in JSON and Protobuf; credit that
//! holds a fast producer to a slow consumer while other calls go on; cancel from either end,
//! errors mid-stream, the deadline, the connection closing under open streams; and 1,000
//! streams at once on one connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{
    CallOptions, Context, Json, Peer, Prost, Receiver, Router, RpcClient, RpcError, RpcOptions,
    RpcServer, Sender, Status,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
struct Tick {
    #[prost(uint64, tag = "1")]
    n: u64,
    #[prost(string, tag = "2")]
    text: String,
}

fn tick(n: u64) -> Tick {
    Tick {
        n,
        text: format!("tick {n}"),
    }
}

const SVC: &str = "feed.Ticks";

/// What the handlers of one side saw.
#[derive(Default)]
struct Seen {
    /// Items the `Forever` producer got out.
    produced: AtomicU64,
    /// `Forever` handlers that stopped (cancelled, aborted or failed to send).
    stopped: AtomicU64,
}

struct OnDrop(Arc<Seen>);
impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

/// The same streaming service on both ends, registered for body strategy `B`.
fn router(seen: Arc<Seen>) -> Router {
    let mut r = Router::new();
    add::<Prost>(&mut r, "", seen.clone());
    add::<Json>(&mut r, "Json", seen);
    r
}

fn add<B>(r: &mut Router, suffix: &str, seen: Arc<Seen>)
where
    B: getty::rpc::BodyCodec<Tick> + Send + Sync + 'static,
{
    r.add_server_stream::<B, Tick, Tick, _, _>(
        SVC,
        &format!("Count{suffix}"),
        |_ctx: Context, req: Tick, mut out: Sender<B, Tick>| async move {
            for i in 0..req.n {
                out.send(&tick(i)).await?;
            }
            Ok(())
        },
    );
    r.add_client_stream::<B, Tick, Tick, _, _>(
        SVC,
        &format!("Sum{suffix}"),
        |_ctx: Context, mut items: Receiver<B, Tick>| async move {
            let (mut sum, mut count) = (0, 0);
            while let Some(t) = items.next().await {
                let t = t?;
                if t.text != format!("tick {}", t.n) {
                    return Err(RpcError::bad_request("a damaged item"));
                }
                sum += t.n;
                count += 1;
            }
            Ok(Tick {
                n: sum,
                text: format!("{count} items"),
            })
        },
    );
    r.add_bidi::<B, Tick, Tick, _, _>(
        SVC,
        &format!("Echo{suffix}"),
        |_ctx: Context, mut items: Receiver<B, Tick>, mut out: Sender<B, Tick>| async move {
            while let Some(t) = items.next().await {
                out.send(&t?).await?;
            }
            Ok(())
        },
    );
    r.add_server_stream::<B, Tick, Tick, _, _>(
        SVC,
        &format!("Fail{suffix}"),
        |_ctx: Context, _req: Tick, mut out: Sender<B, Tick>| async move {
            for i in 0..3 {
                out.send(&tick(i)).await?;
            }
            Err(RpcError::handler("boom after 3"))
        },
    );
    let seen2 = seen.clone();
    r.add_server_stream::<B, Tick, Tick, _, _>(
        SVC,
        &format!("Forever{suffix}"),
        move |_ctx: Context, _req: Tick, mut out: Sender<B, Tick>| {
            let seen = seen2.clone();
            async move {
                let _stop = OnDrop(seen.clone());
                let mut i = 0;
                loop {
                    out.send(&tick(i)).await?;
                    seen.produced.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            }
        },
    );
    r.add_json("feed.Unary", "Ping", |_ctx: Context, n: u64| async move {
        Ok::<u64, RpcError>(n + 1)
    });
}

struct Pair {
    server: RpcServer,
    client: RpcClient,
    server_seen: Arc<Seen>,
    client_seen: Arc<Seen>,
}

fn opts() -> RpcOptions {
    RpcOptions::default().default_timeout(Duration::from_secs(20))
}

async fn pair_with(o: RpcOptions) -> Pair {
    let (server_seen, client_seen) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let server = RpcServer::start(router(server_seen.clone()), o.clone(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(router(client_seen.clone()), o, |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    Pair {
        server,
        client,
        server_seen,
        client_seen,
    }
}

impl Pair {
    fn to_server(&self) -> Peer {
        self.client.peer().unwrap()
    }
    async fn to_client(&self) -> Peer {
        for _ in 0..500 {
            if let Some(p) = self.server.peers().into_iter().next() {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no server-side peer");
    }
    async fn close(self) {
        self.client.close().await;
        self.server.close().await;
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Every kind, in both codecs, from `peer` (either end).
async fn every_kind<B>(peer: &Peer, suffix: &str)
where
    B: getty::rpc::BodyCodec<Tick>,
{
    // Server stream: 500 items in order, then the end.
    let mut rx = peer
        .server_stream::<B, Tick, Tick>(
            SVC,
            &format!("Count{suffix}"),
            &tick(500),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let mut want = 0;
    while let Some(t) = rx.next().await {
        assert_eq!(t.unwrap(), tick(want), "in order, none lost or repeated");
        want += 1;
    }
    assert_eq!(want, 500);
    // Client stream: 1,000 items, one reply.
    let (mut tx, rx) = peer
        .client_stream::<B, Tick, Tick>(SVC, &format!("Sum{suffix}"), CallOptions::new())
        .await
        .unwrap();
    for i in 0..1000 {
        tx.send(&tick(i)).await.unwrap();
    }
    tx.finish();
    let r = rx.reply().await.unwrap();
    assert_eq!((r.n, r.text.as_str()), ((0..1000).sum(), "1000 items"));
    // Bidirectional: each item echoed in order, with the sender half-closing at the end.
    let (mut tx, mut rx) = peer
        .open_stream::<B, Tick, Tick>(SVC, &format!("Echo{suffix}"), CallOptions::new())
        .await
        .unwrap();
    for i in 0..300 {
        tx.send(&tick(i)).await.unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap(), tick(i));
    }
    drop(tx);
    assert!(rx.next().await.is_none(), "ends after the half-close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_both_directions_json_and_protobuf() {
    let p = pair_with(opts()).await;
    let (to_server, to_client) = (p.to_server(), p.to_client().await);
    every_kind::<Prost>(&to_server, "").await;
    every_kind::<Json>(&to_server, "Json").await;
    // The server opens streams to the client it is connected to, on the same connection.
    every_kind::<Prost>(&to_client, "").await;
    every_kind::<Json>(&to_client, "Json").await;
    // Both directions at once.
    tokio::join!(
        every_kind::<Prost>(&to_server, ""),
        every_kind::<Prost>(&to_client, "")
    );
    assert_eq!(p.server.peers().len(), 1, "all on one connection");
    eventually("streams to finish", || {
        to_server.stats().streams == 0 && to_client.stats().streams == 0
    })
    .await;
    p.close().await;
}

/// A consumer that takes one item at a time from an endless producer: the producer stays
/// within the consumer's credit (so its memory is bounded by it), and unary calls on the same
/// connection are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_the_producer_to_its_credit() {
    let credit = 16;
    let p = pair_with(opts().stream_window_items(credit)).await;
    let peer = p.to_server();
    let mut rx = peer
        .server_stream::<Prost, Tick, Tick>(SVC, "Forever", &tick(0), CallOptions::new())
        .await
        .unwrap();
    for consumed in 1..=40u64 {
        let t = rx.next().await.unwrap().unwrap();
        assert_eq!(t.n, consumed - 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let produced = p.server_seen.produced.load(Ordering::SeqCst);
        assert!(
            produced <= consumed + credit as u64,
            "produced {produced} with {consumed} consumed and a credit of {credit}"
        );
        // Other calls on the connection go on meanwhile.
        let n: u64 = tokio::time::timeout(
            Duration::from_secs(2),
            peer.call_json("feed.Unary", "Ping", &consumed),
        )
        .await
        .expect("a unary call stalled behind a slow stream")
        .unwrap();
        assert_eq!(n, consumed + 1);
    }
    let produced = p.server_seen.produced.load(Ordering::SeqCst);
    eprintln!("consumed 40 items; the producer got {produced} out (credit {credit})");
    assert!(produced >= 40);
    // Dropping the receiver cancels the stream: the producer stops.
    drop(rx);
    eventually("the producer to stop", || {
        p.server_seen.stopped.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the stream to close", || peer.stats().streams == 0).await;
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_either_end_errors_mid_stream_and_the_deadline() {
    let p = pair_with(opts()).await;
    let (to_server, to_client) = (p.to_server(), p.to_client().await);
    // An error mid-stream: the items before it, then the handler's status.
    for peer in [&to_server, &to_client] {
        let mut rx = peer
            .server_stream::<Prost, Tick, Tick>(SVC, "Fail", &tick(0), CallOptions::new())
            .await
            .unwrap();
        for i in 0..3 {
            assert_eq!(rx.next().await.unwrap().unwrap(), tick(i));
        }
        let e = rx.next().await.unwrap().unwrap_err();
        assert_eq!(e.status, Status::HandlerError, "{e}");
        assert!(e.message.contains("boom after 3"), "{e}");
        assert!(rx.next().await.is_none());
    }
    // Cancel from the opener's side: dropping its receiver stops the acceptor's handler (on
    // the server, then on the client).
    for (peer, seen) in [(&to_server, &p.server_seen), (&to_client, &p.client_seen)] {
        let before = seen.stopped.load(Ordering::SeqCst);
        let mut rx = peer
            .server_stream::<Prost, Tick, Tick>(SVC, "Forever", &tick(0), CallOptions::new())
            .await
            .unwrap();
        rx.next().await.unwrap().unwrap();
        drop(rx);
        eventually("the acceptor's handler to stop", || {
            seen.stopped.load(Ordering::SeqCst) == before + 1
        })
        .await;
    }
    // Cancel from the acceptor's side: a bidirectional handler that ends while the opener is
    // still sending; the opener's sends then fail, its receiver sees the end.
    let (mut tx, mut rx) = to_server
        .open_stream::<Prost, Tick, Tick>(SVC, "Count", CallOptions::new())
        .await
        .unwrap();
    tx.send(&tick(2)).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), tick(0));
    assert_eq!(rx.next().await.unwrap().unwrap(), tick(1));
    assert!(rx.next().await.is_none(), "the acceptor ended the stream");
    let e = tx.send(&tick(9)).await.unwrap_err();
    assert_ne!(e.status, Status::Ok);
    // The deadline covers the whole stream: an endless one fails with TIMEOUT at the opener
    // and its handler is stopped at the acceptor.
    let before = p.server_seen.stopped.load(Ordering::SeqCst);
    let mut rx = to_server
        .server_stream::<Prost, Tick, Tick>(
            SVC,
            "Forever",
            &tick(0),
            CallOptions::new().timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let mut got = 0;
    let e = loop {
        match rx.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => break e,
            None => panic!("an endless stream ended"),
        }
    };
    assert!(
        matches!(e.status, Status::Timeout | Status::DeadlineExceeded),
        "{e}"
    );
    assert!(got > 0);
    eventually("the timed-out handler to stop", || {
        p.server_seen.stopped.load(Ordering::SeqCst) == before + 1
    })
    .await;
    // A stream method called as a unary method, and a unary method opened as a stream.
    let e = to_server
        .call_json::<_, u64>(SVC, "Count", &1u64)
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::UnknownMethod);
    let (_tx, mut rx) = to_server
        .open_stream::<Json, u64, u64>("feed.Unary", "Ping", CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        rx.next().await.unwrap().unwrap_err().status,
        Status::UnknownMethod
    );
    let n: u64 = to_server
        .call_json("feed.Unary", "Ping", &1u64)
        .await
        .unwrap();
    assert_eq!(n, 2, "the connection is fine");
    p.close().await;
}

/// The connection closing under open streams fails every one of them at once on the opener;
/// the client reconnects and opens new streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_going_away_fails_every_open_stream_and_the_client_reconnects() {
    let seen = Arc::new(Seen::default());
    let server = RpcServer::start(router(seen.clone()), opts(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    let client = RpcClient::start(router(Arc::new(Seen::default())), opts(), |cb| {
        ClientBuilder::new(addr.to_string())
            .reconnect_interval(Duration::from_millis(50))
            .connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    let peer = client.peer().unwrap();
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut rx = peer
            .server_stream::<Prost, Tick, Tick>(SVC, "Forever", &tick(0), CallOptions::new())
            .await
            .unwrap();
        rx.next().await.unwrap().unwrap();
        streams.push(rx);
    }
    server.close().await;
    for mut rx in streams {
        let e = loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.next())
                .await
                .expect("an open stream hung after the server went away")
            {
                Some(Ok(_)) => continue, // items already on the way
                Some(Err(e)) => break e,
                None => panic!("ended normally"),
            }
        };
        assert_eq!(e.status, Status::ConnectionClosed, "{e}");
    }
    assert_eq!(
        seen.stopped.load(Ordering::SeqCst),
        10,
        "every handler stopped"
    );
    // A new server on the same port; the client reconnects and streams again.
    let server = RpcServer::start(router(seen.clone()), opts(), |cb| {
        ServerBuilder::new(addr.to_string()).serve_tcp(cb)
    })
    .await
    .unwrap();
    let mut peer = None;
    for _ in 0..500 {
        if let Ok(p) = client.peer()
            && !p.is_closed()
        {
            peer = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peer = peer.expect("the client reconnected");
    let mut rx = peer
        .server_stream::<Prost, Tick, Tick>(SVC, "Count", &tick(5), CallOptions::new())
        .await
        .unwrap();
    let mut n = 0;
    while let Some(t) = rx.next().await {
        t.unwrap();
        n += 1;
    }
    assert_eq!(n, 5);
    client.close().await;
    server.close().await;
}

/// 1,000 streams at once on one connection, each of 100 items: every item of every stream
/// arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_on_one_connection() {
    let p = pair_with(opts()).await;
    let peer = p.to_server();
    let total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (peer, total) = (peer.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let mut rx = peer
                .server_stream::<Prost, Tick, Tick>(SVC, "Count", &tick(100), CallOptions::new())
                .await?;
            let mut want = 0;
            while let Some(t) = rx.next().await {
                let t = t?;
                assert_eq!(t.n, want);
                want += 1;
                total.fetch_add(1, Ordering::Relaxed);
            }
            assert_eq!(want, 100);
            Ok::<(), RpcError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(total.load(Ordering::Relaxed), 100_000);
    assert_eq!(p.server.peers().len(), 1);
    eventually("all streams closed", || peer.stats().streams == 0).await;
    p.close().await;
}
