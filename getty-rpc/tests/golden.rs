//! The hex dumps in PROTOCOL.md are normative: each one must be exactly what `encode` produces
//! for the frame below of the same name, and must decode back to that frame.
//!
//! In PROTOCOL.md an example is a line `Example: NAME` followed (blank lines allowed) by a fenced
//! block tagged `hex`: space-separated two-digit hex bytes, 16 per line (the last line may be
//! shorter).

use bytes::BytesMut;
use getty_core::Decoded;
use getty_rpc::compression::FLAG_ZSTD;
use getty_rpc::frame::{self, CodecId, DEFAULT_MAX_FRAME, Frame};
use getty_rpc::status::Status;

const PROTOCOL: &str = include_str!("../PROTOCOL.md");

/// The JSON that the compressed examples carry, and its zstd frame (as getty's level-1
/// compressor makes it: content size declared, no checksum).
const ZSTD_REQUEST_JSON: &str =
    r#"{"name":"world world world world world world world world world world"}"#;
const ZSTD_REQUEST: &[u8] = &[
    0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x46, 0xbd, 0x00, 0x00, 0x88, 0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65,
    0x22, 0x3a, 0x22, 0x77, 0x6f, 0x72, 0x6c, 0x64, 0x20, 0x22, 0x7d, 0x01, 0x00, 0xca, 0x59, 0xea,
];
const ZSTD_RESPONSE_JSON: &str =
    r#"{"message":"Hello, world world world world world world world world world world"}"#;
const ZSTD_RESPONSE: &[u8] = &[
    0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x50, 0x0d, 0x01, 0x00, 0xd0, 0x7b, 0x22, 0x6d, 0x65, 0x73, 0x73,
    0x61, 0x67, 0x65, 0x22, 0x3a, 0x22, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x2c, 0x20, 0x77, 0x6f, 0x72,
    0x6c, 0x64, 0x22, 0x7d, 0x01, 0x00, 0x2c, 0x67, 0x19, 0x03,
];

/// The compressed examples: name, and the body each inflates to.
const COMPRESSED: &[(&str, &str)] = &[
    ("request-zstd", ZSTD_REQUEST_JSON),
    ("response-zstd", ZSTD_RESPONSE_JSON),
];

fn compressed(mut f: Frame) -> Frame {
    f.flags |= FLAG_ZSTD;
    f
}

/// The frame each example in PROTOCOL.md shows.
fn expected() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "request-json",
            Frame::request(
                1,
                CodecId::Json,
                "greeter.Greeter",
                "SayHello",
                r#"{"name":"world"}"#,
            )
            .with_timeout_ms(1500)
            .with_metadata("trace-id", "7f3a"),
        ),
        (
            "oneway-protobuf",
            Frame::one_way(
                2,
                CodecId::Protobuf,
                "log.Sink",
                "Append",
                &[0x0a, 0x02, b'h', b'i'][..],
            ),
        ),
        (
            "response-ok",
            Frame::response(1, CodecId::Json, r#"{"message":"Hello, world"}"#),
        ),
        (
            "error-unknown-method",
            Frame::error(
                3,
                Status::UnknownMethod,
                "unknown method greeter.Greeter/Shout",
            ),
        ),
        ("ping", Frame::ping(5)),
        ("pong", Frame::pong(5)),
        ("cancel", Frame::cancel(4)),
        (
            "hello",
            Frame::one_way(
                1,
                CodecId::Json,
                "getty.Peer",
                "Hello",
                r#"{"max_frame":16777216,"window":{"calls":4096,"bytes":33554432},"stream_window":{"items":256,"bytes":1048576},"features":["flow","stream"]}"#,
            ),
        ),
        ("credit", Frame::credit(0, 3, 150)),
        (
            "stream-open",
            Frame::stream_open(9, CodecId::Protobuf, "feed.Prices", "Watch")
                .with_timeout_ms(30_000),
        ),
        (
            "stream-item",
            Frame::stream_item(
                9,
                true,
                CodecId::Protobuf,
                &[0x0a, 0x03, b'A', b'C', b'M'][..],
            ),
        ),
        ("stream-end", Frame::stream_end(9, true, Status::Ok, "")),
        ("stream-credit", Frame::stream_credit(9, false, 128, 640)),
        (
            "request-zstd",
            compressed(
                Frame::request(
                    6,
                    CodecId::Json,
                    "greeter.Greeter",
                    "SayHello",
                    ZSTD_REQUEST,
                )
                .with_timeout_ms(1500),
            ),
        ),
        (
            "response-zstd",
            compressed(Frame::response(6, CodecId::Json, ZSTD_RESPONSE)),
        ),
    ]
}

