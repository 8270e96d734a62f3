//! The protocol state of one connection, sans-io (as quinn-proto is for quinn): sequence ids,
//! our pending calls, the peer's calls we are running, both windows (flow control), frames the
//! protocol owes the peer, and the heartbeat policy.
//!
//! Events go in as method calls (a frame arrived, a call starts, a handler finished, a timer
//! fired, the connection closed); actions come out as return values and as frames to send
//! ([`Machine::poll_transmit`]) or callers to wake ([`Machine::poll_grant`]). It owns no socket,
//! no task and no clock: `connection.rs` drives it under one lock per connection, and
//! `tests.rs` drives two of them back to back with random interleavings.
//!
//! Why it cannot deadlock: reading never depends on this side's own outgoing calls. What the
//! peer can make us hold is bounded by our window (its calls in progress, in count and bytes)
//! and by the frames we owe it ([`Config::max_owed`]); a caller waits only for the peer's
//! window, and that wait is bounded by its deadline.

mod streams;
mod window;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub(crate) use streams::{SendCredit, Stream, StreamKey, due, spend_reserve};
pub use window::Limits;
pub(crate) use window::Window;

use crate::frame::Frame;
use crate::peer::FastMap;
use crate::status::Status;

/// The window a peer assumes before the other's first frame tells whether (and how much)
/// flow control it offers: one call (of any size), so no window can be overshot, and since
/// both peers send their Hello at once, later callers wait at most about one round trip.
pub const INITIAL_WINDOW: Limits = Limits { calls: 1, bytes: 1 };

/// The types the driver plugs in: how a caller is completed, woken, and a handler stopped.
pub(crate) trait Io {
    /// Completes one of our two-way calls (or pings) with a frame or an error.
    type Waiter;
    /// Wakes a caller that waits for window, with the seq its call was given.
    type Grant;
    /// Stops a running handler.
    type Handle;
    /// Whether the caller behind a grant gave up waiting (so its queue entry can go).
    fn gave_up(grant: &Self::Grant) -> bool;
    /// Where a stream's received items go (the local receiving half).
    type Items;
    /// Wakes a stream sender that waits for credit.
    type Wake;
}

/// What a call that takes window waits for once sent.
pub(crate) enum Await<T: Io> {
    /// A two-way call's answer.
    Reply(T::Waiter),
    /// Nothing: a OneWay.
    Nothing,
    /// A stream of ours: its items go here.
    Stream(T::Items),
}

/// What one connection's machine is configured with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Our window: the peer's calls we run at once; more are refused with `OVERLOADED`.
    pub(crate) window: Limits,
    /// Frames we may owe the peer (replies, Pongs, Cancels, Credits) beyond what the write
    /// queue takes; a peer that makes us owe more ignores its window and is not reading.
    pub(crate) max_owed: usize,
    /// Heartbeat periods of silence before the connection is closed.
    pub(crate) heartbeat_misses: u32,
    /// The credit we grant the sender of items on every stream, at its start and again as our
    /// side consumes them.
    pub(crate) stream_credit: Limits,
}

/// A call of ours waiting for its Response (or a ping for its Pong).
struct Pending<W> {
    /// `None` once the caller gave up (timeout, drop) while the peer still owes the answer: the
    /// entry keeps its window until the Response comes (a flow-control peer always answers).
    waiter: Option<W>,
    bytes: u64,
    /// A Request (holds window) rather than a Ping.
    request: bool,
}

/// A caller waiting for the peer's window.
struct Waiting<T: Io> {
    bytes: u64,
    what: Await<T>,
    grant: T::Grant,
}

/// A peer's call whose handler runs as its own task (so a Cancel or the close can stop it).
struct Running<H> {
    id: u64,
    two_way: bool,
    /// A stream we accepted (its end is a StreamEnd, not a Response).
    stream: bool,
    bytes: u64,
    /// `None` until attached.
    handle: Option<H>,
}

/// A peer's call admitted to our window; hand it back with [`Machine::finished`].
#[derive(Debug)]
#[must_use]
pub(crate) struct Admitted {
    pub(crate) seq: u64,
    id: u64,
    pub(crate) two_way: bool,
    stream: bool,
    bytes: u64,
    tracked: bool,
}

/// Why a call of the peer's was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Over our window: a Request is answered `OVERLOADED` (queued by the machine).
    Overloaded,
    /// The connection is closed.
    Closed,
}

