use getty_rpc::RpcError;

struct Context;

#[getty_rpc::service]
trait Calc {
    async fn add(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
}

fn main() {}
