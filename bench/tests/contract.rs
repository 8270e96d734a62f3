//! The binary against the benchmark contract: real server and client processes, short runs on
//! every transport, both directions and both codecs; one JSON line; exit codes.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_getty-bench");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, so that a TLS server removes its CA file; SIGKILL if that fails.
        let termed = Command::new("kill")
            .arg(self.0.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        if !termed {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn server(port: u16, extra: &[&str]) -> Server {
    let child = Command::new(BIN)
        .args(["server", "--addr", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server(child)
}

/// Runs a client; returns its exit code and stdout.
fn client(port: u16, extra: &[&str]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(["client", "--addr", &format!("127.0.0.1:{port}")])
        .args([
            "--conns",
            "2",
            "--inflight",
            "4",
            "--payload",
            "300",
            "--secs",
            "0.4",
            "--warmup-secs",
            "0.1",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (child.wait().unwrap().code().unwrap_or(-1), out)
}

fn check(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {out:?}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["impl"], "getty");
    assert_eq!(v["conns"], 2);
    assert_eq!(v["inflight"], 4);
    assert_eq!(v["payload"], 300);
    assert_eq!(v["secs"], 0.4);
    assert_eq!(v["errors"], 0, "{out}");
    assert!(v["calls"].as_u64().unwrap() > 0, "{out}");
    for k in ["rps", "p50_us", "p99_us", "p999_us"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {out}");
    }
}

#[test]
fn every_transport_both_directions_both_codecs() {
    for transport in ["tcp", "ws", "tls"] {
        let port = free_port();
        let _s = server(port, &["--transport", transport]);
        for extra in [&[][..], &["--codec", "json"], &["--reverse"]] {
            let mut args = vec!["--transport", transport];
            args.extend_from_slice(extra);
            let (code, out) = client(port, &args);
            assert_eq!(code, 0, "{transport} {extra:?}: {out}");
            check(&out);
        }
    }
}

#[test]
fn current_thread_runtimes_and_spawned_slots() {
    let port = free_port();
    let _s = server(port, &["--rt", "current"]);
    let (code, out) = client(port, &["--rt", "current", "--threads", "2"]);
    assert_eq!(code, 0);
    check(&out);
    let (code, out) = client(port, &["--rt", "current", "--reverse", "--codec", "json"]);
    assert_eq!(code, 0);
    check(&out);
    for extra in [&["--spawn-slots"][..], &["--spawn-slots", "--reverse"]] {
        let (code, out) = client(port, extra);
        assert_eq!(code, 0);
        check(&out);
    }
}

#[test]
fn no_server_is_a_failure() {
    let port = free_port();
    let (code, out) = client(port, &[]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let (code, _) = client(port, &["--transport", "tls"]);
    assert_eq!(code, 1);
}

/// Both streaming modes, opened by the client and (`--reverse`) by the server, in both codecs:
/// items cross, none is wrong, one JSON line.
#[test]
fn stream_modes_both_directions_both_codecs() {
    let port = free_port();
    let _s = server(port, &[]);
    for mode in ["stream", "bidi"] {
        for extra in [&[][..], &["--reverse"], &["--reverse", "--codec", "json"]] {
            let mut args = vec!["--mode", mode];
            args.extend_from_slice(extra);
            let (code, out) = client(port, &args);
            assert_eq!(code, 0, "{mode} {extra:?}: {out}");
            check(&out);
        }
    }
}
