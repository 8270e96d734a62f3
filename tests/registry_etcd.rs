//! getty-registry against a real etcd (`cargo test --features etcd --test registry_etcd`).
//!
//! Needs the server from `scripts/servers.sh up` (or `GETTY_ETCD=host:port`; the disruptive test
//! restarts the script's server and so needs it). Fails (never skips) when etcd is unreachable.
//! Tests of one binary share the server: ordinary tests take a shared lock, the one that
//! restarts/stops/wipes etcd takes it exclusively, and every test uses its own root prefix.
#![cfg(feature = "etcd")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Stdio;
use std::time::{Duration, Instant};

use getty::registry::{Directory, Event, Query, ServiceInstance, Watch, connect};

/// Shared by ordinary tests, taken exclusively by the test that restarts the server.
static SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SERVER.read().await
}

async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    SERVER.write().await
}

fn etcd_addr() -> String {
    std::env::var("GETTY_ETCD").unwrap_or_else(|_| "127.0.0.1:23790".to_string())
}

/// Fails the test with a helpful message when etcd does not answer.
fn require_etcd() -> String {
    let addr = etcd_addr();
    let up = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|sa| TcpStream::connect_timeout(&sa, Duration::from_secs(2)).is_ok());
    assert!(
        up,
        "etcd is not reachable at {addr} (GETTY_ETCD): run `scripts/servers.sh up` first"
    );
    addr
}

