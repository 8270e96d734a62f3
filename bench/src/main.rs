//! `getty-bench`: unary echo and streams over getty-rpc, per the benchmark contract
//! (`shared/bench/README.md`); see this crate's README for how it measures.
//!
//! ```text
//! getty-bench server --addr 127.0.0.1:PORT [--codec protobuf|json] [--transport tcp|ws|tls]
//! getty-bench client --addr 127.0.0.1:PORT --conns C --inflight P --payload BYTES --secs S
//!                    [--warmup-secs W] [--codec protobuf|json] [--transport tcp|ws|tls] [--reverse]
//!                    [--mode unary|stream|bidi]
//! ```
//! Streams (`streams.rs`): the stream mode counts items where the client receives them, the
//! histogram holding the gaps between items of one stream; bidi keeps 16 items in flight per
//! stream and records each item's round trip. `--reverse` with a stream mode: the server opens
//! the streams to the client's streaming service (for `stream` the client sends the items, for
//! `bidi` it echoes them); the server counts the items where it receives them and reports the
//! figures over the same connection, as for reverse unary calls.
//! Beyond the contract, both roles take `--rt multi|current` and `--threads N` (or the
//! environment variables `GETTY_BENCH_RT` and `GETTY_BENCH_THREADS`): see [`RtKind`]; the client
//! takes `--spawn-slots` (`GETTY_BENCH_SPAWN_SLOTS=1`): one task per in-flight slot, as the
//! peerbench clients do, instead of one task per connection.

mod echo;
mod load;
mod net;
mod streams;

use std::process::exit;
use std::sync::Arc;
use std::time::Duration;

use getty_rpc::{CallOptions, CodecId, Prost, Router};
use tokio::sync::oneshot;

use echo::{CONTROL_SERVICE, START_METHOD, StartReply, StartRequest};
use load::{Load, STUCK_GRACE, Tally};
use net::Transport;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The tokio runtime(s) a process runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RtKind {
    /// One multi-thread runtime (`threads` workers; 0: one per CPU), as `#[tokio::main]`.
    Multi,
    /// Current-thread runtimes: the server runs on one; the client runs `threads` of them
    /// (default 1), each on its own OS thread with its share of the connections.
    Current,
}

#[derive(Debug)]
struct Args {
    server: bool,
    addr: String,
    conns: usize,
    inflight: usize,
    payload: usize,
    secs: f64,
    warmup: f64,
    codec: CodecId,
    transport: Transport,
    reverse: bool,
    spawn_slots: bool,
    rt: RtKind,
    threads: usize,
    mode: Mode,
}

/// What the client's load is (`--mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Unary,
    Stream,
    Bidi,
}

const USAGE: &str = "usage:
  getty-bench server --addr 127.0.0.1:PORT [--codec protobuf|json] [--transport tcp|ws|tls]
  getty-bench client --addr 127.0.0.1:PORT --conns C --inflight P --payload BYTES --secs S
                     [--warmup-secs W] [--codec protobuf|json] [--transport tcp|ws|tls] [--reverse]
                     [--mode unary|stream|bidi]
both also take [--rt multi|current] [--threads N] (env GETTY_BENCH_RT, GETTY_BENCH_THREADS);
the client also [--spawn-slots] (env GETTY_BENCH_SPAWN_SLOTS=1): a task per in-flight slot";

