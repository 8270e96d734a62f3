//! getty-registry against a real ZooKeeper (`cargo test --features zookeeper --test registry_zk`).
//!
//! Needs the server from `scripts/servers.sh up` (or `GETTY_ZK=host:port`; the disruptive test
//! stops and restarts the script's server and so needs it). Fails (never skips) when ZooKeeper is
//! unreachable. Ordinary tests take a shared lock, the disruptive one takes it exclusively, and
//! every test uses its own root path.
//!
//! The scenarios shared with the other backends are in `registry_scenarios`; this file has the
//! ZooKeeper hooks (its CLI, a raw client), thin wrappers and the ZooKeeper-only test (session
//! expiry and outage).
#![cfg(feature = "zookeeper")]

mod registry_scenarios;

use std::process::Stdio;
use std::time::{Duration, Instant};

use getty::registry::zk::{ZkOptions, ZkRegistry, zookeeper_client};
use getty::registry::{Credentials, Event, Query, Registry, ServiceInstance, connect};
use registry_scenarios::server::{self, exclusive, servers, shared, unique_root};
use registry_scenarios::{self as scenarios, Backend, Followed, eventually};

fn zk_addr() -> String {
    server::addr("GETTY_ZK", "127.0.0.1:21810")
}

/// ZooKeeper, once it answers (fails the test with a hint to run `scripts/servers.sh up`
/// otherwise), with a raw client for checks that need node metadata.
struct Zk {
    client: zookeeper_client::Client,
}

impl Zk {
    async fn require() -> Zk {
        server::require("ZooKeeper", "GETTY_ZK", zk_addr());
        Zk {
            client: inspector().await,
        }
    }
}

impl Backend for Zk {
    const KIND: &'static str = "zookeeper";

    fn url(&self, root: &str, ttl: u32) -> String {
        format!("zookeeper://{}{root}?ttl={ttl}", zk_addr())
    }

    /// The nodes four levels below `root` (`service/group/version/instance`).
    async fn stored(&self, root: &str) -> usize {
        let mut level = vec![root.to_string()];
        for _ in 0..4 {
            let mut below = Vec::new();
            for dir in &level {
                match self.client.list_children(dir).await {
                    Ok(children) => below.extend(children.iter().map(|c| format!("{dir}/{c}"))),
                    Err(zookeeper_client::Error::NoNode) => {}
                    Err(e) => panic!("listing {dir}: {e}"),
                }
            }
            level = below;
        }
        level.len()
    }

    /// Persistent parents and an ephemeral child holding the JSON, as the CLI sees them.
    async fn assert_stored(&self, root: &str, inst: &ServiceInstance) {
        let (service_dir, group, dir, id) = cli_paths(root, inst);
        assert_eq!(cli_ls(&service_dir).await, [group]);
        assert_eq!(cli_ls(&dir).await, [id.as_str()]);
        let out = zkcli(&["get", &format!("{dir}/{id}")]).await;
        let json = out
            .lines()
            .find(|l| l.starts_with('{'))
            .expect("node data printed");
        assert_eq!(
            &serde_json::from_str::<ServiceInstance>(json).unwrap(),
            inst
        );
        let stat = zkcli(&["stat", &format!("{dir}/{id}")]).await;
        let owner = stat
            .lines()
            .find(|l| l.starts_with("ephemeralOwner"))
            .expect("stat output");
        assert!(!owner.ends_with("= 0x0"), "node must be ephemeral: {owner}");
        assert_eq!(self.stored(root).await, 1);
    }

    /// The node is deleted (its container parents go too, soon after: see
    /// `empty_parents_are_removed`).
    async fn assert_deregistered(&self, root: &str, inst: &ServiceInstance) {
        let (_, _, dir, _) = cli_paths(root, inst);
        match self.client.list_children(&dir).await {
            Ok(children) => assert!(children.is_empty(), "{dir}: {children:?}"),
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => panic!("listing {dir}: {e}"),
        }
    }
}

