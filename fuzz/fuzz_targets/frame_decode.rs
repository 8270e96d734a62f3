//! `getty_rpc::frame::decode` on arbitrary bytes: never panics, and whatever it accepts is exactly
//! what `encode` produces (the wire format has one encoding per frame).
#![no_main]

use bytes::BytesMut;
use getty_core::Decoded;
use getty_rpc::frame::{self, DEFAULT_MAX_FRAME, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8], max: usize) {
    let got = frame::decode(data, max);
    // The header check agrees with the decoder.
    let header = frame::peek_header(data, max);
    match &got {
        Ok(Decoded::Package { pkg, len }) => {
            let len = *len;
            assert!(len >= HEADER_LEN + 6 && len <= data.len() && len <= max);
            assert_eq!(len, frame::encoded_len(pkg));
            let h = header.clone().expect("header ok").expect("header present");
            assert_eq!(h.total_len(), len);
            // Re-encoding gives back the very bytes that were decoded.
            let mut again = BytesMut::new();
            frame::encode(pkg, &mut again).expect("a decoded frame encodes");
            assert_eq!(&again[..], &data[..len]);
            // Trailing bytes are never consumed, and every strict prefix needs more.
            assert_eq!(frame::decode(&data[..len], max), got);
            for cut in [0, 1, 2, 3, HEADER_LEN - 1, HEADER_LEN, len - 1] {
                let cut = cut.min(len - 1);
                let want = if cut < HEADER_LEN { None } else { Some(len) };
                assert_eq!(
                    frame::decode(&data[..cut], max),
                    Ok(Decoded::NeedMore { pkg_len: want }),
                    "prefix of {cut} bytes"
                );
            }
        }
        Ok(Decoded::Split { .. }) => unreachable!("frame::decode copies; it never splits"),
        Ok(Decoded::NeedMore { pkg_len }) => match pkg_len {
            None => {
                assert!(data.len() < HEADER_LEN);
                assert_eq!(header, Ok(None));
            }
            Some(n) => {
                // The announced length is known from the header alone, is more than what is
                // buffered, and is within the limit: the receiver may reserve it safely.
                assert!(data.len() >= HEADER_LEN && *n > data.len() && *n <= max);
                assert_eq!(header.expect("header ok").expect("present").total_len(), *n);
            }
        },
        Err(_) => {
            // A header error is the decoder's error.
            if let Err(e) = &header {
                assert_eq!(got.as_ref().unwrap_err(), e);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, DEFAULT_MAX_FRAME);
    check(data, usize::MAX);
    // A limit that the input itself straddles.
    check(data, data.len().saturating_sub(1).max(HEADER_LEN));
    // A stricter limit only adds errors.
    if frame::decode(data, usize::MAX).is_err() {
        assert!(frame::decode(data, DEFAULT_MAX_FRAME).is_err());
    }
});
