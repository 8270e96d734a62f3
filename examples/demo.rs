//! The main demo: a provider and a consumer calling each other over one connection.
//!
//! `cargo run --example demo` — needs no server and no network beyond loopback.

use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{Context, Router, RpcClient, RpcError, RpcOptions, RpcServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The provider serves `demo.Greeter`; its handler calls back the caller's own service.
    let mut provider = Router::new();
    provider.add_json(
        "demo.Greeter",
        "Hello",
        |ctx: Context, name: String| async move {
            let mood: String = ctx.peer().call_json("demo.Consumer", "Mood", &name).await?;
            Ok::<_, RpcError>(format!("hello {name}, you said you feel {mood}"))
        },
    );
    let server = RpcServer::start(provider, RpcOptions::default(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await?;
    println!("provider listening on {}", server.local_addr());

    // The consumer serves `demo.Consumer` on the connection it opens.
    let mut consumer = Router::new();
    consumer.add_json(
        "demo.Consumer",
        "Mood",
        |_ctx: Context, name: String| async move {
            println!("  consumer: the provider asks how {name} feels");
            Ok::<_, RpcError>("great".to_string())
        },
    );
    let addr = server.local_addr().to_string();
    let client = RpcClient::start(consumer, RpcOptions::default(), |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })?;
    client.ready().await?;

    let reply: String = client
        .peer()?
        .call_json("demo.Greeter", "Hello", &"ann".to_string())
        .await?;
    println!("consumer got: {reply}");

    // And the provider calls the consumer directly, on the same connection.
    let peer = server.peers().pop().ok_or("no consumer connected")?;
    let mood: String = peer
        .call_json("demo.Consumer", "Mood", &"the provider".to_string())
        .await?;
    println!("provider got: {mood}");

    client.close().await;
    server.close().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
