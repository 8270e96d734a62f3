//! getty-rpc over real loopback TCP: calls both ways on one connection, errors, timeouts,
//! cancel, heartbeats, and what happens when the server dies mid-call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{
    CallOptions, CodecId, Context, Json, Peer, Prost, Router, RpcClient, RpcError, RpcOptions,
    RpcServer, Status,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
struct EchoReq {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    delay_ms: u32,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
struct EchoResp {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(string, tag = "2")]
    served_by: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Add {
    a: i64,
    b: i64,
}

fn opts() -> RpcOptions {
    RpcOptions::default().default_timeout(Duration::from_secs(5))
}

/// Echo (prost, both codecs), Add (serde JSON), Fail (handler error), Slow (sleeps), and
/// CallBack (calls `client.Name` on the calling peer before answering).
fn server_router(name: &'static str, cancelled: Arc<AtomicUsize>) -> Router {
    let mut r = Router::new();
    r.add_prost(
        "test.Echo",
        "Echo",
        move |_ctx: Context, req: EchoReq| async move {
            if req.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(req.delay_ms as u64)).await;
            }
            Ok(EchoResp {
                text: req.text,
                served_by: name.to_string(),
            })
        },
    );
    r.add_json("test.Math", "Add", |_ctx: Context, req: Add| async move {
        Ok(req.a + req.b)
    });
    r.add_json("test.Math", "Fail", |_ctx: Context, _req: Add| async move {
        Err::<i64, _>(RpcError::handler("no sums today"))
    });
    r.add_json("test.Math", "Slow", move |ctx: Context, ms: u64| {
        let cancelled = cancelled.clone();
        async move {
            struct OnDrop(Arc<AtomicUsize>, bool);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    if !self.1 {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            let mut guard = OnDrop(cancelled, false);
            let _ = ctx.deadline();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            guard.1 = true;
            Ok(ms)
        }
    });
    r.add_json("test.Math", "Block", |_ctx: Context, ms: u64| async move {
        // Blocks (so a Cancel cannot stop it), but hands this worker's other tasks to another
        // thread, so the caller's timer still fires on time.
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(ms)));
        Ok(ms)
    });
    r.add_json("test.Math", "Meta", |ctx: Context, _: ()| async move {
        Ok((
            ctx.meta("user").map(str::to_string),
            ctx.deadline().is_some(),
        ))
    });
    r.add_json(
        "test.Back",
        "CallBack",
        |ctx: Context, depth: u32| async move {
            // Call the caller back on the very same connection, before answering.
            let name: String = ctx.peer().call_json("client.Info", "Name", &depth).await?;
            Ok(format!("server saw {name}"))
        },
    );
    r
}

fn client_router(hits: Arc<AtomicUsize>) -> Router {
    let mut r = Router::new();
    r.add_json("client.Info", "Name", move |ctx: Context, depth: u32| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            if depth > 0 {
                // Nested again: the client, while serving the server, calls the server.
                let s: String = ctx
                    .peer()
                    .call_json("test.Back", "CallBack", &(depth - 1))
                    .await?;
                return Ok(format!("client({depth}) <- {s}"));
            }
            Ok(format!("client({depth})"))
        }
    });
    r.add_prost(
        "client.Echo",
        "Echo",
        |_ctx: Context, req: EchoReq| async move {
            Ok(EchoResp {
                text: req.text,
                served_by: "client".into(),
            })
        },
    );
    r
}

struct Pair {
    server: RpcServer,
    client: RpcClient,
    cancelled: Arc<AtomicUsize>,
    client_hits: Arc<AtomicUsize>,
}

