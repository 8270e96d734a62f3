//! Streams in the reverse direction: the *server* opens streams to a client it is connected
//! to. The client (say, a branch office behind a NAT that only dials out) serves
//! `feed.PriceFeed` on its own connection; as soon as it connects, the server opens a `Watch`
//! stream to it and reads the client's local prices, then a bidirectional `Chat`, all on the
//! connection the client opened.
//!
//! ```text
//! cargo run --example server_push
//! ```

#[path = "support/feed.rs"]
mod feed;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{OnPeer, Peer, Router, RpcClient, RpcError, RpcOptions, RpcServer};
use getty_proto::feed::{Line, PriceFeedClient, PriceFeedServer, WatchRequest};
use tokio::sync::mpsc;

use feed::{Market, money};

/// What the server does with each client that connects: streams from it, then with it.
async fn visit(peer: Peer) -> Result<(), RpcError> {
    let branch = PriceFeedClient::new(peer);
    println!("server: a client connected; opening a Watch stream to it");
    let mut prices = branch
        .watch(&WatchRequest {
            symbols: vec!["LOCAL-A".into(), "LOCAL-B".into()],
            count: 4,
        })
        .await?;
    while let Some(p) = prices.next().await {
        let p = p?;
        println!(
            "server: from the client: #{} {} {}",
            p.seq,
            p.symbol,
            money(p.milli)
        );
    }
    println!("server: opening a Chat stream to the client");
    let (mut say, mut heard) = branch.chat().await?;
    for text in ["close the books", "send the report"] {
        say.send(&Line {
            who: "server".into(),
            text: text.into(),
        })
        .await?;
        if let Some(l) = heard.next().await {
            let l = l?;
            println!("server: {} answered: {}", l.who, l.text);
        }
    }
    say.finish();
    // The client's handler ends the stream once it sees the half-close.
    while let Some(l) = heard.next().await {
        l?;
    }
    println!("server: done with the client");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let on_peer: OnPeer = Arc::new(move |peer: &Peer| {
        let (peer, done) = (peer.clone(), done_tx.clone());
        tokio::spawn(async move {
            let _ = done.send(visit(peer).await);
        });
    });
    // The server serves nothing itself here: it only calls its clients.
    let srv = RpcServer::start_with(Router::new(), RpcOptions::default(), Some(on_peer), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await?;
    let addr = srv.local_addr().to_string();
    println!("server: listening on {addr}");

    // The client serves the feed on the connection it opens.
    let mut r = Router::new();
    PriceFeedServer::register(
        &mut r,
        Arc::new(Market {
            name: "branch",
            tick: Duration::from_millis(30),
        }),
    );
    let client = RpcClient::start(r, RpcOptions::default(), |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })?;
    client.ready().await?;
    println!("client: connected; serving feed.PriceFeed to the server");

    let outcome = tokio::time::timeout(Duration::from_secs(20), done_rx.recv())
        .await?
        .ok_or("the server's task ended without an outcome")?;
    outcome?;
    client.close().await;
    srv.close().await;
    Ok(())
}
