//! Structured frames: encode → decode is the identity, the length is announced from the header,
//! and a stream of frames cut into arbitrary chunks decodes to the same frames, in order.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::{Buf, Bytes, BytesMut};
use getty_core::{Decoded, Reader, Writer};
use getty_rpc::Status;
use getty_rpc::frame::{
    self, CodecId, DEFAULT_MAX_FRAME, Frame, FrameCodec, FrameError, Kind, MAX_META_LEN,
    MAX_NAME_LEN,
};
use libfuzzer_sys::fuzz_target;

/// Mostly short strings, sometimes over the 255-byte name limit.
fn text(u: &mut Unstructured<'_>) -> Result<String> {
    let s = String::arbitrary(u)?;
    if u.ratio(1, 16)? {
        return Ok(s.repeat(300 / s.len().max(1) + 1));
    }
    Ok(s)
}

fn arb_frame(u: &mut Unstructured<'_>) -> Result<Frame> {
    let kind = Kind::from_u8(u.int_in_range(1..=10)?).unwrap();
    let mut metadata = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        metadata.push((text(u)?, text(u)?));
    }
    // A Credit's body is its 12-byte grant (anything else is a violation, tested by decode).
    let body_len = if kind == Kind::Credit {
        frame::CREDIT_LEN
    } else {
        u.int_in_range(0..=512)?
    };
    Ok(Frame {
        kind,
        codec: CodecId::from_u8(u.arbitrary()?),
        flags: u.arbitrary()?,
        status: Status::from_code(u.arbitrary()?),
        seq: u.arbitrary()?,
        timeout_ms: u.arbitrary()?,
        service: text(u)?.into(),
        method: text(u)?.into(),
        metadata,
        body: Bytes::copy_from_slice(u.bytes(body_len)?),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(n) = u.int_in_range(1..=4u8) else {
        return;
    };
    let mut frames = Vec::new();
    let mut stream = BytesMut::new();
    for _ in 0..n {
        let Ok(f) = arb_frame(&mut u) else { return };
        let mut one = BytesMut::new();
        match frame::encode(&f, &mut one) {
            Ok(()) => {}
            Err(FrameError::NameTooLong { len, .. }) => {
                assert!(len > MAX_NAME_LEN);
                assert!(f.service.len() > MAX_NAME_LEN || f.method.len() > MAX_NAME_LEN);
                assert!(one.is_empty());
                continue;
            }
            Err(FrameError::MetaTooLong(len)) => {
                assert!(len > MAX_META_LEN);
                assert!(one.is_empty());
                continue;
            }
            Err(e) => panic!("unexpected encode error {e}"),
        }
        assert_eq!(one.len(), frame::encoded_len(&f));
        assert_eq!(
            frame::decode(&one, DEFAULT_MAX_FRAME),
            Ok(Decoded::Package {
                pkg: f.clone(),
                len: one.len()
            })
        );
        // The codec's own limit is exact, both ways.
        let codec = FrameCodec::new(one.len());
        let mut w = BytesMut::new();
        codec.write(&f, &mut w).unwrap();
        assert!(codec.read(&w).is_ok());
        let tight = FrameCodec::new(one.len() - 1);
        assert!(tight.write(&f, &mut BytesMut::new()).is_err());
        assert!(tight.read(&one).is_err());
        stream.extend_from_slice(&one);
        frames.push(f);
    }
    // Feed the stream in arbitrary chunks, the way a session's read loop does.
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let n = u
            .int_in_range(1..=rest.len().min(300))
            .unwrap_or(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match frame::decode(&buf, DEFAULT_MAX_FRAME).expect("valid frames decode") {
                Decoded::Package { pkg, len } => {
                    buf.advance(len);
                    out.push(pkg);
                }
                Decoded::Split { .. } => unreachable!("frame::decode copies; it never splits"),
                Decoded::NeedMore { pkg_len } => {
                    if let Some(n) = pkg_len {
                        assert_eq!(n, frame::encoded_len(&frames[out.len()]));
                    }
                    break;
                }
            }
        }
    }
    assert!(buf.is_empty());
    assert_eq!(out, frames);
});
