//! The `#[service]` attribute of getty-rpc: typed client stubs and server traits for serde
//! services. Use it through its re-export, `getty_rpc::service`, whose documentation is below.

use std::collections::HashMap;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, Path, PathArguments,
    ReturnType, Signature, TraitItem, TraitItemFn, Type, TypeParamBound, parse_quote,
};

/// Turns a Rust trait into a getty-rpc service that either peer of a connection can serve and
/// call: define the service once, get a server trait and a typed client stub.
///
/// ```
/// use std::sync::Arc;
/// use getty_rpc::{Context, Router, RpcError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct AddRequest { pub a: i64, pub b: i64 }
///
/// /// A calculator.
/// #[getty_rpc::service(name = "calc.Calculator")]
/// pub trait Calculator {
///     /// Adds.
///     async fn add(&self, ctx: Context, req: AddRequest) -> Result<i64, RpcError>;
///     /// Writes a line to the server's log; no reply.
///     #[oneway]
///     async fn log(&self, ctx: Context, line: String);
/// }
///
/// struct Calc;
/// impl Calculator for Calc {
///     async fn add(&self, _ctx: Context, req: AddRequest) -> Result<i64, RpcError> {
///         Ok(req.a + req.b)
///     }
///     async fn log(&self, ctx: Context, line: String) {
///         println!("{:?} says {line}", ctx.peer().remote_addr());
///     }
/// }
///
/// // Serving (on either side: an RpcServer's or an RpcClient's router):
/// let mut router = Router::new();
/// CalculatorServer::register(&mut router, Arc::new(Calc));
/// assert_eq!(CalculatorServer::NAME, "calc.Calculator");
/// assert_eq!(CalculatorServer::METHODS, ["Add", "Log"]);
/// assert_eq!(CalculatorServer::ONE_WAY, ["Log"]);
///
/// // Calling, given a `peer` (client.peer()?, server.peers(), ctx.peer().clone()):
/// async fn call(peer: getty_rpc::Peer) -> Result<(), RpcError> {
///     let calc = CalculatorClient::new(peer);
///     let sum = calc.add(&AddRequest { a: 1, b: 2 }).await?;
///     calc.log(&format!("1 + 2 = {sum}")).await?;
///     Ok(())
/// }
/// ```
///
/// # What it generates
///
/// - **The trait**, rewritten so every method returns `impl Future<Output = ...> + Send`
///   (implementors still write `async fn`; their futures must be `Send`), with
///   `Send + Sync + 'static` added to its supertraits. A method may have a default body.
/// - **`{Trait}Server`**, a unit struct with the wire names, `NAME`, `METHODS` (in declaration
///   order), `ONE_WAY` and `STREAMS`, and `register(&mut Router, Arc<impl Trait>) -> &mut Router`, which
///   serves every method with the body strategy (`getty_rpc::Json` unless `body = "prost"`).
/// - **`{Trait}Client`**, a stub over a `Peer`: `new(peer)`, `with_defaults(CallOptions)`,
///   `peer()`, and per method `m(&req)` and `m_with(&req, CallOptions)` (timeout, metadata,
///   codec). A two-way stub returns `Result<Reply, RpcError>`; a one-way stub returns
///   `Result<(), RpcError>` once the request is queued. The trait's and methods' doc comments
///   are repeated on the stub and its methods.
///
/// # Methods
///
/// Each method is `async fn name(&self, ctx: Context, req: Request) -> Result<Reply, E>`:
/// exactly one owned request type and, for a two-way method, `Result<Reply, E>` where
/// `E: Into<RpcError>` (usually `RpcError` itself; `Result<Reply>` aliases work too). Request
/// and reply are serde types (prost messages with `body = "prost"`). `#[oneway]` marks a
/// method that never answers: it has no return type, and the stub sends a one-way frame
/// (`Peer::notify`).
///
/// # Streams
///
/// A method whose parameters after `ctx` hold the halves of a stream (`getty_rpc::Sender` and
/// `getty_rpc::Receiver`, written with the service's body strategy: `Sender<Json, T>`, or
/// `Sender<Prost, T>` with `body = "prost"`) is a streaming method (PROTOCOL.md section 20):
///
/// ```
/// use getty_rpc::{Context, Json, Receiver, RpcError, Sender};
///
/// #[getty_rpc::service(name = "feed.Prices")]
/// pub trait Prices {
///     /// Server stream: one request, items sent with `out`; the outcome ends the stream.
///     async fn watch(&self, ctx: Context, symbol: String, out: Sender<Json, f64>) -> Result<(), RpcError>;
///     /// Client stream: the caller's items, then one reply.
///     async fn upload(&self, ctx: Context, items: Receiver<Json, Vec<u8>>) -> Result<u64, RpcError>;
///     /// Bidirectional: items both ways.
///     async fn chat(&self, ctx: Context, items: Receiver<Json, String>, out: Sender<Json, String>) -> Result<(), RpcError>;
/// }
/// assert_eq!(PricesServer::STREAMS, ["Watch", "Upload", "Chat"]);
/// ```
///
/// Their stubs open the stream: `watch(&symbol) -> Result<Receiver<Json, f64>, RpcError>`
/// (a `futures::Stream` of items; dropping it cancels), `upload() -> Result<(Sender<Json,
/// Vec<u8>>, Receiver<Json, u64>), RpcError>` (send, `finish()`, then `reply().await`) and
/// `chat() -> Result<(Sender<Json, String>, Receiver<Json, String>), RpcError>`, each with its
/// `_with(.., CallOptions)` form; the server registers them with `Router::add_server_stream`,
/// `add_client_stream` and `add_bidi`. `STREAMS` lists their wire names. A stream cannot be
/// `#[oneway]`.
///
/// # Wire names
///
/// The service is `name = "..."` if given, else the trait's name. A method is its Rust name in
/// UpperCamelCase (`add` → `Add`, `say_hello` → `SayHello`, as .proto rpcs are usually
/// written), unless `#[method(name = "...")]` on the method says otherwise.
///
/// # Arguments
///
/// - `name = "pkg.Service"`: the service's wire name.
/// - `crate = "getty::rpc"`: where getty-rpc is, for crates that reach it through the `getty`
///   facade only (default `::getty_rpc`).
/// - `body = "json"` (default) or `body = "prost"`: how requests and replies are encoded.
///   `"json"`: serde types over JSON (`getty_rpc::Json`). `"prost"`: prost messages that also
///   derive serde, over Protobuf by default and JSON when a call asks for it
///   (`getty_rpc::Prost`), so a Rust-defined service can talk to Protobuf peers.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = syn::parse_macro_input!(item as ItemTrait);
    let fallback = without_our_attributes(item.clone());
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| args.parse(meta));
    let expanded = syn::parse::Parser::parse(parser, attr).and_then(|()| expand(args, item));
    match expanded {
        Ok(ts) => ts.into(),
        // The trait as written (minus our attributes) still goes out, so the errors above are
        // the only ones: no cascade of "cannot find trait" or unused imports.
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#e #fallback).into()
        }
    }
}

