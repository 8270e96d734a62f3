//! What a handler knows about the call it serves.

use std::time::Instant;

use crate::frame::CodecId;
use crate::peer::Peer;

/// The call being served: who called (to call back on the same connection), which method,
/// the codec, the caller's deadline and metadata.
#[derive(Clone)]
pub struct Context {
    pub(crate) peer: Peer,
    pub(crate) service: crate::frame::Name,
    pub(crate) method: crate::frame::Name,
    pub(crate) seq: u64,
    pub(crate) codec: CodecId,
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Vec<(String, String)>,
}

impl Context {
    /// The calling peer: calls made on it go back over the same connection.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
    pub fn service(&self) -> &str {
        &self.service
    }
    pub fn method(&self) -> &str {
        &self.method
    }
    pub fn seq(&self) -> u64 {
        self.seq
    }
    pub fn codec(&self) -> CodecId {
        self.codec
    }
    /// When the caller stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }
    /// The first metadata value for `key`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
