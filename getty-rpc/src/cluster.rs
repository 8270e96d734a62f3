//! Calling a service found through a registry: a [`Cluster`] follows the instances of one
//! service, keeps connections to each, and spreads calls over them with a load balancer.
//!
//! New instances are connected without a restart; a removed one stops getting calls at once and
//! is closed once its calls are done (or after a grace period). A call that cannot be sent to
//! the chosen instance (no open connection, or the send failed, so nothing reached it) goes to
//! another; a call that was sent is never repeated, since the server may have acted on it.
//! The registry going away changes nothing: the directory keeps the last known instances.
//!
//! Connections are keyed by (service, group, version, instance id), since ids are unique only
//! within one service, group and version; an instance listed again with another address or
//! transport is reconnected there (the old connection drains). A cluster that requires TLS (see
//! [`TransportSecurity`]) never dials an instance that advertises a plaintext transport (`tcp`,
//! `ws`, `unix`): it logs and counts the refusal instead ([`Cluster::refused`]). Unix socket
//! instances are dialled with the same client options as TCP ones (connections, reconnect
//! interval and back-off, heartbeats).
//!
//! Dropping a `Cluster` stops following the directory and closes every connection in the
//! background; [`Cluster::close`] does the same and waits.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use getty_core::{ClientBuilder, TlsClientConfig};
use getty_registry::{
    Balancer, Directory, LoadBalancer, Query, Registry, ServiceInstance, Strategy, Transport,
};

use crate::body::BodyCodec;
use crate::client::RpcClient;
use crate::error::RpcError;
use crate::frame::CodecId;
use crate::options::RpcOptions;
use crate::peer::{CallOptions, Peer};
use crate::router::Router;
use crate::status::Status;

/// How a cluster connects and balances (`ClusterOptions::default().connections(2)`: every
/// public field has a setter of its name).
#[derive(Clone)]
#[non_exhaustive]
pub struct ClusterOptions {
    pub rpc: RpcOptions,
    pub strategy: Strategy,
    /// Connections kept to each instance.
    pub connections: usize,
    /// For `tls` and `wss` instances.
    pub tls: Option<TlsClientConfig>,
    /// How long a removed instance may finish its calls before it is closed.
    pub drain_grace: Duration,
    pub reconnect_interval: Duration,
    /// Instances tried for one call before giving up.
    pub attempts: usize,
    /// Which transports the cluster may dial. Default [`TransportSecurity::Any`].
    pub security: TransportSecurity,
}

/// A consumer's transport policy: what it dials whatever the registry advertises. A `unix`
/// instance is plaintext (there is no TLS over Unix sockets here), so `Tls` refuses it too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportSecurity {
    /// Dial the transport each instance advertises.
    #[default]
    Any,
    /// Dial only `tls` and `wss` instances; plaintext ones are refused (and counted).
    Tls,
    /// As `Tls`, and the cluster's TLS config must present a client certificate.
    MutualTls,
}

getty_core::option_setters!(ClusterOptions {
    rpc: RpcOptions,
    strategy: Strategy,
    connections: usize,
    drain_grace: Duration,
    reconnect_interval: Duration,
    attempts: usize,
    security: TransportSecurity,
} some {
    tls: TlsClientConfig,
});

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            rpc: RpcOptions::default(),
            strategy: Strategy::RoundRobin,
            connections: 1,
            tls: None,
            drain_grace: Duration::from_secs(10),
            reconnect_interval: Duration::from_millis(200),
            attempts: 3,
            security: TransportSecurity::Any,
        }
    }
}

struct Inner {
    dir: Directory,
    lb: LoadBalancer,
    router: Arc<Router>,
    rpc: Arc<RpcOptions>,
    opts: ClusterOptions,
    /// One client per instance.
    conns: Mutex<HashMap<Key, Conn>>,
    /// Set by `close`: the follower connects nothing more.
    closed: AtomicBool,
    /// Instances refused by the transport policy, each counted once per advertisement.
    refused: Mutex<HashSet<(Key, Transport, String)>>,
    refused_count: AtomicU64,
    /// Bumped whenever the follower changes `conns`, so a waiting call sees new connections.
    conns_changed: tokio::sync::watch::Sender<()>,
}

