use getty_rpc::{Context, Json, Receiver, RpcError, Sender};

#[getty_rpc::service]
trait Feed {
    // A stream cannot be one-way.
    #[oneway]
    async fn watch(&self, ctx: Context, req: String, out: Sender<Json, u64>);
    // A server stream's items go out through its Sender, not the return value.
    async fn count(&self, ctx: Context, req: u64, out: Sender<Json, u64>) -> Result<u64, RpcError>;
    // The Sender comes last, after the request.
    async fn backwards(&self, ctx: Context, out: Sender<Json, u64>, req: u64) -> Result<(), RpcError>;
    // A client stream takes its items instead of a request.
    async fn upload(&self, ctx: Context, req: String, items: Receiver<Json, u64>) -> Result<u64, RpcError>;
    // The halves name their body strategy and item.
    async fn bare(&self, ctx: Context, items: Receiver<u64>) -> Result<u64, RpcError>;
    // A bidirectional stream returns only its outcome.
    async fn chat(&self, ctx: Context, items: Receiver<Json, String>, out: Sender<Json, String>);
    // Items are owned, decoded from the wire.
    async fn borrowed(&self, ctx: Context, items: Receiver<Json, &'static str>) -> Result<(), RpcError>;
}

fn main() {}
