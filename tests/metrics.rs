//! Metrics over real loopback TCP: a known workload through the `Metrics` layer on both ends,
//! scraped over HTTP from a Prometheus endpoint (`metrics-exporter-prometheus`), shows the
//! exact counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::middleware::metrics::Metrics;
use getty::rpc::{CallOptions, Context, Json, Router, RpcClient, RpcError, RpcOptions, RpcServer};

#[path = "common/prometheus.rs"]
mod prometheus;
use prometheus::{Sample, install_exporter, matching, parse, scrape_text as scrape};

/// The value of the one sample of `name` whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let hits = matching(samples, name, want);
    assert_eq!(hits.len(), 1, "{name} {want:?}: {hits:?}");
    hits[0].2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_endpoint_shows_the_exact_counts_of_a_known_workload() {
    let addr = install_exporter();

    let notes = Arc::new(AtomicUsize::new(0));
    let mut r = Router::new();
    r.add_json("t.S", "Echo", |_: Context, s: String| async move {
        Ok::<_, RpcError>(s)
    });
    r.add_json("t.S", "Fail", |_: Context, _: ()| async move {
        Err::<(), _>(RpcError::handler("no"))
    });
    let n = notes.clone();
    r.add_one_way::<Json, (), _, _>("t.S", "Note", move |_: Context, _: ()| {
        n.fetch_add(1, Ordering::SeqCst);
        async {}
    });
    let server = RpcServer::start(r, RpcOptions::default().inbound_layer(Metrics), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let saddr = server.local_addr().to_string();
    let client = RpcClient::start(
        Router::new(),
        RpcOptions::default().outbound_layer(Metrics),
        |cb| ClientBuilder::new(saddr).connect_tcp(cb),
    )
    .unwrap();
    client.ready().await.unwrap();
    let peer = client.peer().unwrap();

    // The workload: 5 OK calls, 2 failing ones, 1 one-way.
    for i in 0..5 {
        let v: String = peer
            .call_json("t.S", "Echo", &format!("m{i}"))
            .await
            .unwrap();
        assert_eq!(v, format!("m{i}"));
    }
    for _ in 0..2 {
        peer.call_json::<(), ()>("t.S", "Fail", &())
            .await
            .unwrap_err();
    }
    peer.notify::<Json, ()>("t.S", "Note", &(), CallOptions::new())
        .await
        .unwrap();
    // The server's layer counts the one-way as finished right after its handler ran.
    tokio::time::timeout(Duration::from_secs(5), async {
        while notes.load(Ordering::SeqCst) == 0
            || !scrape(addr)
                .await
                .contains("method=\"Note\",direction=\"inbound\",status=\"OK\"")
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the one-way call was counted");
    // Connection gauges are published on demand (an application calls this from a timer).
    for p in server.peers().iter().chain(client.peers().iter()) {
        getty::rpc::middleware::metrics::record_connection(p);
    }
    let m = parse(&scrape(addr).await);
    for dir in ["inbound", "outbound"] {
        let l = |method| [("service", "t.S"), ("method", method), ("direction", dir)];
        assert_eq!(
            value(&m, "getty_rpc_calls_started_total", &l("Echo")),
            5.0,
            "{dir}"
        );
        assert_eq!(value(&m, "getty_rpc_calls_started_total", &l("Fail")), 2.0);
        assert_eq!(value(&m, "getty_rpc_calls_started_total", &l("Note")), 1.0);
        let f = |method, status| {
            [
                ("service", "t.S"),
                ("method", method),
                ("direction", dir),
                ("status", status),
            ]
        };
        assert_eq!(
            value(&m, "getty_rpc_calls_finished_total", &f("Echo", "OK")),
            5.0
        );
        assert_eq!(
            value(
                &m,
                "getty_rpc_calls_finished_total",
                &f("Fail", "HANDLER_ERROR")
            ),
            2.0
        );
        assert_eq!(
            value(&m, "getty_rpc_calls_finished_total", &f("Note", "OK")),
            1.0
        );
        assert_eq!(
            value(&m, "getty_rpc_call_duration_seconds_count", &l("Echo")),
            5.0
        );
        assert_eq!(value(&m, "getty_rpc_calls_in_flight", &l("Echo")), 0.0);
    }
    // The server's connection: it read the client's Hello and the 8 calls.
    let sid = server.peers()[0].id().to_string();
    let conn = [("peer", sid.as_str())];
    assert_eq!(
        value(&m, "getty_rpc_connection_frames_in_total", &conn),
        9.0
    );
    assert!(value(&m, "getty_rpc_connection_bytes_in_total", &conn) > 9.0 * 28.0);
    assert_eq!(value(&m, "getty_rpc_connection_serving", &conn), 0.0);
    // The client's: it wrote its Hello and the 8 calls.
    let cid = peer.id().to_string();
    let conn = [("peer", cid.as_str())];
    assert_eq!(
        value(&m, "getty_rpc_connection_frames_out_total", &conn),
        9.0
    );
    assert_eq!(value(&m, "getty_rpc_connection_pending_calls", &conn), 0.0);

    client.close().await;
    server.close().await;
}
