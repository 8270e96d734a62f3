//! The driver of one connection's protocol [`Machine`](crate::machine::Machine), as a getty-core
//! [`EventListener`]: each received frame is an event for the machine, which says what to do
//! (deliver a reply inline on the session task, run a handler, answer, abort). Handlers that
//! do not finish on their first poll run as tasks (so a handler may call back the same peer and
//! wait); the session never stops reading because of what this side sends.

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
use crate::frame::{self, CodecId, Frame, Kind};
use crate::machine::{Admitted, Answer, Refused, Tick};
use crate::peer::{ConnState, Peer, send_owed, settle};
use crate::router::{Route, route_error};
use crate::status::Status;
use crate::stream;

/// The peers of one endpoint, by session id, and the handler tasks of all its connections.
#[derive(Default)]
pub(crate) struct PeerSet {
    map: Mutex<HashMap<u64, Peer>>,
    pub(crate) handlers: tokio_util::task::TaskTracker,
}

impl PeerSet {
    /// Waits until every handler task of the endpoint has stopped (they are aborted when their
    /// connection closes), so a finished `close().await` means no handler code runs.
    pub(crate) async fn handlers_stopped(&self) {
        self.handlers.close();
        self.handlers.wait().await;
        self.handlers.reopen();
    }

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
    /// The handle a handler gets: calls through it never outlive the served call's deadline.
    /// Built in one go (each clone of a handle is two contended atomic increments).
    fn peer_until(&self, s: &Session<Frame>, deadline: Option<Instant>) -> Peer {
        Peer {
            session: s.clone(),
            state: self.state.clone(),
            deadline,
        }
    }

    fn peer(&self, s: &Session<Frame>) -> Peer {
        Peer::new(s.clone(), self.state.clone())
    }

    /// Answers a Request at once (routing errors); never blocks.
    fn reply_now(&self, s: &Session<Frame>, f: Frame) {
        reply(&self.state, s, f);
    }

    /// The peer's first frame says what it is (`PROTOCOL.md` section 16): a Hello announcing
    /// flow control, or anything else.
    fn learn_peer(&self, s: &Session<Frame>, f: &Frame) {
        let hello = builtin::is_hello(f)
            .then(|| builtin::Hello::parse(&f.body).ok())
            .flatten();
        let flow = hello.as_ref().and_then(builtin::Hello::flow_window);
        let streams = hello.as_ref().and_then(builtin::Hello::stream_credit);
        // Compression hook: the peer reads zstd bodies (compression.rs).
        let zstd = hello
            .as_ref()
            .is_some_and(|h| h.features.iter().any(|x| x == crate::compression::FEATURE));
        self.state.peer_zstd.store(zstd, Ordering::Release);
        let mut m = self.state.machine();
        m.on_first_frame(flow, streams);
        self.state.peer_known_now.notify_waiters();
        self.state.peer_known.store(true, Ordering::Release);
        settle(&mut m, &self.state, s);
    }

