//! `getty call` on a streaming method: a server stream's items are printed one JSON line each
//! as they arrive; a client stream's items are read from stdin, one JSON text per line; a
//! bidirectional stream does both at once. Ctrl-C cancels: the stream's receiver is dropped,
//! which tells the peer.

use std::pin::pin;

use clap::ValueEnum;
use getty_rpc::{CallOptions, CodecId, Peer, StreamReceiver, StreamSender};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::call::reply_text;
use crate::output;
use crate::target::call_failure;
use crate::{Failure, Result};

/// The shape of a streaming method, as reflection names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// One request, items back.
    Server,
    /// Items from stdin, one reply.
    Client,
    /// Items from stdin, items back.
    Bidi,
}

impl Kind {
    /// From reflection's `"stream"` field.
    pub fn from_reflection(s: &str) -> Option<Kind> {
        match s {
            "server" => Some(Kind::Server),
            "client" => Some(Kind::Client),
            "bidi" => Some(Kind::Bidi),
            _ => None,
        }
    }
}

/// What a streaming call needs besides the peer.
pub struct Call<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub kind: Kind,
    /// A server stream's request (`null` if none was given).
    pub request: Option<Vec<u8>>,
    pub opts: CallOptions,
    pub compact: bool,
}

pub async fn run(peer: &Peer, c: Call<'_>) -> Result {
    let mut ctrl_c = pin!(interrupted()?);
    let (mut tx, rx) = peer
        .open_stream_raw(c.service, c.method, CodecId::Json, c.opts)
        .await
        .map_err(call_failure)?;
    // A client stream's one reply is laid out as a unary call's; stream items one per line.
    let pretty = c.kind == Kind::Client && !c.compact;
    let mut print = pin!(print_items(rx, pretty));
    if c.kind == Kind::Server {
        let req = c.request.unwrap_or_else(|| b"null".to_vec());
        tx.send(req.into()).await.map_err(call_failure)?;
        tx.finish();
        return tokio::select! {
            // Returning drops the receiver: the peer is told to stop.
            _ = &mut ctrl_c => Ok(()),
            r = &mut print => r,
        };
    }
    let mut feed = pin!(feed_stdin(tx));
    let mut fed = false;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            r = &mut feed, if !fed => {
                r?;
                fed = true;
            }
            r = &mut print => return r,
        }
    }
}

/// Ctrl-C, listened for from this call on (not from the first poll): a SIGINT just after the
/// first items must cancel the stream, not kill the process.
fn interrupted() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sig = signal(SignalKind::interrupt())
            .map_err(|e| Failure::usage(format!("cannot listen for Ctrl-C: {e}")))?;
        Ok(async move {
            sig.recv().await;
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Prints each item as it arrives, until the stream ends; the stream's error fails the call.
async fn print_items(mut rx: StreamReceiver, pretty: bool) -> Result {
    use futures_util::StreamExt;
    while let Some(item) = rx.next().await {
        let item = item.map_err(call_failure)?;
        let text = reply_text(&item)?;
        if !output::line(&output::json_layout(text, pretty)) {
            // stdout is gone: nobody reads the rest, so cancel it.
            return Ok(());
        }
    }
    Ok(())
}

/// Sends each non-blank line of stdin as one item, then half-closes (the sender dropped). A
/// send that fails means the stream is over; the receiving side reports why.
async fn feed_stdin(mut tx: StreamSender) -> Result {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut n = 0u64;
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
        let Some(line) = line else { return Ok(()) };
        n += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| Failure::usage(format!("stdin line {n} is not valid JSON: {e}")))?;
        if tx.send(text.to_string().into()).await.is_err() {
            return std::future::pending().await;
        }
    }
}
