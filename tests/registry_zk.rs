//! getty-registry against a real ZooKeeper (`cargo test --features zookeeper --test registry_zk`).
//!
//! Needs the server from `scripts/servers.sh up` (or `GETTY_ZK=host:port`; the disruptive test
//! stops and restarts the script's server and so needs it). Fails (never skips) when ZooKeeper is
//! unreachable. Ordinary tests take a shared lock, the disruptive one takes it exclusively, and
//! every test uses its own root path.
#![cfg(feature = "zookeeper")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Stdio;
use std::time::{Duration, Instant};

use getty::registry::zk::{ZkRegistry, zookeeper_client};
use getty::registry::{Directory, Event, Query, Registry, ServiceInstance, Watch, connect};

/// Shared by ordinary tests, taken exclusively by the test that restarts the server.
static SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SERVER.read().await
}

async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    SERVER.write().await
}

fn zk_addr() -> String {
    std::env::var("GETTY_ZK").unwrap_or_else(|_| "127.0.0.1:21810".to_string())
}

/// Fails the test with a helpful message when ZooKeeper does not answer.
fn require_zk() -> String {
    let addr = zk_addr();
    let up = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|sa| TcpStream::connect_timeout(&sa, Duration::from_secs(2)).is_ok());
    assert!(
        up,
        "ZooKeeper is not reachable at {addr} (GETTY_ZK): run `scripts/servers.sh up` first"
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
    format!("zookeeper://{}{root}?ttl={ttl}", zk_addr())
}

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/servers.sh")
}

