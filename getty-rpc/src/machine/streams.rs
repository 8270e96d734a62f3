//! Streams in the connection machine (`PROTOCOL.md` section 20): per-stream credit in each
//! direction, half-closes, the acceptor's final end, cancel.
//!
//! A stream is one more user of the connection window: opening it takes one call (and the open
//! frame's bytes) until the acceptor's final StreamEnd. Its items are bounded by their own
//! credit, granted by the receiver as its application consumes them, so a slow consumer costs
//! at most its credit of memory and never stalls anything else on the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Admitted, Io, Limits, Machine, Refused};
use crate::frame::Frame;
use crate::status::Status;

/// A stream's identity on a connection: the opener's seq, and whether we opened it (the two
/// peers' ids come from different counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub seq: u64,
    pub ours: bool,
}

impl StreamKey {
    /// The key of the stream a received stream frame is about.
    pub(crate) fn of(f: &Frame) -> StreamKey {
        // A frame from the acceptor is about a stream the receiver (we) opened.
        StreamKey {
            seq: f.seq,
            ours: f.from_acceptor(),
        }
    }
}

/// What an ending stream leaves to tell: its receiving half (if still wanted) and a blocked
/// sender (if any).
pub(crate) type Ended<T> = (Option<<T as Io>::Items>, Option<<T as Io>::Wake>);

/// One open stream, as the machine keeps it.
pub(crate) struct Stream<T: Io> {
    /// Where received items go, while the local side still wants them.
    items: Option<T::Items>,
    /// What we may still send: items, bytes.
    send: (u32, u64),
    /// The whole credit the peer gives at a time (a bigger item goes when all of it is free).
    send_unit: Limits,
    /// A sender waiting for credit.
    blocked: Option<T::Wake>,
    /// What the peer may still send us, and what we consumed since the last grant.
    recv: (u32, u64),
    consumed: (u32, u64),
    /// Our half ended (StreamEnd sent) / the peer's half ended (StreamEnd received).
    sent_end: bool,
    got_end: bool,
    /// We gave up on the stream (opener: Cancel sent); it ends with the acceptor's answer.
    cancelled: bool,
    /// The opener's window bytes, returned with the acceptor's final StreamEnd.
    window_bytes: u64,
}

impl<T: Io> Stream<T> {
    fn new(send_unit: Limits, recv_unit: Limits, items: T::Items, window_bytes: u64) -> Self {
        Stream {
            items: Some(items),
            send: (send_unit.calls, send_unit.bytes),
            send_unit,
            blocked: None,
            recv: (recv_unit.calls, recv_unit.bytes),
            consumed: (0, 0),
            sent_end: false,
            got_end: false,
            cancelled: false,
            window_bytes,
        }
    }

    pub(crate) fn into_parts(self) -> Ended<T> {
        (self.items, self.blocked)
    }
}

/// Whether an item may go out now.
pub(crate) enum SendCredit {
    /// Credit taken: send the item (the rest of the credit is in the caller's reserve).
    Go,
    /// No credit: wait (register with [`Machine::block_sender`]) and try again.
    Blocked,
    /// The stream is over for sending, with this status (`Ok` after our own half-close).
    Ended(Status),
}

impl<T: Io> Machine<T> {
    /// Whether the peer takes streams: `None` until its first frame said.
    pub(crate) fn peer_streams(&self) -> Option<bool> {
        self.peer_known.then_some(self.peer_stream_credit.is_some())
    }

    /// Our stream `seq` went out (its window is taken): start its state.
    pub(super) fn open_ours(&mut self, seq: u64, bytes: u64, items: T::Items) {
        let send = self.peer_stream_credit.unwrap_or(self.cfg.stream_credit);
        let s = Stream::new(send, self.cfg.stream_credit, items, bytes);
        self.streams.insert(StreamKey { seq, ours: true }, s);
    }

