//! How typed messages become frame bodies, per codec.
//!
//! A frame says which codec its body uses, so one method can serve a JSON peer and a Protobuf
//! peer. The strategy is a type parameter rather than a blanket impl on the message, because a
//! prost message is also a serde type and Rust cannot pick between two blanket impls:
//! [`Json`] serves any serde type over JSON; [`Prost`] serves prost messages over Protobuf *and*
//! JSON. The JSON of a prost message is whatever its serde impls write: getty-rpc-build
//! generates the proto3 canonical JSON mapping (PROTOCOL.md section 6.1), and `()` (what
//! `google.protobuf.Empty` becomes) is written `{}` as that mapping says, read from `{}`,
//! `null` or an empty body.

use std::any::TypeId;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::RpcError;
use crate::frame::CodecId;
use crate::status::Status;

/// Encodes and decodes `T` as a body in a given codec.
pub trait BodyCodec<T>: Send + Sync + 'static {
    /// The codecs this strategy speaks; the first is the default for calls.
    const CODECS: &'static [CodecId];
    fn encode(codec: CodecId, v: &T, dst: &mut BytesMut) -> Result<(), RpcError>;
    fn decode(codec: CodecId, body: &[u8]) -> Result<T, RpcError>;
    /// Decodes a body that is already shared (a frame's body): what the framework calls. A
    /// strategy may keep parts of `body` instead of copying them; [`Prost`] does for `bytes`
    /// fields declared as `bytes::Bytes` (prost's `bytes = "bytes"`).
    fn decode_shared(codec: CodecId, body: &Bytes) -> Result<T, RpcError> {
        Self::decode(codec, body)
    }
}

/// serde types, JSON codec.
pub struct Json;
/// prost messages (with serde derives), Protobuf and JSON codecs.
pub struct Prost;

fn unsupported(codec: CodecId) -> RpcError {
    RpcError::new(
        Status::UnsupportedCodec,
        format!("codec {codec} is not supported for this message"),
    )
}

fn json_encode<T: Serialize>(v: &T, dst: &mut BytesMut) -> Result<(), RpcError> {
    serde_json::to_writer(dst.writer(), v)
        .map_err(|e| RpcError::internal(format!("JSON encode: {e}")))
}

fn json_decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(body).map_err(|e| RpcError::bad_request(format!("JSON decode: {e}")))
}

impl<T: Serialize + DeserializeOwned + Send + 'static> BodyCodec<T> for Json {
    const CODECS: &'static [CodecId] = &[CodecId::Json];
    fn encode(codec: CodecId, v: &T, dst: &mut BytesMut) -> Result<(), RpcError> {
        match codec {
            CodecId::Json => json_encode(v, dst),
            c => Err(unsupported(c)),
        }
    }
    fn decode(codec: CodecId, body: &[u8]) -> Result<T, RpcError> {
        match codec {
            CodecId::Json => json_decode(body),
            c => Err(unsupported(c)),
        }
    }
}

/// Whether `T` is `()`, the Rust side of `google.protobuf.Empty`, whose proto3 JSON is `{}`
/// while serde renders `()` as `null`.
fn is_empty_message<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<()>()
}

/// `{}` (any object: unknown fields are ignored), `null`, or nothing at all.
fn empty_json_decode(body: &[u8]) -> Result<(), RpcError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Option<serde::de::IgnoredAny>>(body) {
        Ok(None) => Ok(()),
        Ok(Some(_)) if body.trim_ascii_start().starts_with(b"{") => Ok(()),
        Ok(Some(_)) => Err(RpcError::bad_request(
            "JSON decode: google.protobuf.Empty is {} (or null)",
        )),
        Err(e) => Err(RpcError::bad_request(format!("JSON decode: {e}"))),
    }
}

