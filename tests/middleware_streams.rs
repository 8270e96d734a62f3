//! Streams through the middleware over real loopback TCP: a layer on each of the four paths
//! (inbound and outbound, on the accepting and on the connecting peer) sees every stream's open
//! and can change or refuse it and sees its end; bearer auth refuses a stream without the token
//! and the connection goes on; the ready limits count a stream as a call; one trace id across a
//! stream, its nested stream back and the items; exact stream metrics of a known workload.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::middleware::{BearerAuth, MethodConcurrencyLimit, PeerRateLimit};
use getty::rpc::{
    Call, CallOptions, CodecId, Context, Json, Next, Receiver, Router, RpcClient, RpcError,
    RpcOptions, RpcServer, Sender, Status,
};

type Log = Arc<Mutex<Vec<String>>>;
type Fut = futures_util::future::BoxFuture<'static, Result<Bytes, RpcError>>;

/// A layer that logs what it sees of a stream (name, direction, kind, method, whether it has a
/// deadline, its end and its item counts) and adds `name=1` to the open's metadata.
fn tagger(name: &'static str, log: Log) -> impl Fn(Call, Next) -> Fut + Send + Sync {
    move |mut call: Call, next: Next| {
        let log = log.clone();
        Box::pin(async move {
            let what = format!(
                "{name} {:?} {:?} {}.{} deadline={}",
                call.direction,
                call.kind,
                call.service,
                call.method,
                call.deadline.is_some()
            );
            let items = call.stream_items().cloned();
            call.set_meta(name, "1");
            let res = next.run(call).await;
            let status = res.as_ref().err().map_or(Status::Ok, |e| e.status);
            let n = items.map_or("-".into(), |i| format!("{}/{}", i.received(), i.sent()));
            log.lock()
                .unwrap()
                .push(format!("{what} -> {} items {n}", status.name()));
            res
        })
    }
}

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

/// Waits until `n` lines are logged (an opener's layers see the end on a task of their own,
/// just after the opener read it), then takes them, sorted.
async fn taken(log: &Log, n: usize) -> Vec<String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        while log.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} lines: {:?}", log.lock().unwrap()));
    let mut v = std::mem::take(&mut *log.lock().unwrap());
    v.sort();
    v
}

/// The metadata keys of a handler's context, sorted.
fn keys(ctx: &Context) -> Vec<String> {
    let mut k: Vec<String> = ctx.metadata().iter().map(|(k, _)| k.clone()).collect();
    k.sort();
    k
}

async fn all<T>(mut rx: Receiver<Json, T>) -> Result<Vec<T>, RpcError>
where
    Json: getty::rpc::BodyCodec<T>,
{
    let mut v = Vec::new();
    while let Some(x) = rx.next().await {
        v.push(x?);
    }
    Ok(v)
}

/// A server stream's items, whether its open or its end said it failed.
async fn ended<T>(r: Result<Receiver<Json, T>, RpcError>) -> Result<Vec<T>, RpcError>
where
    Json: getty::rpc::BodyCodec<T>,
{
    all(r?).await
}

