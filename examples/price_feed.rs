//! A price feed the server streams to its clients (`feed.PriceFeed/Watch`, a server stream
//! generated from `proto/feed.proto`): two clients watch different symbols at once, each price
//! arriving as the server sends it; a third watches an endless feed and stops it by dropping
//! the stream, which cancels the producer on the server.
//!
//! ```text
//! cargo run --example price_feed                       # server and clients in one process
//! cargo run --example price_feed -- server 127.0.0.1:7200
//! getty call 127.0.0.1:7200 feed.PriceFeed.Watch '{"symbols":["ACME"]}'   # Ctrl-C stops it
//! ```

#[path = "support/feed.rs"]
mod feed;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{Router, RpcClient, RpcOptions, RpcServer};
use getty_proto::feed::{PriceFeedClient, PriceFeedServer, WatchRequest};

use feed::{Market, money};

async fn server(addr: &str, tick: Duration) -> Result<RpcServer, Box<dyn std::error::Error>> {
    let mut r = Router::new();
    PriceFeedServer::register(
        &mut r,
        Arc::new(Market {
            name: "server",
            tick,
        }),
    );
    let a = addr.to_string();
    Ok(RpcServer::start(r, RpcOptions::default(), |cb| {
        ServerBuilder::new(a).serve_tcp(cb)
    })
    .await?)
}

async fn connect(addr: &str) -> Result<(RpcClient, PriceFeedClient), Box<dyn std::error::Error>> {
    let a = addr.to_string();
    let c = RpcClient::start(Router::new(), RpcOptions::default(), |cb| {
        ClientBuilder::new(a).connect_tcp(cb)
    })?;
    c.ready().await?;
    let stub = PriceFeedClient::new(c.peer()?);
    Ok((c, stub))
}

/// One client watching `count` prices of `symbols`.
async fn watcher(
    addr: String,
    who: &'static str,
    symbols: &[&str],
    count: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let (c, stub) = connect(&addr).await?;
    let mut prices = stub
        .watch(&WatchRequest {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            count,
        })
        .await?;
    let mut n = 0;
    while let Some(p) = prices.next().await {
        let p = p?;
        println!("{who}: #{} {} {}", p.seq, p.symbol, money(p.milli));
        n += 1;
    }
    println!("{who}: the feed ended after {n} prices");
    c.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("server") {
        let addr = args.get(1).map_or("127.0.0.1:7200", String::as_str);
        let srv = server(addr, Duration::from_millis(500)).await?;
        println!(
            "serving feed.PriceFeed on {} (Ctrl-C stops)",
            srv.local_addr()
        );
        tokio::signal::ctrl_c().await?;
        srv.close().await;
        return Ok(());
    }

    let srv = server("127.0.0.1:0", Duration::from_millis(40)).await?;
    let addr = srv.local_addr().to_string();
    println!("server: feed.PriceFeed on {addr}");
    // Two watchers at once, each on its own connection.
    let (a, b) = tokio::join!(
        watcher(addr.clone(), "alice", &["ACME", "INITECH"], 6),
        watcher(addr.clone(), "bob", &["GLOBEX"], 4),
    );
    a?;
    b?;

    // An endless feed (count 0), stopped by dropping the stream after three prices.
    let (c, stub) = connect(&addr).await?;
    let mut prices = stub
        .watch(&WatchRequest {
            symbols: vec!["HOOLI".into()],
            count: 0,
        })
        .await?;
    for _ in 0..3 {
        if let Some(p) = prices.next().await {
            let p = p?;
            println!("carol: #{} {} {}", p.seq, p.symbol, money(p.milli));
        }
    }
    drop(prices);
    println!("carol: dropped the stream; the server's producer is cancelled");
    // The same connection goes on: a new stream after the cancelled one.
    let mut again = stub
        .watch(&WatchRequest {
            symbols: vec!["HOOLI".into()],
            count: 1,
        })
        .await?;
    if let Some(p) = again.next().await {
        println!("carol: and one more on a new stream: {}", money(p?.milli));
    }
    c.close().await;
    srv.close().await;
    Ok(())
}