/// `(name, bytes)` for every example in the document, in order.
fn examples(doc: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(name) = line.trim().strip_prefix("Example:") else {
            continue;
        };
        let name = name.trim().trim_matches('`').to_string();
        assert!(!name.is_empty(), "line {}: example without a name", n + 1);
        let (n, fence) = lines
            .by_ref()
            .find(|(_, l)| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("example {name}: no block follows"));
        assert_eq!(
            fence.trim(),
            "```hex",
            "line {}: example {name} must be followed by a ```hex block",
            n + 1
        );
        let mut bytes = Vec::new();
        let mut short_line = false;
        loop {
            let (n, l) = lines
                .next()
                .unwrap_or_else(|| panic!("example {name}: unterminated block"));
            if l.trim() == "```" {
                break;
            }
            assert!(!short_line, "line {}: only the last line may be short", n);
            let tokens: Vec<&str> = l.split(' ').collect();
            assert!(
                (1..=16).contains(&tokens.len()),
                "line {}: 1..=16 bytes per line",
                n + 1
            );
            short_line = tokens.len() < 16;
            for t in tokens {
                assert!(
                    t.len() == 2 && t.bytes().all(|b| b.is_ascii_hexdigit()),
                    "line {}: {t:?} is not a two-digit hex byte",
                    n + 1
                );
                bytes.push(u8::from_str_radix(t, 16).unwrap());
            }
        }
        out.push((name, bytes));
    }
    out
}

/// Formats bytes as the document does, for the failure message.
fn dump(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| {
            c.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn protocol_md_examples_match_the_codec() {
    let found = examples(PROTOCOL);
    let want = expected();
    let found_names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        found_names, want_names,
        "PROTOCOL.md must hold exactly these examples, in this order"
    );
    for ((name, bytes), (_, frame)) in found.iter().zip(&want) {
        let mut enc = BytesMut::new();
        frame::encode(frame, &mut enc).unwrap();
        assert!(
            enc[..] == bytes[..],
            "example {name}: PROTOCOL.md has\n{}\nbut encode gives\n{}",
            dump(bytes),
            dump(&enc)
        );
        assert_eq!(frame::encoded_len(frame), bytes.len(), "example {name}");
        assert_eq!(
            frame::decode(bytes, DEFAULT_MAX_FRAME).unwrap(),
            Decoded::Package {
                pkg: frame.clone(),
                len: bytes.len()
            },
            "example {name}"
        );
    }
}

/// The compressed examples have flag bit 1 set and, read as zstd (with the feature), inflate
/// through the receive path's inflate to their JSON.
#[test]
fn compressed_examples_inflate_to_their_json() {
    let all = expected();
    for (name, json) in COMPRESSED {
        let (_, f) = all
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no example {name}"));
        assert_eq!(f.flags & FLAG_ZSTD, FLAG_ZSTD, "example {name}");
        assert!(
            f.body.len() < json.len(),
            "example {name} is smaller compressed"
        );
        #[cfg(feature = "zstd")]
        {
            let body = getty_rpc::compression::inflate_body(&f.body, DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(&body[..], json.as_bytes(), "example {name}");
        }
        #[cfg(not(feature = "zstd"))]
        let _ = json;
    }
}

#[test]
fn the_parser_finds_what_it_should() {
    let doc = "text\nExample: a\n\n```hex\n47 54\n```\nExample: `b`\n```hex\n00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f\nff\n```\n";
    let mut sixteen: Vec<u8> = (0..16).collect();
    sixteen.push(0xff);
    assert_eq!(
        examples(doc),
        vec![
            ("a".to_string(), vec![0x47, 0x54]),
            ("b".to_string(), sixteen)
        ]
    );
}

/// Prints the dumps for PROTOCOL.md: `cargo test -p getty-rpc --test golden -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_examples() {
    for (name, f) in expected() {
        let mut enc = BytesMut::new();
        frame::encode(&f, &mut enc).unwrap();
        println!("Example: {name}\n\n```hex\n{}\n```\n", dump(&enc));
    }
}
