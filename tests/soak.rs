//! A bounded soak: 100 connections with 32 calls in flight in each direction (client → server
//! and server → client on the same connections) while connections are killed at random and
//! re-established. Every call is accounted for: issued == ok + failed, none still pending at the
//! end (each is bounded by its timeout), replies match their requests, and the heap and RSS
//! after the run are where they were after a warm-up.
//!
//! About a minute by default; `GETTY_SOAK_SECS=N` makes it N seconds of load: a warm-up of N/6 s
//! (1..=10 s), then the measured run.

mod reliability;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use getty::core::{ClientBuilder, ServerBuilder};
use getty::rpc::{Peer, RpcClient, RpcError, RpcOptions, RpcServer};
use reliability::*;

#[global_allocator]
static ALLOC: Counting = Counting;

const CLIENTS: usize = 10;
const CONNS_PER_CLIENT: usize = 10;
const IN_FLIGHT: usize = 32;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn opts() -> RpcOptions {
    RpcOptions::default().default_timeout(CALL_TIMEOUT)
}

#[derive(Default)]
struct Counts {
    issued: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Calls that outlived their timeout by 2 s: must stay 0.
    hung: AtomicU64,
    /// Replies that did not match their request: must stay 0.
    wrong: AtomicU64,
    by_status: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counts {
    async fn call(&self, peer: Result<Peer, RpcError>, svc: &str, payload: String) {
        self.issued.fetch_add(1, Ordering::Relaxed);
        let call = async {
            match peer {
                Ok(p) => p.call_json::<_, String>(svc, "Echo", &payload).await,
                Err(e) => Err(e),
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(2), call).await {
            Err(_) => {
                self.hung.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(back)) => {
                if back != payload {
                    self.wrong.fetch_add(1, Ordering::Relaxed);
                }
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *self
                    .by_status
                    .lock()
                    .unwrap()
                    .entry(e.status.name())
                    .or_default() += 1;
                if peer_missing(&e) {
                    // No open connection this instant: do not spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.issued.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.hung.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        )
    }
}

fn peer_missing(e: &RpcError) -> bool {
    e.message.contains("no open connection")
}

struct World {
    server: Arc<RpcServer>,
    clients: Vec<Arc<RpcClient>>,
}

impl World {
    async fn start() -> World {
        let server = RpcServer::start(service("srv"), opts(), |cb| {
            ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
        })
        .await
        .unwrap();
        let addr = server.local_addr().to_string();
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let a = addr.clone();
            let c = RpcClient::start(service("cli"), opts(), |cb| {
                ClientBuilder::new(a)
                    .connections(CONNS_PER_CLIENT)
                    .reconnect_interval(Duration::from_millis(20))
                    .reconnect_attempts(0)
                    .connect_tcp(cb)
            })
            .unwrap();
            clients.push(Arc::new(c));
        }
        let w = World {
            server: Arc::new(server),
            clients,
        };
        w.settle().await;
        w
    }

    /// Waits until all 100 connections are up on both sides.
    async fn settle(&self) {
        let want = CLIENTS * CONNS_PER_CLIENT;
        let start = Instant::now();
        loop {
            let up = self
                .clients
                .iter()
                .all(|c| c.peers().iter().filter(|p| !p.is_closed()).count() == CONNS_PER_CLIENT);
            let server_side = self
                .server
                .peers()
                .iter()
                .filter(|p| !p.is_closed())
                .count();
            if up && server_side == want && self.server.core().session_count() == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "connections did not come back: server has {server_side}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs the load for `d`; returns the counts.
    async fn load(&self, d: Duration) -> Arc<Counts> {
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let lanes = CLIENTS * CONNS_PER_CLIENT;
        for lane in 0..lanes {
            for k in 0..IN_FLIGHT {
                // Client → server.
                let (c, cn, st) = (
                    self.clients[lane % CLIENTS].clone(),
                    counts.clone(),
                    stop.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while !st.load(Ordering::Relaxed) {
                        n += 1;
                        cn.call(c.peer(), "srv.Svc", format!("c{lane}/{k}/{n}"))
                            .await;
                    }
                }));
                // Server → client, on the same connections.
                let (s, cn2, st2) = (self.server.clone(), counts.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while !st2.load(Ordering::Relaxed) {
                        n += 1;
                        let peers = s.peers();
                        let peer = if peers.is_empty() {
                            Err(RpcError::closed("no open connection"))
                        } else {
                            Ok(peers[fastrand::usize(..peers.len())].clone())
                        };
                        cn2.call(peer, "cli.Svc", format!("s{lane}/{k}/{n}")).await;
                    }
                }));
            }
        }
        // The killer: every 20-200 ms one connection dies, from either end.
        let (clients, server, stop2) = (self.clients.clone(), self.server.clone(), stop.clone());
        let kills = Arc::new(AtomicU64::new(0));
        let kills2 = kills.clone();
        let killer = tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(20..200))).await;
                let victim = if fastrand::bool() {
                    let c = &clients[fastrand::usize(..clients.len())];
                    let ps = c.peers();
                    (!ps.is_empty()).then(|| ps[fastrand::usize(..ps.len())].clone())
                } else {
                    let ps = server.peers();
                    (!ps.is_empty()).then(|| ps[fastrand::usize(..ps.len())].clone())
                };
                if let Some(p) = victim {
                    p.close();
                    kills2.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let start = Instant::now();
        let (mut last, mut last_t) = (0, Duration::ZERO);
        while start.elapsed() < d {
            let left = d.saturating_sub(start.elapsed());
            tokio::time::sleep(Duration::from_secs(5).min(left)).await;
            let (issued, ok, failed, hung, _) = counts.snapshot();
            let now = start.elapsed();
            eprintln!(
                "  {:>3.0} s: issued {issued}, ok {ok}, failed {failed}, hung {hung}; {:.0} calls/s; {} kills; RSS {}",
                now.as_secs_f64(),
                (issued - last) as f64 / (now - last_t).as_secs_f64(),
                kills.load(Ordering::Relaxed),
                mb(rss_bytes())
            );
            (last, last_t) = (issued, now);
        }
        stop.store(true, Ordering::Relaxed);
        killer.await.unwrap();
        // Every worker ends its current call within the call timeout (+2 s for a hung one).
        let t = Instant::now();
        for task in tasks {
            task.await.unwrap();
        }
        eprintln!(
            "  workers stopped in {:?}; {} connections killed",
            t.elapsed(),
            kills.load(Ordering::Relaxed)
        );
        counts
    }

    /// No call of ours or theirs is still pending, on either side.
    fn nothing_pending(&self) -> bool {
        let s = self
            .server
            .peers()
            .iter()
            .all(|p| p.stats().pending == 0 && p.stats().inflight == 0);
        let c = self.clients.iter().all(|c| {
            c.peers()
                .iter()
                .all(|p| p.stats().pending == 0 && p.stats().inflight == 0)
        });
        s && c
    }
}

fn check(what: &str, counts: &Counts) {
    let (issued, ok, failed, hung, wrong) = counts.snapshot();
    let by_status = counts.by_status.lock().unwrap().clone();
    eprintln!(
        "{what}: issued {issued} = ok {ok} + failed {failed} (by status {by_status:?}) + hung {hung}"
    );
    assert_eq!(issued, ok + failed + hung, "every call is accounted for");
    assert_eq!(hung, 0, "calls outlived their timeout");
    assert_eq!(wrong, 0, "replies that did not match their request");
    assert!(ok > failed, "mostly successes: ok {ok}, failed {failed}");
    for status in by_status.keys() {
        // A killed connection fails its calls with CONNECTION_CLOSED; nothing else may happen.
        assert!(
            matches!(*status, "CONNECTION_CLOSED"),
            "unexpected failures: {by_status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_100_connections_32_calls_in_flight_each_way_with_random_kills() {
    let secs: u64 = std::env::var("GETTY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let warmup = Duration::from_secs((secs / 6).clamp(1, 10));
    let run = Duration::from_secs(secs)
        .saturating_sub(warmup)
        .max(Duration::from_secs(1));
    let world = World::start().await;

    eprintln!("warm-up {warmup:?}");
    let counts = world.load(warmup).await;
    check("warm-up", &counts);
    world.settle().await;
    eventually(
        Duration::from_secs(10),
        "nothing pending after the warm-up",
        || world.nothing_pending(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, live0) = (rss_bytes(), live_bytes());

    eprintln!("run {run:?}");
    let counts = world.load(run).await;
    check("run", &counts);
    world.settle().await;
    eventually(
        Duration::from_secs(10),
        "nothing pending after the run",
        || world.nothing_pending(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss1, live1) = (rss_bytes(), live_bytes());
    eprintln!(
        "RSS {} -> {}; live heap {} -> {}",
        mb(rss0),
        mb(rss1),
        mb(live0),
        mb(live1)
    );
    assert!(
        live1 < live0 + 4 * MB,
        "heap grew {} -> {}",
        mb(live0),
        mb(live1)
    );
    assert!(
        rss1 < rss0 + rss0 / 10 + 16 * MB,
        "RSS grew {} -> {}",
        mb(rss0),
        mb(rss1)
    );

    for c in &world.clients {
        c.close().await;
    }
    world.server.close().await;
}
