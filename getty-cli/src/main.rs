//! `getty`: the command-line tool of getty-rs.
//!
//! Calls, describes and pings getty-rpc peers (over TCP, TLS, WebSocket, or through a registry),
//! and lists and watches the instances published in a registry. `getty help COMMAND` shows the
//! options and examples of each command.
//!
//! Exit codes: 0 success, 1 the call failed (the peer answered with an error, or timed out),
//! 2 usage (bad arguments, invalid JSON, malformed target), 3 connection, TLS or registry failure.

mod call;
mod describe;
mod list;
mod output;
mod ping;
mod stream;
mod target;
mod watch;

use std::fmt::Display;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Why a command failed, and the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// The peer answered with an error, or no answer came in time.
    pub fn call(message: impl Display) -> Self {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }
    /// The command line (or the input it names) is wrong.
    pub fn usage(message: impl Display) -> Self {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
    /// No connection: unreachable host, TLS failure, registry down, no instance.
    pub fn connect(message: impl Display) -> Self {
        Failure {
            code: 3,
            message: message.to_string(),
        }
    }
}

pub type Result<T = (), E = Failure> = std::result::Result<T, E>;

const EXAMPLES: &str = "\
Examples:
  getty call 127.0.0.1:7200 echo.Echo.Echo '{\"text\":\"hi\"}'
  getty describe ws://127.0.0.1:7300/rpc
  getty ping 127.0.0.1:7200 -c 10 -i 200ms
  getty list etcd://127.0.0.1:2379/getty echo.Echo
  getty list etcd://127.0.0.1:2379/getty
  getty watch zookeeper://127.0.0.1:2181/getty echo.Echo
  getty watch zookeeper://127.0.0.1:2181/getty

Exit codes: 0 ok, 1 the call failed, 2 usage, 3 connection, TLS or registry failure.";

#[derive(Parser)]
#[command(
    name = "getty",
    version,
    about = "Call, describe and ping getty-rpc peers; list and watch service registries",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Call(call::CallArgs),
    Describe(describe::DescribeArgs),
    Ping(ping::PingArgs),
    List(list::ListArgs),
    Watch(watch::WatchArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(Failure::connect(format!("cannot start the runtime: {e}"))),
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Call(a) => call::run(a).await,
            Command::Describe(a) => describe::run(a).await,
            Command::Ping(a) => ping::run(a).await,
            Command::List(a) => list::run(a).await,
            Command::Watch(a) => watch::run(a).await,
        }
    });
    // Connections and registry sessions still open are simply dropped.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    let style = output::Style::stderr();
    eprintln!("{} {}", style.red("error:"), f.message);
    ExitCode::from(f.code)
}
