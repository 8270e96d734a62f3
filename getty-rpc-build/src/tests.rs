use std::fs;
use std::path::Path;
use std::process::Command;

use super::*;

const GREETER: &str = r#"
syntax = "proto3";
package demo.greeter;

import "google/protobuf/empty.proto";

// Greets people.
service Greeter {
  // Answers a greeting.
  rpc SayHello(HelloRequest) returns (HelloReply);
  // Tells the other side something.
  // @oneway
  rpc Notify(HelloRequest) returns (google.protobuf.Empty);
}

message HelloRequest { string name = 1; }
message HelloReply { string message = 1; Mood mood = 2; oneof extra { string note = 3; int32 n = 4; } }
enum Mood { MOOD_UNKNOWN = 0; MOOD_HAPPY = 1; }
"#;

fn write_proto(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

/// Generates `GREETER` into `out`, the way a build script would (minus the cargo lines).
fn generate(src: &Path, out: &Path) -> io::Result<String> {
    write_proto(src, "greeter.proto", GREETER);
    Builder::new()
        .out_dir(out)
        .emit_rerun_if_changed(false)
        .compile(&[src.join("greeter.proto")], &[src])?;
    Ok(fs::read_to_string(out.join("demo.greeter.rs")).unwrap())
}

fn assert_stubs(code: &str) {
    for needle in [
        "pub trait Greeter: ::core::marker::Send + ::core::marker::Sync + 'static {",
        "fn say_hello(",
        "req: HelloRequest,",
        "::core::result::Result<HelloReply, ::getty_rpc::RpcError>",
        "fn notify(",
        "impl ::core::future::Future<Output = ()> + ::core::marker::Send;",
        "pub struct GreeterServer;",
        "pub const NAME: &'static str = \"demo.greeter.Greeter\";",
        "pub const METHODS: &'static [&'static str] = &[\"SayHello\", \"Notify\"];",
        "pub const ONE_WAY: &'static [&'static str] = &[\"Notify\"];",
        "router.add::<::getty_rpc::Prost, HelloRequest, HelloReply, _, _>(",
        "router.add_one_way::<::getty_rpc::Prost, HelloRequest, _, _>(",
        "pub struct GreeterClient {",
        "pub async fn say_hello(&self, req: &HelloRequest)",
        "pub async fn say_hello_with(&self, req: &HelloRequest, opts: ::getty_rpc::CallOptions)",
        ".call::<::getty_rpc::Prost, HelloRequest, HelloReply>(GreeterServer::NAME, \"SayHello\", req, opts)",
        ".notify::<::getty_rpc::Prost, HelloRequest>(GreeterServer::NAME, \"Notify\", req, opts)",
        // Comments become docs, without the marker.
        "/// Greets people.",
        "    /// Answers a greeting.",
        "    /// Tells the other side something.",
        // proto3 JSON serde impls on messages and enums, appended to the same file.
        "impl serde::Serialize for HelloRequest {",
        "impl<'de> serde::Deserialize<'de> for HelloRequest {",
        "impl serde::Serialize for HelloReply {",
        "impl serde::Serialize for Mood {",
        "impl<'de> serde::Deserialize<'de> for Mood {",
        // lowerCamelCase out, both spellings in; enums by name.
        "\"MOOD_HAPPY\"",
    ] {
        assert!(code.contains(needle), "missing {needle:?} in:\n{code}");
    }
    assert!(
        !code.contains(ONEWAY_MARKER),
        "marker left in docs:\n{code}"
    );
    assert!(!code.contains("compile_error"), "{code}");
    assert!(
        !code.contains("#[derive(serde::"),
        "serde derives left:\n{code}"
    );
}

#[test]
fn generates_messages_with_proto3_json_and_service_stubs() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let code = generate(src.path(), out.path()).unwrap();
    assert_stubs(&code);
    // The well-known types are not generated; Empty is `()`.
    assert!(!out.path().join("google.protobuf.rs").exists());
    assert!(code.contains("req: HelloRequest"));
}

/// Runs in a child process (see below) with no `protoc` anywhere: `PROTOC` points nowhere and
/// `PATH` is empty. Ignored unless the parent test starts it.
#[test]
#[ignore = "started by generation_needs_no_protoc in a child process"]
fn child_generate_without_protoc() {
    let Some(out) = std::env::var_os("GETTY_RPC_BUILD_CHILD_OUT") else {
        return;
    };
    assert_eq!(std::env::var_os("PATH").as_deref(), Some("".as_ref()));
    assert!(
        Command::new("protoc").arg("--version").status().is_err(),
        "protoc is reachable"
    );
    let src = tempfile::tempdir().unwrap();
    let code = generate(src.path(), Path::new(&out)).unwrap();
    assert_stubs(&code);
}

#[test]
fn generation_needs_no_protoc() {
    let out = tempfile::tempdir().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "tests::child_generate_without_protoc",
            "--test-threads=1",
        ])
        .env("PATH", "")
        .env("PROTOC", "/nonexistent/protoc")
        .env_remove("PROTOC_INCLUDE")
        .env("GETTY_RPC_BUILD_CHILD_OUT", out.path())
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "generation without protoc failed:\n{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    // The child really generated (the test did not skip).
    let code = fs::read_to_string(out.path().join("demo.greeter.rs")).unwrap();
    assert_stubs(&code);
}

