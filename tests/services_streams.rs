//! Generated streaming services over real loopback sockets: getty-proto's `feed.PriceFeed`
//! (from `proto/feed.proto` by getty-rpc-build) and `#[service]` macro services with stream
//! methods (serde types over JSON, and prost messages over Protobuf and JSON), each served by both ends of one TCP connection, each kind (server, client,
//! bidirectional stream) opened by the client and by the server, in Protobuf and JSON; a
//! handler's error ends its stream at the caller; dropping the receiver cancels the producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod common;
#[path = "../examples/support/feed.rs"]
mod market;

use common::server_peer;
use futures_util::StreamExt;
use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{
    CallOptions, CodecId, Context, Json, Prost, Receiver, Router, RpcClient, RpcError, RpcOptions,
    RpcServer, Sender, Status,
};
use getty_proto::feed::{
    self, Chunk, Line, Price, PriceFeedClient, PriceFeedServer, UploadSummary, WatchRequest,
};
use market::{FNV_START, Market, fnv1a};

/// The feed one side serves: the examples' market (whose name tells the two ends apart in
/// chat replies), counting the `Watch` producers that stopped.
struct Feed {
    market: Market,
    stopped: AtomicU64,
}

struct Stopped<'a>(&'a AtomicU64);
impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl feed::PriceFeed for Feed {
    async fn watch(
        &self,
        ctx: Context,
        req: WatchRequest,
        out: Sender<Prost, Price>,
    ) -> Result<(), RpcError> {
        // Refused requests produce nothing, so they do not count.
        let _stop = (!req.symbols.is_empty()).then(|| Stopped(&self.stopped));
        self.market.watch(ctx, req, out).await
    }

    async fn upload(
        &self,
        ctx: Context,
        items: Receiver<Prost, Chunk>,
    ) -> Result<UploadSummary, RpcError> {
        self.market.upload(ctx, items).await
    }

    async fn chat(
        &self,
        ctx: Context,
        items: Receiver<Prost, Line>,
        out: Sender<Prost, Line>,
    ) -> Result<(), RpcError> {
        self.market.chat(ctx, items, out).await
    }
}

fn feed(name: &'static str) -> Arc<Feed> {
    Arc::new(Feed {
        market: Market {
            name,
            tick: Duration::ZERO,
        },
        stopped: AtomicU64::new(0),
    })
}

fn router(f: Arc<Feed>) -> Router {
    let mut r = Router::new();
    PriceFeedServer::register(&mut r, f);
    r
}

fn opts() -> RpcOptions {
    RpcOptions::default().default_timeout(Duration::from_secs(10))
}

