//! The getty-rpc wire format, sans-io: [`Frame`], [`encode`], [`decode`], and [`FrameCodec`],
//! which plugs them into a getty-core session.
//!
//! Nothing here touches a socket. `PROTOCOL.md` (next to this crate's `Cargo.toml`) is the
//! normative description of the bytes; this module implements it:
//!
//! ```text
//! off size field
//! 0   2    magic "GT"
//! 2   1    version = 1
//! 3   1    kind
//! 4   1    codec
//! 5   1    flags (send 0, ignore on receipt)
//! 6   2    status
//! 8   8    seq
//! 16  4    timeout_ms
//! 20  4    meta_len (<= 65535)
//! 24  4    body_len
//! 28  ..   meta section (meta_len bytes), then body (body_len bytes)
//! ```
//!
//! All integers are big-endian. The meta section is `u16 len + service`, `u16 len + method`,
//! `u16 pair_count`, then per pair `u16 len + key`, `u16 len + value`; strings are UTF-8.
//!
//! Decoding never panics and never allocates for an announced length before it is checked: the
//! header alone is validated against the frame limit ([`peek_header`]), and [`decode`] only
//! copies bytes that are already in the buffer.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use getty_core::{CodecError, Decoded, Reader, Writer};

use crate::status::Status;

/// The first two bytes of every frame: `"GT"`.
pub const MAGIC: [u8; 2] = *b"GT";
/// The protocol version this module speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 28;
/// Largest meta section (`meta_len`) a frame may have.
pub const MAX_META_LEN: usize = 65535;
/// A service or method name. Names up to 24 bytes (nearly all) are stored inline, so neither
/// decoding nor building a frame allocates for them.
pub type Name = compact_str::CompactString;

/// Largest service or method name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;
/// Default largest frame (header + meta section + body): 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// What a frame is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A call that expects a Response with the same seq.
    Request = 1,
    /// The answer to a Request of the receiver.
    Response = 2,
    /// A call that is never answered, not even with an error.
    OneWay = 3,
    /// Heartbeat; answered with a Pong carrying the same seq.
    Ping = 4,
    /// The answer to a Ping.
    Pong = 5,
    /// The caller gave up on its Request with this seq.
    Cancel = 6,
    /// Returns window to the other peer (flow control, `PROTOCOL.md` section 17); sent only
    /// to a peer that announced flow control in its Hello.
    Credit = 7,
    /// Opens a stream (`PROTOCOL.md` section 20): a call whose items flow both ways until
    /// each side ends its half. Sent only to a peer that announced streams in its Hello.
    StreamOpen = 8,
    /// One item of a stream.
    StreamItem = 9,
    /// The end of one side of a stream: status 0 ends that half; from the stream's acceptor it
    /// ends the whole stream, with the call's outcome.
    StreamEnd = 10,
}

impl Kind {
    /// The kind for a header byte, `None` for an unknown one.
    pub const fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::OneWay,
            4 => Kind::Ping,
            5 => Kind::Pong,
            6 => Kind::Cancel,
            7 => Kind::Credit,
            8 => Kind::StreamOpen,
            9 => Kind::StreamItem,
            10 => Kind::StreamEnd,
            _ => return None,
        })
    }

    /// The header byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for the kinds that invoke a method (Request, OneWay).
    pub const fn is_call(self) -> bool {
        matches!(self, Kind::Request | Kind::OneWay)
    }

    /// True for the kinds about an open stream, whose `flags` carry [`FROM_ACCEPTOR`].
    pub const fn is_stream_frame(self) -> bool {
        matches!(self, Kind::StreamItem | Kind::StreamEnd | Kind::Credit)
    }

    /// The name used in `PROTOCOL.md`, e.g. `OneWay`.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Request => "Request",
            Kind::Response => "Response",
            Kind::OneWay => "OneWay",
            Kind::Ping => "Ping",
            Kind::Pong => "Pong",
            Kind::Cancel => "Cancel",
            Kind::Credit => "Credit",
            Kind::StreamOpen => "StreamOpen",
            Kind::StreamItem => "StreamItem",
            Kind::StreamEnd => "StreamEnd",
        }
    }
}

impl TryFrom<u8> for Kind {
    type Error = FrameError;

    fn try_from(b: u8) -> Result<Kind, FrameError> {
        Kind::from_u8(b).ok_or(FrameError::UnknownKind(b))
    }
}

impl From<Kind> for u8 {
    fn from(k: Kind) -> u8 {
        k.as_u8()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the body is encoded.
///
/// Not `repr(u8)` because an unknown byte is kept as [`CodecId::Other`] (a Request with a codec
/// the callee lacks is answered `UNSUPPORTED_CODEC`, not a framing error). Convert with
/// `From<u8>` / `From<CodecId> for u8`; `Other(n)` is only ever built for unnamed bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CodecId {
    /// 0: no codec: Ping, Pong, Cancel, error Responses (whose body is a UTF-8 message).
    #[default]
    None,
    /// 1: the body is the JSON (serde_json) encoding of the message.
    Json,
    /// 2: the body is the Protocol Buffers encoding of the message.
    Protobuf,
    /// A codec byte this version does not name, kept as received.
    Other(u8),
}

impl CodecId {
    /// The codec for a header byte.
    pub const fn from_u8(b: u8) -> CodecId {
        match b {
            0 => CodecId::None,
            1 => CodecId::Json,
            2 => CodecId::Protobuf,
            n => CodecId::Other(n),
        }
    }