fn is_ours(a: &Attribute) -> bool {
    a.path().is_ident("oneway") || a.path().is_ident("method")
}

fn without_our_attributes(mut item: ItemTrait) -> ItemTrait {
    for ti in &mut item.items {
        if let TraitItem::Fn(f) = ti {
            f.attrs.retain(|a| !is_ours(a));
        }
    }
    item
}

#[derive(Default)]
struct Args {
    name: Option<LitStr>,
    krate: Option<Path>,
    /// The body strategy: `Json` (default) or `Prost`.
    body: Option<Ident>,
}

impl Args {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            if lit.value().trim().is_empty() || lit.value().contains(char::is_whitespace) {
                return Err(syn::Error::new(
                    lit.span(),
                    "the service name must be non-empty and without spaces, such as \"calc.Calculator\"",
                ));
            }
            if self.name.replace(lit).is_some() {
                return Err(meta.error("`name` is given twice"));
            }
            Ok(())
        } else if meta.path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse()?;
            let path: Path = lit.parse().map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    "`crate` must be the path getty-rpc is reachable at, such as \"getty::rpc\"",
                )
            })?;
            if self.krate.replace(path).is_some() {
                return Err(meta.error("`crate` is given twice"));
            }
            Ok(())
        } else if meta.path.is_ident("body") {
            let lit: LitStr = meta.value()?.parse()?;
            let strategy = match lit.value().as_str() {
                "json" => Ident::new("Json", lit.span()),
                "prost" => Ident::new("Prost", lit.span()),
                _ => {
                    return Err(syn::Error::new(
                        lit.span(),
                        "`body` is \"json\" (serde types, JSON) or \"prost\" (prost messages, \
                         Protobuf and JSON)",
                    ));
                }
            };
            if self.body.replace(strategy).is_some() {
                return Err(meta.error("`body` is given twice"));
            }
            Ok(())
        } else {
            Err(meta.error(
                "unknown argument: #[service] takes `name = \"pkg.Service\"`, \
                 `crate = \"path::to::getty_rpc\"` and `body = \"json\" | \"prost\"`, all optional",
            ))
        }
    }
}

/// One method of the service, checked.
struct Method {
    ident: Ident,
    wire: String,
    docs: Vec<Attribute>,
    ctx_ty: Type,
    shape: Shape,
    /// The rewritten trait item.
    item: TraitItemFn,
}

