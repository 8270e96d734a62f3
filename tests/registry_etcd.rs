//! getty-registry against a real etcd (`cargo test --features etcd --test registry_etcd`).
//!
//! Needs the server from `scripts/servers.sh up` (or `GETTY_ETCD=host:port`; the disruptive test
//! restarts the script's server and so needs it). Fails (never skips) when etcd is unreachable.
//! Tests of one binary share the server: ordinary tests take a shared lock, the one that
//! restarts/stops/wipes etcd takes it exclusively, and every test uses its own root prefix.
//!
//! The scenarios shared with the other backends are in `registry_scenarios`; this file has the
//! etcd hooks (etcdctl), thin wrappers and the etcd-only tests (lease revocation, restart /
//! outage / data loss).
#![cfg(feature = "etcd")]

mod registry_scenarios;

use std::time::Duration;

use std::collections::BTreeSet;

use getty::registry::etcd::etcd_client;
use getty::registry::{Registration, ServiceInstance, connect};
use registry_scenarios::server::{self, exclusive, servers, shared, unique_root};
use registry_scenarios::{self as scenarios, Backend, Followed, eventually};

fn etcd_addr() -> String {
    server::addr("GETTY_ETCD", "127.0.0.1:23790")
}

/// etcd, once it answers (fails the test with a hint to run `scripts/servers.sh up` otherwise).
struct Etcd;

impl Etcd {
    fn require() -> Etcd {
        server::require("etcd", "GETTY_ETCD", etcd_addr());
        Etcd
    }
}

impl Backend for Etcd {
    const KIND: &'static str = "etcd";

    fn url(&self, root: &str, ttl: u32) -> String {
        format!("etcd://{}{root}?ttl={ttl}", etcd_addr())
    }

    async fn stored(&self, root: &str) -> usize {
        keys(&format!("{root}/")).await.len()
    }

    /// The exact key, its JSON value and its lease, as etcdctl sees them.
    async fn assert_stored(&self, root: &str, inst: &ServiceInstance) {
        let key = format!("{root}/{}", inst.path_key());
        assert_eq!(keys(&format!("{root}/")).await, vec![key.clone()]);
        let value = etcdctl(&["get", &key, "--print-value-only"]).await;
        let stored: ServiceInstance = serde_json::from_str(value.trim()).unwrap();
        assert_eq!(&stored, inst);
        assert!(
            lease_of(&key).await.unwrap() != 0,
            "key must be attached to a lease"
        );
    }

    async fn assert_deregistered(&self, root: &str, _inst: &ServiceInstance) {
        assert!(keys(&format!("{root}/")).await.is_empty());
    }
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

/// The instance keys under `prefix` with their lease and mod revision, read with a raw client.
async fn raw_kvs(prefix: &str) -> Vec<(String, i64, i64)> {
    let mut c = etcd_client::Client::connect([format!("http://{}", etcd_addr())], None)
        .await
        .unwrap();
    let resp = c
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.lease(),
                kv.mod_revision(),
            )
        })
        .collect()
}

/// Whether lease `id` still exists.
async fn lease_exists(id: i64) -> bool {
    let mut c = etcd_client::Client::connect([format!("http://{}", etcd_addr())], None)
        .await
        .unwrap();
    c.lease_time_to_live(id, None).await.unwrap().ttl() > 0
}

