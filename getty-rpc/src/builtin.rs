//! Services every peer answers by itself, under the reserved `getty.` prefix.
//!
//! `getty.Peer/Hello` (one-way, JSON string body): the sender's registry instance id, sent as
//! the first frame of a connection when [`RpcOptions::identity`](crate::RpcOptions) is set, so a
//! provider can find a connected consumer that published itself.
//!
//! `getty.Reflection/Describe` (two-way, JSON, empty or `null` body): the services and methods
//! this peer serves, as `[{"service": S, "methods": [{"name", "request_type", "reply_type",
//! "one_way", "codecs"}]}]`. On by default; off with `RpcOptions::reflection = false`.

use crate::frame::{CodecId, Frame};
use crate::peer::ConnState;
use crate::status::Status;

pub(crate) const PEER_SERVICE: &str = "getty.Peer";
pub(crate) const REFLECTION_SERVICE: &str = "getty.Reflection";

/// Whether `service` is answered here rather than by the router.
pub(crate) fn is_builtin(service: &str, state: &ConnState) -> bool {
    service == PEER_SERVICE || (service == REFLECTION_SERVICE && state.opts.reflection)
}

/// Answers a built-in call; the reply is for two-way calls.
pub(crate) fn serve(state: &ConnState, f: &Frame) -> Option<Frame> {
    if f.service == PEER_SERVICE {
        return peer_service(state, f);
    }
    match f.method.as_str() {
        "Describe" => {
            let services: Vec<_> = state
                .router
                .describe()
                .into_iter()
                .map(|(service, methods)| {
                    let methods: Vec<_> = methods
                        .into_iter()
                        .map(|m| {
                            serde_json::json!({
                                "name": m.name,
                                "request_type": m.request_type,
                                "reply_type": m.reply_type,
                                "one_way": m.one_way,
                                "codecs": m.codecs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    serde_json::json!({ "service": service, "methods": methods })
                })
                .collect();
            let body = serde_json::to_vec(&services).unwrap_or_default();
            Some(Frame::response(f.seq, CodecId::Json, body))
        }
        m => Some(Frame::error(
            f.seq,
            Status::UnknownMethod,
            format!("unknown method {m:?} of service {REFLECTION_SERVICE:?}"),
        )),
    }
}

pub(crate) fn hello(seq: u64, instance_id: &str) -> Frame {
    let body = serde_json::to_vec(instance_id).unwrap_or_default();
    Frame::one_way(seq, CodecId::Json, PEER_SERVICE, "Hello", body)
}

/// Handles a call to `getty.Peer`; returns the reply for two-way calls.
fn peer_service(state: &ConnState, f: &Frame) -> Option<Frame> {
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
