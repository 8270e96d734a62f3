//! The `getty` binary against an RPC server on a Unix domain socket (`unix:///path` targets).

mod common;

use common::{getty, rt};
use getty_core::ServerBuilder;
use getty_rpc::{RpcOptions, RpcServer};
use predicates::str::contains;

#[test]
fn call_describe_and_ping_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("getty-cli-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rpc.sock");
    let addr = path.display().to_string();
    let srv = rt().block_on(async {
        RpcServer::start(common::router(), RpcOptions::default(), |cb| {
            ServerBuilder::new(addr.clone()).serve_unix(cb)
        })
        .await
        .unwrap()
    });
    let target = format!("unix://{}", path.display());
    getty()
        .args(["call", &target, "test.Math.Add", r#"{"a":2,"b":3}"#])
        .assert()
        .success()
        .stdout("5\n");
    getty()
        .args(["describe", &target])
        .assert()
        .success()
        .stdout(contains("test.Math"));
    getty()
        .args(["ping", &target, "-c", "2"])
        .assert()
        .success();
    rt().block_on(srv.close());
    // Nothing listens there any more: a connection failure (exit 3).
    getty()
        .args(["call", &target, "test.Math.Add", r#"{"a":2,"b":3}"#])
        .assert()
        .code(3);
    let _ = std::fs::remove_dir_all(&dir);
}
