//! Per-call zstd compression of bodies (feature `zstd`), negotiated through the Hello.
//!
//! A peer that can read compressed bodies says so with the Hello feature `"zstd"`
//! (`PROTOCOL.md` section 16); only then does the other side compress, so an older peer never
//! gets a body it cannot read. A compressed body is one zstd frame and its frame header has
//! flag bit 1 (`0x02`) set (section 3); Requests, OneWays and Responses may be compressed, each on its
//! own (bodies of at least `RpcOptions::compress_above` bytes). Calls sent before the peer's
//! Hello has arrived go uncompressed.
//!
//! Inflating is bounded (see [`inflate_body`]): a body never grows past the frame limit
//! (`max_frame`). A frame that declares its size is refused before anything is allocated when
//! that size is over the limit; one that does not is inflated into a buffer grown by hand,
//! never past the limit, and refused as soon as it would pass it; and the decoder's window is
//! capped so that a frame header cannot make it allocate more than the limit either. A small
//! frame that would inflate to gigabytes is refused (`BAD_REQUEST`; the connection stays).

#[cfg(feature = "zstd")]
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
    #[cfg(feature = "zstd")]
    {
        f.body = inflate_body(&f.body, state.opts.max_frame)
            .map_err(|e| RpcError::bad_request(format!("compressed body: {e}")))?;
        f.flags &= !FLAG_ZSTD;
    }
    Ok(())
}

/// Why a compressed body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The frame declares a content size over the limit (nothing was inflated).
    #[error("inflates to {declared} bytes, over the limit of {limit}")]
    DeclaredTooLarge { declared: u64, limit: usize },
    /// Inflating produced more than the limit (stopped at the first byte past it).
    #[error("inflates past the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The body ended inside a zstd frame.
    #[error("truncated zstd frame")]
    Truncated,
    /// zstd refused the data: corrupt, a window over the cap ("Frame requires too much memory
    /// for decoding"), a declared size that the content contradicts, ...
    #[error("{0}")]
    Zstd(&'static str),
    /// No memory for the decoder or the output.
    #[error("out of memory")]
    NoMemory,
}

/// The largest decoder window accepted, as a power of two, for bodies of at most `limit`
/// bytes: the largest power of two within the limit (no back-reference of a body within the
/// limit reaches further), between zstd's minimum (2^10) and its default cap (2^27). A frame
/// whose header asks for more is refused before its window is allocated. Peers that declare
/// their content size (getty's own, which compress in one pass) never need a window.
#[cfg(feature = "zstd")]
pub fn window_log_max(limit: usize) -> u32 {
    let floor = usize::BITS - 1 - limit.max(1).leading_zeros();
    floor.clamp(10, 27)
}

/// First output buffer of an inflate whose size is not declared; doubled as output comes, up
/// to the limit.
#[cfg(feature = "zstd")]
const FIRST_OUTPUT: usize = 64 * 1024;

/// Inflates the zstd body `z` (one or more zstd frames) to at most `limit` bytes.
///
/// Memory: with a declared content size (of the first frame) within the limit, exactly that
/// size is allocated and inflated in one pass (a body that inflates to more fails). Without
/// one, the output starts at 64 KiB and doubles, capped at `limit` bytes (a full buffer is
/// probed for one more byte, which is refused), and the decoder holds a window of at most
/// `2^window_log_max(limit)` bytes (never more than the limit) plus its context and block
/// buffers (about 480 KiB, in zstd's own memory). So a body costs at most
/// `limit + 2^window_log_max(limit) + 576 KiB` at any time (`tests/compression_bomb.rs`
/// measures it), whatever its frames claim.
#[cfg(feature = "zstd")]
pub fn inflate_body(z: &[u8], limit: usize) -> Result<Bytes, InflateError> {
    use zstd::zstd_safe;
    // A declared size over the limit is refused before anything is allocated for it.
    if let Ok(Some(n)) = zstd_safe::get_frame_content_size(z) {
        if n > limit as u64 {
            return Err(InflateError::DeclaredTooLarge { declared: n, limit });
        }
        // The declared size (within the limit) is the whole allocation: one pass into it, no
        // window, reused context. A body that inflates to more (a lying size, or more frames)
        // fails here.
        thread_local! {
            static DCTX: std::cell::RefCell<Option<zstd_safe::DCtx<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        return DCTX.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = zstd_safe::DCtx::try_create();
            }
            let d = d.as_mut().ok_or(InflateError::NoMemory)?;
            let mut out = Vec::new();
            out.try_reserve_exact(n as usize)
                .map_err(|_| InflateError::NoMemory)?;
            d.decompress(&mut out, z)
                .map_err(|code| InflateError::Zstd(zstd_safe::get_error_name(code)))?;
            Ok(Bytes::from(out))
        });
    }
    inflate_undeclared(z, limit).map(Bytes::from)
}

/// The streaming inflate of a body that does not declare its size: see [`inflate_body`].
#[cfg(feature = "zstd")]
fn inflate_undeclared(z: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    use zstd::zstd_safe::{self, DCtx, DParameter, InBuffer, OutBuffer};
    let zerr = |code| InflateError::Zstd(zstd_safe::get_error_name(code));
    // A fresh context: its window is freed with it, not kept per thread between bodies.
    let mut dctx = DCtx::try_create().ok_or(InflateError::NoMemory)?;
    dctx.set_parameter(DParameter::WindowLogMax(window_log_max(limit)))
        .map_err(zerr)?;
    let mut out: Vec<u8> = Vec::new();
    let mut input = InBuffer::around(z);
    loop {
        if out.len() == out.capacity() && out.capacity() < limit {
            let target = out
                .capacity()
                .saturating_mul(2)
                .max(FIRST_OUTPUT)
                .min(limit);
            out.try_reserve_exact(target - out.len())
                .map_err(|_| InflateError::NoMemory)?;
        }
        let before = (input.pos(), out.len());
        // Whether the decoder had room left to write after the call.
        let room;
        let hint = if out.len() < out.capacity() {
            let pos = out.len();
            let hint = dctx
                .decompress_stream(&mut OutBuffer::around_pos(&mut out, pos), &mut input)
                .map_err(zerr)?;
            room = out.len() < out.capacity();
            hint
        } else {
            // Full at the limit: one more byte of output is one too many. A one-byte probe
            // tells, instead of a buffer one byte larger (which would mean one more copy).
            let mut probe = [0u8; 1];
            let mut ob = OutBuffer::around(&mut probe[..]);
            let hint = dctx.decompress_stream(&mut ob, &mut input).map_err(zerr)?;
            if ob.pos() > 0 {
                return Err(InflateError::TooLarge { limit });
            }
            room = true;
            hint
        };
        let done_input = input.pos() == z.len();
        if hint == 0 && done_input {
            // The last frame is complete.
            return Ok(out);
        }
        // With room to write, no progress, or no input left for an unfinished frame, means
        // the body was cut.
        if room && (done_input || (input.pos(), out.len()) == before) {
            return Err(InflateError::Truncated);
        }
    }
}
