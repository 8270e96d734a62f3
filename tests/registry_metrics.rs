//! The registry's counters (feature `metrics`) over a real Prometheus endpoint: a known workload
//! against the memory registry, a real etcd and a real ZooKeeper (from `scripts/servers.sh up`,
//! or `GETTY_ETCD` / `GETTY_ZK`; fails, never skips, when they are unreachable), scraped over
//! HTTP, shows the exact counts, including the re-registrations of the self-healing path made
//! to happen for real (a lease revoked and a key / node deleted behind the registry's back).
//!
//! A metrics recorder is global to the process, so every case runs in the one test below, one
//! after the other, and checks the differences between a scrape before and one after it.

mod registry_scenarios;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use getty::registry::etcd::etcd_client;
use getty::registry::zk::zookeeper_client;
use getty::registry::{Event, Query, Registration, ServiceInstance, Watch, connect};
use registry_scenarios::eventually;
use registry_scenarios::server::{self, unique_root};

#[path = "common/prometheus.rs"]
mod prometheus;
use prometheus::{Sample, install_exporter, matching, scrape};

const REGISTRATIONS: &str = "getty_registry_registrations_total";
const DEREGISTRATIONS: &str = "getty_registry_deregistrations_total";
const REREGISTRATIONS: &str = "getty_registry_reregistrations_total";
const WATCH_EVENTS: &str = "getty_registry_watch_events_total";
const ERRORS: &str = "getty_registry_errors_total";

/// How long a case waits for one watch event or for the self-healing path to act.
const WAIT: Duration = Duration::from_secs(10);

/// The sum of the samples of `name` whose labels include `want` (0 when there is none yet).
fn total(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    matching(samples, name, want).iter().map(|s| s.2).sum()
}

/// The Prometheus endpoint and the scrape a case started from.
struct Scraper {
    addr: SocketAddr,
    before: Vec<Sample>,
}

impl Scraper {
    async fn begin(addr: SocketAddr) -> Scraper {
        Scraper {
            addr,
            before: scrape(addr).await,
        }
    }

    /// How much each counter of `backend` grew since [`Scraper::begin`], by the names and
    /// labels the module documents.
    async fn growth(&self, backend: &str) -> Growth {
        let now = scrape(self.addr).await;
        let diff = |name: &str, extra: &[(&str, &str)]| {
            let mut want = vec![("backend", backend)];
            want.extend_from_slice(extra);
            (total(&now, name, &want) - total(&self.before, name, &want)) as u64
        };
        let mut g = Growth {
            registrations: diff(REGISTRATIONS, &[]),
            deregistrations: diff(DEREGISTRATIONS, &[]),
            reregistrations: diff(REREGISTRATIONS, &[]),
            ..Growth::default()
        };
        for event in ["snapshot", "added", "updated", "removed"] {
            let n = diff(WATCH_EVENTS, &[("event", event)]);
            if n > 0 {
                g.events.insert(event, n);
            }
        }
        for op in ["register", "deregister", "watch", "list"] {
            let n = diff(ERRORS, &[("op", op)]);
            if n > 0 {
                g.errors.insert(op, n);
            }
        }
        g
    }
}

/// Counter growth of one backend over one case.
#[derive(Debug, Default, PartialEq, Eq)]
struct Growth {
    registrations: u64,
    deregistrations: u64,
    reregistrations: u64,
    events: BTreeMap<&'static str, u64>,
    errors: BTreeMap<&'static str, u64>,
}

/// A watch and the events the test has taken from it, by kind.
struct Followed {
    watch: Watch,
    seen: BTreeMap<&'static str, u64>,
}

impl Followed {
    fn new(watch: Watch) -> Followed {
        Followed {
            watch,
            seen: BTreeMap::new(),
        }
    }

    async fn next(&mut self) -> Event {
        let ev = tokio::time::timeout(WAIT, self.watch.next())
            .await
            .expect("a watch event in time")
            .expect("the watch goes on");
        let kind = match &ev {
            Event::Snapshot(_) => "snapshot",
            Event::Added(_) => "added",
            Event::Updated(_) => "updated",
            Event::Removed(_) => "removed",
        };
        *self.seen.entry(kind).or_default() += 1;
        ev
    }

    /// The next `n` events, as (kind, instance id), sorted.
    async fn next_n(&mut self, n: usize) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(match self.next().await {
                Event::Added(i) => ("added", i.instance_id),
                Event::Updated(i) => ("updated", i.instance_id),
                Event::Removed(i) => ("removed", i.instance_id),
                Event::Snapshot(s) => panic!("a second snapshot: {s:?}"),
            });
        }
        out.sort();
        out
    }

    fn seen(&self) -> BTreeMap<&'static str, u64> {
        self.seen.clone()
    }
}

