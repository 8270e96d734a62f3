//! `getty call` on streaming methods of a server running in the test process: a server
//! stream's items printed one JSON line each, client-stream items read from stdin, both at once
//! for a bidirectional stream, an error mid-stream, Ctrl-C cancelling the stream at the
//! server, `--stream` for a peer without reflection, and `getty describe` of stream methods.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{getty, rt, stdout};
use futures_util::StreamExt;
use getty_core::ServerBuilder;
use getty_rpc::{Context, Json, Receiver, Router, RpcError, RpcOptions, RpcServer, Sender};
use predicates::str::contains;
use serde_json::{Value, json};

/// `Forever` producers that stopped (their stream cancelled or failed).
static STOPPED: AtomicU64 = AtomicU64::new(0);

struct OnStop;
impl Drop for OnStop {
    fn drop(&mut self) {
        STOPPED.fetch_add(1, Ordering::SeqCst);
    }
}

/// `test.Feed`: `Count` (n items), `Forever` (items until cancelled), `Fail` (two items, then
/// an error), `Sum` (client stream of numbers), `Echo` (bidirectional).
fn router() -> Router {
    let mut r = Router::new();
    r.add_server_stream::<Json, u64, Value, _, _>(
        "test.Feed",
        "Count",
        |_ctx: Context, n: u64, mut out: Sender<Json, Value>| async move {
            for i in 0..n {
                out.send(&json!({ "n": i })).await?;
            }
            Ok(())
        },
    );
    r.add_server_stream::<Json, (), Value, _, _>(
        "test.Feed",
        "Forever",
        |_ctx: Context, _: (), mut out: Sender<Json, Value>| async move {
            let _stop = OnStop;
            for i in 0u64.. {
                out.send(&json!({ "n": i })).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        },
    );
    r.add_server_stream::<Json, (), Value, _, _>(
        "test.Feed",
        "Fail",
        |_ctx: Context, _: (), mut out: Sender<Json, Value>| async move {
            out.send(&json!(1)).await?;
            out.send(&json!(2)).await?;
            Err(RpcError::handler("the feed broke"))
        },
    );
    r.add_client_stream::<Json, i64, i64, _, _>(
        "test.Feed",
        "Sum",
        |_ctx: Context, mut items: Receiver<Json, i64>| async move {
            let mut sum = 0;
            while let Some(n) = items.next().await {
                sum += n?;
            }
            Ok(sum)
        },
    );
    r.add_bidi::<Json, Value, Value, _, _>(
        "test.Feed",
        "Echo",
        |_ctx: Context, mut items: Receiver<Json, Value>, mut out: Sender<Json, Value>| async move {
            while let Some(v) = items.next().await {
                out.send(&json!({ "echo": v? })).await?;
            }
            Ok(())
        },
    );
    r
}

fn start(reflection: bool) -> RpcServer {
    rt().block_on(async {
        RpcServer::start(
            router(),
            RpcOptions::default().reflection(reflection),
            |cb| ServerBuilder::new("127.0.0.1:0").serve_tcp(cb),
        )
        .await
        .expect("tcp server")
    })
}

/// The feed server shared by this binary's tests.
fn feed() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        let s = start(true);
        let addr = s.local_addr().to_string();
        std::mem::forget(s);
        addr
    })
}

#[test]
fn a_server_stream_prints_one_json_line_per_item() {
    getty()
        .args(["call", feed(), "test.Feed.Count", "3"])
        .assert()
        .success()
        .stdout("{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
}

#[test]
fn an_error_mid_stream_exits_1_after_the_items_before_it() {
    getty()
        .args(["call", feed(), "test.Feed.Fail"])
        .assert()
        .code(1)
        .stdout("1\n2\n")
        .stderr(contains("the feed broke"));
}

#[test]
fn a_client_stream_reads_json_lines_from_stdin() {
    getty()
        .args(["call", feed(), "test.Feed.Sum"])
        .write_stdin("1\n2\n\n  39 \n")
        .assert()
        .success()
        .stdout("42\n");
    // A line that is not JSON is a usage error, naming the line.
    getty()
        .args(["call", feed(), "test.Feed.Sum"])
        .write_stdin("1\n{nope\n")
        .assert()
        .code(2)
        .stderr(contains("stdin line 2 is not valid JSON"));
    // Its items come from stdin, not from an argument.
    getty()
        .args(["call", feed(), "test.Feed.Sum", "[1,2]"])
        .assert()
        .code(2)
        .stderr(contains(
            "is a client stream: its items are read from stdin",
        ));
}

#[test]
fn a_bidirectional_stream_reads_stdin_and_prints_items() {
    getty()
        .args(["call", feed(), "test.Feed.Echo"])
        .write_stdin("{\"a\": 1}\n\"two\"\n[3]\n")
        .assert()
        .success()
        .stdout("{\"echo\":{\"a\":1}}\n{\"echo\":\"two\"}\n{\"echo\":[3]}\n");
}

#[test]
fn ctrl_c_cancels_the_stream_at_the_server() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_getty"))
        .args(["call", feed(), "test.Feed.Forever"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for i in 0..3 {
        let line = lines.next().expect("an item").unwrap();
        assert_eq!(
            line,
            format!("{{\"n\":{i}}}"),
            "items arrive as they are sent"
        );
    }
    assert_eq!(STOPPED.load(Ordering::SeqCst), 0, "still streaming");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "Ctrl-C is how a feed is stopped: {status:?}"
    );
    let until = Instant::now() + Duration::from_secs(10);
    while STOPPED.load(Ordering::SeqCst) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        STOPPED.load(Ordering::SeqCst),
        1,
        "the server's producer was cancelled"
    );
}

#[test]
fn stream_flag_calls_a_peer_without_reflection() {
    let s = start(false);
    let addr = s.local_addr().to_string();
    getty()
        .args(["call", &addr, "test.Feed.Count", "2", "--stream", "server"])
        .assert()
        .success()
        .stdout("{\"n\":0}\n{\"n\":1}\n");
    getty()
        .args(["call", &addr, "test.Feed.Sum", "--stream", "client"])
        .write_stdin("5\n6\n")
        .assert()
        .success()
        .stdout("11\n");
    rt().block_on(s.close());
}

#[test]
fn describe_marks_the_streamed_sides() {
    let out = getty().args(["describe", feed()]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for want in [
        "test.Feed\n",
        "  Count    u64 -> stream Value ",
        "  Sum      stream i64 -> i64 ",
        "  Echo     stream Value -> stream Value ",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    let out = getty()
        .args(["describe", feed(), "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let kinds: Vec<(&str, Option<&str>)> = v[0]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["stream"].as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Count", Some("server")),
            ("Echo", Some("bidi")),
            ("Fail", Some("server")),
            ("Forever", Some("server")),
            ("Sum", Some("client")),
        ]
    );
}