/// `n` registrations made concurrently through `reg`.
async fn register_many(
    reg: &std::sync::Arc<dyn getty::registry::Registry>,
    n: usize,
) -> Vec<Registration> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let reg = reg.clone();
            tokio::spawn(async move {
                reg.register(
                    ServiceInstance::new("Many", format!("10.1.{}.{}:80", i / 250, i % 250))
                        .with_instance_id(format!("m{i:04}")),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut regs = Vec::new();
    for t in tasks {
        regs.push(t.await.unwrap());
    }
    regs
}

/// Child-process half of `killed_provider_disappears_within_ttl`: registers and waits to be
/// SIGKILLed. A no-op when run as an ordinary test.
#[test]
fn child_provider() {
    server::run_child_provider();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_visible_to_etcdctl_and_deregistered() {
    let _g = shared().await;
    scenarios::registration_stored_and_deregistered(&Etcd::require(), &unique_root("visible"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_provider_disappears_within_ttl() {
    let _g = shared().await;
    scenarios::killed_provider_disappears(&Etcd::require(), &unique_root("killed"), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_burst_of_50() {
    let _g = shared().await;
    scenarios::watch_sees_burst_of_50(&Etcd::require(), &unique_root("burst")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_services_discover_and_watch() {
    let _g = shared().await;
    scenarios::all_services_discover_and_watch(&Etcd::require(), &unique_root("all")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_watch_filtered_by_group_and_version() {
    let _g = shared().await;
    scenarios::discovery_and_watch_filtered_by_group_and_version(
        &Etcd::require(),
        &unique_root("filter"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_with_a_dead_one() {
    let _g = shared().await;
    let addr = server::require("etcd", "GETTY_ETCD", etcd_addr());
    let root = unique_root("multi");
    // A dead endpoint first: the client must keep trying until the live one answers.
    let url = format!("etcd://127.0.0.1:1,{addr}{root}?ttl=5");
    scenarios::several_addresses_with_a_dead_one(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_lease_is_replaced() {
    let _g = shared().await;
    let etcd = Etcd::require();
    let root = unique_root("revoke");
    let reg = connect(&etcd.url(&root, 5)).await.unwrap();
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

/// Restart, 10-second outage and total data loss of etcd, with live registrations and
/// Directories (of one service and of every service) on another client. Runs alone (exclusive
/// lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_restart_outage_and_data_loss() {
    let _g = exclusive().await;
    let etcd = Etcd::require();
    let root = unique_root("disrupt");
    let ttl = 3u64;
    let provider = connect(&etcd.url(&root, ttl as u32)).await.unwrap();
    let consumer = connect(&etcd.url(&root, ttl as u32)).await.unwrap();
    let mut followed = Followed::start(&*provider, consumer).await;
    let key1 = format!("{root}/Dis/~/~/p1");

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
    followed.assert_view(&["p1"], &["p1", "o1"]);

    // 2. A 10-second outage: the directories keep their view throughout, then catch up.
    servers("stop-etcd").await;
    followed.assert_view_kept_for(10).await;
    servers("start-etcd").await;
    let p2 = provider
        .register(ServiceInstance::new("Dis", "10.0.0.2:1").with_instance_id("p2"))
        .await
        .unwrap();
    let timeout = Duration::from_secs(10);
    followed
        .assert_caught_up(&["p1", "p2"], &["p1", "p2", "o1"], timeout)
        .await;
    tokio::time::sleep(Duration::from_secs(ttl + 2)).await;
    assert!(
        lease_of(&key1).await.is_some(),
        "p1 expired after the outage: keep-alive not resumed"
    );
    drop(p2);
    followed
        .assert_caught_up(&["p1"], &["p1", "o1"], timeout)
        .await;

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
    followed
        .assert_caught_up(&["p1", "p3"], &["p1", "p3", "o1"], timeout)
        .await;
}

/// All registrations of one client share one lease (a session) and are written in batches; a
/// lost lease is replaced and every key put again, one transaction per 128 keys; deregistering
/// them all at once is one lease revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lease_per_client_batched_writes_and_revoke_all() {
    let _g = shared().await;
    let etcd = Etcd::require();
    let root = unique_root("session");
    let prefix = format!("{root}/");
    let reg = connect(&etcd.url(&root, 10)).await.unwrap();
    let regs = register_many(&reg, 300).await;

    let kvs = raw_kvs(&prefix).await;
    assert_eq!(kvs.len(), 300);
    let leases: BTreeSet<i64> = kvs.iter().map(|k| k.1).collect();
    assert_eq!(
        leases.len(),
        1,
        "one lease for every registration of the client"
    );
    let lease = *leases.first().unwrap();
    let writes: BTreeSet<i64> = kvs.iter().map(|k| k.2).collect();
    eprintln!("300 concurrent registrations took {} writes", writes.len());
    assert!(
        writes.len() <= 60,
        "registrations queued together are written together ({} writes for 300)",
        writes.len()
    );

    // The lease revoked behind our back: every key comes back under one new lease, written in
    // ceil(300 / 128) = 3 transactions.
    etcdctl(&["lease", "revoke", &format!("{lease:x}")]).await;
    let took = eventually(
        Duration::from_secs(8),
        "300 keys back under a new lease",
        || async {
            let kvs = raw_kvs(&prefix).await;
            kvs.len() == 300 && kvs.iter().all(|k| k.1 != lease && k.1 == kvs[0].1)
        },
    )
    .await;
    let kvs = raw_kvs(&prefix).await;
    let new_lease = kvs[0].1;
    let writes: BTreeSet<i64> = kvs.iter().map(|k| k.2).collect();
    eprintln!(
        "restored 300 keys after {took:?} in {} transactions",
        writes.len()
    );
    assert!(
        writes.len() <= 3,
        "{} transactions to restore 300 keys",
        writes.len()
    );

    // Deregistering them all: one revoke (the lease is gone, not only the keys).
    let started = std::time::Instant::now();
    Registration::deregister_all(regs).await.unwrap();
    eprintln!("deregister_all of 300 took {:?}", started.elapsed());
    assert!(raw_kvs(&prefix).await.is_empty());
    assert!(
        !lease_exists(new_lease).await,
        "deregister_all revokes the lease"
    );
}

/// A key deleted behind the registration's back is noticed through a watch (not a poll every
/// TTL/3) and put back at once, under the same lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_is_put_back_at_once() {
    let _g = shared().await;
    let etcd = Etcd::require();
    let root = unique_root("deleted");
    let reg = connect(&etcd.url(&root, 10)).await.unwrap();
    let _r = reg
        .register(ServiceInstance::new("Svc", "h:1").with_instance_id("p"))
        .await
        .unwrap();
    let key = format!("{root}/Svc/~/~/p");
    let lease = lease_of(&key).await.unwrap();
    // Three times, so that a poll every 3.3 s (TTL/3) could not pass by luck.
    for round in 0..3 {
        etcdctl(&["del", &key]).await;
        let took = eventually(Duration::from_secs(5), "key put back", || async {
            !raw_kvs(&key).await.is_empty()
        })
        .await;
        eprintln!("round {round}: key back after {took:?}");
        assert!(
            took < Duration::from_millis(1000),
            "key back after {took:?}"
        );
        assert_eq!(lease_of(&key).await, Some(lease), "same session lease");
    }
}