    /// The header byte.
    pub const fn as_u8(self) -> u8 {
        match self {
            CodecId::None => 0,
            CodecId::Json => 1,
            CodecId::Protobuf => 2,
            CodecId::Other(n) => n,
        }
    }
}

impl From<u8> for CodecId {
    fn from(b: u8) -> CodecId {
        CodecId::from_u8(b)
    }
}

impl From<CodecId> for u8 {
    fn from(c: CodecId) -> u8 {
        c.as_u8()
    }
}

impl fmt::Display for CodecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecId::None => f.write_str("none"),
            CodecId::Json => f.write_str("json"),
            CodecId::Protobuf => f.write_str("protobuf"),
            CodecId::Other(n) => write!(f, "codec {n}"),
        }
    }
}

/// A framing violation (decode) or an unencodable frame (encode).
///
/// Every decode error is fatal for the connection: the receiver closes it (`PROTOCOL.md`,
/// "Violations").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {:02x} {:02x}: not a getty-rpc frame (expected 47 54, \"GT\")", .0[0], .0[1])]
    BadMagic([u8; 2]),
    #[error("unsupported protocol version {0} (this peer speaks version 1)")]
    BadVersion(u8),
    #[error("unknown frame kind {0} (known kinds are 1..=10)")]
    UnknownKind(u8),
    #[error("meta section of {0} bytes exceeds the limit of 65535")]
    MetaTooLong(usize),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed meta section: {0}")]
    BadMeta(&'static str),
    #[error("{field} name of {len} bytes exceeds the limit of 255")]
    NameTooLong { field: &'static str, len: usize },
    #[error("body of {0} bytes does not fit the u32 body_len field")]
    BodyTooLong(usize),
    #[error("Credit frame with a body of {0} bytes (must be 12)")]
    BadCredit(u32),
}

impl From<FrameError> for CodecError {
    fn from(e: FrameError) -> CodecError {
        CodecError::new(e)
    }
}

/// One protocol message. Fields map 1:1 to the wire; see the constructors for the usual shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub codec: CodecId,
    /// Reserved: sent as 0, ignored on receipt, kept as received.
    pub flags: u8,
    /// [`Status::Ok`] in everything but error Responses.
    pub status: Status,
    pub seq: u64,
    /// Request/OneWay: the caller's remaining budget in ms when sent, 0 = no deadline.
    pub timeout_ms: u32,
    /// Request/OneWay: dotted service name, e.g. `greeter.Greeter`; empty otherwise.
    pub service: Name,
    /// Request/OneWay: method name, e.g. `SayHello`; empty otherwise.
    pub method: Name,
    /// Ordered key/value pairs; duplicates are allowed and kept.
    pub metadata: Vec<(String, String)>,
    /// The encoded message, or the UTF-8 error text of an error Response.
    pub body: Bytes,
}

