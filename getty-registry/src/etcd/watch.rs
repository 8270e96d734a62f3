//! A consumer's etcd watch: list the prefix (snapshot at revision `R`), then watch from `R + 1`;
//! after a stream error resume from the last seen revision + 1. If that revision was compacted,
//! or etcd's revision/term went backwards (data loss), re-list and emit the differences.

use std::sync::Arc;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;

use super::{Inner, MAX_BACKOFF, classify, decode};
use crate::error::{Error, Result};
use crate::model::{Event, Query};
use crate::registry::{Backoff, View, Watch};

const WATCH_BUFFER: usize = 1024;

/// Lists `query`'s prefix and starts following it.
pub(super) async fn start(inner: Arc<Inner>, query: &Query) -> Result<Watch> {
    query.validate()?;
    let prefix = inner.prefix_of(query);
    let (rev, term, entries) = inner.list(&prefix, query).await?;
    let view = View::from_entries(entries);
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let _ = tx.try_send(Event::Snapshot(view.snapshot()));
    let (live, live_rx) = tokio::sync::watch::channel(true);
    let state = WatchState {
        live,
        inner,
        query: query.clone(),
        prefix,
        view,
        rev,
        term,
        tx,
    };
    let task = tokio::spawn(state.run());
    Ok(Watch::bounded(super::KIND, rx, Some(task)).with_liveness(live_rx))
}

enum StreamEnd {
    Closed,
    Relist(String),
    Failed(String),
}

struct WatchState {
    /// Whether a watch stream is established (false from a failure until the next one is).
    live: tokio::sync::watch::Sender<bool>,
    inner: Arc<Inner>,
    query: Query,
    prefix: String,
    view: View,
    /// Highest revision reflected in `view`.
    rev: i64,
    /// Highest raft term seen (a decrease means etcd lost its data).
    term: u64,
    tx: mpsc::Sender<Event>,
}

impl WatchState {
    async fn send(&self, ev: Event) -> bool {
        self.tx.send(ev).await.is_ok()
    }

    /// Reads one watch stream until it ends. Returns why.
    async fn follow(&mut self) -> StreamEnd {
        let mut c = self.inner.client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.rev + 1);
        let opened = tokio::select! {
            _ = self.tx.closed() => return StreamEnd::Closed,
            r = tokio::time::timeout(self.inner.timeout, c.watch(self.prefix.as_str(), Some(opts))) => match r {
                Ok(r) => r.map_err(|e| classify("watch", e)),
                Err(_) => Err(Error::Unavailable("etcd watch: not created in time".into())),
            },
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => return StreamEnd::Failed(e.to_string()),
        };
        loop {
            let msg = tokio::select! {
                _ = self.tx.closed() => return StreamEnd::Closed,
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => return StreamEnd::Failed("watch stream closed".into()),
                Err(e) => return StreamEnd::Failed(e.to_string()),
            };
            if resp.compact_revision() > 0 {
                return StreamEnd::Relist(format!("revision {} compacted", self.rev + 1));
            }
            if resp.created() {
                self.live.send_if_modified(|l| !std::mem::replace(l, true));
            }
            if resp.canceled() {
                return StreamEnd::Failed(format!("watch canceled: {}", resp.cancel_reason()));
            }
            if let Some(h) = resp.header() {
                if h.raft_term() < self.term || (resp.created() && h.revision() < self.rev) {
                    return StreamEnd::Relist(
                        "etcd revision or term went backwards (data loss)".into(),
                    );
                }
                self.term = self.term.max(h.raft_term());
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                self.rev = self.rev.max(kv.mod_revision());
                if !self.inner.is_instance_key(key) {
                    continue;
                }
                let change = match ev.event_type() {
                    EventType::Put => self.view.upsert(key, decode(key, kv.value(), &self.query)),
                    EventType::Delete => self.view.remove(key),
                };
                if let Some(change) = change
                    && !self.send(change).await
                {
                    return StreamEnd::Closed;
                }
            }
        }
    }

    /// Re-lists and emits the differences. Returns false if the watch was dropped.
    async fn relist(&mut self) -> Result<bool> {
        let (rev, term, fresh) = self.inner.list(&self.prefix, &self.query).await?;
        for ev in self.view.reconcile(fresh) {
            if !self.send(ev).await {
                return Ok(false);
            }
        }
        self.rev = rev;
        self.term = term;
        Ok(true)
    }

    async fn run(mut self) {
        let mut backoff = Backoff::new(MAX_BACKOFF);
        let mut need_relist = false;
        loop {
            if need_relist {
                match self.relist().await {
                    Ok(true) => need_relist = false,
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(prefix = %self.prefix, error = %e, "etcd re-list failed; retrying");
                        if !self.pause(&mut backoff).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let end = self.follow().await;
            self.live.send_if_modified(|l| std::mem::replace(l, false));
            match end {
                StreamEnd::Closed => return,
                StreamEnd::Relist(why) => {
                    tracing::warn!(prefix = %self.prefix, reason = %why, "etcd watch re-listing");
                    need_relist = true;
                }
                StreamEnd::Failed(e) => {
                    tracing::warn!(prefix = %self.prefix, rev = self.rev, error = %e, "etcd watch interrupted; resuming");
                    if !self.pause(&mut backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps for the next back-off delay; false if the watch was dropped meanwhile.
    async fn pause(&self, backoff: &mut Backoff) -> bool {
        tokio::select! {
            _ = self.tx.closed() => false,
            _ = tokio::time::sleep(backoff.next_delay()) => true,
        }
    }
}
