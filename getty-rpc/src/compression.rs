//! Per-call zstd compression of bodies (feature `zstd`), negotiated through the Hello.
//!
//! A peer that can read compressed bodies says so with the Hello feature `"zstd"`
//! (`PROTOCOL.md` section 16); only then does the other side compress, so an older peer never
//! gets a body it cannot read. A compressed body is one zstd frame and its frame header has
//! flag bit 1 (`0x02`) set (section 3); Requests, OneWays and Responses may be compressed, each on its
//! own (bodies of at least `RpcOptions::compress_above` bytes). Calls sent before the peer's
//! Hello has arrived go uncompressed.
//!
//! Inflating is bounded: a body never grows past the frame limit (`max_frame`), and the output
//! buffer grows with the bytes actually produced, so a small frame that would inflate to
//! gigabytes costs at most the limit before it is refused (`BAD_REQUEST`; the connection stays).

use bytes::Bytes;

use crate::error::RpcError;
use crate::frame::Frame;
use crate::peer::ConnState;

/// Frame flag bit 1: the body is one zstd frame.
pub const FLAG_ZSTD: u8 = 0x02;

/// The Hello feature of a peer that reads zstd bodies.
pub(crate) const FEATURE: &str = "zstd";

/// Whether this end announces (and so reads) compressed bodies.
pub(crate) fn enabled(opts: &crate::options::RpcOptions) -> bool {
    cfg!(feature = "zstd") && opts.compress_above.is_some()
}

/// Compresses `f`'s body in place when both ends do and it is large enough; a body that does
/// not shrink is sent as it is.
pub(crate) fn deflate(state: &ConnState, f: &mut Frame) {
    #[cfg(feature = "zstd")]
    {
        use std::sync::atomic::Ordering;
        let Some(above) = state.opts.compress_above else {
            return;
        };
        if f.body.len() < above.max(1) || !state.peer_zstd.load(Ordering::Acquire) {
            return;
        }
        thread_local! {
            // A compression context is large to set up: one per thread, reused.
            static CCTX: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let z = CCTX.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = zstd::bulk::Compressor::new(1).ok();
            }
            c.as_mut().and_then(|c| c.compress(&f.body).ok())
        });
        if let Some(z) = z
            && z.len() < f.body.len()
        {
            f.body = Bytes::from(z);
            f.flags |= FLAG_ZSTD;
        }
    }
    #[cfg(not(feature = "zstd"))]
    let _ = (state, f);
}

/// Inflates `f`'s body in place if it is flagged, to at most the frame limit. An end that
/// did not announce zstd ignores the flag, as every receiver ignored the flags byte before.
pub(crate) fn inflate(state: &ConnState, f: &mut Frame) -> Result<(), RpcError> {
    if f.flags & FLAG_ZSTD == 0 || !enabled(&state.opts) {
        return Ok(());
    }
    f.body = inflate_bytes(&f.body, state.opts.max_frame)?;
    f.flags &= !FLAG_ZSTD;
    Ok(())
}

#[cfg(feature = "zstd")]
fn inflate_bytes(z: &[u8], limit: usize) -> Result<Bytes, RpcError> {
    use std::io::Read;
    let bad = |why: String| RpcError::bad_request(format!("compressed body: {why}"));
    // A declared size over the limit is refused before anything is allocated for it.
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(z) {
        if n > limit as u64 {
            return Err(bad(format!(
                "inflates to {n} bytes, over the limit of {limit}"
            )));
        }
        // The declared size (within the limit) is the whole allocation: one pass, reused
        // context. A frame that lies about its size fails here.
        thread_local! {
            static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        return DCTX.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = zstd::bulk::Decompressor::new().ok();
            }
            let d = d.as_mut().ok_or_else(|| bad("no zstd context".into()))?;
            d.decompress(z, n as usize)
                .map(Bytes::from)
                .map_err(|e| bad(e.to_string()))
        });
    }
    // No declared size: inflate as a stream, the buffer growing with what comes out.
    let dec = zstd::stream::read::Decoder::with_buffer(z).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    // One byte past the limit tells "too big" from "exactly the limit".
    dec.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(e.to_string()))?;
    if out.len() > limit {
        return Err(bad(format!("inflates past the limit of {limit} bytes")));
    }
    Ok(Bytes::from(out))
}

#[cfg(not(feature = "zstd"))]
fn inflate_bytes(_: &[u8], _: usize) -> Result<Bytes, RpcError> {
    unreachable!("`enabled` is false without the feature")
}
