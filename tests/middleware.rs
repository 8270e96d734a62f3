//! Middleware over real loopback TCP: a layer on each of the four paths (inbound and outbound,
//! on the accepting and on the connecting peer) sees every call and can change it, answer it
//! or refuse it; tower's timeout and concurrency-limit layers work unchanged on getty handlers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::middleware::tower::TowerLayer;
use getty::rpc::{
    Call, CallOptions, CodecId, Context, Json, Next, Router, RpcClient, RpcError, RpcOptions,
    RpcServer, Status,
};

type Log = Arc<Mutex<Vec<String>>>;
type Fut = futures_util::future::BoxFuture<'static, Result<Bytes, RpcError>>;

/// A layer that logs what it sees (name, direction, method, outcome) and adds `name=1` to the
/// call's metadata.
fn tagger(name: &'static str, log: Log) -> impl Fn(Call, Next) -> Fut + Send + Sync {
    move |mut call: Call, next: Next| {
        let log = log.clone();
        Box::pin(async move {
            let what = format!(
                "{name} {:?} {}.{}",
                call.direction, call.service, call.method
            );
            call.set_meta(name, "1");
            let res = next.run(call).await;
            let status = res.as_ref().err().map_or(Status::Ok, |e| e.status);
            log.lock()
                .unwrap()
                .push(format!("{what} -> {}", status.name()));
            res
        })
    }
}

/// The metadata keys a handler saw, sorted, as a JSON list (the test's view of what layers
/// changed).
fn keys(ctx: &Context) -> Vec<String> {
    let mut k: Vec<String> = ctx.metadata().iter().map(|(k, _)| k.clone()).collect();
    k.sort();
    k
}

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn taken(log: &Log) -> Vec<String> {
    let mut v = std::mem::take(&mut *log.lock().unwrap());
    v.sort();
    v
}

