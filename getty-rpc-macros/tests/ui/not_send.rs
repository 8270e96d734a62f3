use std::rc::Rc;

use getty_rpc::{Context, RpcError};

#[getty_rpc::service]
trait Calc {
    async fn add(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
}

struct C;

impl Calc for C {
    async fn add(&self, _ctx: Context, req: (i64, i64)) -> Result<i64, RpcError> {
        let held = Rc::new(req.0);
        tokio::task::yield_now().await;
        Ok(*held + req.1)
    }
}

fn main() {}
