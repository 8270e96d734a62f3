//! TCP+TLS echo with getty-core, with mutual TLS: the server requires a client certificate
//! issued by its CA, and the client verifies the server against the same CA. Certificates are
//! made at run time (see `support/certs.rs`); the listener and codec are the TCP ones.
//!
//! ```text
//! cargo run --example tls_echo                 # server and client in one process, then exit
//! cargo run --example tls_echo -- certs /tmp/getty-certs        # write a demo CA and certs
//! cargo run --example tls_echo -- server 127.0.0.1:7004 /tmp/getty-certs
//! cargo run --example tls_echo -- client localhost:7004 /tmp/getty-certs
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

async fn serve(
    addr: &str,
    tls: TlsServerConfig,
) -> getty::core::Result<getty::core::Server<Bytes>> {
    ServerBuilder::new(addr)
        // A peer that connects and never finishes the handshake is dropped after this.
        .handshake_timeout(Duration::from_secs(3))
        .serve_tls(
            tls,
            configure("tls-echo", Arc::new(EchoServer), SessionOptions::default()),
        )
        .await
}

async fn run_client(
    addr: &str,
    tls: TlsClientConfig,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (listener, rx) = echo_client();
    let client = ClientBuilder::new(addr).reconnect_attempts(3).connect_tls(
        tls,
        configure("tls-echo", listener, SessionOptions::default()),
    )?;
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
                Some(&dir.join("ca.pem")),
            )?;
            let srv = serve(&arg(1, "127.0.0.1:7004"), tls).await?;
            println!("server: listening on {}", srv.local_addr());
            tokio::signal::ctrl_c().await?;
            srv.close().await;
        }
        Some("client") => {
            let dir = Path::new(&arg(2, "getty-certs")).to_path_buf();
            let tls = TlsClientConfig::from_pem_files(
                dir.join("ca.pem"),
                Some((&dir.join("client.pem"), &dir.join("client.key"))),
            )?;
            run_client(&arg(1, "localhost:7004"), tls, 10).await?;
        }
        _ => {
            let pki = certs::generate()?;
            let server_tls = TlsServerConfig::from_pem(
                pki.server_cert.as_bytes(),
                pki.server_key.as_bytes(),
                Some(pki.ca.as_bytes()),
            )?;
            let client_tls = TlsClientConfig::from_pem(
                pki.ca.as_bytes(),
                Some((pki.client_cert.as_bytes(), pki.client_key.as_bytes())),
            )?;
            let srv = serve("127.0.0.1:0", server_tls).await?;
            println!("server: listening on {}", srv.local_addr());
            // The certificate is for `localhost`: dial by that name.
            run_client(
                &format!("localhost:{}", srv.local_addr().port()),
                client_tls,
                5,
            )
            .await?;
            srv.close().await;
        }
    }
    Ok(())
}
