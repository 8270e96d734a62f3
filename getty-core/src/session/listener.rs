//! The events a session reports, as getty's `EventListener`.

use crate::error::Error;
use crate::session::Session;

/// Receives a session's life events. One listener may serve many sessions and transports.
///
/// Order guarantees: `on_open` first; `on_error` (at most once) before `on_close`; `on_close`
/// exactly once for every session whose `on_open` returned `Ok`. Without a task pool,
/// `on_message` and `on_cron` run on the session's own task, in arrival order.
pub trait EventListener<P>: Send + Sync + 'static {
    /// Returning an error rejects the session: it is closed and `on_close` is not called.
    fn on_open(&self, _session: &Session<P>) -> Result<(), String> {
        Ok(())
    }
    fn on_close(&self, _session: &Session<P>) {}
    /// Closing has started: reads have stopped and nothing more is dispatched, but queued
    /// writes may still be flushing (for at most the wait time) before `on_close`. The place to
    /// fail what waits on the connection without waiting for that flush. At most once, before
    /// `on_close`.
    fn on_closing(&self, _session: &Session<P>) {}
    fn on_error(&self, _session: &Session<P>, _err: &Error) {}
    /// Every cron period. The place for heartbeats and closing idle sessions.
    fn on_cron(&self, _session: &Session<P>) {}
    /// One decoded package.
    fn on_message(&self, session: &Session<P>, pkg: P);
}
