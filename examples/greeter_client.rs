//! The greeter of getty-proto (prost-generated, from proto/greeter.proto), client side. It
//! serves `greeter.Greeter` too, so the server can greet it back on the same connection; it
//! calls the server with Protobuf, then with JSON, and exits once the server's notices came.
//!
//! ```text
//! cargo run --example greeter_server                  # first, in another terminal
//! cargo run --example greeter_client                  # connects to 127.0.0.1:7001
//! cargo run --example greeter_client -- 127.0.0.1:7100
//! ```

use std::sync::Arc;
use std::time::Duration;

use getty::core::ClientBuilder;
use getty::rpc::{CallOptions, CodecId, Context, Router, RpcClient, RpcError, RpcOptions};
use getty_proto::greeter::{
    Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest, Notice,
};
use tokio::sync::mpsc;

/// What the client serves: the server calls it back.
struct Client {
    notices: mpsc::UnboundedSender<String>,
}

impl Greeter for Client {
    async fn say_hello(&self, _ctx: Context, req: HelloRequest) -> Result<HelloReply, RpcError> {
        println!(
            "client: SayHello {{ name: {:?} }} from the server",
            req.name
        );
        Ok(HelloReply {
            message: format!("Hello back, {}!", req.name),
            served_by: "greeter_client".into(),
        })
    }

    async fn notify(&self, _ctx: Context, req: Notice) {
        println!("client: Notify {:?} from the server", req.text);
        let _ = self.notices.send(req.text);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".to_string());
    let (tx, mut notices) = mpsc::unbounded_channel();
    let mut router = Router::new();
    GreeterServer::register(&mut router, Arc::new(Client { notices: tx }));
    let client = RpcClient::start(router, RpcOptions::default(), |cb| {
        ClientBuilder::new(addr.clone())
            .reconnect_interval(Duration::from_millis(200))
            .reconnect_attempts(10)
            .connect_tcp(cb)
    })?;
    if let Err(e) = client.ready().await {
        eprintln!("client: cannot reach {addr} ({e}); is greeter_server running?");
        std::process::exit(1);
    }

    let greeter = GreeterClient::new(client.peer()?);
    let r = greeter
        .say_hello(&HelloRequest {
            name: "protobuf client".into(),
        })
        .await?;
    println!("client: {:?} (served by {})", r.message, r.served_by);
    let r = greeter
        .say_hello_with(
            &HelloRequest {
                name: "JSON client".into(),
            },
            CallOptions::new()
                .codec(CodecId::Json)
                .timeout(Duration::from_secs(2)),
        )
        .await?;
    println!(
        "client: {:?} (served by {}, as JSON)",
        r.message, r.served_by
    );
    greeter.notify(&Notice { text: "bye".into() }).await?;

    // The server notified us once per greeting, before answering.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), notices.recv())
            .await?
            .ok_or("client: notices closed")?;
    }
    client.close().await;
    println!("client: done");
    Ok(())
}
