//! getty-registry at scale: N registrations (default 10,000) from one process on a real etcd and
//! a real ZooKeeper (the servers of `scripts/servers.sh up`), measuring what issue 15 asks:
//!
//! * **publish-all**: time for N concurrent `register` calls through one registry client, and
//!   how many failed;
//! * **convergence**: a consumer `Directory` started before the burst, against the backend's raw
//!   watch (etcd watch stream / ZooKeeper persistent recursive watch) started at the same time:
//!   time until each has seen all N;
//! * **steady window** (default 60 s): flaps seen by a watching consumer (any event after it
//!   converged), server CPU (etcd process, or the ZooKeeper JVM) and this process's CPU, as % of
//!   one core. The consumers are idle then, so this process's CPU is the publisher's;
//! * **fresh consumer**: a new client's Directory seeing all N;
//! * **shutdown**: `Registration::deregister_all` of the N, and until the consumer's Directory
//!   is empty.
//!
//! ```text
//! cargo build --release -p getty-bench --features registry --bin getty-registry-scale
//! target/release/getty-registry-scale [etcd|zookeeper|both] [N] [WINDOW_SECS]
//! ```
//!
//! `GETTY_ETCD` / `GETTY_ZK` name the servers (default the script's 127.0.0.1:23790 /
//! 127.0.0.1:21810); `GETTY_SERVERS_DIR` (default /tmp/getty-servers) is where the script keeps
//! the servers' PID files, read for their CPU. One JSON line per backend on stdout.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use getty_registry::etcd::etcd_client;
use getty_registry::zk::zookeeper_client;
use getty_registry::{Directory, Event, Query, Registration, ServiceInstance, connect};

const SVC: &str = "bench.Scale";

