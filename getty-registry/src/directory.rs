//! [`Directory`]: a consumer's live, outage-proof view of a service's instances.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::{Event, Query, ServiceInstance};
use crate::registry::{AbortOnDrop, Backoff, Registry};

/// Longest pause between two re-subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most queued events folded into one published change (so that a steady flood still shows).
const MAX_COALESCED: usize = 4096;

/// An immutable view of a [`Directory`], ordered by path key
/// (`service/group/version/instance_id`, escaped).
///
/// A persistent map: cloning is O(1), and the directory applies each event to its next view in
/// O(log n) while older snapshots stay valid (they share their unchanged parts).
#[derive(Clone, Default)]
pub struct Snapshot {
    map: rpds::RedBlackTreeMapSync<String, ServiceInstance>,
}

impl Snapshot {
    /// Number of instances.
    pub fn len(&self) -> usize {
        self.map.size()
    }

    /// Whether there is no instance.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The instances, in path-key order.
    pub fn iter(&self) -> impl Iterator<Item = &ServiceInstance> {
        self.map.values()
    }

    /// The instance stored under `path_key` ([`ServiceInstance::path_key`]).
    pub fn get(&self, path_key: &str) -> Option<&ServiceInstance> {
        self.map.get(path_key)
    }

    /// The instances as a vector (O(n)).
    pub fn to_vec(&self) -> Vec<ServiceInstance> {
        self.iter().cloned().collect()
    }

