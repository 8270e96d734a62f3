use getty_rpc::Context;

#[getty_rpc::service]
trait Calc {
    async fn add(&self, ctx: Context, req: (i64, i64)) -> i64;
    async fn log(&self, ctx: Context, line: String);
}

fn main() {}
