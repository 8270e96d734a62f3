//! The main demo, on the embedded `memory://` registry (no server needed):
//! two providers publish `demo.Greeter`; a consumer finds them through the registry, spreads
//! its calls over them, and serves `demo.Consumer` on the connections it opens, which the
//! providers call back while answering.
//!
//! `cargo run --example demo [REGISTRY_URL]` — e.g. `etcd://127.0.0.1:23790/demo` with
//! `--features etcd` and a running etcd (`scripts/servers.sh up`).

use std::time::Duration;

use getty::core::ServerBuilder;
use getty::registry::{Query, ServiceInstance, connect};
use getty::rpc::{
    CallOptions, Cluster, ClusterOptions, Context, Json, Router, RpcError, RpcOptions, RpcServer,
};

async fn provider(name: &'static str) -> Result<RpcServer, Box<dyn std::error::Error>> {
    let mut r = Router::new();
    r.add_json(
        "demo.Greeter",
        "Hello",
        move |ctx: Context, who: String| async move {
            // Call back the very consumer that called, on its own connection.
            let mood: String = ctx.peer().call_json("demo.Consumer", "Mood", &who).await?;
            Ok::<_, RpcError>(format!("{name}: hello {who}, glad you feel {mood}"))
        },
    );
    Ok(RpcServer::start(r, RpcOptions::default(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://demo".to_string());
    let registry = connect(&url).await?;
    println!("registry: {url}");

    // Providers publish only once they listen.
    let mut providers = Vec::new();
    for name in ["provider-a", "provider-b"] {
        let p = provider(name).await?;
        let id = p
            .publish(
                &*registry,
                ServiceInstance::new("demo.Greeter", "")
                    .with_instance_id(name)
                    .with_codec("json"),
            )
            .await?;
        println!("{id} listening on {} and published", p.local_addr());
        providers.push(p);
    }

    // The consumer follows the registry and serves `demo.Consumer` to whoever it calls.
    let mut mine = Router::new();
    mine.add_json(
        "demo.Consumer",
        "Mood",
        |_ctx: Context, who: String| async move {
            Ok::<_, RpcError>(if who == "ann" {
                "great".to_string()
            } else {
                "fine".to_string()
            })
        },
    );
    let cluster = Cluster::new(
        registry.clone(),
        Query::new("demo.Greeter"),
        mine,
        ClusterOptions::default(),
    );
    if !cluster.wait_connected(2, Duration::from_secs(10)).await {
        return Err("the consumer did not find both providers".into());
    }
    for who in ["ann", "bob", "cy", "dee"] {
        let reply: String = cluster
            .call::<Json, _, _>(
                None,
                "demo.Greeter",
                "Hello",
                &who.to_string(),
                CallOptions::new(),
            )
            .await?;
        println!("consumer got: {reply}");
    }

    // Graceful shutdown of one provider: it leaves the registry first, then closes.
    let gone = providers.remove(0);
    gone.shutdown(Duration::from_secs(2)).await;
    println!("provider-a left; the consumer now sees {} instance(s)", {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.instances().len()
    });
    let reply: String = cluster
        .call::<Json, _, _>(
            None,
            "demo.Greeter",
            "Hello",
            &"ann".to_string(),
            CallOptions::new(),
        )
        .await?;
    println!("consumer got: {reply}");

    cluster.close().await;
    for p in providers {
        p.shutdown(Duration::from_secs(2)).await;
    }
    Ok(())
}
