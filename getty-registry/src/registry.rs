//! The [`Registry`] trait, [`Registration`] handles and [`Watch`] streams.
// The task-based registration, bounded watches and `View` are used by the server backends only.
#![cfg_attr(not(any(feature = "etcd", feature = "zookeeper")), allow(dead_code))]

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::metrics;
use crate::model::{Event, Query, ServiceInstance};

/// A boxed, `Send` future (the trait's methods return these so that `Arc<dyn Registry>` works).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A service registry: publish instances, list them, and watch them change.
///
/// Implemented by the memory, static, etcd and ZooKeeper backends; obtain one with
/// [`connect`](crate::connect).
pub trait Registry: Send + Sync + fmt::Debug {
    /// Publishes `instance` (an empty `instance_id` is replaced by a random one; see
    /// [`Registration::instance`]). The instance is written before this returns; afterwards the
    /// returned [`Registration`] keeps it published (lease keep-alive, ephemeral node re-creation
    /// after session loss, restoration after a server restart) until it is deregistered
    /// explicitly or dropped.
    fn register(&self, instance: ServiceInstance) -> BoxFuture<'_, Result<Registration>>;

    /// The instances currently matching `query`, sorted by their path key
    /// (`service/group/version/instance_id`, escaped). [`Query::all`] lists every instance of
    /// every service.
    fn discover<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Vec<ServiceInstance>>>;

    /// Watches the instances matching `query`: first an [`Event::Snapshot`], then every change.
    /// No change between the snapshot and the first event is lost; a backend that loses its
    /// connection resumes by itself and reconciles (emitting the differences). With
    /// [`Query::all`] the watch follows every service: instances of services that did not exist
    /// when it started are reported as `Added` too.
    fn watch<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Watch>>;

    /// Backend name: `"memory"`, `"static"`, `"etcd"` or `"zookeeper"`.
    fn kind(&self) -> &'static str;
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

type StopReply = oneshot::Sender<Result<()>>;

/// A backend that keeps many registrations itself (one lease or session for all of them) and
/// removes them in batches: the handle only names its key and ownership token.
pub(crate) trait Releaser: Send + Sync + 'static {
    /// Removes each `(key, token)` whose token still owns the key, then answers on `reply`
    /// (`None`: dropped handles, best effort). Must not block.
    fn release(&self, items: Vec<(String, u64)>, reply: Option<StopReply>);
}

/// How a task-kept registration can also be removed in a batch: its backend client, key and
/// ownership token. The batch releases ownership first, so that the keeper, told to stop
/// afterwards, leaves the (already removed) key alone.
struct Batchable {
    owner: Arc<dyn Releaser>,
    key: String,
    token: u64,
}

enum RegistrationInner {
    /// A background keeper task; sending on (or dropping) `stop` makes it deregister.
    Task {
        stop: oneshot::Sender<StopReply>,
        batch: Option<Batchable>,
    },
    /// Kept by a shared backend task (etcd's session lease).
    Owned {
        owner: Arc<dyn Releaser>,
        key: String,
        token: u64,
    },
    /// Synchronous removal (memory backend).
    Sync(Box<dyn FnOnce() + Send + Sync>),
    /// Already deregistered.
    Done,
}

/// A live registration. It keeps the instance published until [`Registration::deregister`] is
/// awaited or the handle is dropped; on drop the removal runs in the background, best effort
/// (a backend that cannot be reached then relies on the lease TTL / session timeout).
pub struct Registration {
    instance: ServiceInstance,
    inner: RegistrationInner,
}

impl Registration {
    /// A registration kept by a background task, which must deregister when it receives a reply
    /// channel on `stop` (answering on it) or when `stop`'s sender is dropped.
    /// [`Registration::deregister_all`] can also remove it in a batch through `owner` (key
    /// `key`, ownership `token`).
    pub(crate) fn with_batchable_task(
        instance: ServiceInstance,
        stop: oneshot::Sender<StopReply>,
        owner: Arc<dyn Releaser>,
        key: String,
        token: u64,
    ) -> Self {
        Registration {
            instance,
            inner: RegistrationInner::Task {
                stop,
                batch: Some(Batchable { owner, key, token }),
            },
        }
    }