/// Runs ZooKeeper's own CLI (ZooKeeperMain, via `scripts/servers.sh zkcli`); returns stdout.
async fn zkcli(args: &[&str]) -> String {
    let out = tokio::process::Command::new("bash")
        .arg(script())
        .arg("zkcli")
        .args(args)
        .env("GETTY_ZK", zk_addr())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "zkcli {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Children of `path` as listed by the ZooKeeper CLI (`ls`): the last `[...]` line.
async fn cli_ls(path: &str) -> Vec<String> {
    let out = zkcli(&["ls", path]).await;
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .unwrap_or("[]");
    line.trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

async fn servers(cmd: &str) {
    let status = tokio::process::Command::new("bash")
        .arg(script())
        .arg(cmd)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "scripts/servers.sh {cmd} failed");
}

/// Direct client for checks that need node metadata (ephemeral owner).
async fn inspector() -> zookeeper_client::Client {
    zookeeper_client::Client::connect(&zk_addr()).await.unwrap()
}

async fn owner_of(client: &zookeeper_client::Client, path: &str) -> Option<i64> {
    client
        .check_stat(path)
        .await
        .unwrap()
        .map(|s| s.ephemeral_owner)
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

/// Child-process half of `killed_provider_disappears_within_session_timeout`.
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
async fn registration_visible_to_zkcli_and_deregistered() {
    let _g = shared().await;
    require_zk();
    let root = unique_root("visible");
    let reg = connect(&url(&root, 10)).await.unwrap();
    assert_eq!(reg.kind(), "zookeeper");
    let inst = ServiceInstance::new("Echo", "127.0.0.1:8000")
        .with_group("bj/1")
        .with_version("v1.0")
        .with_codec("protobuf")
        .with_instance_id("node:1");
    let r = reg.register(inst.clone()).await.unwrap();

    // Persistent parents, an ephemeral child with the JSON, as the CLI sees them.
    let dir = format!("{root}/Echo/bj%2F1/v1.0");
    assert_eq!(cli_ls(&format!("{root}/Echo")).await, ["bj%2F1"]);
    assert_eq!(cli_ls(&dir).await, ["node%3A1"]);
    let out = zkcli(&["get", &format!("{dir}/node%3A1")]).await;
    let json = out
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("node data printed");
    assert_eq!(serde_json::from_str::<ServiceInstance>(json).unwrap(), inst);
    let stat = zkcli(&["stat", &format!("{dir}/node%3A1")]).await;
    let owner = stat
        .lines()
        .find(|l| l.starts_with("ephemeralOwner"))
        .expect("stat output");
    assert!(!owner.ends_with("= 0x0"), "node must be ephemeral: {owner}");

    assert_eq!(
        reg.discover(&Query::new("Echo")).await.unwrap(),
        vec![inst.clone()]
    );

    // Explicit deregistration deletes the node at once; the directories stay.
    r.deregister().await.unwrap();
    assert!(cli_ls(&dir).await.is_empty());
    assert_eq!(cli_ls(&format!("{root}/Echo")).await, ["bj%2F1"]);

    // Deregister on drop.
    let r = reg.register(inst.clone()).await.unwrap();
    let zk = inspector().await;
    assert!(owner_of(&zk, &format!("{dir}/node%3A1")).await.is_some());
    drop(r);
    eventually(
        Duration::from_secs(3),
        "node removed after drop",
        || async { owner_of(&zk, &format!("{dir}/node%3A1")).await.is_none() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_provider_disappears_within_session_timeout() {
    let _g = shared().await;
    require_zk();
    let root = unique_root("killed");
    let ttl = 4;
    let mut child = spawn_provider(&url(&root, ttl), "victim");
    let path = format!("{root}/Killed/~/~/victim");
    let zk = inspector().await;
    assert!(owner_of(&zk, &path).await.is_some());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let took = eventually(
        Duration::from_secs(u64::from(ttl) + 4),
        "node of the killed provider expires",
        || async { owner_of(&zk, &path).await.is_none() },
    )
    .await;
    eprintln!("killed provider's node expired after {took:?} (session timeout {ttl}s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_burst_of_50() {
    let _g = shared().await;
    require_zk();
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
                    .with_version(if i % 2 == 0 { "v1" } else { "v2" })
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
    assert!(reg.discover(&q).await.unwrap().is_empty());
}

/// `Query::all()`: every service of the root, and nothing of registries rooted below or beside
/// it; a watch that sees new services join, change and leave; and a watcher created in the
/// middle of a burst over several new services that loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_services_discover_and_watch() {
    let _g = shared().await;
    require_zk();
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
    require_zk();
    let root = unique_root("filter");
    let reg = connect(&url(&root, 10)).await.unwrap();
    let mut a_v2 = reg
        .watch(&Query::new("Svc").with_group("A").with_version("v2"))
        .await
        .unwrap();
    let mut v1 = reg
        .watch(&Query::new("Svc").with_version("v1"))
        .await
        .unwrap();
    assert_eq!(next(&mut a_v2).await, Event::Snapshot(vec![]));
    assert_eq!(next(&mut v1).await, Event::Snapshot(vec![]));
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
    assert!(
        reg.discover(&Query::new("Nothing"))
            .await
            .unwrap()
            .is_empty()
    );

    match next(&mut a_v2).await {
        Event::Added(i) => assert_eq!(i.instance_id, "a2"),
        other => panic!("unexpected {other:?}"),
    }
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        match next(&mut v1).await {
            Event::Added(i) => got.insert(i.instance_id),
            other => panic!("unexpected {other:?}"),
        };
    }
    assert_eq!(got, BTreeSet::from(["a1".to_string(), "b1".to_string()]));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a_v2.next())
            .await
            .is_err()
    );

    // Update of a2's content: one Updated; its old handle then no longer owns the node.
    let a2 = regs.remove(1);
    let updated = a2.instance().clone().with_weight(3);
    let _a2b = reg.register(updated.clone()).await.unwrap();
    assert_eq!(next(&mut a_v2).await, Event::Updated(updated.clone()));
    // The superseded handle leaves the node (now the newer registration's) alone, and the two
    // registrations of one session do not fight over the node's data.
    a2.deregister().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), a_v2.next())
            .await
            .is_err(),
        "no flapping"
    );
    assert_eq!(
        reg.discover(&Query::new("Svc").with_group("A").with_version("v2"))
            .await
            .unwrap(),
        vec![updated]
    );
}

