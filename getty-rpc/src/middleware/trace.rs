//! W3C trace context on every call and stream: the caller's `traceparent`/`tracestate` travel
//! in the call's (or the stream open's) metadata (both directions: a server calling its client back is a caller too), and
//! the callee's span continues the caller's trace.
//!
//! The trace of the code running now is [`TraceContext::current`]: inside a handler, the
//! served call's (a child of the caller's span); elsewhere what [`TraceContext::scope`] set.
//! A call made with no current trace starts a new one. Handlers that spawn tasks carry the
//! context into them with `scope`. With the feature `tracing-opentelemetry` the context is
//! the OpenTelemetry context of the current `tracing` span instead, so getty's spans join
//! the application's traces and are exported by its OpenTelemetry pipeline.

#[cfg(not(feature = "tracing-opentelemetry"))]
use std::future::Future;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tracing::Instrument;

use super::{Call, Direction, Middleware, Next};
use crate::error::RpcError;

/// The metadata keys of the W3C Trace Context recommendation.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// A `tracestate` longer than this is dropped, as the recommendation allows (512 bytes).
const MAX_TRACESTATE: usize = 512;

/// One span's place in a trace: what a `traceparent` carries, plus the vendor `tracestate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// Never 0.
    pub trace_id: u128,
    /// This span's id; never 0.
    pub span_id: u64,
    /// Bit 0: sampled.
    pub flags: u8,
    pub state: Option<String>,
}

#[cfg(not(feature = "tracing-opentelemetry"))]
tokio::task_local! {
    static CURRENT: TraceContext;
}

fn nonzero_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

impl TraceContext {
    /// The first span of a new, sampled trace.
    pub fn new_root() -> Self {
        let trace_id = loop {
            let v = fastrand::u128(..);
            if v != 0 {
                break v;
            }
        };
        TraceContext {
            trace_id,
            span_id: nonzero_u64(),
            flags: 1,
            state: None,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: nonzero_u64(),
            ..self.clone()
        }
    }

    /// Reads `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero; a later version
    /// is read by its first four fields, as the recommendation says) and `tracestate`.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&v| v != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|&v| v != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE)
            .map(str::to_string);
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// The `traceparent` value naming this span as the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// Runs `f` with this as the current trace context.
    #[cfg(not(feature = "tracing-opentelemetry"))]
    pub fn scope<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, f)
    }

    /// The trace context of the code running now, if any.
    #[cfg(not(feature = "tracing-opentelemetry"))]
    pub fn current() -> Option<TraceContext> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Writes this context into a call's metadata (replacing what was there).
    #[cfg(not(feature = "tracing-opentelemetry"))]
    fn inject(&self, call: &mut Call) {
        call.set_meta(TRACEPARENT, self.traceparent());
        match &self.state {
            Some(s) => call.set_meta(TRACESTATE, s.clone()),
            None => {
                call.remove_meta(TRACESTATE);
            }
        }
    }

    #[cfg(not(feature = "tracing-opentelemetry"))]
    fn extract(call: &Call) -> Option<TraceContext> {
        TraceContext::parse(call.meta(TRACEPARENT)?, call.meta(TRACESTATE))
    }
}

/// The layer: put it on both paths (`RpcOptions::layer(TracePropagation)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TracePropagation;

#[cfg(not(feature = "tracing-opentelemetry"))]
impl Middleware for TracePropagation {
    fn call(&self, mut call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        let (ctx, parent) = match call.direction {
            Direction::Inbound => {
                let parent = TraceContext::extract(&call);
                let ctx = parent
                    .as_ref()
                    .map_or_else(TraceContext::new_root, TraceContext::child);
                (ctx, parent.map(|p| p.span_id))
            }
            Direction::Outbound => {
                let parent = TraceContext::current();
                let ctx = parent
                    .as_ref()
                    .map_or_else(TraceContext::new_root, TraceContext::child);
                ctx.inject(&mut call);
                (ctx, parent.map(|p| p.span_id))
            }
        };
        let span = tracing::info_span!(
            "rpc",
            direction = call.direction.as_str(),
            service = %call.service,
            method = %call.method,
            trace_id = %ctx.trace_id_hex(),
            span_id = %ctx.span_id_hex(),
            parent_span_id = parent.map(|p| format!("{p:016x}")).unwrap_or_default(),
        );
        Box::pin(ctx.scope(next.run(call)).instrument(span))
    }
}

#[cfg(feature = "tracing-opentelemetry")]
mod otel {
    //! The context is the current `tracing` span's OpenTelemetry context.

    use std::future::Future;

    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::*;

    struct Meta<'a>(&'a [(String, String)]);
    impl Extractor for Meta<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }
    }
    struct MetaMut<'a>(&'a mut Vec<(String, String)>);
    impl Injector for MetaMut<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.retain(|(k, _)| k != key);
            self.0.push((key.to_string(), value));
        }
    }

    impl TraceContext {
        /// Runs `f` inside `span`-less code with this context as the parent: a `tracing`
        /// span continuing it.
        pub fn scope<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
            let span = tracing::info_span!("rpc.scope");
            let cx = opentelemetry::Context::new().with_remote_span_context(self.span_context());
            let _ = span.set_parent(cx);
            f.instrument(span)
        }

        /// The OpenTelemetry context of the current `tracing` span, if it is in a trace.
        pub fn current() -> Option<TraceContext> {
            let cx = tracing::Span::current().context();
            let span = cx.span();
            let sc = span.span_context();
            if !sc.is_valid() {
                return None;
            }
            Some(TraceContext {
                trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                flags: sc.trace_flags().to_u8(),
                state: Some(sc.trace_state().header()).filter(|s| !s.is_empty()),
            })
        }

        fn span_context(&self) -> opentelemetry::trace::SpanContext {
            use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
            let state = self
                .state
                .as_deref()
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default();
            SpanContext::new(
                TraceId::from_bytes(self.trace_id.to_be_bytes()),
                SpanId::from_bytes(self.span_id.to_be_bytes()),
                TraceFlags::new(self.flags),
                true,
                state,
            )
        }
    }

    impl Middleware for TracePropagation {
        fn call(&self, mut call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>> {
            let prop = TraceContextPropagator::new();
            let span = match call.direction {
                Direction::Inbound => {
                    let span = tracing::info_span!(
                        "rpc.server",
                        otel.kind = "server",
                        service = %call.service,
                        method = %call.method,
                    );
                    let parent = prop.extract(&Meta(&call.metadata));
                    if parent.span().span_context().is_valid() {
                        let _ = span.set_parent(parent);
                    }
                    span
                }
                Direction::Outbound => {
                    let span = tracing::info_span!(
                        "rpc.client",
                        otel.kind = "client",
                        service = %call.service,
                        method = %call.method,
                    );
                    prop.inject_context(&span.context(), &mut MetaMut(&mut call.metadata));
                    span
                }
            };
            Box::pin(next.run(call).instrument(span))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TraceContext;

    #[test]
    fn traceparent_round_trips_and_bad_ones_are_ignored() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let c = TraceContext::parse(tp, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(c.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(c.span_id, 0xb7ad6b7169203331);
        assert_eq!(c.flags, 1);
        assert_eq!(c.traceparent(), tp);
        assert_eq!(c.state.as_deref(), Some("congo=t61rcWkgMzE"));
        let child = c.child();
        assert_eq!(child.trace_id, c.trace_id);
        assert_ne!(child.span_id, c.span_id);
        for bad in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad}");
        }
        // A later version: its first four fields are read.
        let v = TraceContext::parse(
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future",
            None,
        );
        assert!(v.is_some());
    }
}
