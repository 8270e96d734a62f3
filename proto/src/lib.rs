//! getty-proto: the `.proto` services of getty-rs, generated at build time by getty-rpc-build.
//!
//! One module per proto package. Every message is a prost message with serde impls in the
//! proto3 canonical JSON mapping, so each service serves Protobuf and JSON peers alike. Per service there is a server trait
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

/// `echo.Echo`: `Echo`, the call of the rpc_echo example and the conformance kit.
pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.rs"));
}

/// `calc.Calculator`: `Add`, `Div` (fails on a zero divisor) and `Log` (one-way).
pub mod calc {
    include!(concat!(env!("OUT_DIR"), "/calc.rs"));
}

/// `feed.PriceFeed`: the streaming rpcs `Watch` (server stream), `Upload` (client stream) and
/// `Chat` (bidirectional), of the price-feed examples and tests/services_streams.rs.
pub mod feed {
    include!(concat!(env!("OUT_DIR"), "/feed.rs"));
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
        assert_eq!(calc::CalculatorServer::STREAMS, [] as [&str; 0]);
        assert_eq!(feed::PriceFeedServer::NAME, "feed.PriceFeed");
        assert_eq!(feed::PriceFeedServer::STREAMS, ["Watch", "Upload", "Chat"]);
    }

    #[test]
    fn messages_speak_protobuf_and_proto3_json() {
        use prost::Message;
        let req = echo::EchoRequest {
            payload: vec![1, 2, 3],
            text: "hi".into(),
        };
        let pb = req.encode_to_vec();
        assert_eq!(pb, [0x0a, 3, 1, 2, 3, 0x12, 2, b'h', b'i']);
        assert_eq!(echo::EchoRequest::decode(&pb[..]).unwrap(), req);
        // bytes as base64, fields in declaration order, defaults left out.
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"payload":"AQID","text":"hi"}"#);
        assert_eq!(
            serde_json::from_str::<echo::EchoRequest>(&json).unwrap(),
            req
        );
        assert_eq!(
            serde_json::to_string(&echo::EchoRequest::default()).unwrap(),
            "{}"
        );
        // lowerCamelCase names and int64 as strings out; both spellings and numbers in.
        let reply = greeter::HelloReply {
            message: "m".into(),
            served_by: "a".into(),
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"message":"m","servedBy":"a"}"#
        );
        let old: greeter::HelloReply =
            serde_json::from_str(r#"{"message":"m","served_by":"a"}"#).unwrap();
        assert_eq!(old, reply);
        let sum = calc::AddReply { sum: -5 };
        assert_eq!(serde_json::to_string(&sum).unwrap(), r#"{"sum":"-5"}"#);
        let r: calc::AddRequest = serde_json::from_str(r#"{"a":5,"b":"7"}"#).unwrap();
        assert_eq!(r, calc::AddRequest { a: 5, b: 7 });
        // Missing fields take their defaults; unknown ones are ignored, as in Protobuf.
        let r: calc::AddRequest = serde_json::from_str(r#"{"a":"5","later":true}"#).unwrap();
        assert_eq!(r, calc::AddRequest { a: 5, b: 0 });
    }
}
