//! getty-rpc-build: getty-rpc services from `.proto` files, generated at build time.
//!
//! `.proto` files are compiled by [`protox`] (a protobuf compiler in pure Rust: **no `protoc`
//! is ever run**, nor looked for) and turned into Rust by [`prost_build`], with two additions:
//!
//! - every message and enum also derives `serde::Serialize` and `serde::Deserialize` (messages
//!   with `#[serde(default)]`), so one service definition serves a Protobuf peer and a JSON
//!   peer (the `getty_rpc::Prost` body strategy speaks both);
//! - per `service`, a server trait, a registration struct and a client stub (below).
//!
//! # Use
//!
//! `build.rs`:
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     getty_rpc_build::compile_protos(&["proto/greeter.proto"], &["proto"])
//! }
//! ```
//!
//! `src/lib.rs`, one module per proto package (the file is named after the package):
//!
//! ```ignore
//! pub mod greeter {
//!     include!(concat!(env!("OUT_DIR"), "/greeter.rs"));
//! }
//! ```
//!
//! The crate needs `getty-rpc`, `prost` and `serde` (with `derive`) as dependencies.
//!
//! # What a service becomes
//!
//! ```proto
//! package greeter;
//! // Greets.
//! service Greeter {
//!   // Answers a greeting.
//!   rpc SayHello(HelloRequest) returns (HelloReply);
//!   // Tells the other side something; no reply.
//!   // @oneway
//!   rpc Notify(Notice) returns (google.protobuf.Empty);
//! }
//! ```
//!
//! - `trait Greeter: Send + Sync + 'static`, one method per rpc,
//!   `fn say_hello(&self, ctx: Context, req: HelloRequest) -> impl Future<Output =
//!   Result<HelloReply, RpcError>> + Send` (implement it with `async fn`), and for a one-way rpc
//!   `fn notify(&self, ctx: Context, req: Notice) -> impl Future<Output = ()> + Send`;
//! - `struct GreeterServer`, with the wire names `NAME` (`"greeter.Greeter"`), `METHODS`
//!   (`["SayHello", "Notify"]`) and `ONE_WAY` (`["Notify"]`), and
//!   `GreeterServer::register(&mut router, Arc::new(impl))`, serving every rpc with
//!   `getty_rpc::Prost` (Protobuf and JSON);
//! - `struct GreeterClient`, a stub over a `getty_rpc::Peer`: `new(peer)`,
//!   `with_defaults(CallOptions)`, `peer()`, and per rpc `say_hello(&req)` /
//!   `say_hello_with(&req, CallOptions)` (timeout, metadata, codec: `CodecId::Json` makes a
//!   JSON call). One-way stubs return `Result<(), RpcError>` once the request is queued.
//!
//! Either peer can serve or call: register `GreeterServer` in the router of an `RpcServer` or
//! of an `RpcClient`, and build a `GreeterClient` on any `Peer` (`client.peer()?`,
//! `server.peers()`, `ctx.peer().clone()` inside a handler).
//!
//! # Conventions
//!
//! - **Wire names**: the service is `package.Service` (just `Service` without a package); a
//!   method is the rpc name as written in the `.proto` (`SayHello`). Rust names are snake_case
//!   (`say_hello`).
//! - **One-way rpcs**: an rpc whose leading (or trailing) comment contains `@oneway` never
//!   answers. Its declared reply type is ignored; `google.protobuf.Empty` says so best. The
//!   `@oneway` marker is left out of the generated docs.
//! - **Docs**: comments on services and rpcs become rustdoc on the trait, its methods, the
//!   client stub and its methods.
//! - **Streaming** rpcs are refused: getty-rpc calls are unary or one-way.
//! - **JSON** is serde's rendering of the prost structs (field names as in Rust, `bytes` as
//!   arrays of numbers, enums as their `i32`), not the proto3 canonical JSON mapping.
//! - **Well-known types**: `google.protobuf.Empty` maps to `()`, which works with both codecs.
//!   Other well-known types map to `prost_types`, which has no serde support; use your own
//!   messages instead.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use prost_build;
pub use prost_types::FileDescriptorSet;
pub use protox;

