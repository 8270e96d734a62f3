use getty_rpc::{Context, RpcError};

#[getty_rpc::service]
trait Calc {
    #[oneway(always)]
    async fn log(&self, ctx: Context, line: String);
    #[method(wire = "Sum")]
    async fn add(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
    #[method(name = "")]
    async fn sub(&self, ctx: Context, req: (i64, i64)) -> Result<i64, RpcError>;
}

#[getty_rpc::service]
unsafe trait Unsafe {
    async fn get(&self, ctx: Context, req: ()) -> Result<(), RpcError>;
}

fn main() {}
