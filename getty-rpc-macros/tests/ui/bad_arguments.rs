use getty_rpc::{Context, RpcError};

#[getty_rpc::service(version = 2)]
trait Calc {
    async fn add(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
}

#[getty_rpc::service(name = "has space")]
trait Calc2 {
    async fn add(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
}

#[getty_rpc::service(body = "bincode")]
trait Calc3 {
    async fn add(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
}

fn main() {}