/// Compiles `protos` (found under `includes`) into `OUT_DIR` with the default [`Builder`].
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> io::Result<()> {
    Builder::new().compile(protos, includes)
}

/// The marker that makes an rpc one-way when it appears in its comment.
pub const ONEWAY_MARKER: &str = "@oneway";

type Tweak = Box<dyn FnOnce(&mut prost_build::Config)>;

/// Options of a generation. The defaults suit a `build.rs`.
pub struct Builder {
    out_dir: Option<PathBuf>,
    rpc_crate: String,
    emit_rerun_if_changed: bool,
    tweaks: Vec<Tweak>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            out_dir: None,
            rpc_crate: "::getty_rpc".to_string(),
            emit_rerun_if_changed: true,
            tweaks: Vec::new(),
        }
    }

    /// Where the `.rs` files go (default: `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The path at which the generated code reaches getty-rpc (default `::getty_rpc`; for a
    /// crate that depends only on the `getty` facade, `::getty::rpc`).
    pub fn rpc_crate(mut self, path: impl Into<String>) -> Self {
        self.rpc_crate = path.into();
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every `.proto` compiled (default true).
    pub fn emit_rerun_if_changed(mut self, on: bool) -> Self {
        self.emit_rerun_if_changed = on;
        self
    }

    /// Adjusts the underlying [`prost_build::Config`] (extra attributes, `bytes` fields, ...),
    /// after getty-rpc-build's own settings.
    pub fn prost_config(mut self, f: impl FnOnce(&mut prost_build::Config) + 'static) -> Self {
        self.tweaks.push(Box::new(f));
        self
    }

    /// Compiles `protos` (paths of `.proto` files inside one of `includes`, or relative to one)
    /// with protox, then generates Rust.
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> io::Result<()> {
        let fds = protox::compile(protos, includes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?;
        if self.emit_rerun_if_changed {
            for f in &fds.file {
                // Files under an include dir; the built-in google/protobuf ones are not there.
                for inc in includes {
                    let p = inc.as_ref().join(f.name());
                    if p.exists() {
                        println!("cargo:rerun-if-changed={}", p.display());
                        break;
                    }
                }
            }
        }
        self.compile_fds(fds)
    }

    /// Generates Rust from an already compiled descriptor set (it must include source info for
    /// comments and `@oneway` markers to be seen).
    pub fn compile_fds(self, mut fds: FileDescriptorSet) -> io::Result<()> {
        check_unary(&fds)?;
        // Well-known types are not generated: prost-build maps them to `()` / `prost_types`.
        fds.file
            .retain(|f| !(f.package() == "google.protobuf" && f.name().starts_with("google/")));

        let problems = Rc::new(RefCell::new(Vec::new()));
        let mut cfg = prost_build::Config::new();
        cfg.message_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
            .message_attribute(".", "#[serde(default)]")
            .enum_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
            .service_generator(Box::new(ServiceGenerator {
                rpc_crate: self.rpc_crate.clone(),
                problems: Some(problems.clone()),
            }));
        if let Some(dir) = &self.out_dir {
            cfg.out_dir(dir);
        }
        for t in self.tweaks {
            t(&mut cfg);
        }
        cfg.compile_fds(fds)?;
        let problems = problems.borrow();
        if !problems.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                problems.join("\n"),
            ));
        }
        Ok(())
    }
}