/// The outcome of a local call that wants to go out.
pub(crate) enum Start<T: Io> {
    /// Send it now with this seq.
    Send(u64),
    /// No window: call [`Machine::wait`] with what it awaits back.
    Full(Await<T>),
    /// The connection is closed.
    Closed(Await<T>),
}

/// What a received Response or Pong meant.
pub(crate) enum Answer<W> {
    /// Hand the frame to this waiter.
    Deliver(W),
    /// Nobody waits: a late reply (counted) or a stray Pong.
    Late,
    /// Nothing of ours: ignored.
    Ignored,
}

/// What a heartbeat tick decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// A Ping was queued (see `poll_transmit`).
    Pinged,
    /// Close: the peer has been silent too long.
    Close(String),
}

/// Everything a close releases: fail the waiters, drop the grants, abort the handlers.
pub(crate) struct Closed<T: Io> {
    pub(crate) waiters: Vec<T::Waiter>,
    pub(crate) grants: Vec<T::Grant>,
    pub(crate) handles: Vec<T::Handle>,
    /// Every open stream's receiving half and blocked sender: fail them.
    pub(crate) streams: Vec<streams::Ended<T>>,
}

/// Counters for `PeerStats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) late_replies: u64,
    pub(crate) refused: u64,
}

/// The protocol state of one connection.
pub(crate) struct Machine<T: Io> {
    cfg: Config,
    next_seq: u64,
    closed: bool,
    /// The peer announced flow control: it answers every Request and credits every OneWay,
    /// and it reads Credit frames.
    peer_flow: bool,
    /// The credit the peer grants on each stream, if it announced streams.
    peer_stream_credit: Option<Limits>,
    /// Open streams, both ours and the peer's.
    streams: FastMap<StreamKey, Stream<T>>,
    /// Counts every change that can end a stream's sending (a half-close, cancel, removal,
    /// close). Senders spending reserved credit outside the lock read it to notice an end
    /// without taking the lock per item (`streams.rs`, [`Machine::stream_epoch`]).
    stream_epoch: Arc<AtomicU64>,
    /// The peer's first frame arrived (a Hello, or anything else from a peer without flow
    /// control); until then our calls keep within [`INITIAL_WINDOW`].
    peer_known: bool,
    // ---- our calls ----
    pending: FastMap<u64, Pending<T::Waiter>>,
    /// The peer's window, as we use it.
    out: Window,
    waiting: VecDeque<Waiting<T>>,
    /// Queue length at which entries of callers that gave up are swept out (amortised O(1)).
    sweep_at: usize,
    // ---- the peer's calls ----
    running: FastMap<u64, Running<T::Handle>>,
    /// Tracked handlers whose seq a later call of the peer reused while they ran (a peer bug,
    /// but each call is still served and answered: `PROTOCOL.md` section 7).
    shadowed: Vec<(u64, Running<T::Handle>)>,
    /// Our window, as the peer uses it.
    inw: Window,
    one_ways_in: u32,
    next_handler: u64,
    /// One-way window to return to the peer (batched into Credit frames).
    credit: (u32, u64),
    // ---- frames ----
    transmit: VecDeque<Frame>,
    /// Frames owed but not taken by the write queue yet.
    deferred: VecDeque<Frame>,
    flushing: bool,
    counters: Counters,
}

