//! The streaming modes of the contract (`--mode stream|bidi`): the server's two streaming
//! methods and the client's load on one connection.
//!
//! Items are raw bodies: BYTES bytes of `abc…z` repeated (a JSON string of them with `--codec
//! json`), checked by length and first and last byte as the contract says.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use getty_rpc::{
    CallOptions, CodecId, Context, MethodInfo, Peer, Router, RpcError, StreamKind, StreamReceiver,
    StreamSender,
};

use crate::load::{Load, STUCK_GRACE, Tally};

pub const STREAM_SERVICE: &str = "bench.Stream";
/// Server streaming: the request item is the item size (ASCII decimal); endless items follow.
pub const ITEMS_METHOD: &str = "Items";
/// Bidirectional: every item comes back, in order.
pub const ECHO_METHOD: &str = "Echo";
/// Items in flight per bidirectional stream.
pub const BIDI_WINDOW: usize = 16;

/// One item of `len` bytes in `codec`.
pub fn item(codec: CodecId, len: usize) -> Bytes {
    let raw: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    match codec {
        CodecId::Json => Bytes::from([&b"\""[..], &raw, b"\""].concat()),
        _ => Bytes::from(raw),
    }
}

/// Whether `b` is an item of `len` bytes in `codec`: its length and first and last byte.
fn is_item(codec: CodecId, len: usize, b: &[u8]) -> bool {
    let raw = match codec {
        CodecId::Json if b.len() >= 2 => &b[1..b.len() - 1],
        CodecId::Json => return false,
        _ => b,
    };
    raw.len() == len
        && (len == 0 || (raw[0] == b'a' && raw[len - 1] == b'a' + ((len - 1) % 26) as u8))
}

fn info(name: &str, kind: StreamKind) -> MethodInfo {
    MethodInfo {
        stream: Some(kind),
        ..MethodInfo::unary(name, "bytes", "bytes", &[CodecId::Protobuf, CodecId::Json])
    }
}

/// Registers the two streaming methods.
pub fn add_streams(r: &mut Router) {
    r.add_stream_raw(
        STREAM_SERVICE,
        info(ITEMS_METHOD, StreamKind::Server),
        |ctx: Context, mut items: StreamReceiver, mut out: StreamSender| async move {
            let size = match items.next().await {
                Some(Ok(b)) => std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| s.trim_matches('"').parse::<usize>().ok())
                    .ok_or_else(|| RpcError::bad_request("the item size"))?,
                _ => return Err(RpcError::bad_request("no item size")),
            };
            let it = item(ctx.codec(), size);
            // Until the opener cancels (send then fails).
            loop {
                out.send(it.clone()).await?;
            }
        },
    );
    r.add_stream_raw(
        STREAM_SERVICE,
        info(ECHO_METHOD, StreamKind::Bidi),
        |_ctx: Context, mut items: StreamReceiver, mut out: StreamSender| async move {
            while let Some(b) = items.next().await {
                out.send(b?).await?;
            }
            Ok(())
        },
    );
}

/// `--mode stream`: P server streams on this connection, items counted in the measured window;
/// the histogram holds the gaps between consecutive items of one stream.
pub async fn drive_stream(peer: &Peer, load: &Load, size: usize) -> Tally {
    let one = |_| async move {
        let mut t = Tally::default();
        let opened = open_items(peer, load.codec, size).await;
        let mut rx = match opened {
            Ok(rx) => rx,
            Err(e) => {
                eprintln!("getty-bench: stream not opened: {e}");
                t.errors += 1;
                return t;
            }
        };
        let mut last = Instant::now();
        loop {
            let Some(r) = rx.next().await else {
                t.errors += 1; // ended before the measurement did
                return t;
            };
            let now = Instant::now();
            if now >= load.end {
                return t; // dropping the receiver cancels the stream
            }
            match r {
                Ok(b) if now >= load.measure => {
                    if is_item(load.codec, size, &b) {
                        t.calls += 1;
                        t.hist.saturating_record((now - last).as_nanos() as u64);
                    } else {
                        t.errors += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("getty-bench: stream failed: {e}");
                    t.errors += 1;
                    return t;
                }
            }
            last = now;
        }
    };
    run(load, (0..load.inflight).map(one).collect()).await
}

/// `--mode bidi`: P bidirectional streams, each with [`BIDI_WINDOW`] items in flight; the
/// histogram holds each item's time from its send to its echo.
pub async fn drive_bidi(peer: &Peer, load: &Load, size: usize) -> Tally {
    let one = |_| async move {
        let mut t = Tally::default();
        let opened = peer
            .open_stream_raw(STREAM_SERVICE, ECHO_METHOD, load.codec, CallOptions::new())
            .await;
        let (mut tx, mut rx) = match opened {
            Ok(halves) => halves,
            Err(e) => {
                eprintln!("getty-bench: stream not opened: {e}");
                t.errors += 1;
                return t;
            }
        };
        let it = item(load.codec, size);
        let mut sent: VecDeque<Instant> = VecDeque::with_capacity(BIDI_WINDOW);
        for _ in 0..BIDI_WINDOW {
            if tx.send(it.clone()).await.is_err() {
                t.errors += 1;
                return t;
            }
            sent.push_back(Instant::now());
        }
        loop {
            let Some(r) = rx.next().await else {
                t.errors += 1;
                return t;
            };
            let now = Instant::now();
            if now >= load.end {
                return t;
            }
            let t0 = sent.pop_front().unwrap_or(now);
            match r {
                Ok(b) if b == it => {
                    if now >= load.measure {
                        t.calls += 1;
                        t.hist.saturating_record((now - t0).as_nanos() as u64);
                    }
                }
                Ok(_) => t.errors += 1,
                Err(e) => {
                    eprintln!("getty-bench: stream failed: {e}");
                    t.errors += 1;
                    return t;
                }
            }
            if tx.send(it.clone()).await.is_err() {
                t.errors += 1;
                return t;
            }
            sent.push_back(Instant::now());
        }
    };
    run(load, (0..load.inflight).map(one).collect()).await
}

/// Runs a connection's streams in one task; a stream still stuck after the grace is an error.
async fn run<F: std::future::Future<Output = Tally>>(
    load: &Load,
    mut all: FuturesUnordered<F>,
) -> Tally {
    let mut total = Tally::default();
    let grace = tokio::time::Instant::from_std(load.end + STUCK_GRACE);
    let _ = tokio::time::timeout_at(grace, async {
        while let Some(t) = all.next().await {
            total.merge(&t);
        }
    })
    .await;
    total.errors += all.len() as u64;
    total
}

/// Opens the endless item stream: sends the item size, then half-closes.
async fn open_items(peer: &Peer, codec: CodecId, size: usize) -> Result<StreamReceiver, RpcError> {
    let (mut tx, rx) = peer
        .open_stream_raw(STREAM_SERVICE, ITEMS_METHOD, codec, CallOptions::new())
        .await?;
    let req = match codec {
        CodecId::Json => format!("\"{size}\""),
        _ => size.to_string(),
    };
    tx.send(Bytes::from(req)).await?;
    tx.finish();
    Ok(rx)
}
