//! The greeter of getty-proto (prost-generated, from proto/greeter.proto), server side. It
//! serves `greeter.Greeter`; when greeted, it greets the caller back and notifies it, over
//! the same connection (the client serves Greeter too).
//!
//! ```text
//! cargo run --example greeter_server                  # listens on 127.0.0.1:7001 until Ctrl-C
//! cargo run --example greeter_server -- 127.0.0.1:7100
//! cargo run --example greeter_client                  # in another terminal
//! ```

use std::sync::Arc;

use getty::core::ServerBuilder;
use getty::rpc::{Context, Router, RpcError, RpcOptions, RpcServer};
use getty_proto::greeter::{
    Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest, Notice,
};

struct Server;

impl Greeter for Server {
    async fn say_hello(&self, ctx: Context, req: HelloRequest) -> Result<HelloReply, RpcError> {
        let from = ctx.peer().remote_addr();
        println!(
            "server: SayHello {{ name: {:?} }} from {from:?} as {:?}",
            req.name,
            ctx.codec()
        );
        // Call the caller back before answering: it serves greeter.Greeter as well.
        let caller = GreeterClient::new(ctx.peer().clone());
        let back = caller
            .say_hello(&HelloRequest {
                name: "the server".into(),
            })
            .await?;
        println!("server: the client answered {:?}", back.message);
        caller
            .notify(&Notice {
                text: format!("{} was greeted", req.name),
            })
            .await?;
        Ok(HelloReply {
            message: format!("Hello, {}!", req.name),
            served_by: "greeter_server".into(),
        })
    }

    async fn notify(&self, ctx: Context, req: Notice) {
        println!(
            "server: Notify {:?} from {:?}",
            req.text,
            ctx.peer().remote_addr()
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".to_string());
    let mut router = Router::new();
    GreeterServer::register(&mut router, Arc::new(Server));
    let server = RpcServer::start(router, RpcOptions::default(), |cb| {
        ServerBuilder::new(addr).serve_tcp(cb)
    })
    .await?;
    println!(
        "server: serving {} ({}) on {}; Ctrl-C to stop",
        GreeterServer::NAME,
        GreeterServer::METHODS.join(", "),
        server.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    server.close().await;
    println!("server: closed");
    Ok(())
}
