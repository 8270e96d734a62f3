//! Services a peer serves: a map from (service, method) to a handler.
//!
//! Handlers are async and work on raw bodies; the typed `add_*` methods wrap a typed function
//! with the body codec. Either end of a connection may have a router, which is what makes calls
//! go both ways.

use crate::peer::FastMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::body::{BodyCodec, Json, Prost};
use crate::context::Context;
use crate::error::RpcError;
use crate::frame::CodecId;
use crate::status::Status;
use crate::stream::{Receiver, Sender, StreamHandler, StreamKind, StreamReceiver, StreamSender};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A raw handler: given the call context and the request body (in `ctx.codec()`), returns the
/// reply body in the same codec.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, ctx: Context, body: Bytes) -> BoxFuture<Result<Bytes, RpcError>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, RpcError>> + Send + 'static,
{
    fn call(&self, ctx: Context, body: Bytes) -> BoxFuture<Result<Bytes, RpcError>> {
        Box::pin(self(ctx, body))
    }
}

/// Describes a method for reflection and for the router's own checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    pub name: String,
    pub request_type: String,
    pub reply_type: String,
    /// One-way methods never answer.
    pub one_way: bool,
    pub codecs: Vec<CodecId>,
    /// `Some` for a streaming method (opened with StreamOpen, served by a [`StreamHandler`]).
    pub stream: Option<StreamKind>,
}

impl MethodInfo {
    /// A two-way unary method.
    pub fn unary(name: &str, request_type: &str, reply_type: &str, codecs: &[CodecId]) -> Self {
        MethodInfo {
            name: name.to_string(),
            request_type: request_type.to_string(),
            reply_type: reply_type.to_string(),
            one_way: false,
            codecs: codecs.to_vec(),
            stream: None,
        }
    }
}

enum Target {
    Unary(Arc<dyn Handler>),
    Stream(Arc<dyn StreamHandler>),
}

struct Entry {
    target: Target,
    info: MethodInfo,
}

/// The services one peer serves.
#[derive(Default)]
pub struct Router {
    services: FastMap<String, FastMap<String, Entry>>,
}