impl Frame {
    fn bare(kind: Kind, seq: u64) -> Frame {
        Frame {
            kind,
            codec: CodecId::None,
            flags: 0,
            status: Status::Ok,
            seq,
            timeout_ms: 0,
            service: Name::default(),
            method: Name::default(),
            metadata: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A Request; `seq` comes from the sender's own counter (1, 2, ...).
    pub fn request(
        seq: u64,
        codec: CodecId,
        service: impl Into<Name>,
        method: impl Into<Name>,
        body: impl Into<Bytes>,
    ) -> Frame {
        Frame {
            codec,
            service: service.into(),
            method: method.into(),
            body: body.into(),
            ..Frame::bare(Kind::Request, seq)
        }
    }

    /// A OneWay call: like a Request, but never answered.
    pub fn one_way(
        seq: u64,
        codec: CodecId,
        service: impl Into<Name>,
        method: impl Into<Name>,
        body: impl Into<Bytes>,
    ) -> Frame {
        Frame {
            kind: Kind::OneWay,
            ..Frame::request(seq, codec, service, method, body)
        }
    }

    /// A successful Response to the request `seq`; `codec` is the request's codec.
    pub fn response(seq: u64, codec: CodecId, body: impl Into<Bytes>) -> Frame {
        Frame {
            codec,
            body: body.into(),
            ..Frame::bare(Kind::Response, seq)
        }
    }

    /// An error Response to the request `seq`: codec None, the body is `message` as UTF-8.
    /// `status` should not be [`Status::Ok`] nor a local-only status.
    pub fn error(seq: u64, status: Status, message: impl Into<String>) -> Frame {
        Frame {
            status,
            body: Bytes::from(message.into()),
            ..Frame::bare(Kind::Response, seq)
        }
    }

    /// A Ping with the sender's ping id.
    pub fn ping(seq: u64) -> Frame {
        Frame::bare(Kind::Ping, seq)
    }

    /// The Pong answering the Ping `seq`.
    pub fn pong(seq: u64) -> Frame {
        Frame::bare(Kind::Pong, seq)
    }

    /// Cancels the sender's own Request `seq`.
    pub fn cancel(seq: u64) -> Frame {
        Frame::bare(Kind::Cancel, seq)
    }

    /// A Credit returning `calls` calls and `bytes` bytes of window; `seq` 0 is the
    /// connection's window (the only one in this version).
    pub fn credit(seq: u64, calls: u32, bytes: u64) -> Frame {
        let mut body = BytesMut::with_capacity(CREDIT_LEN);
        body.put_u32(calls);
        body.put_u64(bytes);
        Frame {
            body: body.freeze(),
            ..Frame::bare(Kind::Credit, seq)
        }
    }

    /// Grants `items` more items and `bytes` more bytes on stream `seq` (a Credit with the
    /// stream's id; `from_acceptor` when the sender accepted the stream).
    pub fn stream_credit(seq: u64, from_acceptor: bool, items: u32, bytes: u64) -> Frame {
        Frame {
            flags: if from_acceptor { FROM_ACCEPTOR } else { 0 },
            ..Frame::credit(seq, items, bytes)
        }
    }

    /// Opens stream `seq` (a new id from the sender's counter) to `service`/`method`; its items
    /// are encoded with `codec`.
    pub fn stream_open(
        seq: u64,
        codec: CodecId,
        service: impl Into<Name>,
        method: impl Into<Name>,
    ) -> Frame {
        Frame {
            kind: Kind::StreamOpen,
            codec,
            service: service.into(),
            method: method.into(),
            ..Frame::bare(Kind::StreamOpen, seq)
        }
    }

    /// One item on stream `seq`; `from_acceptor` when the sender accepted the stream.
    pub fn stream_item(
        seq: u64,
        from_acceptor: bool,
        codec: CodecId,
        body: impl Into<Bytes>,
    ) -> Frame {
        Frame {
            codec,
            flags: if from_acceptor { FROM_ACCEPTOR } else { 0 },
            body: body.into(),
            ..Frame::bare(Kind::StreamItem, seq)
        }
    }

    /// Ends the sender's half of stream `seq` (status `Ok`), or (from the acceptor) the whole
    /// stream with `status` and `message`.
    pub fn stream_end(
        seq: u64,
        from_acceptor: bool,
        status: Status,
        message: impl Into<String>,
    ) -> Frame {
        Frame {
            flags: if from_acceptor { FROM_ACCEPTOR } else { 0 },
            status,
            body: Bytes::from(message.into()),
            ..Frame::bare(Kind::StreamEnd, seq)
        }
    }

    /// Whether the sender of this stream frame is the stream's acceptor.
    pub fn from_acceptor(&self) -> bool {
        self.flags & FROM_ACCEPTOR != 0
    }

    /// The (calls, bytes) a Credit frame returns; `None` for any other frame or a bad body.
    pub fn credit_grant(&self) -> Option<(u32, u64)> {
        let b = self.body.as_ref();
        if self.kind != Kind::Credit || b.len() != CREDIT_LEN {
            return None;
        }
        let calls = u32::from_be_bytes(b[..4].try_into().ok()?);
        let bytes = u64::from_be_bytes(b[4..].try_into().ok()?);
        Some((calls, bytes))
    }

    /// Sets the time budget in ms (Request/OneWay; 0 = no deadline).
    pub fn with_timeout_ms(mut self, timeout_ms: u32) -> Frame {
        self.timeout_ms = timeout_ms;
        self
    }

    /// Appends one metadata pair.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Frame {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// The value of the first metadata pair with this key.
    pub fn meta_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True for a Response whose status is not OK.
    pub fn is_error(&self) -> bool {
        self.kind == Kind::Response && !self.status.is_ok()
    }

    /// The error text of an error Response (invalid UTF-8 replaced), `None` otherwise.
    pub fn error_message(&self) -> Option<Cow<'_, str>> {
        self.is_error().then(|| String::from_utf8_lossy(&self.body))
    }
}

/// Length of a Credit frame's body: `calls` (`u32`) then `bytes` (`u64`).
pub const CREDIT_LEN: usize = 12;

/// `flags` bit of StreamItem, StreamEnd and a stream's Credit: set when the sender is the
/// stream's acceptor, i.e. the stream is one the receiver opened (the two peers' stream ids
/// come from different counters and may be equal).
pub const FROM_ACCEPTOR: u8 = 0x01;

/// The fixed 28-byte header, as validated by [`peek_header`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub codec: CodecId,
    pub flags: u8,
    pub status: Status,
    pub seq: u64,
    pub timeout_ms: u32,
    pub meta_len: u32,
    pub body_len: u32,
}

impl Header {
    /// Length of the whole frame: header + meta section + body.
    pub fn total_len(&self) -> usize {
        HEADER_LEN
            .saturating_add(self.meta_len as usize)
            .saturating_add(self.body_len as usize)
    }
}

/// Rejects a buffer whose first bytes already cannot start a frame, so that a stray client
/// (say, an HTTP request) is refused without waiting for 28 bytes.
fn check_prefix(buf: &[u8]) -> Result<(), FrameError> {
    match buf.first_chunk::<2>() {
        Some(m) if *m != MAGIC => return Err(FrameError::BadMagic(*m)),
        _ => {}
    }
    match buf.get(2) {
        Some(&v) if v != VERSION => return Err(FrameError::BadVersion(v)),
        _ => {}
    }
    if let Some(&k) = buf.get(3) {
        Kind::try_from(k)?;
    }
    Ok(())
}

