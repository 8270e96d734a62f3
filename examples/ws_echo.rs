//! WebSocket echo with getty-core: the same listener and codec as over TCP, with each package
//! one binary message. The client's cron sends a WebSocket ping each period (the server's
//! active time moves with it, with no application data).
//!
//! ```text
//! cargo run --example ws_echo                  # server and client in one process, then exit
//! cargo run --example ws_echo -- server 127.0.0.1:7002
//! cargo run --example ws_echo -- client ws://127.0.0.1:7002/echo
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use getty::core::{
    ClientBuilder, EventListener, LengthPrefixed, ServerBuilder, Session, SessionConfig,
    SessionOptions, new_session,
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
        cron_period: Duration::from_millis(200),
        // Also the WebSocket layer's message and frame limit.
        max_msg_len: 64 << 10,
        ..Default::default()
    }
}

fn configure(l: Arc<dyn EventListener<Bytes>>) -> getty::core::NewSessionCallback<Bytes> {
    new_session(move |c: &mut SessionConfig<Bytes>| {
        c.set_name("ws-echo")
            .set_pkg_handler(Arc::new(LengthPrefixed))
            .set_event_listener(l.clone())
            .set_options(options());
        Ok(())
    })
}

async fn run_client(url: &str, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = ClientBuilder::new(url)
        .session_options(options())
        .connect_ws(configure(Arc::new(EchoClient(tx))))?;
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
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    println!("client: {}", s.stat());
    // Sends a close frame with code 1000: the server sees a normal close.
    client.close().await;
    Ok(())
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
                .serve_ws(PATH, configure(Arc::new(EchoServer)))
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
                .serve_ws(PATH, configure(Arc::new(EchoServer)))
                .await?;
            let url = format!("ws://{}{PATH}", srv.local_addr());
            println!("server: listening on {url}");
            run_client(&url, 5).await?;
            srv.close().await;
        }
    }
    Ok(())
}
