//! getty-rpc's sans-io frame layer: `frame::encode`, `frame::decode` (copying) and
//! `frame::decode_frame` (zero-copy, what sessions use) of an echo Request
//! with a 64 B and a 16 KiB payload, in JSON and in Protobuf; plus the body codecs alone.
//! Reported as bytes of frame (or body) per second.
//!
//! `cargo bench -p getty-bench --bench frame`

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use getty_core::Decoded;
use getty_rpc::frame::{self, DEFAULT_MAX_FRAME, Frame};
use getty_rpc::{BodyCodec, CodecId, Prost};
use prost::Message;
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    payload: String,
}

fn payload(len: usize) -> String {
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

fn body(codec: CodecId, len: usize) -> Bytes {
    let m = EchoRequest {
        payload: payload(len),
    };
    match codec {
        CodecId::Json => serde_json::to_vec(&m).unwrap().into(),
        _ => m.encode_to_vec().into(),
    }
}

const CASES: [(CodecId, usize); 4] = [
    (CodecId::Protobuf, 64),
    (CodecId::Json, 64),
    (CodecId::Protobuf, 16 << 10),
    (CodecId::Json, 16 << 10),
];

fn id(codec: CodecId, len: usize) -> BenchmarkId {
    BenchmarkId::new(codec.to_string(), len)
}

fn request(codec: CodecId, len: usize) -> Frame {
    Frame::request(1, codec, "echo.Echo", "Echo", body(codec, len)).with_timeout_ms(10_000)
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/encode");
    for (codec, len) in CASES {
        let f = request(codec, len);
        g.throughput(Throughput::Bytes(frame::encoded_len(&f) as u64));
        let mut buf = BytesMut::with_capacity(frame::encoded_len(&f));
        g.bench_function(id(codec, len), |b| {
            b.iter(|| {
                buf.clear();
                frame::encode(black_box(&f), &mut buf).unwrap();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("frame/decode");
    for (codec, len) in CASES {
        let mut buf = BytesMut::new();
        frame::encode(&request(codec, len), &mut buf).unwrap();
        let wire = buf.freeze();
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(id(codec, len), |b| {
            b.iter(
                || match frame::decode(black_box(&wire), DEFAULT_MAX_FRAME).unwrap() {
                    Decoded::Package { pkg, .. } => pkg,
                    Decoded::NeedMore { .. } | Decoded::Split { .. } => unreachable!(),
                },
            )
        });
    }
    g.finish();

    // What a session does since zero-copy reads: the whole frame is split off the read buffer
    // and decoded in place, the body sharing it.
    let mut g = c.benchmark_group("frame/decode_frame");
    for (codec, len) in CASES {
        let mut buf = BytesMut::new();
        frame::encode(&request(codec, len), &mut buf).unwrap();
        let wire = buf.freeze();
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(id(codec, len), |b| {
            b.iter(|| frame::decode_frame(black_box(wire.clone()), DEFAULT_MAX_FRAME).unwrap())
        });
    }
    g.finish();
}

/// The body codecs alone (what `Router::add_prost` and `Peer::call` add to the frame cost).
fn bodies(c: &mut Criterion) {
    let mut g = c.benchmark_group("body/encode");
    for (codec, len) in CASES {
        let m = EchoRequest {
            payload: payload(len),
        };
        g.throughput(Throughput::Bytes(body(codec, len).len() as u64));
        g.bench_function(id(codec, len), |b| {
            b.iter(|| {
                let mut out = BytesMut::new();
                <Prost as BodyCodec<EchoRequest>>::encode(codec, black_box(&m), &mut out).unwrap();
                out
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("body/decode");
    for (codec, len) in CASES {
        let wire = body(codec, len);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(id(codec, len), |b| {
            b.iter(|| <Prost as BodyCodec<EchoRequest>>::decode(codec, black_box(&wire)).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = frames, bodies
}
criterion_main!(benches);