/// What identifies an instance: ids are unique per service, group and version only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    service: String,
    group: String,
    version: String,
    id: String,
}

impl Key {
    fn of(i: &ServiceInstance) -> Key {
        Key {
            service: i.service.clone(),
            group: i.group.clone(),
            version: i.version.clone(),
            id: i.instance_id.clone(),
        }
    }
}

/// A connection to one instance, and where it was dialled.
struct Conn {
    client: Arc<RpcClient>,
    transport: Transport,
    /// The dialled address (see `dial_target`).
    target: String,
}

/// The consumers' side of one service: see the module docs.
pub struct Cluster {
    inner: Arc<Inner>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The connections close as `inner` (their only owner besides draining tasks) drops.
        self.stop_following();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Follows `query` on `registry`. `router` is what this consumer serves to the providers
    /// (they may call back on the connections it opens); pass `Router::new()` for none.
    pub fn new(
        registry: Arc<dyn Registry>,
        query: Query,
        router: Router,
        opts: ClusterOptions,
    ) -> Cluster {
        let inner = Arc::new(Inner {
            dir: Directory::new(registry, query),
            lb: LoadBalancer::new(opts.strategy),
            router: Arc::new(router),
            rpc: Arc::new(opts.rpc.clone()),
            opts,
            conns: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            refused: Mutex::new(HashSet::new()),
            refused_count: AtomicU64::new(0),
            conns_changed: tokio::sync::watch::Sender::new(()),
        });
        let rx = inner.dir.subscribe();
        let task = tokio::spawn(follow(Arc::downgrade(&inner), rx));
        Cluster {
            inner,
            task: Mutex::new(Some(task)),
        }
    }

