//! WebSocket echo with getty-core: the same listener and codec as over TCP, with each package
//! one binary message. The client's cron sends a WebSocket ping each period (the server's
//! active time moves with it, with no application data).
//!
//! ```text
//! cargo run --example ws_echo                  # server and client in one process, then exit
//! cargo run --example ws_echo -- server 127.0.0.1:7002
//! cargo run --example ws_echo -- client ws://127.0.0.1:7002/echo
//! ```

#[path = "support/echo.rs"]
mod echo;

use std::sync::Arc;
use std::time::Duration;

use echo::{EchoServer, configure, echo_client, echo_rounds};
use getty::core::{ClientBuilder, ServerBuilder, SessionOptions};

const PATH: &str = "/echo";

fn options() -> SessionOptions {
    SessionOptions::default()
        .cron_period(Duration::from_millis(200))
        // Also the WebSocket layer's message and frame limit.
        .max_msg_len(64 << 10)
}

async fn run_client(url: &str, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (listener, rx) = echo_client();
    let client = ClientBuilder::new(url)
        .session_options(options())
        .connect_ws(configure("ws-echo", listener, options()))?;
    echo_rounds(client, rx, rounds, Duration::from_millis(150)).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => {
            let addr = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "127.0.0.1:7002".to_string());
            let srv = ServerBuilder::new(&addr)
                .session_options(options())
                .serve_ws(PATH, configure("ws-echo", Arc::new(EchoServer), options()))
                .await?;
            println!("server: listening on ws://{}{PATH}", srv.local_addr());
            tokio::signal::ctrl_c().await?;
            srv.close().await;
        }
        Some("client") => {
            let url = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| format!("ws://127.0.0.1:7002{PATH}"));
            run_client(&url, 10).await?
        }
        _ => {
            let srv = ServerBuilder::new("127.0.0.1:0")
                .session_options(options())
                .serve_ws(PATH, configure("ws-echo", Arc::new(EchoServer), options()))
                .await?;
            let url = format!("ws://{}{PATH}", srv.local_addr());
            println!("server: listening on {url}");
            run_client(&url, 5).await?;
            srv.close().await;
        }
    }
    Ok(())
}
