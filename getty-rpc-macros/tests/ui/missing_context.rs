use getty_rpc::RpcError;

#[getty_rpc::service]
trait Calc {
    async fn add(&self, req: (i64, i64)) -> Result<i64, RpcError>;
    async fn zero(&self) -> Result<i64, RpcError>;
}

fn main() {}
