//! The RPC protocol on one connection, as a getty-core [`EventListener`]: replies are matched to
//! pending calls inline on the session task (no task, no extra wake-up), requests are routed to
//! handlers that run as their own tasks (so a handler may call back the same peer and wait),
//! and heartbeats keep the connection honest.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use getty_core::{EventListener, Session};
use tracing::Instrument;

use crate::builtin;
use crate::context::Context;
use crate::error::RpcError;
use crate::frame::{CodecId, Frame, Kind};
use crate::peer::{ConnState, Peer, complete};
use crate::router::{Route, route_error};
use crate::status::Status;

/// The peers of one endpoint, by session id.
#[derive(Default)]
pub(crate) struct PeerSet {
    map: Mutex<HashMap<u64, Peer>>,
}

impl PeerSet {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Peer>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn get(&self, id: u64) -> Option<Peer> {
        self.map().get(&id).cloned()
    }
    pub(crate) fn all(&self) -> Vec<Peer> {
        let mut v: Vec<Peer> = self.map().values().cloned().collect();
        v.sort_by_key(Peer::id);
        v
    }
}

/// Called with each new peer once its connection is open.
pub type OnPeer = Arc<dyn Fn(&Peer) + Send + Sync>;

pub(crate) struct RpcConnection {
    pub(crate) state: Arc<ConnState>,
    pub(crate) peers: Arc<PeerSet>,
    pub(crate) on_peer: Option<OnPeer>,
}

impl RpcConnection {
    fn peer(&self, s: &Session<Frame>) -> Peer {
        Peer {
            session: s.clone(),
            state: self.state.clone(),
        }
    }

    fn reply_error(&self, s: &Session<Frame>, seq: u64, e: RpcError) {
        send_now_or_later(s, Frame::error(seq, e.status, e.message));
    }

    /// Routes a Request or OneWay to its handler.
    fn serve(&self, s: &Session<Frame>, f: Frame) {
        let two_way = f.kind == Kind::Request;
        let seq = f.seq;
        if builtin::is_builtin(&f.service, &self.state) {
            if let Some(reply) = builtin::serve(&self.state, &f)
                && two_way
            {
                send_now_or_later(s, reply);
            }
            return;
        }
        let route = self.state.router.route(&f.service, &f.method);
        if let Some(e) = route_error(&route, &f.service, &f.method) {
            if two_way {
                self.reply_error(s, seq, e);
            } else {
                tracing::debug!(service = %f.service, method = %f.method, "one-way call to an unknown method dropped");
            }
            return;
        }
        let Route::Found(handler, info) = route else {
            return;
        };
        if info.one_way == two_way {
            let e = RpcError::new(
                Status::UnknownMethod,
                format!(
                    "{}.{} is {}",
                    f.service,
                    f.method,
                    if info.one_way { "one-way" } else { "two-way" }
                ),
            );
            if two_way {
                self.reply_error(s, seq, e);
            }
            return;
        }
        let limit = self.state.opts.max_inflight;
        if self.state.inflight.fetch_add(1, Ordering::AcqRel) >= limit {
            self.state.inflight.fetch_sub(1, Ordering::AcqRel);
            if two_way {
                self.reply_error(
                    s,
                    seq,
                    RpcError::new(
                        Status::Overloaded,
                        format!("more than {limit} requests in flight"),
                    ),
                );
            }
            return;
        }
        let deadline =
            (f.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(f.timeout_ms as u64));
        let codec = f.codec;
        let span = tracing::debug_span!("rpc.serve", service = %f.service, method = %f.method, seq, peer = s.id());
        let ctx = Context {
            peer: self.peer(s),
            service: f.service,
            method: f.method,
            seq,
            codec,
            deadline,
            metadata: f.metadata,
        };
        let mut fut = handler.call(ctx, f.body);
        let serving = Serving {
            state: self.state.clone(),
            seq,
        };
        // Most handlers answer without waiting: poll once right here, and only a handler that
        // is still pending becomes a task (which polls it again with a real waker).
        if self.state.opts.inline_first_poll {
            let _enter = span.enter();
            let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
            let res = match polled {
                Ok(Poll::Pending) => None,
                Ok(Poll::Ready(r)) => Some(r),
                Err(_) => Some(Err(RpcError::internal("the handler panicked"))),
            };
            if let Some(res) = res {
                if two_way {
                    let reply = reply_frame(seq, codec, res);
                    if let Err(getty_core::Error::QueueFull { .. }) = s.try_send_pkg(&reply) {
                        // Never drop a reply: wait for room on a task, which keeps its
                        // in-flight slot, so `max_inflight` bounds these tasks too.
                        let session = s.clone();
                        tokio::spawn(async move {
                            let _serving = serving;
                            send_reply(&session, seq, reply).await
                        });
                    }
                } else if let Err(e) = res {
                    tracing::debug!(seq, error = %e, "one-way handler failed");
                }
                return;
            }
        }
        let session = s.clone();
        let task = async move {
            // Accounting runs on completion and on abort (a Cancel, or the connection closing).
            let _serving = serving;
            let run = AssertUnwindSafe(fut).catch_unwind();
            let res = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), run).await {
                    Ok(r) => r,
                    Err(_) => Ok(Err(RpcError::new(
                        Status::DeadlineExceeded,
                        "the caller's deadline passed",
                    ))),
                },
                None => run.await,
            };
            let res = res.unwrap_or_else(|_| Err(RpcError::internal("the handler panicked")));
            if two_way {
                send_reply(&session, seq, reply_frame(seq, codec, res)).await;
            } else if let Err(e) = res {
                tracing::debug!(seq, error = %e, "one-way handler failed");
            }
        }
        .instrument(span);
        // Hold the lock across spawn so the task cannot finish before it is registered.
        let mut running = self.state.running.lock().unwrap_or_else(|e| e.into_inner());
        let h = tokio::spawn(task);
        if two_way {
            running.insert(seq, h.abort_handle());
        }
    }
}

