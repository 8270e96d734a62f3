//! The `getty` binary against RPC servers running in the test process (TCP, WebSocket, TLS),
//! and through a `static://` registry.

mod common;

#[path = "../../examples/support/certs.rs"]
#[allow(dead_code)]
mod certs;

use common::{dead_port, getty, rt, servers, stdout};
use getty_core::{ServerBuilder, TlsServerConfig};
use getty_rpc::{RpcOptions, RpcServer};
use predicates::prelude::*;
use predicates::str::contains;

#[test]
fn call_over_tcp_prints_the_reply() {
    let s = servers();
    getty()
        .args(["call", &s.tcp, "test.Math.Add", r#"{"a":2,"b":3}"#])
        .assert()
        .success()
        .stdout("5\n");
}

#[test]
fn prost_method_over_the_json_codec_on_websocket_pretty_and_compact() {
    let s = servers();
    getty()
        .args(["call", &s.ws, "echo.Echo.Echo", r#"{"text":"hi"}"#])
        .assert()
        .success()
        .stdout("{\n  \"text\": \"hi\",\n  \"codec\": \"json\"\n}\n");
    getty()
        .args([
            "call",
            &s.ws,
            "echo.Echo.Echo",
            r#"{"text":"hi"}"#,
            "--compact",
        ])
        .assert()
        .success()
        .stdout("{\"text\":\"hi\",\"codec\":\"json\"}\n");
}

#[test]
fn request_from_stdin_and_from_a_file() {
    let s = servers();
    getty()
        .args(["call", &s.tcp, "test.Math.Add", "-"])
        .write_stdin(r#"{"a":40,"b":2}"#)
        .assert()
        .success()
        .stdout("42\n");
    getty()
        .args(["call", &s.tcp, "test.Math.Add", "-d", "@-"])
        .write_stdin("{\"a\":1,\n \"b\":1}\n")
        .assert()
        .success()
        .stdout("2\n");
    let file = std::env::temp_dir().join(format!("getty-cli-req-{}.json", std::process::id()));
    std::fs::write(&file, r#"{"a":7,"b":8}"#).unwrap();
    let data = format!("@{}", file.display());
    let out = getty()
        .args(["call", &s.tcp, "test.Math.Add", "-d", &data])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(stdout(&out), "15\n");
}

#[test]
fn metadata_and_timeout_reach_the_handler() {
    let s = servers();
    let out = getty()
        .args(["call", &s.tcp, "test.Math.Meta", "--compact"])
        .args(["-H", "user=ann", "--meta", "trace=t-1", "--timeout", "2s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["user"], "ann");
    assert_eq!(v["trace"], "t-1");
    let budget = v["budget_ms"].as_u64().expect("a deadline travelled");
    assert!(budget > 1000 && budget <= 2000, "budget {budget} ms");
}

#[test]
fn a_call_that_outlives_its_timeout_fails_with_exit_1() {
    let s = servers();
    getty()
        .args(["call", &s.tcp, "test.Math.Slow", "3000", "-t", "300ms"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("error: TIMEOUT (11): no reply within 300ms"));
}

#[test]
fn peer_errors_exit_1_with_status_and_message() {
    let s = servers();
    getty()
        .args(["call", &s.tcp, "test.Math.Nope", "{}"])
        .assert()
        .code(1)
        .stderr(
            r#"error: UNKNOWN_METHOD (2): unknown method "Nope" of service "test.Math""#
                .to_string()
                + "\n",
        );
    getty()
        .args(["call", &s.ws, "nope.Svc.Do"])
        .assert()
        .code(1)
        .stderr(contains(
            r#"error: UNKNOWN_SERVICE (1): unknown service "nope.Svc""#,
        ));
    getty()
        .args(["call", &s.tcp, "test.Math.Fail"])
        .assert()
        .code(1)
        .stderr(contains("error: HANDLER_ERROR (4): no sums today"));
    getty()
        .args(["call", &s.tcp, "test.Math.Add", r#"{"a":"x"}"#])
        .assert()
        .code(1)
        .stderr(contains("error: BAD_REQUEST (3)"));
}

#[test]
fn unreachable_hosts_exit_3_with_one_line() {
    let port = dead_port();
    let target = format!("127.0.0.1:{port}");
    let out = getty()
        .args(["call", &target, "test.Math.Add", "{}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("error: cannot connect to {target}: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    getty()
        .args(["ping", &format!("ws://127.0.0.1:{port}/rpc")])
        .assert()
        .code(3)
        .stderr(contains("cannot connect to"));
}

#[test]
fn usage_errors_exit_2() {
    let s = servers();
    getty()
        .args(["call", &s.tcp, "test.Math.Add", "{not json"])
        .assert()
        .code(2)
        .stderr(contains("error: the request is not valid JSON"));
    getty()
        .args(["call", &s.tcp, "Add", "{}"])
        .assert()
        .code(2)
        .stderr(contains("is not SERVICE.METHOD"));
    getty()
        .args(["call", "nowhere", "a.B"])
        .assert()
        .code(2)
        .stderr(contains("bad target"));
    getty()
        .args(["call", &s.tcp, "a.B", "-H", "novalue"])
        .assert()
        .code(2);
    getty()
        .args(["call", &s.tcp, "a.B", "-t", "soon"])
        .assert()
        .code(2);
    getty().args(["call"]).assert().code(2);
    // Without a SERVICE, every service is listed (none in a fresh process's memory://).
    getty()
        .args(["list", "memory://"])
        .assert()
        .success()
        .stdout("no instance in memory://\n");
    getty()
        .args(["list", "memory://", ""])
        .assert()
        .code(2)
        .stderr(contains("SERVICE must not be empty"));
    getty()
        .args(["--help"])
        .assert()
        .success()
        .stdout(contains("Examples:"));
    for cmd in ["call", "describe", "ping", "list", "watch"] {
        getty()
            .args(["help", cmd])
            .assert()
            .success()
            .stdout(contains("Examples:\n  getty ").and(contains(cmd)));
    }
}

#[test]
fn describe_lists_services_methods_types_and_codecs() {
    let s = servers();
    let out = getty().args(["describe", &s.tcp]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "no colours into a pipe: {text:?}");
    for want in [
        "echo.Echo\n",
        "  Echo  EchoRequest -> EchoReply  protobuf,json\n",
        "test.Math\n",
        "  Add   Add -> i64",
        "  Log   String (one-way)",
        "  Meta  () -> Value",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    // The same over WebSocket, as JSON, narrowed to one service.
    let out = getty()
        .args(["describe", &s.ws, "--json", "--service", "echo.Echo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["service"], "echo.Echo");
    assert_eq!(v[0]["methods"][0]["request_type"], "EchoRequest");
    assert_eq!(
        v[0]["methods"][0]["codecs"],
        serde_json::json!(["protobuf", "json"])
    );
}

#[test]
fn describe_of_a_peer_without_reflection_says_so() {
    let srv = rt().block_on(async {
        RpcServer::start(
            common::router(),
            RpcOptions::default().reflection(false),
            |cb| ServerBuilder::new("127.0.0.1:0").serve_tcp(cb),
        )
        .await
        .unwrap()
    });
    getty()
        .args(["describe", &srv.local_addr().to_string()])
        .assert()
        .code(1)
        .stderr(contains("does not answer reflection"));
    rt().block_on(srv.close());
}

#[test]
fn ping_reports_round_trips() {
    let s = servers();
    let out = getty()
        .args(["ping", &s.tcp, "-c", "3", "-i", "50ms"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.starts_with(&format!("PING {}\n", s.tcp)), "{text}");
    assert_eq!(text.matches("pong from").count(), 3, "{text}");
    assert!(text.contains("seq=3 time="), "{text}");
    assert!(
        text.contains("3 sent, 3 received, 0% loss, rtt min/avg/max = "),
        "{text}"
    );
    getty()
        .args(["ping", &s.ws, "-c", "1"])
        .assert()
        .success()
        .stdout(contains("1 sent, 1 received"));
}

#[test]
fn static_registry_target_goes_through_the_cluster() {
    let s = servers();
    let url = format!("static://{}?service=test.Math&codec=json", s.tcp);
    getty()
        .args(["call", &url, "test.Math.Add", r#"{"a":1,"b":2}"#])
        .assert()
        .success()
        .stdout("3\n");
    getty()
        .args(["describe", &url, "--service", "test.Math"])
        .assert()
        .success()
        .stdout(contains("test.Math\n").and(contains("echo.Echo").not()));
    getty()
        .args(["list", &url])
        .assert()
        .success()
        .stdout(contains("SERVICE    INSTANCE").and(contains(format!(
            "test.Math  {0}  {0}  tcp        json    100     -         -",
            s.tcp
        ))));
    // A registry target without a service to look for.
    getty()
        .args(["ping", &url])
        .assert()
        .code(2)
        .stderr(contains("--service"));
    // Listed, but nobody listens there.
    let dead = format!("static://127.0.0.1:{}?service=test.Math", dead_port());
    getty()
        .args(["call", &dead, "test.Math.Add", "{}", "-t", "500ms"])
        .assert()
        .code(3)
        .stderr(contains("could not connect to any instance of test.Math"));
}

#[test]
fn tls_with_client_certificates_and_a_wrong_ca() {
    let dir = std::env::temp_dir().join(format!(
        "getty-cli-tls-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    certs::write(&dir).unwrap();
    certs::write(&dir.join("other")).unwrap();
    let f = |name: &str| dir.join(name).display().to_string();
    let srv = rt().block_on(async {
        let tls = TlsServerConfig::from_pem_files(
            dir.join("server.pem"),
            dir.join("server.key"),
            Some(&dir.join("ca.pem")),
        )
        .unwrap();
        RpcServer::start(common::router(), RpcOptions::default(), |cb| {
            ServerBuilder::new("127.0.0.1:0").serve_tls(tls, cb)
        })
        .await
        .unwrap()
    });
    let port = srv.local_addr().port();
    let client = [
        "--ca",
        &f("ca.pem"),
        "--cert",
        &f("client.pem"),
        "--key",
        &f("client.key"),
    ];
    getty()
        .args(["call", &format!("tls://localhost:{port}"), "test.Math.Add"])
        .arg(r#"{"a":20,"b":22}"#)
        .args(client)
        .assert()
        .success()
        .stdout("42\n");
    // --tls with host:port, and the certificate's other name.
    getty()
        .args(["ping", &format!("127.0.0.1:{port}"), "--tls", "-c", "1"])
        .args(client)
        .assert()
        .success();
    // A server whose certificate does not chain to the CA given.
    let out = getty()
        .args([
            "call",
            &format!("tls://localhost:{port}"),
            "test.Math.Add",
            "{}",
        ])
        .args(["--ca", &f("other/ca.pem")])
        .args(["--cert", &f("client.pem"), "--key", &f("client.key")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("error: cannot connect to localhost:{port}: TLS: "))
            && err.lines().count() == 1,
        "{err}"
    );
    // A missing CA file, and --cert without --key.
    getty()
        .args(["call", &format!("tls://localhost:{port}"), "a.B"])
        .args(["--ca", &f("missing.pem")])
        .assert()
        .code(3)
        .stderr(contains("missing.pem"));
    getty()
        .args(["call", &format!("tls://localhost:{port}"), "a.B"])
        .args(["--cert", &f("client.pem")])
        .assert()
        .code(2);
    rt().block_on(srv.close());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer written against PROTOCOL.md alone, answering every Request of one connection with
/// what `answer` makes of it (and every Ping with a Pong); other frames are ignored.
fn raw_peer(answer: impl Fn(&getty_rpc::Frame) -> getty_rpc::Frame + Send + 'static) -> String {
    use getty_rpc::frame::{self, HEADER_LEN};
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        loop {
            let mut head = [0u8; HEADER_LEN];
            if s.read_exact(&mut head).is_err() {
                return;
            }
            let h = frame::peek_header(&head, usize::MAX).unwrap().unwrap();
            let mut whole = head.to_vec();
            whole.resize(h.total_len(), 0);
            if s.read_exact(&mut whole[HEADER_LEN..]).is_err() {
                return;
            }
            let f = frame::decode_frame(whole.into(), usize::MAX).unwrap();
            let reply = match f.kind {
                getty_rpc::Kind::Request => answer(&f),
                getty_rpc::Kind::Ping => getty_rpc::Frame::pong(f.seq),
                _ => continue,
            };
            let mut out = bytes::BytesMut::new();
            frame::encode(&reply, &mut out).unwrap();
            if s.write_all(&out).is_err() {
                return;
            }
        }
    });
    addr
}

#[test]
fn ok_replies_that_are_not_json_text_in_the_json_codec_exit_1() {
    use getty_rpc::{CodecId, Frame};
    for (codec, body, want) in [
        (CodecId::Json, &b"{{{"[..], "the reply is not valid JSON"),
        (CodecId::Json, b"", "the reply is not valid JSON"),
        (
            CodecId::Protobuf,
            b"{}",
            "an OK reply in codec protobuf to a json request",
        ),
        (
            CodecId::None,
            b"{}",
            "an OK reply in codec none to a json request",
        ),
    ] {
        let body = body.to_vec();
        let addr = raw_peer(move |f| Frame::response(f.seq, codec, body.clone()));
        getty()
            .args(["call", &addr, "echo.Echo.Echo", r#"{"text":"hi"}"#])
            .assert()
            .code(1)
            .stdout("")
            .stderr(contains(want));
    }
}

#[test]
fn a_local_only_status_that_came_on_the_wire_exits_1_not_3() {
    use getty_rpc::{Frame, Status};
    let addr = raw_peer(|f| Frame::error(f.seq, Status::ConnectionClosed, "upstream gone"));
    getty()
        .args(["call", &addr, "echo.Echo.Echo", r#"{"text":"hi"}"#])
        .assert()
        .code(1)
        .stderr("error: CONNECTION_CLOSED (10): upstream gone\n");
}
