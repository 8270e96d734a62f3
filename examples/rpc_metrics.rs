//! getty-rpc metrics on a Prometheus endpoint: a server and a client with the `Metrics` layer
//! (and trace propagation), a short workload, then the scrape of `/metrics`.
//!
//! `cargo run --example rpc_metrics` prints the scrape and exits;
//! `cargo run --example rpc_metrics -- --serve 127.0.0.1:9464` keeps the endpoint up (Ctrl-C
//! stops it) for `curl http://127.0.0.1:9464/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::middleware::TracePropagation;
use getty::rpc::middleware::metrics::{Metrics, record_connection};
use getty::rpc::{Context, Router, RpcClient, RpcError, RpcOptions, RpcServer};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve = args.first().map(String::as_str) == Some("--serve");
    let addr: SocketAddr = args
        .get(1)
        .map_or("127.0.0.1:9464", String::as_str)
        .parse()?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;

    let opts = || RpcOptions::default().layer(TracePropagation).layer(Metrics);
    let mut r = Router::new();
    r.add_json(
        "demo.Greeter",
        "Hello",
        |_: Context, name: String| async move { Ok::<_, RpcError>(format!("hello {name}")) },
    );
    let server = RpcServer::start(r, opts(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await?;
    let saddr = server.local_addr().to_string();
    let client = RpcClient::start(Router::new(), opts(), |cb| {
        ClientBuilder::new(saddr).connect_tcp(cb)
    })?;
    client.ready().await?;
    let peer = client.peer()?;
    for name in ["ann", "bob", "cy"] {
        let reply: String = peer
            .call_json("demo.Greeter", "Hello", &name.to_string())
            .await?;
        println!("{reply}");
    }
    for p in server.peers().iter().chain(client.peers().iter()) {
        record_connection(p);
    }

    if serve {
        println!("metrics on http://{addr}/metrics");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    for p in server.peers().iter().chain(client.peers().iter()) {
                        record_connection(p);
                    }
                }
            }
        }
    } else {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        println!(
            "{}",
            out.split_once("\r\n\r\n").map_or(out.as_str(), |(_, b)| b)
        );
    }
    client.close().await;
    server.close().await;
    Ok(())
}
