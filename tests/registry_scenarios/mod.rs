//! The registry scenarios shared by `registry_memory`, `registry_etcd` and `registry_zk`: each is
//! written once here, generic over a [`Backend`], and each test file runs it through a thin
//! `#[tokio::test]` wrapper (plus the tests only its backend has).
//!
//! A scenario gets a backend and a root unique to the test; it opens its registries from
//! [`Backend::url`] and checks what the backend itself holds through the backend's hooks (etcdctl,
//! the ZooKeeper CLI or a raw client, a second handle on a memory namespace).
//! [`server`] has what the tests against real servers need (the lock, the reachability check,
//! `scripts/servers.sh`, the child-process provider); [`Followed`] is the common part of their
//! disruption tests.
#![allow(dead_code)]

pub mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use getty::registry::{
    Directory, Error, Event, Query, Registration, Registry, ServiceInstance, Watch, connect,
};

/// How long a scenario waits for one watch event or for a Directory to reach a state.
pub const WAIT: Duration = Duration::from_secs(10);

/// A registry backend under test, and how to look at what it stores without going through the
/// registry under test.
pub trait Backend {
    /// What `Registry::kind` reports.
    const KIND: &'static str;

    /// The URL of a registry rooted at `root`, with a lease / session timeout of `ttl` seconds
    /// where the backend has one.
    fn url(&self, root: &str, ttl: u32) -> String;

    /// How many instances are stored under `root`.
    async fn stored(&self, root: &str) -> usize;

    /// Asserts that `inst` is the only instance under `root`, stored as the backend should store
    /// it (under `{root}/{inst.path_key()}`, as JSON, tied to a lease or an ephemeral node).
    async fn assert_stored(&self, root: &str, inst: &ServiceInstance);

