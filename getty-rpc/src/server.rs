//! `RpcServer`: a getty-core server (any transport) whose sessions speak getty-rpc.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use getty_core::{NewSessionCallback, Server, SessionConfig, new_session};
use getty_registry::{Registration, Registry, ServiceInstance};

use crate::connection::{OnPeer, PeerSet, RpcConnection};
use crate::frame::{Frame, FrameCodec};
use crate::options::RpcOptions;
use crate::peer::{ConnState, Peer};
use crate::router::Router;

/// The new-session callback that makes a getty-core session an RPC connection. Used by
/// [`RpcServer`] and [`crate::RpcClient`]; exposed for endpoints built by hand.
pub(crate) fn rpc_sessions(
    router: Arc<Router>,
    opts: Arc<RpcOptions>,
    peers: Arc<PeerSet>,
    on_peer: Option<OnPeer>,
) -> NewSessionCallback<Frame> {
    let codec = Arc::new(FrameCodec::new(opts.max_frame));
    let session_opts = opts.session_options();
    new_session(move |c: &mut SessionConfig<Frame>| {
        let conn = RpcConnection {
            state: Arc::new(ConnState::new(
                router.clone(),
                opts.clone(),
                peers.handlers.clone(),
            )),
            peers: peers.clone(),
            on_peer: on_peer.clone(),
        };
        c.set_name("rpc")
            .set_options(session_opts.clone())
            .set_pkg_handler(codec.clone())
            .set_event_listener(Arc::new(conn));
        Ok(())
    })
}

/// An RPC server: serves its router to every connection and can call each connected peer.
/// Dropping it closes it like the getty-core [`Server`] it wraps (accepting stops, every
/// connection starts closing); [`RpcServer::shutdown`] and [`RpcServer::close`] are the awaited
/// forms.
pub struct RpcServer {
    core: Server<Frame>,
    peers: Arc<PeerSet>,
    /// Where this server is published; withdrawn first on shutdown.
    registrations: Mutex<Vec<Registration>>,
}

impl RpcServer {
    /// Starts a server on any transport: `serve` gets the session callback and starts the
    /// getty-core server, e.g. `|cb| ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)`.
    pub async fn start<F, Fut>(
        router: Router,
        opts: RpcOptions,
        serve: F,
    ) -> getty_core::Result<RpcServer>
    where
        F: FnOnce(NewSessionCallback<Frame>) -> Fut,
        Fut: Future<Output = getty_core::Result<Server<Frame>>>,
    {
        Self::start_with(router, opts, None, serve).await
    }

    /// As [`RpcServer::start`], calling `on_peer` for every new connection.
    pub async fn start_with<F, Fut>(
        router: Router,
        opts: RpcOptions,
        on_peer: Option<OnPeer>,
        serve: F,
    ) -> getty_core::Result<RpcServer>
    where
        F: FnOnce(NewSessionCallback<Frame>) -> Fut,
        Fut: Future<Output = getty_core::Result<Server<Frame>>>,
    {
        opts.validate()?;
        let peers = Arc::new(PeerSet::default());
        let cb = rpc_sessions(Arc::new(router), Arc::new(opts), peers.clone(), on_peer);
        let core = serve(cb).await?;
        Ok(RpcServer {
            core,
            peers,
            registrations: Mutex::new(Vec::new()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.core.local_addr()
    }
    /// Every connected peer (each can be called: server-to-client calls).
    pub fn peers(&self) -> Vec<Peer> {
        self.peers.all()
    }
    pub fn peer(&self, id: u64) -> Option<Peer> {
        self.peers.get(id)
    }
    /// The connected peer that announced `instance_id` (see `RpcOptions::identity`): how a
    /// provider calls a consumer it found in a registry.
    pub fn peer_by_instance(&self, instance_id: &str) -> Option<Peer> {
        self.peers
            .all()
            .into_iter()
            .find(|p| !p.is_closed() && p.remote_instance().as_deref() == Some(instance_id))
    }

    /// Publishes this server (it is already listening) as `instance`; an empty address is
    /// filled with the listening address. A Unix socket server has no such address (its
    /// `local_addr` is `0.0.0.0:0`): publish it with its socket path as the address (and
    /// [`Transport::Unix`](getty_registry::Transport::Unix), or `unix:///path`). Returns the
    /// instance id.
    pub async fn publish(
        &self,
        registry: &dyn Registry,
        mut instance: ServiceInstance,
    ) -> getty_registry::Result<String> {
        if instance.address.is_empty() {
            if self.core.endpoint_type() == getty_core::EndpointType::UnixServer {
                return Err(getty_registry::Error::InvalidInstance(
                    "a Unix socket server cannot fill in its address: publish it with the \
                     socket path as the address"
                        .into(),
                ));
            }
            instance.address = self.local_addr().to_string();
        }
        // Lets tools show an instance's age (`getty list`).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        instance
            .metadata
            .entry("registered_at".to_string())
            .or_insert_with(|| now.to_string());
        let reg = registry.register(instance).await?;
        let id = reg.instance().instance_id.clone();
        self.registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reg);
        Ok(id)
    }

    /// Graceful shutdown: withdraw from the registries (consumers stop routing here), let the
    /// calls being served finish (for at most `grace`), then close.
    pub async fn shutdown(&self, grace: Duration) {
        let regs =
            std::mem::take(&mut *self.registrations.lock().unwrap_or_else(|e| e.into_inner()));
        // All at once: one lease revoke on etcd for any number of instances.
        if let Err(e) = Registration::deregister_all(regs).await {
            tracing::warn!(error = %e, "deregistration failed; the registry will expire it");
        }
        // Drained means nothing is being served and nothing arrived for a short quiet spell
        // (a request may still be on the wire from a consumer that has not yet seen the
        // deregistration).
        let quiet = (grace / 4).min(Duration::from_millis(200));
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline
            && self
                .peers
                .all()
                .iter()
                .any(|p| p.stats().inflight > 0 || p.session().idle() < quiet)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.close().await;
    }

    pub fn core(&self) -> &Server<Frame> {
        &self.core
    }
    /// Stops accepting, closes every connection (pending calls fail, handlers are stopped)
    /// and waits until every handler has stopped.
    pub async fn close(&self) {
        self.core.close().await;
        self.peers.handlers_stopped().await;
    }
}
