//! Two machines wired back to back in memory, driven by random interleavings of both peers'
//! events (proptest). After every step the invariants hold; at the end, once every frame is
//! delivered and every handler finished, every call has ended exactly once and both windows
//! are empty again (nothing leaked, nobody waits forever).

use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;

use super::*;
use crate::frame::Kind;

struct TestIo;
impl Io for TestIo {
    type Waiter = u64;
    type Grant = u64;
    type Handle = u64;
    fn gave_up(_: &u64) -> bool {
        false // the harness returns such a grant with `unsend`, as the driver does
    }
    type Items = Vec<u64>;
    type Wake = u64;
}

fn cfg(window: Limits, max_owed: usize) -> Config {
    Config {
        window,
        max_owed,
        heartbeat_misses: 3,
        stream_credit: Limits {
            calls: 4,
            bytes: 100,
        },
    }
}

fn reply(id: u64) -> Await<TestIo> {
    Await::Reply(id)
}

/// How one call of the test ended, from its caller's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Answered(Status),
    Abandoned,
    GaveUp,
    Sent,
}

#[derive(Clone, Copy, Debug)]
struct Call {
    bytes: u64,
    two_way: bool,
    seq: Option<u64>,
    given_up: bool,
}

/// One peer: its machine and what its driver would hold.
struct Side {
    m: Machine<TestIo>,
    flow: bool,
    window: Limits,
    calls: HashMap<u64, Call>,
    outcomes: HashMap<u64, Outcome>,
    /// Handlers running as tasks: (handler id, admission).
    running: Vec<(u64, Admitted)>,
    next_handle: u64,
    seen_first: bool,
}

const HELLO: &str = "getty.Peer";

impl Side {
    fn new(window: Limits, flow: bool) -> Side {
        Side {
            m: Machine::new(cfg(window, 1 << 20)),
            flow,
            window,
            calls: HashMap::new(),
            outcomes: HashMap::new(),
            running: Vec::new(),
            next_handle: 0,
            seen_first: false,
        }
    }

    fn end(&mut self, id: u64, o: Outcome) -> Result<(), TestCaseError> {
        let prev = self.outcomes.insert(id, o);
        prop_assert!(prev.is_none(), "call {id} ended twice: {prev:?} then {o:?}");
        Ok(())
    }

    fn send_call(&mut self, id: u64, seq: u64, wire: &mut VecDeque<Frame>) {
        let c = self.calls.get_mut(&id).expect("known call");
        c.seq = Some(seq);
        let body = vec![0u8; c.bytes as usize];
        let f = if c.two_way {
            Frame::request(seq, crate::frame::CodecId::Json, "s.S", "m", body)
        } else {
            Frame::one_way(seq, crate::frame::CodecId::Json, "s.S", "m", body)
        };
        wire.push_back(f);
        if !c.two_way {
            self.outcomes.insert(id, Outcome::Sent);
        }
    }

    /// What the driver does after every event: wake granted callers, send owed frames.
    fn settle(&mut self, wire: &mut VecDeque<Frame>) -> Result<(), TestCaseError> {
        while let Some((id, seq, _)) = self.m.poll_grant() {
            let c = self.calls[&id];
            if c.given_up {
                self.m.unsend(seq, frame_len(c.bytes));
            } else {
                self.send_call(id, seq, wire);
            }
        }
        while let Some(f) = self.m.poll_transmit() {
            wire.push_back(f);
        }
        self.m.check().map_err(TestCaseError::fail)
    }

    fn call(&mut self, id: u64, bytes: u64, two_way: bool, wire: &mut VecDeque<Frame>) {
        self.calls.insert(
            id,
            Call {
                bytes,
                two_way,
                seq: None,
                given_up: false,
            },
        );
        let len = frame_len(bytes);
        let what = if two_way { reply(id) } else { Await::Nothing };
        match self.m.start_call(len, what) {
            Start::Send(seq) => self.send_call(id, seq, wire),
            Start::Full(w) => self.m.wait(len, w, id),
            Start::Closed(_) => unreachable!("never closed in these tests"),
        }
    }