/// What a lookup found.
pub(crate) enum Route<'a> {
    Found(&'a Arc<dyn Handler>, &'a MethodInfo),
    Stream(&'a Arc<dyn StreamHandler>, &'a MethodInfo),
    UnknownService,
    UnknownMethod,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a raw handler. A second registration of the same method replaces the first.
    pub fn add_raw(&mut self, service: &str, info: MethodInfo, handler: impl Handler) -> &mut Self {
        self.insert(service, info, Target::Unary(Arc::new(handler)))
    }

    fn insert(&mut self, service: &str, info: MethodInfo, target: Target) -> &mut Self {
        self.services
            .entry(service.to_string())
            .or_default()
            .insert(info.name.clone(), Entry { target, info });
        self
    }

    /// Registers a raw stream handler; `info.stream` says its kind (bidirectional if unset).
    pub fn add_stream_raw(
        &mut self,
        service: &str,
        mut info: MethodInfo,
        handler: impl StreamHandler,
    ) -> &mut Self {
        info.one_way = false;
        info.stream.get_or_insert(StreamKind::Bidi);
        self.insert(service, info, Target::Stream(Arc::new(handler)))
    }

    /// Registers a typed server-streaming method: one `Req`, then items of `Item` sent with
    /// the handler's [`Sender`]; the handler's outcome ends the stream.
    pub fn add_server_stream<B, Req, Item, F, Fut>(
        &mut self,
        service: &str,
        method: &str,
        f: F,
    ) -> &mut Self
    where
        B: BodyCodec<Req> + BodyCodec<Item>,
        Req: Send + 'static,
        Item: Send + 'static,
        F: Fn(Context, Req, Sender<B, Item>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let info = stream_info::<B, Req, Item>(method, StreamKind::Server);
        let f = Arc::new(f);
        self.add_stream_raw(
            service,
            info,
            move |ctx: Context, items: StreamReceiver, out: StreamSender| {
                let f = f.clone();
                async move {
                    use futures_util::StreamExt;
                    let codec = ctx.codec();
                    let mut items = Receiver::<B, Req>::new(items, codec);
                    let req = match items.next().await {
                        Some(r) => r?,
                        None => return Err(RpcError::bad_request("the stream carried no request")),
                    };
                    f(ctx, req, Sender::new(out, codec)).await
                }
            },
        )
    }

    /// Registers a typed client-streaming method: items of `Item`, then one `Resp`.
    pub fn add_client_stream<B, Item, Resp, F, Fut>(
        &mut self,
        service: &str,
        method: &str,
        f: F,
    ) -> &mut Self
    where
        B: BodyCodec<Item> + BodyCodec<Resp>,
        Item: Send + 'static,
        Resp: Send + 'static,
        F: Fn(Context, Receiver<B, Item>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let info = stream_info::<B, Item, Resp>(method, StreamKind::Client);
        let f = Arc::new(f);
        self.add_stream_raw(
            service,
            info,
            move |ctx: Context, items: StreamReceiver, out: StreamSender| {
                let f = f.clone();
                async move {
                    let codec = ctx.codec();
                    let resp = f(ctx, Receiver::new(items, codec)).await?;
                    Sender::<B, Resp>::new(out, codec).send(&resp).await
                }
            },
        )
    }

    /// Registers a typed bidirectional method: items of `In` come, items of `Out` go.
    pub fn add_bidi<B, In, Out, F, Fut>(&mut self, service: &str, method: &str, f: F) -> &mut Self
    where
        B: BodyCodec<In> + BodyCodec<Out>,
        In: Send + 'static,
        Out: Send + 'static,
        F: Fn(Context, Receiver<B, In>, Sender<B, Out>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let info = stream_info::<B, In, Out>(method, StreamKind::Bidi);
        let f = Arc::new(f);
        self.add_stream_raw(
            service,
            info,
            move |ctx: Context, items: StreamReceiver, out: StreamSender| {
                let f = f.clone();
                async move {
                    let codec = ctx.codec();
                    f(ctx, Receiver::new(items, codec), Sender::new(out, codec)).await
                }
            },
        )
    }

    /// Registers a typed two-way method whose messages use body strategy `B`.
    pub fn add<B, Req, Resp, F, Fut>(&mut self, service: &str, method: &str, f: F) -> &mut Self
    where
        B: BodyCodec<Req> + BodyCodec<Resp>,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let info = MethodInfo {
            name: method.to_string(),
            request_type: short_type_name::<Req>(),
            reply_type: short_type_name::<Resp>(),
            one_way: false,
            codecs: <B as BodyCodec<Req>>::CODECS.to_vec(),
            stream: None,
        };
        let f = Arc::new(f);
        self.add_raw(service, info, move |ctx: Context, body: Bytes| {
            let f = f.clone();
            async move {
                let codec = ctx.codec();
                let req = <B as BodyCodec<Req>>::decode_shared(codec, &body)?;
                let resp = f(ctx, req).await?;
                let mut out = BytesMut::new();
                <B as BodyCodec<Resp>>::encode(codec, &resp, &mut out)?;
                Ok(out.freeze())
            }
        })
    }

    /// Registers a typed one-way method (no reply is ever sent).
    pub fn add_one_way<B, Req, F, Fut>(&mut self, service: &str, method: &str, f: F) -> &mut Self
    where
        B: BodyCodec<Req>,
        Req: Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let info = MethodInfo {
            name: method.to_string(),
            request_type: short_type_name::<Req>(),
            reply_type: "()".to_string(),
            one_way: true,
            codecs: B::CODECS.to_vec(),
            stream: None,
        };
        let f = Arc::new(f);
        self.add_raw(service, info, move |ctx: Context, body: Bytes| {
            let f = f.clone();
            async move {
                let req = B::decode_shared(ctx.codec(), &body)?;
                f(ctx, req).await;
                Ok(Bytes::new())
            }
        })
    }

    /// [`Router::add`] for serde types over JSON.
    pub fn add_json<Req, Resp, F, Fut>(&mut self, service: &str, method: &str, f: F) -> &mut Self
    where
        Json: BodyCodec<Req> + BodyCodec<Resp>,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        self.add::<Json, Req, Resp, F, Fut>(service, method, f)
    }

    /// [`Router::add`] for prost messages over Protobuf and JSON.
    pub fn add_prost<Req, Resp, F, Fut>(&mut self, service: &str, method: &str, f: F) -> &mut Self
    where
        Prost: BodyCodec<Req> + BodyCodec<Resp>,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        self.add::<Prost, Req, Resp, F, Fut>(service, method, f)
    }

    pub(crate) fn route(&self, service: &str, method: &str) -> Route<'_> {
        match self.services.get(service) {
            None => Route::UnknownService,
            Some(m) => match m.get(method) {
                None => Route::UnknownMethod,
                Some(e) => match &e.target {
                    Target::Unary(h) => Route::Found(h, &e.info),
                    Target::Stream(h) => Route::Stream(h, &e.info),
                },
            },
        }
    }

    /// Services and their methods, sorted, for reflection.
    pub fn describe(&self) -> Vec<(String, Vec<MethodInfo>)> {
        let mut v: Vec<_> = self
            .services
            .iter()
            .map(|(s, m)| {
                let mut ms: Vec<_> = m.values().map(|e| e.info.clone()).collect();
                ms.sort_by(|a, b| a.name.cmp(&b.name));
                (s.clone(), ms)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

fn stream_info<B: BodyCodec<Req>, Req, Resp>(method: &str, kind: StreamKind) -> MethodInfo {
    MethodInfo {
        name: method.to_string(),
        request_type: short_type_name::<Req>(),
        reply_type: short_type_name::<Resp>(),
        one_way: false,
        codecs: B::CODECS.to_vec(),
        stream: Some(kind),
    }
}

/// The last path segment of a type name: `my_crate::api::Hello` → `Hello`.
fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

/// Maps a lookup miss to the error a caller sees.
pub(crate) fn route_error(route: &Route<'_>, service: &str, method: &str) -> Option<RpcError> {
    match route {
        Route::Found(..) | Route::Stream(..) => None,
        Route::UnknownService => Some(RpcError::new(
            Status::UnknownService,
            format!("unknown service {service:?}"),
        )),
        Route::UnknownMethod => Some(RpcError::new(
            Status::UnknownMethod,
            format!("unknown method {method:?} of service {service:?}"),
        )),
    }
}
