//! What the tests against a real server (etcd, ZooKeeper from `scripts/servers.sh`) share: the
//! lock that serialises the disruptive test of a binary against the others, the reachability
//! check that fails (never skips) with a hint, unique roots, the script itself, and the provider
//! run in a child process so that it can be SIGKILLed.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use getty::registry::{ServiceInstance, connect};

#[path = "../child/mod.rs"]
mod child;

/// Shared by ordinary tests, taken exclusively by the test that restarts / stops / wipes the
/// server (one lock per test binary).
static SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SERVER.read().await
}

pub async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    SERVER.write().await
}

/// The server address: the environment variable `var`, or `default`.
pub fn addr(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Fails the test with a helpful message when `name` does not answer at `addr` (taken from the
/// environment variable `var`); returns `addr`.
pub fn require(name: &str, var: &str, addr: String) -> String {
    let up = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|sa| TcpStream::connect_timeout(&sa, Duration::from_secs(2)).is_ok());
    assert!(
        up,
        "{name} is not reachable at {addr} ({var}): run `scripts/servers.sh up` first"
    );
    addr
}

/// A root path of the test `name` that no other test (or run) uses.
pub fn unique_root(name: &str) -> String {
    format!(
        "/getty-it/{name}-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/servers.sh");

/// Runs `scripts/servers.sh cmd` (e.g. `restart-etcd`, `stop-zk`).
pub async fn servers(cmd: &str) {
    let status = tokio::process::Command::new("bash")
        .arg(SCRIPT)
        .arg(cmd)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "scripts/servers.sh {cmd} failed");
}

/// The instance the child provider registers.
pub fn killed_instance(id: &str) -> ServiceInstance {
    ServiceInstance::new("Killed", "127.0.0.1:1").with_instance_id(id)
}

/// Body of each file's `child_provider` test, the child-process half of
/// `killed_provider_disappears`: registers [`killed_instance`] at `GETTY_CHILD_URL` and waits to
/// be SIGKILLed. A no-op when run as an ordinary test (the variables are not set).
pub fn run_child_provider() {
    let (Ok(url), Ok(id)) = (
        std::env::var("GETTY_CHILD_URL"),
        std::env::var("GETTY_CHILD_ID"),
    ) else {
        return;
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let reg = connect(&url).await.unwrap();
        let r = reg.register(killed_instance(&id)).await.unwrap();
        println!("CHILD-READY");
        std::io::stdout().flush().unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(r);
    });
}

/// Runs the `child_provider` test in a new process of this test binary; returns once it has
/// registered.
pub fn spawn_provider(url: &str, id: &str) -> std::process::Child {
    let env = [("GETTY_CHILD_URL", url), ("GETTY_CHILD_ID", id)];
    child::spawn_test("child_provider", &env, "CHILD-READY").0
}