    fn receive(
        &mut self,
        f: Frame,
        inline: bool,
        wire: &mut VecDeque<Frame>,
    ) -> Result<(), TestCaseError> {
        if !std::mem::replace(&mut self.seen_first, true) {
            // What the driver learns from the peer's first frame.
            // A peer without flow control ignores the other's window.
            let flow = (f.service == HELLO && self.flow).then(|| hello_window(&f));
            self.m.on_first_frame(flow.flatten(), None);
        }
        match f.kind {
            Kind::Request | Kind::OneWay if f.service == HELLO => {}
            Kind::Request | Kind::OneWay => {
                let two_way = f.kind == Kind::Request;
                let bytes = crate::frame::encoded_len(&f) as u64;
                match self.m.admit(f.seq, two_way, bytes) {
                    Ok(mut a) => {
                        if inline {
                            if self.m.finished(a) {
                                wire.push_back(Frame::response(f.seq, f.codec, "ok"));
                            }
                        } else {
                            self.next_handle += 1;
                            let h = self.next_handle;
                            self.m.track(&mut a, None);
                            prop_assert!(self.m.attach(a.seq, a.id(), h).is_none());
                            self.running.push((h, a));
                        }
                    }
                    Err(Refused::Overloaded) => {}
                    Err(e) => prop_assert!(false, "admission failed: {e:?}"),
                }
            }
            Kind::Response => {
                if let Answer::Deliver(id) = self.m.on_answer(f.seq, false) {
                    self.end(id, Outcome::Answered(f.status))?;
                }
            }
            Kind::Credit => {
                let (calls, bytes) = f.credit_grant().expect("a well-formed credit");
                self.m.on_credit(calls, bytes);
            }
            Kind::Cancel => {
                if let Some(h) = self.m.on_cancel(f.seq) {
                    // The driver aborts it; its task's guard later reports it finished.
                    let i = self
                        .running
                        .iter()
                        .position(|(x, _)| *x == h)
                        .expect("running");
                    let (_, a) = self.running.remove(i);
                    prop_assert!(
                        !self.m.finished(a),
                        "a cancelled handler's reply must not go out"
                    );
                }
            }
            Kind::Ping => self.m.on_ping(f.seq),
            Kind::Pong => {}
            // Streams are driven by their own tests.
            Kind::StreamOpen | Kind::StreamItem | Kind::StreamEnd => {}
        }
        self.settle(wire)
    }

    fn finish(&mut self, idx: usize, wire: &mut VecDeque<Frame>) -> Result<(), TestCaseError> {
        if self.running.is_empty() {
            return Ok(());
        }
        let (_, a) = self.running.remove(idx % self.running.len());
        let seq = a.seq;
        if self.m.finished(a) {
            wire.push_back(Frame::response(seq, crate::frame::CodecId::Json, "ok"));
        }
        self.settle(wire)
    }

    /// The caller of a sent two-way call gives up (timeout or drop).
    fn abandon(&mut self, idx: usize, wire: &mut VecDeque<Frame>) -> Result<(), TestCaseError> {
        let mut open: Vec<(u64, u64)> = self
            .calls
            .iter()
            .filter(|(id, c)| c.two_way && c.seq.is_some() && !self.outcomes.contains_key(id))
            .map(|(id, c)| (*id, c.seq.unwrap_or(0)))
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        open.sort_unstable();
        let (id, seq) = open[idx % open.len()];
        self.m.abandon(seq);
        self.end(id, Outcome::Abandoned)?;
        self.settle(wire)
    }

