//! Streams through the middleware over real loopback TCP: a layer on each of the four paths
//! (inbound and outbound, on the accepting and on the connecting peer) sees every stream's open
//! and can change or refuse it and sees its end; bearer auth refuses a stream without the token
//! and the connection goes on; the ready limits count a stream as a call; one trace id across a
//! stream, its nested stream back and the items; exact stream metrics of a known workload.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