#[test]
fn streaming_rpcs_become_stream_methods_and_stubs() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_proto(
        src.path(),
        "s.proto",
        "syntax = \"proto3\"; package s; message M {} message N {} service S { \
         rpc Watch(M) returns (stream N); rpc Upload(stream M) returns (N); \
         rpc Chat(stream M) returns (stream N); rpc Get(M) returns (N); }",
    );
    Builder::new()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile(&[src.path().join("s.proto")], &[src.path()])
        .unwrap();
    let code = fs::read_to_string(out.path().join("s.rs")).unwrap();
    for needle in [
        "pub const STREAMS: &'static [&'static str] = &[\"Watch\", \"Upload\", \"Chat\"];",
        "        req: M,\n        out: ::getty_rpc::Sender<::getty_rpc::Prost, N>,\n    ) -> impl ::core::future::Future<Output = ::core::result::Result<(), ::getty_rpc::RpcError>>",
        "        items: ::getty_rpc::Receiver<::getty_rpc::Prost, M>,\n    ) -> impl ::core::future::Future<Output = ::core::result::Result<N, ::getty_rpc::RpcError>>",
        "        items: ::getty_rpc::Receiver<::getty_rpc::Prost, M>,\n        out: ::getty_rpc::Sender<::getty_rpc::Prost, N>,",
        "router.add_server_stream::<::getty_rpc::Prost, M, N, _, _>(",
        "router.add_client_stream::<::getty_rpc::Prost, M, N, _, _>(",
        "router.add_bidi::<::getty_rpc::Prost, M, N, _, _>(",
        "pub async fn watch(&self, req: &M) -> ::core::result::Result<::getty_rpc::Receiver<::getty_rpc::Prost, N>, ::getty_rpc::RpcError>",
        "pub async fn upload_with(&self, opts: ::getty_rpc::CallOptions) -> ::core::result::Result<(::getty_rpc::Sender<::getty_rpc::Prost, M>, ::getty_rpc::Receiver<::getty_rpc::Prost, N>), ::getty_rpc::RpcError>",
        ".server_stream::<::getty_rpc::Prost, M, N>(SServer::NAME, \"Watch\", req, opts)",
        ".client_stream::<::getty_rpc::Prost, M, N>(SServer::NAME, \"Upload\", opts)",
        ".open_stream::<::getty_rpc::Prost, M, N>(SServer::NAME, \"Chat\", opts)",
        ".call::<::getty_rpc::Prost, M, N>(SServer::NAME, \"Get\", req, opts)",
    ] {
        assert!(code.contains(needle), "missing {needle:?} in:\n{code}");
    }
    assert!(!code.contains("compile_error"), "{code}");
}

#[test]
fn streaming_rpcs_cannot_be_one_way() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_proto(
        src.path(),
        "s.proto",
        "syntax = \"proto3\"; package s; message M {} service S {\n // @oneway\n rpc Watch(M) returns (stream M); }",
    );
    let err = Builder::new()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile(&[src.path().join("s.proto")], &[src.path()])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("rpc Watch of service s.S streams, so it cannot be `@oneway`"),
        "{msg}"
    );
}

#[test]
fn stub_name_clashes_are_reported() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_proto(
        src.path(),
        "c.proto",
        "syntax = \"proto3\"; package c; message M {} \
         service S { rpc Get(M) returns (M); rpc GetWith(M) returns (M); rpc New(M) returns (M); }",
    );
    let err = Builder::new()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile(&[src.path().join("c.proto")], &[src.path()])
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`get_with` for rpc GetWith clashes"), "{msg}");
    assert!(
        msg.contains("`new` for rpc New clashes with SClient::new"),
        "{msg}"
    );
    // The generated file fails to compile too, with the same words.
    let code = fs::read_to_string(out.path().join("c.rs")).unwrap();
    assert!(code.contains("::core::compile_error!"), "{code}");
}

#[test]
fn syntax_errors_name_the_file() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_proto(src.path(), "bad.proto", "syntax = \"proto3\"; message {");
    let err = Builder::new()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile(&[src.path().join("bad.proto")], &[src.path()])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("bad.proto:1:28: expected an identifier"),
        "{err}"
    );
}

#[test]
fn oneway_marker_is_found_and_removed() {
    let mut c = prost_build::Comments {
        leading_detached: vec![],
        leading: vec![" Fire and forget.".into(), " @oneway".into()],
        trailing: vec![],
    };
    assert!(take_oneway(&mut c));
    assert_eq!(c.leading, vec![" Fire and forget.".to_string()]);
    let mut c = prost_build::Comments {
        leading_detached: vec![],
        leading: vec![" Not @onewayish.".into()],
        trailing: vec![" @oneway".into()],
    };
    assert!(take_oneway(&mut c));
    assert_eq!(c.leading, vec![" Not @onewayish.".to_string()]);
    assert!(c.trailing.is_empty());
    let mut c = prost_build::Comments {
        leading_detached: vec![],
        leading: vec![" Two-way.".into()],
        trailing: vec![],
    };
    assert!(!take_oneway(&mut c));
}

#[test]
fn files_without_a_package_are_refused_by_name() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_proto(
        src.path(),
        "nopkg.proto",
        "syntax = \"proto3\"; message M {}",
    );
    let err = Builder::new()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile(&[src.path().join("nopkg.proto")], &[src.path()])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("nopkg.proto: no `package` declaration"),
        "{err}"
    );
}
