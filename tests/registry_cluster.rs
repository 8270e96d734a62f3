//! getty-registry against real clusters (`cargo test --features etcd,zookeeper --test
//! registry_cluster`): the 3-member etcd cluster and the 3-server ZooKeeper ensemble of
//! `scripts/servers.sh up`. For each, while a consumer calls two providers it found there:
//!
//! 1. the leader is SIGKILLed (and restarted 5 s later);
//! 2. quorum is lost for 20 s (two of three members stopped, then restarted).
//!
//! Throughout: no failed call, the consumer's view never loses an instance, a raw watch of the
//! consumer sees no `Removed` (no spurious removal), and afterwards both registrations are
//! still there past their TTL / session timeout (none was lost). Fails, never skips, when the
//! clusters are unreachable. The two scenarios run one after the other (a lock), since each
//! loads the machine.
#![cfg(all(feature = "etcd", feature = "zookeeper"))]

#[allow(dead_code)]
#[path = "registry_scenarios/server.rs"]
mod server;

/// Providers and a consumer's steady calls.
#[allow(dead_code)]
#[path = "registry_scenarios/load.rs"]
mod load;

use std::sync::Arc;
use std::time::{Duration, Instant};

use getty::registry::{Query, Registry, connect};
use getty::rpc::Cluster;
use load::{Load, Setup};

const SVC: &str = "cluster.Who";
const TTL: u64 = 5;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One of the clusters and the script commands that disrupt it.
struct Target {
    name: &'static str,
    /// `etcd` or `zk`, as in the script's `stop-etcd-member`, `zk-leader`, …
    cmd: &'static str,
    ports: [u16; 3],
    scheme: &'static str,
}

const ETCD: Target = Target {
    name: "etcd cluster",
    cmd: "etcd",
    ports: [23792, 23793, 23794],
    scheme: "etcd",
};

const ZK: Target = Target {
    name: "ZooKeeper ensemble",
    cmd: "zk",
    ports: [21811, 21812, 21813],
    scheme: "zookeeper",
};

impl Target {
    /// The URL naming all three members, once each answers (a member still rejoining after
    /// the previous scenario may take a moment; after 30 s the test fails with a hint).
    fn url(&self, root: &str) -> String {
        for p in self.ports {
            let addr: std::net::SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
            let t = Instant::now();
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "{} member {addr} is not reachable: run `scripts/servers.sh up` first",
                    self.name
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("{}://{}{root}?ttl={TTL}", self.scheme, hosts.join(","))
    }

    async fn script(&self, verb: &str, member: Option<u32>) -> String {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(server::SCRIPT).arg(format!(
            "{verb}-{}{}",
            self.cmd,
            if member.is_some() { "-member" } else { "" }
        ));
        if let Some(m) = member {
            cmd.arg(m.to_string());
        }
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "servers.sh {verb} {member:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn leader(&self) -> u32 {
        let t = Instant::now();
        loop {
            let mut cmd = tokio::process::Command::new("bash");
            let out = cmd
                .arg(server::SCRIPT)
                .arg(format!("{}-leader", self.cmd))
                .output()
                .await
                .unwrap();
            if out.status.success() {
                return String::from_utf8(out.stdout)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{}: no leader",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Starts every member again however the test ends.
struct StartAllOnDrop(&'static str);

impl Drop for StartAllOnDrop {
    fn drop(&mut self) {
        for m in 1..=3 {
            let _ = std::process::Command::new("bash")
                .arg(server::SCRIPT)
                .arg(format!("start-{}-member", self.0))
                .arg(m.to_string())
                .status();
        }
    }
}

/// Checks every 500 ms for `secs` that the consumer still sees and is connected to both.
async fn assert_view_held(cluster: &Cluster, secs: u64, what: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            cluster.instances().len(),
            2,
            "{what}: the view lost an instance"
        );
        assert_eq!(
            cluster.connected().len(),
            2,
            "{what}: a connection was lost"
        );
    }
}

async fn registered(check: &Arc<dyn Registry>) -> Vec<String> {
    let mut v: Vec<String> = check
        .discover(&Query::new(SVC))
        .await
        .map(|l| l.into_iter().map(|i| i.instance_id).collect())
        .unwrap_or_default();
    v.sort();
    v
}

async fn wait_registered(check: &Arc<dyn Registry>, what: &str) -> Duration {
    let t = Instant::now();
    while registered(check).await != ["p1", "p2"] {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what}: registrations not back: {:?}",
            registered(check).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.elapsed()
}

async fn leader_killed_and_quorum_lost(target: &Target) {
    let _one = ONE_AT_A_TIME.lock().await;
    let _restart = StartAllOnDrop(target.cmd);
    let root = server::unique_root(&format!("cluster-{}", target.cmd));
    let url = target.url(&root);
    let setup = Setup::start(&url, SVC).await;
    let (cluster, consumer_reg) = (setup.cluster.clone(), setup.consumer_reg.clone());
    let watch = consumer_reg.watch(&Query::new(SVC)).await.unwrap();
    let load = Load::start(cluster.clone(), SVC, Duration::from_millis(10), Some(watch));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. The leader SIGKILLed; a new one is elected; the old one comes back 5 s later.
    let leader = target.leader().await;
    let killed = Instant::now();
    target.script("kill", Some(leader)).await;
    let new_leader = target.leader().await;
    eprintln!(
        "{}: leader {leader} killed; new leader {new_leader} after {:?}",
        target.name,
        killed.elapsed()
    );
    assert_view_held(&cluster, 5, "leader killed").await;
    target.script("start", Some(leader)).await;

    // 2. Quorum lost for 20 s: two members stopped.
    let check = connect(&url).await.unwrap();
    wait_registered(&check, "after the leader's restart").await;
    let keep = target.leader().await;
    let down: Vec<u32> = (1..=3).filter(|m| *m != keep).collect();
    let before = load.ok();
    for m in &down {
        target.script("stop", Some(*m)).await;
    }
    let lost = Instant::now();
    assert_view_held(&cluster, 20, "quorum lost").await;
    let during = load.ok() - before;
    for m in &down {
        target.script("start", Some(*m)).await;
    }
    eprintln!(
        "{}: quorum back after {:?}; {during} calls succeeded meanwhile",
        target.name,
        lost.elapsed()
    );
    let took = wait_registered(&check, "after quorum came back").await;
    eprintln!(
        "{}: registrations readable {took:?} after the restart",
        target.name
    );
    // Kept alive, not merely restored: still there past the TTL.
    tokio::time::sleep(Duration::from_secs(TTL + 2)).await;
    assert_eq!(
        registered(&check).await,
        ["p1", "p2"],
        "a registration was lost"
    );
    assert_view_held(&cluster, 1, "after recovery").await;

    let load::Outcome {
        served,
        failures,
        removed,
        ..
    } = load.finish().await;
    assert!(failures.is_empty(), "calls failed: {failures:#?}");
    assert!(removed.is_empty(), "spurious removals: {removed:?}");
    assert!(during > 100, "only {during} calls while quorum was lost");
    assert!(
        served.len() == 2 && served.values().all(|&n| n > 100),
        "{served:?}"
    );
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_leader_killed_and_quorum_lost() {
    leader_killed_and_quorum_lost(&ETCD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_ensemble_leader_killed_and_quorum_lost() {
    leader_killed_and_quorum_lost(&ZK).await;
}
