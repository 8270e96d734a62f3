use getty_rpc::{Context, RpcError};

#[getty_rpc::service]
trait Calc {
    #[oneway]
    async fn log(&self, ctx: Context, line: String) -> Result<(), RpcError>;
}

fn main() {}
