//! The registry server (real etcd) stopped for 10 s and restarted while a consumer calls two
//! providers it found there: zero failed calls to the live providers, the consumer's view never
//! empties, and the providers' registrations are back (and kept alive) after the restart.
//!
//! `cargo test --features etcd --test faults_registry`, with the etcd of `scripts/servers.sh up`
//! (or `GETTY_ETCD=host:port`; the test stops and starts the script's server). Fails, never
//! skips, when etcd is unreachable. A test binary of its own: cargo runs test binaries one after
//! another, so stopping etcd here cannot disturb another test.
#![cfg(feature = "etcd")]

/// The helpers of the registry tests against real servers (address, reachability, the script).
#[allow(dead_code)]
#[path = "registry_scenarios/server.rs"]
mod server;

/// Providers and a consumer's steady calls.
#[allow(dead_code)]
#[path = "registry_scenarios/load.rs"]
mod load;

use std::time::{Duration, Instant};

use getty::registry::{Query, connect};
use load::{Load, Setup};

const SVC: &str = "faults.Who";
fn etcd_addr() -> String {
    server::addr("GETTY_ETCD", "127.0.0.1:23790")
}

/// Starts etcd again however the test ends, so that a failure here leaves it running for the
/// tests that come after.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(server::SCRIPT)
            .arg("start-etcd")
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_for_10s_loses_no_call_and_registrations_come_back() {
    server::require("etcd", "GETTY_ETCD", etcd_addr());
    let root = format!(
        "/getty-faults/{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    );
    let ttl = 3;
    let url = format!("etcd://{}{root}?ttl={ttl}", etcd_addr());
    let setup = Setup::start(&url, SVC).await;
    let cluster = setup.cluster.clone();

    // Steady calls from 4 callers, all the time.
    let load = Load::start(cluster.clone(), SVC, Duration::from_millis(5), None);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The outage.
    let _restart = RestartOnDrop;
    let before = load.ok();
    server::servers("stop-etcd").await;
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = cluster.instances().len();
        assert_eq!(
            seen, 2,
            "the consumer's view lost instances during the outage"
        );
        assert_eq!(
            cluster.connected().len(),
            2,
            "connections lost during the outage"
        );
    }
    let during = load.ok() - before;
    server::servers("start-etcd").await;
    eprintln!(
        "etcd back after {:?}; {during} calls succeeded meanwhile",
        down.elapsed()
    );

    // The registrations come back (the keepers reconnect) and stay (keep-alive resumed).
    let check = connect(&url).await.unwrap();
    let ids = || async {
        let mut v: Vec<String> = check
            .discover(&Query::new(SVC))
            .await
            .map(|l| l.into_iter().map(|i| i.instance_id).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let t = Instant::now();
    while ids().await != ["p1", "p2"] {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "registrations not restored: {:?}",
            ids().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("registrations visible {:?} after the restart", t.elapsed());
    tokio::time::sleep(Duration::from_secs(ttl + 2)).await;
    assert_eq!(
        ids().await,
        ["p1", "p2"],
        "a registration expired after the restart"
    );
    assert_eq!(cluster.instances().len(), 2);

    let outcome = load.finish().await;
    let (failures, served) = (outcome.failures, outcome.served);
    assert!(
        failures.is_empty(),
        "calls to live providers failed: {failures:#?}"
    );
    assert!(during > 100, "only {during} calls during the outage");
    assert!(
        served.len() == 2 && served.values().all(|&n| n > 100),
        "{served:?}"
    );
    setup.stop().await;
}