    /// A caller still waiting for window gives up (its deadline passed while it waited).
    fn give_up(&mut self, idx: usize) -> Result<(), TestCaseError> {
        let mut waiting: Vec<u64> = self
            .calls
            .iter()
            .filter(|(id, c)| c.seq.is_none() && !c.given_up && !self.outcomes.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        waiting.sort_unstable();
        let id = waiting[idx % waiting.len()];
        if let Some(c) = self.calls.get_mut(&id) {
            c.given_up = true;
        }
        self.end(id, Outcome::GaveUp)
    }

    fn hello(&mut self, wire: &mut VecDeque<Frame>) {
        let seq = self.m.next_seq();
        let body = if self.flow {
            format!("{} {}", self.window.calls, self.window.bytes)
        } else {
            String::new()
        };
        wire.push_back(Frame::one_way(
            seq,
            crate::frame::CodecId::Json,
            HELLO,
            "Hello",
            body,
        ));
    }
}

/// The whole frame's length for a body of `body` bytes ("s.S"/"m", no metadata), as both
/// ends count it.
fn frame_len(body: u64) -> u64 {
    (crate::frame::HEADER_LEN + 10) as u64 + body
}

/// The test's own Hello body: "calls bytes" announces flow control, empty does not.
fn hello_window(f: &Frame) -> Option<Limits> {
    let s = std::str::from_utf8(&f.body).ok()?;
    let (c, b) = s.split_once(' ')?;
    Some(Limits {
        calls: c.parse().ok()?,
        bytes: b.parse().ok()?,
    })
}

#[derive(Clone, Debug)]
enum Op {
    Call { a: bool, bytes: u64, two_way: bool },
    Deliver { a: bool, inline: bool },
    Finish { a: bool, idx: usize },
    Abandon { a: bool, idx: usize },
    GiveUp { a: bool, idx: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u64..3000, any::<bool>())
            .prop_map(|(a, bytes, two_way)| Op::Call { a, bytes, two_way }),
        6 => (any::<bool>(), any::<bool>()).prop_map(|(a, inline)| Op::Deliver { a, inline }),
        3 => (any::<bool>(), any::<usize>()).prop_map(|(a, idx)| Op::Finish { a, idx }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(a, idx)| Op::Abandon { a, idx }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(a, idx)| Op::GiveUp { a, idx }),
    ]
}

fn window() -> impl Strategy<Value = Limits> {
    (1u32..40, 1u64..20_000).prop_map(|(calls, bytes)| Limits { calls, bytes })
}

