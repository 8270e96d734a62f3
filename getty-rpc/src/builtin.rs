//! Services every peer answers by itself, under the reserved `getty.` prefix.
//!
//! `getty.Peer/Hello` (one-way, JSON string body): the sender's registry instance id, sent as
//! the first frame of a connection when [`RpcOptions::identity`](crate::RpcOptions) is set, so a
//! provider can find a connected consumer that published itself.

use crate::frame::{CodecId, Frame};
use crate::peer::ConnState;
use crate::status::Status;

pub(crate) const PEER_SERVICE: &str = "getty.Peer";

pub(crate) fn hello(seq: u64, instance_id: &str) -> Frame {
    let body = serde_json::to_vec(instance_id).unwrap_or_default();
    Frame::one_way(seq, CodecId::Json, PEER_SERVICE, "Hello", body)
}

/// Handles a call to `getty.Peer`; returns the reply for two-way calls.
pub(crate) fn peer_service(state: &ConnState, f: &Frame) -> Option<Frame> {
    match f.method.as_str() {
        "Hello" => match serde_json::from_slice::<String>(&f.body) {
            Ok(id) => {
                *state
                    .remote_instance
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(id);
                Some(Frame::response(f.seq, f.codec, "null"))
            }
            Err(e) => Some(Frame::error(
                f.seq,
                Status::BadRequest,
                format!("Hello body: {e}"),
            )),
        },
        m => Some(Frame::error(
            f.seq,
            Status::UnknownMethod,
            format!("unknown method {m:?} of service {PEER_SERVICE:?}"),
        )),
    }
}
