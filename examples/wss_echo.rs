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

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use getty::core::{
    ClientBuilder, EventListener, LengthPrefixed, ServerBuilder, Session, SessionConfig,
    SessionOptions, TlsClientConfig, TlsServerConfig, new_session,
};
use tokio::sync::mpsc;

const PATH: &str = "/echo";

struct EchoServer;

impl EventListener<Bytes> for EchoServer {
    fn on_open(&self, s: &Session<Bytes>) -> Result<(), String> {
        println!("server: open {s}");
        Ok(())
    }
    fn on_close(&self, s: &Session<Bytes>) {
        println!("server: close {s}");
    }
    fn on_message(&self, s: &Session<Bytes>, pkg: Bytes) {
        if let Err(e) = s.try_send_pkg(&pkg) {
            eprintln!("server: reply failed: {e}");
        }
    }
}

struct EchoClient(mpsc::UnboundedSender<Bytes>);

impl EventListener<Bytes> for EchoClient {
    fn on_message(&self, _s: &Session<Bytes>, pkg: Bytes) {
        let _ = self.0.send(pkg);
    }
}

fn options() -> SessionOptions {
    SessionOptions {
        cron_period: Duration::from_secs(1),
        max_msg_len: 64 << 10,
        ..Default::default()
    }
}

fn configure(l: Arc<dyn EventListener<Bytes>>) -> getty::core::NewSessionCallback<Bytes> {
    new_session(move |c: &mut SessionConfig<Bytes>| {
        c.set_name("wss-echo")
            .set_pkg_handler(Arc::new(LengthPrefixed))
            .set_event_listener(l.clone())
            .set_options(options());
        Ok(())
    })
}

async fn serve(
    addr: &str,
    tls: TlsServerConfig,
) -> getty::core::Result<getty::core::Server<Bytes>> {
    ServerBuilder::new(addr)
        .session_options(options())
        .handshake_timeout(Duration::from_secs(3))
        .serve_wss(PATH, tls, configure(Arc::new(EchoServer)))
        .await
}

async fn run_client(
    url: &str,
    tls: TlsClientConfig,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = ClientBuilder::new(url)
        .session_options(options())
        .reconnect_attempts(3)
        .connect_wss(tls, configure(Arc::new(EchoClient(tx))))?;
    client.ready().await?;
    let s = client.session().ok_or("no session")?;
    for i in 0..rounds {
        let msg = Bytes::from(format!("hello #{i} over {}", s.endpoint_type()));
        s.write_pkg(&msg, None).await?;
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await?
            .ok_or("closed")?;
        println!("client: echo {:?}", String::from_utf8_lossy(&got));
        assert_eq!(got, msg);
    }
    println!("client: {}", s.stat());
    client.close().await;
    Ok(())
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
