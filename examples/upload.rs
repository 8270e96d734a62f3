//! A client that streams an upload (`feed.PriceFeed/Upload`, a client stream generated from
//! `proto/feed.proto`): 1 MiB in 16 KiB chunks, each `send` waiting for the server's credit
//! (a small window here, so the client can never run ahead of the server by more than 8
//! chunks), then `finish()` and the server's one reply, checked against the client's own sum.
//!
//! ```text
//! cargo run --example upload
//! ```

#[path = "support/feed.rs"]
mod feed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{Router, RpcClient, RpcOptions, RpcServer};
use getty_proto::feed::{Chunk, PriceFeedClient, PriceFeedServer};

use feed::{FNV_START, Market, fnv1a};

const CHUNK: usize = 16 * 1024;
const FILE: usize = 1024 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The receiver grants this many items per stream before it must consume some.
    let opts = RpcOptions::default().stream_window_items(8);
    let mut r = Router::new();
    PriceFeedServer::register(
        &mut r,
        Arc::new(Market {
            name: "server",
            tick: Duration::ZERO,
        }),
    );
    let srv = RpcServer::start(r, opts.clone(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await?;
    let addr = srv.local_addr().to_string();
    let c = RpcClient::start(Router::new(), opts, |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })?;
    c.ready().await?;

    // A file's worth of bytes (a pattern, so both ends can check them).
    let file: Vec<u8> = (0..FILE).map(|i| (i * 31 % 251) as u8).collect();
    let want = fnv1a(FNV_START, &file);

    let started = Instant::now();
    let (mut chunks, reply) = PriceFeedClient::new(c.peer()?).upload().await?;
    for (i, part) in file.chunks(CHUNK).enumerate() {
        chunks
            .send(&Chunk {
                name: "backup.bin".into(),
                data: part.to_vec(),
            })
            .await?;
        if i % 16 == 15 {
            println!("client: sent {} KiB", (i + 1) * CHUNK / 1024);
        }
    }
    // Half-closes the stream: the server's handler sees the end and answers.
    chunks.finish();
    let summary = reply.reply().await?;
    println!(
        "client: the server got {:?}: {} chunks, {} bytes, checksum {:016x} ({}), in {:?}",
        summary.name,
        summary.chunks,
        summary.bytes,
        summary.checksum,
        if summary.checksum == want {
            "matches"
        } else {
            "DIFFERS"
        },
        started.elapsed()
    );
    assert_eq!(summary.bytes, FILE as u64);
    assert_eq!(summary.checksum, want);
    c.close().await;
    srv.close().await;
    Ok(())
}