fn parse_rt(s: &str) -> Result<RtKind, String> {
    match s {
        "multi" => Ok(RtKind::Multi),
        "current" => Ok(RtKind::Current),
        _ => Err(format!("--rt {s:?}: expected multi or current")),
    }
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let (role, mut rest) = argv.split_first().ok_or("no role given")?;
    let server = match role.as_str() {
        "server" => true,
        "client" => false,
        r => return Err(format!("unknown role {r:?}")),
    };
    let mut a = Args {
        server,
        addr: String::new(),
        conns: 1,
        inflight: 1,
        payload: 64,
        secs: 5.0,
        warmup: 1.0,
        codec: CodecId::Protobuf,
        transport: Transport::Tcp,
        reverse: false,
        spawn_slots: false,
        rt: RtKind::Multi,
        threads: 0,
        mode: Mode::Unary,
    };
    if let Ok(v) = std::env::var("GETTY_BENCH_RT") {
        a.rt = parse_rt(&v)?;
    }
    if let Ok(v) = std::env::var("GETTY_BENCH_SPAWN_SLOTS") {
        a.spawn_slots = v == "1";
    }
    if let Ok(v) = std::env::var("GETTY_BENCH_THREADS") {
        a.threads = v
            .parse()
            .map_err(|_| format!("GETTY_BENCH_THREADS={v:?}"))?;
    }
    let (mut conns, mut inflight, mut payload, mut secs) = (false, false, false, false);
    while let Some((k, r)) = rest.split_first() {
        rest = r;
        if k == "--reverse" {
            a.reverse = true;
            continue;
        }
        if k == "--spawn-slots" {
            a.spawn_slots = true;
            continue;
        }
        let (v, r) = rest
            .split_first()
            .ok_or_else(|| format!("{k} needs a value"))?;
        rest = r;
        let int = || v.parse::<usize>().map_err(|_| format!("{k} {v:?}"));
        let float = || {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{k} {v:?}"))
        };
        match k.as_str() {
            "--addr" => a.addr = v.clone(),
            "--conns" => (a.conns, conns) = (int()?, true),
            "--inflight" => (a.inflight, inflight) = (int()?, true),
            "--payload" => (a.payload, payload) = (int()?, true),
            "--secs" => (a.secs, secs) = (float()?, true),
            "--warmup-secs" => a.warmup = float()?,
            "--codec" => {
                a.codec = match v.as_str() {
                    "protobuf" => CodecId::Protobuf,
                    "json" => CodecId::Json,
                    _ => return Err(format!("--codec {v:?}: expected protobuf or json")),
                }
            }
            "--transport" => {
                a.transport = Transport::parse(v)
                    .ok_or_else(|| format!("--transport {v:?}: expected tcp, ws or tls"))?
            }
            "--rt" => a.rt = parse_rt(v)?,
            "--mode" => {
                a.mode = match v.as_str() {
                    "unary" => Mode::Unary,
                    "stream" => Mode::Stream,
                    "bidi" => Mode::Bidi,
                    _ => return Err(format!("--mode {v:?}: expected unary, stream or bidi")),
                }
            }
            "--threads" => a.threads = int()?,
            _ => return Err(format!("unknown flag {k}")),
        }
    }
    if a.addr.is_empty() {
        return Err("--addr is required".into());
    }
    if !a.server {
        if !(conns && inflight && payload && secs) {
            return Err("client needs --conns, --inflight, --payload and --secs".into());
        }
        if a.conns == 0 || a.inflight == 0 {
            return Err("--conns and --inflight must be at least 1".into());
        }
    }
    Ok(a)
}

fn multi_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        b.worker_threads(threads);
    }
    b.enable_all().build()
}

fn current_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("getty-bench: {e}\n{USAGE}");
            exit(2);
        }
    };
    let role = if a.server { "server" } else { "client" };
    let r = if a.server { server(&a) } else { client(a) };
    if let Err(e) = r {
        eprintln!("getty-bench {role}: {e}");
        exit(1);
    }
}

// ---- server ----

