//! getty-proto: the `.proto` services of getty-rs, generated at build time by getty-rpc-build.
//!
//! One module per proto package. Every message is a prost message that also derives serde, so
//! each service serves Protobuf and JSON peers alike. Per service there is a server trait
//! (`greeter::Greeter`), its registration (`greeter::GreeterServer::register`) and a client
//! stub (`greeter::GreeterClient`); see getty-rpc-build for the conventions (wire names are
//! `package.Service` and the rpc name as written; `@oneway` in an rpc's comment makes it
//! one-way).
//!
//! The `.proto` files are next to this crate's `Cargo.toml`.

/// `greeter.Greeter`: `SayHello` (two-way) and `Notify` (one-way).
pub mod greeter {
    include!(concat!(env!("OUT_DIR"), "/greeter.rs"));
}

/// `echo.Echo`: `Echo`, the benchmark's call.
pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.rs"));
}

/// `calc.Calculator`: `Add`, `Div` (fails on a zero divisor) and `Log` (one-way).
pub mod calc {
    include!(concat!(env!("OUT_DIR"), "/calc.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(greeter::GreeterServer::NAME, "greeter.Greeter");
        assert_eq!(greeter::GreeterServer::METHODS, ["SayHello", "Notify"]);
        assert_eq!(greeter::GreeterServer::ONE_WAY, ["Notify"]);
        assert_eq!(echo::EchoServer::NAME, "echo.Echo");
        assert_eq!(echo::EchoServer::METHODS, ["Echo"]);
        assert_eq!(calc::CalculatorServer::NAME, "calc.Calculator");
        assert_eq!(calc::CalculatorServer::METHODS, ["Add", "Div", "Log"]);
        assert_eq!(calc::CalculatorServer::ONE_WAY, ["Log"]);
    }

    #[test]
    fn messages_speak_protobuf_and_json() {
        use prost::Message;
        let req = echo::EchoRequest {
            payload: vec![1, 2, 3],
            text: "hi".into(),
        };
        let pb = req.encode_to_vec();
        assert_eq!(echo::EchoRequest::decode(&pb[..]).unwrap(), req);
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"payload":[1,2,3],"text":"hi"}"#);
        assert_eq!(
            serde_json::from_str::<echo::EchoRequest>(&json).unwrap(),
            req
        );
        // Missing fields take their defaults, as in Protobuf.
        let r: calc::AddRequest = serde_json::from_str(r#"{"a":5}"#).unwrap();
        assert_eq!(r, calc::AddRequest { a: 5, b: 0 });
    }
}
