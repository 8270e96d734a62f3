use getty_rpc::{Context, RpcError};

#[getty_rpc::service]
trait Calc {
    async fn add(ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
}

fn main() {}
