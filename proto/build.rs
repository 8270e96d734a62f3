//! Generates the messages, server traits and client stubs of the project's `.proto` files,
//! with getty-rpc-build (protox: no `protoc` needed).

fn main() -> std::io::Result<()> {
    getty_rpc_build::compile_protos(
        &["greeter.proto", "echo.proto", "calc.proto", "feed.proto"],
        &["."],
    )
}
