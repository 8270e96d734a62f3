//! Request/response between two processes, with a JSON body or a Protobuf body: the same
//! prost message type, generated from `proto/echo.proto`, serves both codecs (Protobuf, and
//! JSON in the proto3 mapping).
//!
//! ```text
//! cargo run --example rpc_echo                 # starts a server process, calls it both ways, stops it
//! cargo run --example rpc_echo -- server 127.0.0.1:7200
//! cargo run --example rpc_echo -- client 127.0.0.1:7200 json|protobuf
//! ```

use std::process::{Command, Stdio};
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{CallOptions, CodecId, Context, Router, RpcClient, RpcOptions, RpcServer};
use getty_proto::echo::{Echo, EchoClient, EchoReply, EchoRequest, EchoServer};
use tokio::io::{AsyncBufReadExt, BufReader};

/// `echo.Echo`: sends back the payload and text, and says which codec the request came in.
struct Service;

impl Echo for Service {
    async fn echo(
        &self,
        ctx: Context,
        req: EchoRequest,
    ) -> Result<EchoReply, getty::rpc::RpcError> {
        Ok(EchoReply {
            payload: req.payload,
            text: req.text,
            codec: ctx.codec().to_string(),
        })
    }
}

/// The server's services (also started in-process by the conformance tests).
pub fn router() -> Router {
    let mut r = Router::new();
    EchoServer::register(&mut r, std::sync::Arc::new(Service));
    r
}

async fn server(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let r = router();
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
    let echo = EchoClient::new(c.peer()?);
    for &codec in codecs {
        let req = EchoRequest {
            payload: vec![0, 1, 2, 255],
            text: format!("hello in {codec}"),
        };
        let reply = echo
            .echo_with(&req, CallOptions::new().codec(codec))
            .await?;
        println!(
            "client: sent {:?}, got {:?} (server decoded {})",
            req.text, reply.text, reply.codec
        );
        assert_eq!((reply.payload, reply.text), (req.payload, req.text));
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
