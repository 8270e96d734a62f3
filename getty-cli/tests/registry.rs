//! The `getty` binary against real etcd and ZooKeeper (`cargo test -p getty-cli --features
//! etcd,zookeeper`): `list`, `watch` seeing a provider come and go (of one service, and of every
//! service), and `call`/`describe` through the registry. Needs the servers of `scripts/servers.sh up` (or `GETTY_ETCD` /
//! `GETTY_ZK`); fails, never skips, when they are unreachable. Each test has its own root.
#![cfg(any(feature = "etcd", feature = "zookeeper"))]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{getty, rt, start_tcp, stdout};
use getty_registry::{Registry, ServiceInstance};
use predicates::prelude::*;
use predicates::str::contains;

fn require(what: &str, env: &str, default: &str) -> String {
    let addr = std::env::var(env).unwrap_or_else(|_| default.to_string());
    let up = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|sa| TcpStream::connect_timeout(&sa, Duration::from_secs(2)).is_ok());
    assert!(
        up,
        "{what} is not reachable at {addr} ({env}): run `scripts/servers.sh up` first"
    );
    addr
}

fn unique_root(name: &str) -> String {
    format!(
        "/getty-cli-it/{name}-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

fn registry(url: &str) -> std::sync::Arc<dyn Registry> {
    rt().block_on(getty_registry::connect(url))
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// `getty watch` as a child process whose stdout lines arrive on a channel.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watcher {
    /// `getty watch URL [SERVICE]`.
    fn start(url: &str, service: Option<&str>) -> Watcher {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("getty"))
            .args(["watch", url])
            .args(service)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("getty watch starts");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line containing `want` (within 20 s).
    fn expect(&mut self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(want) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "getty watch printed no line with {want:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `list` and `watch` see an instance join, change and leave.
fn list_and_watch(base: &str) {
    let url = format!("{base}{}", unique_root("watch"));
    let reg = registry(&url);
    let mut w = Watcher::start(&url, Some("test.Watch"));
    w.expect("# watching test.Watch in ");

    let inst = ServiceInstance::new("test.Watch", "127.0.0.1:9999")
        .with_instance_id("w1")
        .with_codec("json")
        .with_metadata("zone", "z1");
    let r1 = rt().block_on(reg.register(inst.clone())).unwrap();
    let line = w.expect(" + test.Watch w1 ");
    assert!(
        line.contains("127.0.0.1:9999 tcp weight=100 codecs=json zone=z1"),
        "{line}"
    );
    // A timestamp first: 2025-01-01T00:00:00.000Z
    assert_eq!(line.as_bytes()[10], b'T', "{line}");
    assert!(line[..24].ends_with('Z'), "{line}");

    getty()
        .args(["list", &url, "test.Watch"])
        .assert()
        .success()
        .stdout(
            contains(
                "SERVICE     INSTANCE  ADDRESS         TRANSPORT  CODECS  WEIGHT  METADATA  AGE",
            )
            .and(contains(
                "test.Watch  w1        127.0.0.1:9999  tcp        json    100     zone=z1   -",
            )),
        );
    let out = getty()
        .args(["list", &url, "test.Watch", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["instance_id"], "w1");

    // Same id, new weight: an update.
    let r2 = rt()
        .block_on(reg.register(inst.clone().with_weight(7)))
        .unwrap();
    let line = w.expect(" ~ test.Watch w1 ");
    assert!(line.contains("weight=7"), "{line}");
    drop(r1); // superseded by r2; removes nothing

    rt().block_on(r2.deregister()).unwrap();
    w.expect(" - test.Watch w1 127.0.0.1:9999");
    getty()
        .args(["list", &url, "test.Watch"])
        .assert()
        .success()
        .stdout(contains("no instance of test.Watch"));
}

/// Without a SERVICE: `list` shows the instances of every service (sorted by service, then
/// instance id), and `watch` sees an instance of a service that did not exist join and leave.
fn list_and_watch_every_service(base: &str) {
    let url = format!("{base}{}", unique_root("all"));
    let reg = registry(&url);
    getty()
        .args(["list", &url])
        .assert()
        .success()
        .stdout(format!("no instance in {url}\n"));
    let mut regs = Vec::new();
    // b2 (v1) comes before b1 (v2) in the registry's own order; the table sorts by id.
    for (svc, version, id, port) in [
        ("test.Beta", "v1", "b2", 9003),
        ("test.Alpha", "", "a1", 9001),
        ("test.Beta", "v2", "b1", 9002),
    ] {
        let inst = ServiceInstance::new(svc, format!("127.0.0.1:{port}"))
            .with_version(version)
            .with_instance_id(id);
        regs.push(rt().block_on(reg.register(inst)).unwrap());
    }
    getty()
        .args(["list", &url])
        .assert()
        .success()
        .stdout(
            "SERVICE     GROUP  VERSION  INSTANCE  ADDRESS         TRANSPORT  CODECS  WEIGHT  METADATA  AGE\n\
             test.Alpha  -      -        a1        127.0.0.1:9001  tcp        -       100     -         -\n\
             test.Beta   -      v2       b1        127.0.0.1:9002  tcp        -       100     -         -\n\
             test.Beta   -      v1       b2        127.0.0.1:9003  tcp        -       100     -         -\n",
        );
    let out = getty().args(["list", &url, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["a1", "b1", "b2"]);
    // The filters still apply across services.
    getty()
        .args(["list", &url, "--service-version", "v1"])
        .assert()
        .success()
        .stdout(
            contains(" b2 ")
                .and(contains(" b1 ").not())
                .and(contains("test.Alpha").not()),
        );

    let mut w = Watcher::start(&url, None);
    w.expect("# watching every service in ");
    assert!(w.seen[0].ends_with(": 3 instances"), "{}", w.seen[0]);
    w.expect(" = test.Alpha a1 127.0.0.1:9001");
    w.expect(" = test.Beta b1 127.0.0.1:9002");
    w.expect(" = test.Beta b2 127.0.0.1:9003");
    // A service nobody had published before joins, then leaves.
    let g = rt()
        .block_on(
            reg.register(
                ServiceInstance::new("test.Gamma", "127.0.0.1:9004").with_instance_id("g1"),
            ),
        )
        .unwrap();
    let line = w.expect(" + test.Gamma g1 ");
    assert!(line.contains("127.0.0.1:9004 tcp weight=100"), "{line}");
    rt().block_on(g.deregister()).unwrap();
    w.expect(" - test.Gamma g1 127.0.0.1:9004");
    // And one of a known service leaves.
    let b1 = regs.pop().unwrap();
    rt().block_on(b1.deregister()).unwrap();
    w.expect(" - test.Beta b1 127.0.0.1:9002");
    for r in regs {
        rt().block_on(r.deregister()).unwrap();
    }
    w.expect(" - test.");
    w.expect(" - test.");
    getty()
        .args(["list", &url])
        .assert()
        .success()
        .stdout(format!("no instance in {url}\n"));
}

/// A provider published in the registry is reached by `call` and `describe`.
fn call_through_registry(base: &str) {
    let url = format!("{base}{}", unique_root("call"));
    let reg = registry(&url);
    let srv = rt().block_on(start_tcp());
    let id = rt()
        .block_on(srv.publish(
            &*reg,
            ServiceInstance::new("test.Math", "").with_codec("json"),
        ))
        .unwrap();
    getty()
        .args(["call", &url, "test.Math.Add", r#"{"a":30,"b":12}"#])
        .assert()
        .success()
        .stdout("42\n");
    getty()
        .args(["describe", &url, "--service", "test.Math"])
        .assert()
        .success()
        .stdout(contains("  Add   Add -> i64"));
    getty()
        .args(["ping", &url, "--service", "test.Math", "-c", "1"])
        .assert()
        .success()
        .stdout(contains(format!("({id})")));
    // Another service has no instance there.
    getty()
        .args(["call", &url, "echo.Nope.Echo", "{}"])
        .assert()
        .code(3)
        .stderr(contains("no instance of echo.Nope is registered"));
    rt().block_on(srv.shutdown(Duration::from_millis(100)));
}

#[cfg(feature = "etcd")]
mod etcd {
    fn base() -> String {
        format!(
            "etcd://{}",
            super::require("etcd", "GETTY_ETCD", "127.0.0.1:23790")
        )
    }

    #[test]
    fn list_and_watch() {
        super::list_and_watch(&base());
    }

    #[test]
    fn list_and_watch_every_service() {
        super::list_and_watch_every_service(&base());
    }

    #[test]
    fn call_through_registry() {
        super::call_through_registry(&base());
    }
}

#[cfg(feature = "zookeeper")]
mod zookeeper {
    fn base() -> String {
        format!(
            "zookeeper://{}",
            super::require("ZooKeeper", "GETTY_ZK", "127.0.0.1:21810")
        )
    }

    #[test]
    fn list_and_watch() {
        super::list_and_watch(&base());
    }

    #[test]
    fn list_and_watch_every_service() {
        super::list_and_watch_every_service(&base());
    }

    #[test]
    fn call_through_registry() {
        super::call_through_registry(&base());
    }
}

/// A registry that does not answer: exit 3 within the timeout; the password of the URL is not
/// in the message.
#[test]
fn unreachable_registry_exits_3() {
    let port = common::dead_port();
    #[cfg(feature = "etcd")]
    let url = format!("etcd://alice:s3cr3t-pw@127.0.0.1:{port}/x");
    #[cfg(not(feature = "etcd"))]
    let url = format!("zookeeper://alice:s3cr3t-pw@127.0.0.1:{port}/x");
    let started = Instant::now();
    getty()
        .args(["list", &url, "test.Math", "-t", "1s"])
        .assert()
        .code(3)
        .stderr(contains("registry"))
        .stderr(contains("alice:***@"))
        .stderr(contains("s3cr3t").not());
    assert!(started.elapsed() < Duration::from_secs(10));
}
