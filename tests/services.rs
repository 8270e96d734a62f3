//! Typed services over real loopback sockets: the prost-generated form (getty-proto, built by
//! getty-rpc-build) and the `#[service]` macro form, called both ways on one connection (the
//! connecting side serves a service the accepting side calls), over TCP and WebSocket;
//! Protobuf and JSON peers of one service; one-way methods; metadata and deadlines.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::server_peer;
use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{
    CallOptions, CodecId, Context, Router, RpcClient, RpcError, RpcOptions, RpcServer, Status,
};
use getty_proto::calc::{self, CalculatorClient, CalculatorServer};
use getty_proto::greeter::{self, GreeterClient, GreeterServer, HelloRequest, Notice};
use tokio::sync::mpsc;

// ---- what the handlers saw ----

/// One call as a handler saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    by: &'static str,
    text: String,
    codec: CodecId,
    meta: Option<String>,
    deadline: bool,
}

type Tx = mpsc::UnboundedSender<Seen>;
type Rx = mpsc::UnboundedReceiver<Seen>;

fn seen(by: &'static str, ctx: &Context, text: String) -> Seen {
    Seen {
        by,
        text,
        codec: ctx.codec(),
        meta: ctx.meta("k").map(str::to_string),
        deadline: ctx.deadline().is_some(),
    }
}

async fn next(rx: &mut Rx) -> Seen {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the one-way call never ran")
        .expect("channel closed")
}

// ---- the prost form: getty-proto's greeter.Greeter and calc.Calculator ----

struct Greeter {
    name: &'static str,
    seen: Tx,
    /// Notify the caller back (on the same connection) before answering SayHello.
    call_back: bool,
}

impl greeter::Greeter for Greeter {
    async fn say_hello(
        &self,
        ctx: Context,
        req: HelloRequest,
    ) -> Result<greeter::HelloReply, RpcError> {
        let s = seen(self.name, &ctx, req.name.clone());
        if self.call_back {
            GreeterClient::new(ctx.peer().clone())
                .notify(&Notice {
                    text: format!("{} greeted {}", self.name, req.name),
                })
                .await?;
        }
        Ok(greeter::HelloReply {
            message: format!("hello {}", req.name),
            served_by: format!(
                "{} codec={:?} k={:?} deadline={}",
                s.by, s.codec, s.meta, s.deadline
            ),
        })
    }

    async fn notify(&self, ctx: Context, req: Notice) {
        let _ = self.seen.send(seen(self.name, &ctx, req.text));
    }
}

struct Calc {
    seen: Tx,
}

impl calc::Calculator for Calc {
    async fn add(&self, _ctx: Context, req: calc::AddRequest) -> Result<calc::AddReply, RpcError> {
        Ok(calc::AddReply { sum: req.a + req.b })
    }
    async fn div(&self, _ctx: Context, req: calc::DivRequest) -> Result<calc::DivReply, RpcError> {
        if req.b == 0 {
            return Err(RpcError::handler("division by zero"));
        }
        Ok(calc::DivReply {
            quotient: req.a / req.b,
            remainder: req.a % req.b,
        })
    }
    async fn log(&self, ctx: Context, req: calc::LogLine) {
        let _ = self.seen.send(seen("calc", &ctx, req.line));
    }
}

// ---- the macro form, through the facade ----

mod notes {
    use getty::rpc::{Context, RpcError};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Note {
        pub title: String,
        pub body: String,
    }

    /// What a handler saw of its call.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Probe {
        pub served_by: String,
        pub meta: Option<String>,
        pub has_deadline: bool,
    }

    /// A note store.
    #[getty::rpc::service(name = "test.Notes", crate = "::getty::rpc")]
    pub trait Notes {
        /// Stores a note; answers how many the store holds.
        async fn put(&self, ctx: Context, note: Note) -> Result<usize, RpcError>;
        /// Echoes metadata `k` and whether the call has a deadline.
        async fn probe(&self, ctx: Context, req: ()) -> Result<Probe, RpcError>;
        /// Fails, always.
        async fn fail(&self, ctx: Context, why: String) -> Result<(), RpcError>;
        /// Rings; no reply.
        #[oneway]
        async fn ring(&self, ctx: Context, text: String);
    }
}