/// Refuses streaming rpcs, naming each.
fn check_unary(fds: &FileDescriptorSet) -> io::Result<()> {
    let mut bad = Vec::new();
    for f in &fds.file {
        for s in &f.service {
            for m in &s.method {
                if m.client_streaming() || m.server_streaming() {
                    bad.push(format!(
                        "{}: rpc {} of service {} streams; getty-rpc services are unary \
                         (request, reply) or one-way (`{ONEWAY_MARKER}` in the rpc's comment)",
                        f.name(),
                        m.name(),
                        qualified(f.package(), s.name()),
                    ));
                }
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, bad.join("\n")))
    }
}

fn qualified(package: &str, service: &str) -> String {
    if package.is_empty() {
        service.to_string()
    } else {
        format!("{package}.{service}")
    }
}

/// The prost-build [`prost_build::ServiceGenerator`] that writes getty-rpc server traits and
/// client stubs; [`Builder`] installs it. Usable on a `prost_build::Config` of your own (which
/// must then add the serde derives itself).
pub struct ServiceGenerator {
    rpc_crate: String,
    problems: Option<Rc<RefCell<Vec<String>>>>,
}

impl ServiceGenerator {
    /// `rpc_crate`: the path of getty-rpc in the generated code, such as `::getty_rpc`.
    pub fn new(rpc_crate: impl Into<String>) -> Self {
        ServiceGenerator {
            rpc_crate: rpc_crate.into(),
            problems: None,
        }
    }
}

/// One rpc, ready to print.
struct Rpc {
    /// Rust method name, possibly raw (`r#type`).
    ident: String,
    /// `ident` without `r#`, for derived names.
    base: String,
    wire: String,
    input: String,
    output: String,
    oneway: bool,
    docs: prost_build::Comments,
}

/// Removes the `@oneway` marker from comments; says whether it was there.
fn take_oneway(c: &mut prost_build::Comments) -> bool {
    let mut found = false;
    for lines in [&mut c.leading, &mut c.trailing] {
        let mut kept = Vec::with_capacity(lines.len());
        for line in lines.drain(..) {
            if line.split_whitespace().any(|w| w == ONEWAY_MARKER) {
                found = true;
                let rest = line.replace(ONEWAY_MARKER, "");
                if !rest.trim().is_empty() {
                    kept.push(rest.trim_end().to_string());
                }
            } else {
                kept.push(line);
            }
        }
        // No dangling empty lines where the marker was.
        while kept.last().is_some_and(|l| l.trim().is_empty()) {
            kept.pop();
        }
        *lines = kept;
    }
    found
}

/// The doc comment lines of `c` at `indent` (detached comments dropped).
fn docs(c: &prost_build::Comments, indent: u8) -> String {
    let mut c = c.clone();
    c.leading_detached.clear();
    let mut s = String::new();
    c.append_with_indent(indent, &mut s);
    s
}

fn has_docs(c: &prost_build::Comments) -> bool {
    !c.leading.is_empty() || !c.trailing.is_empty()
}

impl prost_build::ServiceGenerator for ServiceGenerator {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let k = self.rpc_crate.trim_end_matches("::").to_string();
        let full = qualified(&service.package, &service.proto_name);
        let name = &service.name;
        let server = format!("{name}Server");
        let client = format!("{name}Client");
        let mut problems = Vec::new();

        let rpcs: Vec<Rpc> = service
            .methods
            .into_iter()
            .map(|m| {
                if m.client_streaming || m.server_streaming {
                    problems.push(format!(
                        "rpc {} of service {full} streams; getty-rpc services are unary or one-way",
                        m.proto_name
                    ));
                }
                let mut docs = m.comments;
                let oneway = take_oneway(&mut docs);
                Rpc {
                    base: m.name.trim_start_matches("r#").to_string(),
                    ident: m.name,
                    wire: m.proto_name,
                    input: m.input_type,
                    output: m.output_type,
                    oneway,
                    docs,
                }
            })
            .collect();