    /// Routes a Request or OneWay to its handler.
    fn serve(&self, s: &Session<Frame>, mut f: Frame) {
        let two_way = f.kind == Kind::Request;
        let seq = f.seq;
        // Compression hook: a body that does not inflate within the limit is refused below.
        let inflated = crate::compression::inflate(&self.state, &mut f).err();
        if builtin::is_builtin(&f.service, &self.state) {
            if let Some(reply) = builtin::serve(&self.state, &f)
                && two_way
            {
                self.reply_now(s, reply);
            }
            return;
        }
        let bytes = frame::encoded_len(&f) as u64;
        let route = self.state.router.route(&f.service, &f.method);
        let refused = match inflated.or_else(|| route_error(&route, &f.service, &f.method)) {
            Some(e) => Some(e),
            None => match &route {
                Route::Stream(..) => Some(RpcError::new(
                    Status::UnknownMethod,
                    format!("{}.{} is a streaming method", f.service, f.method),
                )),
                Route::Found(_, info) if info.one_way == two_way => Some(RpcError::new(
                    Status::UnknownMethod,
                    format!(
                        "{}.{} is {}",
                        f.service,
                        f.method,
                        if info.one_way { "one-way" } else { "two-way" }
                    ),
                )),
                _ => None,
            },
        };
        if let Some(e) = refused {
            if two_way {
                self.reply_now(s, Frame::error(seq, e.status, e.message));
            } else {
                tracing::debug!(service = %f.service, method = %f.method, error = %e, "one-way call dropped");
                let mut m = self.state.machine();
                m.one_way_dropped(bytes);
                settle(&mut m, &self.state, s);
            }
            return;
        }
        let Route::Found(handler, _) = route else {
            return;
        };
        let admitted = {
            let mut m = self.state.machine();
            let a = m.admit(seq, two_way, bytes);
            settle(&mut m, &self.state, s);
            a
        };
        let admitted = match admitted {
            Ok(a) => a,
            Err(Refused::Overloaded) => return, // answered (or credited) by the machine
            Err(Refused::Closed) => return,
        };
        let deadline = arrival_deadline(s, f.timeout_ms);
        let codec = f.codec;
        let span = tracing::debug_span!("rpc.serve", service = %f.service, method = %f.method, seq, peer = s.id());
        let ctx = Context {
            peer: self.peer_until(s, deadline),
            service: f.service,
            method: f.method,
            seq,
            codec,
            deadline,
            metadata: f.metadata,
        };
        // Middleware hook: the handler itself when no inbound layer is installed.
        let mut fut = crate::middleware::serve(&self.state.layers, handler, ctx, f.body, two_way);
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
                let send = {
                    let mut m = self.state.machine();
                    let send = m.finished(admitted);
                    settle(&mut m, &self.state, s);
                    send
                };
                if send {
                    reply(&self.state, s, reply_frame(seq, codec, res));
                } else if let Err(e) = res {
                    tracing::debug!(seq, error = %e, "one-way handler failed");
                }
                return;
            }
        }
        self.spawn_handler(s, admitted, deadline, fut, span, move |res| {
            reply_frame(seq, codec, res)
        });
    }

    /// Runs a handler as a task, bounded by the call's deadline. It is known to the machine
    /// before it can run (so a Cancel or the close finds it), and its abort handle is attached
    /// after the spawn, with no lock held across the spawn. `answer` makes the frame that ends
    /// the call (sent unless a Cancel already answered it, or the call is a OneWay).
    fn spawn_handler<T: Send + 'static>(
        &self,
        s: &Session<Frame>,
        mut admitted: Admitted,
        deadline: Option<Instant>,
        fut: impl std::future::Future<Output = Result<T, RpcError>> + Send + 'static,
        span: tracing::Span,
        answer: impl FnOnce(Result<T, RpcError>) -> Frame + Send + 'static,
    ) {
        self.state.machine().track(&mut admitted, None);
        let (seq, hid) = (admitted.seq, admitted.id());
        let (state, session) = (self.state.clone(), s.clone());
        let task = async move {
            // Accounting runs on completion and on abort (a Cancel, or the connection closing).
            let mut serving = Serving {
                state: state.clone(),
                session: session.clone(),
                admitted: Some(admitted),
            };
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
            if serving.finish() {
                reply(&state, &session, answer(res));
            } else if let Err(e) = &res {
                tracing::debug!(seq, error = %e, "handler failed");
            }
        }
        .instrument(span);
        let h = self.state.handlers.spawn(task).abort_handle();
        if let Some(h) = self.state.machine().attach(seq, hid, h) {
            h.abort();
        }
    }
}

