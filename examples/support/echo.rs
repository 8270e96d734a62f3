//! What the echo examples share: the server and client listeners, the session set-up, and the
//! client's echo rounds. Each example only picks a transport.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use getty::core::{
    Client, EventListener, LengthPrefixed, NewSessionCallback, Session, SessionConfig,
    SessionOptions, new_session,
};
use tokio::sync::mpsc;

/// Echoes every package back.
pub struct EchoServer;

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

/// Hands every package it receives to the waiting client code.
pub struct EchoClient(pub mpsc::UnboundedSender<Bytes>);

impl EventListener<Bytes> for EchoClient {
    fn on_message(&self, _s: &Session<Bytes>, pkg: Bytes) {
        let _ = self.0.send(pkg);
    }
}

/// A client listener and the channel its packages arrive on.
pub fn echo_client() -> (Arc<EchoClient>, mpsc::UnboundedReceiver<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(EchoClient(tx)), rx)
}

/// Length-prefixed packages, the given listener and options: the same for every transport.
pub fn configure(
    name: &'static str,
    listener: Arc<dyn EventListener<Bytes>>,
    options: SessionOptions,
) -> NewSessionCallback<Bytes> {
    new_session(move |c: &mut SessionConfig<Bytes>| {
        c.set_name(name)
            .set_pkg_handler(Arc::new(LengthPrefixed))
            .set_event_listener(listener.clone())
            .set_options(options.clone());
        Ok(())
    })
}

/// Sends `rounds` messages on the client's session and checks each echo, then closes.
pub async fn echo_rounds(
    client: Client<Bytes>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    rounds: usize,
    pause: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
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
        tokio::time::sleep(pause).await;
    }
    println!("client: {}", s.stat());
    client.close().await;
    Ok(())
}
