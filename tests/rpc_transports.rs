//! getty-rpc over every kind of connection: the same call, error and heartbeat tests over TCP,
//! a Unix domain socket, and `tokio::io::duplex` connections handed to `serve_incoming` /
//! `connect_with` (any `AsyncRead + AsyncWrite`).

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{Context, Router, RpcClient, RpcError, RpcOptions, RpcServer, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;

trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp,
    Unix,
    Duplex,
}

/// A running server and how to reach it.
struct Endpoint {
    server: RpcServer,
    to: To,
    _dir: Option<TempDir>,
}

#[derive(Clone)]
enum To {
    Tcp(String),
    Unix(PathBuf),
    Duplex(mpsc::UnboundedSender<tokio::io::DuplexStream>),
}

/// A directory removed at the end of the test (Unix socket paths).
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    let p = std::env::temp_dir().join(format!(
        "getty-unix-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

async fn start(kind: Kind, router: Router, opts: RpcOptions) -> Endpoint {
    match kind {
        Kind::Tcp => {
            let server = RpcServer::start(router, opts, |cb| {
                ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
            })
            .await
            .unwrap();
            let to = To::Tcp(server.local_addr().to_string());
            Endpoint {
                server,
                to,
                _dir: None,
            }
        }
        Kind::Unix => {
            let dir = temp_dir();
            let path = dir.0.join("rpc.sock");
            let addr = format!("unix://{}", path.display());
            let server =
                RpcServer::start(router, opts, |cb| ServerBuilder::new(addr).serve_unix(cb))
                    .await
                    .unwrap();
            Endpoint {
                server,
                to: To::Unix(path),
                _dir: Some(dir),
            }
        }
        Kind::Duplex => {
            let (tx, rx) = mpsc::unbounded_channel::<tokio::io::DuplexStream>();
            let incoming = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|c| (Ok::<_, io::Error>(c), rx))
            }));
            let server = RpcServer::start(router, opts, |cb| {
                ServerBuilder::new("").serve_incoming(incoming, cb)
            })
            .await
            .unwrap();
            Endpoint {
                server,
                to: To::Duplex(tx),
                _dir: None,
            }
        }
    }
}

async fn client(to: &To, router: Router, opts: RpcOptions) -> RpcClient {
    let c = match to.clone() {
        To::Tcp(a) => RpcClient::start(router, opts, |cb| ClientBuilder::new(a).connect_tcp(cb)),
        To::Unix(p) => RpcClient::start(router, opts, |cb| {
            ClientBuilder::new(p.display().to_string()).connect_unix(cb)
        }),
        To::Duplex(tx) => RpcClient::start(router, opts, |cb| {
            ClientBuilder::new("").connect_with(
                move || {
                    let tx = tx.clone();
                    async move {
                        let (mine, theirs) = tokio::io::duplex(64 * 1024);
                        tx.send(theirs)
                            .map_err(|_| io::Error::other("the server is gone"))?;
                        Ok(mine)
                    }
                },
                cb,
            )
        }),
    }
    .unwrap();
    c.ready().await.unwrap();
    c
}

/// A connection that says nothing (for the heartbeat test).
async fn raw(to: &To) -> Pin<Box<dyn Conn>> {
    match to {
        To::Tcp(a) => Box::pin(tokio::net::TcpStream::connect(a).await.unwrap()),
        To::Unix(p) => Box::pin(tokio::net::UnixStream::connect(p).await.unwrap()),
        To::Duplex(tx) => {
            let (mine, theirs) = tokio::io::duplex(64 * 1024);
            tx.send(theirs).unwrap();
            Box::pin(mine)
        }
    }
}

fn opts() -> RpcOptions {
    RpcOptions::default().default_timeout(Duration::from_secs(5))
}

fn server_router() -> Router {
    let mut r = Router::new();
    r.add_json("t.S", "Add", |_: Context, (a, b): (i64, i64)| async move {
        Ok::<_, RpcError>(a + b)
    });
    r.add_json("t.S", "Greet", |ctx: Context, name: String| async move {
        let mood: String = ctx.peer().call_json("t.C", "Mood", &name).await?;
        Ok::<_, RpcError>(format!("hello {name}, feeling {mood}"))
    });
    r.add_json("t.S", "Fail", |_: Context, _: ()| async move {
        Err::<(), _>(RpcError::handler("it failed"))
    });
    r.add_json("t.S", "Slow", |_: Context, ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, RpcError>(ms)
    });
    r
}

fn client_router() -> Router {
    let mut r = Router::new();
    r.add_json("t.C", "Mood", |_: Context, _: String| async move {
        Ok::<_, RpcError>("fine".to_string())
    });
    r
}