impl Admitted {
    /// Tells this admission apart from another with the same seq.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl<T: Io> Machine<T> {
    pub(crate) fn new(cfg: Config) -> Machine<T> {
        Machine {
            cfg,
            next_seq: 1,
            closed: false,
            peer_flow: false,
            peer_known: false,
            peer_stream_credit: None,
            streams: FastMap::default(),
            stream_epoch: Arc::new(AtomicU64::new(0)),
            pending: FastMap::default(),
            out: Window::new(Some(INITIAL_WINDOW)),
            waiting: VecDeque::new(),
            sweep_at: 64,
            running: FastMap::default(),
            shadowed: Vec::new(),
            inw: Window::new(Some(cfg.window)),
            one_ways_in: 0,
            next_handler: 0,
            credit: (0, 0),
            transmit: VecDeque::new(),
            deferred: VecDeque::new(),
            flushing: false,
            counters: Counters::default(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next id from our counter (Requests, OneWays, Pings and Hello share it).
    pub(crate) fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }
    /// Our calls waiting for an answer (including abandoned ones the peer still owes).
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.values().filter(|p| p.waiter.is_some()).count()
    }
    /// The peer's calls in progress here.
    pub(crate) fn inflight(&self) -> usize {
        self.inw.calls as usize
    }
    /// Callers waiting for the peer's window (not counting those that gave up).
    pub(crate) fn waiting_len(&self) -> usize {
        self.waiting
            .iter()
            .filter(|w| !T::gave_up(&w.grant))
            .count()
    }
    pub(crate) fn peer_flow(&self) -> bool {
        self.peer_flow
    }

    // ------------------------------------------------------------------------------------
    // The peer's Hello
    // ------------------------------------------------------------------------------------

    /// The peer's first frame arrived: `Some(window)` if it was a Hello announcing flow
    /// control (our calls then stay inside that window), `None` for anything else (a peer
    /// without flow control: nothing limits our calls but its `OVERLOADED` answers).
    /// Waiting callers may fit now: poll [`Machine::poll_grant`].
    pub(crate) fn on_first_frame(&mut self, flow: Option<Limits>, streams: Option<Limits>) {
        if std::mem::replace(&mut self.peer_known, true) {
            return;
        }
        self.peer_stream_credit = streams.filter(|_| flow.is_some()).map(|c| Limits {
            calls: c.calls.max(1),
            bytes: c.bytes.max(1),
        });
        match flow {
            Some(w) => {
                self.peer_flow = true;
                self.out.limit = Some(Limits {
                    calls: w.calls.max(1),
                    bytes: w.bytes.max(1),
                });
            }
            None => {
                self.out.limit = None;
                // A peer without flow control need not answer calls we gave up on.
                let out = &mut self.out;
                self.pending.retain(|_, p| {
                    let keep = p.waiter.is_some() || !p.request;
                    if !keep {
                        out.give_back(1, p.bytes);
                    }
                    keep
                });
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Our calls
    // ------------------------------------------------------------------------------------

    /// A local call of `bytes` (the whole frame) wants to go out; `waiter` is `Some` for a
    /// two-way call. Callers that wait keep their order: nobody overtakes a waiting caller.
    pub(crate) fn start_call(&mut self, bytes: u64, what: Await<T>) -> Start<T> {
        if self.closed {
            return Start::Closed(what);
        }
        if !self.waiting.is_empty() || !self.out.fits(bytes) {
            return Start::Full(what);
        }
        Start::Send(self.take_out(bytes, what))
    }

    /// Queues a caller that got [`Start::Full`]; it is woken through `grant` with its seq.
    pub(crate) fn wait(&mut self, bytes: u64, what: Await<T>, grant: T::Grant) {
        if self.waiting.len() >= self.sweep_at {
            self.waiting.retain(|w| !T::gave_up(&w.grant));
            self.sweep_at = (2 * self.waiting.len()).max(64);
        }
        self.waiting.push_back(Waiting { bytes, what, grant });
    }

    fn take_out(&mut self, bytes: u64, what: Await<T>) -> u64 {
        let seq = self.next_seq();
        self.out.take(bytes);
        match what {
            Await::Reply(w) => {
                self.pending.insert(
                    seq,
                    Pending {
                        waiter: Some(w),
                        bytes,
                        request: true,
                    },
                );
            }
            Await::Nothing => {}
            Await::Stream(items) => self.open_ours(seq, bytes, items),
        }
        seq
    }

    /// The next waiting caller that now fits, with its seq (already counted as sent). The
    /// driver calls this after every event that returns window, until it gives `None`.
    /// Gives the grant, the seq and the call's bytes (for [`Machine::unsend`]).
    pub(crate) fn poll_grant(&mut self) -> Option<(T::Grant, u64, u64)> {
        if self.closed {
            return None;
        }
        while self.waiting.front().is_some_and(|w| T::gave_up(&w.grant)) {
            self.waiting.pop_front();
        }
        let bytes = self.waiting.front()?.bytes;
        if !self.out.fits(bytes) {
            return None;
        }
        let w = self.waiting.pop_front()?;
        let seq = self.take_out(w.bytes, w.what);
        Some((w.grant, seq, w.bytes))
    }

    /// A call that took window never left (its caller gave up before it was queued, or the
    /// queue refused it): forget it and return its window.
    pub(crate) fn unsend(&mut self, seq: u64, bytes: u64) {
        if self.closed {
            return;
        }
        let bytes = match self.pending.remove(&seq) {
            Some(p) => p.bytes,
            None => bytes,
        };
        if self
            .streams
            .remove(&StreamKey { seq, ours: true })
            .is_some()
        {
            self.stream_gone();
        }
        self.out.give_back(1, bytes);
    }

    /// A ping of ours, answered by a Pong; it takes no window.
    pub(crate) fn start_ping(&mut self, waiter: T::Waiter) -> Result<u64, T::Waiter> {
        if self.closed {
            return Err(waiter);
        }
        let seq = self.next_seq();
        self.pending.insert(
            seq,
            Pending {
                waiter: Some(waiter),
                bytes: 0,
                request: false,
            },
        );
        Ok(seq)
    }

    /// The caller gave up on a call it sent (its timer fired, or it dropped the call). Returns
    /// whether a Cancel should go out (queued by the machine). A flow-control peer still owes
    /// the answer, so the entry keeps its window until the Response; otherwise it is freed now.
    pub(crate) fn abandon(&mut self, seq: u64) {
        let Some(p) = self.pending.get_mut(&seq) else {
            return;
        };
        if p.waiter.is_none() {
            return;
        }
        if !p.request {
            self.pending.remove(&seq);
            return;
        }
        // Until the peer is known it may be a flow-control peer, which will still answer.
        if self.peer_flow || !self.peer_known {
            p.waiter = None;
        } else if let Some(p) = self.pending.remove(&seq) {
            self.out.give_back(1, p.bytes);
        }
        self.transmit.push_back(Frame::cancel(seq));
    }

    /// A Response (`pong` false) or a Pong arrived for `seq`.
    pub(crate) fn on_answer(&mut self, seq: u64, pong: bool) -> Answer<T::Waiter> {
        // One lookup on the common path; an answer of the wrong kind puts the entry back.
        let p = match self.pending.remove(&seq) {
            Some(p) if p.request != pong => p,
            other => {
                if let Some(p) = other {
                    self.pending.insert(seq, p);
                }
                if pong {
                    return Answer::Ignored;
                }
                self.counters.late_replies += 1;
                return Answer::Late;
            }
        };
        if p.request {
            self.out.give_back(1, p.bytes);
        }
        match p.waiter {
            Some(w) => Answer::Deliver(w),
            None => {
                self.counters.late_replies += 1;
                Answer::Late
            }
        }
    }

    /// The peer returned one-way window.
    pub(crate) fn on_credit(&mut self, calls: u32, bytes: u64) {
        self.out.give_back(calls, bytes);
    }

    // ------------------------------------------------------------------------------------
    // The peer's calls
    // ------------------------------------------------------------------------------------

    /// A Request (`two_way`) or OneWay of `bytes` routed to a handler: admit it to our window.
    /// A refused Request is answered `OVERLOADED` here; a refused OneWay is credited back.
    pub(crate) fn admit(
        &mut self,
        seq: u64,
        two_way: bool,
        bytes: u64,
    ) -> Result<Admitted, Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        if !self.inw.fits(bytes) {
            self.counters.refused += 1;
            if two_way {
                let l = self.cfg.window;
                self.owe(Frame::error(
                    seq,
                    Status::Overloaded,
                    format!(
                        "over this peer's window of {} calls and {} bytes in progress",
                        l.calls, l.bytes
                    ),
                ));
            } else {
                self.return_credit(bytes);
            }
            return Err(Refused::Overloaded);
        }
        self.inw.take(bytes);
        if !two_way {
            self.one_ways_in += 1;
        }
        self.next_handler += 1;
        Ok(Admitted {
            seq,
            id: self.next_handler,
            two_way,
            stream: false,
            bytes,
            tracked: false,
        })
    }

    /// A OneWay that never reached a handler (unknown method, bad codec): credit it back.
    pub(crate) fn one_way_dropped(&mut self, bytes: u64) {
        if !self.closed {
            self.return_credit(bytes);
        }
    }

    /// The handler of `a` did not finish on its first poll and is about to run as its own
    /// task: from now on a Cancel or the close stops it. `handle` may come later, with
    /// [`Machine::attach`] (so no lock is held while the task is spawned).
    pub(crate) fn track(&mut self, a: &mut Admitted, handle: Option<T::Handle>) {
        if self.closed {
            return;
        }
        a.tracked = true;
        let r = Running {
            id: a.id,
            two_way: a.two_way,
            stream: a.stream,
            bytes: a.bytes,
            handle,
        };
        if let Some(older) = self.running.insert(a.seq, r) {
            self.shadowed.push((a.seq, older));
        }
    }

    /// The tracked handler `(seq, id)`, wherever it is.
    fn tracked_mut(&mut self, seq: u64, id: u64) -> Option<&mut Running<T::Handle>> {
        match self.running.get_mut(&seq) {
            Some(r) if r.id == id => Some(r),
            _ => self
                .shadowed
                .iter_mut()
                .find(|(s, r)| *s == seq && r.id == id)
                .map(|(_, r)| r),
        }
    }

    /// Removes the tracked handler `(seq, id)`; false if a Cancel or the close took it.
    fn untrack(&mut self, seq: u64, id: u64) -> bool {
        if self.running.get(&seq).is_some_and(|r| r.id == id) {
            self.running.remove(&seq);
            return true;
        }
        match self
            .shadowed
            .iter()
            .position(|(s, r)| *s == seq && r.id == id)
        {
            Some(i) => {
                self.shadowed.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Attaches the handle of a tracked handler. Returns it back when the handler must stop
    /// now: it was cancelled, or the connection closed, before the handle arrived (if the
    /// handler already finished, stopping it is harmless).
    pub(crate) fn attach(&mut self, seq: u64, id: u64, handle: T::Handle) -> Option<T::Handle> {
        match self.tracked_mut(seq, id) {
            Some(r) => {
                r.handle = Some(handle);
                None
            }
            None => Some(handle),
        }
    }

    /// The handler of `a` finished. Returns whether its reply (two-way) should be sent: not
    /// when a Cancel already answered it or the connection closed.
    pub(crate) fn finished(&mut self, a: Admitted) -> bool {
        if self.closed {
            return false;
        }
        if a.tracked && !self.untrack(a.seq, a.id) {
            return false; // cancelled: released and answered then
        }
        if a.stream {
            self.streams.remove(&StreamKey {
                seq: a.seq,
                ours: false,
            });
            self.stream_gone();
        }
        self.release_in(a.two_way, a.bytes);
        a.two_way
    }

    fn release_in(&mut self, two_way: bool, bytes: u64) {
        self.inw.give_back(1, bytes);
        if !two_way {
            self.one_ways_in = self.one_ways_in.saturating_sub(1);
            self.return_credit(bytes);
        }
    }

    /// Adds one-way window to return; a Credit goes out once enough has gathered or no one-way
    /// is left running (so no credit is ever held back while the peer may be waiting for it).
    fn return_credit(&mut self, bytes: u64) {
        if !self.peer_flow {
            return;
        }
        self.credit.0 += 1;
        self.credit.1 += bytes;
        let l = self.cfg.window;
        if self.one_ways_in == 0
            || self.credit.0 >= (l.calls / 16).max(1)
            || self.credit.1 >= l.bytes / 16
        {
            let (calls, bytes) = std::mem::take(&mut self.credit);
            self.owe(Frame::credit(0, calls, bytes));
        }
    }

    /// A Cancel for `seq`: stop its handler (returned) and answer `CANCELLED` now (queued).
    pub(crate) fn on_cancel(&mut self, seq: u64) -> Option<T::Handle> {
        // With a reused seq, the newest call of that seq is the one stopped.
        let r = match self.running.get(&seq) {
            Some(r) if r.two_way => self.running.remove(&seq)?,
            _ => {
                let i = self
                    .shadowed
                    .iter()
                    .position(|(s, r)| *s == seq && r.two_way)?;
                self.shadowed.swap_remove(i).1
            }
        };
        self.release_in(true, r.bytes);
        if r.stream {
            self.streams.remove(&StreamKey { seq, ours: false });
            self.stream_gone();
            self.owe(Frame::stream_end(
                seq,
                true,
                Status::Cancelled,
                "cancelled by the opener",
            ));
        } else {
            self.owe(Frame::error(
                seq,
                Status::Cancelled,
                "cancelled by the caller",
            ));
        }
        r.handle
    }

    // ------------------------------------------------------------------------------------
    // Frames owed to the peer
    // ------------------------------------------------------------------------------------

    fn owe(&mut self, f: Frame) {
        self.transmit.push_back(f);
    }

    /// A Ping arrived: answer it.
    pub(crate) fn on_ping(&mut self, seq: u64) {
        if !self.closed {
            self.owe(Frame::pong(seq));
        }
    }

    /// Whether `poll_grant` and `poll_transmit` have nothing to give (the common case after an
    /// event): lets the driver skip them with two loads.
    #[inline]
    pub(crate) fn quiet(&self) -> bool {
        self.waiting.is_empty() && self.transmit.is_empty()
    }

    /// The next frame the machine wants sent (Pongs, Cancels, Credits, `OVERLOADED` and
    /// `CANCELLED` answers, heartbeat Pings).
    pub(crate) fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmit.pop_front()
    }

    /// The write queue is full: keep `f` until the flusher can queue it. Returns `Err` when the
    /// peer made us owe more than it may (it ignores its window and does not read): close.
    pub(crate) fn defer(&mut self, f: Frame) -> Result<(), String> {
        if self.closed {
            return Ok(());
        }
        self.deferred.push_back(f);
        if self.deferred.len() > self.cfg.max_owed {
            return Err(format!(
                "the peer made us owe more than {} frames without reading them",
                self.cfg.max_owed
            ));
        }
        Ok(())
    }

    /// Whether the driver must start the (single) flusher task now.
    pub(crate) fn start_flush(&mut self) -> bool {
        !self.deferred.is_empty() && !std::mem::replace(&mut self.flushing, true)
    }

    /// The next deferred frame, for the flusher; `None` ends the flusher.
    pub(crate) fn pop_deferred(&mut self) -> Option<Frame> {
        let f = self.deferred.pop_front();
        if f.is_none() {
            self.flushing = false;
        }
        f
    }

    // ------------------------------------------------------------------------------------
    // Heartbeats and the end
    // ------------------------------------------------------------------------------------

    /// A heartbeat period passed; the peer has sent nothing for `silent_for`.
    pub(crate) fn on_tick(&mut self, silent_for: Duration, period: Duration) -> Tick {
        if silent_for > period.saturating_mul(self.cfg.heartbeat_misses) {
            return Tick::Close(format!("peer silent for {silent_for:?}"));
        }
        let seq = self.next_seq();
        self.owe(Frame::ping(seq));
        Tick::Pinged
    }

    /// The connection is gone: everything pending fails, every handler stops, nothing more is
    /// sent, and every later event is a no-op.
    pub(crate) fn close(&mut self) -> Closed<T> {
        self.closed = true;
        let waiters = self.pending.drain().filter_map(|(_, p)| p.waiter).collect();
        let grants = self.waiting.drain(..).map(|w| w.grant).collect();
        let handles = self
            .running
            .drain()
            .map(|(_, r)| r)
            .chain(self.shadowed.drain(..).map(|(_, r)| r))
            .filter_map(|r| r.handle)
            .collect();
        let streams = self.streams.drain().map(|(_, s)| s.into_parts()).collect();
        self.stream_gone();
        self.transmit.clear();
        self.deferred.clear();
        self.out = Window::new(self.out.limit);
        self.inw = Window::new(self.inw.limit);
        self.credit = (0, 0);
        Closed {
            waiters,
            grants,
            handles,
            streams,
        }
    }

    /// For the property tests: the invariants that must hold after every event.
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        let l = self.cfg.window;
        if self.inw.calls > l.calls {
            return Err(format!(
                "{} calls in our window of {}",
                self.inw.calls, l.calls
            ));
        }
        if self.inw.calls > 1 && self.inw.bytes > l.bytes {
            return Err(format!(
                "{} bytes in our window of {}",
                self.inw.bytes, l.bytes
            ));
        }
        if let Some(o) = self.out.limit
            && self.out.calls > o.calls
        {
            return Err(format!(
                "{} calls in the peer's window of {}",
                self.out.calls, o.calls
            ));
        }
        if self.deferred.len() > self.cfg.max_owed + 1 {
            return Err("owed frames beyond the bound".into());
        }
        let requests = self.pending.values().filter(|p| p.request).count() as u32;
        if requests > self.out.calls {
            return Err(format!(
                "{requests} requests pending but only {} calls of window in use",
                self.out.calls
            ));
        }
        Ok(())
    }
}
