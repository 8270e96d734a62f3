//! Adapter so a `tokio_util::codec` Decoder/Encoder pair frames a session.
//!
//! The decoder keeps per-session state, so each session gets its own clone; the encoder is
//! shared by every task that writes, behind a mutex (encoders are usually stateless and cheap).

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{StatefulDecoder, Writer};
use crate::error::CodecError;

/// Wraps a `Decoder + Encoder<P>`; hand it to
/// [`SessionConfig::set_tokio_codec`](crate::SessionConfig::set_tokio_codec).
pub struct TokioCodec<C> {
    pub(crate) codec: C,
}

impl<C> TokioCodec<C> {
    pub fn new(codec: C) -> Self {
        TokioCodec { codec }
    }
}

pub(crate) struct DecodeHalf<C>(pub(crate) C);

impl<C, P> StatefulDecoder<P> for DecodeHalf<C>
where
    C: Decoder<Item = P> + Send + 'static,
    C::Error: std::error::Error + Send + Sync + 'static,
{
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<P>, CodecError> {
        self.0.decode(buf).map_err(CodecError::new)
    }
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<P>, CodecError> {
        self.0.decode_eof(buf).map_err(CodecError::new)
    }
}

pub(crate) struct EncodeHalf<C>(pub(crate) Arc<Mutex<C>>);

impl<C, P> Writer<P> for EncodeHalf<C>
where
    C: Encoder<P> + Send + 'static,
    C::Error: std::error::Error + Send + Sync + 'static,
    P: Clone + 'static,
{
    /// tokio encoders take the item by value; packages are cloned (cheap for `Bytes`).
    fn write(&self, pkg: &P, dst: &mut BytesMut) -> Result<(), CodecError> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.encode(pkg.clone(), dst).map_err(CodecError::new)
    }
}