/// Validates the header at the front of `buf` using only its 28 bytes: magic, version, kind,
/// `meta_len` and the total length against `max_frame`. `Ok(None)` while fewer than 28 bytes
/// are buffered (but a wrong magic, version or kind byte is reported as soon as it arrives).
pub fn peek_header(buf: &[u8], max_frame: usize) -> Result<Option<Header>, FrameError> {
    check_prefix(buf)?;
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let kind = Kind::try_from(h[3])?;
    let meta_len = u32::from_be_bytes([h[20], h[21], h[22], h[23]]);
    if meta_len as usize > MAX_META_LEN {
        return Err(FrameError::MetaTooLong(meta_len as usize));
    }
    let body_len = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
    let total = HEADER_LEN as u64 + u64::from(meta_len) + u64::from(body_len);
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    if total > max_frame {
        return Err(FrameError::TooLarge {
            len: total,
            max: max_frame,
        });
    }
    Ok(Some(Header {
        kind,
        codec: CodecId::from_u8(h[4]),
        flags: h[5],
        status: Status::from_code(u16::from_be_bytes([h[6], h[7]])),
        seq: u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        timeout_ms: u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
        meta_len,
        body_len,
    }))
}

/// Decodes the frame at the front of `buf`.
///
/// Returns `Package { pkg, len }` with the frame and the bytes it used, or
/// `NeedMore { pkg_len }` where `pkg_len` is the announced total length once the header is in.
/// Any error is a framing violation. `max_frame` bounds header + meta + body; pass
/// `usize::MAX` for no limit beyond the format's own.
pub fn decode(buf: &[u8], max_frame: usize) -> Result<Decoded<Frame>, FrameError> {
    let Some(h) = peek_header(buf, max_frame)? else {
        return Ok(Decoded::NeedMore { pkg_len: None });
    };
    let total = h.total_len();
    let Some(whole) = buf.get(..total) else {
        return Ok(Decoded::NeedMore {
            pkg_len: Some(total),
        });
    };
    let (frame, body) = parse(h, whole)?;
    Ok(Decoded::Package {
        pkg: Frame {
            body: Bytes::copy_from_slice(&whole[body]),
            ..frame
        },
        len: total,
    })
}

/// Decodes exactly one whole frame held in `frame`; the body shares `frame`'s memory (no copy).
pub fn decode_frame(frame: Bytes, max_frame: usize) -> Result<Frame, FrameError> {
    let h = peek_header(&frame, max_frame)?
        .ok_or(FrameError::BadMeta("frame shorter than its header"))?;
    if h.total_len() != frame.len() {
        return Err(FrameError::BadMeta(
            "frame length does not match its header",
        ));
    }
    let (f, body) = parse(h, &frame)?;
    Ok(Frame {
        body: frame.slice(body),
        ..f
    })
}

/// Parses a whole frame's meta section; returns the frame without its body, and where the body is.
fn parse(h: Header, whole: &[u8]) -> Result<(Frame, std::ops::Range<usize>), FrameError> {
    if h.kind == Kind::Credit && h.body_len as usize != CREDIT_LEN {
        return Err(FrameError::BadCredit(h.body_len));
    }
    let meta_end = HEADER_LEN + h.meta_len as usize;
    let meta = whole
        .get(HEADER_LEN..meta_end)
        .ok_or(FrameError::BadMeta("meta_len exceeds the frame"))?;
    let meta = Meta::parse(meta)?;
    let frame = Frame {
        kind: h.kind,
        codec: h.codec,
        flags: h.flags,
        status: h.status,
        seq: h.seq,
        timeout_ms: h.timeout_ms,
        service: meta.service,
        method: meta.method,
        metadata: meta.pairs,
        body: Bytes::new(),
    };
    Ok((frame, meta_end..whole.len()))
}

/// The error texts for one string field of the meta section.
struct Field {
    name: &'static str,
    short_len: &'static str,
    overrun: &'static str,
    utf8: &'static str,
}

const SERVICE: Field = Field {
    name: "service",
    short_len: "meta section ends inside the service length",
    overrun: "service runs past the end of the meta section",
    utf8: "service is not valid UTF-8",
};
const METHOD: Field = Field {
    name: "method",
    short_len: "meta section ends inside the method length",
    overrun: "method runs past the end of the meta section",
    utf8: "method is not valid UTF-8",
};
const KEY: Field = Field {
    name: "key",
    short_len: "meta section ends inside a metadata key length",
    overrun: "a metadata key runs past the end of the meta section",
    utf8: "a metadata key is not valid UTF-8",
};
const VALUE: Field = Field {
    name: "value",
    short_len: "meta section ends inside a metadata value length",
    overrun: "a metadata value runs past the end of the meta section",
    utf8: "a metadata value is not valid UTF-8",
};

struct Meta {
    service: Name,
    method: Name,
    pairs: Vec<(String, String)>,
}

impl Meta {
    fn parse(mut buf: &[u8]) -> Result<Meta, FrameError> {
        let service = Name::new(take_str(&mut buf, &SERVICE)?);
        check_name(&SERVICE, &service)?;
        let method = Name::new(take_str(&mut buf, &METHOD)?);
        check_name(&METHOD, &method)?;
        let count = take_u16(&mut buf, "meta section ends inside the pair count")? as usize;
        // Every pair takes at least 4 bytes, so this bounds the allocation by real bytes.
        if count > buf.len() / 4 {
            return Err(FrameError::BadMeta(
                "pair count runs past the end of the meta section",
            ));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let key = take_str(&mut buf, &KEY)?.to_owned();
            let value = take_str(&mut buf, &VALUE)?.to_owned();
            pairs.push((key, value));
        }
        if !buf.is_empty() {
            return Err(FrameError::BadMeta(
                "bytes left over after the last metadata pair",
            ));
        }
        Ok(Meta {
            service,
            method,
            pairs,
        })
    }
}