    /// Applies `event`; returns whether the view changed.
    fn apply(&mut self, event: Event) -> bool {
        match event {
            Event::Snapshot(list) => {
                let mut fresh = rpds::RedBlackTreeMapSync::new_sync();
                for i in list {
                    fresh.insert_mut(i.path_key(), i);
                }
                let changed = fresh.size() != self.map.size()
                    || fresh.iter().zip(self.map.iter()).any(|(a, b)| a != b);
                self.map = fresh;
                changed
            }
            Event::Added(i) | Event::Updated(i) => {
                let key = i.path_key();
                if self.map.get(&key) == Some(&i) {
                    return false;
                }
                self.map.insert_mut(key, i);
                true
            }
            Event::Removed(i) => self.map.remove_mut(&i.path_key()),
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What a [`Directory`] currently knows.
#[derive(Debug, Clone, Default)]
struct State {
    view: Snapshot,
    /// Increases with every change of `view`.
    version: u64,
    /// A snapshot has been received at least once.
    ready: bool,
    /// Since when the view may be stale (`None`: following the registry live).
    stale_since: Option<Instant>,
}

/// The view as a vector, built once per version on demand (consumers that only want a slice
/// pay O(n) once per change they look at, however many events the change coalesced).
#[derive(Debug, Default)]
struct VecCache {
    version: u64,
    list: Arc<Vec<ServiceInstance>>,
}

/// A live list of the instances matching a [`Query`], fed by a background watch.
///
/// * [`Directory::snapshot`] is an O(1) [`Snapshot`] of the current view; [`Directory::instances`]
///   the same as a vector (built once per change). Each watch event costs O(log n), and events
///   that arrive together are published as one change.
/// * [`Directory::changed`] resolves when the view changes; [`Directory::subscribe`] gives a
///   `tokio::sync::watch` receiver for the same purpose.
/// * A registry outage never empties the view: when the watch cannot be created or ends, the
///   last known list is kept, the watch is re-created with back-off (100 ms doubling to 5 s), and
///   its fresh [`Event::Snapshot`] replaces the view (reconciliation). Backends that resume by
///   themselves (etcd, ZooKeeper) keep the view unchanged until they reconnect and then emit the
///   differences. Meanwhile [`Directory::is_synced`] is false and [`Directory::stale_for`] tells
///   for how long the view has not been confirmed.
///
/// Dropping the `Directory` stops the background task. Must be created inside a Tokio runtime.
#[derive(Debug)]
pub struct Directory {
    query: Query,
    state: watch::Receiver<State>,
    cache: Arc<Mutex<VecCache>>,
    _task: Arc<AbortOnDrop>,
}

impl Directory {
    /// Starts watching `query` on `registry`.
    pub fn new(registry: Arc<dyn Registry>, query: Query) -> Self {
        let (tx, rx) = watch::channel(State {
            stale_since: Some(Instant::now()),
            ..State::default()
        });
        let task = tokio::spawn(run(registry, query.clone(), tx));
        Directory {
            query,
            state: rx,
            cache: Arc::default(),
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// The query this directory follows.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The current view (empty until the first snapshot; see [`Directory::ready`]). O(1).
    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().view.clone()
    }

    /// The current instances as a vector (empty until the first snapshot). Built once per
    /// change; further calls share it.
    pub fn instances(&self) -> Arc<Vec<ServiceInstance>> {
        vec_of(&self.cache, &self.state.borrow())
    }

    /// Whether a first snapshot has been received.
    pub fn is_ready(&self) -> bool {
        self.state.borrow().ready
    }

    /// Whether the view follows the registry live: false before the first snapshot, while
    /// re-subscribing after an error, and while the backend's watch is disconnected (etcd or
    /// ZooKeeper unreachable); the instances are then the last known ones.
    pub fn is_synced(&self) -> bool {
        self.state.borrow().stale_since.is_none()
    }

    /// For how long the view has not been confirmed by the registry (`None` while synced).
    pub fn stale_for(&self) -> Option<Duration> {
        self.state.borrow().stale_since.map(|t| t.elapsed())
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

    /// A receiver whose `changed()` fires on every change of the instance list (changes that
    /// come faster than the receiver looks are coalesced).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<ServiceInstance>>> {
        let (first, mut last) = {
            let s = self.state.borrow();
            (vec_of(&self.cache, &s), s.version)
        };
        let (tx, rx) = watch::channel(first);
        let mut state = self.state.clone();
        let cache = self.cache.clone();
        tokio::spawn(async move {
            // Compare against what the receiver was given, not against the state when this task
            // first runs: a change in between would otherwise never be forwarded.
            loop {
                let now = {
                    let s = state.borrow_and_update();
                    (s.version != last).then(|| (vec_of(&cache, &s), s.version))
                };
                if let Some((list, version)) = now {
                    last = version;
                    if tx.send(list).is_err() {
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
        let cache = self.cache.clone();
        tokio::time::timeout(
            timeout,
            rx.wait_for(|s| s.ready && pred(&vec_of(&cache, s))),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }
}

/// The vector of `state`'s view, from `cache` when it is of the same version.
fn vec_of(cache: &Mutex<VecCache>, state: &State) -> Arc<Vec<ServiceInstance>> {
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.version != state.version {
        c.list = Arc::new(state.view.to_vec());
        c.version = state.version;
    }
    c.list.clone()
}

async fn run(registry: Arc<dyn Registry>, query: Query, tx: watch::Sender<State>) {
    let mut view = Snapshot::default();
    let mut backoff = Backoff::new(MAX_BACKOFF);
    let mark_stale = |tx: &watch::Sender<State>| {
        tx.send_if_modified(|s| {
            let was = s.stale_since.is_some();
            s.stale_since.get_or_insert_with(Instant::now);
            !was
        });
    };
    loop {
        match registry.watch(&query).await {
            Ok(mut watch) => {
                let mut live = watch.liveness();
                // Whether the backend's watch is connected (always, for backends without).
                let mut connected = live.as_ref().is_none_or(|l| *l.borrow());
                let mut snapshot_seen = false;
                loop {
                    let event = tokio::select! {
                        ev = watch.next() => ev,
                        r = changed(&mut live) => {
                            match r {
                                Some(up) => connected = up,
                                None => live = None,
                            }
                            if snapshot_seen && connected {
                                tx.send_if_modified(|s| s.stale_since.take().is_some());
                            } else if !connected {
                                mark_stale(&tx);
                            }
                            continue;
                        }
                    };
                    let Some(event) = event else { break };
                    let is_snapshot = matches!(event, Event::Snapshot(_));
                    let mut changed = view.apply(event);
                    // Coalesce what is already queued into one published change.
                    for _ in 0..MAX_COALESCED {
                        let Some(more) = watch.try_next() else { break };
                        changed |= view.apply(more);
                    }
                    if is_snapshot {
                        snapshot_seen = true;
                        backoff.reset();
                    }
                    let synced = snapshot_seen && connected;
                    tx.send_if_modified(|s| {
                        let mut modified = false;
                        if changed {
                            s.view = view.clone();
                            s.version += 1;
                            modified = true;
                        }
                        if is_snapshot && !s.ready {
                            s.ready = true;
                            modified = true;
                        }
                        if synced && s.stale_since.is_some() {
                            s.stale_since = None;
                            modified = true;
                        }
                        modified
                    });
                }
                tracing::warn!(query = ?query, "registry watch ended; keeping last known instances and re-subscribing");
            }
            Err(e) => {
                tracing::warn!(query = ?query, error = %e, "registry watch failed; keeping last known instances");
            }
        }
        mark_stale(&tx);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// The next value of a liveness receiver (`None` when it closed); pending forever without one.
async fn changed(live: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    match live {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
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

    /// 20,000 instances joining while a Directory watches: each event is O(log n) and the
    /// burst is coalesced, so it converges in well under a second where rebuilding (and
    /// deep-copying) the whole list per event took minutes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn burst_of_20k_converges_fast() {
        const N: usize = 20_000;
        let reg = Arc::new(MemoryRegistry::isolated());
        let dir = Directory::new(reg.clone(), Query::new("svc"));
        assert!(dir.ready(Duration::from_secs(1)).await);
        let started = std::time::Instant::now();
        let mut regs = Vec::with_capacity(N);
        for i in 0..N {
            let inst = ServiceInstance::new("svc", format!("10.0.{}.{}:80", i / 250, i % 250))
                .with_instance_id(format!("n{i:05}"));
            regs.push(reg.register(inst).await.unwrap());
        }
        assert!(
            dir.wait_for(Duration::from_secs(20), |l| l.len() == N)
                .await,
            "directory did not converge"
        );
        let took = started.elapsed();
        eprintln!("directory converged on {N} instances in {took:?}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        // Snapshots are O(1) and keep their content while the view moves on.
        let before = dir.snapshot();
        drop(regs.pop());
        assert!(
            dir.wait_for(Duration::from_secs(5), |l| l.len() == N - 1)
                .await
        );
        assert_eq!(before.len(), N);
        assert_eq!(dir.snapshot().len(), N - 1);
        assert!(dir.is_synced());
        assert_eq!(dir.stale_for(), None);
    }
}