#[tokio::test]
async fn a_layer_on_each_of_the_four_paths_sees_and_changes_every_call() {
    let log = log();
    let forbidden_runs = Arc::new(AtomicUsize::new(0));
    let notes = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));

    // The accepting side: `t.Server/Keys` answers with what it saw and what the client's
    // `t.Client/Keys` saw of a nested call back.
    let mut sr = Router::new();
    sr.add_json("t.Server", "Keys", |ctx: Context, _: ()| async move {
        let back: Vec<String> = ctx.peer().call_json("t.Client", "Keys", &()).await?;
        Ok::<_, RpcError>((keys(&ctx), back))
    });
    let runs = forbidden_runs.clone();
    sr.add_json("t.Server", "Forbidden", move |_: Context, _: ()| {
        runs.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, RpcError>(()) }
    });
    let n = notes.clone();
    sr.add_one_way::<Json, (), _, _>("t.Server", "Note", move |ctx: Context, _: ()| {
        n.lock().unwrap().push(keys(&ctx));
        async {}
    });
    // A layer that refuses `Forbidden` before its handler and rewrites every reply of
    // `t.Server/Keys` is on the server's inbound path, after the tagger.
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
    let server = RpcServer::start(sr, sopts, |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();

    // The connecting side serves `t.Client/Keys`, and answers `t.Local/Cached` from a layer
    // without sending anything.
    let mut cr = Router::new();
    cr.add_json("t.Client", "Keys", |ctx: Context, _: ()| async move {
        Ok::<_, RpcError>(keys(&ctx))
    });
    let cache = |call: Call, next: Next| -> Fut {
        Box::pin(async move {
            if call.service == "t.Local" {
                return Ok(Bytes::from_static(b"\"from the layer\""));
            }
            next.run(call).await
        })
    };
    let copts = RpcOptions::default()
        .outbound_layer(tagger("c-out", log.clone()))
        .outbound_layer(cache)
        .inbound_layer(tagger("c-in", log.clone()));
    let addr = server.local_addr().to_string();
    let client =
        RpcClient::start(cr, copts, |cb| ClientBuilder::new(addr).connect_tcp(cb)).unwrap();
    client.ready().await.unwrap();
    let peer = client.peer().unwrap();

    // Client → server, with a nested call server → client inside it.
    let (seen, back): (Vec<String>, Vec<String>) =
        peer.call_json("t.Server", "Keys", &()).await.unwrap();
    assert_eq!(seen, ["c-out", "s-in"], "what the server's handler saw");
    assert_eq!(back, ["c-in", "s-out"], "what the client's handler saw");
    assert_eq!(
        taken(&log),
        [
            "c-in Inbound t.Client.Keys -> OK",
            "c-out Outbound t.Server.Keys -> OK",
            "s-in Inbound t.Server.Keys -> OK",
            "s-out Outbound t.Client.Keys -> OK",
        ]
    );

    // A layer refuses a call: the handler never runs, both ends' layers see the outcome.
    let e = peer
        .call_json::<(), ()>("t.Server", "Forbidden", &())
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::HandlerError);
    assert_eq!(forbidden_runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        taken(&log),
        [
            "c-out Outbound t.Server.Forbidden -> HANDLER_ERROR",
            "s-in Inbound t.Server.Forbidden -> HANDLER_ERROR",
        ]
    );

    // A layer answers a call itself: nothing is sent (the server's layers see nothing).
    let cached: String = peer.call_json("t.Local", "Cached", &()).await.unwrap();
    assert_eq!(cached, "from the layer");
    assert_eq!(taken(&log), ["c-out Outbound t.Local.Cached -> OK"]);

    // The server calls the client directly: its outbound and the client's inbound layers.
    let sp = server.peers().pop().unwrap();
    let direct: Vec<String> = sp.call_json("t.Client", "Keys", &()).await.unwrap();
    assert_eq!(direct, ["c-in", "s-out"]);
    assert_eq!(
        taken(&log),
        [
            "c-in Inbound t.Client.Keys -> OK",
            "s-out Outbound t.Client.Keys -> OK",
        ]
    );

    // One-way calls and calls started with `start_call_raw` pass the layers too.
    peer.notify::<Json, ()>("t.Server", "Note", &(), CallOptions::new())
        .await
        .unwrap();
    let pending = peer
        .start_call_raw(
            "t.Client",
            "Keys",
            CodecId::Json,
            Bytes::from_static(b"null"),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let e = pending.await.unwrap_err();
    assert_eq!(
        e.status,
        Status::UnknownService,
        "the server serves no t.Client"
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while notes.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(notes.lock().unwrap()[0], ["c-out", "s-in"]);
    // The inbound layer logs a one-way call's outcome once its handler is done.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("s-in Inbound t.Server.Note"))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the server's inbound layer saw the one-way call");
    assert_eq!(
        taken(&log),
        [
            "c-out Outbound t.Client.Keys -> UNKNOWN_SERVICE",
            "c-out Outbound t.Server.Note -> OK",
            "s-in Inbound t.Server.Note -> OK",
        ]
    );

    client.close().await;
    server.close().await;
}

/// What runs at once and at most at once in a handler.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// Counts a handler as stopped however it ends (finished, or dropped by a layer).
struct Running(Arc<Gauge>);
impl Drop for Running {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn slow_router(g: Arc<Gauge>) -> Router {
    let mut r = Router::new();
    r.add_json("t.Slow", "Sleep", move |_: Context, ms: u64| {
        let g = g.clone();
        async move {
            let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
            g.max.fetch_max(n, Ordering::SeqCst);
            let _running = Running(g.clone());
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, RpcError>(ms)
        }
    });
    r
}

async fn pair(sopts: RpcOptions, copts: RpcOptions, g: Arc<Gauge>) -> (RpcServer, RpcClient) {
    let server = RpcServer::start(slow_router(g), sopts, |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(Router::new(), copts, |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    (server, client)
}

#[tokio::test]
async fn towers_timeout_layer_bounds_a_getty_handler_on_either_path() {
    let g = Arc::new(Gauge::default());
    let sopts = RpcOptions::default().inbound_layer(TowerLayer::new(
        tower::timeout::TimeoutLayer::new(Duration::from_millis(100)),
    ));
    let copts = RpcOptions::default().outbound_layer(TowerLayer::new(
        tower::timeout::TimeoutLayer::new(Duration::from_millis(300)),
    ));
    let (server, client) = pair(sopts, copts, g.clone()).await;
    let peer = client.peer().unwrap();

    // Inbound: the server's layer stops the handler and answers DEADLINE_EXCEEDED.
    let e = peer
        .call_json::<u64, u64>("t.Slow", "Sleep", &10_000)
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::DeadlineExceeded, "{e}");
    assert_eq!(g.now.load(Ordering::SeqCst), 0, "the handler was dropped");
    // Fast calls pass, and the connection is the same one.
    let v: u64 = peer.call_json("t.Slow", "Sleep", &1).await.unwrap();
    assert_eq!(v, 1);

    // Outbound: the client's own layer gives up first when the server has no such layer.
    let g2 = Arc::new(Gauge::default());
    let copts = RpcOptions::default().outbound_layer(TowerLayer::new(
        tower::timeout::TimeoutLayer::new(Duration::from_millis(100)),
    ));
    let (server2, client2) = pair(RpcOptions::default(), copts, g2).await;
    let e = client2
        .peer()
        .unwrap()
        .call_json::<u64, u64>("t.Slow", "Sleep", &10_000)
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::Timeout, "{e}");
    client2.close().await;
    server2.close().await;
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn towers_concurrency_limit_layer_bounds_a_getty_handler() {
    let g = Arc::new(Gauge::default());
    let sopts = RpcOptions::default()
        .inbound_layer(TowerLayer::new(tower::limit::ConcurrencyLimitLayer::new(2)));
    let (server, client) = pair(sopts, RpcOptions::default(), g.clone()).await;
    let peer = client.peer().unwrap();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let p = peer.clone();
            tokio::spawn(async move { p.call_json::<u64, u64>("t.Slow", "Sleep", &30).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), 30);
    }
    assert_eq!(
        g.max.load(Ordering::SeqCst),
        2,
        "at most two handlers at once"
    );

    // Without the layer the same load runs all at once (the test can tell the difference).
    let g2 = Arc::new(Gauge::default());
    let (server2, client2) = pair(RpcOptions::default(), RpcOptions::default(), g2.clone()).await;
    let peer2 = client2.peer().unwrap();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let p = peer2.clone();
            tokio::spawn(async move { p.call_json::<u64, u64>("t.Slow", "Sleep", &100).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert!(g2.max.load(Ordering::SeqCst) > 2);
    client2.close().await;
    server2.close().await;
    client.close().await;
    server.close().await;
}