impl<T> BodyCodec<T> for Prost
where
    T: prost::Message + Default + Serialize + DeserializeOwned + Send + 'static,
{
    const CODECS: &'static [CodecId] = &[CodecId::Protobuf, CodecId::Json];
    fn encode(codec: CodecId, v: &T, dst: &mut BytesMut) -> Result<(), RpcError> {
        match codec {
            CodecId::Protobuf => {
                dst.reserve(v.encoded_len());
                v.encode(dst)
                    .map_err(|e| RpcError::internal(format!("protobuf encode: {e}")))
            }
            CodecId::Json if is_empty_message::<T>() => {
                dst.extend_from_slice(b"{}");
                Ok(())
            }
            CodecId::Json => json_encode(v, dst),
            c => Err(unsupported(c)),
        }
    }
    fn decode(codec: CodecId, body: &[u8]) -> Result<T, RpcError> {
        match codec {
            CodecId::Protobuf => {
                T::decode(body).map_err(|e| RpcError::bad_request(format!("protobuf decode: {e}")))
            }
            CodecId::Json if is_empty_message::<T>() => {
                empty_json_decode(body).map(|()| T::default())
            }
            CodecId::Json => json_decode(body),
            c => Err(unsupported(c)),
        }
    }
    fn decode_shared(codec: CodecId, body: &Bytes) -> Result<T, RpcError> {
        match codec {
            // Decoding from `Bytes` lets prost slice `bytes::Bytes` fields out of the body.
            CodecId::Protobuf => T::decode(body.clone())
                .map_err(|e| RpcError::bad_request(format!("protobuf decode: {e}"))),
            _ => Self::decode(codec, body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
    struct Blob {
        #[prost(bytes = "bytes", tag = "1")]
        #[serde(with = "as_vec")]
        data: Bytes,
    }

    mod as_vec {
        use bytes::Bytes;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(b.iter())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
            Vec::<u8>::deserialize(d).map(Bytes::from)
        }
    }

    fn inside(part: &Bytes, whole: &Bytes) -> bool {
        let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
        p >= w && p + part.len() <= w + whole.len()
    }

    #[test]
    fn shared_protobuf_bodies_lend_their_bytes_fields() {
        let msg = Blob {
            data: Bytes::from(vec![7u8; 4096]),
        };
        let mut buf = BytesMut::new();
        <Prost as BodyCodec<Blob>>::encode(CodecId::Protobuf, &msg, &mut buf).unwrap();
        let body = buf.freeze();
        let shared = <Prost as BodyCodec<Blob>>::decode_shared(CodecId::Protobuf, &body).unwrap();
        assert_eq!(shared, msg);
        assert!(inside(&shared.data, &body), "decoded without a copy");
        let copied = <Prost as BodyCodec<Blob>>::decode(CodecId::Protobuf, &body).unwrap();
        assert_eq!(copied, msg);
        assert!(!inside(&copied.data, &body));
        // Other codecs take the copying path unchanged.
        let json = Bytes::from_static(br#"{"data":[1,2,3]}"#);
        let j = <Prost as BodyCodec<Blob>>::decode_shared(CodecId::Json, &json).unwrap();
        assert_eq!(&j.data[..], &[1, 2, 3]);
    }

    #[test]
    fn empty_is_an_empty_object_in_json_and_null_is_read_too() {
        let mut buf = BytesMut::new();
        <Prost as BodyCodec<()>>::encode(CodecId::Json, &(), &mut buf).unwrap();
        assert_eq!(&buf[..], b"{}");
        for ok in [&b"{}"[..], b" { \"x\": 1 } ", b"null", b"", b" \n"] {
            <Prost as BodyCodec<()>>::decode(CodecId::Json, ok).unwrap();
        }
        for bad in [&b"[]"[..], b"1", b"{", b"\"x\""] {
            let e = <Prost as BodyCodec<()>>::decode(CodecId::Json, bad).unwrap_err();
            assert_eq!(e.status, Status::BadRequest, "{bad:?}");
        }
        // Serde's own JSON strategy keeps serde's rule: `()` is `null`.
        let mut buf = BytesMut::new();
        <Json as BodyCodec<()>>::encode(CodecId::Json, &(), &mut buf).unwrap();
        assert_eq!(&buf[..], b"null");
    }
}
