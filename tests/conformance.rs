//! The conformance kit (`conformance/`) played over real sockets: every vector and scenario
//! against the Rust implementation, and the same against the Python peer written from
//! PROTOCOL.md alone (`conformance/python/getty_peer.py`), which also calls the rpc_echo
//! example's service and serves the call the Rust peer makes back to it.
//!
//! Needs `python3` on PATH (standard library only).

mod python_peer;
#[path = "../examples/rpc_echo.rs"]
#[allow(dead_code)]
mod rpc_echo;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use getty::core::{Decoded, ServerBuilder};
use getty::rpc::frame::{self, DEFAULT_MAX_FRAME};
use getty::rpc::{
    CallOptions, CodecId, Context, Frame, Kind, Prost, Router, RpcError, RpcOptions, RpcServer,
    Status,
};
use getty_proto::echo::{EchoReply, EchoRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use python_peer::{PythonServer, kit, python};

/// How long one expectation waits for the peer (real time: the Python peer is a process).
const WAIT: Duration = Duration::from_secs(5);

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vectors() -> Vec<Value> {
    load(&kit().join("vectors/frames.json"))["vectors"]
        .as_array()
        .expect("vectors")
        .clone()
}

fn scenarios() -> Vec<Value> {
    let mut paths: Vec<_> = std::fs::read_dir(kit().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The services the kit expects (conformance/README.md): the rpc_echo example's `echo.Echo`
/// and `conformance.Relay/Echo`, which asks the caller's own `echo.Echo/Echo`.
fn kit_router() -> Router {
    let mut r = rpc_echo::router();
    r.add_prost(
        "conformance.Relay",
        "Echo",
        |ctx: Context, req: EchoRequest| async move {
            let mut opts = CallOptions::new().codec(ctx.codec());
            if let Some(d) = ctx.deadline() {
                opts = opts.timeout(d.saturating_duration_since(Instant::now()));
            }
            ctx.peer()
                .call::<Prost, EchoRequest, EchoReply>("echo.Echo", "Echo", &req, opts)
                .await
                .map_err(|e| match e.status {
                    // Local-only codes are never sent (PROTOCOL.md section 13).
                    Status::Timeout => RpcError::new(Status::DeadlineExceeded, e.message),
                    Status::ConnectionClosed if !e.is_from_peer() => RpcError::internal(e.message),
                    _ => e,
                })
        },
    );
    r
}

/// The Rust peer under test. It announces itself (a `getty.Peer/Hello` OneWay as its first
/// frame), which the runner and the Python client must take in their stride.
async fn rust_peer() -> RpcServer {
    let opts = RpcOptions::default().identity("conformance-rust".into());
    RpcServer::start(kit_router(), opts, |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .expect("server")
}

/// One connection to the peer under test, read frame by frame.
struct Wire {
    s: TcpStream,
    buf: BytesMut,
    /// Patterns of frames that may come at any point and are skipped.
    tolerate: Vec<Value>,
    vars: HashMap<String, u64>,
    fences: u64,
}

impl Wire {
    async fn open(addr: &str, tolerate: Vec<Value>) -> Wire {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        Wire {
            s,
            buf: BytesMut::new(),
            tolerate,
            vars: HashMap::new(),
            fences: 0,
        }
    }

    /// The next frame, or None at the end of the stream.
    async fn next(&mut self) -> Result<Option<Frame>, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match frame::decode(&self.buf, usize::MAX) {
                Ok(Decoded::Package { pkg, len }) => {
                    self.buf.advance(len);
                    return Ok(Some(pkg));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("the peer sent a malformed frame: {e}")),
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk))
                .await
                .map_err(|_| format!("nothing within {WAIT:?}"))?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err("the stream ended inside a frame".into())
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame that is not tolerated (a Hello, a heartbeat Ping, a listed pattern).
    async fn next_relevant(&mut self) -> Result<Option<Frame>, String> {
        loop {
            let Some(f) = self.next().await? else {
                return Ok(None);
            };
            let hello = f.kind == Kind::OneWay && f.service == "getty.Peer";
            let heartbeat = f.kind == Kind::Ping;
            let listed = self
                .tolerate
                .iter()
                .any(|p| matches(p, &f, &self.vars).is_ok());
            if !(hello || heartbeat || listed) {
                return Ok(Some(f));
            }
        }
    }

    async fn send_bytes(&mut self, b: &[u8]) -> Result<(), String> {
        self.s.write_all(b).await.map_err(|e| format!("write: {e}"))
    }

    async fn send(&mut self, spec: &Value) -> Result<(), String> {
        let f = build(spec, &self.vars)?;
        let mut out = BytesMut::new();
        frame::encode(&f, &mut out).map_err(|e| format!("encode {spec}: {e}"))?;
        self.send_bytes(&out).await
    }

    async fn expect(&mut self, pattern: &Value, capture: Option<&Value>) -> Result<(), String> {
        let f = self
            .next_relevant()
            .await?
            .ok_or_else(|| format!("closed; expected {pattern}"))?;
        matches(pattern, &f, &self.vars).map_err(|e| format!("expected {pattern}: {e}"))?;
        if let Some(Value::Object(c)) = capture {
            for (field, var) in c {
                let v = match field.as_str() {
                    "seq" => f.seq,
                    other => return Err(format!("cannot capture {other}")),
                };
                self.vars
                    .insert(var.as_str().unwrap_or_default().to_string(), v);
            }
        }
        Ok(())
    }

    /// Nothing else comes back: a Ping as a fence, then only its Pong may arrive.
    async fn expect_silence(&mut self) -> Result<(), String> {
        self.fences += 1;
        let seq = 0xfe_0000 + self.fences;
        let mut out = BytesMut::new();
        frame::encode(&Frame::ping(seq), &mut out).unwrap();
        self.send_bytes(&out).await?;
        match self.next_relevant().await? {
            Some(f) if f.kind == Kind::Pong && f.seq == seq => Ok(()),
            Some(f) => Err(format!("expected nothing, got {f:?}")),
            None => Err("expected nothing, the connection closed".into()),
        }
    }

    /// The peer closes, having sent nothing (but tolerated frames).
    async fn expect_close(&mut self) -> Result<(), String> {
        match self.next_relevant().await? {
            None => Ok(()),
            Some(f) => Err(format!("expected a close with nothing sent, got {f:?}")),
        }
    }
}

fn num(v: &Value, vars: &HashMap<String, u64>) -> Result<u64, String> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a u64")),
        Value::String(s) if s.starts_with('$') => vars
            .get(&s[1..])
            .copied()
            .ok_or_else(|| format!("{s} was not captured")),
        other => Err(format!("{other} is not a number")),
    }
}

/// A frame from a scenario's `send` object.
fn build(spec: &Value, vars: &HashMap<String, u64>) -> Result<Frame, String> {
    let get = |k: &str| spec.get(k).map(|v| num(v, vars)).transpose();
    let kind = Kind::from_u8(get("kind")?.unwrap_or(0) as u8).ok_or("bad kind")?;
    let text = |k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let body = if let Some(j) = spec.get("body_json") {
        serde_json::to_vec(j).unwrap()
    } else {
        unhex(spec.get("body_hex").and_then(Value::as_str).unwrap_or(""))
    };
    Ok(Frame {
        codec: CodecId::from_u8(get("codec")?.unwrap_or(0) as u8),
        status: Status::from_code(get("status")?.unwrap_or(0) as u16),
        timeout_ms: get("timeout_ms")?.unwrap_or(0) as u32,
        ..Frame::request(
            get("seq")?.unwrap_or(0),
            CodecId::None,
            text("service"),
            text("method"),
            body,
        )
    })
    .map(|f| Frame { kind, ..f })
}

/// Whether `f` has every field `pattern` states.
fn matches(pattern: &Value, f: &Frame, vars: &HashMap<String, u64>) -> Result<(), String> {
    let Value::Object(p) = pattern else {
        return Err("pattern is not an object".into());
    };
    for (k, want) in p {
        let ok = match k.as_str() {
            "kind" => num(want, vars)? == u64::from(f.kind.as_u8()),
            "seq" => num(want, vars)? == f.seq,
            "codec" => num(want, vars)? == u64::from(f.codec.as_u8()),
            "timeout_ms" => num(want, vars)? == u64::from(f.timeout_ms),
            "status" if want == "nonzero" => f.status.code() != 0,
            "status" => num(want, vars)? == u64::from(f.status.code()),
            "service" => want.as_str() == Some(f.service.as_str()),
            "method" => want.as_str() == Some(f.method.as_str()),
            "body_hex" => unhex(want.as_str().unwrap_or("")) == f.body[..],
            "body_utf8" => std::str::from_utf8(&f.body).is_ok() == (want == true),
            "body_json" => serde_json::from_slice::<Value>(&f.body).ok().as_ref() == Some(want),
            other => return Err(format!("unknown pattern field {other}")),
        };
        if !ok {
            return Err(format!("{k} differs in {f:?}"));
        }
    }
    Ok(())
}

fn frame_fields(f: &Frame) -> Value {
    json!({
        "kind": f.kind.as_u8(),
        "codec": f.codec.as_u8(),
        "flags": f.flags,
        "status": f.status.code(),
        "seq": f.seq,
        "timeout_ms": f.timeout_ms,
        "service": f.service,
        "method": f.method,
        "metadata": f.metadata.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "body_hex": f.body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    })
}

async fn play_vector(addr: &str, v: &Value) -> Result<(), String> {
    let mut w = Wire::open(addr, Vec::new()).await;
    w.send_bytes(&unhex(v["hex"].as_str().unwrap())).await?;
    if v["outcome"] == "violation" {
        return w.expect_close().await;
    }
    for r in v["outcome"]["replies"].as_array().unwrap() {
        w.expect(r, None).await?;
    }
    w.expect_silence().await
}

async fn play_scenario(addr: &str, sc: &Value) -> Result<(), String> {
    let tolerate = sc["tolerate"].as_array().cloned().unwrap_or_default();
    let mut w = Wire::open(addr, tolerate).await;
    for (i, step) in sc["steps"].as_array().unwrap().iter().enumerate() {
        let r = if let Some(spec) = step.get("send") {
            w.send(spec).await
        } else if let Some(h) = step.get("send_hex") {
            w.send_bytes(&unhex(h.as_str().unwrap())).await
        } else if let Some(p) = step.get("expect") {
            w.expect(p, step.get("capture")).await
        } else if step.get("expect_silence").is_some() {
            w.expect_silence().await
        } else if step.get("expect_close").is_some() {
            w.expect_close().await
        } else {
            Err(format!("unknown step {step}"))
        };
        r.map_err(|e| format!("step {i}: {e}"))?;
    }
    Ok(())
}

/// Plays the whole kit against `addr`; panics listing every case that failed.
async fn play_kit(addr: &str, who: &str) {
    let mut failed = Vec::new();
    let mut n = 0;
    for v in vectors() {
        n += 1;
        if let Err(e) = play_vector(addr, &v).await {
            failed.push(format!("vector {}: {e}", v["name"]));
        }
    }
    for sc in scenarios() {
        n += 1;
        if let Err(e) = play_scenario(addr, &sc).await {
            failed.push(format!("scenario {}: {e}", sc["name"]));
        }
    }
    assert!(n > 40, "only {n} cases in the kit");
    assert!(
        failed.is_empty(),
        "{who}: {} of {n} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn every_vector_decodes_to_its_fields_or_is_a_violation() {
    for v in vectors() {
        let name = &v["name"];
        let bytes = unhex(v["hex"].as_str().unwrap());
        let got = frame::decode(&bytes, DEFAULT_MAX_FRAME);
        if v["outcome"] == "violation" {
            assert!(got.is_err(), "{name}: decoded {got:?}");
        } else {
            match got {
                Ok(Decoded::Package { pkg, len }) => {
                    assert_eq!(len, bytes.len(), "{name}");
                    assert_eq!(frame_fields(&pkg), v["frame"], "{name}");
                    // And the Rust encoder writes the same bytes.
                    let mut out = BytesMut::new();
                    frame::encode(&pkg, &mut out).unwrap();
                    assert_eq!(&out[..], &bytes[..], "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn the_rust_peer_passes_the_kit() {
    let srv = rust_peer().await;
    play_kit(&srv.local_addr().to_string(), "Rust peer").await;
    srv.close().await;
}

#[tokio::test]
async fn the_python_peer_passes_the_kit() {
    let py = PythonServer::start();
    play_kit(&py.addr, "Python peer").await;
}

#[tokio::test]
async fn the_python_client_calls_the_rpc_echo_example_and_serves_its_call_back() {
    let srv = rust_peer().await;
    let addr = srv.local_addr().to_string();
    let out = tokio::task::spawn_blocking(move || python(&["call", &addr]).output())
        .await
        .unwrap()
        .expect("python3 on PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "ok echo json",
        "ok echo protobuf",
        "ok relay json",
        "ok relay protobuf",
        "ok served the call back 2 times",
        "ok unknown method answered 2",
        // The Rust peer's first frame, which a peer without getty.Peer drops unanswered.
        "ok one-ways dropped: getty.Peer/Hello",
    ] {
        assert!(stdout.contains(want), "{want:?} missing in:\n{stdout}");
    }
    srv.close().await;
}

#[test]
fn the_kit_files_are_what_make_kit_writes() {
    let out = Command::new("python3")
        .arg(kit().join("python/make_kit.py"))
        .arg("--check")
        .output()
        .expect("python3 on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PROTOCOL.md section 19 states the defaults; they are `RpcOptions::default()`.
#[test]
fn the_defaults_table_is_what_rpc_options_default_says() {
    let doc = include_str!("../getty-rpc/PROTOCOL.md");
    let section = doc
        .split("## 19. Defaults")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("section 19");
    let value = |setting: &str| {
        section
            .lines()
            .find_map(|l| {
                let cols: Vec<_> = l.split('|').map(str::trim).collect();
                (cols.len() > 2 && cols[1] == setting).then(|| cols[2].to_string())
            })
            .unwrap_or_else(|| panic!("no row {setting:?} in section 19"))
    };
    let d = RpcOptions::default();
    let secs = |t: Duration| format!("{} s", t.as_secs());
    assert_eq!(value("heartbeat period"), secs(d.heartbeat_period));
    assert_eq!(value("heartbeat misses"), d.heartbeat_misses.to_string());
    assert_eq!(
        value("window, calls (in-flight limit)"),
        d.max_inflight.to_string()
    );
    assert_eq!(
        value("window, bytes"),
        format!("{} (2 × the frame limit)", d.max_inflight_bytes)
    );
    assert_eq!(d.max_inflight_bytes, 2 * d.max_frame as u64);
    assert_eq!(
        value("frame limit"),
        format!("{} MiB = {} bytes", d.max_frame >> 20, d.max_frame)
    );
    assert_eq!(value("call timeout"), secs(d.default_timeout));
    assert_eq!(
        value("reflection"),
        if d.reflection { "served" } else { "off" }
    );
}
