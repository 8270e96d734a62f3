//! etcd v3 backend (`etcd://host:port[,host:port…][/root][?ttl=SECS][&timeout=SECS]`).
//!
//! * Key `{root}/{service}/{group}/{version}/{instance_id}` (escaped), value = JSON, attached to
//!   a lease owned by the registration (TTL default 10 s).
//! * A keeper task per registration refreshes the lease every TTL/3. When the lease is lost
//!   (expired during a long partition, revoked, or etcd came back without its data) it grants a
//!   new lease and puts the key again, retrying with back-off (100 ms → 5 s) until deregistered.
//!   Deregistration revokes the lease, which deletes exactly the keys attached to it.
//! * A query lists / watches the key prefix of its service (`{root}/{service}/…`), or `{root}/`
//!   for [`Query::all`](crate::Query::all).
//! * A watch lists the prefix (snapshot at revision `R`), then watches from `R + 1`; after a
//!   stream error it resumes from the last seen revision + 1. If that revision was compacted, or
//!   etcd's revision/term went backwards (data loss), it re-lists and emits the differences.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use etcd_client;
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::model::{Event, Query, ServiceInstance};
use crate::registry::{Backoff, BoxFuture, Owners, Registration, Registry, View, Watch};
use crate::url::RegistryUrl;

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const WATCH_BUFFER: usize = 1024;

struct Inner {
    client: Client,
    endpoints: Vec<String>,
    root: String,
    ttl: Duration,
    timeout: Duration,
    owners: Owners,
}

/// etcd registry; see the [module docs](self).
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.inner.endpoints)
            .field("root", &self.inner.root)
            .field("ttl", &self.inner.ttl)
            .finish()
    }
}

/// Errors worth retrying: the endpoint could not be reached or did not answer in time (with
/// several endpoints the client may pick a dead one).
fn is_transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // 1 = Cancelled, 4 = DeadlineExceeded, 14 = Unavailable
        etcd_client::Error::GRpcStatus(s) => matches!(s.code() as i32, 1 | 4 | 14),
        _ => false,
    }
}

fn classify(what: &str, e: etcd_client::Error) -> Error {
    if is_transient(&e) {
        Error::Unavailable(format!("etcd {what}: {e}"))
    } else {
        Error::Backend(format!("etcd {what}: {e}"))
    }
}

fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() as i32 == 5 || s.message().contains("lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        _ => false,
    }
}

impl EtcdRegistry {
    /// Connects (lazily: no request is made yet) to `endpoints` (`host:port` or `http://host:port`).
    pub async fn connect(
        endpoints: &[&str],
        root: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err(Error::InvalidUrl {
                url: String::new(),
                reason: "no etcd endpoint".into(),
            });
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout.min(Duration::from_secs(3)))
            .with_keep_alive(Duration::from_secs(3), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| classify("connect", e))?;
        Ok(EtcdRegistry {
            inner: Arc::new(Inner {
                client,
                endpoints,
                root: root.trim_end_matches('/').to_string(),
                ttl: ttl.max(Duration::from_secs(1)),
                timeout,
                owners: Owners::default(),
            }),
        })
    }

    pub(crate) async fn from_url(url: &RegistryUrl) -> Result<Self> {
        url.only_params(&["ttl", "timeout"])?;
        if url.hosts.is_empty() {
            return Err(url.error("no etcd endpoint"));
        }
        let root = url.root(crate::DEFAULT_ROOT)?;
        let ttl = url.seconds("ttl")?.unwrap_or(crate::DEFAULT_TTL);
        let timeout = url.seconds("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        let hosts: Vec<&str> = url.hosts.iter().map(String::as_str).collect();
        Self::connect(&hosts, &root, ttl, timeout).await
    }

    /// The underlying etcd client (for diagnostics and tests).
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The etcd key of `instance`.
    pub fn key_of(&self, instance: &ServiceInstance) -> String {
        self.inner.key_of(instance)
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }
}