    /// A StreamOpen of `bytes` routed to a stream handler: admit it to our window like a call
    /// and start its state. A refusal is answered with a final StreamEnd here.
    pub(crate) fn accept_stream(
        &mut self,
        seq: u64,
        bytes: u64,
        items: T::Items,
    ) -> Result<Admitted, Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        if !self.inw.fits(bytes) {
            self.counters.refused += 1;
            let l = self.cfg.window;
            self.owe(Frame::stream_end(
                seq,
                true,
                Status::Overloaded,
                format!(
                    "over this peer's window of {} calls and {} bytes in progress",
                    l.calls, l.bytes
                ),
            ));
            return Err(Refused::Overloaded);
        }
        let mut a = self.admit(seq, true, bytes)?;
        a.stream = true;
        let send = self.peer_stream_credit.unwrap_or(self.cfg.stream_credit);
        let s = Stream::new(send, self.cfg.stream_credit, items, 0);
        self.streams.insert(StreamKey { seq, ours: false }, s);
        Ok(a)
    }

    /// Takes credit for one item of `bytes` on `key`, and all the credit left after it into
    /// `reserve`, for the sender to spend on its next items without the lock (an item goes
    /// from the reserve when `reserve` has an item and its bytes left: [`spend_reserve`]).
    /// What `reserve` held is given back first, so a bigger-than-left item still goes when all
    /// of the credit is free, and the sender never holds more than the peer granted.
    pub(crate) fn take_send_credit(
        &mut self,
        key: StreamKey,
        bytes: u64,
        reserve: &mut (u32, u64),
    ) -> SendCredit {
        let back = std::mem::take(reserve);
        let Some(s) = self.streams.get_mut(&key) else {
            return SendCredit::Ended(if self.closed {
                Status::ConnectionClosed
            } else {
                Status::Cancelled
            });
        };
        s.send.0 = s.send.0.saturating_add(back.0).min(s.send_unit.calls);
        s.send.1 = s.send.1.saturating_add(back.1).min(s.send_unit.bytes);
        if s.sent_end {
            return SendCredit::Ended(Status::Ok);
        }
        if s.cancelled {
            return SendCredit::Ended(Status::Cancelled);
        }
        let whole = s.send == (s.send_unit.calls, s.send_unit.bytes);
        if s.send.0 >= 1 && (bytes <= s.send.1 || whole) {
            *reserve = (s.send.0 - 1, s.send.1.saturating_sub(bytes));
            s.send = (0, 0);
            SendCredit::Go
        } else {
            SendCredit::Blocked
        }
    }

    /// The count of stream ends on this connection, shared: a sender with a reserve reads it
    /// before each item, and takes the lock again once it moved (the stream may be over).
    pub(crate) fn stream_epoch(&self) -> &Arc<AtomicU64> {
        &self.stream_epoch
    }

    /// Something that can end a stream's sending happened: senders must ask again.
    pub(super) fn stream_gone(&self) {
        self.stream_epoch.fetch_add(1, Ordering::Release);
    }

    /// Parks a sender that got [`SendCredit::Blocked`]; it is woken by credit or the end.
    pub(crate) fn block_sender(&mut self, key: StreamKey, wake: T::Wake) {
        if let Some(s) = self.streams.get_mut(&key) {
            s.blocked = Some(wake);
        }
    }

    /// An item arrived on `key`. Returns where it goes (`None`: nobody wants it any more), or
    /// `Err` when the peer sent more than its credit: a violation.
    pub(crate) fn on_stream_item(
        &mut self,
        key: StreamKey,
        bytes: u64,
    ) -> Result<Option<&mut T::Items>, String> {
        let Some(s) = self.streams.get_mut(&key) else {
            return Ok(None); // cancelled or ended: dropped
        };
        let unit = self.cfg.stream_credit;
        let whole = s.recv == (unit.calls, unit.bytes);
        if s.got_end || s.recv.0 == 0 || (bytes > s.recv.1 && !whole) {
            return Err(format!(
                "stream {} item of {bytes} bytes beyond the granted credit",
                key.seq
            ));
        }
        s.recv.0 -= 1;
        s.recv.1 = s.recv.1.saturating_sub(bytes);
        Ok(s.items.as_mut())
    }

    /// The local receiver consumed `items` items of `bytes` in all: once half the credit is
    /// consumed, grant it again (a Credit frame, queued). Returns how many more items, or
    /// bytes, the receiver may consume before the next grant is due, so it can count them
    /// itself and report only then ([`due`]): grants go at exactly the item they would if it
    /// reported every item.
    pub(crate) fn consumed(&mut self, key: StreamKey, items: u32, bytes: u64) -> (u32, u64) {
        let unit = self.cfg.stream_credit;
        let Some(s) = self.streams.get_mut(&key) else {
            return (u32::MAX, u64::MAX);
        };
        s.consumed.0 = s.consumed.0.saturating_add(items);
        s.consumed.1 = s.consumed.1.saturating_add(bytes);
        if s.got_end || s.cancelled {
            return (u32::MAX, u64::MAX);
        }
        let half = (unit.calls.div_ceil(2), unit.bytes / 2);
        if s.consumed.0 >= half.0 || s.consumed.1 >= half.1 {
            let (items, b) = std::mem::take(&mut s.consumed);
            s.recv.0 = s.recv.0.saturating_add(items).min(unit.calls);
            s.recv.1 = s.recv.1.saturating_add(b).min(unit.bytes);
            self.transmit
                .push_back(Frame::stream_credit(key.seq, !key.ours, items, b));
        }
        (
            half.0.saturating_sub(s.consumed.0),
            half.1.saturating_sub(s.consumed.1),
        )
    }

    /// The peer granted credit on `key`: returns the blocked sender to wake.
    pub(crate) fn on_stream_credit(
        &mut self,
        key: StreamKey,
        items: u32,
        bytes: u64,
    ) -> Option<T::Wake> {
        let s = self.streams.get_mut(&key)?;
        s.send.0 = s.send.0.saturating_add(items).min(s.send_unit.calls);
        s.send.1 = s.send.1.saturating_add(bytes).min(s.send_unit.bytes);
        s.blocked.take()
    }

    /// Our side has no more items for `key` (the opener's half-close; the acceptor's final
    /// end goes with its handler's outcome instead). Queues the StreamEnd.
    pub(crate) fn end_our_half(&mut self, key: StreamKey) {
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if std::mem::replace(&mut s.sent_end, true) || s.cancelled {
            return;
        }
        let wake = s.blocked.take();
        drop(wake);
        self.stream_gone();
        self.transmit
            .push_back(Frame::stream_end(key.seq, !key.ours, Status::Ok, ""));
    }

    /// A StreamEnd arrived on `key`. From the acceptor it ends our stream: its window comes
    /// back. Returns the receiving half to tell (with the frame's status) and a blocked sender
    /// to wake; `None` for an unknown stream.
    pub(crate) fn on_stream_end(&mut self, key: StreamKey) -> Option<Ended<T>> {
        if key.ours {
            let s = self.streams.remove(&key)?;
            self.stream_gone();
            self.out.give_back(1, s.window_bytes);
            return Some(s.into_parts());
        }
        let s = self.streams.get_mut(&key)?;
        s.got_end = true;
        Some((s.items.take(), None))
    }

    /// We give up on our stream `key` (its receiver was dropped, or its deadline passed): a
    /// Cancel goes out; the acceptor's final StreamEnd returns the window. Returns a blocked
    /// sender to wake.
    pub(crate) fn cancel_ours(&mut self, key: StreamKey) -> Option<T::Wake> {
        let flow = self.peer_flow;
        let s = self.streams.get_mut(&key)?;
        if std::mem::replace(&mut s.cancelled, true) {
            return None;
        }
        s.items = None;
        let wake = s.blocked.take();
        self.stream_gone();
        if !flow {
            // No final answer will come from a peer without flow control.
            if let Some(s) = self.streams.remove(&key) {
                self.out.give_back(1, s.window_bytes);
            }
        }
        self.transmit.push_back(Frame::cancel(key.seq));
        wake
    }

    /// The local receiver of the peer's stream `key` is gone: its items are dropped from now on.
    pub(crate) fn drop_receiver(&mut self, key: StreamKey) {
        if let Some(s) = self.streams.get_mut(&key) {
            s.items = None;
        }
    }

    /// Open streams (for stats).
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }
}

/// Takes credit for one item of `bytes` from a sender's reserve (see
/// [`Machine::take_send_credit`]), without the lock; `false` when the reserve cannot pay it.
pub(crate) fn spend_reserve(reserve: &mut (u32, u64), bytes: u64) -> bool {
    if reserve.0 >= 1 && bytes <= reserve.1 {
        reserve.0 -= 1;
        reserve.1 -= bytes;
        true
    } else {
        false
    }
}

/// Whether a receiver that counted `local` consumption since its last report must report now,
/// given what [`Machine::consumed`] last said was left before the next grant.
pub(crate) fn due(local: (u32, u64), left: (u32, u64)) -> bool {
    local.0 >= left.0 || local.1 >= left.1
}