    /// How many instance advertisements the transport policy refused so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused_count.load(Ordering::Relaxed)
    }

    fn stop_following(&self) {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }

    /// The instances the registry currently lists (the last known ones during an outage).
    pub fn instances(&self) -> Arc<Vec<ServiceInstance>> {
        self.inner.dir.instances()
    }

    /// Instances with an open connection, in registry order.
    pub fn connected(&self) -> Vec<ServiceInstance> {
        let conns = lock(&self.inner.conns);
        self.inner
            .dir
            .instances()
            .iter()
            .filter(|i| {
                conns
                    .get(&Key::of(i))
                    .is_some_and(|c| c.client.is_connected())
            })
            .cloned()
            .collect()
    }

    /// Waits until at least `n` instances are connected.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.connected().len() >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A connected instance and its peer, chosen by the balancer (`key` for consistent hash),
    /// skipping the instances in `exclude`.
    pub fn pick(&self, key: Option<&[u8]>, exclude: &[String]) -> Option<(ServiceInstance, Peer)> {
        let live: Vec<ServiceInstance> = self
            .connected()
            .into_iter()
            .filter(|i| !exclude.contains(&i.instance_id))
            .collect();
        let chosen = self.inner.lb.pick(&live, key)?.clone();
        let peer = lock(&self.inner.conns)
            .get(&Key::of(&chosen))?
            .client
            .peer()
            .ok()?;
        Some((chosen, peer))
    }

    /// A raw two-way call to one instance, with fail-over for calls that were never sent.
    pub async fn call_raw(
        &self,
        key: Option<&[u8]>,
        service: &str,
        method: &str,
        codec: CodecId,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, RpcError> {
        let timeout = opts.timeout.unwrap_or(self.inner.rpc.default_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tried = Vec::new();
        let mut last = RpcError::new(
            Status::ConnectionClosed,
            "no instance of the service is connected",
        );
        while tried.len() < self.inner.opts.attempts.max(1) {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(RpcError::closed("the cluster is closed"));
            }
            let Some((inst, peer)) = self.pick(key, &tried) else {
                // Every connected instance was tried: fail now with the last error.
                if !tried.is_empty() {
                    break;
                }
                // Nothing connected yet (start-up, or every instance just dropped): wait for a
                // connection to come up, until the deadline.
                if !self.connection_change(deadline).await {
                    break;
                }
                continue;
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let o = CallOptions {
                timeout: Some(left.max(Duration::from_millis(1))),
                ..opts.clone()
            };
            match peer
                .start_call_raw(service, method, codec, body.clone(), o)
                .await
            {
                Ok(pending) => return pending.await,
                Err(e) if e.status == Status::ConnectionClosed => {
                    // Not sent: another instance may take it.
                    tracing::debug!(instance = %inst.instance_id, error = %e, "fail-over");
                    tried.push(inst.instance_id);
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// A typed two-way call; `key` routes it under the consistent-hash strategy.
    pub async fn call<B, Req, Resp>(
        &self,
        key: Option<&[u8]>,
        service: &str,
        method: &str,
        req: &Req,
        opts: CallOptions,
    ) -> Result<Resp, RpcError>
    where
        B: BodyCodec<Req> + BodyCodec<Resp>,
    {
        let codec = opts.codec.unwrap_or(<B as BodyCodec<Req>>::CODECS[0]);
        let mut body = BytesMut::new();
        <B as BodyCodec<Req>>::encode(codec, req, &mut body)?;
        let reply = self
            .call_raw(key, service, method, codec, body.freeze(), opts)
            .await?;
        <B as BodyCodec<Resp>>::decode_shared(codec, &reply)
    }

    /// Waits until some instance's connection state or the instance list changes, or until
    /// `deadline` (then false).
    async fn connection_change(&self, deadline: tokio::time::Instant) -> bool {
        // Subscribed before the clients are listed: a client added after is a change.
        let mut conns_changed = self.inner.conns_changed.subscribe();
        let clients: Vec<Arc<RpcClient>> = lock(&self.inner.conns)
            .values()
            .map(|c| c.client.clone())
            .collect();
        let mut waits: Vec<_> = clients
            .iter()
            .map(|c| {
                Box::pin(async move {
                    c.core().state_changed().await;
                })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>
            })
            .collect();
        waits.push(Box::pin(async move {
            let _ = conns_changed.changed().await;
        }));
        let mut any = futures_util::future::select_all(waits);
        // The first poll subscribes every wait; a connection that came up before it is seen
        // by the check after it, one that comes up later wakes a wait.
        let early = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::pin::Pin::new(&mut any).poll(cx).is_ready())
        })
        .await;
        if early || !self.connected().is_empty() {
            return true;
        }
        tokio::select! {
            _ = any => true,
            _ = tokio::time::sleep_until(deadline) => false,
        }
    }

    /// Stops following the directory and closes every connection (pending calls fail).
    pub async fn close(&self) {
        self.stop_following();
        let all: Vec<_> = lock(&self.inner.conns)
            .drain()
            .map(|(_, c)| c.client)
            .collect();
        for c in all {
            c.close().await;
        }
    }
}

/// Whether the policy lets the cluster dial `inst`; the reason when it does not.
fn refusal(opts: &ClusterOptions, inst: &ServiceInstance) -> Option<String> {
    if opts.security == TransportSecurity::Any {
        return None;
    }
    let secure = match inst.transport {
        Transport::Tls => true,
        // A `wss` instance whose address is a URL must be a `wss://` one.
        Transport::Wss => !inst.address.contains("://") || inst.address.starts_with("wss://"),
        Transport::Tcp | Transport::Ws => false,
        Transport::Unix => {
            return Some(format!(
                "the cluster requires TLS but the instance advertises a plaintext Unix socket \
                 at {} (no TLS over Unix sockets)",
                inst.address
            ));
        }
    };
    if !secure {
        return Some(format!(
            "the cluster requires TLS but the instance advertises {:?} at {}",
            inst.transport, inst.address
        ));
    }
    if opts.security == TransportSecurity::MutualTls
        && !opts
            .tls
            .as_ref()
            .is_some_and(|t| t.rustls_config().client_auth_cert_resolver.has_certs())
    {
        return Some(
            "the cluster requires mutual TLS but its TLS config has no client certificate"
                .to_string(),
        );
    }
    None
}

/// Keeps one client per listed instance: connects new ones, reconnects moved ones, drains
/// removed ones.
async fn follow(
    inner: Weak<Inner>,
    mut rx: tokio::sync::watch::Receiver<Arc<Vec<ServiceInstance>>>,
) {
    loop {
        let list = rx.borrow_and_update().clone();
        let Some(me) = inner.upgrade() else { return };
        if me.closed.load(Ordering::Acquire) {
            return;
        }
        let mut removed = Vec::new();
        // Forget refusals of instances no longer listed (one listed again is counted again).
        lock(&me.refused).retain(|(key, transport, address)| {
            list.iter()
                .any(|i| Key::of(i) == *key && i.transport == *transport && i.address == *address)
        });
        {
            let mut conns = lock(&me.conns);
            conns.retain(|key, c| {
                // Kept only if listed at the same place; a moved instance is dialled anew below.
                let keep = list.iter().any(|i| {
                    Key::of(i) == *key && dial_target(i) == c.target && i.transport == c.transport
                });
                if !keep {
                    removed.push(c.client.clone());
                }
                keep
            });
            for inst in list.iter() {
                let key = Key::of(inst);
                if conns.contains_key(&key) {
                    continue;
                }
                if let Some(reason) = refusal(&me.opts, inst) {
                    let seen = (key, inst.transport, inst.address.clone());
                    if lock(&me.refused).insert(seen) {
                        me.refused_count.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(instance = %inst.instance_id, address = %inst.address, %reason, "instance refused");
                    }
                    continue;
                }
                match connect(&me, inst) {
                    Ok(c) => {
                        conns.insert(
                            key,
                            Conn {
                                client: Arc::new(c),
                                transport: inst.transport,
                                target: dial_target(inst),
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(instance = %inst.instance_id, address = %inst.address, error = %e, "cannot connect")
                    }
                }
            }
        }
        me.conns_changed.send_replace(());
        for c in removed {
            tokio::spawn(drain(c, me.opts.drain_grace));
        }
        drop(me);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Lets a removed instance finish the calls it has, then closes it.
async fn drain(c: Arc<RpcClient>, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline
        && c.peers().iter().any(|p| {
            let s = p.stats();
            s.pending > 0 || s.inflight > 0
        })
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.close().await;
}

/// What the cluster dials for `inst`: its address, as a URL for WebSocket instances, the
/// socket path for Unix ones (a `unix://` prefix, from a registry that did not normalise it,
/// dropped).
fn dial_target(inst: &ServiceInstance) -> String {
    match inst.transport {
        Transport::Ws | Transport::Wss if !inst.address.contains("://") => {
            let scheme = if inst.transport == Transport::Ws {
                "ws"
            } else {
                "wss"
            };
            let path = inst.metadata.get("path").map_or("/", String::as_str);
            format!("{scheme}://{}{path}", inst.address)
        }
        Transport::Unix => inst
            .address
            .strip_prefix("unix://")
            .unwrap_or(&inst.address)
            .to_string(),
        _ => inst.address.clone(),
    }
}

fn connect(me: &Inner, inst: &ServiceInstance) -> getty_core::Result<RpcClient> {
    let addr = dial_target(inst);
    let o = &me.opts;
    let tls = || {
        o.tls.clone().ok_or(getty_core::Error::InvalidOption {
            name: "tls",
            reason: format!(
                "instance {} needs TLS but the cluster has no TLS config",
                inst.instance_id
            ),
        })
    };
    RpcClient::start_shared(me.router.clone(), me.rpc.clone(), None, |cb| {
        let b = ClientBuilder::new(addr)
            .connections(o.connections)
            .reconnect_interval(o.reconnect_interval)
            .reconnect_attempts(0)
            .session_options(me.rpc.session_options());
        match inst.transport {
            Transport::Tcp => b.connect_tcp(cb),
            Transport::Tls => b.connect_tls(tls()?, cb),
            Transport::Ws => b.connect_ws(cb),
            Transport::Wss => b.connect_wss(tls()?, cb),
            #[cfg(unix)]
            Transport::Unix => b.connect_unix(cb),
            #[cfg(not(unix))]
            Transport::Unix => Err(getty_core::Error::InvalidOption {
                name: "transport",
                reason: format!(
                    "instance {} is a Unix socket, which this platform does not have",
                    inst.instance_id
                ),
            }),
        }
    })
}