/// CPU time (user + system) of a process, from /proc (clock ticks of 10 ms).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn server_pid(file: &str) -> Option<String> {
    let dir = std::env::var("GETTY_SERVERS_DIR").unwrap_or_else(|_| "/tmp/getty-servers".into());
    std::fs::read_to_string(format!("{dir}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn instance(i: usize) -> ServiceInstance {
    ServiceInstance::new(
        SVC,
        format!("10.{}.{}.{}:8000", i / 65_536, (i / 256) % 256, i % 256),
    )
    .with_instance_id(format!("n{i:05}"))
}

/// Counts the distinct instance keys / nodes the backend's own watch reports, until `n`.
async fn raw_watch(kind: &str, addr: &str, root: &str, n: usize, seen: Arc<AtomicU64>) {
    let mut keys = HashSet::new();
    match kind {
        "etcd" => {
            let mut c = etcd_client::Client::connect([format!("http://{addr}")], None)
                .await
                .expect("raw etcd client");
            let mut w = c
                .watch(
                    format!("{root}/"),
                    Some(etcd_client::WatchOptions::new().with_prefix()),
                )
                .await
                .expect("raw etcd watch");
            while keys.len() < n {
                let Ok(Some(resp)) = w.message().await else {
                    break;
                };
                for ev in resp.events() {
                    if ev.event_type() == etcd_client::EventType::Put
                        && let Some(kv) = ev.kv()
                    {
                        keys.insert(kv.key().to_vec());
                    }
                }
                seen.store(keys.len() as u64, Ordering::Relaxed);
            }
        }
        _ => {
            let c = zookeeper_client::Client::connect(addr)
                .await
                .expect("raw zookeeper client");
            let base = format!("{root}/{SVC}");
            // The base must exist for the watch to be placed under it; the registry creates
            // the same container parents.
            let opts = zookeeper_client::CreateMode::Persistent
                .with_acls(zookeeper_client::Acls::anyone_all());
            let _ = c.mkdir(&base, &opts).await;
            let mut w = c
                .watch(&base, zookeeper_client::AddWatchMode::PersistentRecursive)
                .await
                .expect("raw zookeeper watch");
            let depth = base.matches('/').count() + 3;
            while keys.len() < n {
                let ev = w.changed().await;
                if ev.event_type == zookeeper_client::EventType::NodeCreated
                    && ev.path.matches('/').count() == depth
                {
                    keys.insert(ev.path.clone().into_bytes());
                    seen.store(keys.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn run(kind: &str, n: usize, window: Duration) -> serde_json::Value {
    let (addr, pid_file) = match kind {
        "etcd" => (
            std::env::var("GETTY_ETCD").unwrap_or_else(|_| "127.0.0.1:23790".into()),
            "etcd.pid",
        ),
        _ => (
            std::env::var("GETTY_ZK").unwrap_or_else(|_| "127.0.0.1:21810".into()),
            "zk.pid",
        ),
    };
    let root = format!(
        "/getty-bench/scale-{}-{:08x}",
        std::process::id(),
        fastrand_u32()
    );
    let url = format!("{kind}://{addr}{root}?ttl=10");
    let server = server_pid(pid_file);
    eprintln!("{kind}: {n} registrations under {root} (server pid {server:?})");

    // Consumers first: a Directory and the backend's raw watch, both before the burst.
    let consumer = connect(&url).await.expect("consumer registry");
    let dir = Directory::new(consumer.clone(), Query::new(SVC));
    assert!(dir.ready(Duration::from_secs(10)).await, "directory ready");
    let raw_seen = Arc::new(AtomicU64::new(0));
    let raw_done = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let raw = {
        let (kind, addr, root, seen, done) = (
            kind.to_string(),
            addr.clone(),
            root.clone(),
            raw_seen.clone(),
            raw_done.clone(),
        );
        tokio::spawn(async move {
            raw_watch(&kind, &addr, &root, n, seen).await;
            *done.lock().unwrap() = Some(Instant::now());
        })
    };
    // Let the raw watch be placed before the burst.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Publish all, concurrently, through one client.
    let publisher = connect(&url).await.expect("publisher registry");
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let p = publisher.clone();
            tokio::spawn(async move { p.register(instance(i)).await })
        })
        .collect();
    let mut regs: Vec<Registration> = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_error = None;
    for t in tasks {
        match t.await.expect("register task") {
            Ok(r) => regs.push(r),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let publish_all = started.elapsed();
    eprintln!(
        "{kind}: published {} in {publish_all:?} ({failed} failed)",
        regs.len()
    );

    // Convergence of the Directory and of the raw watch, from the start of the burst.
    let converge_limit = Duration::from_secs(120);
    let dir_ok = dir
        .wait_for(converge_limit, |l| l.len() == regs.len())
        .await;
    let dir_converged = started.elapsed();
    let raw_deadline = Instant::now() + converge_limit;
    while raw_done.lock().unwrap().is_none() && Instant::now() < raw_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let raw_converged = raw_done.lock().unwrap().map(|t| t - started);
    raw.abort();
    eprintln!(
        "{kind}: directory converged {dir_ok} after {dir_converged:?}; raw watch {raw_converged:?} ({} seen)",
        raw_seen.load(Ordering::Relaxed)
    );

    // Steady window: flaps seen by a watching consumer; CPU of the server and of this process.
    let mut watch = consumer.watch(&Query::new(SVC)).await.expect("watch");
    match watch.next().await {
        Some(Event::Snapshot(list)) => assert_eq!(list.len(), regs.len(), "watch snapshot"),
        other => panic!("watch began with {other:?}"),
    }
    let me = std::process::id().to_string();
    let (server_cpu0, my_cpu0, w0) = (
        server.as_deref().map(cpu_secs),
        cpu_secs(&me),
        Instant::now(),
    );
    let mut flaps = 0u64;
    let mut removed = 0u64;
    let end = tokio::time::Instant::now() + window;
    loop {
        match tokio::time::timeout_at(end, watch.next()).await {
            Err(_) => break,
            Ok(None) => panic!("watch ended"),
            Ok(Some(ev)) => {
                flaps += 1;
                if matches!(ev, Event::Removed(_)) {
                    removed += 1;
                }
            }
        }
    }
    let secs = w0.elapsed().as_secs_f64();
    let server_cpu = server
        .as_deref()
        .zip(server_cpu0)
        .map(|(pid, c0)| (cpu_secs(pid) - c0) / secs * 100.0);
    let my_cpu = (cpu_secs(&me) - my_cpu0) / secs * 100.0;
    let still = dir.instances().len();
    eprintln!(
        "{kind}: window {secs:.0}s: {flaps} events ({removed} removals), server CPU {server_cpu:?} %, publisher CPU {my_cpu:.2} %, directory holds {still}"
    );

    // A fresh consumer.
    let t = Instant::now();
    let fresh = connect(&url).await.expect("fresh consumer");
    let fresh_dir = Directory::new(fresh, Query::new(SVC));
    let fresh_ok = fresh_dir
        .wait_for(Duration::from_secs(60), |l| l.len() == regs.len())
        .await;
    let fresh_took = t.elapsed();
    eprintln!("{kind}: fresh consumer saw all: {fresh_ok} in {fresh_took:?}");

    // Shutdown of all registrations.
    let count = regs.len();
    let t = Instant::now();
    let shutdown_result = Registration::deregister_all(regs).await;
    let shutdown = t.elapsed();
    let gone = dir
        .wait_for(Duration::from_secs(60), |l| l.is_empty())
        .await;
    let gone_took = t.elapsed();
    eprintln!(
        "{kind}: deregister_all of {count} in {shutdown:?} ({shutdown_result:?}); consumer empty {gone} after {gone_took:?}"
    );
    drop(publisher);

    serde_json::json!({
        "backend": kind,
        "registrations": n,
        "publish_all_s": publish_all.as_secs_f64(),
        "failed_registrations": failed,
        "first_error": first_error,
        "directory_converged_s": dir_ok.then_some(dir_converged.as_secs_f64()),
        "raw_watch_converged_s": raw_converged.map(|d| d.as_secs_f64()),
        "convergence_ratio": raw_converged.filter(|_| dir_ok).map(|r| dir_converged.as_secs_f64() / r.as_secs_f64()),
        "window_s": secs,
        "flaps_seen_by_consumer": flaps,
        "removals_seen_by_consumer": removed,
        "server_cpu_pct_of_core": server_cpu,
        "publisher_cpu_pct_of_core": my_cpu,
        "fresh_consumer_all_s": fresh_ok.then_some(fresh_took.as_secs_f64()),
        "deregister_all_s": shutdown.as_secs_f64(),
        "deregister_all_ok": shutdown_result.is_ok(),
        "consumer_empty_after_s": gone.then_some(gone_took.as_secs_f64()),
    })
}

fn fastrand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    t ^ std::process::id().rotate_left(16)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "both".into());
    let n: usize = args.next().map_or(10_000, |a| a.parse().expect("N"));
    let window = Duration::from_secs(args.next().map_or(60, |a| a.parse().expect("WINDOW_SECS")));
    let kinds: &[&str] = match which.as_str() {
        "etcd" => &["etcd"],
        "zookeeper" | "zk" => &["zookeeper"],
        "both" => &["etcd", "zookeeper"],
        other => {
            eprintln!(
                "usage: getty-registry-scale [etcd|zookeeper|both] [N] [WINDOW_SECS] (not {other:?})"
            );
            std::process::exit(2);
        }
    };
    for kind in kinds {
        let line = run(kind, n, window).await;
        println!("{line}");
    }
}