fn take_u16(buf: &mut &[u8], short: &'static str) -> Result<u16, FrameError> {
    let (n, rest) = buf
        .split_first_chunk::<2>()
        .ok_or(FrameError::BadMeta(short))?;
    *buf = rest;
    Ok(u16::from_be_bytes(*n))
}

fn take_str<'a>(buf: &mut &'a [u8], field: &Field) -> Result<&'a str, FrameError> {
    let len = take_u16(buf, field.short_len)? as usize;
    let (s, rest) = buf
        .split_at_checked(len)
        .ok_or(FrameError::BadMeta(field.overrun))?;
    *buf = rest;
    std::str::from_utf8(s).map_err(|_| FrameError::BadMeta(field.utf8))
}

fn check_name(field: &Field, name: &str) -> Result<(), FrameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(FrameError::NameTooLong {
            field: field.name,
            len: name.len(),
        });
    }
    Ok(())
}

/// Length of the meta section of `f` (saturating; may exceed [`MAX_META_LEN`]).
fn meta_len(f: &Frame) -> usize {
    let pairs = f.metadata.iter().fold(0usize, |acc, (k, v)| {
        acc.saturating_add(4)
            .saturating_add(k.len())
            .saturating_add(v.len())
    });
    (6usize)
        .saturating_add(f.service.len())
        .saturating_add(f.method.len())
        .saturating_add(pairs)
}

/// Length of `f` on the wire: header + meta section + body.
pub fn encoded_len(f: &Frame) -> usize {
    HEADER_LEN
        .saturating_add(meta_len(f))
        .saturating_add(f.body.len())
}

/// Appends the encoding of `f` to `dst`. On error `dst` is left unchanged.
///
/// Fails if the service or method exceeds [`MAX_NAME_LEN`] bytes, the meta section exceeds
/// [`MAX_META_LEN`] bytes, or the body exceeds `u32::MAX` bytes. Does not check a frame-size
/// limit: [`FrameCodec`] does.
pub fn encode(f: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    put_head(f, dst, f.body.len())?;
    dst.put_slice(&f.body);
    Ok(())
}

/// Encodes everything but the body (header and meta section, with the body's length): the
/// body then follows on the wire as its own buffer, without a copy.
pub fn encode_head(f: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    put_head(f, dst, 0)
}

/// The head of `f`, with room reserved for `then` more bytes (the body, when it is copied).
fn put_head(f: &Frame, dst: &mut BytesMut, then: usize) -> Result<(), FrameError> {
    check_name(&SERVICE, &f.service)?;
    check_name(&METHOD, &f.method)?;
    let meta = meta_len(f);
    if meta > MAX_META_LEN {
        return Err(FrameError::MetaTooLong(meta));
    }
    let body_len =
        u32::try_from(f.body.len()).map_err(|_| FrameError::BodyTooLong(f.body.len()))?;
    // meta <= 65535 bounds every length below by u16::MAX and the pair count by 65535 / 4.
    dst.reserve(HEADER_LEN + meta + then);
    // The fixed header is built on the stack and appended at once: one bounds check, not ten.
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&MAGIC);
    h[2] = VERSION;
    h[3] = f.kind.as_u8();
    h[4] = f.codec.as_u8();
    h[5] = f.flags;
    h[6..8].copy_from_slice(&f.status.code().to_be_bytes());
    h[8..16].copy_from_slice(&f.seq.to_be_bytes());
    h[16..20].copy_from_slice(&f.timeout_ms.to_be_bytes());
    h[20..24].copy_from_slice(&(meta as u32).to_be_bytes());
    h[24..28].copy_from_slice(&body_len.to_be_bytes());
    dst.put_slice(&h);
    put_str(dst, &f.service);
    put_str(dst, &f.method);
    dst.put_u16(f.metadata.len() as u16);
    for (k, v) in &f.metadata {
        put_str(dst, k);
        put_str(dst, v);
    }
    Ok(())
}

fn put_str(dst: &mut BytesMut, s: &str) {
    dst.put_u16(s.len() as u16);
    dst.put_slice(s.as_bytes());
}

/// The getty-core [`Reader`]/[`Writer`] for frames, with a frame-size limit for both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    /// Largest frame (header + meta + body) read or written; default [`DEFAULT_MAX_FRAME`].
    pub max_frame: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> FrameCodec {
        FrameCodec { max_frame }
    }
}

impl Default for FrameCodec {
    fn default() -> FrameCodec {
        FrameCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Reader<Frame> for FrameCodec {
    /// Checks the header; once the whole frame is buffered the session splits it off and
    /// [`read_owned`](Reader::read_owned) decodes it, the body sharing the read buffer.
    fn read(&self, buf: &[u8]) -> Result<Decoded<Frame>, CodecError> {
        match peek_header(buf, self.max_frame)? {
            None => Ok(Decoded::NeedMore { pkg_len: None }),
            Some(h) if buf.len() < h.total_len() => Ok(Decoded::NeedMore {
                pkg_len: Some(h.total_len()),
            }),
            Some(h) => Ok(Decoded::Split { len: h.total_len() }),
        }
    }

    fn read_owned(&self, pkg: Bytes) -> Result<Frame, CodecError> {
        Ok(decode_frame(pkg, self.max_frame)?)
    }
}

impl FrameCodec {
    /// A frame over `max_frame` is refused here rather than by the peer.
    fn check_size(&self, pkg: &Frame) -> Result<(), FrameError> {
        let len = encoded_len(pkg);
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(())
    }
}

impl Writer<Frame> for FrameCodec {
    fn write(&self, pkg: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.check_size(pkg)?;
        Ok(encode(pkg, dst)?)
    }

    /// Bodies of a few KiB and more are not copied: they follow the head as their own buffer.
    fn write_parts(&self, pkg: &Frame, dst: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        if pkg.body.len() < ZERO_COPY_BODY {
            return self.write(pkg, dst).map(|()| None);
        }
        self.check_size(pkg)?;
        encode_head(pkg, dst)?;
        Ok(Some(pkg.body.clone()))
    }
}

/// From this body size on, a body is written without being copied into the frame buffer.
const ZERO_COPY_BODY: usize = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: &Frame) -> BytesMut {
        let mut d = BytesMut::new();
        encode(f, &mut d).unwrap();
        assert_eq!(d.len(), encoded_len(f));
        d
    }

