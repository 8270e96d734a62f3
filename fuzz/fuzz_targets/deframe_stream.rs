//! The session's deframing loop over arbitrary bytes cut into arbitrary chunks, with the two
//! readers that ship: getty-core's `LengthPrefixed` and getty-rpc's `FrameCodec`.
//!
//! The loop mirrors `getty-core/src/session/driver.rs` (`read_loop` + `Deframer::step`, which are
//! private): append a chunk, take whole packages off the front, check the announced length
//! against the max message length *before* reserving room for it. Checked here:
//! - the public `Reader` contract: never panics; `Package.len` is in `1..=buffered`;
//!   `NeedMore.pkg_len`, when given, is more than what is buffered;
//! - nothing is ever reserved beyond the max message length;
//! - the outcome does not depend on how the bytes were cut (the same packages; the same end,
//!   except that a failure may be reported as over-long or as refused by the reader, depending
//!   on how many bytes had arrived: with a limit below the 28-byte RPC header, 20 buffered bytes
//!   are already too long in one case and a bad header in the other; both close the session);
//! - `LengthPrefixed`: the packages are exactly the bytes that were sent.
//!
//! Input: byte 0 picks the reader and the limit, byte 1 seeds the chunk sizes, the rest is the
//! byte stream.
#![no_main]

use bytes::{Buf, BytesMut};
use getty_core::length_prefixed::HEADER_LEN as LP_HEADER;
use getty_core::{Decoded, LengthPrefixed, Reader};
use getty_rpc::frame::{Frame, FrameCodec};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum End {
    /// Stream consumed; this many bytes of an unfinished package are left.
    Open(usize),
    /// The announced or buffered length is over the max message length.
    TooLong,
    /// The reader refused the bytes.
    Codec,
}

/// Runs the deframing loop; returns the packages and how it ended.
fn deframe<P, R: Reader<P>>(reader: &R, chunks: &[&[u8]], max: usize) -> (Vec<P>, End) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match reader.read(&buf) {
                Ok(Decoded::Package { pkg, len }) => {
                    assert!(len > 0 && len <= buf.len(), "bad package length {len}");
                    if max > 0 && len > max {
                        return (out, End::TooLong);
                    }
                    buf.advance(len);
                    out.push(pkg);
                }
                Ok(Decoded::Split { len }) => {
                    assert!(len > 0 && len <= buf.len(), "bad split length {len}");
                    if max > 0 && len > max {
                        return (out, End::TooLong);
                    }
                    match reader.read_owned(buf.split_to(len).freeze()) {
                        Ok(pkg) => out.push(pkg),
                        Err(_) => return (out, End::Codec),
                    }
                }
                Ok(Decoded::NeedMore { pkg_len }) => {
                    if let Some(n) = pkg_len {
                        assert!(n > buf.len(), "announced {n} with {} buffered", buf.len());
                    }
                    let known = pkg_len.unwrap_or(buf.len()).max(buf.len());
                    if max > 0 && known > max {
                        return (out, End::TooLong);
                    }
                    if let Some(n) = pkg_len {
                        let extra = n - buf.len();
                        assert!(max == 0 || buf.len() + extra <= max);
                        // Reserve as the driver does, but only when the limit bounds it.
                        if max > 0 {
                            buf.reserve(extra);
                        }
                    }
                    break;
                }
                Err(_) => return (out, End::Codec),
            }
        }
    }
    (out, End::Open(buf.len()))
}

/// Cuts `data` into chunks of 1..=64 bytes from a xorshift sequence seeded by `seed`.
fn cut(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut x = u32::from(seed) | 0x100;
    let mut chunks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % 64 + 1).min(rest.len());
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    chunks
}

fn check_lp(stream: &[u8], seed: u8, max: usize) {
    let (whole, end) = deframe(&LengthPrefixed, &[stream], max);
    let (parts, end2) = deframe(&LengthPrefixed, &cut(stream, seed), max);
    assert_eq!(whole, parts);
    assert_eq!(end, end2);
    // The packages are the stream's bytes, each behind its 4-byte length.
    let mut at = 0;
    for p in &whole {
        let len = u32::from_be_bytes(stream[at..at + LP_HEADER].try_into().unwrap()) as usize;
        assert_eq!(len, p.len());
        assert_eq!(&stream[at + LP_HEADER..at + LP_HEADER + len], &p[..]);
        at += LP_HEADER + len;
    }
    if let End::Open(left) = end {
        assert_eq!(at + left, stream.len());
    }
}

fn check_frames(stream: &[u8], seed: u8, max: usize) {
    let codec = FrameCodec::new(if max == 0 { usize::MAX } else { max });
    let (whole, end): (Vec<Frame>, End) = deframe(&codec, &[stream], max);
    let (parts, end2) = deframe(&codec, &cut(stream, seed), max);
    assert_eq!(whole, parts);
    assert_eq!(failed(&end), failed(&end2));
    if !failed(&end) {
        assert_eq!(end, end2);
    }
}

fn failed(e: &End) -> bool {
    matches!(e, End::TooLong | End::Codec)
}

fuzz_target!(|data: &[u8]| {
    let [sel, seed, stream @ ..] = data else {
        return;
    };
    let max = match sel >> 1 & 3 {
        0 => 0,
        1 => 64,
        2 => 4 << 20,
        _ => stream.len() / 2 + 1,
    };
    if sel & 1 == 0 {
        check_lp(stream, *seed, max);
    } else {
        check_frames(stream, *seed, max);
    }
});
