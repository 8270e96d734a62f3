//! WebSocket-over-TLS echo with getty-core: `serve_wss` / `connect_wss`, the client verifying
//! the server's certificate against a CA. Certificates are made at run time (see
//! `support/certs.rs`); the listener and codec are the same as over TCP.
//!
//! ```text
//! cargo run --example wss_echo                 # server and client in one process, then exit
//! cargo run --example wss_echo -- certs /tmp/getty-certs        # write a demo CA and certs
//! cargo run --example wss_echo -- server 127.0.0.1:7005 /tmp/getty-certs
//! cargo run --example wss_echo -- client wss://localhost:7005/echo /tmp/getty-certs
//! ```

#[path = "support/certs.rs"]
mod certs;

#[path = "support/echo.rs"]
mod echo;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use echo::{EchoServer, configure, echo_client, echo_rounds};
use getty::core::{ClientBuilder, ServerBuilder, SessionOptions, TlsClientConfig, TlsServerConfig};

const PATH: &str = "/echo";

fn options() -> SessionOptions {
    SessionOptions::default()
        .cron_period(Duration::from_secs(1))
        .max_msg_len(64 << 10)
}

async fn serve(
    addr: &str,
    tls: TlsServerConfig,
) -> getty::core::Result<getty::core::Server<Bytes>> {
    ServerBuilder::new(addr)
        .session_options(options())
        .handshake_timeout(Duration::from_secs(3))
        .serve_wss(
            PATH,
            tls,
            configure("wss-echo", Arc::new(EchoServer), options()),
        )
        .await
}

async fn run_client(
    url: &str,
    tls: TlsClientConfig,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (listener, rx) = echo_client();
    let client = ClientBuilder::new(url)
        .session_options(options())
        .reconnect_attempts(3)
        .connect_wss(tls, configure("wss-echo", listener, options()))?;
    echo_rounds(client, rx, rounds, Duration::ZERO).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    match args.first().map(String::as_str) {
        Some("certs") => certs::write(Path::new(&arg(1, "getty-certs")))?,
        Some("server") => {
            let dir = Path::new(&arg(2, "getty-certs")).to_path_buf();
            let tls = TlsServerConfig::from_pem_files(
                dir.join("server.pem"),
                dir.join("server.key"),
                None,
            )?;
            let srv = serve(&arg(1, "127.0.0.1:7005"), tls).await?;
            println!("server: listening on wss://{}{PATH}", srv.local_addr());
            tokio::signal::ctrl_c().await?;
            srv.close().await;
        }
        Some("client") => {
            let dir = Path::new(&arg(2, "getty-certs")).to_path_buf();
            let tls = TlsClientConfig::from_pem_files(dir.join("ca.pem"), None)?;
            run_client(&arg(1, &format!("wss://localhost:7005{PATH}")), tls, 10).await?;
        }
        _ => {
            let pki = certs::generate()?;
            let server_tls = TlsServerConfig::from_pem(
                pki.server_cert.as_bytes(),
                pki.server_key.as_bytes(),
                None,
            )?;
            let client_tls = TlsClientConfig::from_pem(pki.ca.as_bytes(), None)?;
            let srv = serve("127.0.0.1:0", server_tls).await?;
            let url = format!("wss://localhost:{}{PATH}", srv.local_addr().port());
            println!("server: listening on {url}");
            run_client(&url, client_tls, 5).await?;
            srv.close().await;
        }
    }
    Ok(())
}