    fn dec(buf: &[u8]) -> Result<Decoded<Frame>, FrameError> {
        decode(buf, DEFAULT_MAX_FRAME)
    }

    fn samples() -> Vec<Frame> {
        vec![
            Frame::request(1, CodecId::Json, "greeter.Greeter", "SayHello", &b"{}"[..])
                .with_timeout_ms(1500)
                .with_metadata("trace-id", "abc")
                .with_metadata("trace-id", "dup")
                .with_metadata("", ""),
            Frame::one_way(2, CodecId::Protobuf, "log.Sink", "Append", vec![0x0a, 0x00]),
            Frame::response(1, CodecId::Json, "{\"ok\":true}").with_metadata("k", "v"),
            Frame::error(9, Status::UnknownMethod, "no such method: Shout"),
            Frame::error(9, Status::Other(4711), "\u{1f600} unicode"),
            Frame::ping(u64::MAX),
            Frame::pong(0),
            Frame::cancel(3),
            Frame {
                flags: 0xff,
                ..Frame::request(7, CodecId::Other(200), "s", "m", Bytes::new())
            },
        ]
    }

    /// A header with the given fields and an empty (6-byte) meta section.
    fn raw(kind: u8, meta_len: u32, body_len: u32) -> Vec<u8> {
        let mut v = b"GT\x01".to_vec();
        v.extend_from_slice(&[kind, 0, 0, 0, 0]);
        v.extend_from_slice(&1u64.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&meta_len.to_be_bytes());
        v.extend_from_slice(&body_len.to_be_bytes());
        assert_eq!(v.len(), HEADER_LEN);
        v
    }

    /// A whole frame around a hand-made meta section.
    fn with_meta(meta: &[u8]) -> Vec<u8> {
        let mut v = raw(1, meta.len() as u32, 0);
        v.extend_from_slice(meta);
        v
    }

    #[test]
    fn round_trip_every_shape() {
        for f in samples() {
            let bytes = enc(&f);
            let got = dec(&bytes).unwrap();
            assert_eq!(
                got,
                Decoded::Package {
                    pkg: f.clone(),
                    len: bytes.len()
                }
            );
            // Trailing bytes of the next frame are not consumed.
            let mut two = bytes.clone();
            two.extend_from_slice(b"GT");
            assert_eq!(
                dec(&two).unwrap(),
                Decoded::Package {
                    pkg: f,
                    len: bytes.len()
                }
            );
        }
    }

    #[test]
    fn constructors_fill_the_right_fields() {
        let r = Frame::request(5, CodecId::Json, "a.B", "C", "x").with_timeout_ms(10);
        assert_eq!(
            (r.kind, r.status, r.timeout_ms),
            (Kind::Request, Status::Ok, 10)
        );
        let e = Frame::error(5, Status::BadRequest, "bad");
        assert_eq!(
            (e.kind, e.codec, &e.body[..]),
            (Kind::Response, CodecId::None, &b"bad"[..])
        );
        assert!(e.is_error());
        assert_eq!(e.error_message().as_deref(), Some("bad"));
        assert!(!Frame::response(5, CodecId::Json, "").is_error());
        assert_eq!(
            Frame::one_way(1, CodecId::Json, "s", "m", "").kind,
            Kind::OneWay
        );
        let p = Frame::ping(3);
        assert_eq!(
            (p.kind, p.codec, p.body.len(), p.service.len()),
            (Kind::Ping, CodecId::None, 0, 0)
        );
        assert_eq!(Frame::pong(3).kind, Kind::Pong);
        assert_eq!(Frame::cancel(3).kind, Kind::Cancel);
        let m = Frame::ping(1)
            .with_metadata("a", "1")
            .with_metadata("a", "2");
        assert_eq!(m.meta_value("a"), Some("1"));
        assert_eq!(m.meta_value("b"), None);
    }

    #[test]
    fn exact_bytes_of_a_ping() {
        let bytes = enc(&Frame::ping(0x0102));
        let mut want = b"GT\x01\x04\x00\x00\x00\x00".to_vec();
        want.extend_from_slice(&0x0102u64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[..], &want[..]);
    }

    #[test]
    fn every_prefix_needs_more_with_the_announced_length() {
        let f = &samples()[0];
        let bytes = enc(f);
        for cut in 0..bytes.len() {
            let want = if cut < HEADER_LEN {
                None
            } else {
                Some(bytes.len())
            };
            assert_eq!(
                dec(&bytes[..cut]).unwrap(),
                Decoded::NeedMore { pkg_len: want },
                "cut {cut}"
            );
        }
    }

