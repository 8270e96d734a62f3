//! Request/response between two processes, with a JSON body or a Protobuf body: the same
//! prost message type serves both codecs.
//!
//! ```text
//! cargo run --example rpc_echo                 # starts a server process, calls it both ways, stops it
//! cargo run --example rpc_echo -- server 127.0.0.1:7200
//! cargo run --example rpc_echo -- client 127.0.0.1:7200 json|protobuf
//! ```

use std::process::{Command, Stdio};
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{CallOptions, CodecId, Context, Prost, Router, RpcClient, RpcOptions, RpcServer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
struct EchoReply {
    #[prost(string, tag = "1")]
    text: String,
    /// Which codec the server saw, to show the reply uses the request's codec.
    #[prost(string, tag = "2")]
    codec: String,
}

async fn server(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut r = Router::new();
    r.add_prost(
        "echo.Echo",
        "Echo",
        |ctx: Context, req: EchoRequest| async move {
            Ok(EchoReply {
                text: req.text,
                codec: ctx.codec().to_string(),
            })
        },
    );
    let a = addr.to_string();
    let srv = RpcServer::start(r, RpcOptions::default(), |cb| {
        ServerBuilder::new(a).serve_tcp(cb)
    })
    .await?;
    // The parent process reads this line to learn the port.
    println!("listening {}", srv.local_addr());
    tokio::signal::ctrl_c().await?;
    srv.close().await;
    Ok(())
}

async fn client(addr: &str, codecs: &[CodecId]) -> Result<(), Box<dyn std::error::Error>> {
    let a = addr.to_string();
    let c = RpcClient::start(Router::new(), RpcOptions::default(), |cb| {
        ClientBuilder::new(a).connect_tcp(cb)
    })?;
    c.ready().await?;
    for &codec in codecs {
        let req = EchoRequest {
            text: format!("hello in {codec}"),
        };
        let reply: EchoReply = c
            .peer()?
            .call::<Prost, _, _>("echo.Echo", "Echo", &req, CallOptions::new().codec(codec))
            .await?;
        println!(
            "client: sent {:?}, got {:?} (server decoded {})",
            req.text, reply.text, reply.codec
        );
        assert_eq!(reply.text, req.text);
    }
    c.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7200".into());
    match args.first().map(String::as_str) {
        Some("server") => server(&addr).await,
        Some("client") => {
            let codec = match args.get(2).map(String::as_str) {
                Some("json") => CodecId::Json,
                _ => CodecId::Protobuf,
            };
            client(&addr, &[codec]).await
        }
        _ => {
            // Two processes: this one is the client; a child runs the server.
            let mut child = tokio::process::Command::from({
                let mut c = Command::new(std::env::current_exe()?);
                c.args(["server", "127.0.0.1:0"]).stdout(Stdio::piped());
                c
            })
            .kill_on_drop(true)
            .spawn()?;
            let out = child.stdout.take().ok_or("no stdout")?;
            let mut lines = BufReader::new(out).lines();
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await??;
            let addr = line
                .and_then(|l| l.strip_prefix("listening ").map(str::to_string))
                .ok_or("server did not start")?;
            println!("server process {} on {addr}", child.id().unwrap_or(0));
            client(&addr, &[CodecId::Json, CodecId::Protobuf]).await?;
            child.kill().await?;
            Ok(())
        }
    }
}
