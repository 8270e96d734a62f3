//! Shared by the `getty` binary's tests: RPC servers running in the test process (on a runtime
//! of their own, so that tests can block on the binary), and the command to run.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use getty_core::ServerBuilder;
use getty_rpc::{Context, Json, Router, RpcError, RpcOptions, RpcServer};
use serde::{Deserialize, Serialize};

/// The runtime the in-process servers (and registry clients) run on.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// The messages of the `rpc_echo` example, generated from `proto/echo.proto`.
pub use getty_proto::echo::{EchoReply, EchoRequest};

#[derive(Serialize, Deserialize)]
pub struct Add {
    pub a: i64,
    pub b: i64,
}

/// `echo.Echo/Echo` (prost, as in the rpc_echo example) and `test.Math`: `Add` (serde JSON),
/// `Meta` (what the handler saw of metadata and deadline), `Slow` (sleeps), `Fail` (handler
/// error), `Log` (one-way).
pub fn router() -> Router {
    let mut r = Router::new();
    r.add_prost(
        "echo.Echo",
        "Echo",
        |ctx: Context, req: EchoRequest| async move {
            Ok(EchoReply {
                payload: req.payload,
                text: req.text,
                codec: ctx.codec().to_string(),
            })
        },
    );
    r.add_json("test.Math", "Add", |_ctx: Context, req: Add| async move {
        Ok(req.a + req.b)
    });
    r.add_json("test.Math", "Meta", |ctx: Context, _: ()| async move {
        Ok(serde_json::json!({
            "user": ctx.meta("user"),
            "trace": ctx.meta("trace"),
            "budget_ms": ctx.deadline().map(|d| d.saturating_duration_since(Instant::now()).as_millis() as u64),
        }))
    });
    r.add_json("test.Math", "Slow", |_ctx: Context, ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    });
    r.add_json("test.Math", "Fail", |_ctx: Context, _: ()| async move {
        Err::<(), _>(RpcError::handler("no sums today"))
    });
    r.add_one_way::<Json, String, _, _>("test.Math", "Log", |_ctx: Context, _line: String| async {
    });
    r
}

/// Servers shared by the tests of one binary.
pub struct Servers {
    /// `127.0.0.1:PORT`
    pub tcp: String,
    /// `ws://127.0.0.1:PORT/rpc`
    pub ws: String,
}

pub fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| {
        rt().block_on(async {
            let tcp = start_tcp().await;
            let ws = RpcServer::start(router(), RpcOptions::default(), |cb| {
                ServerBuilder::new("127.0.0.1:0").serve_ws("/rpc", cb)
            })
            .await
            .expect("ws server");
            let s = Servers {
                tcp: tcp.local_addr().to_string(),
                ws: format!("ws://{}/rpc", ws.local_addr()),
            };
            // They serve until the test process exits.
            std::mem::forget(tcp);
            std::mem::forget(ws);
            s
        })
    })
}

/// A TCP server of [`router`] on a free port.
pub async fn start_tcp() -> RpcServer {
    RpcServer::start(router(), RpcOptions::default(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .expect("tcp server")
}

/// The `getty` binary, with a watchdog timeout and no colour settings from outside.
pub fn getty() -> assert_cmd::Command {
    let mut c = assert_cmd::cargo::cargo_bin_cmd!("getty");
    c.timeout(Duration::from_secs(60)).env_remove("NO_COLOR");
    c
}

/// A loopback port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// stdout of a finished command, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