    #[test]
    fn bad_header_bytes_are_reported_as_soon_as_they_arrive() {
        assert_eq!(dec(b"GE").unwrap_err(), FrameError::BadMagic(*b"GE"));
        assert_eq!(
            dec(b"GET / HTTP/1.1").unwrap_err(),
            FrameError::BadMagic(*b"GE")
        );
        assert_eq!(dec(b"G").unwrap(), Decoded::NeedMore { pkg_len: None });
        assert_eq!(dec(b"GT\x02").unwrap_err(), FrameError::BadVersion(2));
        assert_eq!(dec(b"GT\x01\x00").unwrap_err(), FrameError::UnknownKind(0));
        assert_eq!(dec(b"GT\x01\x0b").unwrap_err(), FrameError::UnknownKind(11));
        assert_eq!(
            dec(b"GT\x01\x01").unwrap(),
            Decoded::NeedMore { pkg_len: None }
        );
    }

    #[test]
    fn lengths_are_checked_from_the_header_alone() {
        // meta_len over the limit
        let h = raw(1, 65536, 0);
        assert_eq!(dec(&h).unwrap_err(), FrameError::MetaTooLong(65536));
        // meta_len at the limit is fine: only the header is here, so more is needed.
        let h = raw(1, 65535, 0);
        assert_eq!(
            dec(&h).unwrap(),
            Decoded::NeedMore {
                pkg_len: Some(28 + 65535)
            }
        );
        // body over the frame limit: refused with 28 bytes in hand.
        let h = raw(1, 6, u32::MAX);
        assert_eq!(
            dec(&h).unwrap_err(),
            FrameError::TooLarge {
                len: 28 + 6 + u32::MAX as usize,
                max: DEFAULT_MAX_FRAME
            }
        );
        // exactly at the limit is allowed.
        let h = raw(1, 6, (DEFAULT_MAX_FRAME - 34) as u32);
        assert_eq!(
            dec(&h).unwrap(),
            Decoded::NeedMore {
                pkg_len: Some(DEFAULT_MAX_FRAME)
            }
        );
        let h = raw(1, 6, (DEFAULT_MAX_FRAME - 33) as u32);
        assert!(matches!(dec(&h), Err(FrameError::TooLarge { .. })));
        // A small limit applies to whole frames.
        let bytes = enc(&Frame::ping(1));
        assert_eq!(
            decode(&bytes, 34).unwrap(),
            Decoded::Package {
                pkg: Frame::ping(1),
                len: 34
            }
        );
        assert_eq!(
            decode(&bytes, 33).unwrap_err(),
            FrameError::TooLarge { len: 34, max: 33 }
        );
        assert_eq!(peek_header(&bytes, 34).unwrap().unwrap().total_len(), 34);
        assert_eq!(peek_header(&bytes[..27], 34).unwrap(), None);
    }

    #[test]
    fn malformed_meta_sections() {
        let cases: &[(&[u8], FrameError)] = &[
            (b"", FrameError::BadMeta(SERVICE.short_len)),
            (b"\x00", FrameError::BadMeta(SERVICE.short_len)),
            (b"\x00\x05ab", FrameError::BadMeta(SERVICE.overrun)),
            (
                b"\x00\x01\xff\x00\x00\x00\x00",
                FrameError::BadMeta(SERVICE.utf8),
            ),
            (b"\x00\x00", FrameError::BadMeta(METHOD.short_len)),
            (b"\x00\x00\x00\x02m", FrameError::BadMeta(METHOD.overrun)),
            (
                b"\x00\x00\x00\x01\xc3\x00\x00",
                FrameError::BadMeta(METHOD.utf8),
            ),
            (
                b"\x00\x00\x00\x00",
                FrameError::BadMeta("meta section ends inside the pair count"),
            ),
            (
                b"\x00\x00\x00\x00\x00\x01",
                FrameError::BadMeta("pair count runs past the end of the meta section"),
            ),
            (
                b"\x00\x00\x00\x00\xff\xff\x00\x00\x00\x00",
                FrameError::BadMeta("pair count runs past the end of the meta section"),
            ),
            (
                b"\x00\x00\x00\x00\x00\x01\x00\x09abcd",
                FrameError::BadMeta(KEY.overrun),
            ),
            (
                b"\x00\x00\x00\x00\x00\x01\x00\x01\xffaaaa",
                FrameError::BadMeta(KEY.utf8),
            ),
            (
                b"\x00\x00\x00\x00\x00\x01\x00\x01k\x00",
                FrameError::BadMeta(VALUE.short_len),
            ),
            (
                b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09ab",
                FrameError::BadMeta(VALUE.overrun),
            ),
            (
                b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x80",
                FrameError::BadMeta(VALUE.utf8),
            ),
            (
                b"\x00\x00\x00\x00\x00\x00\x00",
                FrameError::BadMeta("bytes left over after the last metadata pair"),
            ),
        ];
        for (meta, want) in cases {
            assert_eq!(
                &dec(&with_meta(meta)).unwrap_err(),
                want,
                "meta {meta:02x?}"
            );
        }
        // The same checks hold whatever the kind.
        let mut v = with_meta(b"\x00\x00");
        v[3] = Kind::Pong.as_u8();
        assert_eq!(dec(&v).unwrap_err(), FrameError::BadMeta(METHOD.short_len));
    }

