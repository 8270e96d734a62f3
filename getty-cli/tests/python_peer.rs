//! `getty` against a peer that implements only what PROTOCOL.md documents: the Python peer of
//! the conformance kit (`conformance/python/getty_peer.py`, a child process; needs `python3`).

mod common;
#[path = "../../tests/python_peer/mod.rs"]
mod python_peer;

use common::{getty, stdout};
use predicates::str::contains;
use python_peer::PythonServer;

#[test]
fn describe_lists_what_the_python_peer_serves() {
    let py = PythonServer::start();
    let out = getty().args(["describe", &py.addr]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for want in [
        "conformance.Relay\n",
        "echo.Echo\n",
        "  Echo  EchoRequest -> EchoReply  protobuf,json\n",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    let out = getty()
        .args(["describe", &py.addr, "--json", "--service", "echo.Echo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["methods"][0]["reply_type"], "EchoReply");
}

#[test]
fn call_and_ping_the_python_peer() {
    let py = PythonServer::start();
    getty()
        .args([
            "call",
            &py.addr,
            "echo.Echo.Echo",
            r#"{"text":"hi","payload":"AAH/"}"#,
            "--compact",
        ])
        .assert()
        .success()
        .stdout("{\"payload\":\"AAH/\",\"text\":\"hi\",\"codec\":\"json\"}\n");
    getty()
        .args(["call", &py.addr, "echo.Echo.Nope", "{}"])
        .assert()
        .code(1)
        .stderr(contains("error: UNKNOWN_METHOD (2)"));
    getty()
        .args(["ping", &py.addr, "-c", "2", "-i", "50ms"])
        .assert()
        .success()
        .stdout(contains("2 received"));
}
