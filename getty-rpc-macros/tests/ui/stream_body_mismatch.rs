use getty_rpc::{Context, Prost, RpcError, Sender};

// The halves of a stream use the service's body strategy (here JSON, the default).
#[getty_rpc::service]
trait Feed {
    async fn watch(&self, ctx: Context, req: String, out: Sender<Prost, String>) -> Result<(), RpcError>;
}

fn main() {}
