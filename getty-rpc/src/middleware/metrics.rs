//! Call and connection metrics through the `metrics` facade (feature `metrics`), so any
//! exporter (Prometheus, StatsD, ...) the application installs gets them.
//!
//! Per service, method and direction (labels `service`, `method`, `direction`):
//! - `getty_rpc_calls_started_total` (counter)
//! - `getty_rpc_calls_finished_total` (counter, plus label `status`: `OK`, `HANDLER_ERROR`, ...;
//!   a call dropped before its outcome, such as a cancelled one, counts as `CANCELLED`)
//! - `getty_rpc_call_duration_seconds` (histogram, finished calls)
//! - `getty_rpc_calls_in_flight` (gauge)
//!
//! Streams, per service, method and direction (inbound: opened by the peer), counted apart
//! from calls since a stream's life is not a call's latency:
//! - `getty_rpc_streams_opened_total` (counter: opens that reached the layer)
//! - `getty_rpc_streams_ended_total` (counter, plus label `status`: how the stream ended, as
//!   the layer saw it; a refused open counts here too, with the refusal's status)
//! - `getty_rpc_stream_duration_seconds` (histogram, open to end)
//! - `getty_rpc_streams_open` (gauge)
//! - `getty_rpc_stream_items_received_total`, `getty_rpc_stream_items_sent_total` (counters,
//!   added once per stream when it ends: the items this side's application took and sent;
//!   counted per stream, never by a layer per item)
//!
//! Per connection (label `peer`, the session id), by [`record_connection`] (the traffic and
//! queue ones also after each call through the layer):
//! - `getty_rpc_connection_bytes_in_total`, `..._bytes_out_total`, `..._frames_in_total`,
//!   `..._frames_out_total` (counters, from getty-core's session stats)
//! - `getty_rpc_connection_write_queue` (gauge: writes queued, not yet written)
//! - `getty_rpc_connection_pending_calls`, `getty_rpc_connection_serving` (gauges)
//!
//! Inbound labels only ever name methods the router serves: a call to an unknown method is
//! answered before any layer runs, so a peer cannot grow the label space.

use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use metrics::{Gauge, Label, counter, gauge, histogram};

use super::{Call, Middleware, Next, StreamItems};
use crate::error::RpcError;
use crate::peer::Peer;
use crate::status::Status;

/// The layer: put it on both paths (`RpcOptions::layer(Metrics)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics;

/// The names a call or a stream is counted under.
struct Names {
    started: &'static str,
    finished: &'static str,
    in_flight: &'static str,
    duration: &'static str,
}

const CALLS: Names = Names {
    started: "getty_rpc_calls_started_total",
    finished: "getty_rpc_calls_finished_total",
    in_flight: "getty_rpc_calls_in_flight",
    duration: "getty_rpc_call_duration_seconds",
};

const STREAMS: Names = Names {
    started: "getty_rpc_streams_opened_total",
    finished: "getty_rpc_streams_ended_total",
    in_flight: "getty_rpc_streams_open",
    duration: "getty_rpc_stream_duration_seconds",
};

/// Keeps the in-flight gauge right, counts a call that never finished (dropped, e.g.
/// cancelled) as `CANCELLED`, and adds a stream's item counts, however it ends.
struct InFlight {
    names: &'static Names,
    gauge: Gauge,
    labels: Vec<Label>,
    done: bool,
    items: Option<StreamItems>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
        if !self.done {
            finished(self.names, &self.labels, Status::Cancelled);
        }
        if let Some(items) = &self.items {
            counter!("getty_rpc_stream_items_received_total", self.labels.clone())
                .increment(items.received());
            counter!("getty_rpc_stream_items_sent_total", self.labels.clone())
                .increment(items.sent());
        }
    }
}

fn finished(names: &Names, labels: &[Label], status: Status) {
    let mut l = labels.to_vec();
    l.push(Label::new("status", status.name()));
    counter!(names.finished, l).increment(1);
}

impl Middleware for Metrics {
    fn call(&self, call: Call, next: Next) -> BoxFuture<'static, Result<Bytes, RpcError>> {
        let labels = vec![
            Label::new("service", call.service.to_string()),
            Label::new("method", call.method.to_string()),
            Label::new("direction", call.direction.as_str()),
        ];
        let names = if call.kind.is_stream() {
            &STREAMS
        } else {
            &CALLS
        };
        counter!(names.started, labels.clone()).increment(1);
        let g = gauge!(names.in_flight, labels.clone());
        g.increment(1.0);
        let peer = call.peer().clone();
        let items = call.stream_items().cloned();
        let started = Instant::now();
        Box::pin(async move {
            let mut flight = InFlight {
                names,
                gauge: g,
                labels,
                done: false,
                items,
            };
            let res = next.run(call).await;
            flight.done = true;
            let status = res.as_ref().err().map_or(Status::Ok, |e| e.status);
            finished(names, &flight.labels, status);
            histogram!(names.duration, flight.labels.clone()).record(started.elapsed());
            drop(flight);
            record_traffic(&peer);
            res
        })
    }
}

/// Publishes one connection's traffic counters and queue depths now: call it from a timer
/// (the layer refreshes the traffic counters and the write queue after each call, but not the
/// call gauges, which would count the call being measured).
pub fn record_connection(peer: &Peer) {
    record_traffic(peer);
    let labels = [("peer", peer.id().to_string())];
    let st = peer.stats();
    gauge!("getty_rpc_connection_pending_calls", &labels).set(st.pending as f64);
    gauge!("getty_rpc_connection_serving", &labels).set(st.inflight as f64);
}

fn record_traffic(peer: &Peer) {
    let s = peer.session().stats();
    let labels = [("peer", peer.id().to_string())];
    counter!("getty_rpc_connection_bytes_in_total", &labels).absolute(s.read_bytes);
    counter!("getty_rpc_connection_bytes_out_total", &labels).absolute(s.write_bytes);
    counter!("getty_rpc_connection_frames_in_total", &labels).absolute(s.read_pkgs);
    counter!("getty_rpc_connection_frames_out_total", &labels).absolute(s.write_pkgs);
    gauge!("getty_rpc_connection_write_queue", &labels).set(peer.session().queued_writes() as f64);
}
