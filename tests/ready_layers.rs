//! The ready layers over real loopback TCP: bearer-token authentication (a call without the
//! token is refused with UNAUTHENTICATED and the connection stays usable), per-peer rate
//! limiting, and a per-method concurrency limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::middleware::{BearerAuth, MethodConcurrencyLimit, PeerRateLimit};
use getty::rpc::{
    CallOptions, Context, Json, Router, RpcClient, RpcError, RpcOptions, RpcServer, Status,
};

async fn server(router: Router, opts: RpcOptions) -> RpcServer {
    RpcServer::start(router, opts, |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap()
}

async fn client(server: &RpcServer, router: Router, opts: RpcOptions) -> RpcClient {
    let addr = server.local_addr().to_string();
    let c = RpcClient::start(router, opts, |cb| ClientBuilder::new(addr).connect_tcp(cb)).unwrap();
    c.ready().await.unwrap();
    c
}

/// `t.S/Hello` counts its runs and calls back `t.C/Name` on the caller when asked to.
fn counting(runs: Arc<AtomicUsize>) -> Router {
    let mut r = Router::new();
    r.add_json("t.S", "Hello", move |ctx: Context, back: bool| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            if back {
                let n: String = ctx.peer().call_json("t.C", "Name", &()).await?;
                return Ok::<_, RpcError>(format!("hello {n}"));
            }
            Ok("hello".to_string())
        }
    });
    r
}

#[tokio::test]
async fn a_call_without_the_token_is_unauthenticated_and_the_connection_stays_usable() {
    let runs = Arc::new(AtomicUsize::new(0));
    let srv = server(
        counting(runs.clone()),
        RpcOptions::default().layer(BearerAuth::new("s3cret")),
    )
    .await;

    // A client with no auth layer: refused, the handler never ran, the connection stays.
    let plain = client(&srv, Router::new(), RpcOptions::default()).await;
    let peer = plain.peer().unwrap();
    let e = peer
        .call_json::<bool, String>("t.S", "Hello", &false)
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::Unauthenticated, "{e}");
    assert!(e.is_from_peer());
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let wrong = CallOptions::new().meta("authorization", "Bearer guess");
    let e = peer
        .call::<Json, bool, String>("t.S", "Hello", &false, wrong)
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::Unauthenticated);
    // The same connection, now with the token by hand.
    let right = CallOptions::new().meta("authorization", "Bearer s3cret");
    let ok: String = peer
        .call::<Json, _, _>("t.S", "Hello", &false, right)
        .await
        .unwrap();
    assert_eq!(ok, "hello");
    assert!(!peer.is_closed());
    assert_eq!(srv.peers().len(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A client with the same layer: its calls carry the token, and it checks the server's
    // nested call back, which the server's layer signed.
    let mut cr = Router::new();
    cr.add_json("t.C", "Name", |_: Context, _: ()| async {
        Ok::<_, RpcError>("ann".to_string())
    });
    let authed = client(
        &srv,
        cr,
        RpcOptions::default().layer(BearerAuth::new("s3cret")),
    )
    .await;
    let ok: String = authed
        .peer()
        .unwrap()
        .call_json("t.S", "Hello", &true)
        .await
        .unwrap();
    assert_eq!(ok, "hello ann");

    // A client that checks a token the server does not send refuses the nested call; the
    // server's handler passes that refusal on.
    let mut cr = Router::new();
    cr.add_json("t.C", "Name", |_: Context, _: ()| async {
        Ok::<_, RpcError>("bob".to_string())
    });
    let strict = client(
        &srv,
        cr,
        RpcOptions::default()
            .outbound_layer(BearerAuth::new("s3cret").add_only())
            .inbound_layer(BearerAuth::new("other").check_only()),
    )
    .await;
    let e = strict
        .peer()
        .unwrap()
        .call_json::<bool, String>("t.S", "Hello", &true)
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::Unauthenticated, "{e}");

    for c in [plain, authed, strict] {
        c.close().await;
    }
    srv.close().await;
}

async fn hello(p: &getty::rpc::Peer) -> Result<String, RpcError> {
    p.call_json("t.S", "Hello", &false).await
}

#[tokio::test]
async fn each_peer_has_its_own_rate_limit() {
    let runs = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(PeerRateLimit::new(1, Duration::from_secs(1), 3));
    let srv = server(
        counting(runs.clone()),
        RpcOptions::default().inbound_layer(limit.clone()),
    )
    .await;
    let a = client(&srv, Router::new(), RpcOptions::default()).await;
    let b = client(&srv, Router::new(), RpcOptions::default()).await;
    let (pa, pb) = (a.peer().unwrap(), b.peer().unwrap());
    for _ in 0..3 {
        hello(&pa).await.unwrap();
    }
    let e = hello(&pa).await.unwrap_err();
    assert_eq!(e.status, Status::Overloaded, "{e}");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    // Another peer is not slowed by the first.
    for _ in 0..3 {
        hello(&pb).await.unwrap();
    }
    assert_eq!(limit.tracked_peers(), 2);
    // The bucket refills at the rate: one call per second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    hello(&pa).await.unwrap();
    let e = hello(&pa).await.unwrap_err();
    assert_eq!(e.status, Status::Overloaded);
    // A closed connection's bucket goes with it.
    a.close().await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while limit.tracked_peers() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the closed peer's bucket is dropped");
    b.close().await;
    srv.close().await;
}

#[tokio::test]
async fn a_method_runs_at_most_its_limit_at_once() {
    let mut r = Router::new();
    r.add_json("t.S", "Slow", |_: Context, ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, RpcError>(ms)
    });
    r.add_json("t.S", "Fast", |_: Context, n: u64| async move {
        Ok::<_, RpcError>(n)
    });
    let limit = MethodConcurrencyLimit::new().limit("t.S", "Slow", 2);
    let srv = server(r, RpcOptions::default().inbound_layer(limit)).await;
    let c = client(&srv, Router::new(), RpcOptions::default()).await;
    let peer = c.peer().unwrap();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let p = peer.clone();
            tokio::spawn(async move { p.call_json::<u64, u64>("t.S", "Slow", &500).await })
        })
        .collect();
    // While two run, other methods are not limited.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        peer.call_json::<u64, u64>("t.S", "Fast", &7).await.unwrap(),
        7
    );
    let mut ok = 0;
    let mut refused = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.status == Status::Overloaded => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, refused), (2, 3));
    // Once they are done the method takes calls again.
    assert_eq!(
        peer.call_json::<u64, u64>("t.S", "Slow", &1).await.unwrap(),
        1
    );
    c.close().await;
    srv.close().await;
}