        // Stub method names must not collide with each other or the stub's own methods.
        let mut taken: Vec<(String, String)> = ["new", "with_defaults", "peer"]
            .iter()
            .map(|s| (s.to_string(), format!("{client}::{s}")))
            .collect();
        for r in &rpcs {
            for stub in [r.base.clone(), format!("{}_with", r.base)] {
                if let Some((_, owner)) = taken.iter().find(|(n, _)| *n == stub) {
                    problems.push(format!(
                        "service {full}: the stub method `{stub}` for rpc {} clashes with {owner}; rename the rpc",
                        r.wire
                    ));
                } else {
                    taken.push((stub, format!("the stub of rpc {}", r.wire)));
                }
            }
        }

        let svc_docs = docs(&service.comments, 0);
        let svc_sep = if has_docs(&service.comments) {
            "///\n"
        } else {
            ""
        };

        // --- the server trait ---
        let _ = writeln!(buf);
        buf.push_str(&svc_docs);
        buf.push_str(svc_sep);
        let _ = writeln!(
            buf,
            "/// Server side of the `{full}` service: implement it (with `async fn`s), then serve it with\n\
             /// [`{server}::register`]."
        );
        let _ = writeln!(
            buf,
            "pub trait {name}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
        );
        for r in &rpcs {
            buf.push_str(&docs(&r.docs, 1));
            let out = if r.oneway {
                "()".to_string()
            } else {
                format!("::core::result::Result<{}, {k}::RpcError>", r.output)
            };
            if r.oneway {
                if has_docs(&r.docs) {
                    buf.push_str("    ///\n");
                }
                buf.push_str("    /// One-way: the caller gets no reply.\n");
            }
            let _ = writeln!(
                buf,
                "    fn {}(\n        &self,\n        ctx: {k}::Context,\n        req: {},\n    ) -> impl ::core::future::Future<Output = {out}> + ::core::marker::Send;",
                r.ident, r.input
            );
        }
        buf.push_str("}\n\n");

        // --- the registration struct ---
        let methods: Vec<String> = rpcs.iter().map(|r| format!("{:?}", r.wire)).collect();
        let one_way: Vec<String> = rpcs
            .iter()
            .filter(|r| r.oneway)
            .map(|r| format!("{:?}", r.wire))
            .collect();
        let _ = writeln!(
            buf,
            "/// The `{full}` service: its wire names, and registration of a [`{name}`] implementation\n\
             /// into a router (messages as Protobuf or JSON, as each call chooses)."
        );
        if has_docs(&service.comments) {
            buf.push_str("///\n");
            buf.push_str(&svc_docs);
        }
        let _ = writeln!(
            buf,
            "#[derive(Clone, Copy, Debug, Default)]\npub struct {server};\n\nimpl {server} {{\n    \
             /// The service name on the wire.\n    \
             pub const NAME: &'static str = {full:?};\n    \
             /// Wire names of every method, in declaration order.\n    \
             pub const METHODS: &'static [&'static str] = &[{}];\n    \
             /// Wire names of the one-way methods (a subset of [`Self::METHODS`]).\n    \
             pub const ONE_WAY: &'static [&'static str] = &[{}];\n\n    \
             /// Serves every method of `svc` from `router`, under [`Self::NAME`]. Replaces methods\n    \
             /// of the same names registered before.\n    \
             pub fn register<T: {name}>(\n        router: &mut {k}::Router,\n        svc: ::std::sync::Arc<T>,\n    ) -> &mut {k}::Router {{",
            methods.join(", "),
            one_way.join(", "),
        );
        for r in &rpcs {
            let (add, types, call) = if r.oneway {
                (
                    "add_one_way",
                    format!("{k}::Prost, {}, _, _", r.input),
                    format!("{name}::{}(&*svc, ctx, req).await", r.ident),
                )
            } else {
                (
                    "add",
                    format!("{k}::Prost, {}, {}, _, _", r.input, r.output),
                    format!("{name}::{}(&*svc, ctx, req).await", r.ident),
                )
            };
            let _ = writeln!(
                buf,
                "        {{\n            \
                 let svc = ::std::sync::Arc::clone(&svc);\n            \
                 router.{add}::<{types}>(\n                \
                 Self::NAME,\n                \
                 {wire:?},\n                \
                 move |ctx: {k}::Context, req: {input}| {{\n                    \
                 let svc = ::std::sync::Arc::clone(&svc);\n                    \
                 async move {{ {call} }}\n                \
                 }},\n            \
                 );\n        \
                 }}",
                wire = r.wire,
                input = r.input,
            );
        }
        buf.push_str("        router\n    }\n}\n\n");

