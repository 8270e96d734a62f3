//! A calculator defined as a Rust trait with `#[getty::rpc::service]` (serde types, JSON on
//! the wire), called both ways: the client calls the server's `calc.Calculator`, and the
//! server calls the client's `calc.Display` back on the same connection.
//!
//! ```text
//! cargo run --example calc_serde                          # both in one process, then exit
//! cargo run --example calc_serde -- server 127.0.0.1:7003
//! cargo run --example calc_serde -- client 127.0.0.1:7003
//! ```

use std::sync::Arc;
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{CallOptions, Context, Router, RpcClient, RpcError, RpcOptions, RpcServer};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct Operands {
    pub a: i64,
    pub b: i64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Quotient {
    pub quotient: i64,
    pub remainder: i64,
}

/// Integer arithmetic, served by the server.
// `crate = ...` because this crate reaches getty-rpc through the `getty` facade.
#[getty::rpc::service(name = "calc.Calculator", crate = "::getty::rpc")]
pub trait Calculator {
    /// Adds two numbers (and shows the sum on the caller's display first).
    async fn add(&self, ctx: Context, req: Operands) -> Result<i64, RpcError>;
    /// Divides `a` by `b`; fails when `b` is zero.
    async fn div(&self, ctx: Context, req: Operands) -> Result<Quotient, RpcError>;
    /// Writes a line to the server's log; no reply.
    #[oneway]
    async fn log(&self, ctx: Context, line: String);
}

/// A display, served by the client: the server calls it.
#[getty::rpc::service(name = "calc.Display", crate = "::getty::rpc")]
pub trait Display {
    /// Shows a line; answers what it showed.
    async fn show(&self, ctx: Context, line: String) -> Result<String, RpcError>;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, ctx: Context, req: Operands) -> Result<i64, RpcError> {
        let sum = req.a + req.b;
        // The caller serves calc.Display: call it back on the same connection.
        let shown = DisplayClient::new(ctx.peer().clone())
            .show(&format!("{} + {} = {sum}", req.a, req.b))
            .await?;
        println!("server: the client showed {shown:?}");
        Ok(sum)
    }

    async fn div(&self, _ctx: Context, req: Operands) -> Result<Quotient, RpcError> {
        if req.b == 0 {
            return Err(RpcError::handler("division by zero"));
        }
        Ok(Quotient {
            quotient: req.a / req.b,
            remainder: req.a % req.b,
        })
    }

    async fn log(&self, ctx: Context, line: String) {
        println!("server: log from {:?}: {line}", ctx.peer().remote_addr());
    }
}

struct Screen;

impl Display for Screen {
    async fn show(&self, _ctx: Context, line: String) -> Result<String, RpcError> {
        println!("client: display: {line}");
        Ok(format!("[{line}]"))
    }
}

async fn start_server(addr: &str) -> Result<RpcServer, Box<dyn std::error::Error>> {
    let mut router = Router::new();
    CalculatorServer::register(&mut router, Arc::new(Calc));
    let addr = addr.to_string();
    let server = RpcServer::start(router, RpcOptions::default(), |cb| {
        ServerBuilder::new(addr).serve_tcp(cb)
    })
    .await?;
    println!(
        "server: serving {} ({}) on {}",
        CalculatorServer::NAME,
        CalculatorServer::METHODS.join(", "),
        server.local_addr()
    );
    Ok(server)
}

/// Connects, serving calc.Display, and runs the calls; returns the client.
async fn run_client(addr: &str) -> Result<RpcClient, Box<dyn std::error::Error>> {
    let mut router = Router::new();
    DisplayServer::register(&mut router, Arc::new(Screen));
    let client = RpcClient::start(router, RpcOptions::default(), |cb| {
        ClientBuilder::new(addr)
            .reconnect_interval(Duration::from_millis(200))
            .reconnect_attempts(10)
            .connect_tcp(cb)
    })?;
    client
        .ready()
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;

    let calc = CalculatorClient::new(client.peer()?);
    let sum = calc.add(&Operands { a: 40, b: 2 }).await?;
    println!("client: add(40, 2) = {sum}");
    let q = calc
        .div_with(
            &Operands { a: 7, b: 2 },
            CallOptions::new().timeout(Duration::from_secs(1)),
        )
        .await?;
    println!("client: div(7, 2) = {q:?}");
    match calc.div(&Operands { a: 1, b: 0 }).await {
        Err(e) => println!("client: div(1, 0) failed as it should: {e}"),
        Ok(q) => return Err(format!("div(1, 0) = {q:?}?").into()),
    }
    calc.log(&"the client is done".to_string()).await?;
    Ok(client)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {
            let server = start_server("127.0.0.1:0").await?;
            let client = run_client(&server.local_addr().to_string()).await?;
            // The server calls the client on its own too, not only from inside a handler.
            let peer = server.peers().pop().ok_or("the server has no peer")?;
            let shown = DisplayClient::new(peer)
                .show(&"hello from the server".to_string())
                .await?;
            println!("server: the client showed {shown:?}");
            client.close().await;
            server.close().await;
            println!("done");
        }
        ["server", addr] => {
            let server = start_server(addr).await?;
            println!("server: Ctrl-C to stop");
            tokio::signal::ctrl_c().await?;
            server.close().await;
        }
        ["client", addr] => {
            let client = run_client(addr).await?;
            // Let the one-way log leave before closing.
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.close().await;
            println!("client: done");
        }
        _ => {
            eprintln!("usage: calc_serde [server ADDR | client ADDR]");
            std::process::exit(2);
        }
    }
    Ok(())
}