impl RpcConnection {
    /// Routes a StreamOpen to its stream handler, which runs as a task with both halves.
    fn serve_stream(&self, s: &Session<Frame>, f: Frame) {
        let seq = f.seq;
        let refuse = |status: Status, msg: String| {
            reply(&self.state, s, Frame::stream_end(seq, true, status, msg));
        };
        let route = self.state.router.route(&f.service, &f.method);
        if let Some(e) = route_error(&route, &f.service, &f.method) {
            return refuse(e.status, e.message);
        }
        let (handler, info) = match route {
            Route::Stream(h, info) => (h.clone(), info),
            _ => {
                return refuse(
                    Status::UnknownMethod,
                    format!("{}.{} is not a streaming method", f.service, f.method),
                );
            }
        };
        if !info.codecs.contains(&f.codec) {
            return refuse(
                Status::UnsupportedCodec,
                format!(
                    "codec {} not supported by {}.{}",
                    f.codec, f.service, f.method
                ),
            );
        }
        let bytes = frame::encoded_len(&f) as u64;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let admitted = {
            let mut m = self.state.machine();
            let a = m.accept_stream(seq, bytes, tx);
            settle(&mut m, &self.state, s);
            a
        };
        let Ok(admitted) = admitted else {
            return; // refused (answered by the machine) or closed
        };
        let deadline = arrival_deadline(s, f.timeout_ms);
        let codec = f.codec;
        let peer = self.peer_until(s, deadline);
        let key = crate::machine::StreamKey { seq, ours: false };
        let (out, items) = stream::halves(&peer, key, codec, rx, deadline, Duration::MAX);
        let ctx = Context {
            peer,
            service: f.service,
            method: f.method,
            seq,
            codec,
            deadline,
            metadata: f.metadata,
        };
        let span = tracing::debug_span!("rpc.stream", service = %ctx.service, method = %ctx.method, seq, peer = s.id());
        // Middleware hook: the handler itself when no inbound layer is installed.
        let kind = info.stream.unwrap_or(crate::stream::StreamKind::Bidi);
        let fut =
            crate::middleware::streams::serve(&self.state.layers, &handler, kind, ctx, items, out);
        self.spawn_handler(s, admitted, deadline, fut, span, move |res| match res {
            Ok(()) => Frame::stream_end(seq, true, Status::Ok, ""),
            Err(e) => {
                // The same mapping as a Response: local-only codes are never sent.
                let e = reply_frame(seq, CodecId::None, Err(e));
                Frame::stream_end(seq, true, e.status, String::from_utf8_lossy(&e.body))
            }
        });
    }

    /// An item, end or credit on an open stream.
    fn on_stream_frame(&self, s: &Session<Frame>, f: Frame) {
        let key = crate::machine::StreamKey::of(&f);
        let mut m = self.state.machine();
        match f.kind {
            Kind::StreamItem => match m.on_stream_item(key, f.body.len() as u64) {
                Ok(Some(items)) => {
                    let _ = items.send(stream::Event::Item(f.body));
                }
                Ok(None) => {}
                Err(why) => {
                    drop(m);
                    tracing::warn!(peer = s.id(), "{why}; closing");
                    s.abort_with_reason(why);
                    return;
                }
            },
            Kind::StreamEnd => {
                if let Some((items, wake)) = m.on_stream_end(key) {
                    if let Some(items) = items {
                        let msg = String::from_utf8_lossy(&f.body).into_owned();
                        let _ = items.send(stream::Event::End(f.status, msg));
                    }
                    drop(wake);
                }
            }
            Kind::Credit => {
                if let Some((items, bytes)) = f.credit_grant()
                    && let Some(wake) = m.on_stream_credit(key, items, bytes)
                {
                    let _ = wake.send(());
                }
            }
            _ => {}
        }
        settle(&mut m, &self.state, s);
    }
}

/// Queues a reply (or any owed frame) from any task, never blocking.
pub(crate) fn reply(state: &Arc<ConnState>, s: &Session<Frame>, mut f: Frame) {
    crate::compression::deflate(state, &mut f); // compression hook
    match s.try_send_pkg(&f) {
        Ok(_) => {}
        Err(getty_core::Error::SessionClosed(_)) => {}
        // Full queue, or a reply over the frame limit: the slow path, under the lock.
        Err(_) => {
            let mut m = state.machine();
            send_owed(&mut m, state, s, f);
        }
    }
}

/// A served call's deadline, counted from when its read arrived: the session marks that once
/// per read, before dispatching what it read, so no call reads the clock of its own.
fn arrival_deadline(s: &Session<Frame>, timeout_ms: u32) -> Option<Instant> {
    (timeout_ms > 0).then(|| s.active() + Duration::from_millis(u64::from(timeout_ms)))
}

fn reply_frame(seq: u64, codec: CodecId, res: Result<Bytes, RpcError>) -> Frame {
    match res {
        Ok(body) => Frame::response(seq, codec, body),
        // Local-only codes are never sent (PROTOCOL.md section 13): a handler that passes on a
        // nested call's TIMEOUT ran out of time; a lost connection of its own is ours.
        Err(e) if e.status == Status::Timeout => {
            Frame::error(seq, Status::DeadlineExceeded, e.message)
        }
        Err(e) if e.status == Status::ConnectionClosed => {
            Frame::error(seq, Status::Internal, e.message)
        }
        Err(e) => Frame::error(seq, e.status, e.message),
    }
}