        // --- the client stub ---
        let _ = writeln!(
            buf,
            "/// Client stub of the `{full}` service: calls the peer at the other end of one connection,\n\
             /// whichever side opened it. Calls use Protobuf unless the options say otherwise."
        );
        if has_docs(&service.comments) {
            buf.push_str("///\n");
            buf.push_str(&svc_docs);
        }
        let _ = writeln!(
            buf,
            "#[derive(Clone, Debug)]\npub struct {client} {{\n    peer: {k}::Peer,\n    defaults: {k}::CallOptions,\n}}\n\n\
             impl {client} {{\n    \
             /// A stub calling `peer` (from `RpcClient::peer()`, `RpcServer::peers()` or a handler's\n    \
             /// `ctx.peer()`).\n    \
             pub fn new(peer: {k}::Peer) -> Self {{\n        \
             Self {{ peer, defaults: {k}::CallOptions::default() }}\n    }}\n\n    \
             /// Options for the methods without `_with`, such as `CallOptions::new().codec(CodecId::Json)`\n    \
             /// for a JSON client, a timeout, or metadata sent with every call.\n    \
             pub fn with_defaults(mut self, opts: {k}::CallOptions) -> Self {{\n        \
             self.defaults = opts;\n        self\n    }}\n\n    \
             /// The peer this stub calls.\n    \
             pub fn peer(&self) -> &{k}::Peer {{\n        &self.peer\n    }}"
        );
        for r in &rpcs {
            let d = docs(&r.docs, 1);
            let sep = if has_docs(&r.docs) { "    ///\n" } else { "" };
            let (ret, body, kind) = if r.oneway {
                (
                    format!("::core::result::Result<(), {k}::RpcError>"),
                    format!(
                        "self.peer\n            .notify::<{k}::Prost, {}>({server}::NAME, {:?}, req, opts)\n            .await",
                        r.input, r.wire
                    ),
                    format!(
                        "One-way: sends `{full}.{}` and returns once it is queued; no reply.",
                        r.wire
                    ),
                )
            } else {
                (
                    format!("::core::result::Result<{}, {k}::RpcError>", r.output),
                    format!(
                        "self.peer\n            .call::<{k}::Prost, {}, {}>({server}::NAME, {:?}, req, opts)\n            .await",
                        r.input, r.output, r.wire
                    ),
                    format!("Calls `{full}.{}` and waits for the reply.", r.wire),
                )
            };
            let _ = writeln!(
                buf,
                "\n{d}{sep}    /// {kind}\n    \
                 pub async fn {ident}(&self, req: &{input}) -> {ret} {{\n        \
                 self.{base}_with(req, ::core::clone::Clone::clone(&self.defaults)).await\n    }}\n\n\
                 {d}{sep}    /// As [`Self::{base}`], with explicit call options (timeout, metadata, codec); the\n    \
                 /// client's defaults are not used.\n    \
                 pub async fn {base}_with(&self, req: &{input}, opts: {k}::CallOptions) -> {ret} {{\n        \
                 {body}\n    }}",
                ident = r.ident,
                base = r.base,
                input = r.input,
            );
        }
        buf.push_str("}\n");

        for p in &problems {
            let _ = writeln!(buf, "::core::compile_error!({p:?});");
        }
        if let Some(all) = &self.problems {
            all.borrow_mut().extend(problems);
        }
    }
}

#[cfg(test)]
mod tests;