/// What a method is on the wire, with its types (items are the `T` of `Sender<B, T>` /
/// `Receiver<B, T>`; the request keeps the name it has in the trait, for the stub).
enum Shape {
    Unary {
        req: (Ident, Type),
        reply: Type,
    },
    OneWay {
        req: (Ident, Type),
    },
    /// `(ctx, req: Req, out: Sender<B, Item>) -> Result<(), E>`.
    Server {
        req: (Ident, Type),
        item: Type,
        out: Type,
    },
    /// `(ctx, items: Receiver<B, Item>) -> Result<Reply, E>`.
    Client {
        item: Type,
        items: Type,
        reply: Type,
    },
    /// `(ctx, items: Receiver<B, In>, out: Sender<B, Out>) -> Result<(), E>`.
    Bidi {
        input: Type,
        items: Type,
        output: Type,
        out: Type,
    },
}

impl Shape {
    fn is_stream(&self) -> bool {
        matches!(
            self,
            Shape::Server { .. } | Shape::Client { .. } | Shape::Bidi { .. }
        )
    }
}

/// Collects every problem instead of stopping at the first.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, msg: impl std::fmt::Display) {
        let e = syn::Error::new(span, msg);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn push_spanned(&mut self, tokens: impl ToTokens, msg: impl std::fmt::Display) {
        let e = syn::Error::new_spanned(tokens, msg);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn append(&mut self, other: Errors) {
        if let Some(e) = other.0 {
            match &mut self.0 {
                Some(all) => all.combine(e),
                None => self.0 = Some(e),
            }
        }
    }
    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn expand(args: Args, mut item: ItemTrait) -> syn::Result<TokenStream2> {
    let mut errs = Errors::default();
    let krate: Path = args.krate.unwrap_or_else(|| parse_quote!(::getty_rpc));
    let body = args
        .body
        .unwrap_or_else(|| Ident::new("Json", Span::call_site()));
    let trait_ident = item.ident.clone();
    let service_name = args
        .name
        .as_ref()
        .map_or_else(|| trait_ident.unraw().to_string(), LitStr::value);

    if let Some(u) = &item.unsafety {
        errs.push(u.span, "a service trait cannot be `unsafe`");
    }
    if let Some(a) = &item.auto_token {
        errs.push(a.span, "a service trait cannot be an `auto` trait");
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errs.push_spanned(
            &item.generics,
            "a service trait cannot be generic: the server registers concrete request and reply types",
        );
    }

    let mut methods = Vec::new();
    for ti in &item.items {
        match ti {
            TraitItem::Fn(f) => {
                if let Some(m) = check_method(f, &mut errs) {
                    methods.push(m);
                }
            }
            other => errs.push_spanned(
                other,
                "a #[service] trait holds only `async fn` methods (no consts, types or macros)",
            ),
        }
    }

    // Wire names must be unique; stub method names must not collide with each other or with
    // the stub's own `new`, `with_defaults` and `peer`.
    let mut wires: HashMap<&str, &Ident> = HashMap::new();
    let mut stub_names: HashMap<String, String> = ["new", "with_defaults", "peer"]
        .iter()
        .map(|s| (s.to_string(), format!("the client stub's own `{s}`")))
        .collect();
    for m in &methods {
        if let Some(prev) = wires.insert(&m.wire, &m.ident) {
            errs.push(
                m.ident.span(),
                format!(
                    "method `{}` has the wire name {:?}, as `{prev}` already does; \
                     rename one or give it #[method(name = \"...\")]",
                    m.ident, m.wire
                ),
            );
        }
        let base = m.ident.unraw().to_string();
        for stub in [base.clone(), format!("{base}_with")] {
            let owner = format!("the stub method `{stub}` of `{}`", m.ident);
            if let Some(prev) = stub_names.insert(stub.clone(), owner) {
                errs.push(
                    m.ident.span(),
                    format!(
                        "the client stub method `{stub}` generated for `{}` clashes with {prev}; rename the method",
                        m.ident
                    ),
                );
            }
        }
    }
    errs.finish()?;

    // The trait, rewritten.
    item.supertraits.push(parse_quote!(::core::marker::Send));
    item.supertraits.push(parse_quote!(::core::marker::Sync));
    item.supertraits
        .push(TypeParamBound::Lifetime(parse_quote!('static)));
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    item.items = methods
        .iter()
        .map(|m| TraitItem::Fn(m.item.clone()))
        .collect();

    let vis = &item.vis;
    let server_ident = format_ident!("{}Server", trait_ident.unraw());
    let client_ident = format_ident!("{}Client", trait_ident.unraw());
    let trait_docs: Vec<&Attribute> = item.attrs.iter().filter(|a| is_doc(a)).collect();
    let all_wires: Vec<&str> = methods.iter().map(|m| m.wire.as_str()).collect();
    let one_way: Vec<&str> = methods
        .iter()
        .filter(|m| matches!(m.shape, Shape::OneWay { .. }))
        .map(|m| m.wire.as_str())
        .collect();
    let streams: Vec<&str> = methods
        .iter()
        .filter(|m| m.shape.is_stream())
        .map(|m| m.wire.as_str())
        .collect();

    let registrations = methods.iter().map(|m| {
        let Method {
            ident,
            wire,
            ctx_ty,
            ..
        } = m;
        // The context argument carries the user's type span, so a wrong `Context` type is
        // reported at the parameter that names it; so do the stream halves.
        let ctx_arg = quote_spanned!(ctx_ty.span()=> ctx);
        let (add, closure, args) = match &m.shape {
            Shape::Unary {
                req: (_, req_ty),
                reply,
            } => (
                quote!(add::<#krate::#body, #req_ty, #reply, _, _>),
                quote!(req: #req_ty),
                quote!(req),
            ),
            Shape::OneWay { req: (_, req_ty) } => (
                quote!(add_one_way::<#krate::#body, #req_ty, _, _>),
                quote!(req: #req_ty),
                quote!(req),
            ),
            Shape::Server {
                req: (_, req_ty),
                item,
                out,
            } => {
                let out_arg = quote_spanned!(out.span()=> out);
                (
                    quote!(add_server_stream::<#krate::#body, #req_ty, #item, _, _>),
                    quote!(req: #req_ty, out: #krate::Sender<#krate::#body, #item>),
                    quote!(req, #out_arg),
                )
            }
            Shape::Client { item, items, reply } => {
                let items_arg = quote_spanned!(items.span()=> items);
                (
                    quote!(add_client_stream::<#krate::#body, #item, #reply, _, _>),
                    quote!(items: #krate::Receiver<#krate::#body, #item>),
                    quote!(#items_arg),
                )
            }
            Shape::Bidi {
                input,
                items,
                output,
                out,
            } => {
                let items_arg = quote_spanned!(items.span()=> items);
                let out_arg = quote_spanned!(out.span()=> out);
                (
                    quote!(add_bidi::<#krate::#body, #input, #output, _, _>),
                    quote!(
                        items: #krate::Receiver<#krate::#body, #input>,
                        out: #krate::Sender<#krate::#body, #output>
                    ),
                    quote!(#items_arg, #out_arg),
                )
            }
        };
        let call = quote!(#trait_ident::#ident(&*svc, #ctx_arg, #args).await);
        let call = match &m.shape {
            Shape::OneWay { .. } => call,
            _ => quote!(#call.map_err(::core::convert::Into::into)),
        };
        quote! {
            {
                let svc = ::std::sync::Arc::clone(&svc);
                router.#add(
                    Self::NAME,
                    #wire,
                    move |ctx: #krate::Context, #closure| {
                        let svc = ::std::sync::Arc::clone(&svc);
                        async move { #call }
                    },
                );
            }
        }
    });

    let stubs = methods.iter().map(|m| {
        let Method {
            ident, wire, docs, ..
        } = m;
        let with_ident = format_ident!("{}_with", ident.unraw(), span = ident.span());
        let with_doc = format!(
            " As [`Self::{}`], with explicit call options (timeout, metadata, codec); the \
             client's defaults are not used.",
            ident.unraw()
        );
        let full = format!("{service_name}.{wire}");
        let kind_doc = match &m.shape {
            Shape::Unary { .. } => format!(" Calls `{full}` and waits for the reply."),
            Shape::OneWay { .. } => {
                format!(" One-way: sends `{full}` and returns once it is queued; no reply.")
            }
            Shape::Server { .. } => format!(
                " Server stream: sends the request to `{full}` and returns the stream of its \
                 items (dropping it cancels the stream)."
            ),
            Shape::Client { .. } => format!(
                " Client stream: opens `{full}`; send the items, `finish()` the sender, then \
                 `reply().await` the receiver for the one answer."
            ),
            Shape::Bidi { .. } => format!(
                " Bidirectional stream: opens `{full}`; send with the sender (`finish()` \
                 half-closes), read the receiver (dropping it cancels)."
            ),
        };
        let docs_sep = if docs.is_empty() {
            quote!()
        } else {
            quote!(#[doc = ""])
        };
        let res = |t: TokenStream2| quote!(::core::result::Result<#t, #krate::RpcError>);
        let tx = |t: &Type| quote!(#krate::Sender<#krate::#body, #t>);
        let rx = |t: &Type| quote!(#krate::Receiver<#krate::#body, #t>);
        let name = quote!(#server_ident::NAME, #wire);
        let (params, args, ret, body) = match &m.shape {
            Shape::Unary {
                req: (req_ident, req_ty),
                reply,
            } => (
                quote!(#req_ident: &#req_ty,),
                quote!(#req_ident,),
                res(quote!(#reply)),
                quote!(.call::<#krate::#body, #req_ty, #reply>(#name, #req_ident, opts)),
            ),
            Shape::OneWay {
                req: (req_ident, req_ty),
            } => (
                quote!(#req_ident: &#req_ty,),
                quote!(#req_ident,),
                res(quote!(())),
                quote!(.notify::<#krate::#body, #req_ty>(#name, #req_ident, opts)),
            ),
            Shape::Server {
                req: (req_ident, req_ty),
                item,
                ..
            } => (
                quote!(#req_ident: &#req_ty,),
                quote!(#req_ident,),
                res(rx(item)),
                quote!(.server_stream::<#krate::#body, #req_ty, #item>(#name, #req_ident, opts)),
            ),
            Shape::Client { item, reply, .. } => {
                let (t, r) = (tx(item), rx(reply));
                (
                    quote!(),
                    quote!(),
                    res(quote!((#t, #r))),
                    quote!(.client_stream::<#krate::#body, #item, #reply>(#name, opts)),
                )
            }
            Shape::Bidi { input, output, .. } => {
                let (t, r) = (tx(input), rx(output));
                (
                    quote!(),
                    quote!(),
                    res(quote!((#t, #r))),
                    quote!(.open_stream::<#krate::#body, #input, #output>(#name, opts)),
                )
            }
        };
        quote! {
            #(#docs)*
            #docs_sep
            #[doc = #kind_doc]
            pub async fn #ident(&self, #params) -> #ret {
                self.#with_ident(#args ::core::clone::Clone::clone(&self.defaults)).await
            }

            #(#docs)*
            #docs_sep
            #[doc = #with_doc]
            pub async fn #with_ident(&self, #params opts: #krate::CallOptions) -> #ret {
                self.peer #body .await
            }
        }
    });

    let server_doc = format!(
        " The `{service_name}` service: its wire names, and registration of a [`{trait_ident}`] \
         implementation into a router (messages as JSON)."
    );
    let client_doc = format!(
        " Client stub of the `{service_name}` service: calls the peer at the other end of one \
         connection, whichever side opened it."
    );
    let register_doc = " Serves every method of `svc` from `router`, under [`Self::NAME`]. \
                        Replaces methods of the same names registered before. The same `svc` \
                        may be registered in several routers.";
    let sep = if trait_docs.is_empty() {
        quote!()
    } else {
        quote!(#[doc = ""])
    };

    Ok(quote! {
        #item

        #[doc = #server_doc]
        #sep
        #(#trait_docs)*
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #server_ident;

        impl #server_ident {
            /// The service name on the wire.
            pub const NAME: &'static str = #service_name;
            /// Wire names of every method, in declaration order.
            pub const METHODS: &'static [&'static str] = &[#(#all_wires),*];
            /// Wire names of the one-way methods (a subset of [`Self::METHODS`]).
            pub const ONE_WAY: &'static [&'static str] = &[#(#one_way),*];
            /// Wire names of the streaming methods (a subset of [`Self::METHODS`]).
            pub const STREAMS: &'static [&'static str] = &[#(#streams),*];

            #[doc = #register_doc]
            pub fn register<T: #trait_ident>(
                router: &mut #krate::Router,
                svc: ::std::sync::Arc<T>,
            ) -> &mut #krate::Router {
                #(#registrations)*
                router
            }
        }

        #[doc = #client_doc]
        #sep
        #(#trait_docs)*
        #[derive(Clone, Debug)]
        #vis struct #client_ident {
            peer: #krate::Peer,
            defaults: #krate::CallOptions,
        }

        impl #client_ident {
            /// A stub calling `peer` (from `RpcClient::peer()`, `RpcServer::peers()` or a
            /// handler's `ctx.peer()`).
            pub fn new(peer: #krate::Peer) -> Self {
                Self { peer, defaults: #krate::CallOptions::default() }
            }
            /// Options for the methods without `_with`, such as a codec, a timeout or
            /// metadata sent with every call.
            pub fn with_defaults(mut self, opts: #krate::CallOptions) -> Self {
                self.defaults = opts;
                self
            }
            /// The peer this stub calls.
            pub fn peer(&self) -> &#krate::Peer {
                &self.peer
            }

            #(#stubs)*
        }
    })
}

fn is_doc(a: &Attribute) -> bool {
    a.path().is_ident("doc")
}

/// `say_hello` → `SayHello`.
fn upper_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut up = true;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The last path segment of a type, if it is a plain path.
fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

/// `T` of `Result<T>` or `Result<T, E>`.
fn result_ok_type(ty: &Type) -> Option<&Type> {
    let seg = last_segment(ty)?;
    if seg.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [ok] | [ok, _] => Some(ok),
        _ => None,
    }
}

/// A type the wire can produce: owned, no `impl Trait`.
fn check_owned(ty: &Type, what: &str, errs: &mut Errors) {
    match ty {
        Type::Reference(_) => errs.push_spanned(
            ty,
            format!(
                "the {what} type must be owned, since it is decoded from the wire: \
                 use `String` for `&str`, `Vec<T>` for `&[T]`"
            ),
        ),
        Type::ImplTrait(_) => errs.push_spanned(
            ty,
            format!("the {what} type must be a concrete type, not `impl Trait`"),
        ),
        _ => {}
    }
}

fn check_method(f: &TraitItemFn, errs: &mut Errors) -> Option<Method> {
    let sig = &f.sig;
    let mut local = Errors::default();

    // Our attributes: #[oneway] and #[method(name = "...")].
    let mut oneway = false;
    let mut oneway_attr = None;
    let mut wire: Option<String> = None;
    let mut attrs = Vec::new();
    for a in &f.attrs {
        if a.path().is_ident("oneway") {
            if !matches!(a.meta, syn::Meta::Path(_)) {
                local.push_spanned(a, "`#[oneway]` takes no arguments");
            } else if oneway {
                local.push_spanned(a, "`#[oneway]` is given twice");
            }
            oneway = true;
            oneway_attr = Some(a.clone());
        } else if a.path().is_ident("method") {
            let r = a.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value().is_empty() || lit.value().contains(char::is_whitespace) {
                        return Err(syn::Error::new(
                            lit.span(),
                            "a method's wire name must be non-empty and without spaces",
                        ));
                    }
                    wire = Some(lit.value());
                    Ok(())
                } else {
                    Err(meta.error("unknown argument: #[method] takes `name = \"WireName\"`"))
                }
            });
            if let Err(e) = r {
                local.push(e.span(), e);
            }
        } else {
            attrs.push(a.clone());
        }
    }

    if let Some(c) = &sig.constness {
        local.push(c.span, "a service method cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        local.push(u.span, "a service method cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        local.push_spanned(abi, "a service method cannot have an `extern` ABI");
    }
    if sig.asyncness.is_none() {
        local.push(
            sig.fn_token.span,
            format!(
                "service methods must be `async fn`: write `async fn {}(&self, ctx: Context, req: Request) -> Result<Reply, RpcError>`",
                sig.ident
            ),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let span_of: &dyn ToTokens = if sig.generics.params.is_empty() {
            &sig.generics.where_clause
        } else {
            &sig.generics
        };
        local.push_spanned(
            span_of,
            "service methods cannot be generic: the request and reply types must be concrete, \
             since they are decoded from the wire",
        );
    }
    if let Some(v) = &sig.variadic {
        local.push_spanned(v, "a service method cannot be variadic");
    }

    let mut inputs = sig.inputs.iter().peekable();
    // &self (a missing receiver is not taken for the context)
    if !matches!(inputs.peek(), Some(FnArg::Receiver(_)) | None) {
        local.push_spanned(
            inputs.peek(),
            "service methods take `&self` first: write `(&self, ctx: Context, req: Request)`",
        );
    } else {
        match inputs.next() {
            Some(FnArg::Receiver(r))
                if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
            Some(FnArg::Receiver(r)) => local.push_spanned(
                r,
                "service methods take `&self`: one service value serves every call, concurrently \
                 (use interior mutability for state)",
            ),
            Some(_) => unreachable!("peeked"),
            None => local.push(
                sig.paren_token.span.join(),
                "service methods take `&self` first: write `(&self, ctx: Context, req: Request)`",
            ),
        }
    }
    // ctx: Context
    let ctx_ty = match inputs.next() {
        Some(FnArg::Typed(pt)) if last_segment(&pt.ty).is_some_and(|s| s.ident == "Context") => {
            Some((*pt.ty).clone())
        }
        Some(other) => {
            local.push_spanned(
                other,
                "the parameter after `&self` must be the call context, `ctx: Context` \
                 (the caller's peer, deadline and metadata)",
            );
            None
        }
        None => {
            local.push(
                sig.paren_token.span.join(),
                "missing the call context: write `(&self, ctx: Context, req: Request)`",
            );
            None
        }
    };
    // The rest: a request, and/or the halves of a stream.
    let rest: Vec<Param> = inputs.map(param).collect();
    for p in &rest {
        match p {
            Param::Plain(_, ty, _) => check_owned(ty, "request", &mut local),
            Param::Half {
                item: Some(item), ..
            } => check_owned(item, "stream item", &mut local),
            Param::Half { ty, item: None, .. } => local.push_spanned(
                ty,
                "a stream half names its body strategy and item type: `Sender<Json, Item>`, \
                 `Receiver<Json, Item>` (`Prost` with `body = \"prost\"`)",
            ),
            Param::Other(a) => local.push_spanned(a, "expected the request parameter"),
        }
    }
    use Param::{Half, Plain};
    let shape_of_params = match rest.as_slice() {
        [] => {
            if ctx_ty.is_some() {
                local.push(
                    sig.paren_token.span.join(),
                    "missing the request parameter after `ctx: Context` (write `_req: ()` if \
                     the method needs none)",
                );
            }
            None
        }
        [Plain(i, t, _)] => Some(Params::Request((i.clone(), Type::clone(t)))),
        [
            Plain(i, t, _),
            Half {
                tx: true,
                ty,
                item: Some(item),
                ..
            },
        ] => Some(Params::Server(
            (i.clone(), Type::clone(t)),
            Type::clone(item),
            Type::clone(ty),
        )),
        [
            Half {
                tx: false,
                ty,
                item: Some(item),
                ..
            },
        ] => Some(Params::Client(Type::clone(item), Type::clone(ty))),
        [
            Half {
                tx: false,
                ty: rt,
                item: Some(ri),
                ..
            },
            Half {
                tx: true,
                ty: st,
                item: Some(si),
                ..
            },
        ] => Some(Params::Bidi(
            Type::clone(ri),
            Type::clone(rt),
            Type::clone(si),
            Type::clone(st),
        )),
        // Reported above.
        _ if rest.iter().any(|p| matches!(p, Half { item: None, .. })) => None,
        _ if rest.iter().all(|p| matches!(p, Plain(..))) => {
            local.push_spanned(
                rest[1].arg(),
                "a service method takes one request parameter: put several values in one \
                 struct (or a tuple)",
            );
            None
        }
        _ => {
            // Point at the first parameter out of place (all of them if none is).
            let bad = rest
                .iter()
                .enumerate()
                .find(|(i, p)| match p {
                    Plain(..) => *i != 0,
                    Half { tx: true, .. } => *i != rest.len() - 1 || rest.len() > 2,
                    Half { tx: false, .. } => *i != 0,
                    Param::Other(_) => true,
                })
                .map(|(_, p)| p.arg());
            let msg = "a streaming method takes `(&self, ctx: Context, req: Request, out: \
                       Sender<B, Item>)` (server stream), `(&self, ctx: Context, items: \
                       Receiver<B, Item>)` (client stream) or `(&self, ctx: Context, items: \
                       Receiver<B, In>, out: Sender<B, Out>)` (bidirectional)";
            match bad {
                Some(a) => local.push_spanned(a, msg),
                None => local.push(sig.paren_token.span.join(), msg),
            }
            None
        }
    };
    let streams = matches!(
        shape_of_params,
        Some(Params::Server(..) | Params::Client(..) | Params::Bidi(..))
    );
    if let (Some(a), true) = (&oneway_attr, streams) {
        local.push_spanned(
            a,
            "a stream cannot be `#[oneway]`: it always ends with the serving side's outcome",
        );
    }
    // Server and bidirectional streams send their items with the Sender.
    let unit_reply = matches!(shape_of_params, Some(Params::Server(..) | Params::Bidi(..)));

    // The reply.
    let reply_ty = match (&sig.output, oneway && !streams) {
        (ReturnType::Default, true) => None,
        (ReturnType::Type(_, ty), true) => {
            if !is_unit(ty) {
                local.push_spanned(
                    &sig.output,
                    "a `#[oneway]` method sends no reply, so it cannot return a value: remove the return type",
                );
            }
            None
        }
        (ReturnType::Default, false) => {
            local.push(
                sig.ident.span(),
                if unit_reply {
                    format!(
                        "`{}` returns nothing, but a stream method must return `Result<(), \
                         RpcError>` (an error ends the stream at the caller)",
                        sig.ident
                    )
                } else {
                    format!(
                        "`{}` returns nothing, but a two-way method must return \
                         `Result<Reply, RpcError>` (the error reaches the caller); mark it \
                         `#[oneway]` if it sends no reply",
                        sig.ident
                    )
                },
            );
            None
        }
        (ReturnType::Type(_, ty), false) => match result_ok_type(ty) {
            Some(ok) if unit_reply && !is_unit(ok) => {
                local.push_spanned(
                    ty,
                    "this stream sends its items with its `Sender`, so it returns `Result<(), \
                     RpcError>` (an error ends the stream at the caller)",
                );
                None
            }
            Some(ok) => {
                check_owned(ok, "reply", &mut local);
                Some(ok.clone())
            }
            None => {
                local.push_spanned(
                    ty,
                    if unit_reply {
                        "a stream method must return `Result<(), RpcError>` (an error ends the \
                         stream at the caller)"
                    } else {
                        "a two-way method must return `Result<Reply, RpcError>` (the error \
                         reaches the caller); mark it `#[oneway]` if it sends no reply"
                    },
                );
                None
            }
        },
    };

    if local.0.is_some() {
        errs.append(local);
        return None;
    }
    let ctx_ty = ctx_ty?;
    let shape = match (shape_of_params?, reply_ty) {
        (Params::Request(req), None) => Shape::OneWay { req },
        (Params::Request(req), Some(reply)) => Shape::Unary { req, reply },
        (Params::Server(req, item, out), _) => Shape::Server { req, item, out },
        (Params::Client(item, items), Some(reply)) => Shape::Client { item, items, reply },
        (Params::Bidi(input, items, output, out), _) => Shape::Bidi {
            input,
            items,
            output,
            out,
        },
        (Params::Client(..), None) => return None,
    };

    // The rewritten trait method: `fn m(..) -> impl Future<Output = R> + Send`.
    let output: Type = match &sig.output {
        ReturnType::Type(_, ty) if !matches!(shape, Shape::OneWay { .. }) => (**ty).clone(),
        _ => parse_quote!(()),
    };
    let mut new_sig: Signature = sig.clone();
    new_sig.asyncness = None;
    new_sig.output = parse_quote! {
        -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
    };
    let default = f
        .default
        .as_ref()
        .map(|block| -> syn::Block { parse_quote!({ async move #block }) });
    let item = TraitItemFn {
        attrs,
        sig: new_sig,
        default,
        semi_token: if f.default.is_some() {
            None
        } else {
            Some(Default::default())
        },
    };
    Some(Method {
        wire: wire.unwrap_or_else(|| upper_camel(&sig.ident.unraw().to_string())),
        ident: sig.ident.clone(),
        docs: f.attrs.iter().filter(|a| is_doc(a)).cloned().collect(),
        ctx_ty,
        shape,
        item,
    })
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// A parameter after `ctx`, classified.
enum Param<'a> {
    /// A request, with the name the stub gives it.
    Plain(Ident, &'a Type, &'a FnArg),
    /// `Sender<B, T>` (`tx`) or `Receiver<B, T>`; `item` is `T`, if the type has two arguments.
    Half {
        tx: bool,
        ty: &'a Type,
        item: Option<&'a Type>,
        arg: &'a FnArg,
    },
    Other(&'a FnArg),
}

impl Param<'_> {
    /// The whole parameter, `name: Type`, for error spans.
    fn arg(&self) -> &FnArg {
        match self {
            Param::Plain(_, _, a) | Param::Half { arg: a, .. } | Param::Other(a) => a,
        }
    }
}

/// The parameters after `ctx` of each shape.
enum Params {
    Request((Ident, Type)),
    Server((Ident, Type), Type, Type),
    Client(Type, Type),
    Bidi(Type, Type, Type, Type),
}

fn param(arg: &FnArg) -> Param<'_> {
    let FnArg::Typed(pt) = arg else {
        return Param::Other(arg);
    };
    let ty: &Type = &pt.ty;
    if let Some(seg) = last_segment(ty).filter(|s| s.ident == "Sender" || s.ident == "Receiver") {
        let item = match &seg.arguments {
            PathArguments::AngleBracketed(a) => match a.args.iter().collect::<Vec<_>>()[..] {
                [GenericArgument::Type(_), GenericArgument::Type(t)] => Some(t),
                _ => None,
            },
            _ => None,
        };
        return Param::Half {
            tx: seg.ident == "Sender",
            ty,
            item,
            arg,
        };
    }
    let ident = match &*pt.pat {
        // `opts` is the `_with` stubs' own parameter.
        Pat::Ident(pi) if pi.ident != "_" && pi.ident != "opts" => {
            Ident::new(&pi.ident.unraw().to_string(), pi.ident.span())
        }
        _ => Ident::new("req", Span::call_site()),
    };
    Param::Plain(ident, ty, arg)
}

#[cfg(test)]
mod tests {
    use super::upper_camel;

    #[test]
    fn wire_names() {
        assert_eq!(upper_camel("add"), "Add");
        assert_eq!(upper_camel("say_hello"), "SayHello");
        assert_eq!(upper_camel("get_v2_item"), "GetV2Item");
        assert_eq!(upper_camel("_private"), "Private");
    }
}
