//! Calling a service found through a registry: a [`Cluster`] follows the instances of one
//! service, keeps connections to each, and spreads calls over them with a load balancer.
//!
//! New instances are connected without a restart; a removed one stops getting calls at once and
//! is closed once its calls are done (or after a grace period). A call that cannot be sent to
//! the chosen instance (no open connection, or the send failed, so nothing reached it) goes to
//! another; a call that was sent is never repeated, since the server may have acted on it.
//! The registry going away changes nothing: the directory keeps the last known instances.

use std::collections::HashMap;
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

/// How a cluster connects and balances.
#[derive(Clone)]
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
}

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
        }
    }
}

struct Inner {
    dir: Directory,
    lb: LoadBalancer,
    router: Arc<Router>,
    rpc: Arc<RpcOptions>,
    opts: ClusterOptions,
    /// One client per instance id.
    conns: Mutex<HashMap<String, Arc<RpcClient>>>,
}

/// The consumers' side of one service: see the module docs.
pub struct Cluster {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.task.abort();
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
        });
        let rx = inner.dir.subscribe();
        let task = tokio::spawn(follow(Arc::downgrade(&inner), rx));
        Cluster { inner, task }
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
            .filter(|i| conns.get(&i.instance_id).is_some_and(|c| c.is_connected()))
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
            .get(&chosen.instance_id)?
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
            let Some((inst, peer)) = self.pick(key, &tried) else {
                // Nothing connected yet (start-up, or every instance just dropped): wait a bit.
                if tokio::time::Instant::now() >= deadline
                    || (!tried.is_empty() && self.connected().is_empty())
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
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

    /// Closes every connection.
    pub async fn close(&self) {
        let all: Vec<_> = lock(&self.inner.conns).drain().map(|(_, c)| c).collect();
        for c in all {
            c.close().await;
        }
    }
}

/// Keeps one client per listed instance: connects new ones, drains removed ones.
async fn follow(
    inner: Weak<Inner>,
    mut rx: tokio::sync::watch::Receiver<Arc<Vec<ServiceInstance>>>,
) {
    loop {
        let list = rx.borrow_and_update().clone();
        let Some(me) = inner.upgrade() else { return };
        let mut removed = Vec::new();
        {
            let mut conns = lock(&me.conns);
            conns.retain(|id, c| {
                let keep = list.iter().any(|i| &i.instance_id == id);
                if !keep {
                    removed.push(c.clone());
                }
                keep
            });
            for inst in list.iter() {
                if conns.contains_key(&inst.instance_id) {
                    continue;
                }
                match connect(&me, inst) {
                    Ok(c) => {
                        conns.insert(inst.instance_id.clone(), Arc::new(c));
                    }
                    Err(e) => {
                        tracing::warn!(instance = %inst.instance_id, address = %inst.address, error = %e, "cannot connect")
                    }
                }
            }
        }
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

fn connect(me: &Inner, inst: &ServiceInstance) -> getty_core::Result<RpcClient> {
    let addr = match inst.transport {
        Transport::Ws | Transport::Wss if !inst.address.contains("://") => {
            let scheme = if inst.transport == Transport::Ws {
                "ws"
            } else {
                "wss"
            };
            let path = inst.metadata.get("path").map_or("/", String::as_str);
            format!("{scheme}://{}{path}", inst.address)
        }
        _ => inst.address.clone(),
    };
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
        }
    })
}
