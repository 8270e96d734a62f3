//! The expansion compiles and works for the accepted forms; calls run over real loopback TCP
//! in the root package's tests/services.rs. Here: a Router (no sockets) and the names.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use getty_rpc::{Context, Router, RpcError, Status};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Pair {
    pub a: i64,
    pub b: i64,
}

/// Errors of the service; they become `RpcError`s on the wire.
#[derive(Debug)]
pub struct MathError(String);

impl From<MathError> for RpcError {
    fn from(e: MathError) -> Self {
        RpcError::handler(e.0)
    }
}

/// Arithmetic.
#[getty_rpc::service(name = "test.Math")]
pub trait Math {
    /// Adds.
    async fn add(&self, ctx: Context, req: Pair) -> Result<i64, RpcError>;
    /// Divides, with the service's own error type.
    async fn div(&self, ctx: getty_rpc::Context, req: Pair) -> Result<i64, MathError>;
    /// With the `Result<T>` alias of getty-rpc.
    async fn neg(&self, ctx: Context, n: i64) -> getty_rpc::error::Result<i64>;
    /// Has a default body.
    async fn version(&self, _ctx: Context, _req: ()) -> Result<String, RpcError> {
        Ok("1".to_string())
    }
    /// Renamed on the wire; a raw identifier.
    #[method(name = "type_of")]
    async fn r#type(&self, ctx: Context, req: String) -> Result<String, RpcError>;
    /// Counts; no reply.
    #[oneway]
    async fn bump(&self, ctx: Context, by: u64);
    /// One-way written with `-> ()`.
    #[oneway]
    async fn reset(&self, ctx: Context, _req: ()) -> ();
}

/// Through the facade path, and the default name (the trait's).
#[getty_rpc::service(crate = "::getty_rpc")]
trait Plain {
    async fn ping(&self, ctx: Context, req: ()) -> Result<(), RpcError>;
}

#[derive(Default)]
struct Impl {
    count: AtomicU64,
}

impl Math for Impl {
    async fn add(&self, _ctx: Context, req: Pair) -> Result<i64, RpcError> {
        Ok(req.a + req.b)
    }
    async fn div(&self, _ctx: Context, req: Pair) -> Result<i64, MathError> {
        req.a
            .checked_div(req.b)
            .ok_or_else(|| MathError("divide by zero".into()))
    }
    async fn neg(&self, _ctx: Context, n: i64) -> getty_rpc::error::Result<i64> {
        Ok(-n)
    }
    async fn r#type(&self, _ctx: Context, req: String) -> Result<String, RpcError> {
        Ok(format!("str:{req}"))
    }
    async fn bump(&self, _ctx: Context, by: u64) {
        self.count.fetch_add(by, Ordering::SeqCst);
    }
    async fn reset(&self, _ctx: Context, _req: ()) {
        self.count.store(0, Ordering::SeqCst);
    }
}

struct P;
impl Plain for P {
    async fn ping(&self, _ctx: Context, _req: ()) -> Result<(), RpcError> {
        Ok(())
    }
}

#[test]
fn names_and_registration() {
    assert_eq!(MathServer::NAME, "test.Math");
    assert_eq!(
        MathServer::METHODS,
        ["Add", "Div", "Neg", "Version", "type_of", "Bump", "Reset"]
    );
    assert_eq!(MathServer::ONE_WAY, ["Bump", "Reset"]);
    assert_eq!(PlainServer::NAME, "Plain");
    assert_eq!(PlainServer::METHODS, ["Ping"]);

    let mut router = Router::new();
    MathServer::register(&mut router, Arc::new(Impl::default()));
    PlainServer::register(&mut router, Arc::new(P));
    let described = router.describe();
    let (name, methods) = &described[1];
    assert_eq!(name, "test.Math");
    let add = methods.iter().find(|m| m.name == "Add").unwrap();
    assert_eq!(
        (add.request_type.as_str(), add.reply_type.as_str()),
        ("Pair", "i64")
    );
    assert!(!add.one_way);
    assert!(methods.iter().find(|m| m.name == "Bump").unwrap().one_way);
    assert_eq!(described[0].0, "Plain");
}

/// The stubs have the expected signatures (checked by the compiler, never run).
#[allow(dead_code)]
async fn stubs_type_check(peer: getty_rpc::Peer) -> Result<(), RpcError> {
    let m = MathClient::new(peer).with_defaults(getty_rpc::CallOptions::new());
    let _: i64 = m.add(&Pair { a: 1, b: 2 }).await?;
    let _: i64 = m.div(&Pair { a: 1, b: 2 }).await?;
    let _: i64 = m.neg_with(&3, getty_rpc::CallOptions::new()).await?;
    let _: String = m.version(&()).await?;
    let _: String = m.r#type(&"x".to_string()).await?;
    let _: String = m.type_with(&"x".to_string(), Default::default()).await?;
    let (): () = m.bump(&1).await?;
    let (): () = m.reset(&()).await?;
    let _ = m.peer().id();
    let _ = Status::Ok;
    Ok(())
}

/// A method's future must be `Send` for the router; the trait says so.
#[allow(dead_code)]
fn futures_are_send(i: Impl, ctx: Context) {
    fn is_send<T: Send>(_: T) {}
    is_send(Math::add(&i, ctx, Pair { a: 1, b: 1 }));
}
