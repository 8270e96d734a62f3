//! Pluggable framing: getty's `Reader`/`Writer` pair, and the session's internal deframer that
//! also accepts a `tokio_util::codec` pair (see [`crate::codec::tokio_codec`]).
//!
//! Framing is sans-io: a reader sees bytes and says what they hold; it never touches a socket.

pub mod length_prefixed;
pub mod tokio_codec;

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::error::CodecError;

/// What a [`Reader`] found in the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<P> {
    /// A whole package that used the first `len` bytes of the buffer.
    Package { pkg: P, len: usize },
    /// Not enough bytes yet. `pkg_len` is the total length of the next package when the header
    /// already says it, so that an over-long package is refused before its body is buffered.
    NeedMore { pkg_len: Option<usize> },
    /// The next package is the first `len` bytes: the session splits them off its buffer
    /// without copying and hands them to [`Reader::read_owned`]. For readers whose packages
    /// keep big byte fields (bodies), which then share the read buffer instead of a copy.
    Split { len: usize },
}

/// Turns buffered bytes into packages. Shared by all sessions that use it, hence `&self`.
pub trait Reader<P>: Send + Sync + 'static {
    /// Looks at the buffered, not yet consumed bytes. Must not panic on any input.
    fn read(&self, buf: &[u8]) -> Result<Decoded<P>, CodecError>;

    /// Builds the package from exactly its bytes, after `read` answered [`Decoded::Split`].
    /// A reader that wraps another and forwards `read` must forward this too.
    fn read_owned(&self, pkg: Bytes) -> Result<P, CodecError> {
        let _ = pkg;
        Err(CodecError::msg(
            "the reader answered Decoded::Split but does not implement read_owned",
        ))
    }
}

/// Turns a package into bytes, appended to `dst`. Called on the writing task, so encoding cost
/// is paid by the caller and never by the connection's writer. `dst` is the session's encode
/// buffer, held while `write` runs: a writer must not send on that session itself.
pub trait Writer<P>: Send + Sync + 'static {
    fn write(&self, pkg: &P, dst: &mut BytesMut) -> Result<(), CodecError>;

    /// Like `write`, but may leave a big trailing part (a body already in `Bytes`) out of
    /// `dst` and return it, to be written right after `dst` without being copied. The two
    /// parts are one package: never split apart, one message on message transports.
    fn write_parts(&self, pkg: &P, dst: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        self.write(pkg, dst).map(|()| None)
    }
}

/// Both halves, as getty's `ReadWriter`.
pub trait ReadWriter<P>: Reader<P> + Writer<P> {}
impl<P, T: Reader<P> + Writer<P>> ReadWriter<P> for T {}

/// A decoder that owns its per-session state (a `tokio_util` Decoder does).
pub(crate) trait StatefulDecoder<P>: Send + 'static {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<P>, CodecError>;
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<P>, CodecError>;
}

/// How a session turns bytes into packages.
pub(crate) enum Deframer<P> {
    Getty(Arc<dyn Reader<P>>),
    Stateful(Box<dyn StatefulDecoder<P>>),
}

/// One step of deframing, with the max-length rule applied.
pub(crate) enum Step<P> {
    Package(P),
    /// `pkg_len`: the whole package's length when the reader already knows it. The session
    /// reserves room for it once its partial-package budget allows (see `endpoint/budget.rs`).
    NeedMore {
        pkg_len: Option<usize>,
    },
}

/// Why deframing failed; the driver adds the session id.
pub(crate) enum DeframeError {
    TooLong(usize),
    Codec(CodecError),
    BadReader(&'static str),
}

impl<P: 'static> Deframer<P> {
    /// A package's length must be positive, buffered, and within the limit (0: none).
    fn check_len(len: usize, buffered: usize, max: usize) -> Result<(), DeframeError> {
        if len == 0 {
            return Err(DeframeError::BadReader("a package of length 0"));
        }
        if len > buffered {
            return Err(DeframeError::BadReader(
                "a length beyond the buffered bytes",
            ));
        }
        if max > 0 && len > max {
            return Err(DeframeError::TooLong(len));
        }
        Ok(())
    }

    /// Takes one package off the front of `buf`, or says more bytes are needed.
    ///
    /// `max` of 0 means unlimited. A reader that announces a too-long package fails here, before
    /// the body is read; one that never announces a length cannot grow `buf` past `max` either.
    pub(crate) fn step(&mut self, buf: &mut BytesMut, max: usize) -> Result<Step<P>, DeframeError> {
        match self {
            Deframer::Getty(r) => match r.read(buf).map_err(DeframeError::Codec)? {
                Decoded::Package { pkg, len } => {
                    Self::check_len(len, buf.len(), max)?;
                    buf.advance(len);
                    Ok(Step::Package(pkg))
                }
                Decoded::Split { len } => {
                    Self::check_len(len, buf.len(), max)?;
                    let pkg = r
                        .read_owned(buf.split_to(len).freeze())
                        .map_err(DeframeError::Codec)?;
                    Ok(Step::Package(pkg))
                }
                Decoded::NeedMore { pkg_len } => {
                    let known = pkg_len.unwrap_or(buf.len());
                    if max > 0 && known.max(buf.len()) > max {
                        return Err(DeframeError::TooLong(known.max(buf.len())));
                    }
                    Ok(Step::NeedMore { pkg_len })
                }
            },
            Deframer::Stateful(d) => {
                let before = buf.len();
                match d.decode(buf).map_err(DeframeError::Codec)? {
                    Some(pkg) => {
                        let used = before - buf.len();
                        if max > 0 && used > max {
                            return Err(DeframeError::TooLong(used));
                        }
                        Ok(Step::Package(pkg))
                    }
                    None if max > 0 && buf.len() > max => Err(DeframeError::TooLong(buf.len())),
                    None => Ok(Step::NeedMore { pkg_len: None }),
                }
            }
        }
    }

    /// Decodes exactly one package from a whole message (a datagram or a WebSocket message).
    /// Returns `Ok(None)` when the reader wants more than the message holds.
    pub(crate) fn one(&mut self, buf: &mut BytesMut) -> Result<Option<P>, DeframeError> {
        match self {
            Deframer::Getty(r) => match r.read(buf).map_err(DeframeError::Codec)? {
                Decoded::Package { pkg, len } if len > 0 && len <= buf.len() => Ok(Some(pkg)),
                Decoded::Package { .. } => Err(DeframeError::BadReader(
                    "a length that is not within the message",
                )),
                Decoded::Split { len } if len > 0 && len <= buf.len() => r
                    .read_owned(buf.split_to(len).freeze())
                    .map(Some)
                    .map_err(DeframeError::Codec),
                Decoded::Split { .. } => Err(DeframeError::BadReader(
                    "a length that is not within the message",
                )),
                Decoded::NeedMore { .. } => Ok(None),
            },
            Deframer::Stateful(d) => d.decode_eof(buf).map_err(DeframeError::Codec),
        }
    }
}