/// A server and a client over TCP, each serving its own feed.
async fn pair() -> (RpcServer, RpcClient, Arc<Feed>, Arc<Feed>) {
    let (sf, cf) = (feed("server"), feed("client"));
    let server = RpcServer::start(router(sf.clone()), opts(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(router(cf.clone()), opts(), |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    (server, client, sf, cf)
}

/// Every kind through the generated stub, against the feed named `other` at the far end.
async fn every_kind(stub: &PriceFeedClient, other: &str) {
    // Server stream: 300 prices in order, then the end.
    let mut prices = stub
        .watch(&WatchRequest {
            symbols: vec!["ACME".into(), "INITECH".into()],
            count: 300,
        })
        .await
        .unwrap();
    let mut n = 0u64;
    while let Some(p) = prices.next().await {
        let p = p.unwrap();
        assert_eq!(p.seq, n, "in order, none lost or repeated");
        assert_eq!(
            p.symbol,
            if n.is_multiple_of(2) {
                "ACME"
            } else {
                "INITECH"
            }
        );
        assert!(p.milli > 0);
        n += 1;
    }
    assert_eq!(n, 300);

    // Client stream: 64 chunks of 1 KiB, one summary.
    let (mut chunks, summary) = stub.upload().await.unwrap();
    let mut want = FNV_START;
    for i in 0..64u32 {
        let data: Vec<u8> = (0..1024u32).map(|j| (i * 7 + j) as u8).collect();
        want = fnv1a(want, &data);
        chunks
            .send(&Chunk {
                name: "report.bin".into(),
                data,
            })
            .await
            .unwrap();
    }
    chunks.finish();
    let s = summary.reply().await.unwrap();
    assert_eq!(
        (s.name.as_str(), s.chunks, s.bytes, s.checksum),
        ("report.bin", 64, 64 * 1024, want)
    );

    // Bidirectional: each line answered, then the half-close ends it.
    let (mut say, mut heard) = stub.chat().await.unwrap();
    for i in 0..50 {
        say.send(&Line {
            who: "me".into(),
            text: format!("line {i}"),
        })
        .await
        .unwrap();
        let l = heard.next().await.unwrap().unwrap();
        assert_eq!(l.who, other);
        assert_eq!(l.text, format!("heard \"line {i}\" from me"));
    }
    say.finish();
    assert!(heard.next().await.is_none(), "ends after the half-close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_streams_run_both_ways_in_protobuf_and_json() {
    let (server, client, _sf, _cf) = pair().await;
    let to_server = PriceFeedClient::new(client.peer().unwrap());
    every_kind(&to_server, "server").await;
    every_kind(
        &to_server
            .clone()
            .with_defaults(CallOptions::new().codec(CodecId::Json)),
        "server",
    )
    .await;
    // The server opens the same streams to the client it is connected to.
    let to_client = PriceFeedClient::new(server_peer(&server).await);
    every_kind(&to_client, "client").await;
    every_kind(
        &to_client
            .clone()
            .with_defaults(CallOptions::new().codec(CodecId::Json)),
        "client",
    )
    .await;
    assert_eq!(server.peers().len(), 1, "all on one connection");
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_stream_errors_and_cancel_reach_the_other_end() {
    let (server, client, sf, cf) = pair().await;
    // The handler's error ends the stream at the caller, with its status.
    let mut prices = PriceFeedClient::new(client.peer().unwrap())
        .watch(&WatchRequest::default())
        .await
        .unwrap();
    let e = prices.next().await.unwrap().unwrap_err();
    assert_eq!(e.status, Status::BadRequest, "{e}");
    assert!(e.message.contains("no symbols"), "{e}");
    assert!(prices.next().await.is_none());

    // Dropping the receiver of an endless feed stops the producer, from either end.
    for (peer, f) in [
        (client.peer().unwrap(), &sf),
        (server_peer(&server).await, &cf),
    ] {
        let mut prices = PriceFeedClient::new(peer)
            .watch(&WatchRequest {
                symbols: vec!["ACME".into()],
                count: 0,
            })
            .await
            .unwrap();
        for _ in 0..10 {
            prices.next().await.unwrap().unwrap();
        }
        drop(prices);
        for _ in 0..500 {
            if f.stopped.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(f.stopped.load(Ordering::SeqCst), 1, "the producer stopped");
    }
    client.close().await;
    server.close().await;
}

// ---- the macro form: a JSON log service with stream methods ----

mod logs {
    use getty::rpc::{Context, Json, Receiver, RpcError, Sender};

    /// Log lines.
    #[getty::rpc::service(name = "test.Logs", crate = "::getty::rpc")]
    pub trait Logs {
        /// The last `n` lines, numbered, then the end.
        async fn tail(
            &self,
            ctx: Context,
            n: u32,
            out: Sender<Json, String>,
        ) -> Result<(), RpcError>;
        /// Counts the lines sent, and their bytes.
        async fn collect(
            &self,
            ctx: Context,
            lines: Receiver<Json, String>,
        ) -> Result<(u64, u64), RpcError>;
        /// Each line back in upper case; a line "fail" fails the stream.
        async fn shout(
            &self,
            ctx: Context,
            lines: Receiver<Json, String>,
            out: Sender<Json, String>,
        ) -> Result<(), RpcError>;
        /// A unary method next to the streams.
        async fn ping(&self, ctx: Context, n: u64) -> Result<u64, RpcError>;
    }
}

struct LogStore(&'static str);

impl logs::Logs for LogStore {
    async fn tail(
        &self,
        ctx: Context,
        n: u32,
        mut out: Sender<Json, String>,
    ) -> Result<(), RpcError> {
        for i in 0..n {
            out.send(&format!("{} line {i} codec={:?}", self.0, ctx.codec()))
                .await?;
        }
        Ok(())
    }
    async fn collect(
        &self,
        _ctx: Context,
        mut lines: Receiver<Json, String>,
    ) -> Result<(u64, u64), RpcError> {
        let (mut count, mut bytes) = (0, 0);
        while let Some(l) = lines.next().await {
            let l = l?;
            count += 1;
            bytes += l.len() as u64;
        }
        Ok((count, bytes))
    }
    async fn shout(
        &self,
        _ctx: Context,
        mut lines: Receiver<Json, String>,
        mut out: Sender<Json, String>,
    ) -> Result<(), RpcError> {
        while let Some(l) = lines.next().await {
            let l = l?;
            if l == "fail" {
                return Err(RpcError::handler("told to fail"));
            }
            out.send(&l.to_uppercase()).await?;
        }
        Ok(())
    }
    async fn ping(&self, _ctx: Context, n: u64) -> Result<u64, RpcError> {
        Ok(n + 1)
    }
}

async fn logs_every_kind(stub: &logs::LogsClient, other: &str) {
    let mut lines = stub.tail(&5).await.unwrap();
    for i in 0..5 {
        assert_eq!(
            lines.next().await.unwrap().unwrap(),
            format!("{other} line {i} codec=Json")
        );
    }
    assert!(lines.next().await.is_none());

    let (mut tx, reply) = stub.collect().await.unwrap();
    for l in ["a", "bb", "ccc"] {
        tx.send(&l.to_string()).await.unwrap();
    }
    tx.finish();
    assert_eq!(reply.reply().await.unwrap(), (3, 6));

    let (mut tx, mut rx) = stub.shout().await.unwrap();
    tx.send(&"hey".to_string()).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "HEY");
    assert_eq!(stub.ping(&1).await.unwrap(), 2, "unary calls go on beside");
    tx.send(&"fail".to_string()).await.unwrap();
    let e = rx.next().await.unwrap().unwrap_err();
    assert_eq!(e.status, Status::HandlerError, "{e}");
    assert!(e.message.contains("told to fail"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macro_streams_run_both_ways() {
    let r = |name| {
        let mut r = Router::new();
        logs::LogsServer::register(&mut r, Arc::new(LogStore(name)));
        r
    };
    let server = RpcServer::start(r("server"), opts(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(r("client"), opts(), |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    assert_eq!(logs::LogsServer::STREAMS, ["Tail", "Collect", "Shout"]);
    logs_every_kind(&logs::LogsClient::new(client.peer().unwrap()), "server").await;
    logs_every_kind(&logs::LogsClient::new(server_peer(&server).await), "client").await;
    // Reflection tells the kinds apart.
    let reply = client
        .peer()
        .unwrap()
        .call_raw(
            "getty.Reflection",
            "Describe",
            CodecId::Json,
            "null".into(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let services: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    let logs = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "test.Logs")
        .unwrap();
    let kinds: Vec<(String, Option<String>)> = logs["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m.get("stream").map(|k| k.as_str().unwrap().to_string()),
            )
        })
        .collect();
    let want = |n: &str, k: Option<&str>| (n.to_string(), k.map(str::to_string));
    assert_eq!(
        kinds,
        [
            want("Collect", Some("client")),
            want("Ping", None),
            want("Shout", Some("bidi")),
            want("Tail", Some("server")),
        ]
    );
    client.close().await;
    server.close().await;
}

// ---- the macro form with prost messages: streams in Protobuf (and JSON per call) ----

mod ticker {
    use getty::rpc::{Context, Prost, Receiver, RpcError, Sender};
    use getty_proto::feed::{Chunk, Price, UploadSummary, WatchRequest};

    #[getty::rpc::service(name = "test.Ticker", crate = "::getty::rpc", body = "prost")]
    pub trait Ticker {
        async fn ticks(
            &self,
            ctx: Context,
            req: WatchRequest,
            out: Sender<Prost, Price>,
        ) -> Result<(), RpcError>;
        async fn store(
            &self,
            ctx: Context,
            chunks: Receiver<Prost, Chunk>,
        ) -> Result<UploadSummary, RpcError>;
    }
}

impl ticker::Ticker for Market {
    async fn ticks(
        &self,
        ctx: Context,
        req: WatchRequest,
        out: Sender<Prost, Price>,
    ) -> Result<(), RpcError> {
        feed::PriceFeed::watch(self, ctx, req, out).await
    }
    async fn store(
        &self,
        ctx: Context,
        chunks: Receiver<Prost, Chunk>,
    ) -> Result<UploadSummary, RpcError> {
        feed::PriceFeed::upload(self, ctx, chunks).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macro_streams_with_prost_messages_speak_protobuf_and_json() {
    let mut r = Router::new();
    ticker::TickerServer::register(
        &mut r,
        Arc::new(Market {
            name: "server",
            tick: Duration::ZERO,
        }),
    );
    let server = RpcServer::start(r, opts(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(Router::new(), opts(), |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })
    .unwrap();
    client.ready().await.unwrap();
    let stub = ticker::TickerClient::new(client.peer().unwrap());
    for codec in [CodecId::Protobuf, CodecId::Json] {
        let o = CallOptions::new().codec(codec);
        let mut prices = stub
            .ticks_with(
                &WatchRequest {
                    symbols: vec!["ACME".into()],
                    count: 20,
                },
                o.clone(),
            )
            .await
            .unwrap();
        let mut n = 0;
        while let Some(p) = prices.next().await {
            assert_eq!(p.unwrap().seq, n, "{codec}");
            n += 1;
        }
        assert_eq!(n, 20, "{codec}");
        let (mut tx, rx) = stub.store_with(o).await.unwrap();
        tx.send(&Chunk {
            name: "x".into(),
            data: vec![1, 2, 3],
        })
        .await
        .unwrap();
        tx.finish();
        let s = rx.reply().await.unwrap();
        assert_eq!((s.chunks, s.bytes), (1, 3), "{codec}");
        assert_eq!(s.checksum, fnv1a(FNV_START, &[1, 2, 3]), "{codec}");
    }
    client.close().await;
    server.close().await;
}