async fn pair_with(o: RpcOptions, addr: &str) -> Pair {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let server = RpcServer::start(
        server_router("server", cancelled.clone()),
        o.clone(),
        |cb| ServerBuilder::new(addr).serve_tcp(cb),
    )
    .await
    .unwrap();
    let client_hits = Arc::new(AtomicUsize::new(0));
    let a = server.local_addr().to_string();
    let client = RpcClient::start(client_router(client_hits.clone()), o, |cb| {
        ClientBuilder::new(a)
            .reconnect_interval(Duration::from_millis(20))
            .reconnect_attempts(0)
            .connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    Pair {
        server,
        client,
        cancelled,
        client_hits,
    }
}

async fn pair() -> Pair {
    pair_with(opts(), "127.0.0.1:0").await
}

async fn server_peer(p: &Pair) -> Peer {
    for _ in 0..500 {
        if let Some(peer) = p.server.peers().pop() {
            return peer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server never saw the client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_protobuf_calls_with_one_prost_service() {
    let p = pair().await;
    let peer = p.client.peer().unwrap();
    let req = EchoReq {
        text: "hi".into(),
        delay_ms: 0,
    };
    let r: EchoResp = peer.call_prost("test.Echo", "Echo", &req).await.unwrap();
    assert_eq!(r.text, "hi");
    let r: EchoResp = peer
        .call::<Prost, _, _>(
            "test.Echo",
            "Echo",
            &req,
            CallOptions::new().codec(CodecId::Json),
        )
        .await
        .unwrap();
    assert_eq!((r.text.as_str(), r.served_by.as_str()), ("hi", "server"));
    let sum: i64 = peer
        .call_json("test.Math", "Add", &Add { a: 2, b: 40 })
        .await
        .unwrap();
    assert_eq!(sum, 42);
    // the JSON body on the wire really is JSON
    let raw = peer
        .call_raw(
            "test.Math",
            "Add",
            CodecId::Json,
            bytes::Bytes::from_static(br#"{"a":1,"b":2}"#),
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(&raw[..], b"3");
    p.client.close().await;
    p.server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_with_random_delays_all_match() {
    let p = pair().await;
    let peer = p.client.peer().unwrap();
    let mut pending = Vec::new();
    for i in 0..1000u32 {
        let req = EchoReq {
            text: format!("call-{i}"),
            delay_ms: fastrand::u32(0..50),
        };
        let mut body = bytes::BytesMut::new();
        prost::Message::encode(&req, &mut body).unwrap();
        // the future form: sent now, awaited later
        pending.push((
            i,
            peer.start_call_raw(
                "test.Echo",
                "Echo",
                CodecId::Protobuf,
                body.freeze(),
                CallOptions::new(),
            )
            .await
            .unwrap(),
        ));
    }
    let results = futures_util::future::join_all(
        pending
            .into_iter()
            .map(|(i, c)| async move { (i, c.await) }),
    )
    .await;
    for (i, r) in results {
        let resp: EchoResp = prost::Message::decode(r.unwrap()).unwrap();
        assert_eq!(resp.text, format!("call-{i}"));
    }
    assert_eq!(peer.stats().pending, 0);
    p.client.close().await;
    p.server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_both_directions_at_once_on_one_connection() {
    let p = pair().await;
    let from_client = p.client.peer().unwrap();
    let from_server = server_peer(&p).await;
    let c2s = tokio::spawn(async move {
        for i in 0..300 {
            let sum: i64 = from_client
                .call_json("test.Math", "Add", &Add { a: i, b: 1 })
                .await
                .unwrap();
            assert_eq!(sum, i + 1);
        }
    });
    let s2c = tokio::spawn(async move {
        for i in 0..300 {
            let r: EchoResp = from_server
                .call_prost(
                    "client.Echo",
                    "Echo",
                    &EchoReq {
                        text: i.to_string(),
                        delay_ms: 0,
                    },
                )
                .await
                .unwrap();
            assert_eq!((r.text, r.served_by.as_str()), (i.to_string(), "client"));
        }
    });
    c2s.await.unwrap();
    s2c.await.unwrap();
    assert_eq!(p.server.peers().len(), 1, "all on one connection");
    p.client.close().await;
    p.server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_call_backs_in_both_directions_do_not_deadlock() {
    let p = pair().await;
    let peer = p.client.peer().unwrap();
    // client -> server.CallBack(2) -> client.Name(2) -> server.CallBack(1) -> client.Name(1)
    //   -> server.CallBack(0) -> client.Name(0)
    let r: String = tokio::time::timeout(
        Duration::from_secs(5),
        peer.call_json("test.Back", "CallBack", &2u32),
    )
    .await
    .expect("nested calls deadlocked")
    .unwrap();
    assert_eq!(
        r,
        "server saw client(2) <- server saw client(1) <- server saw client(0)"
    );
    assert_eq!(p.client_hits.load(Ordering::SeqCst), 3);
    p.client.close().await;
    p.server.close().await;
}

async fn expect_status<T: std::fmt::Debug>(r: Result<T, RpcError>, status: Status, text: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.status, status, "{e}");
    assert!(e.message.contains(text), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_reaches_the_caller_typed_and_the_connection_survives() {
    let p = pair_with(opts().max_inflight(2), "127.0.0.1:0").await;
    let peer = p.client.peer().unwrap();
    let add = Add { a: 1, b: 2 };
    expect_status(
        peer.call_json::<_, i64>("no.Such", "Add", &add).await,
        Status::UnknownService,
        "no.Such",
    )
    .await;
    expect_status(
        peer.call_json::<_, i64>("test.Math", "Nope", &add).await,
        Status::UnknownMethod,
        "Nope",
    )
    .await;
    expect_status(
        peer.call_json::<_, i64>("test.Math", "Add", &"not an Add".to_string())
            .await,
        Status::BadRequest,
        "JSON decode",
    )
    .await;
    expect_status(
        peer.call_json::<_, i64>("test.Math", "Fail", &add).await,
        Status::HandlerError,
        "no sums today",
    )
    .await;
    expect_status(
        peer.call::<Json, _, i64>(
            "test.Math",
            "Add",
            &add,
            CallOptions::new().codec(CodecId::Other(9)),
        )
        .await,
        Status::UnsupportedCodec,
        "not supported",
    )
    .await;
    // overload: two slow calls fill the limit, the third is refused at once
    let slow1 = peer
        .start_call_raw(
            "test.Math",
            "Slow",
            CodecId::Json,
            "400".into(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let slow2 = peer
        .start_call_raw(
            "test.Math",
            "Slow",
            CodecId::Json,
            "400".into(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    // window: the server announced 2 calls; a third waits here for room instead of being
    // refused, and goes once one of the slow calls is answered
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = tokio::spawn({
        let peer = peer.clone();
        async move {
            peer.call_json::<_, i64>("test.Math", "Add", &Add { a: 1, b: 2 })
                .await
        }
    });
    for _ in 0..300 {
        if peer.stats().waiting == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(peer.stats().waiting, 1, "the third call waits for window");
    assert!(!third.is_finished());
    assert_eq!(&slow1.await.unwrap()[..], b"400");
    assert_eq!(third.await.unwrap().unwrap(), 3);
    assert_eq!(&slow2.await.unwrap()[..], b"400");
    assert_eq!(
        server_peer(&p).await.stats().refused,
        0,
        "nothing over the window was sent"
    );
    // deadline exceeded on the callee: the deadline travels with the request
    let slow: Result<u64, _> = peer
        .call::<Json, _, _>(
            "test.Math",
            "Slow",
            &2000u64,
            CallOptions::new().timeout(Duration::from_millis(300)),
        )
        .await;
    assert!(matches!(
        slow.unwrap_err().status,
        Status::Timeout | Status::DeadlineExceeded
    ));
    // and after all that, the same connection still works
    let sum: i64 = peer.call_json("test.Math", "Add", &add).await.unwrap();
    assert_eq!(sum, 3);
    assert_eq!(p.server.peers().len(), 1);
    assert_eq!(p.client.peers()[0].id(), peer.id());
    p.client.close().await;
    expect_status(
        peer.call_json::<_, i64>("test.Math", "Add", &add).await,
        Status::ConnectionClosed,
        "closed",
    )
    .await;
    p.server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_deadline_reach_the_handler() {
    let p = pair().await;
    let peer = p.client.peer().unwrap();
    let r: (Option<String>, bool) = peer
        .call::<Json, _, _>(
            "test.Math",
            "Meta",
            &(),
            CallOptions::new().meta("user", "ann"),
        )
        .await
        .unwrap();
    assert_eq!(r, (Some("ann".to_string()), true));
    p.client.close().await;
    p.server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_dropped_calls_cancel_the_callee_and_late_replies_are_counted() {
    let p = pair().await;
    let peer = p.client.peer().unwrap();
    // timeout: the caller gets TIMEOUT, the callee's handler is cancelled
    let r: Result<u64, _> = peer
        .call::<Json, _, _>(
            "test.Math",
            "Slow",
            &1000u64,
            CallOptions::new().timeout(Duration::from_millis(100)),
        )
        .await;
    // Both clocks run out together: the caller's own timer, or the callee's answer, wins.
    let status = r.unwrap_err().status;
    assert!(
        matches!(status, Status::Timeout | Status::DeadlineExceeded),
        "{status:?}"
    );
    let cancelled = p.cancelled.clone();
    let wait = |n: usize| {
        let c = cancelled.clone();
        async move {
            for _ in 0..300 {
                if c.load(Ordering::SeqCst) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("handler not cancelled");
        }
    };
    wait(1).await;
    // dropping the future cancels too
    let call = peer
        .start_call_raw(
            "test.Math",
            "Slow",
            CodecId::Json,
            "1000".into(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(call);
    wait(2).await;
    assert_eq!(peer.stats().pending, 0);
    let server_side = server_peer(&p).await;
    assert_eq!(
        server_side.stats().inflight,
        0,
        "cancelled handlers are no longer in flight"
    );

    // a late reply: a handler that blocks cannot be stopped, so its reply comes after the
    // caller gave up; it is dropped and counted
    let r: Result<u64, _> = peer
        .call::<Json, _, _>(
            "test.Math",
            "Block",
            &300u64,
            CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await;
    assert_eq!(r.unwrap_err().status, Status::Timeout);
    // Each call given up on is answered exactly once after the caller left (CANCELLED, or
    // the handler's own late answer): a late reply each, with its window. The first call's
    // answer came in time instead when the callee's DEADLINE_EXCEEDED beat the caller's timer.
    let late = if status == Status::Timeout { 3 } else { 2 };
    for _ in 0..300 {
        if peer.stats().late_replies == late {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(peer.stats().late_replies, late);
    let sum: i64 = peer
        .call_json("test.Math", "Add", &Add { a: 1, b: 1 })
        .await
        .unwrap();
    assert_eq!(sum, 2, "the connection is still fine");
    p.client.close().await;
    p.server.close().await;
}

// Heartbeats (a silent peer is closed, a live one stays): tests/rpc_transports.rs, over TCP,
// a Unix socket and in-memory connections alike.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_call_fails_every_pending_call_fast_then_the_client_recovers() {
    let p = pair().await;
    let addr = p.server.local_addr().to_string();
    let peer = p.client.peer().unwrap();
    let mut calls = Vec::new();
    for _ in 0..200 {
        calls.push(
            peer.start_call_raw(
                "test.Math",
                "Slow",
                CodecId::Json,
                "3000".into(),
                CallOptions::new(),
            )
            .await
            .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    p.server.close().await;
    for c in calls {
        let e = c.await.unwrap_err();
        assert_eq!(e.status, Status::ConnectionClosed, "{e}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "pending calls failed only after {:?}",
        t.elapsed()
    );
    // The server comes back on the same address; the client reconnects by itself.
    let back = pair_server_again(&addr).await;
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(peer) = p.client.peer()
            && let Ok(sum) = peer
                .call_json::<_, i64>("test.Math", "Add", &Add { a: 5, b: 5 })
                .await
        {
            assert_eq!(sum, 10);
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ok, "client never recovered");
    p.client.close().await;
    back.close().await;
}

async fn pair_server_again(addr: &str) -> RpcServer {
    RpcServer::start(server_router("again", Arc::default()), opts(), |cb| {
        ServerBuilder::new(addr).serve_tcp(cb)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_describes_the_services_and_can_be_turned_off() {
    let p = pair().await;
    let peer = p.client.peer().unwrap();
    let v: serde_json::Value = peer
        .call_json("getty.Reflection", "Describe", &())
        .await
        .unwrap();
    let math = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "test.Math")
        .expect("test.Math listed");
    let add = math["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Add")
        .unwrap();
    assert_eq!(add["request_type"], "Add");
    assert_eq!(add["reply_type"], "i64");
    assert_eq!(add["codecs"], serde_json::json!(["json"]));
    let echo = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "test.Echo")
        .unwrap();
    assert_eq!(
        echo["methods"][0]["codecs"],
        serde_json::json!(["protobuf", "json"])
    );
    // The server can ask the client the same question.
    let sp = server_peer(&p).await;
    let v: serde_json::Value = sp
        .call_json("getty.Reflection", "Describe", &())
        .await
        .unwrap();
    assert!(v.to_string().contains("client.Info"));
    p.client.close().await;
    p.server.close().await;

    let off = RpcServer::start(Router::new(), opts().reflection(false), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let a = off.local_addr().to_string();
    let c = RpcClient::start(Router::new(), opts(), |cb| {
        ClientBuilder::new(a).connect_tcp(cb)
    })
    .unwrap();
    c.ready().await.unwrap();
    let e = c
        .peer()
        .unwrap()
        .call_json::<_, serde_json::Value>("getty.Reflection", "Describe", &())
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::UnknownService);
    c.close().await;
    off.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_cross_tcp_and_websocket_intact() {
    for ws in [false, true] {
        let mut r = Router::new();
        r.add_raw(
            "big.Echo",
            getty::rpc::MethodInfo {
                name: "Echo".into(),
                request_type: "bytes".into(),
                reply_type: "bytes".into(),
                one_way: false,
                codecs: vec![CodecId::Protobuf],
                stream: None,
            },
            |_ctx: Context, body: bytes::Bytes| async move { Ok(body) },
        );
        let server = RpcServer::start(r, opts(), |cb| async move {
            let b = ServerBuilder::new("127.0.0.1:0");
            if ws {
                b.serve_ws("/rpc", cb).await
            } else {
                b.serve_tcp(cb).await
            }
        })
        .await
        .unwrap();
        let addr = if ws {
            format!("ws://{}/rpc", server.local_addr())
        } else {
            server.local_addr().to_string()
        };
        let client = RpcClient::start(Router::new(), opts(), |cb| {
            let b = ClientBuilder::new(addr);
            if ws {
                b.connect_ws(cb)
            } else {
                b.connect_tcp(cb)
            }
        })
        .unwrap();
        client.ready().await.unwrap();
        let peer = client.peer().unwrap();
        for size in [100, 2047, 2048, 100_000, 1 << 20] {
            let body: bytes::Bytes = (0..size)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>()
                .into();
            let got = peer
                .call_raw(
                    "big.Echo",
                    "Echo",
                    CodecId::Protobuf,
                    body.clone(),
                    CallOptions::new(),
                )
                .await
                .unwrap();
            assert_eq!(
                got,
                body,
                "size {size} over {}",
                if ws { "ws" } else { "tcp" }
            );
        }
        client.close().await;
        server.close().await;
    }
}
