//! TCP echo with getty-core alone, as getty's tcp-echo: length-prefixed packages, a heartbeat
//! sent from `on_cron`, and the server closing sessions idle for too long.
//!
//! ```text
//! cargo run --example tcp_echo                 # server and client in one process, then exit
//! cargo run --example tcp_echo -- server 127.0.0.1:7000
//! cargo run --example tcp_echo -- client 127.0.0.1:7000
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use getty::core::{
    ClientBuilder, EventListener, LengthPrefixed, ServerBuilder, Session, SessionConfig,
    SessionOptions, new_session,
};
use tokio::sync::mpsc;

const PING: &[u8] = b"ping";
const PONG: &[u8] = b"pong";
/// The server closes a session that sent nothing (not even a heartbeat) for this long.
const SESSION_TIMEOUT: Duration = Duration::from_secs(3);

struct EchoServer;

impl EventListener<Bytes> for EchoServer {
    fn on_open(&self, s: &Session<Bytes>) -> Result<(), String> {
        println!("server: open {s}");
        Ok(())
    }
    fn on_close(&self, s: &Session<Bytes>) {
        println!("server: close {s}");
    }
    fn on_cron(&self, s: &Session<Bytes>) {
        if s.idle() > SESSION_TIMEOUT {
            println!("server: {} idle for {:?}, closing", s.id(), s.idle());
            s.close();
        }
    }
    fn on_message(&self, s: &Session<Bytes>, pkg: Bytes) {
        let reply = if pkg == PING {
            Bytes::from_static(PONG)
        } else {
            pkg
        };
        if let Err(e) = s.try_send_pkg(&reply) {
            eprintln!("server: reply failed: {e}");
        }
    }
}

struct EchoClient(mpsc::UnboundedSender<Bytes>);

impl EventListener<Bytes> for EchoClient {
    fn on_cron(&self, s: &Session<Bytes>) {
        let _ = s.try_send_pkg(&Bytes::from_static(PING));
    }
    fn on_message(&self, _s: &Session<Bytes>, pkg: Bytes) {
        let _ = self.0.send(pkg);
    }
}

fn options() -> SessionOptions {
    SessionOptions::default()
        .cron_period(Duration::from_millis(500))
        .max_msg_len(64 << 10)
}

fn configure(l: Arc<dyn EventListener<Bytes>>) -> getty::core::NewSessionCallback<Bytes> {
    new_session(move |c: &mut SessionConfig<Bytes>| {
        c.set_name("echo")
            .set_pkg_handler(Arc::new(LengthPrefixed))
            .set_event_listener(l.clone())
            .set_options(options());
        Ok(())
    })
}

async fn run_client(addr: &str, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = ClientBuilder::new(addr)
        .connections(2)
        .connect_tcp(configure(Arc::new(EchoClient(tx))))?;
    client.ready().await?;
    for i in 0..rounds {
        let s = client.session().ok_or("no session")?;
        let msg = Bytes::from(format!("hello #{i} over session {}", s.id()));
        s.write_pkg(&msg, None).await?;
        loop {
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await?
                .ok_or("closed")?;
            if got == PONG {
                println!("client: heartbeat answered");
                continue;
            }
            println!("client: echo {:?}", String::from_utf8_lossy(&got));
            assert_eq!(got, msg);
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for s in client.sessions() {
        println!("client: {}", s.stat());
    }
    client.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    match args.first().map(String::as_str) {
        Some("server") => {
            let srv = ServerBuilder::new(&addr)
                .serve_tcp(configure(Arc::new(EchoServer)))
                .await?;
            println!("server: listening on {}", srv.local_addr());
            tokio::signal::ctrl_c().await?;
            srv.close().await;
        }
        Some("client") => run_client(&addr, 10).await?,
        _ => {
            let srv = ServerBuilder::new("127.0.0.1:0")
                .serve_tcp(configure(Arc::new(EchoServer)))
                .await?;
            println!("server: listening on {}", srv.local_addr());
            run_client(&srv.local_addr().to_string(), 5).await?;
            srv.close().await;
        }
    }
    Ok(())
}
