//! Services every peer answers by itself, under the reserved `getty.` prefix.
//!
//! `getty.Peer/Hello` (one-way, JSON object body, [`Hello`]): the first frame every peer sends on a
//! connection. It announces the sender's limits and flow-control window (so the other side
//! never sends what would be refused) and, when [`RpcOptions::identity`](crate::RpcOptions) is
//! set, its registry instance id, so a provider can find a connected consumer that published
//! itself.
//!
//! `getty.Reflection/Describe` (two-way, JSON, empty or `null` body): the services and methods
//! this peer serves, as `[{"service": S, "methods": [{"name", "request_type", "reply_type",
//! "one_way", "codecs"}]}]`. On by default; off with `RpcOptions::reflection = false`.

use crate::frame::{CodecId, Frame};
use crate::machine::Limits;
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
                            let mut d = serde_json::json!({
                                "name": m.name,
                                "request_type": m.request_type,
                                "reply_type": m.reply_type,
                                "one_way": m.one_way,
                                "codecs": m.codecs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                            });
                            // Only streaming methods carry it: "server", "client" or "bidi".
                            if let (Some(k), Some(o)) = (m.stream, d.as_object_mut()) {
                                o.insert("stream".into(), k.name().into());
                            }
                            d
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

/// What a peer announces in its Hello (`PROTOCOL.md` section 16): who it is, the largest frame
/// it accepts, and whether (and with which window) it does flow control.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Hello {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_frame: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) window: Option<HelloWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stream_window: Option<HelloStreamWindow>,
    #[serde(default)]
    pub(crate) features: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HelloStreamWindow {
    pub(crate) items: u32,
    pub(crate) bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HelloWindow {
    pub(crate) calls: u32,
    pub(crate) bytes: u64,
}

/// The feature that says "I do flow control" (section 17).
pub(crate) const FLOW: &str = "flow";
/// The feature that says "I take and open streams" (section 20).
pub(crate) const STREAM: &str = "stream";

impl Hello {
    /// This peer's Hello, from its options.
    pub(crate) fn ours(opts: &crate::options::RpcOptions) -> Hello {
        Hello {
            instance: opts.identity.clone(),
            max_frame: Some(opts.max_frame as u64),
            window: Some(HelloWindow {
                calls: u32::try_from(opts.max_inflight).unwrap_or(u32::MAX),
                bytes: opts.max_inflight_bytes,
            }),
            stream_window: Some(HelloStreamWindow {
                items: opts.stream_window_items,
                bytes: opts.stream_window_bytes,
            }),
            features: {
                let mut f = vec![FLOW.to_string(), STREAM.to_string()];
                if crate::compression::enabled(opts) {
                    f.push(crate::compression::FEATURE.to_string()); // compression.rs
                }
                f
            },
        }
    }

    /// Reads a Hello body: the object of section 16, or (from older peers) a JSON string
    /// holding only the instance id.
    pub(crate) fn parse(body: &[u8]) -> Result<Hello, serde_json::Error> {
        match serde_json::from_slice::<Hello>(body) {
            Ok(h) => Ok(h),
            Err(e) => match serde_json::from_slice::<String>(body) {
                Ok(id) => Ok(Hello {
                    instance: Some(id),
                    ..Hello::default()
                }),
                Err(_) => Err(e),
            },
        }
    }

    /// The window the peer offers, if it does flow control.
    pub(crate) fn flow_window(&self) -> Option<Limits> {
        let w = self.window?;
        self.features.iter().any(|f| f == FLOW).then_some(Limits {
            calls: w.calls,
            bytes: w.bytes,
        })
    }

    /// The credit the peer grants on each stream, if it takes streams.
    pub(crate) fn stream_credit(&self) -> Option<Limits> {
        let w = self.stream_window?;
        self.features.iter().any(|f| f == STREAM).then_some(Limits {
            calls: w.items,
            bytes: w.bytes,
        })
    }

    pub(crate) fn frame(&self, seq: u64) -> Frame {
        let body = serde_json::to_vec(self).unwrap_or_default();
        Frame::one_way(seq, CodecId::Json, PEER_SERVICE, "Hello", body)
    }
}

/// Whether `f` is a Hello (the first frame a peer sends).
pub(crate) fn is_hello(f: &Frame) -> bool {
    f.kind.is_call() && f.service == PEER_SERVICE && f.method == "Hello"
}

/// Handles a call to `getty.Peer`; returns the reply for two-way calls.
fn peer_service(state: &ConnState, f: &Frame) -> Option<Frame> {
    match f.method.as_str() {
        "Hello" => match Hello::parse(&f.body) {
            Ok(h) => {
                if let Some(id) = h.instance {
                    *state
                        .remote_instance
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(id);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_hello_is_the_one_in_protocol_md() {
        let h = Hello::ours(&crate::options::RpcOptions::default()).frame(1);
        assert_eq!(
            std::str::from_utf8(&h.body).unwrap(),
            r#"{"max_frame":16777216,"window":{"calls":4096,"bytes":33554432},"stream_window":{"items":256,"bytes":1048576},"features":["flow","stream"]}"#
        );
        let back = Hello::parse(&h.body).unwrap();
        assert_eq!(
            back.flow_window(),
            Some(Limits {
                calls: 4096,
                bytes: 32 << 20
            })
        );
    }

    #[test]
    fn an_older_hello_names_an_instance_and_offers_no_flow_control() {
        let h = Hello::parse(br#""provider-1""#).unwrap();
        assert_eq!(h.instance.as_deref(), Some("provider-1"));
        assert_eq!(h.flow_window(), None);
        // Unknown fields and features are ignored; a window without "flow" is not flow control.
        let h =
            Hello::parse(br#"{"window":{"calls":1,"bytes":2},"features":["x"],"new":1}"#).unwrap();
        assert_eq!(h.flow_window(), None);
        assert!(Hello::parse(b"{{{").is_err());
    }
}