/// Runs `ops`, then drains everything, and checks the end state.
fn run(
    wa: Limits,
    wb: Limits,
    flow_a: bool,
    flow_b: bool,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut a = Side::new(wa, flow_a);
    let mut b = Side::new(wb, flow_b);
    // wire.0: a -> b, wire.1: b -> a
    let (mut ab, mut ba) = (VecDeque::new(), VecDeque::new());
    a.hello(&mut ab);
    b.hello(&mut ba);
    let mut next_id = 0u64;
    for op in ops {
        match op {
            Op::Call {
                a: on_a,
                bytes,
                two_way,
            } => {
                next_id += 1;
                let (s, w) = if on_a {
                    (&mut a, &mut ab)
                } else {
                    (&mut b, &mut ba)
                };
                s.call(next_id, bytes, two_way, w);
                s.settle(w)?;
            }
            Op::Deliver { a: to_a, inline } => {
                if to_a {
                    if let Some(f) = ba.pop_front() {
                        a.receive(f, inline, &mut ab)?;
                    }
                } else if let Some(f) = ab.pop_front() {
                    b.receive(f, inline, &mut ba)?;
                }
            }
            Op::Finish { a: on_a, idx } => {
                if on_a {
                    a.finish(idx, &mut ab)?
                } else {
                    b.finish(idx, &mut ba)?
                }
            }
            Op::Abandon { a: on_a, idx } => {
                if on_a {
                    a.abandon(idx, &mut ab)?
                } else {
                    b.abandon(idx, &mut ba)?
                }
            }
            Op::GiveUp { a: on_a, idx } => {
                if on_a {
                    a.give_up(idx)?
                } else {
                    b.give_up(idx)?
                }
            }
        }
    }
    // Drain: deliver everything, finish every handler, until nothing moves.
    for _ in 0..100_000 {
        let mut moved = false;
        if let Some(f) = ba.pop_front() {
            a.receive(f, true, &mut ab)?;
            moved = true;
        }
        if let Some(f) = ab.pop_front() {
            b.receive(f, true, &mut ba)?;
            moved = true;
        }
        if !a.running.is_empty() {
            a.finish(0, &mut ab)?;
            moved = true;
        }
        if !b.running.is_empty() {
            b.finish(0, &mut ba)?;
            moved = true;
        }
        if !moved {
            break;
        }
    }
    for (name, s, peer) in [("a", &a, &b), ("b", &b, &a)] {
        for (id, c) in &s.calls {
            prop_assert!(
                s.outcomes.contains_key(id),
                "{name}: call {id} ({c:?}) never ended"
            );
        }
        prop_assert_eq!(s.m.waiting_len(), 0, "{}: callers still wait", name);
        prop_assert_eq!(s.m.inflight(), 0, "{}: the peer's calls still count", name);
        if s.flow && peer.flow {
            prop_assert_eq!(s.m.out.calls, 0, "{}: window never returned", name);
            prop_assert_eq!(s.m.out.bytes, 0, "{}: window bytes never returned", name);
        }
        // Calls between peers that both do flow control are never refused, when the windows
        // are at least the initial one the callers assume before the Hello.
        if s.flow
            && peer.flow
            && s.window.calls >= INITIAL_WINDOW.calls
            && s.window.bytes >= INITIAL_WINDOW.bytes
        {
            prop_assert_eq!(s.m.counters().refused, 0, "{}: refused a call", name);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_call_ends_once_and_windows_return(
        wa in window(), wb in window(),
        flow_a in prop::bool::weighted(0.8), flow_b in prop::bool::weighted(0.8),
        ops in prop::collection::vec(op(), 0..300),
    ) {
        run(wa, wb, flow_a, flow_b, ops)?;
    }

    #[test]
    fn large_windows_never_refuse(
        ops in prop::collection::vec(op(), 0..300),
    ) {
        let w = Limits { calls: 64, bytes: 2 << 20 };
        run(w, w, true, true, ops)?;
    }
}

/// Every sequence of up to [`DEPTH`] events from a small alphabet (both peers calling, each
/// size and kind; frames delivered in order, handlers run inline or as tasks; handlers
/// finishing in either order; callers abandoning or giving up), for tiny windows where one
/// call fills them, with and without flow control on one side. Where proptest samples long
/// random runs, this checks every short one: the same invariants after every step, and the
/// same end state after the drain.
#[test]
fn every_short_interleaving_keeps_the_invariants() {
    const DEPTH: u32 = 4;
    let mut alphabet = Vec::new();
    for a in [true, false] {
        for bytes in [0, 40] {
            for two_way in [true, false] {
                alphabet.push(Op::Call { a, bytes, two_way });
            }
        }
        for inline in [true, false] {
            alphabet.push(Op::Deliver { a, inline });
        }
        for idx in [0, 1] {
            alphabet.push(Op::Finish { a, idx });
        }
        alphabet.push(Op::Abandon { a, idx: 0 });
        alphabet.push(Op::GiveUp { a, idx: 0 });
    }
    // One 78-byte frame, or two 38-byte ones, fill 100 bytes; one call fills a 1-call window.
    let tiny = [
        Limits {
            calls: 1,
            bytes: 100,
        },
        Limits {
            calls: 2,
            bytes: 100,
        },
    ];
    let n = alphabet.len();
    let mut runs = 0u64;
    for (wa, wb, flow_b) in [
        (tiny[0], tiny[1], true),
        (tiny[1], tiny[1], true),
        (tiny[1], tiny[0], false),
    ] {
        for len in 0..=DEPTH {
            for code in 0..n.pow(len) {
                let (mut c, mut ops) = (code, Vec::with_capacity(len as usize));
                for _ in 0..len {
                    ops.push(alphabet[c % n].clone());
                    c /= n;
                }
                if let Err(e) = run(wa, wb, true, flow_b, ops.clone()) {
                    panic!("{e}\n windows {wa:?} / {wb:?}, flow b {flow_b}, events {ops:?}");
                }
                runs += 1;
            }
        }
    }
    eprintln!("{runs} event sequences checked");
}

#[test]
fn a_call_over_the_whole_window_goes_when_the_window_is_empty() {
    let mut m: Machine<TestIo> = Machine::new(cfg(
        Limits {
            calls: 4,
            bytes: 100,
        },
        16,
    ));
    m.on_first_frame(
        Some(Limits {
            calls: 4,
            bytes: 100,
        }),
        None,
    );
    let Start::Send(s1) = m.start_call(500, reply(1)) else {
        panic!("an empty window takes any call")
    };
    assert!(matches!(
        m.start_call(10, reply(2)),
        Start::Full(Await::Reply(2))
    ));
    m.wait(10, reply(2), 2);
    assert!(m.poll_grant().is_none());
    assert!(matches!(m.on_answer(s1, false), Answer::Deliver(1)));
    let (g, _, _) = m.poll_grant().expect("window came back");
    assert_eq!(g, 2);
}

#[test]
fn an_abandoned_call_keeps_its_window_until_a_flow_peer_answers() {
    let mut m: Machine<TestIo> = Machine::new(cfg(
        Limits {
            calls: 1,
            bytes: 1000,
        },
        16,
    ));
    m.on_first_frame(
        Some(Limits {
            calls: 1,
            bytes: 1000,
        }),
        None,
    );
    let Start::Send(s1) = m.start_call(10, reply(1)) else {
        panic!()
    };
    m.abandon(s1);
    assert_eq!(m.poll_transmit().map(|f| f.kind), Some(Kind::Cancel));
    assert!(matches!(m.start_call(10, reply(2)), Start::Full(_)));
    assert!(matches!(m.on_answer(s1, false), Answer::Late));
    assert_eq!(m.counters().late_replies, 1);
    assert!(matches!(m.start_call(10, reply(2)), Start::Send(_)));
}

#[test]
fn a_cancel_answers_once_and_the_late_finish_sends_nothing() {
    let mut m: Machine<TestIo> = Machine::new(cfg(
        Limits {
            calls: 8,
            bytes: 1000,
        },
        16,
    ));
    let mut a = m.admit(7, true, 50).expect("fits");
    m.track(&mut a, None);
    assert!(m.attach(7, a.id(), 99).is_none());
    // The peer reuses seq 7 while the first call runs: both are served and answered.
    let mut b = m.admit(7, true, 50).expect("fits");
    m.track(&mut b, None);
    assert!(m.attach(7, b.id(), 98).is_none());
    assert_eq!(m.inflight(), 2);
    assert!(m.finished(b), "the second call of seq 7 is answered");
    assert_eq!(m.on_cancel(7), Some(99));
    let f = m.poll_transmit().expect("CANCELLED answer");
    assert_eq!(
        (f.kind, f.status, f.seq),
        (Kind::Response, Status::Cancelled, 7)
    );
    assert!(!m.finished(a));
    assert_eq!(m.inflight(), 0);
    assert!(m.on_cancel(7).is_none());
}

#[test]
fn owed_frames_beyond_the_bound_close() {
    let mut m: Machine<TestIo> = Machine::new(cfg(
        Limits {
            calls: 8,
            bytes: 1000,
        },
        2,
    ));
    assert!(m.defer(Frame::pong(1)).is_ok());
    assert!(m.start_flush());
    assert!(!m.start_flush(), "one flusher at a time");
    assert!(m.defer(Frame::pong(2)).is_ok());
    assert!(m.defer(Frame::pong(3)).is_err());
}

#[test]
fn silence_past_the_misses_closes_and_otherwise_pings() {
    let mut m: Machine<TestIo> = Machine::new(cfg(
        Limits {
            calls: 8,
            bytes: 1000,
        },
        2,
    ));
    let p = Duration::from_secs(10);
    assert_eq!(m.on_tick(Duration::from_secs(29), p), Tick::Pinged);
    assert_eq!(m.poll_transmit().map(|f| f.kind), Some(Kind::Ping));
    assert!(matches!(
        m.on_tick(Duration::from_secs(31), p),
        Tick::Close(_)
    ));
}

#[test]
fn close_fails_everything_and_ignores_later_events() {
    let mut m: Machine<TestIo> = Machine::new(cfg(
        Limits {
            calls: 8,
            bytes: 1000,
        },
        2,
    ));
    m.on_first_frame(
        Some(Limits {
            calls: 1,
            bytes: 1000,
        }),
        None,
    );
    let Start::Send(_) = m.start_call(10, reply(1)) else {
        panic!()
    };
    m.wait(10, reply(2), 2);
    let mut a = m.admit(3, true, 10).expect("fits");
    m.track(&mut a, Some(5));
    let c = m.close();
    assert_eq!(c.waiters, vec![1]);
    assert_eq!(c.grants, vec![2]);
    assert_eq!(c.handles, vec![5]);
    assert!(!m.finished(a));
    assert!(matches!(
        m.start_call(1, reply(9)),
        Start::Closed(Await::Reply(9))
    ));
    assert!(m.poll_grant().is_none());
}

fn stream_machine() -> Machine<TestIo> {
    stream_machine_with(
        None,
        Limits {
            calls: 2,
            bytes: 50,
        },
    )
}

/// A machine whose peer announced flow control and `peer` stream credit; `own` replaces the
/// credit it grants on each stream.
fn stream_machine_with(own: Option<Limits>, peer: Limits) -> Machine<TestIo> {
    let window = Limits {
        calls: 8,
        bytes: 10_000,
    };
    let mut c = cfg(window, 16);
    if let Some(own) = own {
        c.stream_credit = own;
    }
    let mut m: Machine<TestIo> = Machine::new(c);
    m.on_first_frame(Some(window), Some(peer));
    m
}

#[test]
fn a_stream_sender_keeps_within_the_credit_and_waits_for_more() {
    let mut m = stream_machine();
    let Start::Send(seq) = m.start_call(40, Await::Stream(vec![])) else {
        panic!()
    };
    let key = StreamKey { seq, ours: true };
    let mut r = (0, 0);
    assert!(matches!(
        m.take_send_credit(key, 20, &mut r),
        SendCredit::Go
    ));
    assert_eq!(r, (1, 30), "the rest of the credit is reserved");
    assert!(spend_reserve(&mut r, 20));
    // The peer's credit of 2 items is used up.
    assert!(!spend_reserve(&mut r, 1));
    assert!(matches!(
        m.take_send_credit(key, 1, &mut r),
        SendCredit::Blocked
    ));
    m.block_sender(key, 7);
    assert_eq!(
        m.on_stream_credit(key, 1, 20),
        Some(7),
        "credit wakes the sender"
    );
    assert!(matches!(
        m.take_send_credit(key, 20, &mut r),
        SendCredit::Go
    ));
    // Half-close: no more items from us, and reserves must be asked again.
    let epoch = m.stream_epoch().load(std::sync::atomic::Ordering::Acquire);
    m.end_our_half(key);
    assert_ne!(
        m.stream_epoch().load(std::sync::atomic::Ordering::Acquire),
        epoch
    );
    assert_eq!(
        m.poll_transmit().map(|f| (f.kind, f.from_acceptor())),
        Some((Kind::StreamEnd, false))
    );
    assert!(matches!(
        m.take_send_credit(key, 1, &mut r),
        SendCredit::Ended(Status::Ok)
    ));
    // The acceptor's final end returns the stream's window.
    assert!(m.on_stream_end(key).is_some());
    assert_eq!(m.stream_count(), 0);
    assert_eq!((m.out.calls, m.out.bytes), (0, 0));
}

#[test]
fn items_beyond_the_granted_credit_are_a_violation_and_consumption_grants_more() {
    let mut m = stream_machine();
    let a = m.accept_stream(3, 40, vec![]).expect("fits");
    let key = StreamKey {
        seq: 3,
        ours: false,
    };
    // Our own credit (cfg: 4 items, 100 bytes) bounds what the opener may send.
    for _ in 0..4 {
        assert!(m.on_stream_item(key, 25).unwrap().is_some());
    }
    assert!(
        m.on_stream_item(key, 1).is_err(),
        "a fifth item is over the credit"
    );
    // Consuming half of it grants that much again, marked as from the acceptor; the
    // machine says how much more may be consumed before the grant is due.
    assert_eq!(m.consumed(key, 1, 25), (1, 25));
    assert!(m.poll_transmit().is_none());
    assert_eq!(
        m.consumed(key, 1, 25),
        (2, 50),
        "granted: a whole half again"
    );
    let f = m.poll_transmit().expect("a credit");
    assert_eq!((f.kind, f.seq, f.from_acceptor()), (Kind::Credit, 3, true));
    assert_eq!(f.credit_grant(), Some((2, 50)));
    assert!(m.on_stream_item(key, 25).unwrap().is_some());
    // The handler's end removes the stream and returns our window.
    assert!(m.finished(a));
    assert_eq!((m.stream_count(), m.inflight()), (0, 0));
}

#[test]
fn a_cancelled_stream_is_answered_with_a_final_end_and_close_fails_the_rest() {
    let mut m = stream_machine();
    let mut a = m.accept_stream(5, 40, vec![]).expect("fits");
    m.track(&mut a, Some(11));
    assert_eq!(m.on_cancel(5), Some(11));
    let f = m.poll_transmit().expect("the final end");
    assert_eq!(
        (f.kind, f.status, f.from_acceptor()),
        (Kind::StreamEnd, Status::Cancelled, true)
    );
    assert!(!m.finished(a), "answered once");
    let Start::Send(seq) = m.start_call(40, Await::Stream(vec![1])) else {
        panic!()
    };
    let key = StreamKey { seq, ours: true };
    assert!(m.cancel_ours(key).is_none());
    assert_eq!(m.poll_transmit().map(|f| f.kind), Some(Kind::Cancel));
    let c = m.close();
    assert_eq!(c.streams.len(), 1);
}

/// A sender spending its reserve outside the machine, and a receiver reporting consumption
/// only when the machine says a grant is due, against a machine driven item by item: the
/// sender never exceeds the receiver's credit, and grants go at the same items.
#[test]
fn reserved_credit_and_batched_consumption_match_item_by_item() {
    // Item sizes that cross the byte half and the whole credit in different places.
    let sizes: Vec<u64> = (0..400u64).map(|i| (i * 7919) % 61).collect();
    let unit = Limits {
        calls: 4,
        bytes: 100,
    };
    let machine = || stream_machine_with(Some(unit), unit);
    // Receiver side, twice: per item, and batched.
    let key = StreamKey {
        seq: 3,
        ours: false,
    };
    let mut one = machine();
    let _one = one.accept_stream(3, 40, vec![]).expect("fits");
    let mut batched = machine();
    let _batched = batched.accept_stream(3, 40, vec![]).expect("fits");
    let (mut local, mut left) = ((0u32, 0u64), (0u32, 0u64));
    for (i, &b) in sizes.iter().enumerate() {
        one.consumed(key, 1, b);
        local = (local.0 + 1, local.1 + b);
        if due(local, left) {
            let (n, bytes) = std::mem::take(&mut local);
            left = batched.consumed(key, n, bytes);
        }
        let a = one.poll_transmit().map(|f| f.credit_grant());
        let c = batched.poll_transmit().map(|f| f.credit_grant());
        assert_eq!(a, c, "grant after item {i}");
    }
    // Sender side: credit in the receiver's terms, granted back as it would consume.
    let mut m = machine();
    let Start::Send(seq) = m.start_call(40, Await::Stream(vec![])) else {
        panic!()
    };
    let key = StreamKey { seq, ours: true };
    let (mut r, mut granted, mut unacked) = ((0u32, 0u64), (4u32, 100u64), Vec::new());
    for &b in &sizes {
        let whole = granted == (4, 100);
        if !spend_reserve(&mut r, b) {
            match m.take_send_credit(key, b, &mut r) {
                SendCredit::Go => {}
                SendCredit::Blocked => {
                    // The receiver consumes everything it got and grants it back.
                    let (n, bytes) = unacked
                        .drain(..)
                        .fold((0u32, 0u64), |(n, s), x: u64| (n + 1, s + x));
                    granted = (granted.0 + n, granted.1 + bytes);
                    m.on_stream_credit(key, n, bytes);
                    assert!(matches!(m.take_send_credit(key, b, &mut r), SendCredit::Go));
                }
                SendCredit::Ended(s) => panic!("ended: {s:?}"),
            }
        }
        let whole = whole || granted == (4, 100);
        assert!(
            granted.0 >= 1 && (b <= granted.1 || whole),
            "over the credit"
        );
        granted = (granted.0 - 1, granted.1.saturating_sub(b));
        unacked.push(b);
        // What the sender holds plus what the machine holds never exceeds the grant.
        assert!(r.0 <= granted.0 && r.1 <= granted.1);
    }
}
