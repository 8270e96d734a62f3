use getty_rpc::{Context, RpcError};

#[getty_rpc::service]
trait Calc {
    const VERSION: u32;
    type Output;
    async fn add(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
}

fn main() {}