async fn calls_both_ways(kind: Kind) {
    let ep = start(kind, server_router(), opts()).await;
    let c = client(&ep.to, client_router(), opts()).await;
    let peer = c.peer().unwrap();
    assert_eq!(
        peer.call_json::<_, i64>("t.S", "Add", &(2, 3))
            .await
            .unwrap(),
        5
    );
    let g: String = peer
        .call_json("t.S", "Greet", &"ann".to_string())
        .await
        .unwrap();
    assert_eq!(g, "hello ann, feeling fine");
    // The accepting side calls the connecting one.
    let sp = ep.server.peers().pop().unwrap();
    let m: String = sp.call_json("t.C", "Mood", &"x".to_string()).await.unwrap();
    assert_eq!(m, "fine");
    // Many calls at once on the one connection.
    let calls: Vec<_> = (0..200i64)
        .map(|i| {
            let p = peer.clone();
            tokio::spawn(async move { p.call_json::<_, i64>("t.S", "Add", &(i, 1)).await })
        })
        .collect();
    for (i, h) in calls.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().unwrap(), i as i64 + 1, "{kind:?}");
    }
    c.close().await;
    ep.server.close().await;
}

async fn errors_keep_the_connection(kind: Kind) {
    let ep = start(kind, server_router(), opts()).await;
    let c = client(&ep.to, client_router(), opts()).await;
    let peer = c.peer().unwrap();
    let e = peer
        .call_json::<(), ()>("t.S", "Nope", &())
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::UnknownMethod, "{kind:?}");
    let e = peer
        .call_json::<(), ()>("t.X", "Nope", &())
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::UnknownService);
    let e = peer
        .call_json::<(), ()>("t.S", "Fail", &())
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::HandlerError);
    assert_eq!(e.message, "it failed");
    let e = peer
        .call::<getty::rpc::Json, u64, u64>(
            "t.S",
            "Slow",
            &10_000,
            getty::rpc::CallOptions::new().timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    // The caller's timer or the callee's copy of the deadline, whichever fires first.
    assert!(
        matches!(e.status, Status::Timeout | Status::DeadlineExceeded),
        "{kind:?}: {e}"
    );
    // The callee was told (Cancel): nothing of it stays in progress.
    tokio::time::timeout(Duration::from_secs(5), async {
        while ep.server.peers()[0].stats().inflight > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the timed-out call was cancelled on the server");
    assert_eq!(
        peer.call_json::<_, i64>("t.S", "Add", &(1, 1))
            .await
            .unwrap(),
        2
    );
    assert!(!peer.is_closed());
    // The server going away fails a pending call at once.
    let pending = {
        let p = peer.clone();
        tokio::spawn(async move { p.call_json::<u64, u64>("t.S", "Slow", &10_000).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    ep.server.close().await;
    let e = tokio::time::timeout(Duration::from_secs(3), pending)
        .await
        .expect("the pending call failed fast")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.status, Status::ConnectionClosed, "{kind:?}: {e}");
    c.close().await;
}

async fn heartbeats(kind: Kind) {
    let o = opts()
        .heartbeat_period(Duration::from_millis(100))
        .heartbeat_misses(2);
    let ep = start(kind, Router::new(), o).await;
    // A peer that connects and then says nothing, not even a Pong, is closed.
    let mut silent = raw(&ep.to).await;
    let t = std::time::Instant::now();
    let mut buf = vec![0u8; 1024];
    let mut pings = 0;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
            .await
            .expect("the server never closed the silent peer")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        pings += buf[..n]
            .windows(4)
            .filter(|w| w[..2] == *b"GT" && w[3] == 4)
            .count();
    }
    let took = t.elapsed();
    assert!(pings >= 1, "{kind:?}: the server pinged before giving up");
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(1500),
        "{kind:?}: {took:?}"
    );
    // A live client answers pings and stays.
    let c = client(
        &ep.to,
        Router::new(),
        opts().heartbeat_period(Duration::from_secs(60)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        ep.server.peers().len(),
        1,
        "{kind:?}: a peer that answers pings stays"
    );
    let rtt = c
        .peer()
        .unwrap()
        .ping(Duration::from_secs(1))
        .await
        .unwrap();
    assert!(rtt < Duration::from_secs(1));
    c.close().await;
    ep.server.close().await;
}

macro_rules! over {
    ($name:ident, $kind:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn calls_both_ways() {
                super::calls_both_ways($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn errors_keep_the_connection() {
                super::errors_keep_the_connection($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn heartbeats() {
                super::heartbeats($kind).await
            }
        }
    };
}

over!(tcp, Kind::Tcp);
over!(unix, Kind::Unix);
over!(duplex, Kind::Duplex);

#[tokio::test]
async fn a_unix_server_removes_its_socket_and_does_not_take_a_live_ones() {
    let dir = temp_dir();
    let path = dir.0.join("s.sock");
    let addr = path.display().to_string();
    let s = RpcServer::start(Router::new(), opts(), |cb| {
        ServerBuilder::new(addr.clone()).serve_unix(cb)
    })
    .await
    .unwrap();
    assert!(path.exists());
    let second = RpcServer::start(Router::new(), opts(), |cb| {
        ServerBuilder::new(addr.clone()).serve_unix(cb)
    })
    .await;
    let e = second.err().expect("the path is taken");
    assert!(e.to_string().contains("s.sock"), "{e}");
    s.close().await;
    assert!(!path.exists(), "the socket file went with the server");
}
