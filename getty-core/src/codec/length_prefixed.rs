//! A ready [`ReadWriter`](crate::ReadWriter): each package is a 4-byte big-endian length followed
//! by that many bytes. Used by the examples and tests, and a sane default for byte messages.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Decoded, Reader, Writer};
use crate::error::CodecError;

/// Length-prefixed byte packages: `u32` big-endian body length, then the body.
#[derive(Clone, Copy, Debug, Default)]
pub struct LengthPrefixed;

/// Size of the length header.
pub const HEADER_LEN: usize = 4;

impl Reader<Bytes> for LengthPrefixed {
    fn read(&self, buf: &[u8]) -> Result<Decoded<Bytes>, CodecError> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(Decoded::NeedMore { pkg_len: None });
        };
        let total = HEADER_LEN as u64 + u32::from_be_bytes(*header) as u64;
        let total =
            usize::try_from(total).map_err(|_| CodecError::msg("length does not fit in memory"))?;
        if buf.len() < total {
            return Ok(Decoded::NeedMore {
                pkg_len: Some(total),
            });
        }
        // The body is handed over without a copy (see `read_owned`).
        Ok(Decoded::Split { len: total })
    }

    fn read_owned(&self, pkg: Bytes) -> Result<Bytes, CodecError> {
        Ok(pkg.slice(HEADER_LEN..))
    }
}

impl Writer<Bytes> for LengthPrefixed {
    fn write(&self, pkg: &Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        let len = u32::try_from(pkg.len())
            .map_err(|_| CodecError::msg("package longer than u32::MAX"))?;
        dst.reserve(HEADER_LEN + pkg.len());
        dst.put_u32(len);
        dst.put_slice(pkg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> BytesMut {
        let mut d = BytesMut::new();
        LengthPrefixed
            .write(&Bytes::copy_from_slice(b), &mut d)
            .unwrap();
        d
    }

    #[test]
    fn roundtrip_and_partial() {
        let frame = enc(b"hello");
        assert_eq!(&frame[..], b"\0\0\0\x05hello");
        for cut in 0..frame.len() {
            let got = LengthPrefixed.read(&frame[..cut]).unwrap();
            let want = if cut < 4 { None } else { Some(9) };
            assert_eq!(got, Decoded::NeedMore { pkg_len: want });
        }
        assert_eq!(
            LengthPrefixed.read(&frame).unwrap(),
            Decoded::Split { len: 9 }
        );
        assert_eq!(LengthPrefixed.read_owned(frame.freeze()).unwrap(), "hello");
    }

    #[test]
    fn huge_length_is_only_announced() {
        let got = LengthPrefixed.read(&[0xff, 0xff, 0xff, 0xff, 1]).unwrap();
        assert_eq!(
            got,
            Decoded::NeedMore {
                pkg_len: Some(4 + u32::MAX as usize)
            }
        );
    }
}
