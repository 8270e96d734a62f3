//! W3C trace context over real loopback TCP: the caller's traceparent travels in metadata on
//! every call in both directions and the callee continues the caller's trace, across a call,
//! its nested call back to the caller, and the reply.

// With `tracing-opentelemetry` the context is the OpenTelemetry one (tests/trace_otel.rs).
#![cfg(not(feature = "tracing-opentelemetry"))]

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::middleware::trace::{TRACEPARENT, TraceContext, TracePropagation};
use getty::rpc::{Context, Router, RpcClient, RpcError, RpcOptions, RpcServer};
use serde::{Deserialize, Serialize};

/// What a handler saw: the traceparent it received and its own (current) context.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Seen {
    received: TraceContextJson,
    current: TraceContextJson,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct TraceContextJson {
    trace_id: String,
    span_id: String,
}

impl From<&TraceContext> for TraceContextJson {
    fn from(c: &TraceContext) -> Self {
        TraceContextJson {
            trace_id: c.trace_id_hex(),
            span_id: c.span_id_hex(),
        }
    }
}

fn seen(ctx: &Context) -> Seen {
    let received =
        TraceContext::parse(ctx.meta(TRACEPARENT).expect("a traceparent came"), None).unwrap();
    let current = TraceContext::current().expect("the handler runs in a trace");
    Seen {
        received: (&received).into(),
        current: (&current).into(),
    }
}

#[tokio::test]
async fn one_trace_across_a_call_its_nested_call_back_and_the_reply() {
    let mut sr = Router::new();
    sr.add_json("t.S", "Who", |ctx: Context, _: ()| async move {
        let mine = seen(&ctx);
        let back: Seen = ctx.peer().call_json("t.C", "Who", &()).await?;
        Ok::<_, RpcError>((mine, back))
    });
    let opts = || RpcOptions::default().layer(TracePropagation);
    let server = RpcServer::start(sr, opts(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let mut cr = Router::new();
    cr.add_json("t.C", "Who", |ctx: Context, _: ()| async move {
        Ok::<_, RpcError>(seen(&ctx))
    });
    let addr = server.local_addr().to_string();
    let client =
        RpcClient::start(cr, opts(), |cb| ClientBuilder::new(addr).connect_tcp(cb)).unwrap();
    client.ready().await.unwrap();
    let peer = client.peer().unwrap();

    let root = TraceContext::new_root();
    let (after, (s, c)) = root
        .clone()
        .scope(async {
            let r: (Seen, Seen) = peer.call_json("t.S", "Who", &()).await.unwrap();
            (TraceContext::current(), r)
        })
        .await;
    let trace = root.trace_id_hex();
    // The server continues the client's trace, as a child of the client's call span.
    assert_eq!(s.received.trace_id, trace);
    assert_ne!(
        s.received.span_id,
        root.span_id_hex(),
        "the call has a span of its own"
    );
    assert_eq!(s.current.trace_id, trace);
    assert_ne!(s.current.span_id, s.received.span_id);
    // The nested call back (server → client) carries the same trace, child of the server's.
    assert_eq!(c.received.trace_id, trace);
    assert_eq!(c.current.trace_id, trace);
    assert_ne!(
        c.received.span_id, s.current.span_id,
        "the nested call's own span"
    );
    // The reply comes back into the caller's trace.
    assert_eq!(after, Some(root));

    // The server calling first: a new trace it starts travels to the client.
    let sp = server.peers().pop().unwrap();
    let r: Seen = sp.call_json("t.C", "Who", &()).await.unwrap();
    assert_eq!(r.received.trace_id, r.current.trace_id);
    assert_ne!(r.received.trace_id, trace, "not in the earlier trace");

    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_callee_without_a_traceparent_starts_a_trace_and_bad_ones_are_not_followed() {
    let mut sr = Router::new();
    sr.add_json("t.S", "Trace", |_: Context, _: ()| async move {
        Ok::<_, RpcError>(TraceContext::current().map(|c| c.trace_id_hex()))
    });
    let server = RpcServer::start(sr, RpcOptions::default().layer(TracePropagation), |cb| {
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
    let bad = "00-00000000000000000000000000000000-b7ad6b7169203331-01";
    let opts = getty::rpc::CallOptions::new().meta(TRACEPARENT, bad);
    let t: Option<String> = peer
        .call::<getty::rpc::Json, _, _>("t.S", "Trace", &(), opts)
        .await
        .unwrap();
    let t = t.expect("the server started its own trace");
    assert_eq!(t.len(), 32);
    assert_ne!(t, "0".repeat(32));
    client.close().await;
    server.close().await;
}
