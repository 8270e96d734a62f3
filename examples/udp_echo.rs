//! UDP echo with getty-core: one endpoint (one socket, one session) serving two clients.
//! Each datagram is one length-prefixed package; the endpoint's `on_message` gets a handle bound
//! to the sender, so its reply goes back to whoever sent the package.
//!
//! ```text
//! cargo run --example udp_echo                 # endpoint and clients in one process, then exit
//! cargo run --example udp_echo -- server 127.0.0.1:7001
//! cargo run --example udp_echo -- client 127.0.0.1:7001
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use getty::core::{
    EventListener, LengthPrefixed, Session, SessionConfig, SessionOptions, UdpClient, UdpEndpoint,
    new_session,
};
use tokio::sync::mpsc;

struct EchoEndpoint;

impl EventListener<Bytes> for EchoEndpoint {
    fn on_message(&self, s: &Session<Bytes>, pkg: Bytes) {
        // `s` is bound to the sender: the reply is a datagram to that peer.
        println!(
            "endpoint: {:?} from {}",
            String::from_utf8_lossy(&pkg),
            s.remote_addr().map_or("-".into(), |a| a.to_string())
        );
        if let Err(e) = s.try_send_pkg(&pkg) {
            eprintln!("endpoint: reply failed: {e}");
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
    SessionOptions::default()
        // Longer datagrams are dropped and counted in stats().dropped_pkgs.
        .max_msg_len(8 << 10)
}

fn configure(l: Arc<dyn EventListener<Bytes>>) -> getty::core::NewSessionCallback<Bytes> {
    new_session(move |c: &mut SessionConfig<Bytes>| {
        c.set_name("udp-echo")
            .set_pkg_handler(Arc::new(LengthPrefixed))
            .set_event_listener(l.clone())
            .set_options(options());
        Ok(())
    })
}

async fn run_client(
    addr: &str,
    name: &str,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = UdpClient::connect(addr, options(), configure(Arc::new(EchoClient(tx)))).await?;
    let s = client.session();
    for i in 0..rounds {
        let msg = Bytes::from(format!("{name}: hello #{i}"));
        s.write_pkg(&msg, None).await?;
        // UDP may lose a datagram: wait a little, then say so instead of hanging.
        match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            Ok(Some(got)) => {
                println!("{name}: echo {:?}", String::from_utf8_lossy(&got));
                assert_eq!(got, msg);
            }
            _ => return Err(format!("{name}: no echo for #{i}").into()),
        }
    }
    println!("{name}: {}", s.stat());
    client.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7001".to_string());
    match args.first().map(String::as_str) {
        Some("server") => {
            let ep = UdpEndpoint::bind(&addr, options(), configure(Arc::new(EchoEndpoint))).await?;
            println!("endpoint: bound to {}", ep.local_addr());
            tokio::signal::ctrl_c().await?;
            ep.close().await;
        }
        Some("client") => run_client(&addr, "client", 10).await?,
        _ => {
            let ep = UdpEndpoint::bind("127.0.0.1:0", options(), configure(Arc::new(EchoEndpoint)))
                .await?;
            let addr = ep.local_addr().to_string();
            println!("endpoint: bound to {addr}");
            let (a, b) = tokio::join!(
                run_client(&addr, "client-a", 3),
                run_client(&addr, "client-b", 3)
            );
            a?;
            b?;
            println!("endpoint: {}", ep.session().stat());
            ep.close().await;
        }
    }
    Ok(())
}
