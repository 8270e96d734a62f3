//! Frames survive any fragmentation: concatenated, cut at arbitrary boundaries and fed through a
//! receive buffer the way a session feeds its reader, they decode to the same frames.

use bytes::{Buf, BytesMut};
use getty_core::Decoded;
use getty_rpc::frame::{self, CodecId, DEFAULT_MAX_FRAME, Frame, Kind};
use getty_rpc::status::Status;
use proptest::prelude::*;

/// Feeds `chunks` one at a time into a buffer, taking every whole frame off its front after
/// each chunk, as a session's read loop does. Checks the announced length of a partial frame.
fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, want: &[Frame]) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match frame::decode(&buf, DEFAULT_MAX_FRAME).expect("valid frames must decode") {
                Decoded::Package { pkg, len } => {
                    assert!(len > 0 && len <= buf.len());
                    buf.advance(len);
                    out.push(pkg);
                }
                Decoded::Split { .. } => unreachable!("frame::decode copies; it never splits"),
                Decoded::NeedMore { pkg_len } => {
                    if buf.len() >= frame::HEADER_LEN {
                        let next = want.get(out.len()).expect("more bytes than frames");
                        assert_eq!(pkg_len, Some(frame::encoded_len(next)));
                        assert!(buf.len() < frame::encoded_len(next));
                    } else {
                        assert_eq!(pkg_len, None);
                    }
                    break;
                }
            }
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

fn concat(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        frame::encode(f, &mut b).unwrap();
    }
    b
}

fn kind() -> impl Strategy<Value = Kind> {
    (1u8..=6).prop_map(|b| Kind::from_u8(b).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, at most 4 bytes a char, so always within the 255-byte name limit.
    proptest::collection::vec(any::<char>(), 0..12).prop_map(|v| v.into_iter().collect())
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        (
            kind(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<u64>(),
            any::<u32>(),
        ),
        (
            text(),
            text(),
            proptest::collection::vec((text(), text()), 0..4),
            proptest::collection::vec(any::<u8>(), 0..80),
        ),
    )
        .prop_map(
            |((kind, codec, flags, status, seq, timeout_ms), (service, method, metadata, body))| {
                Frame {
                    kind,
                    // Through From, so that named values never become Other(..).
                    codec: CodecId::from(codec),
                    flags,
                    status: Status::from(status),
                    seq,
                    timeout_ms,
                    service: service.into(),
                    method: method.into(),
                    metadata,
                    body: body.into(),
                }
            },
        )
}

/// Sorted, deduplicated cut points within `0..=len`, from arbitrary raw numbers.
fn cuts(raw: &[usize], len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = raw.iter().map(|r| r % (len + 1)).collect();
    c.push(0);
    c.push(len);
    c.sort_unstable();
    c.dedup();
    c
}

fn chunks<'a>(bytes: &'a [u8], cuts: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    cuts.windows(2).map(move |w| &bytes[w[0]..w[1]])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_frames_split_anywhere(
        frames in proptest::collection::vec(arb_frame(), 0..8),
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let bytes = concat(&frames);
        let cuts = cuts(&raw_cuts, bytes.len());
        let got = feed(chunks(&bytes, &cuts), &frames);
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = frame::decode(&bytes, DEFAULT_MAX_FRAME);
        let _ = frame::decode(&bytes, 40);
        // Also behind a valid prefix, so that the meta parser sees the garbage.
        let mut v = b"GT\x01\x01\x01\x00\x00\x00".to_vec();
        v.extend_from_slice(&[0; 12]);
        v.extend_from_slice(&(bytes.len().min(65535) as u32).to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&bytes);
        let _ = frame::decode(&v, DEFAULT_MAX_FRAME);
    }
}

fn small_example() -> Vec<Frame> {
    vec![
        Frame::request(1, CodecId::Json, "greeter.Greeter", "SayHello", "{}")
            .with_timeout_ms(250)
            .with_metadata("k", "v"),
        Frame::ping(1),
        Frame::error(1, Status::BadRequest, "bad body"),
        Frame::one_way(2, CodecId::Protobuf, "a.B", "c", vec![8, 1]),
    ]
}

#[test]
fn every_single_cut_of_a_small_example() {
    let frames = small_example();
    let bytes = concat(&frames);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(feed([a, b], &frames), frames, "cut at {cut}");
    }
}

#[test]
fn every_pair_of_cuts_of_a_small_example() {
    let frames = small_example();
    let bytes = concat(&frames);
    for i in 0..=bytes.len() {
        for j in i..=bytes.len() {
            let parts = [&bytes[..i], &bytes[i..j], &bytes[j..]];
            assert_eq!(feed(parts, &frames), frames, "cuts at {i}, {j}");
        }
    }
}

#[test]
fn one_byte_at_a_time() {
    let frames = small_example();
    let bytes = concat(&frames);
    assert_eq!(feed(bytes.chunks(1), &frames), frames);
}