async fn start(r: Router, opts: RpcOptions) -> RpcServer {
    RpcServer::start(r, opts, |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap()
}

async fn connect(server: &RpcServer, r: Router, opts: RpcOptions) -> RpcClient {
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(r, opts, |cb| ClientBuilder::new(addr).connect_tcp(cb)).unwrap();
    client.ready().await.unwrap();
    client
}

#[tokio::test]
async fn a_layer_on_each_of_the_four_paths_sees_and_changes_every_streams_open() {
    let log = log();
    let forbidden_runs = Arc::new(AtomicUsize::new(0));

    // The accepting side: `t.S/Keys` streams the keys it saw, then those the client's
    // `t.C/Keys` saw of a nested stream back over the same connection.
    let mut sr = Router::new();
    sr.add_server_stream::<Json, (), String, _, _>(
        "t.S",
        "Keys",
        |ctx: Context, _: (), mut out: Sender<Json, String>| async move {
            for k in keys(&ctx) {
                out.send(&k).await?;
            }
            let back = ctx
                .peer()
                .server_stream::<Json, (), String>("t.C", "Keys", &(), CallOptions::new())
                .await?;
            for k in all(back).await? {
                out.send(&format!("back:{k}")).await?;
            }
            Ok(())
        },
    );
    let runs = forbidden_runs.clone();
    sr.add_server_stream::<Json, (), String, _, _>(
        "t.S",
        "Forbidden",
        move |_: Context, _: (), _: Sender<Json, String>| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
    );
    sr.add_client_stream::<Json, u64, u64, _, _>(
        "t.S",
        "Sum",
        |_: Context, items: Receiver<Json, u64>| async move {
            Ok(all(items).await?.into_iter().sum())
        },
    );
    sr.add_json("t.S", "Ping", |_: Context, _: ()| async {
        Ok::<_, RpcError>("pong".to_string())
    });
    // A layer on the server's inbound path refuses `Forbidden` before its handler.
    let refuse = |call: Call, next: Next| -> Fut {
        Box::pin(async move {
            if call.method == "Forbidden" {
                return Err(RpcError::new(Status::HandlerError, "refused by a layer"));
            }
            next.run(call).await
        })
    };
    let sopts = RpcOptions::default()
        .inbound_layer(tagger("s-in", log.clone()))
        .inbound_layer(refuse)
        .outbound_layer(tagger("s-out", log.clone()));
    let server = start(sr, sopts).await;

    // The connecting side serves `t.C/Keys`; its outbound path refuses `t.Local` itself.
    let mut cr = Router::new();
    cr.add_server_stream::<Json, (), String, _, _>(
        "t.C",
        "Keys",
        |ctx: Context, _: (), mut out: Sender<Json, String>| async move {
            for k in keys(&ctx) {
                out.send(&k).await?;
            }
            Ok(())
        },
    );
    let local = |call: Call, next: Next| -> Fut {
        Box::pin(async move {
            if call.service == "t.Local" {
                return Err(RpcError::new(Status::Unauthenticated, "not from here"));
            }
            next.run(call).await
        })
    };
    let copts = RpcOptions::default()
        .outbound_layer(tagger("c-out", log.clone()))
        .outbound_layer(local)
        .inbound_layer(tagger("c-in", log.clone()));
    let client = connect(&server, cr, copts).await;
    let peer = client.peer().unwrap();

    // Client → server, with a nested stream server → client inside it: each handler sees the
    // metadata the layers of both ends added; each layer sees the open and its end.
    let opts = CallOptions::new().timeout(Duration::from_secs(10));
    let rx = peer
        .server_stream::<Json, (), String>("t.S", "Keys", &(), opts)
        .await
        .unwrap();
    assert_eq!(
        all(rx).await.unwrap(),
        ["c-out", "s-in", "back:c-in", "back:s-out"]
    );
    assert_eq!(
        taken(&log, 4).await,
        [
            "c-in Inbound Stream(Server) t.C.Keys deadline=true -> OK items 1/2",
            "c-out Outbound Stream(Server) t.S.Keys deadline=true -> OK items 4/1",
            "s-in Inbound Stream(Server) t.S.Keys deadline=true -> OK items 1/4",
            "s-out Outbound Stream(Server) t.C.Keys deadline=true -> OK items 2/1",
        ]
    );

    // An inbound layer refuses a stream: its handler never runs, the opener's stream fails
    // with the layer's status, both ends' layers see it, and the connection goes on.
    let (tx, mut rx) = peer
        .open_stream_raw("t.S", "Forbidden", CodecId::Json, CallOptions::new())
        .await
        .unwrap();
    let e = rx.next().await.unwrap().unwrap_err();
    assert_eq!(e.status, Status::HandlerError);
    assert!(rx.next().await.is_none());
    drop((tx, rx));
    assert_eq!(forbidden_runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        taken(&log, 2).await,
        [
            "c-out Outbound Stream(Bidi) t.S.Forbidden deadline=false -> HANDLER_ERROR items 0/0",
            "s-in Inbound Stream(Server) t.S.Forbidden deadline=false -> HANDLER_ERROR items 0/0",
        ]
    );
    let pong: String = peer.call_json("t.S", "Ping", &()).await.unwrap();
    assert_eq!(pong, "pong");

    // An outbound layer refuses a stream: the open fails with its status, nothing is sent.
    let e = peer
        .server_stream::<Json, (), String>("t.Local", "Keys", &(), CallOptions::new())
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, Status::Unauthenticated);
    // A client stream after it: the server saw only this one (and the unary call before).
    let (mut tx, rx) = peer
        .client_stream::<Json, u64, u64>("t.S", "Sum", CallOptions::new())
        .await
        .unwrap();
    for i in 1..=3 {
        tx.send(&i).await.unwrap();
    }
    tx.finish();
    assert_eq!(rx.reply().await.unwrap(), 6);
    assert_eq!(
        taken(&log, 5).await,
        [
            "c-out Outbound Stream(Client) t.S.Sum deadline=false -> OK items 1/3",
            "c-out Outbound Stream(Server) t.Local.Keys deadline=false -> UNAUTHENTICATED items 0/0",
            "c-out Outbound Unary t.S.Ping deadline=true -> OK items -",
            "s-in Inbound Stream(Client) t.S.Sum deadline=false -> OK items 3/1",
            "s-in Inbound Unary t.S.Ping deadline=true -> OK items -",
        ]
    );

    // The server opens a stream to the client directly: its outbound, the client's inbound.
    let sp = server.peers().pop().unwrap();
    let rx = sp
        .server_stream::<Json, (), String>("t.C", "Keys", &(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(all(rx).await.unwrap(), ["c-in", "s-out"]);
    assert_eq!(
        taken(&log, 2).await,
        [
            "c-in Inbound Stream(Server) t.C.Keys deadline=false -> OK items 1/2",
            "s-out Outbound Stream(Server) t.C.Keys deadline=false -> OK items 2/1",
        ]
    );

    client.close().await;
    server.close().await;
}

/// A server stream of `n` numbers, and a bidi stream that holds until the opener finishes.
fn numbers(r: &mut Router, svc: &str) {
    r.add_server_stream::<Json, u64, u64, _, _>(
        svc,
        "Count",
        |_: Context, n: u64, mut out: Sender<Json, u64>| async move {
            for i in 0..n {
                out.send(&i).await?;
            }
            Ok(())
        },
    );
    r.add_bidi::<Json, u64, u64, _, _>(
        svc,
        "Hold",
        |_: Context, items: Receiver<Json, u64>, _: Sender<Json, u64>| async move {
            all(items).await.map(drop)
        },
    );
    r.add_json(svc, "Ping", |_: Context, _: ()| async {
        Ok::<_, RpcError>("pong".to_string())
    });
}

#[tokio::test]
async fn auth_refuses_a_stream_without_the_token_and_the_connection_goes_on() {
    let mut sr = Router::new();
    numbers(&mut sr, "a.S");
    let server = start(sr, RpcOptions::default().layer(BearerAuth::new("s3cret"))).await;
    // A client without the layer: the token only when it adds it itself.
    let client = connect(&server, Router::new(), RpcOptions::default()).await;
    let peer = client.peer().unwrap();
    let token = || CallOptions::new().meta("authorization", "Bearer s3cret");

    let r = peer
        .server_stream::<Json, u64, u64>("a.S", "Count", &3, CallOptions::new())
        .await;
    let e = ended(r).await.unwrap_err();
    assert_eq!(e.status, Status::Unauthenticated, "{e}");
    let wrong = CallOptions::new().meta("authorization", "Bearer guess");
    let (_tx, mut rx) = peer
        .open_stream_raw("a.S", "Hold", CodecId::Json, wrong)
        .await
        .unwrap();
    let e = rx.next().await.unwrap().unwrap_err();
    assert_eq!(e.status, Status::Unauthenticated);
    // The same connection: a stream and a call with the token work, one without still fails.
    let rx = peer
        .server_stream::<Json, u64, u64>("a.S", "Count", &3, token())
        .await
        .unwrap();
    assert_eq!(all(rx).await.unwrap(), [0, 1, 2]);
    let pong: String = peer
        .call::<Json, _, _>("a.S", "Ping", &(), token())
        .await
        .unwrap();
    assert_eq!(pong, "pong");
    let e = peer
        .call_json::<(), String>("a.S", "Ping", &())
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::Unauthenticated);
    assert_eq!(server.peers().len(), 1, "one connection all along");

    // A client with the layer: its opens carry the token; the server's opens to it too.
    let mut cr = Router::new();
    numbers(&mut cr, "a.C");
    let authed = connect(
        &server,
        cr,
        RpcOptions::default().layer(BearerAuth::new("s3cret")),
    )
    .await;
    let rx = authed
        .peer()
        .unwrap()
        .server_stream::<Json, u64, u64>("a.S", "Count", &2, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(all(rx).await.unwrap(), [0, 1]);
    let mut opened = 0;
    for p in server.peers() {
        // Only the authed client serves `a.C` (the other answers UNKNOWN_SERVICE); had the
        // server's open lacked the token, it would have refused it (UNAUTHENTICATED).
        let r = p
            .server_stream::<Json, u64, u64>("a.C", "Count", &2, CallOptions::new())
            .await;
        match ended(r).await {
            Ok(v) => {
                assert_eq!(v, [0, 1]);
                opened += 1;
            }
            Err(e) => assert_eq!(e.status, Status::UnknownService, "{e}"),
        }
    }
    assert_eq!(
        opened, 1,
        "the server's open carried its token to the authed client"
    );

    authed.close().await;
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn the_ready_limits_count_a_stream_as_one_call() {
    // At most one `Hold` stream at once: the permit lasts the stream's life.
    let mut sr = Router::new();
    numbers(&mut sr, "l.S");
    let limit = MethodConcurrencyLimit::new().limit("l.S", "Hold", 1);
    let server = start(sr, RpcOptions::default().inbound_layer(limit)).await;
    let client = connect(&server, Router::new(), RpcOptions::default()).await;
    let peer = client.peer().unwrap();
    let open = || peer.open_stream::<Json, u64, u64>("l.S", "Hold", CallOptions::new());
    let (mut tx1, mut rx1) = open().await.unwrap();
    tx1.send(&1).await.unwrap();
    // The server takes the permit as it reads the first open, so the second is refused.
    let (_tx2, mut rx2) = open().await.unwrap();
    let e = rx2.next().await.unwrap().unwrap_err();
    assert_eq!(e.status, Status::Overloaded, "{e}");
    // Other methods are not limited meanwhile.
    let rx = peer
        .server_stream::<Json, u64, u64>("l.S", "Count", &2, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(all(rx).await.unwrap(), [0, 1]);
    // The first ends: its permit comes back before its end reaches us.
    tx1.finish();
    assert!(rx1.next().await.is_none());
    let (mut tx3, rx3) = open().await.unwrap();
    tx3.finish();
    assert!(all(rx3).await.unwrap().is_empty());
    client.close().await;
    server.close().await;

    // Two opens or calls per peer per hour: a stream's open takes a token, its items none.
    let mut sr = Router::new();
    numbers(&mut sr, "l.S");
    let rate = PeerRateLimit::new(2, Duration::from_secs(3600), 2);
    let server = start(sr, RpcOptions::default().inbound_layer(rate)).await;
    let client = connect(&server, Router::new(), RpcOptions::default()).await;
    let peer = client.peer().unwrap();
    let rx = peer
        .server_stream::<Json, u64, u64>("l.S", "Count", &50, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(all(rx).await.unwrap().len(), 50);
    let _: String = peer.call_json("l.S", "Ping", &()).await.unwrap();
    let r = peer
        .server_stream::<Json, u64, u64>("l.S", "Count", &1, CallOptions::new())
        .await;
    assert_eq!(ended(r).await.unwrap_err().status, Status::Overloaded);
    client.close().await;
    server.close().await;
}

// With `tracing-opentelemetry` the context is the OpenTelemetry one (tests/trace_otel.rs).
#[cfg(not(feature = "tracing-opentelemetry"))]
#[tokio::test]
async fn one_trace_across_a_stream_its_nested_stream_back_and_the_items() {
    use getty::rpc::middleware::trace::{TRACEPARENT, TraceContext, TracePropagation};

    /// "received trace/span" and "current trace/span" of a stream handler, as two items.
    fn seen(ctx: &Context) -> [String; 2] {
        let got = TraceContext::parse(ctx.meta(TRACEPARENT).expect("a traceparent"), None)
            .expect("a valid traceparent");
        let now = TraceContext::current().expect("the handler runs in a trace");
        [
            format!("{} {}", got.trace_id_hex(), got.span_id_hex()),
            format!("{} {}", now.trace_id_hex(), now.span_id_hex()),
        ]
    }
    let mut sr = Router::new();
    sr.add_server_stream::<Json, (), String, _, _>(
        "t.S",
        "Trace",
        |ctx: Context, _: (), mut out: Sender<Json, String>| async move {
            for s in seen(&ctx) {
                out.send(&s).await?;
            }
            let back = ctx
                .peer()
                .server_stream::<Json, (), String>("t.C", "Trace", &(), CallOptions::new())
                .await?;
            for s in all(back).await? {
                out.send(&s).await?;
            }
            Ok(())
        },
    );
    let opts = || RpcOptions::default().layer(TracePropagation);
    let server = start(sr, opts()).await;
    let mut cr = Router::new();
    cr.add_server_stream::<Json, (), String, _, _>(
        "t.C",
        "Trace",
        |ctx: Context, _: (), mut out: Sender<Json, String>| async move {
            for s in seen(&ctx) {
                out.send(&s).await?;
            }
            Ok(())
        },
    );
    let client = connect(&server, cr, opts()).await;
    let peer = client.peer().unwrap();

    let root = TraceContext::new_root();
    let (after, items) = root
        .clone()
        .scope(async {
            let rx = peer
                .server_stream::<Json, (), String>("t.S", "Trace", &(), CallOptions::new())
                .await
                .unwrap();
            let items = all(rx).await.unwrap();
            (TraceContext::current(), items)
        })
        .await;
    let split: Vec<(&str, &str)> = items.iter().map(|s| s.split_once(' ').unwrap()).collect();
    let [s_got, s_now, c_got, c_now] = split[..] else {
        panic!("{items:?}");
    };
    let trace = root.trace_id_hex();
    for (what, (t, _)) in [
        ("the open", s_got),
        ("the server's handler", s_now),
        ("the nested open", c_got),
        ("the client's handler", c_now),
    ] {
        assert_eq!(t, trace, "{what}: {items:?}");
    }
    // Each has a span of its own: the open's, the handler's child of it, the nested open's
    // (a child of the handler's), the client's handler's.
    assert_ne!(s_got.1, root.span_id_hex());
    assert_ne!(s_now.1, s_got.1);
    assert_ne!(c_got.1, s_now.1);
    assert_ne!(c_now.1, c_got.1);
    // The items come back into the opener's trace.
    assert_eq!(after, Some(root));
    client.close().await;
    server.close().await;
}

#[path = "common/prometheus.rs"]
mod prometheus;
use prometheus::{Sample, install_exporter, matching, scrape};

/// The value of the one sample of `name` whose labels include `want` (0 when there is none).
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let hits = matching(samples, name, want);
    assert!(hits.len() <= 1, "{name} {want:?}: {hits:?}");
    hits.first().map_or(0.0, |h| h.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_metrics_show_the_exact_counts_of_a_known_workload() {
    use getty::rpc::middleware::metrics::Metrics;
    let addr = install_exporter();

    let mut sr = Router::new();
    numbers(&mut sr, "m.S");
    sr.add_client_stream::<Json, u64, u64, _, _>(
        "m.S",
        "Sum",
        |_: Context, items: Receiver<Json, u64>| async move {
            Ok(all(items).await?.into_iter().sum())
        },
    );
    sr.add_server_stream::<Json, (), u64, _, _>(
        "m.S",
        "Fail",
        |_: Context, _: (), mut out: Sender<Json, u64>| async move {
            out.send(&7).await?;
            Err(RpcError::handler("no more"))
        },
    );
    let server = start(sr, RpcOptions::default().inbound_layer(Metrics)).await;
    let client = connect(
        &server,
        Router::new(),
        RpcOptions::default().outbound_layer(Metrics),
    )
    .await;
    let peer = client.peer().unwrap();

    // The workload: 3 server streams of 4 items, 2 client streams of 5 items, 1 stream that
    // fails after 1 item.
    for _ in 0..3 {
        let rx = peer
            .server_stream::<Json, u64, u64>("m.S", "Count", &4, CallOptions::new())
            .await
            .unwrap();
        assert_eq!(all(rx).await.unwrap(), [0, 1, 2, 3]);
    }
    for _ in 0..2 {
        let (mut tx, rx) = peer
            .client_stream::<Json, u64, u64>("m.S", "Sum", CallOptions::new())
            .await
            .unwrap();
        for i in 1..=5 {
            tx.send(&i).await.unwrap();
        }
        tx.finish();
        assert_eq!(rx.reply().await.unwrap(), 15);
    }
    let mut rx = peer
        .server_stream::<Json, (), u64>("m.S", "Fail", &(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), 7);
    assert_eq!(
        rx.next().await.unwrap().unwrap_err().status,
        Status::HandlerError
    );

    // The opener's layer counts each end just after its receiver read it.
    let ended = |m: &[Sample]| {
        ["OK", "HANDLER_ERROR"]
            .iter()
            .flat_map(|st| {
                ["Count", "Sum", "Fail"].map(|me| {
                    value(
                        m,
                        "getty_rpc_streams_ended_total",
                        &[("method", me), ("direction", "outbound"), ("status", st)],
                    )
                })
            })
            .sum::<f64>()
    };
    let m = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = scrape(addr).await;
            if ended(&m) >= 6.0 {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every stream's end was counted");
    // (method, opened, ended with status, items received and sent) per direction.
    let expect = [
        ("outbound", "Count", 3.0, "OK", 12.0, 3.0),
        ("outbound", "Sum", 2.0, "OK", 2.0, 10.0),
        ("outbound", "Fail", 1.0, "HANDLER_ERROR", 1.0, 1.0),
        ("inbound", "Count", 3.0, "OK", 3.0, 12.0),
        ("inbound", "Sum", 2.0, "OK", 10.0, 2.0),
        ("inbound", "Fail", 1.0, "HANDLER_ERROR", 1.0, 1.0),
    ];
    for (dir, method, n, status, received, sent) in expect {
        let l = [("service", "m.S"), ("method", method), ("direction", dir)];
        let at = format!("{dir} {method}");
        assert_eq!(value(&m, "getty_rpc_streams_opened_total", &l), n, "{at}");
        let mut ls = l.to_vec();
        ls.push(("status", status));
        assert_eq!(value(&m, "getty_rpc_streams_ended_total", &ls), n, "{at}");
        assert_eq!(
            value(&m, "getty_rpc_stream_duration_seconds_count", &l),
            n,
            "{at}"
        );
        assert_eq!(value(&m, "getty_rpc_streams_open", &l), 0.0, "{at}");
        assert_eq!(
            value(&m, "getty_rpc_stream_items_received_total", &l),
            received,
            "{at}"
        );
        assert_eq!(
            value(&m, "getty_rpc_stream_items_sent_total", &l),
            sent,
            "{at}"
        );
        // Streams are not counted as calls.
        assert_eq!(value(&m, "getty_rpc_calls_started_total", &l), 0.0, "{at}");
    }
    client.close().await;
    server.close().await;
}
