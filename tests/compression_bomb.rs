//! zstd bombs against `compression::inflate_body` (feature `zstd`), with a global allocator that
//! counts the bytes the process holds: a 16 MiB bomb, with or without a declared size, is
//! refused while the process never holds more than the limit plus the stated bound above what
//! it held before.
//!
//! The bound (see `inflate_body`): on the Rust heap, the output, at most the limit, plus
//! [`RUST_SLACK`]; in zstd's own (C) memory, which the counting allocator cannot see and
//! `ZSTD_sizeof_DCtx` reports, the window, at most `2^window_log_max(limit)`, plus the
//! decoder's context and buffers, under [`ZSTD_CONTEXT`]. With the 1 MiB limit used here: at
//! most 1 MiB + 1 MiB + 576 KiB, for bombs that inflate to 16 MiB. A `realloc` counts as its
//! new size from the moment it returns. The counting allocator is the reliability tests' own
//! (`tests/reliability/mod.rs`). Its own binary, with one test, so that nothing else
//! allocates while it measures.

use std::io::Write;

use getty::rpc::compression::{InflateError, inflate_body, window_log_max};

mod reliability;
use reliability::{Counting, peak_bytes, reset_peak};

#[global_allocator]
static ALLOC: Counting = Counting;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The frame limit of every case.
const LIMIT: usize = MIB;
/// Rust-heap bytes beyond the output (the first 64 KiB output buffer of a body refused early).
const RUST_SLACK: usize = 64 * KIB;
/// zstd's decoder context, input block and output block beyond its window (about 480 KiB).
const ZSTD_CONTEXT: usize = 512 * KIB;

/// Runs `inflate_body(z, LIMIT)` and returns its result and the most it held above what the
/// process held before (the result itself included).
fn measured(z: &[u8]) -> (Result<usize, InflateError>, usize) {
    let before = reset_peak();
    let r = inflate_body(z, LIMIT).map(|b| b.len());
    (r, peak_bytes() - before)
}

/// What zstd's decoder holds after streaming `z` (past the limit, or to its refusal) with the
/// window cap of `inflate_body`, and whether it accepted the frame. zstd allocates in C, unseen
/// by the counting allocator; `ZSTD_sizeof_DCtx` reports its context, window and buffers.
fn decoder_memory(z: &[u8]) -> (bool, usize) {
    use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};
    let mut d = DCtx::create();
    d.set_parameter(DParameter::WindowLogMax(window_log_max(LIMIT)))
        .unwrap();
    let mut input = InBuffer::around(z);
    let mut chunk = vec![0u8; 64 * KIB];
    let mut produced = 0;
    let accepted = loop {
        let mut out = OutBuffer::around(&mut chunk[..]);
        match d.decompress_stream(&mut out, &mut input) {
            Err(_) => break false,
            Ok(_) if produced > LIMIT => break true,
            Ok(_) => produced += out.pos(),
        }
    };
    (accepted, d.sizeof())
}

/// `content` as zstd frames without a declared size (a streaming encoder), with the window
/// `2^window_log` (the declared-size case is `zstd::bulk::compress`).
fn streamed(content: &[u8], level: i32, window_log: u32) -> Vec<u8> {
    let mut e = zstd::stream::Encoder::new(Vec::new(), level).unwrap();
    e.include_contentsize(false).unwrap();
    e.window_log(window_log).unwrap();
    e.write_all(content).unwrap();
    e.finish().unwrap()
}

