//! Bidirectional RPC: clients register a `chat.Client` service; the server calls it to push
//! every message to every member, on the same connections the clients opened.
//!
//! ```text
//! cargo run --example rpc_chat                       # server and three clients in one process
//! cargo run --example rpc_chat -- server 127.0.0.1:7100
//! cargo run --example rpc_chat -- client 127.0.0.1:7100 alice
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{
    CallOptions, Context, Json, OnPeer, Peer, Router, RpcClient, RpcError, RpcOptions, RpcServer,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Line {
    from: String,
    text: String,
}

/// The members' connections, as the server sees them: filled by the `on_peer` hook.
#[derive(Default)]
struct Members(Mutex<Vec<Peer>>);

impl Members {
    fn live(&self) -> Vec<Peer> {
        let mut v = self.0.lock().unwrap();
        v.retain(|p| !p.is_closed());
        v.clone()
    }
}

/// The room: `Say` fans a line out to every member by calling *their* service.
fn room(members: Arc<Members>) -> Router {
    let mut r = Router::new();
    r.add_json("chat.Room", "Say", move |_ctx: Context, line: Line| {
        let members = members.clone();
        async move {
            let mut delivered = 0u32;
            for p in members.live() {
                // A two-way call from server to client: the member acknowledges delivery.
                let ok: Result<bool, RpcError> = p
                    .call::<Json, _, _>(
                        "chat.Client",
                        "Deliver",
                        &line,
                        CallOptions::new().timeout(Duration::from_secs(2)),
                    )
                    .await;
                if ok.unwrap_or(false) {
                    delivered += 1;
                }
            }
            Ok(delivered)
        }
    });
    r
}

fn member(name: String, seen: mpsc::UnboundedSender<String>) -> Router {
    let mut r = Router::new();
    r.add_json(
        "chat.Client",
        "Deliver",
        move |_ctx: Context, line: Line| {
            let (name, seen) = (name.clone(), seen.clone());
            async move {
                let msg = format!("[{name}] {}: {}", line.from, line.text);
                println!("{msg}");
                let _ = seen.send(msg);
                Ok(true)
            }
        },
    );
    r
}

async fn join(
    addr: &str,
    name: &str,
    seen: mpsc::UnboundedSender<String>,
) -> Result<RpcClient, Box<dyn std::error::Error>> {
    let a = addr.to_string();
    let c = RpcClient::start(
        member(name.to_string(), seen),
        RpcOptions::default(),
        |cb| ClientBuilder::new(a).connect_tcp(cb),
    )?;
    c.ready().await?;
    Ok(c)
}

async fn say(c: &RpcClient, from: &str, text: &str) -> Result<u32, RpcError> {
    let line = Line {
        from: from.into(),
        text: text.into(),
    };
    c.peer()?.call_json("chat.Room", "Say", &line).await
}

async fn serve(addr: &str) -> Result<RpcServer, Box<dyn std::error::Error>> {
    let a = addr.to_string();
    let members = Arc::new(Members::default());
    let m = members.clone();
    let on_peer: OnPeer = Arc::new(move |p: &Peer| m.0.lock().unwrap().push(p.clone()));
    let srv = RpcServer::start_with(room(members), RpcOptions::default(), Some(on_peer), |cb| {
        ServerBuilder::new(a).serve_tcp(cb)
    })
    .await?;
    println!("room listening on {}", srv.local_addr());
    Ok(srv)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7100".into());
    match args.first().map(String::as_str) {
        Some("server") => {
            let srv = serve(&addr).await?;
            tokio::signal::ctrl_c().await?;
            srv.close().await;
        }
        Some("client") => {
            let name = args.get(2).cloned().unwrap_or_else(|| "guest".into());
            let (tx, _rx) = mpsc::unbounded_channel();
            let c = join(&addr, &name, tx).await?;
            let mut lines =
                tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
            while let Some(l) = lines.next_line().await? {
                println!("delivered to {} members", say(&c, &name, &l).await?);
            }
            c.close().await;
        }
        _ => {
            let srv = serve("127.0.0.1:0").await?;
            let addr = srv.local_addr().to_string();
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut clients = Vec::new();
            for name in ["alice", "bob", "carol"] {
                clients.push((name, join(&addr, name, tx.clone()).await?));
            }
            for (name, c) in &clients {
                let n = say(c, name, &format!("hello from {name}")).await?;
                assert_eq!(n, 3, "every member got the line");
            }
            for _ in 0..9 {
                tokio::time::timeout(Duration::from_secs(5), rx.recv()).await?;
            }
            println!(
                "9 deliveries: each line reached all three members through server-to-client calls"
            );
            for (_, c) in clients {
                c.close().await;
            }
            srv.close().await;
        }
    }
    Ok(())
}
