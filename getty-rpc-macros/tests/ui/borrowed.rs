use getty_rpc::{Context, RpcError};

#[getty_rpc::service]
trait Calc {
    async fn echo(&self, ctx: Context, req: &str) -> Result<&'static str, RpcError>;
}

fn main() {}