#[test]
fn bombs_are_refused_within_the_limit_plus_the_stated_bound() {
    let wlog = window_log_max(LIMIT);
    assert_eq!(wlog, 20, "the window a 1 MiB limit allows is 1 MiB");
    let window = 1usize << wlog;

    let zeros = vec![0u8; 16 * MIB];
    // Declares 16 MiB: refused before anything is allocated for it.
    let declared = zstd::bulk::compress(&zeros, 19).unwrap();
    // No declared size, a window the cap allows: inflated until the first byte past the limit.
    let undeclared = streamed(&zeros, 3, wlog);
    // No declared size and a 16 MiB window: refused by the window cap before the window exists.
    let wide = streamed(&zeros, 19, 24);
    // Frame 1 declares 10 bytes, frame 2 (16 MiB) follows: the declared size is the allocation.
    let mut two = zstd::bulk::compress(b"0123456789", 1).unwrap();
    two.extend_from_slice(&declared);
    drop(zeros);
    for z in [&declared, &undeclared, &wide, &two] {
        assert!(z.len() < 64 * KIB, "a bomb is small: {}", z.len());
    }

    let (r, held) = measured(&declared);
    assert_eq!(
        r,
        Err(InflateError::DeclaredTooLarge {
            declared: 16 * MIB as u64,
            limit: LIMIT
        })
    );
    assert!(held <= RUST_SLACK, "declared bomb: held {held} bytes");

    let (r, held) = measured(&undeclared);
    assert_eq!(r, Err(InflateError::TooLarge { limit: LIMIT }));
    assert!(
        held <= LIMIT + RUST_SLACK,
        "undeclared bomb: held {held} bytes of Rust heap"
    );
    let (accepted, zstd_held) = decoder_memory(&undeclared);
    assert!(accepted, "the cap allows this window");
    assert!(
        zstd_held <= window + ZSTD_CONTEXT,
        "undeclared bomb: zstd held {zstd_held} bytes"
    );
    assert!(held + zstd_held <= LIMIT + window + RUST_SLACK + ZSTD_CONTEXT);

    let (r, held) = measured(&wide);
    assert!(
        matches!(r, Err(InflateError::Zstd(m)) if m.contains("too much memory")),
        "{r:?}"
    );
    assert!(held <= RUST_SLACK, "wide-window bomb: held {held} bytes");
    let (accepted, zstd_held) = decoder_memory(&wide);
    assert!(!accepted, "a 16 MiB window is refused");
    assert!(
        zstd_held <= ZSTD_CONTEXT,
        "wide-window bomb: zstd held {zstd_held} bytes"
    );

    let (r, held) = measured(&two);
    assert!(matches!(r, Err(InflateError::Zstd(_))), "{r:?}");
    assert!(
        held <= RUST_SLACK,
        "a 10-byte frame followed by a bomb: held {held} bytes"
    );

    // At the boundary, both ways: exactly the limit inflates, one byte more does not.
    let exact = vec![7u8; LIMIT];
    let over = vec![7u8; LIMIT + 1];
    for (content, want) in [
        (&exact, Ok(LIMIT)),
        (&over, Err(InflateError::TooLarge { limit: LIMIT })),
    ] {
        let (r, held) = measured(&streamed(content, 1, wlog));
        assert_eq!(r, want, "undeclared {} bytes", content.len());
        assert!(held <= LIMIT + RUST_SLACK, "held {held}");
        let r = inflate_body(&zstd::bulk::compress(content, 1).unwrap(), LIMIT).map(|b| b.len());
        let want = want.map_err(|_| InflateError::DeclaredTooLarge {
            declared: content.len() as u64,
            limit: LIMIT,
        });
        assert_eq!(r, want, "declared {} bytes", content.len());
    }

    // A body cut short, or not zstd at all, is an error, never a panic.
    let small = streamed(&[b'x'; 1000], 1, wlog);
    let cut = &small[..small.len() - 2];
    assert_eq!(inflate_body(cut, LIMIT), Err(InflateError::Truncated));
    assert_eq!(inflate_body(b"", LIMIT), Err(InflateError::Truncated));
    assert!(matches!(
        inflate_body(b"not zstd", LIMIT),
        Err(InflateError::Zstd(_))
    ));
    // Several undeclared frames are one body.
    let mut frames = streamed(b"\"ab", 1, wlog);
    frames.extend_from_slice(&streamed(b"cd\"", 1, wlog));
    assert_eq!(&inflate_body(&frames, LIMIT).unwrap()[..], b"\"abcd\"");
}