    /// Asserts that `inst`, just deregistered, is gone from `root`.
    async fn assert_deregistered(&self, root: &str, inst: &ServiceInstance);
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// A registration as the backend stores it; discovery by service, group and version; removal by
/// explicit deregistration (at once, not after the TTL) and by dropping the handle.
pub async fn registration_stored_and_deregistered<B: Backend>(b: &B, root: &str) {
    let reg = connect(&b.url(root, 10)).await.unwrap();
    assert_eq!(reg.kind(), B::KIND);
    let inst = ServiceInstance::new("Echo Svc", "127.0.0.1:8000")
        .with_group("bj/1")
        .with_version("v1.0")
        .with_codec("json")
        .with_metadata("zone", "a")
        .with_instance_id("node:1");
    // The escaped key / path below the root that `assert_stored` looks for.
    assert_eq!(inst.path_key(), "Echo%20Svc/bj%2F1/v1.0/node%3A1");
    let r = reg.register(inst.clone()).await.unwrap();
    b.assert_stored(root, &inst).await;

    assert_eq!(
        reg.discover(&Query::new("Echo Svc")).await.unwrap(),
        vec![inst.clone()]
    );
    assert_eq!(
        reg.discover(
            &Query::new("Echo Svc")
                .with_group("bj/1")
                .with_version("v1.0")
        )
        .await
        .unwrap()
        .len(),
        1
    );
    assert!(reg.discover(&Query::new("Echo")).await.unwrap().is_empty());

    // Explicit deregistration removes the instance at once (not after the TTL).
    r.deregister().await.unwrap();
    b.assert_deregistered(root, &inst).await;

    // Deregister on drop (in the background, promptly).
    let r = reg.register(inst.clone()).await.unwrap();
    assert_eq!(b.stored(root).await, 1);
    drop(r);
    eventually(
        Duration::from_secs(3),
        "instance removed after drop",
        || async { b.stored(root).await == 0 },
    )
    .await;
}

/// A provider in another process, SIGKILLed (no chance to deregister): its instance expires
/// within the TTL / session timeout (plus a margin). Needs the file's `child_provider` test, see
/// [`server::spawn_provider`].
pub async fn killed_provider_disappears<B: Backend>(b: &B, root: &str, ttl: u32) {
    let mut child = server::spawn_provider(&b.url(root, ttl), "victim");
    b.assert_stored(root, &server::killed_instance("victim"))
        .await;
    child.kill().unwrap(); // SIGKILL: no chance to deregister
    child.wait().unwrap();
    let took = eventually(
        Duration::from_secs(u64::from(ttl) + 4),
        "instance of the killed provider expires",
        || async { b.stored(root).await == 0 },
    )
    .await;
    eprintln!("killed provider's instance expired after {took:?} (ttl {ttl}s)");
}

/// 50 concurrent registrations: a watcher from before sees each once, one created in the middle
/// of the burst (snapshot + Added) too; then 50 concurrent deregistrations, 50 Removed.
pub async fn watch_sees_burst_of_50<B: Backend>(b: &B, root: &str) {
    let reg = connect(&b.url(root, 10)).await.unwrap();
    let q = Query::new("Burst");
    let mut early = reg.watch(&q).await.unwrap();
    assert_eq!(next(&mut early).await, Event::Snapshot(vec![]));

    // Spread over ~100 ms, so that the late watcher starts after about 20 of them.
    let burst = (0..50).map(|i| {
        ServiceInstance::new("Burst", format!("10.0.0.1:{}", 1000 + i))
            .with_version(if i % 2 == 0 { "v1" } else { "v2" })
            .with_instance_id(format!("n{i:02}"))
    });
    let (regs, mut late) =
        register_with_watch_midway(&reg, burst, Duration::from_millis(2), 20, &q).await;
    let want: BTreeSet<String> = (0..50).map(|i| format!("n{i:02}")).collect();

    let mut seen = BTreeSet::new();
    added(&mut early, &mut seen, 50).await;
    assert_eq!(seen, want);
    assert!(early.try_next().is_none());

    // Late watcher: snapshot + Added = all 50, each exactly once.
    let mut late_seen = snapshot_ids(&mut late).await;
    eprintln!("late watcher's snapshot had {} of 50", late_seen.len());
    added(&mut late, &mut late_seen, 50).await;
    assert_eq!(late_seen, want);
    assert_eq!(b.stored(root).await, 50);

    // 50 concurrent deregistrations: 50 Removed.
    let tasks: Vec<_> = regs
        .into_iter()
        .map(|r| tokio::spawn(r.deregister()))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(removed(&mut early, 50).await, want);
    assert_quiet(&mut early, Duration::from_millis(300), "no extra events").await;
    assert!(reg.discover(&q).await.unwrap().is_empty());
    assert_eq!(b.stored(root).await, 0);
}

/// `Query::all()`: every service of the root, and nothing of registries rooted below or beside
/// it; a watch and a Directory that see new services join, change and leave; and a watcher
/// created in the middle of a burst over several new services that loses nothing.
pub async fn all_services_discover_and_watch<B: Backend>(b: &B, root: &str) {
    let reg = connect(&b.url(root, 10)).await.unwrap();
    // Nothing exists under the root yet.
    assert!(reg.discover(&Query::all()).await.unwrap().is_empty());
    let mut early = reg.watch(&Query::all()).await.unwrap();
    assert_eq!(next(&mut early).await, Event::Snapshot(vec![]));
    let everything = Directory::new(reg.clone(), Query::all());

    // Registries rooted below and beside ours are not part of it.
    let nested = connect(&b.url(&format!("{root}/nested"), 10))
        .await
        .unwrap();
    let _n = nested
        .register(ServiceInstance::new("Nested", "10.9.9.9:1").with_instance_id("n1"))
        .await
        .unwrap();
    let beside = connect(&b.url(&format!("{root}-beside"), 10))
        .await
        .unwrap();
    let _b = beside
        .register(ServiceInstance::new("Beside", "10.9.9.9:2").with_instance_id("s1"))
        .await
        .unwrap();

    let mut regs = Vec::new();
    for (svc, g, v, id) in [
        ("b.Beta", "", "v2", "b2"),
        ("a.Alpha", "g1", "v1", "a1"),
        ("b.Beta", "", "v1", "b1"),
    ] {
        let inst = ServiceInstance::new(svc, format!("{id}:1"))
            .with_group(g)
            .with_version(v)
            .with_instance_id(id);
        regs.push(reg.register(inst).await.unwrap());
        assert!(matches!(next(&mut early).await, Event::Added(i) if i.instance_id == id));
    }
    let found = async |q: Query| ids(reg.discover(&q).await.unwrap());
    // Sorted by path key: service, group, version, instance id.
    assert_eq!(found(Query::all()).await, ["a1", "b1", "b2"]);
    assert_eq!(found(Query::all().with_group("g1")).await, ["a1"]);
    assert_eq!(found(Query::all().with_version("v2")).await, ["b2"]);
    assert_eq!(found(Query::new("b.Beta")).await, ["b1", "b2"]);
    assert!(
        everything
            .wait_for(WAIT, |l| l
                .iter()
                .map(|i| i.instance_id.as_str())
                .eq(["a1", "b1", "b2"]))
            .await
    );
    assert_quiet(
        &mut early,
        Duration::from_millis(300),
        "nothing of the nested or neighbouring registry",
    )
    .await;
    let mut late = reg.watch(&Query::all()).await.unwrap();
    assert_eq!(
        next(&mut late).await,
        Event::Snapshot(reg.discover(&Query::all()).await.unwrap())
    );

    // A service that did not exist when the watches started joins, changes and leaves.
    let c = reg
        .register(ServiceInstance::new("c.New", "10.0.0.3:1").with_instance_id("c1"))
        .await
        .unwrap();
    let ci = c.instance().clone();
    for w in [&mut early, &mut late] {
        assert_eq!(next(w).await, Event::Added(ci.clone()));
    }
    let c2 = reg.register(ci.clone().with_weight(5)).await.unwrap();
    for w in [&mut early, &mut late] {
        assert_eq!(next(w).await, Event::Updated(ci.clone().with_weight(5)));
    }
    c.deregister().await.unwrap(); // superseded: removes nothing
    c2.deregister().await.unwrap();
    for w in [&mut early, &mut late] {
        assert_eq!(next(w).await, Event::Removed(ci.clone().with_weight(5)));
        assert!(w.try_next().is_none(), "nothing of the other registries");
    }

    // 30 registrations over 3 new services; a watcher created after about 10 of them.
    let burst = (0..30).map(|i| {
        ServiceInstance::new(format!("burst.S{}", i % 3), format!("10.0.1.1:{i}"))
            .with_instance_id(format!("d{i:02}"))
    });
    let (burst_regs, mut mid) =
        register_with_watch_midway(&reg, burst, Duration::from_millis(3), 10, &Query::all()).await;
    regs.extend(burst_regs);
    let burst: BTreeSet<String> = (0..30).map(|i| format!("d{i:02}")).collect();
    let mut seen = BTreeSet::new();
    added(&mut early, &mut seen, 30).await;
    assert_eq!(seen, burst);
    let mut mid_seen = snapshot_ids(&mut mid).await;
    eprintln!("mid-burst snapshot had {} of 33", mid_seen.len());
    added(&mut mid, &mut mid_seen, 33).await;
    let mut want = burst;
    want.extend(["a1", "b1", "b2"].map(String::from));
    assert_eq!(mid_seen, want);
    assert_eq!(reg.discover(&Query::all()).await.unwrap().len(), 33);
    assert_eq!(
        reg.discover(&Query::new("burst.S1")).await.unwrap().len(),
        10
    );

    drop(regs);
    assert!(everything.wait_for(WAIT, |l| l.is_empty()).await);
}

/// Discovery and watches filtered by group and/or version; an update is one `Updated` for the
/// watches it matches, and the superseded handle no longer owns the instance.
pub async fn discovery_and_watch_filtered_by_group_and_version<B: Backend>(b: &B, root: &str) {
    let reg = connect(&b.url(root, 10)).await.unwrap();
    let mut group_a = reg.watch(&Query::new("Svc").with_group("A")).await.unwrap();
    let mut a_v2 = reg
        .watch(&Query::new("Svc").with_group("A").with_version("v2"))
        .await
        .unwrap();
    let mut v1 = reg
        .watch(&Query::new("Svc").with_version("v1"))
        .await
        .unwrap();
    for w in [&mut group_a, &mut a_v2, &mut v1] {
        assert_eq!(next(w).await, Event::Snapshot(vec![]));
    }
    let mut regs = Vec::new();
    for (g, v, id) in [("A", "v1", "a1"), ("A", "v2", "a2"), ("B", "v1", "b1")] {
        let inst = ServiceInstance::new("Svc", format!("{id}:1"))
            .with_group(g)
            .with_version(v)
            .with_instance_id(id);
        regs.push(reg.register(inst).await.unwrap());
    }
    let found = async |q: Query| ids(reg.discover(&q).await.unwrap());
    assert_eq!(found(Query::new("Svc")).await, ["a1", "a2", "b1"]);
    assert_eq!(found(Query::new("Svc").with_group("A")).await, ["a1", "a2"]);
    assert_eq!(
        found(Query::new("Svc").with_version("v1")).await,
        ["a1", "b1"]
    );
    assert_eq!(
        found(Query::new("Svc").with_group("A").with_version("v2")).await,
        ["a2"]
    );
    assert!(found(Query::new("Nothing")).await.is_empty());
    assert!(matches!(
        reg.discover(&Query::new("")).await,
        Err(Error::InvalidQuery(_))
    ));

    // Each watch sees what it selects, and nothing else.
    let mut got = Vec::new();
    for _ in 0..2 {
        match next(&mut group_a).await {
            Event::Added(i) => got.push(i.instance_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, ["a1", "a2"]);
    match next(&mut a_v2).await {
        Event::Added(i) => assert_eq!(i.instance_id, "a2"),
        other => panic!("unexpected {other:?}"),
    }
    let mut got = BTreeSet::new();
    added(&mut v1, &mut got, 2).await;
    assert_eq!(got, BTreeSet::from(["a1".to_string(), "b1".to_string()]));
    let quiet = Duration::from_millis(300);
    assert_quiet(&mut group_a, quiet, "group B not seen").await;
    assert_quiet(&mut a_v2, quiet, "only a2 seen").await;
    assert_quiet(&mut v1, quiet, "only version v1 seen").await;

    // Updates: re-registering a2 with another weight is one Updated event.
    let a2 = regs.remove(1);
    let updated = a2.instance().clone().with_weight(3);
    let _a2b = reg.register(updated.clone()).await.unwrap();
    assert_eq!(next(&mut group_a).await, Event::Updated(updated.clone()));
    assert_eq!(next(&mut a_v2).await, Event::Updated(updated.clone()));
    // The superseded handle no longer owns the instance (it moved to the new lease / the new
    // registration): deregistering it leaves the new registration alone, and the two
    // registrations do not fight over the stored data.
    a2.deregister().await.unwrap();
    let quiet = Duration::from_millis(500);
    assert_quiet(&mut group_a, quiet, "no flapping").await;
    assert_quiet(&mut a_v2, quiet, "no flapping").await;
    assert!(
        reg.discover(&Query::new("Svc").with_group("A"))
            .await
            .unwrap()
            .contains(&updated)
    );
    assert_eq!(
        reg.discover(&Query::new("Svc").with_group("A").with_version("v2"))
            .await
            .unwrap(),
        vec![updated]
    );
}

/// A registry URL that lists a dead address before the live one: every call still succeeds.
pub async fn several_addresses_with_a_dead_one(url: &str) {
    let reg = connect(url).await.unwrap();
    for i in 0..5 {
        let r = reg
            .register(ServiceInstance::new("Multi", "h:1").with_instance_id(format!("m{i}")))
            .await
            .unwrap();
        assert_eq!(
            reg.discover(&Query::new("Multi")).await.unwrap(),
            vec![r.instance().clone()]
        );
        r.deregister().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Disruption tests (restarts, outages, lost sessions or data)
// ---------------------------------------------------------------------------------------------

/// What the disruption tests follow through a server's troubles: instances `p1` (service `Dis`)
/// and `o1` (service `Other`) registered through a provider, seen from a second client, the
/// consumer, three ways: a Directory of `Dis`, a Directory of every service, and a raw watch of
/// every service whose events are [replayed](Replay) one by one.
pub struct Followed {
    consumer: Arc<dyn Registry>,
    dis: Directory,
    everything: Directory,
    raw: Watch,
    replay: Replay,
    _registrations: Vec<Registration>,
}

impl Followed {
    /// Registers `p1` and `o1` through `provider` and waits until the consumer's three views
    /// hold them.
    pub async fn start(provider: &dyn Registry, consumer: Arc<dyn Registry>) -> Self {
        let p1 = provider
            .register(ServiceInstance::new("Dis", "10.0.0.1:1").with_instance_id("p1"))
            .await
            .unwrap();
        let dis = Directory::new(consumer.clone(), Query::new("Dis"));
        assert!(dis.wait_for(Duration::from_secs(5), |l| l.len() == 1).await);
        let o1 = provider
            .register(ServiceInstance::new("Other", "10.0.0.9:1").with_instance_id("o1"))
            .await
            .unwrap();
        let everything = Directory::new(consumer.clone(), Query::all());
        let mut raw = consumer.watch(&Query::all()).await.unwrap();
        let mut replay = Replay::default();
        replay.until(&mut raw, &["p1", "o1"]).await;
        assert!(
            everything
                .wait_for(Duration::from_secs(5), |l| l.len() == 2)
                .await
        );
        Followed {
            consumer,
            dis,
            everything,
            raw,
            replay,
            _registrations: vec![p1, o1],
        }
    }

    /// Asserts that the two Directories hold exactly `dis` and `all` now.
    pub fn assert_view(&self, dis: &[&str], all: &[&str]) {
        assert!(
            same_ids(&self.dis.instances(), dis),
            "directory lost its instances: {:?}",
            self.dis.instances()
        );
        assert!(
            same_ids(&self.everything.instances(), all),
            "every-service directory lost its instances: {:?}",
            self.everything.instances()
        );
    }

    /// During an outage of `secs` seconds: checks every second that the Directories keep their
    /// view (`p1`; `p1` and `o1`).
    pub async fn assert_view_kept_for(&self, secs: u64) {
        for _ in 0..secs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.assert_view(&["p1"], &["p1", "o1"]);
        }
        // The views are kept, but reported as stale: not synced, for most of the outage.
        for d in [&self.dis, &self.everything] {
            assert!(!d.is_synced(), "directory reports synced during the outage");
            let stale = d.stale_for().expect("stale_for during the outage");
            assert!(
                stale >= Duration::from_secs(secs / 2),
                "stale for only {stale:?} of a {secs}s outage"
            );
        }
    }

    /// Waits up to `timeout` for the Directories to hold exactly `dis` and `all`, then for the
    /// raw watch's replay to hold `all`; the consumer's discovery then agrees.
    pub async fn assert_caught_up(&mut self, dis: &[&str], all: &[&str], timeout: Duration) {
        for d in [&self.dis, &self.everything] {
            eventually(timeout, "directory synced again", || async {
                d.is_synced()
            })
            .await;
            assert_eq!(d.stale_for(), None);
        }
        assert!(
            self.dis.wait_for(timeout, |l| same_ids(l, dis)).await,
            "directory caught up with {dis:?}: {:?}",
            self.dis.instances()
        );
        assert!(
            self.everything
                .wait_for(timeout, |l| same_ids(l, all))
                .await,
            "every-service directory caught up with {all:?}: {:?}",
            self.everything.instances()
        );
        // The raw watch resumed (and re-listed) by itself: its events, each consistent with the
        // view so far, add up to the registry's content.
        self.replay.until(&mut self.raw, all).await;
        let consumer = &self.consumer;
        assert_eq!(
            consumer.discover(&Query::new("Dis")).await.unwrap().len(),
            dis.len()
        );
        assert_eq!(
            consumer.discover(&Query::all()).await.unwrap().len(),
            all.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The next event of `w` (within [`WAIT`]).
pub async fn next(w: &mut Watch) -> Event {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("watch event in time")
        .expect("watch open")
}

/// Asserts that `w` has no event for `quiet`.
pub async fn assert_quiet(w: &mut Watch, quiet: Duration, what: &str) {
    if let Ok(ev) = tokio::time::timeout(quiet, w.next()).await {
        panic!("{what}: unexpected {ev:?}");
    }
}

/// Calls `check` every 100 ms until it holds; fails after `timeout`. Returns the time it took.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The instance ids of `list`, in order.
pub fn ids(list: Vec<ServiceInstance>) -> Vec<String> {
    list.into_iter().map(|i| i.instance_id).collect()
}

/// Whether `list` holds exactly the instances `ids`.
pub fn same_ids(list: &[ServiceInstance], ids: &[&str]) -> bool {
    list.len() == ids.len()
        && ids
            .iter()
            .all(|id| list.iter().any(|i| i.instance_id == *id))
}

/// Registers `instances` concurrently, the k-th after k × `spacing`, and opens a watch of
/// `query` once about `watch_after` of them are done. Returns the registrations and that watch.
async fn register_with_watch_midway(
    reg: &Arc<dyn Registry>,
    instances: impl Iterator<Item = ServiceInstance>,
    spacing: Duration,
    watch_after: usize,
    query: &Query,
) -> (Vec<Registration>, Watch) {
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = instances
        .enumerate()
        .map(|(k, inst)| {
            let reg = reg.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let _counted = Counted(done);
                tokio::time::sleep(spacing * k as u32).await;
                reg.register(inst).await.unwrap()
            })
        })
        .collect();
    let start = Instant::now();
    while done.load(Ordering::SeqCst) < watch_after && start.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let watch = reg.watch(query).await.unwrap();
    let mut regs = Vec::new();
    for t in tasks {
        regs.push(t.await.unwrap());
    }
    (regs, watch)
}

/// Counts a finished registration task when dropped.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads `w` until `seen` holds `n` ids: every event must be an `Added` of a new id.
async fn added(w: &mut Watch, seen: &mut BTreeSet<String>, n: usize) {
    while seen.len() < n {
        match next(w).await {
            Event::Added(i) => assert!(
                seen.insert(i.instance_id.clone()),
                "duplicate Added {}",
                i.instance_id
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The ids of the next `n` events of `w`, which must be `Removed` events of distinct ids.
async fn removed(w: &mut Watch, n: usize) -> BTreeSet<String> {
    let mut removed = BTreeSet::new();
    while removed.len() < n {
        match next(w).await {
            Event::Removed(i) => assert!(
                removed.insert(i.instance_id.clone()),
                "duplicate Removed {}",
                i.instance_id
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    removed
}

/// The ids of `w`'s first event, which must be a snapshot.
async fn snapshot_ids(w: &mut Watch) -> BTreeSet<String> {
    match next(w).await {
        Event::Snapshot(list) => list.into_iter().map(|i| i.instance_id).collect(),
        other => panic!("first event must be a snapshot, got {other:?}"),
    }
}

/// A watch's events applied one by one, each checked against what came before (one snapshot
/// first, no duplicate `Added`, no `Updated` without a change, no unknown `Removed`).
#[derive(Default)]
pub struct Replay {
    snapshot: bool,
    view: BTreeMap<String, ServiceInstance>,
}

impl Replay {
    /// Applies `w`'s events until the view holds exactly `ids`; fails after 15 s.
    pub async fn until(&mut self, w: &mut Watch, ids: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !(self.snapshot && same_ids(&self.view.values().cloned().collect::<Vec<_>>(), ids)) {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = tokio::time::timeout(left, w.next())
                .await
                .unwrap_or_else(|_| panic!("watch view {:?} never became {ids:?}", self.view))
                .expect("watch open");
            match ev {
                Event::Snapshot(list) => {
                    assert!(!self.snapshot, "a second snapshot");
                    self.snapshot = true;
                    self.view = list.into_iter().map(|i| (i.path_key(), i)).collect();
                }
                _ if !self.snapshot => panic!("an event before the snapshot: {ev:?}"),
                Event::Added(i) => assert!(
                    self.view.insert(i.path_key(), i.clone()).is_none(),
                    "Added twice: {i:?}"
                ),
                Event::Updated(i) => {
                    let old = self.view.insert(i.path_key(), i.clone());
                    assert!(old.is_some_and(|o| o != i), "Updated, not changed: {i:?}");
                }
                Event::Removed(i) => assert!(
                    self.view.remove(&i.path_key()).is_some(),
                    "Removed unknown: {i:?}"
                ),
            }
        }
    }
}