    #[test]
    fn overlong_names_are_refused_both_ways() {
        let long = "x".repeat(256);
        let f = Frame::request(1, CodecId::Json, long.as_str(), "m", "");
        let mut d = BytesMut::from(&b"keep"[..]);
        assert_eq!(
            encode(&f, &mut d).unwrap_err(),
            FrameError::NameTooLong {
                field: "service",
                len: 256
            }
        );
        assert_eq!(&d[..], b"keep", "dst untouched on error");
        let f = Frame::request(1, CodecId::Json, "s", long.as_str(), "");
        assert_eq!(
            encode(&f, &mut d).unwrap_err(),
            FrameError::NameTooLong {
                field: "method",
                len: 256
            }
        );
        // 255 is fine.
        let ok = Frame::request(1, CodecId::Json, &long[..255], &long[..255], "");
        let bytes = enc(&ok);
        assert_eq!(
            dec(&bytes).unwrap(),
            Decoded::Package {
                pkg: ok,
                len: bytes.len()
            }
        );
        // A hand-made frame with a 256-byte service is a violation.
        let mut meta = vec![1, 0];
        meta.extend_from_slice(long.as_bytes());
        meta.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            dec(&with_meta(&meta)).unwrap_err(),
            FrameError::NameTooLong {
                field: "service",
                len: 256
            }
        );
    }

    #[test]
    fn meta_section_limit() {
        // 6 fixed bytes + 4 per pair: a value of 65535 - 6 - 4 - 1 bytes with key "k" just fits.
        let fits = Frame::ping(1).with_metadata("k", "v".repeat(65535 - 11));
        let bytes = enc(&fits);
        assert_eq!(bytes.len(), HEADER_LEN + MAX_META_LEN);
        assert_eq!(
            dec(&bytes).unwrap(),
            Decoded::Package {
                pkg: fits,
                len: bytes.len()
            }
        );
        let over = Frame::ping(1).with_metadata("k", "v".repeat(65535 - 10));
        let mut d = BytesMut::new();
        assert_eq!(
            encode(&over, &mut d).unwrap_err(),
            FrameError::MetaTooLong(65536)
        );
        assert!(d.is_empty());
        // A key alone longer than u16 is caught by the same check, before any cast.
        let huge = Frame::ping(1).with_metadata("k".repeat(70000), "");
        assert_eq!(
            encode(&huge, &mut d).unwrap_err(),
            FrameError::MetaTooLong(70010)
        );
    }

    #[test]
    fn unknown_codec_and_status_are_kept() {
        let f = Frame {
            status: Status::Other(999),
            ..Frame::request(1, CodecId::Other(42), "s", "m", "b")
        };
        let bytes = enc(&f);
        assert_eq!(bytes[4], 42);
        assert_eq!(&bytes[6..8], &[0x03, 0xe7]);
        let Decoded::Package { pkg, .. } = dec(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(pkg.codec, CodecId::Other(42));
        assert_eq!(pkg.status, Status::Other(999));
        for b in 0..=u8::MAX {
            assert_eq!(CodecId::from(b).as_u8(), b);
            assert_eq!(Kind::from_u8(b).map(u8::from).unwrap_or(b), b);
        }
    }

    #[test]
    fn codec_trait_impls() {
        let c = FrameCodec::default();
        assert_eq!(c.max_frame, DEFAULT_MAX_FRAME);
        let f = Frame::request(1, CodecId::Json, "s", "m", "body");
        let mut d = BytesMut::new();
        c.write(&f, &mut d).unwrap();
        assert_eq!(c.read(&d).unwrap(), Decoded::Split { len: d.len() });
        assert_eq!(c.read_owned(d.clone().freeze()).unwrap(), f);
        assert_eq!(
            c.read(&d[..d.len() - 1]).unwrap(),
            Decoded::NeedMore {
                pkg_len: Some(d.len())
            }
        );
        let small = FrameCodec::new(d.len() - 1);
        let mut d2 = BytesMut::new();
        let err = small.write(&f, &mut d2).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        assert!(d2.is_empty());
        let err = small.read(&d).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let err = c.read(b"XX").unwrap_err();
        assert!(err.to_string().contains("bad magic 58 58"), "{err}");
    }

    #[test]
    fn corrupted_frames_never_panic() {
        let bytes = enc(&samples()[0]);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.to_vec();
                b[i] ^= 1 << bit;
                for cut in [b.len(), b.len() - 1, i + 1] {
                    let _ = dec(&b[..cut]);
                    let _ = decode(&b[..cut], 0);
                }
            }
        }
    }

    #[test]
    fn big_bodies_are_written_as_a_head_and_the_shared_body() {
        let c = FrameCodec::default();
        let body = Bytes::from(vec![7u8; 64 << 10]);
        let f =
            Frame::request(9, CodecId::Protobuf, "s", "m", body.clone()).with_metadata("k", "v");
        let mut head = BytesMut::new();
        let tail = c
            .write_parts(&f, &mut head)
            .unwrap()
            .expect("a big body is not copied");
        assert_eq!(tail.as_ptr(), body.as_ptr(), "the very same bytes");
        let mut whole = BytesMut::new();
        encode(&f, &mut whole).unwrap();
        assert_eq!([&head[..], &tail[..]].concat(), &whole[..]);
        // A small body is copied as usual.
        let small = Frame::request(1, CodecId::Json, "s", "m", "tiny");
        let mut d = BytesMut::new();
        assert!(c.write_parts(&small, &mut d).unwrap().is_none());
        assert_eq!(c.read_owned(d.freeze()).unwrap(), small);
        // The limit still holds.
        let tight = FrameCodec::new(whole.len() - 1);
        assert!(tight.write_parts(&f, &mut BytesMut::new()).is_err());
    }
}