fn unique_root(name: &str) -> String {
    format!(
        "/getty-it/{name}-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

fn url(root: &str, ttl: u32) -> String {
    format!("etcd://{}{root}?ttl={ttl}", etcd_addr())
}

async fn etcdctl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{}", etcd_addr()))
        .args(args)
        .output()
        .await
        .expect("etcdctl runs (`scripts/servers.sh up` installs it)");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Keys under `prefix` as etcdctl sees them.
async fn keys(prefix: &str) -> Vec<String> {
    etcdctl(&["get", "--prefix", "--keys-only", prefix])
        .await
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The lease id attached to `key` (None if the key does not exist).
async fn lease_of(key: &str) -> Option<i64> {
    let json: serde_json::Value =
        serde_json::from_str(&etcdctl(&["get", key, "-w", "json"]).await).unwrap();
    json["kvs"]
        .as_array()
        .and_then(|kvs| kvs.first())
        .map(|kv| kv["lease"].as_i64().unwrap())
}

async fn servers(cmd: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/servers.sh");
    let status = tokio::process::Command::new("bash")
        .arg(script)
        .arg(cmd)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "scripts/servers.sh {cmd} failed");
}

async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
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

async fn next(w: &mut Watch) -> Event {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event in time")
        .expect("watch open")
}

/// Child-process half of `killed_provider_disappears_within_ttl`: registers and waits to be
/// SIGKILLed. A no-op when run as an ordinary test.
#[test]
fn child_provider() {
    let (Ok(url), Ok(id)) = (
        std::env::var("GETTY_CHILD_URL"),
        std::env::var("GETTY_CHILD_ID"),
    ) else {
        return;
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let reg = connect(&url).await.unwrap();
        let r = reg
            .register(ServiceInstance::new("Killed", "127.0.0.1:1").with_instance_id(id))
            .await
            .unwrap();
        println!("CHILD-READY");
        std::io::stdout().flush().unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(r);
    });
}

/// Runs `child_provider` in a new process of this test binary; returns once it has registered.
fn spawn_provider(url: &str, id: &str) -> std::process::Child {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_provider",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GETTY_CHILD_URL", url)
        .env("GETTY_CHILD_ID", id)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("CHILD-READY") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        panic!("child provider did not register within 30 s");
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_visible_to_etcdctl_and_deregistered() {
    let _g = shared().await;
    require_etcd();
    let root = unique_root("visible");
    let reg = connect(&url(&root, 10)).await.unwrap();
    assert_eq!(reg.kind(), "etcd");
    let inst = ServiceInstance::new("Echo Svc", "127.0.0.1:8000")
        .with_group("bj/1")
        .with_version("v1.0")
        .with_codec("json")
        .with_metadata("zone", "a")
        .with_instance_id("node-1");
    let r = reg.register(inst.clone()).await.unwrap();

    // Exact escaped key, JSON value, attached to a lease.
    let key = format!("{root}/Echo%20Svc/bj%2F1/v1.0/node-1");
    assert_eq!(keys(&format!("{root}/")).await, vec![key.clone()]);
    let value = etcdctl(&["get", &key, "--print-value-only"]).await;
    let stored: ServiceInstance = serde_json::from_str(value.trim()).unwrap();
    assert_eq!(stored, inst);
    assert!(
        lease_of(&key).await.unwrap() != 0,
        "key must be attached to a lease"
    );

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

    // Explicit deregistration removes the key at once (not after the TTL).
    r.deregister().await.unwrap();
    assert!(keys(&format!("{root}/")).await.is_empty());

    // Deregister on drop (in the background, promptly).
    let r = reg.register(inst.clone()).await.unwrap();
    assert_eq!(keys(&format!("{root}/")).await.len(), 1);
    drop(r);
    eventually(Duration::from_secs(3), "key removed after drop", || async {
        keys(&format!("{root}/")).await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_provider_disappears_within_ttl() {
    let _g = shared().await;
    require_etcd();
    let root = unique_root("killed");
    let ttl = 2;
    let mut child = spawn_provider(&url(&root, ttl), "victim");
    let key = format!("{root}/Killed/~/~/victim");
    assert_eq!(keys(&format!("{root}/")).await, vec![key.clone()]);
    child.kill().unwrap(); // SIGKILL: no chance to deregister
    child.wait().unwrap();
    let took = eventually(
        Duration::from_secs(u64::from(ttl) + 4),
        "key of the killed provider expires",
        || async { keys(&format!("{root}/")).await.is_empty() },
    )
    .await;
    eprintln!("killed provider's key expired after {took:?} (ttl {ttl}s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_lease_is_replaced() {
    let _g = shared().await;
    require_etcd();
    let root = unique_root("revoke");
    let reg = connect(&url(&root, 5)).await.unwrap();
    let _r = reg
        .register(ServiceInstance::new("Svc", "h:1").with_instance_id("p"))
        .await
        .unwrap();
    let key = format!("{root}/Svc/~/~/p");
    let lease = lease_of(&key).await.unwrap();
    etcdctl(&["lease", "revoke", &format!("{lease:x}")]).await;
    // The key went with the lease; the keeper notices and registers again under a new lease.
    eventually(
        Duration::from_secs(8),
        "key back under a new lease",
        || async { lease_of(&key).await.is_some_and(|l| l != lease) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_burst_of_50() {
    let _g = shared().await;
    require_etcd();
    let root = unique_root("burst");
    let reg = connect(&url(&root, 10)).await.unwrap();
    let q = Query::new("Burst");
    let mut early = reg.watch(&q).await.unwrap();
    assert_eq!(next(&mut early).await, Event::Snapshot(vec![]));

    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let reg = reg.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let _counted = Counted(done);
            // Spread over ~100 ms so that the late watcher below starts mid-burst.
            tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
            reg.register(
                ServiceInstance::new("Burst", format!("10.0.0.1:{}", 1000 + i))
                    .with_instance_id(format!("n{i:02}")),
            )
            .await
            .unwrap()
        }));
    }
    // A second watcher created while the registrations are landing (after about 20 of them).
    let start = std::time::Instant::now();
    while done.load(std::sync::atomic::Ordering::SeqCst) < 20
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut late = reg.watch(&q).await.unwrap();
    let mut regs = Vec::new();
    for t in tasks {
        regs.push(t.await.unwrap());
    }
    let want: BTreeSet<String> = (0..50).map(|i| format!("n{i:02}")).collect();

    let mut seen = BTreeSet::new();
    while seen.len() < 50 {
        match next(&mut early).await {
            Event::Added(i) => assert!(
                seen.insert(i.instance_id.clone()),
                "duplicate Added {}",
                i.instance_id
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, want);

    let mut late_seen = BTreeSet::new();
    match next(&mut late).await {
        Event::Snapshot(list) => late_seen.extend(list.into_iter().map(|i| i.instance_id)),
        other => panic!("first event must be a snapshot, got {other:?}"),
    }
    eprintln!("late watcher's snapshot had {} of 50", late_seen.len());
    while late_seen.len() < 50 {
        match next(&mut late).await {
            Event::Added(i) => assert!(
                late_seen.insert(i.instance_id.clone()),
                "duplicate {}",
                i.instance_id
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(late_seen, want);
    assert_eq!(keys(&format!("{root}/")).await.len(), 50);

    // And 50 concurrent deregistrations: 50 Removed.
    let tasks: Vec<_> = regs
        .into_iter()
        .map(|r| tokio::spawn(r.deregister()))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut removed = BTreeSet::new();
    while removed.len() < 50 {
        match next(&mut early).await {
            Event::Removed(i) => assert!(removed.insert(i.instance_id.clone())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), early.next())
            .await
            .is_err(),
        "no extra events"
    );
    assert!(keys(&format!("{root}/")).await.is_empty());
}

/// `Query::all()`: every service of the root, and nothing of registries rooted below or beside
/// it; a watch that sees new services join, change and leave; and a watcher created in the
/// middle of a burst over several new services that loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_services_discover_and_watch() {
    let _g = shared().await;
    require_etcd();
    let root = unique_root("all");
    let reg = connect(&url(&root, 10)).await.unwrap();
    // Nothing exists under the root yet.
    assert!(reg.discover(&Query::all()).await.unwrap().is_empty());
    let mut early = reg.watch(&Query::all()).await.unwrap();
    assert_eq!(next(&mut early).await, Event::Snapshot(vec![]));

    // Registries rooted below and beside ours are not part of it.
    let nested = connect(&url(&format!("{root}/nested"), 10)).await.unwrap();
    let _n = nested
        .register(ServiceInstance::new("Nested", "10.9.9.9:1").with_instance_id("n1"))
        .await
        .unwrap();
    let beside = connect(&url(&format!("{root}-beside"), 10)).await.unwrap();
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
    }
    let ids = |l: Vec<ServiceInstance>| l.into_iter().map(|i| i.instance_id).collect::<Vec<_>>();
    // Sorted by path key: service, group, version, instance id.
    assert_eq!(
        ids(reg.discover(&Query::all()).await.unwrap()),
        ["a1", "b1", "b2"]
    );
    assert_eq!(
        ids(reg.discover(&Query::all().with_group("g1")).await.unwrap()),
        ["a1"]
    );
    assert_eq!(
        ids(reg
            .discover(&Query::all().with_version("v2"))
            .await
            .unwrap()),
        ["b2"]
    );
    assert_eq!(
        ids(reg.discover(&Query::new("b.Beta")).await.unwrap()),
        ["b1", "b2"]
    );
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        match next(&mut early).await {
            Event::Added(i) => assert!(got.insert(i.instance_id.clone()), "duplicate {i:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, BTreeSet::from(["a1", "b1", "b2"].map(String::from)));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), early.next())
            .await
            .is_err(),
        "nothing of the nested or neighbouring registry"
    );
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
    }

    // 30 registrations over 3 new services; a watcher created after about 10 of them.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..30 {
        let reg = reg.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let _counted = Counted(done);
            tokio::time::sleep(Duration::from_millis(3 * i as u64)).await;
            reg.register(
                ServiceInstance::new(format!("burst.S{}", i % 3), format!("10.0.1.1:{i}"))
                    .with_instance_id(format!("d{i:02}")),
            )
            .await
            .unwrap()
        }));
    }
    let start = Instant::now();
    while done.load(std::sync::atomic::Ordering::SeqCst) < 10
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut mid = reg.watch(&Query::all()).await.unwrap();
    for t in tasks {
        regs.push(t.await.unwrap());
    }
    let burst: BTreeSet<String> = (0..30).map(|i| format!("d{i:02}")).collect();
    let mut seen = BTreeSet::new();
    while seen.len() < 30 {
        match next(&mut early).await {
            Event::Added(i) => assert!(seen.insert(i.instance_id.clone()), "duplicate {i:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, burst);
    let mut mid_seen = BTreeSet::new();
    match next(&mut mid).await {
        Event::Snapshot(list) => mid_seen.extend(list.into_iter().map(|i| i.instance_id)),
        other => panic!("first event must be a snapshot, got {other:?}"),
    }
    eprintln!("mid-burst snapshot had {} of 33", mid_seen.len());
    while mid_seen.len() < 33 {
        match next(&mut mid).await {
            Event::Added(i) => assert!(mid_seen.insert(i.instance_id.clone()), "duplicate {i:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut want = burst;
    want.extend(["a1", "b1", "b2"].map(String::from));
    assert_eq!(mid_seen, want);
    assert_eq!(reg.discover(&Query::all()).await.unwrap().len(), 33);
    assert_eq!(
        reg.discover(&Query::new("burst.S1")).await.unwrap().len(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_watch_filtered_by_group_and_version() {
    let _g = shared().await;
    require_etcd();
    let root = unique_root("filter");
    let reg = connect(&url(&root, 10)).await.unwrap();
    let mut group_a = reg.watch(&Query::new("Svc").with_group("A")).await.unwrap();
    assert_eq!(next(&mut group_a).await, Event::Snapshot(vec![]));
    let mut regs = Vec::new();
    for (g, v, id) in [("A", "v1", "a1"), ("A", "v2", "a2"), ("B", "v1", "b1")] {
        let inst = ServiceInstance::new("Svc", format!("{id}:1"))
            .with_group(g)
            .with_version(v)
            .with_instance_id(id);
        regs.push(reg.register(inst).await.unwrap());
    }
    let ids = |l: Vec<ServiceInstance>| l.into_iter().map(|i| i.instance_id).collect::<Vec<_>>();
    assert_eq!(
        ids(reg.discover(&Query::new("Svc")).await.unwrap()),
        ["a1", "a2", "b1"]
    );
    assert_eq!(
        ids(reg
            .discover(&Query::new("Svc").with_group("A"))
            .await
            .unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(
        ids(reg
            .discover(&Query::new("Svc").with_version("v1"))
            .await
            .unwrap()),
        ["a1", "b1"]
    );
    assert_eq!(
        ids(reg
            .discover(&Query::new("Svc").with_group("A").with_version("v2"))
            .await
            .unwrap()),
        ["a2"]
    );
    let mut got = Vec::new();
    for _ in 0..2 {
        match next(&mut group_a).await {
            Event::Added(i) => got.push(i.instance_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, ["a1", "a2"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), group_a.next())
            .await
            .is_err(),
        "group B not seen"
    );

    // Updates: re-registering a1 with another weight is one Updated event.
    let a1 = regs.remove(0);
    let updated = a1.instance().clone().with_weight(1);
    let _a1b = reg.register(updated.clone()).await.unwrap();
    assert_eq!(next(&mut group_a).await, Event::Updated(updated.clone()));
    // The old handle no longer owns the key (it moved to the new lease): deregistering it
    // leaves the new registration alone.
    a1.deregister().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), group_a.next())
            .await
            .is_err()
    );
    assert!(
        reg.discover(&Query::new("Svc").with_group("A"))
            .await
            .unwrap()
            .contains(&updated)
    );
}

/// Restart, 10-second outage and total data loss of etcd, with live registrations and
/// Directories (of one service and of every service) on another client. Runs alone (exclusive
/// lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_restart_outage_and_data_loss() {
    let _g = exclusive().await;
    require_etcd();
    let root = unique_root("disrupt");
    let ttl = 3u64;
    let provider = connect(&url(&root, ttl as u32)).await.unwrap();
    let consumer = connect(&url(&root, ttl as u32)).await.unwrap();
    let q = Query::new("Dis");
    let _p1 = provider
        .register(ServiceInstance::new("Dis", "10.0.0.1:1").with_instance_id("p1"))
        .await
        .unwrap();
    let key1 = format!("{root}/Dis/~/~/p1");
    let dir = Directory::new(consumer.clone(), q.clone());
    assert!(dir.wait_for(Duration::from_secs(5), |l| l.len() == 1).await);
    let has = |ids: &[&str]| {
        let l = dir.instances();
        l.len() == ids.len() && ids.iter().all(|id| l.iter().any(|i| i.instance_id == *id))
    };
    // Every service, through a Directory and a raw watch: they must follow all the same.
    let _o1 = provider
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
    let all_has = |ids: &[&str]| same_ids(&everything.instances(), ids);

    // 1. Restart (data kept): the keep-alive resumes, so the key outlives its TTL afterwards.
    servers("restart-etcd").await;
    eventually(
        Duration::from_secs(10),
        "p1 present after restart",
        || async { lease_of(&key1).await.is_some() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(ttl + 2)).await;
    assert!(
        lease_of(&key1).await.is_some(),
        "p1 expired after the restart: keep-alive not resumed"
    );
    assert!(has(&["p1"]));
    assert!(all_has(&["p1", "o1"]));

    // 2. A 10-second outage: the directory keeps its view throughout, then catches up.
    servers("stop-etcd").await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            has(&["p1"]),
            "directory lost its instances during the outage: {:?}",
            dir.instances()
        );
        assert!(all_has(&["p1", "o1"]), "{:?}", everything.instances());
    }
    servers("start-etcd").await;
    let _p2 = provider
        .register(ServiceInstance::new("Dis", "10.0.0.2:1").with_instance_id("p2"))
        .await
        .unwrap();
    assert!(
        dir.wait_for(Duration::from_secs(10), |_| has(&["p1", "p2"]))
            .await,
        "directory caught up: {:?}",
        dir.instances()
    );
    assert!(
        everything
            .wait_for(Duration::from_secs(10), |l| same_ids(
                l,
                &["p1", "p2", "o1"]
            ))
            .await,
        "every-service directory caught up: {:?}",
        everything.instances()
    );
    replay.until(&mut raw, &["p1", "p2", "o1"]).await;
    tokio::time::sleep(Duration::from_secs(ttl + 2)).await;
    assert!(
        lease_of(&key1).await.is_some(),
        "p1 expired after the outage: keep-alive not resumed"
    );
    drop(_p2);
    assert!(
        dir.wait_for(Duration::from_secs(10), |_| has(&["p1"]))
            .await,
        "removal seen: {:?}",
        dir.instances()
    );
    replay.until(&mut raw, &["p1", "o1"]).await;

    // 3. Total data loss (etcd restarted empty): the keeper registers p1 again under a new lease,
    //    and the watch notices the revision going backwards, re-lists and follows new changes.
    servers("wipe-etcd").await;
    eventually(
        Duration::from_secs(15),
        "p1 restored into the empty etcd",
        || async { lease_of(&key1).await.is_some() },
    )
    .await;
    let _p3 = provider
        .register(ServiceInstance::new("Dis", "10.0.0.3:1").with_instance_id("p3"))
        .await
        .unwrap();
    assert!(
        dir.wait_for(Duration::from_secs(10), |_| has(&["p1", "p3"]))
            .await,
        "after data loss: {:?}",
        dir.instances()
    );
    assert_eq!(consumer.discover(&q).await.unwrap().len(), 2);
    assert!(
        everything
            .wait_for(Duration::from_secs(10), |l| same_ids(
                l,
                &["p1", "p3", "o1"]
            ))
            .await,
        "every service after data loss: {:?}",
        everything.instances()
    );
    assert_eq!(consumer.discover(&Query::all()).await.unwrap().len(), 3);
    // The raw watch resumed (and re-listed) by itself: its events, each consistent with the
    // view so far (no duplicate Added, no unknown Removed), add up to the registry's content.
    replay.until(&mut raw, &["p1", "p3", "o1"]).await;
}

/// Whether `list` holds exactly the instances `ids`.
fn same_ids(list: &[ServiceInstance], ids: &[&str]) -> bool {
    list.len() == ids.len()
        && ids
            .iter()
            .all(|id| list.iter().any(|i| i.instance_id == *id))
}

/// A watch's events applied one by one, each checked against what came before (one snapshot
/// first, no duplicate `Added`, no `Updated` without a change, no unknown `Removed`).
#[derive(Default)]
struct Replay {
    snapshot: bool,
    view: BTreeMap<String, ServiceInstance>,
}

impl Replay {
    /// Applies `w`'s events until the view holds exactly `ids`; fails after 15 s.
    async fn until(&mut self, w: &mut Watch, ids: &[&str]) {
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

/// Counts a finished registration task when dropped.
struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_with_a_dead_one() {
    let _g = shared().await;
    let addr = require_etcd();
    let root = unique_root("multi");
    let reg = connect(&format!("etcd://127.0.0.1:1,{addr}{root}?ttl=5"))
        .await
        .unwrap();
    for i in 0..5 {
        let r = reg
            .register(ServiceInstance::new("Multi", "h:1").with_instance_id(format!("m{i}")))
            .await
            .unwrap();
        assert!(
            reg.discover(&Query::new("Multi"))
                .await
                .unwrap()
                .contains(r.instance())
        );
        r.deregister().await.unwrap();
    }
}