use notes::{Note, NotesClient, NotesServer};

// ---- the macro form with prost messages: Protobuf on the wire ----

mod hello {
    use getty::rpc::{Context, RpcError};
    use getty_proto::greeter::{HelloReply, HelloRequest, Notice};

    /// A Rust-defined service whose messages are prost types, so Protobuf peers can call it.
    #[getty::rpc::service(name = "test.Hello", crate = "::getty::rpc", body = "prost")]
    pub trait Hello {
        async fn greet(&self, ctx: Context, req: HelloRequest) -> Result<HelloReply, RpcError>;
        #[oneway]
        async fn note(&self, ctx: Context, req: Notice);
    }
}

struct HelloImpl {
    seen: Tx,
}

impl hello::Hello for HelloImpl {
    async fn greet(
        &self,
        ctx: Context,
        req: HelloRequest,
    ) -> Result<greeter::HelloReply, RpcError> {
        Ok(greeter::HelloReply {
            message: format!("hi {}", req.name),
            served_by: format!("codec={:?}", ctx.codec()),
        })
    }
    async fn note(&self, ctx: Context, req: Notice) {
        let _ = self.seen.send(seen("hello", &ctx, req.text));
    }
}

struct NoteStore {
    name: &'static str,
    count: AtomicUsize,
    seen: Tx,
}

impl notes::Notes for NoteStore {
    async fn put(&self, ctx: Context, note: Note) -> Result<usize, RpcError> {
        let _ = self.seen.send(seen(self.name, &ctx, note.title));
        Ok(self.count.fetch_add(1, Ordering::SeqCst) + 1)
    }
    async fn probe(&self, ctx: Context, _req: ()) -> Result<notes::Probe, RpcError> {
        Ok(notes::Probe {
            served_by: self.name.to_string(),
            meta: ctx.meta("k").map(str::to_string),
            has_deadline: ctx.deadline().is_some(),
        })
    }
    async fn fail(&self, _ctx: Context, why: String) -> Result<(), RpcError> {
        Err(RpcError::handler(why))
    }
    async fn ring(&self, ctx: Context, text: String) {
        let _ = self.seen.send(seen(self.name, &ctx, text));
    }
}

// ---- endpoints ----

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Ws,
}

fn opts() -> RpcOptions {
    RpcOptions::default().default_timeout(Duration::from_secs(5))
}

async fn start_server(t: Transport, router: Router) -> RpcServer {
    match t {
        Transport::Tcp => RpcServer::start(router, opts(), |cb| {
            ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
        })
        .await
        .unwrap(),
        Transport::Ws => RpcServer::start(router, opts(), |cb| {
            ServerBuilder::new("127.0.0.1:0").serve_ws("/rpc", cb)
        })
        .await
        .unwrap(),
    }
}

async fn start_client(t: Transport, server: &RpcServer, router: Router) -> RpcClient {
    let port = server.local_addr().port();
    let client = match t {
        Transport::Tcp => RpcClient::start(router, opts(), |cb| {
            ClientBuilder::new(format!("127.0.0.1:{port}")).connect_tcp(cb)
        }),
        Transport::Ws => RpcClient::start(router, opts(), |cb| {
            ClientBuilder::new(format!("ws://127.0.0.1:{port}/rpc")).connect_ws(cb)
        }),
    }
    .unwrap();
    client.ready().await.unwrap();
    client
}

// ---- prost-generated services, both ways ----