fn server(a: &Args) -> Res<()> {
    let rt = match a.rt {
        RtKind::Multi => multi_runtime(a.threads)?,
        RtKind::Current => current_runtime()?,
    };
    rt.block_on(async {
        let mut router = Router::new();
        echo::add_echo(&mut router);
        echo::add_control(&mut router, a.codec);
        streams::add_streams(&mut router);
        let (server, ca) = net::serve(router, a.transport, &a.addr).await?;
        eprintln!(
            "getty-bench server: {:?} on {} ({:?} runtime)",
            a.transport,
            server.local_addr(),
            a.rt
        );
        stopped().await;
        if let Some(path) = ca {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

// ---- client ----

/// One group of connections on one runtime: connects, reports ready, waits for the start
/// signal, runs, and returns its figures.
async fn group(
    a: Arc<Args>,
    conns: usize,
    ready: std::sync::mpsc::Sender<Res<()>>,
    start: oneshot::Receiver<Load>,
) -> Res<Tally> {
    let mut router = Router::new();
    echo::add_echo(&mut router);
    // `--reverse` with a stream mode: the server opens its streams to these.
    streams::add_streams(&mut router);
    let client = match net::connect(router, a.transport, &a.addr, conns).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.to_string().into()));
            return Err(e);
        }
    };
    let peers = client.peers();
    if peers.len() != conns {
        return Err(format!("{} connections open, {conns} wanted", peers.len()).into());
    }
    let _ = ready.send(Ok(()));
    let load = start.await.map_err(|_| "not started")?;
    let load = Arc::new(load);
    let mut tasks = tokio::task::JoinSet::new();
    for peer in peers {
        let (a, load) = (a.clone(), load.clone());
        tasks.spawn(async move {
            if !a.reverse {
                return Ok(match a.mode {
                    Mode::Stream => streams::drive_stream(&peer, &load, a.payload).await,
                    Mode::Bidi => streams::drive_bidi(&peer, &load, a.payload).await,
                    Mode::Unary => load::drive(&peer, &load).await,
                });
            }
            // The server drives the load on this connection and reports what it measured.
            let req = StartRequest {
                inflight: a.inflight as u32,
                payload: a.payload as u32,
                warmup_secs: a.warmup,
                secs: a.secs,
                codec: a.codec.as_u8() as u32,
                spawn_slots: a.spawn_slots,
                mode: match a.mode {
                    Mode::Unary => 0,
                    Mode::Stream => 1,
                    Mode::Bidi => 2,
                },
            };
            let budget = Duration::from_secs_f64(a.warmup + a.secs) + STUCK_GRACE * 2;
            let opts = CallOptions::new().timeout(budget);
            peer.call::<Prost, StartRequest, StartReply>(CONTROL_SERVICE, START_METHOD, &req, opts)
                .await
                .map(StartReply::into_tally)
                .map_err(|e| format!("{CONTROL_SERVICE}/{START_METHOD}: {e}"))
        });
    }
    let mut total = Tally::default();
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(t) => total.merge(&t),
            Err(e) => {
                // The whole connection's run is lost: count its slots as failed.
                eprintln!("getty-bench: {e}");
                total.errors += a.inflight as u64;
            }
        }
    }
    Ok(total)
}

