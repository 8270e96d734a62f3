//! The registry's counters, through the `metrics` facade (feature `metrics`), so whatever
//! exporter the application installs (Prometheus, StatsD, ...) shows how registrations and
//! watches fare. Without the feature every function here is empty and compiles to nothing, so
//! the backends call them unconditionally.
//!
//! Every counter has the label `backend` (`memory`, `static`, `etcd`, `zookeeper`: what
//! [`Registry::kind`](crate::Registry::kind) reports):
//! - `getty_registry_registrations_total`: `register` calls that succeeded.
//! - `getty_registry_deregistrations_total`: registrations removed by their owner (an explicit
//!   `deregister`, `deregister_all` or a dropped handle) once the removal succeeded; a
//!   registration superseded by a newer one of the same instance is not counted again. etcd's
//!   removals that failed and then succeed in the background are counted when they succeed.
//! - `getty_registry_reregistrations_total`: instances written again by the self-healing path
//!   after their lease or session was lost or their key / node was deleted or changed behind the
//!   registry's back (etcd: the keys re-put by the session's repair; ZooKeeper: a keeper that
//!   actually re-created or rewrote its node). A steady count means the backend keeps losing
//!   them.
//! - `getty_registry_watch_events_total`, plus label `event` (`snapshot`, `added`, `updated`,
//!   `removed`): events handed to the application by a [`Watch`](crate::Watch) (counted on
//!   delivery, so events still queued in a watch nobody reads are not).
//! - `getty_registry_errors_total`, plus label `op` (`register`, `deregister`, `watch`,
//!   `list`): operations that failed: a `register`, `watch` or `discover` (`list`) call that
//!   returned an error, and a deregistration whose removal failed (whether or not anyone
//!   awaited it).
//!
//! The label values are fixed strings: nothing a peer or a server sends can grow them.

use std::future::Future;

use crate::error::Result;
use crate::model::Event;

/// Registrations that succeeded.
pub const REGISTRATIONS: &str = "getty_registry_registrations_total";
/// Registrations removed by their owner.
pub const DEREGISTRATIONS: &str = "getty_registry_deregistrations_total";
/// Instances written again by the self-healing path.
pub const REREGISTRATIONS: &str = "getty_registry_reregistrations_total";
/// Watch events delivered to the application.
pub const WATCH_EVENTS: &str = "getty_registry_watch_events_total";
/// Failed operations.
pub const ERRORS: &str = "getty_registry_errors_total";

/// The operation an error is counted under (label `op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Register,
    /// Only the server backends' deregistrations can fail.
    #[cfg_attr(not(any(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
    Deregister,
    Watch,
    List,
}

impl Op {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Deregister => "deregister",
            Op::Watch => "watch",
            Op::List => "list",
        }
    }
}

/// Runs one `register`, `watch` or `discover` call of `backend` and counts its outcome: a
/// successful `register` as a registration, any failure as an error of `op`.
pub(crate) async fn observe<T>(
    backend: &'static str,
    op: Op,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let result = call.await;
    match &result {
        Ok(_) if op == Op::Register => registered(backend),
        Ok(_) => {}
        Err(_) => failed(backend, op, 1),
    }
    result
}

fn registered(backend: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(REGISTRATIONS, "backend" => backend).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = backend;
}

/// `n` registrations of `backend` were removed by their owners.
pub(crate) fn deregistered(backend: &'static str, n: usize) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        ::metrics::counter!(DEREGISTRATIONS, "backend" => backend).increment(n as u64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, n);
}

/// `n` instances of `backend` were written again after being lost (only the server backends
/// heal).
#[cfg_attr(not(any(feature = "etcd", feature = "zookeeper")), allow(dead_code))]
pub(crate) fn reregistered(backend: &'static str, n: usize) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        ::metrics::counter!(REREGISTRATIONS, "backend" => backend).increment(n as u64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, n);
}

/// `n` operations `op` of `backend` failed.
pub(crate) fn failed(backend: &'static str, op: Op, n: usize) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        ::metrics::counter!(ERRORS, "backend" => backend, "op" => op.as_str()).increment(n as u64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, op, n);
}

/// A watch of `backend` hands `event` to the application.
pub(crate) fn delivered(backend: &'static str, event: &Event) {
    #[cfg(feature = "metrics")]
    {
        let kind = match event {
            Event::Snapshot(_) => "snapshot",
            Event::Added(_) => "added",
            Event::Updated(_) => "updated",
            Event::Removed(_) => "removed",
        };
        ::metrics::counter!(WATCH_EVENTS, "backend" => backend, "event" => kind).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, event);
}