async fn prost_both_ways(t: Transport) {
    let (server_tx, mut server_rx) = mpsc::unbounded_channel();
    let (client_tx, mut client_rx) = mpsc::unbounded_channel();

    let mut server_router = Router::new();
    GreeterServer::register(
        &mut server_router,
        Arc::new(Greeter {
            name: "server",
            seen: server_tx.clone(),
            call_back: true,
        }),
    );
    CalculatorServer::register(&mut server_router, Arc::new(Calc { seen: server_tx }));
    // The connecting side serves Greeter too.
    let mut client_router = Router::new();
    GreeterServer::register(
        &mut client_router,
        Arc::new(Greeter {
            name: "client",
            seen: client_tx,
            call_back: false,
        }),
    );

    let server = start_server(t, server_router).await;
    let client = start_client(t, &server, client_router).await;

    // client -> server, two-way; the server notifies the client back before answering.
    let greeter = GreeterClient::new(client.peer().unwrap());
    let r = greeter
        .say_hello(&HelloRequest { name: "ann".into() })
        .await
        .unwrap();
    assert_eq!(r.message, "hello ann");
    assert!(r.served_by.starts_with("server codec=Protobuf"), "{r:?}");
    let back = next(&mut client_rx).await;
    assert_eq!(
        (back.by, back.text.as_str()),
        ("client", "server greeted ann")
    );

    // client -> server: Calculator, including its error.
    let c = CalculatorClient::new(client.peer().unwrap());
    let sum = c.add(&calc::AddRequest { a: 40, b: 2 }).await.unwrap();
    assert_eq!(sum.sum, 42);
    let q = c.div(&calc::DivRequest { a: 7, b: 2 }).await.unwrap();
    assert_eq!((q.quotient, q.remainder), (3, 1));
    let e = c.div(&calc::DivRequest { a: 1, b: 0 }).await.unwrap_err();
    assert_eq!(e.status, Status::HandlerError);
    assert_eq!(e.message, "division by zero");
    // one-way: it runs on the server.
    c.log(&calc::LogLine {
        line: "from the client".into(),
    })
    .await
    .unwrap();
    let logged = next(&mut server_rx).await;
    assert_eq!(
        (logged.by, logged.text.as_str()),
        ("calc", "from the client")
    );

    // server -> client on the same connection: the client serves Greeter.
    let to_client = GreeterClient::new(server_peer(&server).await);
    let r = to_client
        .say_hello(&HelloRequest { name: "bob".into() })
        .await
        .unwrap();
    assert_eq!(r.message, "hello bob");
    assert!(r.served_by.starts_with("client codec=Protobuf"), "{r:?}");
    to_client
        .notify(&Notice {
            text: "from the server".into(),
        })
        .await
        .unwrap();
    let n = next(&mut client_rx).await;
    assert_eq!((n.by, n.text.as_str()), ("client", "from the server"));

    // The client does not serve Calculator: a typed error, not a hang.
    let e = CalculatorClient::new(server_peer(&server).await)
        .add(&calc::AddRequest { a: 1, b: 1 })
        .await
        .unwrap_err();
    assert_eq!(e.status, Status::UnknownService);

    assert_eq!(server.peers().len(), 1, "all on one connection");
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prost_services_both_ways_over_tcp() {
    prost_both_ways(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prost_services_both_ways_over_websocket() {
    prost_both_ways(Transport::Ws).await;
}

// ---- macro services, both ways ----

fn note_store(name: &'static str, seen: Tx) -> Arc<NoteStore> {
    Arc::new(NoteStore {
        name,
        count: AtomicUsize::new(0),
        seen,
    })
}

async fn macro_both_ways(t: Transport) {
    let (server_tx, mut server_rx) = mpsc::unbounded_channel();
    let (client_tx, mut client_rx) = mpsc::unbounded_channel();
    let mut server_router = Router::new();
    NotesServer::register(&mut server_router, note_store("server", server_tx));
    let mut client_router = Router::new();
    NotesServer::register(&mut client_router, note_store("client", client_tx));
    let server = start_server(t, server_router).await;
    let client = start_client(t, &server, client_router).await;

    let note = |t: &str| Note {
        title: t.into(),
        body: "...".into(),
    };
    // client -> server
    let to_server = NotesClient::new(client.peer().unwrap());
    assert_eq!(to_server.put(&note("a")).await.unwrap(), 1);
    assert_eq!(to_server.put(&note("b")).await.unwrap(), 2);
    assert_eq!(next(&mut server_rx).await.text, "a");
    assert_eq!(next(&mut server_rx).await.text, "b");
    assert_eq!(to_server.probe(&()).await.unwrap().served_by, "server");
    let e = to_server.fail(&"nope".to_string()).await.unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (Status::HandlerError, "nope")
    );
    to_server.ring(&"ding".to_string()).await.unwrap();
    let r = next(&mut server_rx).await;
    assert_eq!(
        (r.by, r.text.as_str(), r.codec),
        ("server", "ding", CodecId::Json)
    );

    // server -> client, same connection
    let to_client = NotesClient::new(server_peer(&server).await);
    assert_eq!(to_client.put(&note("c")).await.unwrap(), 1);
    assert_eq!(next(&mut client_rx).await.text, "c");
    assert_eq!(to_client.probe(&()).await.unwrap().served_by, "client");
    to_client.ring(&"dong".to_string()).await.unwrap();
    let r = next(&mut client_rx).await;
    assert_eq!((r.by, r.text.as_str()), ("client", "dong"));

    assert_eq!(server.peers().len(), 1, "all on one connection");
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macro_services_both_ways_over_tcp() {
    macro_both_ways(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macro_services_both_ways_over_websocket() {
    macro_both_ways(Transport::Ws).await;
}

// ---- one prost service, Protobuf and JSON peers ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_and_json_peers_of_one_prost_service() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut router = Router::new();
    GreeterServer::register(
        &mut router,
        Arc::new(Greeter {
            name: "server",
            seen: tx,
            call_back: false,
        }),
    );
    let server = start_server(Transport::Tcp, router).await;
    let pb_client = start_client(Transport::Tcp, &server, Router::new()).await;
    let json_client = start_client(Transport::Tcp, &server, Router::new()).await;

    let pb = GreeterClient::new(pb_client.peer().unwrap());
    let json = GreeterClient::new(json_client.peer().unwrap())
        .with_defaults(CallOptions::new().codec(CodecId::Json));
    let req = HelloRequest { name: "cy".into() };

    let r = pb.say_hello(&req).await.unwrap();
    assert!(r.served_by.starts_with("server codec=Protobuf"), "{r:?}");
    let r = json.say_hello(&req).await.unwrap();
    assert_eq!(r.message, "hello cy");
    assert!(r.served_by.starts_with("server codec=Json"), "{r:?}");
    // A per-call override on the Protobuf client.
    let r = pb
        .say_hello_with(&req, CallOptions::new().codec(CodecId::Json))
        .await
        .unwrap();
    assert!(r.served_by.starts_with("server codec=Json"), "{r:?}");

    // One-way over both codecs.
    pb.notify(&Notice { text: "pb".into() }).await.unwrap();
    let s = next(&mut rx).await;
    assert_eq!((s.text.as_str(), s.codec), ("pb", CodecId::Protobuf));
    json.notify(&Notice { text: "js".into() }).await.unwrap();
    let s = next(&mut rx).await;
    assert_eq!((s.text.as_str(), s.codec), ("js", CodecId::Json));

    // What a non-Rust JSON peer sends: plain JSON, wire names from the .proto.
    let raw = json_client
        .peer()
        .unwrap()
        .call_raw(
            "greeter.Greeter",
            "SayHello",
            CodecId::Json,
            Bytes::from_static(br#"{"name":"raw"}"#),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["message"], "hello raw");

    pb_client.close().await;
    json_client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macro_services_with_prost_messages_speak_protobuf() {
    use prost::Message;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut router = Router::new();
    hello::HelloServer::register(&mut router, Arc::new(HelloImpl { seen: tx }));
    let server = start_server(Transport::Tcp, router).await;
    let client = start_client(Transport::Tcp, &server, Router::new()).await;
    let stub = hello::HelloClient::new(client.peer().unwrap());
    let req = HelloRequest { name: "ann".into() };

    // The stub's default codec is Protobuf; JSON on request.
    let r = stub.greet(&req).await.unwrap();
    assert_eq!(
        (r.message.as_str(), r.served_by.as_str()),
        ("hi ann", "codec=Protobuf")
    );
    let r = stub
        .greet_with(&req, CallOptions::new().codec(CodecId::Json))
        .await
        .unwrap();
    assert_eq!(r.served_by, "codec=Json");
    stub.note(&Notice { text: "n".into() }).await.unwrap();
    let s = next(&mut rx).await;
    assert_eq!((s.text.as_str(), s.codec), ("n", CodecId::Protobuf));

    // What any Protobuf peer sends: the message's protobuf bytes.
    let raw = client
        .peer()
        .unwrap()
        .call_raw(
            "test.Hello",
            "Greet",
            CodecId::Protobuf,
            req.encode_to_vec().into(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let reply = greeter::HelloReply::decode(raw).unwrap();
    assert_eq!(reply.message, "hi ann");

    client.close().await;
    server.close().await;
}

// ---- metadata and deadlines reach handlers ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_deadline_reach_handlers_of_both_forms() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut router = Router::new();
    GreeterServer::register(
        &mut router,
        Arc::new(Greeter {
            name: "server",
            seen: tx.clone(),
            call_back: false,
        }),
    );
    NotesServer::register(&mut router, note_store("server", tx));
    let server = start_server(Transport::Tcp, router).await;
    let client = start_client(Transport::Tcp, &server, Router::new()).await;
    let with = || {
        CallOptions::new()
            .timeout(Duration::from_secs(2))
            .meta("k", "v")
    };

    // prost form
    let g = GreeterClient::new(client.peer().unwrap());
    let r = g
        .say_hello_with(&HelloRequest { name: "d".into() }, with())
        .await
        .unwrap();
    assert_eq!(
        r.served_by,
        "server codec=Protobuf k=Some(\"v\") deadline=true"
    );
    // A two-way call always has a deadline (the connection's default timeout).
    let r = g
        .say_hello(&HelloRequest { name: "d".into() })
        .await
        .unwrap();
    assert_eq!(r.served_by, "server codec=Protobuf k=None deadline=true");
    // One-way: a deadline only if the caller gave a timeout.
    g.notify_with(&Notice { text: "n1".into() }, with())
        .await
        .unwrap();
    let s = next(&mut rx).await;
    assert_eq!((s.meta.as_deref(), s.deadline), (Some("v"), true));
    g.notify(&Notice { text: "n2".into() }).await.unwrap();
    let s = next(&mut rx).await;
    assert_eq!((s.meta.as_deref(), s.deadline), (None, false));

    // macro form; defaults apply to the methods without `_with`
    let n = NotesClient::new(client.peer().unwrap()).with_defaults(with());
    let p = n.probe(&()).await.unwrap();
    assert_eq!((p.meta.as_deref(), p.has_deadline), (Some("v"), true));
    let p = n.probe_with(&(), CallOptions::new()).await.unwrap();
    assert_eq!((p.meta.as_deref(), p.has_deadline), (None, true));
    n.ring(&"r".to_string()).await.unwrap();
    let s = next(&mut rx).await;
    assert_eq!((s.meta.as_deref(), s.deadline), (Some("v"), true));

    client.close().await;
    server.close().await;
}

// ---- reflection ----

#[test]
fn wire_names_and_router_description() {
    assert_eq!(GreeterServer::NAME, "greeter.Greeter");
    assert_eq!(GreeterServer::METHODS, ["SayHello", "Notify"]);
    assert_eq!(GreeterServer::ONE_WAY, ["Notify"]);
    assert_eq!(NotesServer::NAME, "test.Notes");
    assert_eq!(NotesServer::METHODS, ["Put", "Probe", "Fail", "Ring"]);
    assert_eq!(NotesServer::ONE_WAY, ["Ring"]);

    let (tx, _rx) = mpsc::unbounded_channel();
    let mut router = Router::new();
    CalculatorServer::register(&mut router, Arc::new(Calc { seen: tx.clone() }));
    NotesServer::register(&mut router, note_store("x", tx));
    let d = router.describe();
    let names: Vec<&str> = d.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["calc.Calculator", "test.Notes"]);
    let div = d[0].1.iter().find(|m| m.name == "Div").unwrap();
    assert_eq!(
        (
            div.request_type.as_str(),
            div.reply_type.as_str(),
            div.one_way
        ),
        ("DivRequest", "DivReply", false)
    );
    assert_eq!(div.codecs, [CodecId::Protobuf, CodecId::Json]);
    let log = d[0].1.iter().find(|m| m.name == "Log").unwrap();
    assert!(log.one_way);
    let put = d[1].1.iter().find(|m| m.name == "Put").unwrap();
    assert_eq!(put.codecs, [CodecId::Json]);
}