fn client(a: Args) -> Res<()> {
    let a = Arc::new(a);
    // Connections per runtime.
    let groups: Vec<usize> = match a.rt {
        RtKind::Multi => vec![a.conns],
        RtKind::Current => {
            let k = a.threads.clamp(1, a.conns);
            (0..k)
                .map(|i| a.conns / k + usize::from(i < a.conns % k))
                .collect()
        }
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut starts = Vec::new();
    let mut threads = Vec::new();
    for (i, conns) in groups.iter().copied().enumerate() {
        let (start_tx, start_rx) = oneshot::channel();
        starts.push(start_tx);
        let (a, ready) = (a.clone(), ready_tx.clone());
        let t = std::thread::Builder::new()
            .name(format!("bench-{i}"))
            .spawn(move || -> Res<Tally> {
                let rt = match a.rt {
                    RtKind::Multi => multi_runtime(a.threads)?,
                    RtKind::Current => current_runtime()?,
                };
                rt.block_on(group(a, conns, ready, start_rx))
            })?;
        threads.push(t);
    }
    drop(ready_tx);
    for _ in &groups {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("cannot connect: {e}").into()),
            Err(_) => return Err("cannot connect".into()),
        }
    }
    // Every connection is up: the clock starts now, the same for every group.
    let mut load = Load::new(a.inflight, a.payload, a.codec, a.warmup, a.secs);
    load.spawn_slots = a.spawn_slots;
    for s in starts {
        let _ = s.send(load.clone());
    }
    let mut total = Tally::default();
    for t in threads {
        let t = t.join().map_err(|_| "a client thread panicked")??;
        total.merge(&t);
    }
    let q = |x| total.hist.value_at_quantile(x) as f64 / 1000.0;
    println!(
        r#"{{"impl":"getty","conns":{},"inflight":{},"payload":{},"secs":{},"calls":{},"rps":{:.1},"p50_us":{:.1},"p99_us":{:.1},"p999_us":{:.1},"errors":{}}}"#,
        a.conns,
        a.inflight,
        a.payload,
        a.secs,
        total.calls,
        if a.secs > 0.0 {
            total.calls as f64 / a.secs
        } else {
            0.0
        },
        q(0.5),
        q(0.99),
        q(0.999),
        total.errors,
    );
    // Don't wait for the server's goodbyes.
    exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        let v: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        parse_args(&v)
    }

    #[test]
    fn parses_the_contract() {
        let a = args("client --addr 127.0.0.1:1 --conns 4 --inflight 64 --payload 16384 --secs 5 --warmup-secs 0.5 --codec json --transport ws --reverse").unwrap();
        assert!(!a.server && a.reverse);
        assert_eq!((a.conns, a.inflight, a.payload), (4, 64, 16384));
        assert_eq!((a.secs, a.warmup), (5.0, 0.5));
        assert_eq!(a.codec, CodecId::Json);
        assert_eq!(a.transport, Transport::Ws);
        let s = args("server --addr 127.0.0.1:1 --transport tls").unwrap();
        assert!(s.server && s.transport == Transport::Tls && s.codec == CodecId::Protobuf);
        assert!(args("client --addr x:1 --conns 1").is_err());
        assert!(args("server").is_err());
        assert!(args("server --addr x:1 --codec xml").is_err());
    }

    #[test]
    fn echo_check() {
        for codec in [CodecId::Protobuf, CodecId::Json] {
            let p = echo::payload(100);
            let body = echo::request_body(codec, &p);
            assert!(echo::is_echo(codec, &body, &p, &body));
            let other = echo::request_body(codec, &echo::payload(99));
            assert!(!echo::is_echo(codec, &body, &p, &other));
            assert!(!echo::is_echo(codec, &body, &p, b"junk"));
        }
        // Not byte-identical, but the same message: still an echo.
        let p = echo::payload(3);
        let body = echo::request_body(CodecId::Json, &p);
        assert!(echo::is_echo(
            CodecId::Json,
            &body,
            &p,
            br#"{ "payload" : "abc" }"#
        ));
    }

    #[test]
    fn histogram_round_trips_through_start_reply() {
        let mut t = Tally::default();
        for v in [1_000u64, 20_000, 20_001, 5_000_000] {
            t.hist.record(v).unwrap();
        }
        t.calls = 4;
        let back = StartReply::from_tally(&t).into_tally();
        assert_eq!(back.hist.len(), 4);
        assert_eq!(back.calls, 4);
        for q in [0.25, 0.5, 0.75, 1.0] {
            assert_eq!(back.hist.value_at_quantile(q), t.hist.value_at_quantile(q));
        }
    }

    /// The benchmark keeps the peerbench contract's `string payload = 1` (held as `Bytes`, JSON
    /// as a plain string), but in Protobuf it is proto/echo.proto's echo: the same bytes both
    /// ways, so a peer built from the .proto decodes the bench's calls and replies.
    #[test]
    fn protobuf_echo_is_echo_proto() {
        use getty_proto::echo as schema;
        use prost::Message;
        let p = echo::payload(40);
        let body = echo::request_body(CodecId::Protobuf, &p);
        let req = schema::EchoRequest {
            payload: p.clone().into_bytes(),
            text: String::new(),
        };
        assert_eq!(&body[..], &req.encode_to_vec()[..]);
        let reply = schema::EchoReply {
            payload: p.clone().into_bytes(),
            ..Default::default()
        };
        assert!(echo::is_echo(
            CodecId::Protobuf,
            &body,
            &p,
            &reply.encode_to_vec()
        ));
        assert_eq!(schema::EchoRequest::decode(&body[..]).unwrap(), req);
    }
}
