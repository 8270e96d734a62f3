//! Body decoding of arbitrary bytes with the two body strategies: `Json` (serde types) and
//! `Prost` (prost messages, over Protobuf and JSON). Any input gives `Ok` or an `Err` with a
//! status, never a panic; what decodes re-encodes and decodes to the same value.
#![no_main]

use std::collections::BTreeMap;

use bytes::BytesMut;
use getty_rpc::{BodyCodec, CodecId, Json, Prost, Status};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Dot,
    Line(u32),
    Box { w: i64, h: i64 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Plain {
    name: String,
    age: Option<i64>,
    tags: Vec<String>,
    scores: BTreeMap<String, u32>,
    shape: Shape,
    #[serde(default)]
    nested: Option<Box<Plain>>,
    flag: bool,
    raw: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Oneof, Serialize, Deserialize)]
enum Choice {
    #[prost(string, tag = "10")]
    Text(String),
    #[prost(sint64, tag = "11")]
    Number(i64),
    #[prost(message, tag = "12")]
    Inner(Inner),
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
struct Inner {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
    #[prost(fixed32, repeated, tag = "2")]
    fixed: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
struct Msg {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint64, tag = "2")]
    id: u64,
    #[prost(int32, repeated, tag = "3")]
    packed: Vec<i32>,
    #[prost(message, optional, tag = "4")]
    inner: Option<Inner>,
    // A BTreeMap so that the encoding is deterministic (a HashMap's order is not).
    #[prost(btree_map = "string, int64", tag = "5")]
    counts: BTreeMap<String, i64>,
    #[prost(bool, tag = "6")]
    on: bool,
    #[prost(double, tag = "7")]
    ratio: f64,
    #[prost(message, repeated, tag = "8")]
    children: Vec<Inner>,
    #[prost(enumeration = "Level", tag = "9")]
    level: i32,
    #[prost(oneof = "Choice", tags = "10, 11, 12")]
    choice: Option<Choice>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration, Serialize, Deserialize)]
#[repr(i32)]
enum Level {
    Low = 0,
    High = 1,
}

fn err_status<T>(r: &Result<T, getty_rpc::RpcError>) -> Option<Status> {
    r.as_ref().err().map(|e| e.status)
}

/// Decode, and if that worked, encode and decode again: the same value.
fn json_round_trip<T>(data: &[u8])
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Send + 'static,
{
    let r = <Json as BodyCodec<T>>::decode(CodecId::Json, data);
    match r {
        Ok(v) => {
            let mut out = BytesMut::new();
            <Json as BodyCodec<T>>::encode(CodecId::Json, &v, &mut out).expect("re-encode");
            let again = <Json as BodyCodec<T>>::decode(CodecId::Json, &out).expect("re-decode");
            assert_eq!(v, again);
        }
        Err(e) => assert_eq!(e.status, Status::BadRequest, "{e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // Json over serde types.
    json_round_trip::<Plain>(data);
    json_round_trip::<Vec<Option<String>>>(data);
    json_round_trip::<(u64, i8, String)>(data);
    let v = <Json as BodyCodec<serde_json::Value>>::decode(CodecId::Json, data);
    if let Err(e) = &v {
        assert_eq!(e.status, Status::BadRequest);
    }
    // Codecs a strategy does not speak are refused, whatever the bytes.
    for c in [
        CodecId::None,
        CodecId::Protobuf,
        CodecId::Other(data.len() as u8 | 3),
    ] {
        let r = <Json as BodyCodec<Plain>>::decode(c, data);
        assert_eq!(err_status(&r), Some(Status::UnsupportedCodec));
    }

    // Prost over Protobuf.
    match <Prost as BodyCodec<Msg>>::decode(CodecId::Protobuf, data) {
        Ok(m) => {
            let mut out = BytesMut::new();
            <Prost as BodyCodec<Msg>>::encode(CodecId::Protobuf, &m, &mut out).unwrap();
            let again = <Prost as BodyCodec<Msg>>::decode(CodecId::Protobuf, &out).unwrap();
            // f64 NaN != NaN: compare the encodings instead.
            let mut out2 = BytesMut::new();
            <Prost as BodyCodec<Msg>>::encode(CodecId::Protobuf, &again, &mut out2).unwrap();
            assert_eq!(out, out2);
        }
        Err(e) => assert_eq!(e.status, Status::BadRequest, "{e}"),
    }
    // Prost messages over JSON.
    if let Err(e) = <Prost as BodyCodec<Msg>>::decode(CodecId::Json, data) {
        assert_eq!(e.status, Status::BadRequest, "{e}");
    }
    let r = <Prost as BodyCodec<Msg>>::decode(CodecId::None, data);
    assert_eq!(err_status(&r), Some(Status::UnsupportedCodec));
});
