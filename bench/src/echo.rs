//! The messages and services of the benchmark.
//!
//! `echo.Echo/Echo` is the service under test, served through [`Router::add_prost`] so that
//! both codecs go through the typed path a user would take. `bench.Control/Start` is only used
//! by `--reverse`: the client asks the server to drive the load over the same connection.

use bytes::Bytes;
use getty_rpc::{CodecId, Context, Router, RpcError};
use hdrhistogram::Histogram;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::load::{self, Load, Tally};

pub const ECHO_SERVICE: &str = "echo.Echo";
pub const ECHO_METHOD: &str = "Echo";
pub const CONTROL_SERVICE: &str = "bench.Control";
pub const START_METHOD: &str = "Start";

/// The payload is a protobuf `bytes` field held as `Bytes` (as the tonic and tarpc peers hold
/// theirs), so the server's decode slices it out of the request body instead of copying it. It
/// is printable ASCII, so JSON carries it as a plain string.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct EchoRequest {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(with = "ascii")]
    pub payload: Bytes,
}

/// Same layout as [`EchoRequest`]: an exact echo encodes to the same bytes in both codecs.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct EchoReply {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(with = "ascii")]
    pub payload: Bytes,
}

/// The JSON form of a payload: a string.
mod ascii {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(b).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d).map_err(D::Error::custom)?;
        Ok(Bytes::from(s))
    }
}

/// `--reverse`: what the server should run on the caller's connection.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct StartRequest {
    #[prost(uint32, tag = "1")]
    pub inflight: u32,
    #[prost(uint32, tag = "2")]
    pub payload: u32,
    #[prost(double, tag = "3")]
    pub warmup_secs: f64,
    #[prost(double, tag = "4")]
    pub secs: f64,
    /// The codec byte of the echo calls (1 JSON, 2 Protobuf).
    #[prost(uint32, tag = "5")]
    pub codec: u32,
    /// One task per slot (`--spawn-slots`).
    #[prost(bool, tag = "6")]
    pub spawn_slots: bool,
    /// What the server drives: 0 unary echo calls, 1 item streams it opens (`--mode stream`:
    /// the client sends the items), 2 bidirectional streams it opens (the client echoes).
    #[prost(uint32, tag = "7")]
    pub mode: u32,
}

/// `--reverse`: the figures of the run, measured by the server (the caller).
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct StartReply {
    #[prost(uint64, tag = "1")]
    pub calls: u64,
    #[prost(uint64, tag = "2")]
    pub errors: u64,
    /// The latency histogram (ns) as (bucket value, count) pairs of its recorded buckets.
    #[prost(uint64, repeated, tag = "3")]
    pub values: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    pub counts: Vec<u64>,
}

impl StartReply {
    pub fn from_tally(t: &Tally) -> Self {
        let (values, counts) = t
            .hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .unzip();
        StartReply {
            calls: t.calls,
            errors: t.errors,
            values,
            counts,
        }
    }

    pub fn into_tally(self) -> Tally {
        let mut hist: Histogram<u64> = load::histogram();
        for (v, n) in self.values.iter().zip(&self.counts) {
            let _ = hist.record_n(*v, *n);
        }
        Tally {
            hist,
            calls: self.calls,
            errors: self.errors,
        }
    }
}

/// `a..z` repeated, as every peerbench impl sends.
pub fn payload(len: usize) -> String {
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// The request body for `payload` in `codec`, encoded once and shared by every call.
pub fn request_body(codec: CodecId, payload: &str) -> Bytes {
    let req = EchoRequest {
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    };
    match codec {
        CodecId::Json => serde_json::to_vec(&req).expect("a string encodes").into(),
        _ => req.encode_to_vec().into(),
    }
}

/// Whether `reply` is the echo of `sent`. An exact echo re-encodes to the very bytes sent
/// (same layout, canonical encoders), so equal bytes are the fast path; anything else is
/// decoded and its payload compared.
pub fn is_echo(codec: CodecId, sent_body: &Bytes, sent_payload: &str, reply: &[u8]) -> bool {
    if reply == &sent_body[..] {
        return true;
    }
    let got = match codec {
        CodecId::Json => serde_json::from_slice::<EchoReply>(reply).ok(),
        _ => EchoReply::decode(reply).ok(),
    };
    got.is_some_and(|r| r.payload == sent_payload.as_bytes())
}

/// Adds `echo.Echo/Echo` (both codecs).
pub fn add_echo(r: &mut Router) {
    r.add_prost(
        ECHO_SERVICE,
        ECHO_METHOD,
        |_ctx: Context, req: EchoRequest| async move {
            Ok(EchoReply {
                payload: req.payload,
            })
        },
    );
}

/// Adds `bench.Control/Start`: run the load on the calling peer, answer with the figures.
pub fn add_control(r: &mut Router, default_codec: CodecId) {
    r.add_prost(
        CONTROL_SERVICE,
        START_METHOD,
        move |ctx: Context, req: StartRequest| async move {
            let codec = match CodecId::from_u8(req.codec as u8) {
                CodecId::None => default_codec,
                c @ (CodecId::Json | CodecId::Protobuf) => c,
                c => return Err(RpcError::bad_request(format!("unsupported codec {c}"))),
            };
            let mut load = Load::new(
                req.inflight.max(1) as usize,
                req.payload as usize,
                codec,
                req.warmup_secs,
                req.secs,
            );
            load.spawn_slots = req.spawn_slots;
            let size = req.payload as usize;
            let tally = match req.mode {
                1 => crate::streams::drive_stream(ctx.peer(), &load, size).await,
                2 => crate::streams::drive_bidi(ctx.peer(), &load, size).await,
                _ => load::drive(ctx.peer(), &load).await,
            };
            Ok(StartReply::from_tally(&tally))
        },
    );
}