/// Where `inst` lives below `root`: its service's directory, its (escaped) group, the directory
/// of its group and version, and its node's (escaped) name.
fn cli_paths(root: &str, inst: &ServiceInstance) -> (String, String, String, String) {
    let key = inst.path_key();
    let [service, group, version, id] = key.split('/').collect::<Vec<_>>()[..] else {
        panic!("path key {key}");
    };
    (
        format!("{root}/{service}"),
        group.to_string(),
        format!("{root}/{service}/{group}/{version}"),
        id.to_string(),
    )
}

/// Runs ZooKeeper's own CLI (ZooKeeperMain, via `scripts/servers.sh zkcli`); returns stdout.
async fn zkcli(args: &[&str]) -> String {
    let out = tokio::process::Command::new("bash")
        .arg(server::SCRIPT)
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

/// Child-process half of `killed_provider_disappears_within_session_timeout`.
#[test]
fn child_provider() {
    server::run_child_provider();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_visible_to_zkcli_and_deregistered() {
    let _g = shared().await;
    let zk = Zk::require().await;
    scenarios::registration_stored_and_deregistered(&zk, &unique_root("visible")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_provider_disappears_within_session_timeout() {
    let _g = shared().await;
    let zk = Zk::require().await;
    scenarios::killed_provider_disappears(&zk, &unique_root("killed"), 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_burst_of_50() {
    let _g = shared().await;
    let zk = Zk::require().await;
    scenarios::watch_sees_burst_of_50(&zk, &unique_root("burst")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_services_discover_and_watch() {
    let _g = shared().await;
    let zk = Zk::require().await;
    scenarios::all_services_discover_and_watch(&zk, &unique_root("all")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_watch_filtered_by_group_and_version() {
    let _g = shared().await;
    let zk = Zk::require().await;
    scenarios::discovery_and_watch_filtered_by_group_and_version(&zk, &unique_root("filter")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_addresses_with_a_dead_one() {
    let _g = shared().await;
    let addr = server::require("ZooKeeper", "GETTY_ZK", zk_addr());
    let root = unique_root("multi");
    // A dead address first: the client must keep trying until the live one answers.
    let url = format!("zookeeper://127.0.0.1:1,{addr}{root}?ttl=4");
    scenarios::several_addresses_with_a_dead_one(&url).await;
}

/// Forced session expiry, then a ZooKeeper outage longer than the session timeout, with live
/// registrations and Directories (of one service and of every service). Runs alone (exclusive
/// lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_session_expiry_and_outage() {
    let _g = exclusive().await;
    let zk = Zk::require().await;
    let addr = zk_addr();
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
    let consumer = connect(&zk.url(&root, ttl as u32)).await.unwrap();
    let mut followed = Followed::start(&provider, consumer).await;
    let path = format!("{root}/Dis/~/~/p1");
    let first_owner = owner_of(&zk.client, &path).await.unwrap();

    // 1. Expire the provider's session: attach a second client to it and close that client.
    //    The provider's own client may win the session back before the close lands (ZooKeeper
    //    moves a session to whichever connection attached last), so a round that leaves the
    //    node with its first owner is tried again.
    let session = provider.session().expect("provider has a session");
    assert_eq!(session.id().0, first_owner);
    let mut took = None;
    for round in 1..=6 {
        let r = zookeeper_client::Client::connector()
            .with_session(session.clone())
            .with_session_timeout(Duration::from_secs(ttl))
            .with_connection_timeout(Duration::from_secs(10))
            .connect(&addr)
            .await;
        let hijack = match r {
            Ok(client) => client,
            Err(e) => {
                eprintln!("round {round}: attaching to the provider's session failed ({e})");
                continue;
            }
        };
        drop(hijack); // closes the session on the server: the ephemeral node goes
        let start = Instant::now();
        let recreated = tokio::time::timeout(Duration::from_secs(8), async {
            while owner_of(&zk.client, &path)
                .await
                .is_none_or(|o| o == first_owner)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if recreated.is_ok() {
            took = Some(start.elapsed());
            break;
        }
        eprintln!("round {round}: the session survived the hijack; again");
    }
    let took =
        took.expect("p1 re-created by a new session after the provider's session was closed");
    eprintln!("node re-created {took:?} after the session was closed");
    let second_owner = owner_of(&zk.client, &path).await.unwrap();
    assert_eq!(provider.session().unwrap().id().0, second_owner);
    followed
        .assert_caught_up(&["p1"], &["p1", "o1"], Duration::from_secs(5))
        .await;

    // 2. ZooKeeper down for longer than the session timeout: both clients' sessions expire;
    //    the directories keep their view; afterwards the node is back under a new session.
    servers("stop-zk").await;
    followed.assert_view_kept_for(ttl + 3).await;
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

    // 3. The consumer catches up with new changes; its raw watch on the root re-armed and
    //    re-listed by itself across both lost sessions.
    let p2 = provider
        .register(ServiceInstance::new("Dis", "10.0.0.2:1").with_instance_id("p2"))
        .await
        .unwrap();
    followed
        .assert_caught_up(&["p1", "p2"], &["p1", "p2", "o1"], Duration::from_secs(15))
        .await;
    drop(p2);
    followed
        .assert_caught_up(&["p1"], &["p1", "o1"], Duration::from_secs(10))
        .await;
}

/// Parents are container nodes: once the last instance of a service is gone, the server removes
/// its group/version and service nodes (`scripts/servers.sh` sets the container check interval
/// to 1 s; ZooKeeper's default is 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_parents_are_removed() {
    let _g = shared().await;
    let zk = Zk::require().await;
    let root = unique_root("containers");
    let reg = connect(&zk.url(&root, 10)).await.unwrap();
    let r = reg
        .register(ServiceInstance::new("Gone", "h:1").with_instance_id("p"))
        .await
        .unwrap();
    let service = format!("{root}/Gone");
    let stat = zk.client.check_stat(&service).await.unwrap().unwrap();
    assert_eq!(stat.ephemeral_owner, 0);
    r.deregister().await.unwrap();
    let took = eventually(
        Duration::from_secs(10),
        "empty service node removed",
        || async { zk.client.check_stat(&service).await.unwrap().is_none() },
    )
    .await;
    eprintln!("empty parents removed after {took:?}");
    // Registering again re-creates them.
    let _r = reg
        .register(ServiceInstance::new("Gone", "h:1").with_instance_id("p"))
        .await
        .unwrap();
    assert_eq!(reg.discover(&Query::new("Gone")).await.unwrap().len(), 1);
}

/// A node left by another session (as after our own session expired) is replaced in one
/// multi-op: a watcher sees one `Updated`, never the instance leaving and coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_foreign_node_is_not_a_removal() {
    let _g = shared().await;
    let zk = Zk::require().await;
    let root = unique_root("replace");
    let old = ServiceInstance::new("Rep", "10.0.0.1:1")
        .with_instance_id("p")
        .with_weight(1);
    let path = format!("{root}/{}", old.path_key());
    // The stale node: an ephemeral node of another session, holding an older version.
    let other = inspector().await;
    let dir_opts =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    other
        .mkdir(&path[..path.rfind('/').unwrap()], &dir_opts)
        .await
        .unwrap();
    let node_opts =
        zookeeper_client::CreateMode::Ephemeral.with_acls(zookeeper_client::Acls::anyone_all());
    other
        .create(&path, &serde_json::to_vec(&old).unwrap(), &node_opts)
        .await
        .unwrap();

    let reg = connect(&zk.url(&root, 10)).await.unwrap();
    let mut watch = reg.watch(&Query::new("Rep")).await.unwrap();
    assert_eq!(
        scenarios::next(&mut watch).await,
        Event::Snapshot(vec![old.clone()])
    );
    let new = old.clone().with_weight(2);
    let _r = reg.register(new.clone()).await.unwrap();
    assert_eq!(
        scenarios::next(&mut watch).await,
        Event::Updated(new.clone())
    );
    scenarios::assert_quiet(&mut watch, Duration::from_millis(700), "no removal").await;
    assert_ne!(
        owner_of(&zk.client, &path).await,
        Some(other.session_id().0),
        "node now belongs to the registry's session"
    );
}

/// Digest auth with ACLs: nodes registered by an identity can be changed by it only; everyone
/// can read them; an unauthenticated client (or another identity) can neither rewrite nor
/// delete them, nor register beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_acls_protect_registrations() {
    let _g = shared().await;
    let zk = Zk::require().await;
    let addr = zk_addr();
    let root = unique_root("digest");
    let alice = ZkRegistry::with_options(
        ZkOptions::new(&addr)
            .root(&root)
            .digest(Credentials::new("alice", "alice-pw")),
    );
    let inst = ServiceInstance::new("Sec", "10.0.0.1:1").with_instance_id("a1");
    let _r = alice.register(inst.clone()).await.unwrap();
    let path = format!("{root}/{}", inst.path_key());

    // Anyone can read.
    let anonymous = connect(&zk.url(&root, 10)).await.unwrap();
    assert_eq!(
        anonymous.discover(&Query::new("Sec")).await.unwrap(),
        vec![inst.clone()]
    );
    // Nobody else can rewrite, delete, or register beside it.
    let mut evil = inst.clone();
    evil.address = "6.6.6.6:1".into();
    let raw = inspector().await;
    assert!(matches!(
        raw.set_data(&path, &serde_json::to_vec(&evil).unwrap(), None)
            .await,
        Err(zookeeper_client::Error::NoAuth)
    ));
    assert!(matches!(
        raw.delete(&path, None).await,
        Err(zookeeper_client::Error::NoAuth)
    ));
    let r = anonymous
        .register(evil.clone().with_instance_id("evil"))
        .await;
    assert!(r.is_err(), "unauthenticated register succeeded: {r:?}");
    let bob = ZkRegistry::with_options(
        ZkOptions::new(&addr)
            .root(&root)
            .digest(Credentials::new("bob", "bob-pw")),
    );
    let r = bob.register(evil.clone()).await;
    assert!(r.is_err(), "another identity rewrote the instance: {r:?}");
    // Wrong password: not alice.
    let mallory = connect(&format!("zookeeper://alice:wrong@{addr}{root}?timeout=3"))
        .await
        .unwrap();
    let r = mallory.register(evil.clone()).await;
    assert!(r.is_err(), "wrong password rewrote the instance: {r:?}");
    assert_eq!(
        anonymous.discover(&Query::new("Sec")).await.unwrap(),
        vec![inst.clone()]
    );
    // The owner can update it, from the URL form too.
    let alice2 = connect(&format!("zookeeper://alice:alice-pw@{addr}{root}"))
        .await
        .unwrap();
    let _r2 = alice2
        .register(inst.clone().with_instance_id("a2"))
        .await
        .unwrap();
    assert_eq!(
        anonymous.discover(&Query::new("Sec")).await.unwrap().len(),
        2
    );
    assert!(!format!("{alice2:?} {mallory:?}").contains("-pw"));
}

/// `deregister_all` of 300 registrations: multi-op deletes after one pipelined read, and the
/// keepers, stopped afterwards, do not put anything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_all_in_batches() {
    let _g = shared().await;
    let zk = Zk::require().await;
    let root = unique_root("batch");
    let reg = connect(&zk.url(&root, 10)).await.unwrap();
    let mut regs = Vec::new();
    for i in 0..300 {
        regs.push(
            reg.register(
                ServiceInstance::new("Many", format!("10.0.1.{}:{}", i / 250, 1000 + i))
                    .with_instance_id(format!("m{i:03}")),
            )
            .await
            .unwrap(),
        );
    }
    assert_eq!(zk.stored(&root).await, 300);
    let started = Instant::now();
    getty::registry::Registration::deregister_all(regs)
        .await
        .unwrap();
    eprintln!("deregister_all of 300 took {:?}", started.elapsed());
    assert_eq!(zk.stored(&root).await, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(zk.stored(&root).await, 0, "a keeper put a node back");
    assert!(reg.discover(&Query::new("Many")).await.unwrap().is_empty());
}