/// Queues a frame the protocol requires (a reply, a Pong) without blocking the session task;
/// when the queue is full it waits on a task instead of dropping the frame. The session reads
/// nothing more until the queue has room again (getty-core's back-pressure), so these tasks
/// stay few.
fn send_now_or_later(s: &Session<Frame>, f: Frame) {
    if let Err(getty_core::Error::QueueFull { .. }) = s.try_send_pkg(&f) {
        let s = s.clone();
        tokio::spawn(async move {
            if let Err(e) = s.send_pkg(&f).await {
                tracing::debug!(seq = f.seq, error = %e, "frame not sent");
            }
        });
    }
}

fn reply_frame(seq: u64, codec: CodecId, res: Result<Bytes, RpcError>) -> Frame {
    match res {
        Ok(body) => Frame::response(seq, codec, body),
        Err(e) => Frame::error(seq, e.status, e.message),
    }
}

async fn send_reply(session: &Session<Frame>, seq: u64, reply: Frame) {
    match session.send_pkg(&reply).await {
        Ok(_) => {}
        Err(getty_core::Error::Encode { source, .. }) => {
            // A reply over the frame limit, say: the caller still gets an answer.
            let msg = format!("reply not sendable: {source}");
            let _ = session
                .send_pkg(&Frame::error(seq, Status::Internal, msg))
                .await;
        }
        Err(e) => tracing::debug!(seq, error = %e, "reply not sent"),
    }
}

impl EventListener<Frame> for RpcConnection {
    fn on_open(&self, s: &Session<Frame>) -> Result<(), String> {
        if let Some(id) = &self.state.opts.identity {
            // The first frame on the connection, so the other side knows us before any call.
            let _ = s.try_send_pkg(&builtin::hello(self.state.next_seq(), id));
        }
        let peer = self.peer(s);
        self.peers.map().insert(s.id(), peer.clone());
        if let Some(f) = &self.on_peer {
            f(&peer);
        }
        Ok(())
    }

    fn on_close(&self, s: &Session<Frame>) {
        self.peers.map().remove(&s.id());
        self.state.shutdown("connection closed");
    }

    fn on_cron(&self, s: &Session<Frame>) {
        let opts = &self.state.opts;
        let silent_for = s.idle();
        if silent_for > opts.heartbeat_period * opts.heartbeat_misses {
            tracing::info!(
                peer = s.id(),
                ?silent_for,
                "peer missed its heartbeats; closing"
            );
            s.close_with_reason(format!("peer silent for {silent_for:?}"));
            return;
        }
        let _ = s.try_send_pkg(&Frame::ping(self.state.next_seq()));
    }

    fn on_message(&self, s: &Session<Frame>, f: Frame) {
        match f.kind {
            Kind::Response | Kind::Pong => complete(&self.state, f),
            Kind::Request | Kind::OneWay => self.serve(s, f),
            Kind::Ping => send_now_or_later(s, Frame::pong(f.seq)),
            Kind::Cancel => {
                let h = self
                    .state
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&f.seq);
                if let Some(h) = h {
                    h.abort();
                    tracing::debug!(seq = f.seq, "request cancelled by the caller");
                }
            }
        }
    }
}

/// Marks one request as served when its task ends, however it ends.
struct Serving {
    state: Arc<ConnState>,
    seq: u64,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.state.inflight.fetch_sub(1, Ordering::AcqRel);
        let me = tokio::task::try_id();
        let mut running = self.state.running.lock().unwrap_or_else(|e| e.into_inner());
        // Only our own entry: a peer may reuse a seq while an older request still runs.
        if running
            .get(&self.seq)
            .is_some_and(|h| me.is_none_or(|id| h.id() == id))
        {
            running.remove(&self.seq);
        }
    }
}