    /// A registration removed synchronously by `remove`.
    pub(crate) fn with_sync(
        instance: ServiceInstance,
        remove: Box<dyn FnOnce() + Send + Sync>,
    ) -> Self {
        Registration {
            instance,
            inner: RegistrationInner::Sync(remove),
        }
    }

    /// A registration kept by `owner` under `key`, owned by `token`.
    pub(crate) fn with_owner(
        instance: ServiceInstance,
        owner: Arc<dyn Releaser>,
        key: String,
        token: u64,
    ) -> Self {
        Registration {
            instance,
            inner: RegistrationInner::Owned { owner, key, token },
        }
    }

    /// Deregisters all of `registrations` at once: those kept by one backend client in one
    /// batch (etcd: one lease revoke when they are all of its registrations, otherwise
    /// transactions of many deletes), the others concurrently. Returns the first error; every
    /// registration is still attempted (the ones that fail expire with their lease / session).
    pub async fn deregister_all(registrations: Vec<Registration>) -> Result<()> {
        struct Batch {
            owner: Arc<dyn Releaser>,
            items: Vec<(String, u64)>,
            /// Keepers to stop once the batch is done.
            stops: Vec<oneshot::Sender<StopReply>>,
        }
        let mut batches: Vec<Batch> = Vec::new();
        let mut add = |owner: Arc<dyn Releaser>, key, token, stop| {
            let i = match batches.iter().position(|b| Arc::ptr_eq(&b.owner, &owner)) {
                Some(i) => i,
                None => {
                    batches.push(Batch {
                        owner,
                        items: Vec::new(),
                        stops: Vec::new(),
                    });
                    batches.len() - 1
                }
            };
            batches[i].items.push((key, token));
            batches[i].stops.extend(stop);
        };
        let mut waiting = tokio::task::JoinSet::new();
        for mut r in registrations {
            match std::mem::replace(&mut r.inner, RegistrationInner::Done) {
                RegistrationInner::Owned { owner, key, token } => add(owner, key, token, None),
                RegistrationInner::Task {
                    stop,
                    batch: Some(Batchable { owner, key, token }),
                } => add(owner, key, token, Some(stop)),
                inner => {
                    r.inner = inner;
                    waiting.spawn(r.deregister());
                }
            }
        }
        for Batch {
            owner,
            items,
            stops,
        } in batches
        {
            let (tx, rx) = oneshot::channel();
            owner.release(items, Some(tx));
            waiting.spawn(async move {
                let r = rx.await.unwrap_or(Err(Error::Closed));
                drop(stops);
                r
            });
        }
        let mut result = Ok(());
        while let Some(r) = waiting.join_next().await {
            let r = r.unwrap_or(Err(Error::Closed));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// The published instance (with its generated `instance_id`, if any).
    pub fn instance(&self) -> &ServiceInstance {
        &self.instance
    }

    /// Removes the instance from the registry and stops keeping it alive.
    pub async fn deregister(mut self) -> Result<()> {
        match std::mem::replace(&mut self.inner, RegistrationInner::Done) {
            RegistrationInner::Task { stop, .. } => {
                let (tx, rx) = oneshot::channel();
                if stop.send(tx).is_err() {
                    return Err(Error::Closed);
                }
                rx.await.unwrap_or(Err(Error::Closed))
            }
            RegistrationInner::Owned { owner, key, token } => {
                let (tx, rx) = oneshot::channel();
                owner.release(vec![(key, token)], Some(tx));
                rx.await.unwrap_or(Err(Error::Closed))
            }
            RegistrationInner::Sync(remove) => {
                remove();
                Ok(())
            }
            RegistrationInner::Done => Ok(()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Dropping `stop` tells the keeper task to deregister in the background.
        match std::mem::replace(&mut self.inner, RegistrationInner::Done) {
            RegistrationInner::Sync(remove) => remove(),
            RegistrationInner::Owned { owner, key, token } => {
                owner.release(vec![(key, token)], None)
            }
            _ => {}
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("instance", &self.instance)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------------------------

enum WatchRx {
    Bounded(mpsc::Receiver<Event>),
    Unbounded(mpsc::UnboundedReceiver<Event>),
}

/// A stream of [`Event`]s: first a [`Event::Snapshot`], then `Added`/`Updated`/`Removed`.
///
/// Use [`Watch::next`] or the [`futures_core::Stream`] implementation. The stream ends (`None`)
/// only when the backend gives up for good (e.g. the registry was closed); dropping the `Watch`
/// stops the background work.
pub struct Watch {
    rx: WatchRx,
    /// The backend's kind, the label of the delivered-event counter.
    backend: &'static str,
    live: Option<tokio::sync::watch::Receiver<bool>>,
    _task: Option<AbortOnDrop>,
    _keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Watch {
    /// A watch of backend `backend` (its [`Registry::kind`]) fed through `rx` by `task`.
    pub(crate) fn bounded(
        backend: &'static str,
        rx: mpsc::Receiver<Event>,
        task: Option<JoinHandle<()>>,
    ) -> Self {
        Watch {
            rx: WatchRx::Bounded(rx),
            backend,
            live: None,
            _task: task.map(AbortOnDrop),
            _keep: None,
        }
    }

    /// A watch of backend `backend` (its [`Registry::kind`]) fed through `rx`.
    pub(crate) fn unbounded(backend: &'static str, rx: mpsc::UnboundedReceiver<Event>) -> Self {
        Watch {
            rx: WatchRx::Unbounded(rx),
            backend,
            live: None,
            _task: None,
            _keep: None,
        }
    }

    /// Keeps `value` alive as long as the watch (e.g. a sender that must never close).
    pub(crate) fn keep(mut self, value: impl std::any::Any + Send + Sync) -> Self {
        self._keep = Some(Box::new(value));
        self
    }

    /// Reports through `live` whether the backend's watch is connected (the events are then
    /// current) or resuming after a disconnection (the last events may be stale).
    pub(crate) fn with_liveness(mut self, live: tokio::sync::watch::Receiver<bool>) -> Self {
        self.live = Some(live);
        self
    }

    /// Whether the backend's watch is currently connected (always true for backends without a
    /// server). While false, the view built from the events may be stale; the watch resumes and
    /// reconciles by itself.
    pub fn is_live(&self) -> bool {
        self.live.as_ref().is_none_or(|l| *l.borrow())
    }

    /// A receiver of [`Watch::is_live`]'s value (`None` for backends without a server).
    pub fn liveness(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.live.clone()
    }

    /// The next event, or `None` when the watch has ended.
    pub async fn next(&mut self) -> Option<Event> {
        let event = match &mut self.rx {
            WatchRx::Bounded(rx) => rx.recv().await,
            WatchRx::Unbounded(rx) => rx.recv().await,
        };
        self.delivered(event)
    }

    /// The next event if one is ready now.
    pub fn try_next(&mut self) -> Option<Event> {
        let event = match &mut self.rx {
            WatchRx::Bounded(rx) => rx.try_recv().ok(),
            WatchRx::Unbounded(rx) => rx.try_recv().ok(),
        };
        self.delivered(event)
    }

    /// Counts `event` as handed to the application (every way out of the watch goes here).
    fn delivered(&self, event: Option<Event>) -> Option<Event> {
        if let Some(e) = &event {
            metrics::delivered(self.backend, e);
        }
        event
    }
}

impl futures_core::Stream for Watch {
    type Item = Event;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        let polled = match &mut this.rx {
            WatchRx::Bounded(rx) => rx.poll_recv(cx),
            WatchRx::Unbounded(rx) => rx.poll_recv(cx),
        };
        polled.map(|event| this.delivered(event))
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the backends
// ---------------------------------------------------------------------------------------------

/// Which registration currently owns each key of one registry client. Registering the same
/// instance twice through one client supersedes the first registration: its keeper stops
/// restoring the key and its deregistration leaves the key alone.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    map: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    next: std::sync::atomic::AtomicU64,
}

impl Owners {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a new registration the owner of `key`; returns its token.
    pub(crate) fn claim(&self, key: &str) -> u64 {
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.lock().insert(key.to_string(), token);
        token
    }

    /// Whether `token` still owns `key`.
    pub(crate) fn is_current(&self, key: &str, token: u64) -> bool {
        self.lock().get(key) == Some(&token)
    }

    /// Gives up `key` if `token` owns it; returns whether it did.
    pub(crate) fn release(&self, key: &str, token: u64) -> bool {
        let mut map = self.lock();
        if map.get(key) == Some(&token) {
            map.remove(key);
            true
        } else {
            false
        }
    }
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl fmt::Debug for AbortOnDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AbortOnDrop")
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Exponential back-off with jitter: 100 ms (or `initial`) doubling up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) const INITIAL: Duration = Duration::from_millis(100);

    pub(crate) fn new(max: Duration) -> Self {
        Self::starting_at(Self::INITIAL, max)
    }

    pub(crate) fn starting_at(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            next: initial,
            max,
        }
    }

    /// The delay to wait now (with up to 20 % jitter); doubles the next one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.as_millis() as u64 / 5;
        base + Duration::from_millis(if jitter > 0 {
            fastrand::u64(..=jitter)
        } else {
            0
        })
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The last known set of matching instances of a watch, keyed by backend key; turns raw
/// updates and re-listings into [`Event`]s without duplicates.
#[derive(Debug, Default)]
pub(crate) struct View {
    entries: BTreeMap<String, ServiceInstance>,
}

impl View {
    pub(crate) fn from_entries(entries: BTreeMap<String, ServiceInstance>) -> Self {
        View { entries }
    }

    pub(crate) fn snapshot(&self) -> Vec<ServiceInstance> {
        self.entries.values().cloned().collect()
    }

    /// Key `key` now holds `instance` (or, with `None`, something not matching the query).
    pub(crate) fn upsert(&mut self, key: &str, instance: Option<ServiceInstance>) -> Option<Event> {
        match instance {
            None => self.remove(key),
            Some(instance) => match self.entries.get(key) {
                Some(old) if *old == instance => None,
                Some(_) => {
                    self.entries.insert(key.to_string(), instance.clone());
                    Some(Event::Updated(instance))
                }
                None => {
                    self.entries.insert(key.to_string(), instance.clone());
                    Some(Event::Added(instance))
                }
            },
        }
    }

    /// Key `key` was deleted.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Event> {
        self.entries.remove(key).map(Event::Removed)
    }

    /// Replaces the whole view by a fresh listing; returns the differences as events.
    pub(crate) fn reconcile(&mut self, fresh: BTreeMap<String, ServiceInstance>) -> Vec<Event> {
        let mut events = Vec::new();
        for (key, old) in &self.entries {
            if !fresh.contains_key(key) {
                events.push(Event::Removed(old.clone()));
            }
        }
        for (key, new) in &fresh {
            match self.entries.get(key) {
                None => events.push(Event::Added(new.clone())),
                Some(old) if old != new => events.push(Event::Updated(new.clone())),
                Some(_) => {}
            }
        }
        self.entries = fresh;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_diffs() {
        let a = ServiceInstance::new("s", "a:1").with_instance_id("a");
        let b = ServiceInstance::new("s", "b:1").with_instance_id("b");
        let mut v = View::default();
        assert_eq!(
            v.upsert("a", Some(a.clone())),
            Some(Event::Added(a.clone()))
        );
        assert_eq!(v.upsert("a", Some(a.clone())), None);
        let a2 = a.clone().with_weight(7);
        assert_eq!(
            v.upsert("a", Some(a2.clone())),
            Some(Event::Updated(a2.clone()))
        );
        assert_eq!(
            v.upsert("b", Some(b.clone())),
            Some(Event::Added(b.clone()))
        );
        let mut fresh = BTreeMap::new();
        fresh.insert("b".to_string(), b.clone().with_weight(1));
        fresh.insert("c".to_string(), a.clone().with_instance_id("c"));
        let ev = v.reconcile(fresh);
        assert_eq!(
            ev,
            vec![
                Event::Removed(a2),
                Event::Updated(b.clone().with_weight(1)),
                Event::Added(a.clone().with_instance_id("c"))
            ]
        );
        assert_eq!(v.remove("b"), Some(Event::Removed(b.with_weight(1))));
        assert_eq!(v.remove("b"), None);
    }

    #[test]
    fn backoff_caps() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] <= Duration::from_millis(120));
        assert!(d[5] >= Duration::from_secs(1) && d[5] <= Duration::from_millis(1200));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
