//! [`Directory`]: a consumer's live, outage-proof view of a service's instances.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::model::{Event, Query, ServiceInstance};
use crate::registry::{AbortOnDrop, Backoff, Registry};

/// Longest pause between two re-subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a [`Directory`] currently knows.
#[derive(Debug, Clone, Default)]
struct State {
    instances: Arc<Vec<ServiceInstance>>,
    /// A snapshot has been received at least once.
    ready: bool,
    /// The watch is currently subscribed (false while re-subscribing after an error).
    synced: bool,
}

/// A live list of the instances matching a [`Query`], fed by a background watch.
///
/// * [`Directory::instances`] is a cheap snapshot of the current view (sorted by path key).
/// * [`Directory::changed`] resolves when the view changes; [`Directory::subscribe`] gives a
///   `tokio::sync::watch` receiver for the same purpose.
/// * A registry outage never empties the view: when the watch cannot be created or ends, the
///   last known list is kept, the watch is re-created with back-off (100 ms doubling to 5 s), and
///   its fresh [`Event::Snapshot`] replaces the view (reconciliation). Backends that resume by
///   themselves (etcd, ZooKeeper) keep the view unchanged until they reconnect and then emit the
///   differences.
///
/// Dropping the `Directory` stops the background task. Must be created inside a Tokio runtime.
#[derive(Debug)]
pub struct Directory {
    query: Query,
    state: watch::Receiver<State>,
    _task: Arc<AbortOnDrop>,
}

impl Directory {
    /// Starts watching `query` on `registry`.
    pub fn new(registry: Arc<dyn Registry>, query: Query) -> Self {
        let (tx, rx) = watch::channel(State::default());
        let task = tokio::spawn(run(registry, query.clone(), tx));
        Directory {
            query,
            state: rx,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// The query this directory follows.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The current instances (empty until the first snapshot; see [`Directory::ready`]).
    pub fn instances(&self) -> Arc<Vec<ServiceInstance>> {
        self.state.borrow().instances.clone()
    }

    /// Whether a first snapshot has been received.
    pub fn is_ready(&self) -> bool {
        self.state.borrow().ready
    }

    /// Whether the watch is currently subscribed (false while re-subscribing after an error; the
    /// instances are then the last known ones).
    pub fn is_synced(&self) -> bool {
        self.state.borrow().synced
    }

    /// Waits for the first snapshot (at most `timeout`); returns whether it arrived.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.ready))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the instance list differs from the one last returned by this call on the same
    /// receiver. For repeated waiting use [`Directory::subscribe`].
    pub async fn changed(&self) {
        let mut rx = self.subscribe();
        let _ = rx.changed().await;
    }

    /// A receiver whose `changed()` fires on every change of the instance list.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<ServiceInstance>>> {
        let first = self.instances();
        let (tx, rx) = watch::channel(first.clone());
        let mut state = self.state.clone();
        tokio::spawn(async move {
            // Compare against what the receiver was given, not against the state when this task
            // first runs: a change in between would otherwise never be forwarded.
            let mut last = first;
            loop {
                let now = state.borrow_and_update().instances.clone();
                if !Arc::ptr_eq(&now, &last) {
                    last = now.clone();
                    if tx.send(now).is_err() {
                        return;
                    }
                }
                tokio::select! {
                    r = state.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        rx
    }

    /// Waits until `pred` holds for the instance list (at most `timeout`); returns whether it did.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[ServiceInstance]) -> bool,
    ) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.ready && pred(&s.instances)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn run(registry: Arc<dyn Registry>, query: Query, tx: watch::Sender<State>) {
    let mut view: BTreeMap<String, ServiceInstance> = BTreeMap::new();
    let mut backoff = Backoff::new(MAX_BACKOFF);
    loop {
        match registry.watch(&query).await {
            Ok(mut watch) => {
                while let Some(event) = watch.next().await {
                    let changed = match event {
                        Event::Snapshot(list) => {
                            backoff.reset();
                            let fresh: BTreeMap<_, _> =
                                list.into_iter().map(|i| (i.path_key(), i)).collect();
                            let changed = fresh != view;
                            view = fresh;
                            tx.send_modify(|s| {
                                s.ready = true;
                                s.synced = true;
                            });
                            changed
                        }
                        Event::Added(i) | Event::Updated(i) => {
                            view.insert(i.path_key(), i.clone()).as_ref() != Some(&i)
                        }
                        Event::Removed(i) => view.remove(&i.path_key()).is_some(),
                    };
                    if changed {
                        let list = Arc::new(view.values().cloned().collect::<Vec<_>>());
                        tx.send_modify(|s| s.instances = list);
                    }
                }
                tracing::warn!(query = ?query, "registry watch ended; keeping last known instances and re-subscribing");
            }
            Err(e) => {
                tracing::warn!(query = ?query, error = %e, "registry watch failed; keeping last known instances");
            }
        }
        tx.send_modify(|s| s.synced = false);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryRegistry;

    #[tokio::test]
    async fn follows_memory_registry() {
        let reg = Arc::new(MemoryRegistry::isolated());
        let r1 = reg
            .register(ServiceInstance::new("svc", "h:1"))
            .await
            .unwrap();
        let dir = Directory::new(reg.clone(), Query::new("svc"));
        assert!(dir.ready(Duration::from_secs(1)).await);
        assert_eq!(dir.instances().len(), 1);
        let mut sub = dir.subscribe();
        let r2 = reg
            .register(ServiceInstance::new("svc", "h:2"))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), sub.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(dir.wait_for(Duration::from_secs(1), |l| l.len() == 2).await);
        drop(r1);
        assert!(
            dir.wait_for(Duration::from_secs(1), |l| l.len() == 1
                && l[0].address == "h:2")
                .await
        );
        r2.deregister().await.unwrap();
        assert!(dir.wait_for(Duration::from_secs(1), |l| l.is_empty()).await);
        assert!(dir.is_synced());
    }
}
