//! Server memory per idle connected session: starts `getty-bench server` (the RPC echo server)
//! as a child process, opens N idle TCP connections to it, and reports how much the server's
//! resident memory grew, per session. One JSON line on stdout.
//!
//! `cargo build --release -p getty-bench && target/release/getty-idle-rss [N]` (default 10000;
//! needs about N + 100 open files in both processes: `ulimit -n`).

use std::process::{Command, Stdio};
use std::time::Duration;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(10_000), |a| a.parse())?;
    let exe = std::env::current_exe()?.with_file_name("getty-bench");
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = probe.local_addr()?;
    drop(probe);
    let mut server = Command::new(exe)
        .args(["server", "--addr", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = server.id();
    // Wait until it listens, then let it settle.
    let mut ok = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !ok {
        let _ = server.kill();
        return Err("the server did not start".into());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(tokio::net::TcpStream::connect(addr).await?);
    }
    // Let the server open every session (handshake-free: TCP) and go idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "{{\"sessions\":{n},\"server_rss_before_kib\":{before},\"server_rss_after_kib\":{after},\"bytes_per_session\":{per:.0}}}"
    );
    drop(conns);
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}
