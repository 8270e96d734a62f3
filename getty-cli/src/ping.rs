//! `getty ping TARGET`: heartbeat round trips (getty-rpc Ping/Pong frames) with min/avg/max.

use std::time::Duration;

use clap::Args;
use getty_rpc::Status;

use crate::output::{self, Style};
use crate::target::{Conn, ConnArgs, parse_duration};
use crate::{Failure, Result};

const EXAMPLES: &str = "\
Examples:
  getty ping 127.0.0.1:7200
  getty ping ws://127.0.0.1:7300/rpc -c 0 -i 200ms      (until Ctrl-C)
  getty ping zookeeper://127.0.0.1:2181/getty --service echo.Echo -c 3

Exits with 1 when no pong came back at all, like ping(8).";

/// Measure heartbeat round trips to a peer
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct PingArgs {
    /// host:port, tls://host:port, ws://…, wss://…, or a registry URL with --service
    #[arg(value_name = "TARGET")]
    target: String,
    /// How many pings; 0 pings until Ctrl-C
    #[arg(short = 'c', long, value_name = "N", default_value_t = 4)]
    count: u64,
    /// Time between pings
    #[arg(short = 'i', long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// With a registry target: the service whose instance to ping
    #[arg(short = 's', long, value_name = "SERVICE")]
    service: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

pub async fn run(a: PingArgs) -> Result {
    let style = Style::stdout();
    let conn = Conn::open(&a.target, a.service.as_deref(), &a.conn).await?;
    let (peer, name) = conn.peer()?;
    output::line(&format!("PING {name}"));
    let mut rtts = Vec::new();
    let mut sent = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'pinging: while a.count == 0 || sent < a.count {
        if sent > 0 {
            tokio::select! {
                _ = &mut ctrl_c => break 'pinging,
                _ = tokio::time::sleep(a.interval) => {}
            }
        }
        sent += 1;
        let result = tokio::select! {
            _ = &mut ctrl_c => { sent -= 1; break 'pinging; }
            r = peer.ping(a.conn.timeout) => r,
        };
        match result {
            Ok(rtt) => {
                output::line(&format!(
                    "pong from {name}: seq={sent} time={} ms",
                    style.green(&output::ms(rtt))
                ));
                rtts.push(rtt);
            }
            Err(e) => {
                output::line(&format!("seq={sent}: {}", style.red(&e.to_string())));
                if e.status == Status::ConnectionClosed {
                    break;
                }
            }
        }
    }
    conn.close().await;
    let lost = sent - rtts.len() as u64;
    output::line(&format!("--- {name} ping statistics ---"));
    let mut summary = format!(
        "{sent} sent, {} received, {}% loss",
        rtts.len(),
        (lost * 100).checked_div(sent).unwrap_or(0)
    );
    if let (Some(min), Some(max)) = (rtts.iter().min(), rtts.iter().max()) {
        let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
        summary.push_str(&format!(
            ", rtt min/avg/max = {}/{}/{} ms",
            output::ms(*min),
            output::ms(avg),
            output::ms(*max)
        ));
    }
    output::line(&summary);
    if sent > 0 && rtts.is_empty() {
        return Err(Failure::call(format!("no pong from {name}")));
    }
    Ok(())
}