impl Inner {
    fn key_of(&self, instance: &ServiceInstance) -> String {
        format!("{}/{}", self.root, instance.path_key())
    }

    /// The key prefix holding every instance matching `query`: `{root}/` for every service,
    /// `{root}/{path_prefix}/` otherwise (the trailing `/` keeps `Echo` from matching `Echo2`).
    fn prefix_of(&self, query: &Query) -> String {
        let p = query.path_prefix();
        if p.is_empty() {
            format!("{}/", self.root)
        } else {
            format!("{}/{p}/", self.root)
        }
    }

    /// Whether `key` has the shape of an instance key, `{root}/S/G/V/ID` (and not, e.g., a key
    /// of another registry rooted below ours).
    fn is_instance_key(&self, key: &str) -> bool {
        key.strip_prefix(self.root.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| rest.split('/').count() == 4)
    }

    fn ttl_secs(&self) -> i64 {
        self.ttl.as_secs_f64().ceil().max(1.0) as i64
    }

    /// Runs `op` on a client, retrying transient failures until the request timeout.
    async fn call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            match tokio::time::timeout_at(deadline, op(self.client.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e))
                    if is_transient(&e) && tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::debug!(what, error = %e, "etcd request failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Ok(Err(e)) => return Err(classify(what, e)),
                Err(_) => {
                    return Err(Error::Unavailable(format!(
                        "etcd {what}: no answer within {:?}",
                        self.timeout
                    )));
                }
            }
        }
    }

    /// Grants a lease and puts `key` under it. Returns the lease id.
    async fn grant_and_put(&self, key: &str, value: &[u8]) -> Result<i64> {
        let ttl = self.ttl_secs();
        let lease = self
            .call("lease grant", |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?
            .id();
        let put = self
            .call("put", |mut c| async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            })
            .await;
        if let Err(e) = put {
            let _ = self.revoke(lease).await;
            return Err(e);
        }
        Ok(lease)
    }

    /// Revokes `lease` (deleting the keys attached to it). A lease already gone is fine.
    async fn revoke(&self, lease: i64) -> Result<()> {
        self.call("lease revoke", |mut c| async move {
            match c.lease_revoke(lease).await {
                Ok(_) => Ok(()),
                Err(e) if is_lease_not_found(&e) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// The lease `key` is attached to (`None`: no such key).
    async fn lease_of(&self, key: &str) -> Result<Option<i64>> {
        let resp = self
            .call("get", |mut c| async move {
                c.get(key, Some(GetOptions::new().with_keys_only())).await
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| kv.lease()))
    }

    /// Revokes `lease` unless `key` is attached to it (used by superseded registrations).
    async fn revoke_if_keyless(&self, lease: i64, key: &str) -> Result<()> {
        if self.lease_of(key).await? == Some(lease) {
            return Ok(());
        }
        self.revoke(lease).await
    }

    /// Lists `prefix`: (revision, raft term, matching instances by key).
    async fn list(
        &self,
        prefix: &str,
        query: &Query,
    ) -> Result<(i64, u64, BTreeMap<String, ServiceInstance>)> {
        let resp = self
            .call("get", |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        let (rev, term) = resp
            .header()
            .map(|h| (h.revision(), h.raft_term()))
            .unwrap_or((0, 0));
        let mut map = BTreeMap::new();
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            if !self.is_instance_key(key) {
                continue;
            }
            if let Some(inst) = decode(key, kv.value(), query) {
                map.insert(key.to_string(), inst);
            }
        }
        Ok((rev, term, map))
    }
}

/// Decodes a stored value; `None` if it is not an instance or does not match `query`.
fn decode(key: &str, value: &[u8], query: &Query) -> Option<ServiceInstance> {
    match ServiceInstance::from_json(value) {
        Ok(i) if query.matches(&i) => Some(i),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(key, error = %e, "ignoring etcd value that is not a service instance");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Registration keeper
// ---------------------------------------------------------------------------------------------

type StopRx = oneshot::Receiver<oneshot::Sender<Result<()>>>;

enum KeepAliveEnd {
    /// Deregister requested (with a reply channel, or `None` when the handle was dropped).
    Stop(Option<oneshot::Sender<Result<()>>>),
    LeaseLost,
    Superseded,
    Failed(String),
}

struct Keeper {
    inner: Arc<Inner>,
    key: String,
    value: Vec<u8>,
    token: u64,
}

impl Keeper {
    fn is_current(&self) -> bool {
        self.inner.owners.is_current(&self.key, self.token)
    }

    /// Puts the key again if it is missing or not attached to `lease` (deleted or overwritten
    /// behind our back).
    async fn verify_key(&self, lease: i64) -> std::result::Result<(), KeepAliveEnd> {
        let current = self
            .inner
            .lease_of(&self.key)
            .await
            .map_err(|e| KeepAliveEnd::Failed(e.to_string()))?;
        if current == Some(lease) {
            return Ok(());
        }
        if !self.is_current() {
            return Err(KeepAliveEnd::Superseded);
        }
        tracing::warn!(key = %self.key, "etcd key missing or replaced behind our back; putting it again");
        let (key, value) = (self.key.as_str(), self.value.as_slice());
        self.inner
            .call("put", |mut c| async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            })
            .await
            .map(|_| ())
            .map_err(|e| KeepAliveEnd::Failed(e.to_string()))
    }

    async fn keep_alive(
        &self,
        lease: i64,
        stop: &mut StopRx,
        backoff: &mut Backoff,
    ) -> KeepAliveEnd {
        let inner = &self.inner;
        let mut c = inner.client.clone();
        let opened = tokio::select! {
            s = &mut *stop => return KeepAliveEnd::Stop(s.ok()),
            r = tokio::time::timeout(inner.timeout, c.lease_keep_alive(lease)) => r,
        };
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) if is_lease_not_found(&e) => return KeepAliveEnd::LeaseLost,
            Ok(Err(e)) => return KeepAliveEnd::Failed(e.to_string()),
            Err(_) => return KeepAliveEnd::Failed("keep-alive stream not opened in time".into()),
        };
        backoff.reset();
        let period = (inner.ttl / 3).max(Duration::from_millis(300));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                s = &mut *stop => return KeepAliveEnd::Stop(s.ok()),
                _ = tick.tick() => {
                    if last_ok.elapsed() > inner.ttl {
                        return KeepAliveEnd::Failed("no keep-alive answer within the TTL".into());
                    }
                    if let Err(e) = keeper.keep_alive().await {
                        return KeepAliveEnd::Failed(e.to_string());
                    }
                    let verified = tokio::select! {
                        s = &mut *stop => return KeepAliveEnd::Stop(s.ok()),
                        v = self.verify_key(lease) => v,
                    };
                    if let Err(end) = verified {
                        return end;
                    }
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) if resp.ttl() <= 0 => return KeepAliveEnd::LeaseLost,
                    Ok(Some(_)) => last_ok = Instant::now(),
                    Ok(None) => return KeepAliveEnd::Failed("keep-alive stream closed".into()),
                    Err(e) => return KeepAliveEnd::Failed(e.to_string()),
                },
            }
        }
    }

    async fn run(self, first_lease: i64, mut stop: StopRx) {
        let mut lease = Some(first_lease);
        let mut backoff = Backoff::new(MAX_BACKOFF);
        loop {
            if !self.is_current() {
                return self.superseded(lease, stop).await;
            }
            let id = match lease {
                Some(id) => id,
                None => {
                    let r = tokio::select! {
                        s = &mut stop => return self.finish(None, s.ok()).await,
                        r = self.inner.grant_and_put(&self.key, &self.value) => r,
                    };
                    match r {
                        Ok(id) => {
                            tracing::info!(key = %self.key, lease = id, "etcd registration restored with a new lease");
                            backoff.reset();
                            lease = Some(id);
                            id
                        }
                        Err(e) => {
                            tracing::warn!(key = %self.key, error = %e, "etcd registration not restored yet; retrying");
                            let delay = backoff.next_delay();
                            tokio::select! {
                                s = &mut stop => return self.finish(None, s.ok()).await,
                                _ = tokio::time::sleep(delay) => {}
                            }
                            continue;
                        }
                    }
                }
            };
            match self.keep_alive(id, &mut stop, &mut backoff).await {
                KeepAliveEnd::Stop(reply) => return self.finish(Some(id), reply).await,
                KeepAliveEnd::Superseded => {}
                KeepAliveEnd::LeaseLost => {
                    tracing::warn!(key = %self.key, lease = id, "etcd lease lost; registering again");
                    lease = None;
                }
                KeepAliveEnd::Failed(e) => {
                    tracing::warn!(key = %self.key, lease = id, error = %e, "etcd keep-alive interrupted; retrying");
                    let delay = backoff.next_delay();
                    tokio::select! {
                        s = &mut stop => return self.finish(Some(id), s.ok()).await,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// A later registration of the same key took over: drop our lease (no key is attached to it
    /// any more) and wait for the handle to go.
    async fn superseded(self, lease: Option<i64>, stop: StopRx) {
        if let Some(id) = lease {
            let _ = self.inner.revoke_if_keyless(id, &self.key).await;
        }
        let reply = stop.await.ok();
        if let Some(reply) = reply {
            let _ = reply.send(Ok(()));
        }
    }

    async fn finish(self, lease: Option<i64>, reply: Option<oneshot::Sender<Result<()>>>) {
        let result = if !self.inner.owners.release(&self.key, self.token) {
            // Superseded meanwhile: the key belongs to the newer registration.
            match lease {
                Some(id) => self.inner.revoke_if_keyless(id, &self.key).await,
                None => Ok(()),
            }
        } else {
            match lease {
                Some(id) => self.inner.revoke(id).await,
                // Between a lost lease and its replacement nothing of ours is stored.
                None => Ok(()),
            }
        };
        if let Err(e) = &result {
            tracing::warn!(key = %self.key, error = %e, "etcd deregistration failed; the key expires with its lease");
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------------------------

enum StreamEnd {
    Closed,
    Relist(String),
    Failed(String),
}

struct WatchState {
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
            match self.follow().await {
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

// ---------------------------------------------------------------------------------------------

impl Registry for EtcdRegistry {
    fn register(&self, instance: ServiceInstance) -> BoxFuture<'_, Result<Registration>> {
        Box::pin(async move {
            let instance = instance.normalize()?;
            let key = self.inner.key_of(&instance);
            let value = instance.to_json()?;
            let lease = self.inner.grant_and_put(&key, &value).await?;
            // Claimed after the write: a failed register leaves an older registration in charge.
            let token = self.inner.owners.claim(&key);
            let (stop_tx, stop_rx) = oneshot::channel();
            let keeper = Keeper {
                inner: self.inner.clone(),
                key,
                value,
                token,
            };
            tokio::spawn(keeper.run(lease, stop_rx));
            Ok(Registration::with_task(instance, stop_tx))
        })
    }

    fn discover<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Vec<ServiceInstance>>> {
        Box::pin(async move {
            query.validate()?;
            let (_, _, map) = self.inner.list(&self.inner.prefix_of(query), query).await?;
            Ok(map.into_values().collect())
        })
    }

    fn watch<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(async move {
            query.validate()?;
            let prefix = self.inner.prefix_of(query);
            let (rev, term, entries) = self.inner.list(&prefix, query).await?;
            let view = View::from_entries(entries);
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            let _ = tx.try_send(Event::Snapshot(view.snapshot()));
            let state = WatchState {
                inner: self.inner.clone(),
                query: query.clone(),
                prefix,
                view,
                rev,
                term,
                tx,
            };
            let task = tokio::spawn(state.run());
            Ok(Watch::bounded(rx, Some(task)))
        })
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }
}
