//! The closed-loop load on one connection: P calls in flight, each replaced as soon as it ends,
//! driven by one task with a `FuturesUnordered` (no task per call).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use getty_rpc::{CallOptions, CodecId, Peer, RpcError};
use hdrhistogram::Histogram;

use crate::echo::{self, ECHO_METHOD, ECHO_SERVICE};

/// How long after the end a call may still take before it counts as stuck.
pub const STUCK_GRACE: Duration = Duration::from_secs(5);

/// Latencies in ns, up to 60 s, 3 significant digits (as peerbench).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// What one run did.
pub struct Tally {
    pub hist: Histogram<u64>,
    pub calls: u64,
    pub errors: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            hist: histogram(),
            calls: 0,
            errors: 0,
        }
    }
}

impl Tally {
    pub fn merge(&mut self, o: &Tally) {
        self.hist.add(&o.hist).expect("same histogram bounds");
        self.calls += o.calls;
        self.errors += o.errors;
    }
}

/// One run's settings: the same for every connection of a process.
#[derive(Clone)]
pub struct Load {
    pub inflight: usize,
    pub codec: CodecId,
    pub payload: String,
    /// The request body, encoded once.
    pub body: Bytes,
    /// Calls that end in `[measure, end)` count.
    pub measure: Instant,
    pub end: Instant,
    /// Run every slot as a task of its own (as the peerbench clients do) rather than all the
    /// slots of a connection in one task.
    pub spawn_slots: bool,
}

impl Load {
    /// A run that starts measuring `warmup` seconds from now, for `secs` seconds.
    pub fn new(inflight: usize, payload: usize, codec: CodecId, warmup: f64, secs: f64) -> Self {
        let payload = echo::payload(payload);
        let body = echo::request_body(codec, &payload);
        let measure = Instant::now() + Duration::from_secs_f64(warmup.max(0.0));
        Load {
            inflight,
            codec,
            payload,
            body,
            measure,
            end: measure + Duration::from_secs_f64(secs.max(0.0)),
            spawn_slots: false,
        }
    }
}

/// One echo call; returns its result and when it ended.
async fn call(peer: &Peer, load: &Load) -> (Result<Bytes, RpcError>, Instant) {
    let r = match peer
        .start_call_raw(
            ECHO_SERVICE,
            ECHO_METHOD,
            load.codec,
            load.body.clone(),
            CallOptions::default(),
        )
        .await
    {
        Ok(pending) => pending.await,
        Err(e) => Err(e),
    };
    (r, Instant::now())
}

/// One in-flight slot: a call, then the next as soon as it ends, until `load.end`. Figures go
/// to the connection's tally (the slots share one task, so its lock is never contended), so a
/// slot that gets stuck loses nothing already counted.
async fn slot(peer: &Peer, load: &Load, tally: &Mutex<Tally>) {
    // The end of one call is the start of the next: one clock read per call.
    let mut t0 = Instant::now();
    loop {
        let (r, t1) = call(peer, load).await;
        if t1 >= load.end {
            return;
        }
        if t1 >= load.measure {
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            match r {
                Ok(reply) if echo::is_echo(load.codec, &load.body, &load.payload, &reply) => {
                    t.calls += 1;
                    t.hist.saturating_record((t1 - t0).as_nanos() as u64);
                }
                Ok(_) => {
                    if t.errors == 0 {
                        eprintln!("getty-bench: wrong echo");
                    }
                    t.errors += 1;
                }
                Err(e) => {
                    if t.errors == 0 {
                        eprintln!("getty-bench: call failed: {e}");
                    }
                    t.errors += 1;
                }
            }
        }
        t0 = t1;
    }
}

/// Keeps `load.inflight` calls going on `peer` until `load.end`, all from the calling task
/// (P slot loops in one `FuturesUnordered`: no task and no allocation per call). Then waits
/// up to [`STUCK_GRACE`] for the calls still out, and counts those that never end as errors.
pub async fn drive(peer: &Peer, load: &Load) -> Tally {
    if load.spawn_slots {
        return drive_spawned(peer, load).await;
    }
    let tally = Mutex::new(Tally::default());
    let grace = tokio::time::Instant::from_std(load.end + STUCK_GRACE);
    let stuck = if load.inflight == 1 {
        // One slot needs no FuturesUnordered (nor its extra wake-up per call).
        let one = slot(peer, load, &tally);
        u64::from(tokio::time::timeout_at(grace, one).await.is_err())
    } else {
        let mut slots: FuturesUnordered<_> = (0..load.inflight)
            .map(|_| slot(peer, load, &tally))
            .collect();
        let _ =
            tokio::time::timeout_at(grace, async { while slots.next().await.is_some() {} }).await;
        slots.len() as u64
    };
    if stuck > 0 {
        eprintln!("getty-bench: {stuck} calls still pending {STUCK_GRACE:?} after the end");
    }
    let mut total = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    total.errors += stuck;
    total
}

/// [`drive`] with one task per slot, each with its own tally.
async fn drive_spawned(peer: &Peer, load: &Load) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..load.inflight {
        let (peer, load) = (peer.clone(), load.clone());
        tasks.spawn(async move {
            let tally = Mutex::new(Tally::default());
            slot(&peer, &load, &tally).await;
            tally.into_inner().unwrap_or_else(|e| e.into_inner())
        });
    }
    let mut total = Tally::default();
    let grace = tokio::time::Instant::from_std(load.end + STUCK_GRACE);
    let _ = tokio::time::timeout_at(grace, async {
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(t) => total.merge(&t),
                Err(_) => total.errors += 1,
            }
        }
    })
    .await;
    if !tasks.is_empty() {
        eprintln!(
            "getty-bench: {} calls still pending {STUCK_GRACE:?} after the end",
            tasks.len()
        );
        total.errors += tasks.len() as u64;
    }
    total
}
