use getty_rpc::{Context, RpcError};

#[getty_rpc::service]
trait Calc {
    async fn add(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
    async fn add_with(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
    #[method(name = "Add")]
    async fn plus(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
    async fn new(&self, ctx: Context, req: ()) -> Result<(), RpcError>;
}

fn main() {}