fn events<const N: usize>(pairs: [(&'static str, u64); N]) -> BTreeMap<&'static str, u64> {
    pairs.into_iter().collect()
}

fn pairs(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut v: Vec<_> = list.iter().map(|(k, i)| (*k, i.to_string())).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_counters_show_the_exact_counts_of_a_known_workload() {
    let addr = install_exporter();
    memory_case(addr).await;
    static_case(addr).await;
    etcd_case(addr).await;
    zookeeper_case(addr).await;
}

/// Registrations, a re-registration of the same instance (an update), deregistration by call
/// and by drop, a superseded handle (not counted again), and failing calls of each operation.
async fn memory_case(addr: SocketAddr) {
    let s = Scraper::begin(addr).await;
    let reg = connect(&format!("memory://metrics-{}", std::process::id()))
        .await
        .unwrap();
    let mut w = Followed::new(reg.watch(&Query::new("M")).await.unwrap());
    assert_eq!(w.next().await, Event::Snapshot(vec![]));
    let a = reg
        .register(ServiceInstance::new("M", "h:1").with_instance_id("a"))
        .await
        .unwrap();
    let b = reg
        .register(ServiceInstance::new("M", "h:2").with_instance_id("b"))
        .await
        .unwrap();
    let a2 = reg
        .register(
            ServiceInstance::new("M", "h:1")
                .with_instance_id("a")
                .with_weight(7),
        )
        .await
        .unwrap();
    assert_eq!(
        w.next_n(3).await,
        pairs(&[("added", "a"), ("added", "b"), ("updated", "a")])
    );
    a2.deregister().await.unwrap();
    drop(b);
    // Superseded by `a2`: its drop removes nothing and counts nothing.
    drop(a);
    assert_eq!(
        w.next_n(2).await,
        pairs(&[("removed", "a"), ("removed", "b")])
    );
    // One failure of each operation the memory backend can fail.
    assert!(reg.register(ServiceInstance::new("", "h:1")).await.is_err());
    assert!(reg.discover(&Query::new("")).await.is_err());
    assert!(reg.watch(&Query::new("")).await.is_err());
    assert!(w.watch.try_next().is_none());

    assert_eq!(
        w.seen(),
        events([
            ("snapshot", 1),
            ("added", 2),
            ("updated", 1),
            ("removed", 2)
        ])
    );
    assert_eq!(
        s.growth("memory").await,
        Growth {
            registrations: 3,
            deregistrations: 2,
            reregistrations: 0,
            events: w.seen(),
            errors: events([("register", 1), ("list", 1), ("watch", 1)]),
        }
    );
}

/// The read-only backend: its snapshot is an event, a `register` an error.
async fn static_case(addr: SocketAddr) {
    let s = Scraper::begin(addr).await;
    let reg = connect("static://10.0.0.1:1,10.0.0.2:1?service=S")
        .await
        .unwrap();
    let mut w = Followed::new(reg.watch(&Query::new("S")).await.unwrap());
    assert!(matches!(w.next().await, Event::Snapshot(list) if list.len() == 2));
    assert!(
        reg.register(ServiceInstance::new("S", "h:1"))
            .await
            .is_err()
    );
    assert_eq!(reg.discover(&Query::new("S")).await.unwrap().len(), 2);
    assert_eq!(
        s.growth("static").await,
        Growth {
            events: events([("snapshot", 1)]),
            errors: events([("register", 1)]),
            ..Growth::default()
        }
    );
}

fn etcd_addr() -> String {
    server::addr("GETTY_ETCD", "127.0.0.1:23790")
}

async fn etcd_raw() -> etcd_client::Client {
    etcd_client::Client::connect([format!("http://{}", etcd_addr())], None)
        .await
        .unwrap()
}

/// `key`'s lease, or `None` when the key does not exist.
async fn etcd_lease(raw: &mut etcd_client::Client, key: &str) -> Option<i64> {
    let resp = raw.get(key, None).await.unwrap();
    resp.kvs().first().map(|kv| kv.lease())
}

/// Two registrations whose lease is revoked behind the registry's back (both put again: two
/// re-registrations), then one key deleted behind its back (one more), a batch
/// deregistration, and a register that cannot reach etcd.
async fn etcd_case(addr: SocketAddr) {
    server::require("etcd", "GETTY_ETCD", etcd_addr());
    let s = Scraper::begin(addr).await;
    let root = unique_root("metrics");
    let reg = connect(&format!("etcd://{}{root}?ttl=5", etcd_addr()))
        .await
        .unwrap();
    let mut raw = etcd_raw().await;
    let mut w = Followed::new(reg.watch(&Query::new("E")).await.unwrap());
    assert_eq!(w.next().await, Event::Snapshot(vec![]));
    let x = reg
        .register(ServiceInstance::new("E", "h:1").with_instance_id("x"))
        .await
        .unwrap();
    let y = reg
        .register(ServiceInstance::new("E", "h:2").with_instance_id("y"))
        .await
        .unwrap();
    assert_eq!(w.next_n(2).await, pairs(&[("added", "x"), ("added", "y")]));
    assert_eq!(s.growth("etcd").await.reregistrations, 0);

    // The lease revoked: both keys go with it and come back under a new one.
    let (kx, ky) = (format!("{root}/E/~/~/x"), format!("{root}/E/~/~/y"));
    let lease = etcd_lease(&mut raw, &kx).await.unwrap();
    raw.lease_revoke(lease).await.unwrap();
    assert_eq!(
        w.next_n(4).await,
        pairs(&[
            ("removed", "x"),
            ("removed", "y"),
            ("added", "x"),
            ("added", "y")
        ])
    );
    for key in [&kx, &ky] {
        let now = etcd_lease(&mut raw, key).await;
        assert!(now.is_some_and(|l| l != lease), "{key}: {now:?}");
    }
    // Counted once the write has returned (the watch may see it first).
    eventually(WAIT, "the re-registrations counted", || async {
        s.growth("etcd").await.reregistrations == 2
    })
    .await;

    // One key deleted: put back at once, under the same (new) lease.
    raw.delete(kx.as_str(), None).await.unwrap();
    assert_eq!(
        w.next_n(2).await,
        pairs(&[("removed", "x"), ("added", "x")])
    );
    eventually(WAIT, "the re-registration counted", || async {
        s.growth("etcd").await.reregistrations == 3
    })
    .await;

    Registration::deregister_all(vec![x, y]).await.unwrap();
    assert_eq!(
        w.next_n(2).await,
        pairs(&[("removed", "x"), ("removed", "y")])
    );
    assert!(etcd_lease(&mut raw, &kx).await.is_none());
    assert!(etcd_lease(&mut raw, &ky).await.is_none());

    // Nothing listens on port 1: the register fails (after its 1 s request timeout).
    let dead = connect(&format!("etcd://127.0.0.1:1{root}?timeout=1"))
        .await
        .unwrap();
    assert!(
        dead.register(ServiceInstance::new("E", "h:3"))
            .await
            .is_err()
    );
    assert!(dead.discover(&Query::new("E")).await.is_err());

    assert_eq!(
        w.seen(),
        events([("snapshot", 1), ("added", 5), ("removed", 5)])
    );
    assert_eq!(
        s.growth("etcd").await,
        Growth {
            registrations: 2,
            deregistrations: 2,
            reregistrations: 3,
            events: w.seen(),
            errors: events([("register", 1), ("list", 1)]),
        }
    );
}

fn zk_addr() -> String {
    server::addr("GETTY_ZK", "127.0.0.1:21810")
}

/// A node deleted behind the registry's back (re-created: one re-registration), and explicit
/// deregistrations.
async fn zookeeper_case(addr: SocketAddr) {
    server::require("ZooKeeper", "GETTY_ZK", zk_addr());
    let s = Scraper::begin(addr).await;
    let root = unique_root("metrics");
    let reg = connect(&format!("zookeeper://{}{root}?ttl=10", zk_addr()))
        .await
        .unwrap();
    let raw = zookeeper_client::Client::connect(&zk_addr()).await.unwrap();
    let mut w = Followed::new(reg.watch(&Query::new("Z")).await.unwrap());
    assert_eq!(w.next().await, Event::Snapshot(vec![]));
    let z = reg
        .register(ServiceInstance::new("Z", "h:1").with_instance_id("z"))
        .await
        .unwrap();
    assert_eq!(w.next_n(1).await, pairs(&[("added", "z")]));

    let path = format!("{root}/Z/~/~/z");
    raw.delete(&path, None).await.unwrap();
    eventually(WAIT, "the re-registration counted", || async {
        s.growth("zookeeper").await.reregistrations == 1
    })
    .await;
    assert!(raw.check_stat(&path).await.unwrap().is_some());
    // The watch re-reads changed nodes: it reports the gap only if its read fell into it.
    // Everything it reports about `z` comes before the next instance's `Added`.
    let z2 = reg
        .register(ServiceInstance::new("Z", "h:2").with_instance_id("z2"))
        .await
        .unwrap();
    let mut gap = Vec::new();
    loop {
        match w.next().await {
            Event::Added(i) if i.instance_id == "z2" => break,
            Event::Added(i) => gap.push(("added", i.instance_id)),
            Event::Removed(i) => gap.push(("removed", i.instance_id)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        gap.is_empty() || gap == [("removed", "z".to_string()), ("added", "z".to_string())],
        "{gap:?}"
    );

    // One alone, one in a batch.
    z.deregister().await.unwrap();
    Registration::deregister_all(vec![z2]).await.unwrap();
    assert_eq!(
        w.next_n(2).await,
        pairs(&[("removed", "z"), ("removed", "z2")])
    );
    assert!(raw.check_stat(&path).await.unwrap().is_none());

    let gap = gap.len() as u64 / 2;
    assert_eq!(
        w.seen(),
        events([("snapshot", 1), ("added", 2 + gap), ("removed", 2 + gap)])
    );
    assert_eq!(
        s.growth("zookeeper").await,
        Growth {
            registrations: 2,
            deregistrations: 2,
            reregistrations: 1,
            events: w.seen(),
            errors: BTreeMap::new(),
        }
    );
}