impl EventListener<Frame> for RpcConnection {
    fn on_open(&self, s: &Session<Frame>) -> Result<(), String> {
        // The first frame on the connection: the other side learns our limits, our window and
        // who we are before any call.
        let hello = {
            let seq = self.state.machine().next_seq();
            builtin::Hello::ours(&self.state.opts).frame(seq)
        };
        let _ = s.try_send_pkg(&hello);
        let peer = self.peer(s);
        self.peers.map().insert(s.id(), peer.clone());
        if let Some(f) = &self.on_peer {
            f(&peer);
        }
        Ok(())
    }

    fn on_closing(&self, _s: &Session<Frame>) {
        // Pending calls and streams fail as soon as the close starts, not once the writer has
        // flushed (which may take the whole wait time).
        self.fail_everything();
    }

    fn on_close(&self, s: &Session<Frame>) {
        self.peers.map().remove(&s.id());
        self.fail_everything();
    }

    fn on_cron(&self, s: &Session<Frame>) {
        let mut m = self.state.machine();
        match m.on_tick(s.idle(), self.state.opts.heartbeat_period) {
            Tick::Close(why) => {
                drop(m);
                tracing::info!(peer = s.id(), "{why}; closing");
                s.close_with_reason(why);
            }
            Tick::Pinged => settle(&mut m, &self.state, s),
        }
    }

    fn on_message(&self, s: &Session<Frame>, f: Frame) {
        if !self.state.peer_known.load(Ordering::Acquire) {
            self.learn_peer(s, &f);
        }
        match f.kind {
            Kind::Response | Kind::Pong => {
                let answer = {
                    let mut m = self.state.machine();
                    let a = m.on_answer(f.seq, f.kind == Kind::Pong);
                    settle(&mut m, &self.state, s);
                    a
                };
                match answer {
                    Answer::Deliver(w) => {
                        let mut f = f;
                        // Compression hook: a reply that does not inflate fails its call.
                        let r = crate::compression::inflate(&self.state, &mut f).map(|()| f);
                        let _ = w.send(r);
                    }
                    Answer::Late => tracing::debug!(seq = f.seq, "late reply dropped"),
                    Answer::Ignored => {}
                }
            }
            Kind::Request | Kind::OneWay => self.serve(s, f),
            Kind::Ping => {
                let mut m = self.state.machine();
                m.on_ping(f.seq);
                settle(&mut m, &self.state, s);
            }
            Kind::Cancel => {
                let h = {
                    let mut m = self.state.machine();
                    let h = m.on_cancel(f.seq);
                    settle(&mut m, &self.state, s);
                    h
                };
                if let Some(h) = h {
                    h.abort();
                    tracing::debug!(seq = f.seq, "request cancelled by the caller");
                }
            }
            Kind::Credit if f.seq != 0 => self.on_stream_frame(s, f),
            Kind::Credit => {
                if let Some((calls, bytes)) = f.credit_grant() {
                    let mut m = self.state.machine();
                    m.on_credit(calls, bytes);
                    settle(&mut m, &self.state, s);
                }
            }
            Kind::StreamOpen => self.serve_stream(s, f),
            Kind::StreamItem | Kind::StreamEnd => self.on_stream_frame(s, f),
        }
    }
}

/// Reports one handler task as finished when it ends, however it ends (an abort drops it).
struct Serving {
    state: Arc<ConnState>,
    session: Session<Frame>,
    admitted: Option<Admitted>,
}

impl Serving {
    /// The handler finished: returns whether its reply should go out.
    fn finish(&mut self) -> bool {
        let Some(a) = self.admitted.take() else {
            return false;
        };
        let mut m = self.state.machine();
        let send = m.finished(a);
        settle(&mut m, &self.state, &self.session);
        send
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.finish();
    }
}

impl RpcConnection {
    /// Closes the machine: every waiter, waiting caller and stream fails, every handler stops.
    fn fail_everything(&self) {
        let closed = self.state.machine().close();
        for w in closed.waiters {
            let _ = w.send(Err(RpcError::closed("connection closed")));
        }
        drop(closed.grants); // their callers see the connection closed
        for h in closed.handles {
            h.abort();
        }
        for (items, wake) in closed.streams {
            if let Some(items) = items {
                let _ = items.send(stream::Event::End(
                    Status::ConnectionClosed,
                    "connection closed".into(),
                ));
            }
            drop(wake);
        }
    }
}
