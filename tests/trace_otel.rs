//! getty-rpc's trace context through OpenTelemetry (feature `tracing-opentelemetry`): over
//! real loopback TCP, the spans of a call, of its nested call back to the caller and of the
//! reply are one trace, each callee's span the child of its caller's; a stream's handler
//! continues its opener's trace too.

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::middleware::trace::{TraceContext, TracePropagation};
use getty::rpc::{Context, Router, RpcClient, RpcError, RpcOptions, RpcServer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_across_a_call_a_nested_call_back_and_the_reply() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let opts = || RpcOptions::default().layer(TracePropagation);
    let mut sr = Router::new();
    sr.add_json("t.S", "Hello", |ctx: Context, _: ()| async move {
        let inner = TraceContext::current().map(|c| c.trace_id_hex());
        let back: Option<String> = ctx.peer().call_json("t.C", "Back", &()).await?;
        Ok::<_, RpcError>((inner, back))
    });
    sr.add_server_stream::<getty::rpc::Json, (), Option<String>, _, _>(
        "t.S",
        "Items",
        |_: Context, _: (), mut out: getty::rpc::Sender<getty::rpc::Json, Option<String>>| async move {
            out.send(&TraceContext::current().map(|c| c.trace_id_hex())).await
        },
    );
    let server = RpcServer::start(sr, opts(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let mut cr = Router::new();
    cr.add_json("t.C", "Back", |_: Context, _: ()| async move {
        Ok::<_, RpcError>(TraceContext::current().map(|c| c.trace_id_hex()))
    });
    let addr = server.local_addr().to_string();
    let client =
        RpcClient::start(cr, opts(), |cb| ClientBuilder::new(addr).connect_tcp(cb)).unwrap();
    client.ready().await.unwrap();
    let peer = client.peer().unwrap();

    let root = tracing::info_span!("app.request");
    let (root_trace, (s, c)) = async {
        let t = TraceContext::current().unwrap().trace_id_hex();
        let r: (Option<String>, Option<String>) =
            peer.call_json("t.S", "Hello", &()).await.unwrap();
        (t, r)
    }
    .instrument(root)
    .await;
    // A stream opened in another trace: its handler runs in that one.
    let (stream_trace, item) = async {
        use futures_util::StreamExt;
        let t = TraceContext::current().unwrap().trace_id_hex();
        let opts = getty::rpc::CallOptions::new();
        let mut rx = peer
            .server_stream::<getty::rpc::Json, (), Option<String>>("t.S", "Items", &(), opts)
            .await
            .unwrap();
        let item = rx.next().await.unwrap().unwrap();
        assert!(rx.next().await.is_none());
        (t, item)
    }
    .instrument(tracing::info_span!("app.stream"))
    .await;
    assert_ne!(stream_trace, root_trace);
    assert_eq!(
        item.as_deref(),
        Some(stream_trace.as_str()),
        "the stream's handler"
    );
    // The opener's span ends on a task of its own once the end was read.
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let done = |s: &opentelemetry_sdk::trace::SpanData| {
            s.name == "rpc.client" && s.attributes.iter().any(|kv| kv.value.as_str() == "Items")
        };
        while !exporter.get_finished_spans().unwrap().iter().any(done) {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the stream opener's span ended");
    assert_eq!(
        s.as_deref(),
        Some(root_trace.as_str()),
        "the server's handler"
    );
    assert_eq!(
        c.as_deref(),
        Some(root_trace.as_str()),
        "the nested call's handler"
    );

    client.close().await;
    server.close().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let by = |name: &str, method: &str| {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && s.attributes
                        .iter()
                        .any(|kv| kv.key.as_str() == "method" && kv.value.as_str() == method)
            })
            .unwrap_or_else(|| panic!("no {name} span of {method}: {spans:#?}"))
    };
    let app = spans.iter().find(|s| s.name == "app.request").unwrap();
    let call = by("rpc.client", "Hello");
    let served = by("rpc.server", "Hello");
    let nested = by("rpc.client", "Back");
    let nested_served = by("rpc.server", "Back");
    let trace = app.span_context.trace_id();
    assert_eq!(format!("{trace}"), root_trace);
    for s in [call, served, nested, nested_served] {
        assert_eq!(
            s.span_context.trace_id(),
            trace,
            "{} {:?}",
            s.name,
            s.attributes
        );
    }
    let stream_served = by("rpc.server", "Items");
    assert_eq!(
        format!("{}", stream_served.span_context.trace_id()),
        stream_trace
    );
    assert_eq!(
        stream_served.parent_span_id,
        by("rpc.client", "Items").span_context.span_id(),
        "the stream's opener is the remote parent"
    );
    // Each callee's span descends from its caller's: app → call → served → nested → served
    // (getty's own `rpc.call` spans may sit between a caller's span and its call's).
    let descends = |child: &opentelemetry_sdk::trace::SpanData,
                    from: &opentelemetry_sdk::trace::SpanData| {
        let mut at = child.parent_span_id;
        for _ in 0..8 {
            if at == from.span_context.span_id() {
                return true;
            }
            match spans.iter().find(|s| s.span_context.span_id() == at) {
                Some(p) => at = p.parent_span_id,
                None => return false,
            }
        }
        false
    };
    assert!(descends(call, app));
    assert_eq!(
        served.parent_span_id,
        call.span_context.span_id(),
        "the remote parent"
    );
    assert!(descends(nested, served));
    assert_eq!(nested_served.parent_span_id, nested.span_context.span_id());
    // The reply ends the caller's span after the callee's (the reply is in the trace).
    assert!(call.end_time >= served.end_time);
}
