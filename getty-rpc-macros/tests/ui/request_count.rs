use getty_rpc::{Context, RpcError};

#[getty_rpc::service]
trait Calc {
    async fn add(&self, ctx: Context, a: i64, b: i64) -> Result<i64, RpcError>;
    async fn zero(&self, ctx: Context) -> Result<i64, RpcError>;
}

fn main() {}
