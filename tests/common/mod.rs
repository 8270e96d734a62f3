//! Shared helpers for the TCP session tests: a listener that reports every event on a channel;
//! and for RPC tests, the server's end of a connection.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use getty::core::{
    EventListener, LengthPrefixed, Session, SessionConfig, SessionOptions, new_session,
};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Open(u64),
    Msg(u64, Bytes),
    Cron(u64),
    Error(u64, String),
    Close(u64),
}

/// Records events; optionally echoes every message back.
pub struct Recorder {
    pub tx: mpsc::UnboundedSender<Ev>,
    pub echo: bool,
    pub reject: bool,
}

impl EventListener<Bytes> for Recorder {
    fn on_open(&self, s: &Session<Bytes>) -> Result<(), String> {
        if self.reject {
            return Err("rejected by test".into());
        }
        let _ = self.tx.send(Ev::Open(s.id()));
        Ok(())
    }
    fn on_close(&self, s: &Session<Bytes>) {
        let _ = self.tx.send(Ev::Close(s.id()));
    }
    fn on_error(&self, s: &Session<Bytes>, e: &getty::core::Error) {
        let _ = self.tx.send(Ev::Error(s.id(), e.to_string()));
    }
    fn on_cron(&self, s: &Session<Bytes>) {
        let _ = self.tx.send(Ev::Cron(s.id()));
    }
    fn on_message(&self, s: &Session<Bytes>, pkg: Bytes) {
        if self.echo {
            let _ = s.try_send_pkg(&pkg);
        }
        let _ = self.tx.send(Ev::Msg(s.id(), pkg));
    }
}

pub fn recorder(echo: bool) -> (Arc<Recorder>, mpsc::UnboundedReceiver<Ev>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Arc::new(Recorder {
            tx,
            echo,
            reject: false,
        }),
        rx,
    )
}

/// A new-session callback using length-prefixed framing, the given listener and options.
pub fn setup(
    l: Arc<dyn EventListener<Bytes>>,
    opts: SessionOptions,
) -> getty::core::NewSessionCallback<Bytes> {
    new_session(move |c: &mut SessionConfig<Bytes>| {
        c.set_pkg_handler(Arc::new(LengthPrefixed))
            .set_event_listener(l.clone())
            .set_options(opts.clone());
        Ok(())
    })
}

pub async fn next(rx: &mut mpsc::UnboundedReceiver<Ev>) -> Ev {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("timed out waiting for an event")
        .expect("event channel closed")
}

/// Next event that is not a cron tick.
pub async fn next_non_cron(rx: &mut mpsc::UnboundedReceiver<Ev>) -> Ev {
    loop {
        match next(rx).await {
            Ev::Cron(_) => continue,
            e => return e,
        }
    }
}

pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Waits until `f` holds, polling; panics after 5 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = tokio::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The server's end of its only connection (once the server has seen it).
pub async fn server_peer(server: &getty::rpc::RpcServer) -> getty::rpc::Peer {
    for _ in 0..500 {
        if let Some(p) = server.peers().pop() {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never saw the client");
}
