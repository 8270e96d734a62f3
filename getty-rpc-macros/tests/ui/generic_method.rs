use getty_rpc::{Context, RpcError};

#[getty_rpc::service]
trait Calc {
    async fn add<T: serde::Serialize>(&self, ctx: Context, req: T) -> Result<i64, RpcError>;
    async fn sub(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>
    where
        Self: Sized;
}

#[getty_rpc::service]
trait Generic<T> {
    async fn get(&self, ctx: Context, req: T) -> Result<T, RpcError>;
}

fn main() {}
