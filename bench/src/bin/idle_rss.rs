//! Server memory per idle connected session: starts a server as a child process, opens N idle
//! connections to it, and reports how much the server's resident memory (VmRSS) grew, per
//! session. One JSON line on stdout per N, a fresh server for each.
//!
//! ```text
//! getty-idle-rss [--impl getty|raw|tarpc] [--peerbench PATH] N...    (default: getty 10000)
//! ```
//! - `getty`: the server is `getty-bench server` (the RPC echo server, beside this binary); the
//!   connections are one `RpcClient` of N connections, and every one answers a ping before the
//!   measurement, so each session has completed the Hello exchange and then sits idle.
//! - `raw`, `tarpc`: the server is `PEERBENCH <impl> server` (shared/peerbench); the
//!   connections are plain TCP connections (neither protocol has a handshake).
//!
//! Needs about N + 100 open files in both processes (`ulimit -n`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use getty_core::ClientBuilder;
use getty_rpc::{Router, RpcClient, RpcOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The server child; killed when dropped, so an error on the way never leaves it running.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the idle connections are, so that they stay open until the measurement is taken.
enum Idle {
    Rpc(RpcClient),
    Tcp { _conns: Vec<tokio::net::TcpStream> },
}

async fn start_server(imp: &str, peerbench: &str, addr: &str) -> Res<Server> {
    let mut cmd = if imp == "getty" {
        Command::new(std::env::current_exe()?.with_file_name("getty-bench"))
    } else {
        let mut c = Command::new(peerbench);
        c.arg(imp);
        c
    };
    let server = Server(
        cmd.args(["server", "--addr", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the {imp} server: {e}"))?,
    );
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            // Let it settle (the probe connection closes) before the baseline is read.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("the {imp} server did not start").into())
}

async fn open_idle(imp: &str, addr: &str, n: usize) -> Res<Idle> {
    if imp != "getty" {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(tokio::net::TcpStream::connect(addr).await?);
        }
        return Ok(Idle::Tcp { _conns: conns });
    }
    let client = RpcClient::start(Router::new(), RpcOptions::default(), |cb| {
        ClientBuilder::new(addr.to_string())
            .connections(n)
            .connect_tcp(cb)
    })?;
    client.ready().await?;
    let peers = client.peers();
    if peers.len() != n {
        return Err(format!("{} of {n} connections up", peers.len()).into());
    }
    // A ping answered means the server read our Hello and sent its own first.
    for p in &peers {
        p.ping(Duration::from_secs(10)).await?;
    }
    Ok(Idle::Rpc(client))
}

async fn measure(imp: &str, peerbench: &str, n: usize) -> Res<()> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = probe.local_addr()?.to_string();
    drop(probe);
    let server = start_server(imp, peerbench, &addr).await?;
    let pid = server.0.id();
    let before = rss_kib(pid);
    let idle = open_idle(imp, &addr, n).await?;
    // Let the server open every session and go idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    let per = after.saturating_sub(before) as f64 * 1024.0 / n as f64;
    println!(
        "{{\"impl\":\"{imp}\",\"sessions\":{n},\"hello\":{},\"server_rss_before_kib\":{before},\"server_rss_after_kib\":{after},\"bytes_per_session\":{per:.0}}}",
        matches!(idle, Idle::Rpc(_))
    );
    if let Idle::Rpc(c) = idle {
        c.close().await;
    }
    drop(server);
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let mut imp = "getty".to_string();
    let mut peerbench = "/work/pb-target/release/peerbench".to_string();
    let mut counts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--impl" => imp = args.next().ok_or("--impl needs a value")?,
            "--peerbench" => peerbench = args.next().ok_or("--peerbench needs a value")?,
            n => counts.push(n.parse::<usize>().map_err(|e| format!("{n}: {e}"))?),
        }
    }
    if !matches!(imp.as_str(), "getty" | "raw" | "tarpc") {
        return Err(format!("unknown --impl {imp}").into());
    }
    if counts.is_empty() {
        counts.push(10_000);
    }
    for n in counts {
        measure(&imp, &peerbench, n).await?;
    }
    Ok(())
}