/// Forced session expiry, then a ZooKeeper outage longer than the session timeout, with live
/// registrations and Directories (of one service and of every service). Runs alone (exclusive
/// lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_session_expiry_and_outage() {
    let _g = exclusive().await;
    let addr = require_zk();
    let root = unique_root("disrupt");
    let ttl = 4u64;
    let provider = ZkRegistry::new(
        &addr,
        &root,
        Duration::from_secs(ttl),
        Duration::from_secs(10),
    );
    provider
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let consumer = connect(&url(&root, ttl as u32)).await.unwrap();
    let _p1 = provider
        .register(ServiceInstance::new("Dis", "10.0.0.1:1").with_instance_id("p1"))
        .await
        .unwrap();
    let path = format!("{root}/Dis/~/~/p1");
    let dir = Directory::new(consumer.clone(), Query::new("Dis"));
    assert!(dir.wait_for(Duration::from_secs(5), |l| l.len() == 1).await);
    let has = |ids: &[&str]| {
        let l = dir.instances();
        l.len() == ids.len() && ids.iter().all(|id| l.iter().any(|i| i.instance_id == *id))
    };
    // Every service (a watch on the root), through a Directory and a raw watch.
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
    let zk = inspector().await;
    let first_owner = owner_of(&zk, &path).await.unwrap();

    // 1. Expire the provider's session: attach a second client to it and close that client.
    let session = provider.session().expect("provider has a session");
    assert_eq!(session.id().0, first_owner);
    let mut attempt = 0;
    let hijack = loop {
        let r = zookeeper_client::Client::connector()
            .with_session(session.clone())
            .with_session_timeout(Duration::from_secs(ttl))
            .connect(&addr)
            .await;
        match r {
            Ok(client) => break client,
            Err(e) if attempt < 3 => {
                eprintln!("attaching to the provider's session failed ({e}); retrying");
                attempt += 1;
            }
            Err(e) => panic!("cannot attach to the provider's session: {e}"),
        }
    };
    drop(hijack); // closes the session on the server: the ephemeral node goes
    let took = eventually(
        Duration::from_secs(15),
        "p1 re-created by a new session",
        || async { owner_of(&zk, &path).await.is_some_and(|o| o != first_owner) },
    )
    .await;
    eprintln!("node re-created {took:?} after the session was closed");
    let second_owner = owner_of(&zk, &path).await.unwrap();
    assert_eq!(provider.session().unwrap().id().0, second_owner);
    assert!(dir.wait_for(Duration::from_secs(5), |_| has(&["p1"])).await);
    assert!(
        everything
            .wait_for(Duration::from_secs(5), |l| same_ids(l, &["p1", "o1"]))
            .await
    );

    // 2. ZooKeeper down for longer than the session timeout: both clients' sessions expire;
    //    the directory keeps its view; afterwards the node is back under a new session.
    servers("stop-zk").await;
    for _ in 0..(ttl + 3) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            has(&["p1"]),
            "directory lost its instances during the outage: {:?}",
            dir.instances()
        );
        assert!(all_has(&["p1", "o1"]), "{:?}", everything.instances());
    }
    servers("start-zk").await;
    let zk = inspector().await;
    eventually(
        Duration::from_secs(30),
        "p1 owned by a new session after the outage",
        || async {
            matches!(owner_of(&zk, &path).await, Some(o) if o != second_owner)
                && provider.session().is_some_and(|s| s.id().0 != second_owner)
        },
    )
    .await;
    // The old session's node must not come back to delete ours later: wait past its timeout.
    tokio::time::sleep(Duration::from_secs(ttl + 2)).await;
    let owner = owner_of(&zk, &path)
        .await
        .expect("p1 still registered after the old session expired");
    assert_eq!(Some(owner), provider.session().map(|s| s.id().0));

    // 3. The consumer catches up with new changes.
    let _p2 = provider
        .register(ServiceInstance::new("Dis", "10.0.0.2:1").with_instance_id("p2"))
        .await
        .unwrap();
    assert!(
        dir.wait_for(Duration::from_secs(15), |_| has(&["p1", "p2"]))
            .await,
        "caught up: {:?}",
        dir.instances()
    );
    assert!(
        everything
            .wait_for(Duration::from_secs(15), |l| same_ids(
                l,
                &["p1", "p2", "o1"]
            ))
            .await,
        "every service caught up: {:?}",
        everything.instances()
    );
    replay.until(&mut raw, &["p1", "p2", "o1"]).await;
    drop(_p2);
    assert!(
        dir.wait_for(Duration::from_secs(10), |_| has(&["p1"]))
            .await,
        "removal seen: {:?}",
        dir.instances()
    );
    // The raw watch on the root re-armed and re-listed by itself across both lost sessions: its
    // events, each consistent with the view so far, add up to the registry's content.
    replay.until(&mut raw, &["p1", "o1"]).await;
    assert!(
        everything
            .wait_for(Duration::from_secs(10), |l| same_ids(l, &["p1", "o1"]))
            .await
    );
    assert_eq!(consumer.discover(&Query::all()).await.unwrap().len(), 2);
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
async fn several_addresses_with_a_dead_one() {
    let _g = shared().await;
    let addr = require_zk();
    let root = unique_root("multi");
    // A dead address first: the client must keep trying until the live one answers.
    let reg = connect(&format!("zookeeper://127.0.0.1:1,{addr}{root}?ttl=4"))
        .await
        .unwrap();
    let r = reg
        .register(ServiceInstance::new("Multi", "h:1").with_instance_id("m"))
        .await
        .unwrap();
    assert_eq!(
        reg.discover(&Query::new("Multi")).await.unwrap(),
        vec![r.instance().clone()]
    );
}
