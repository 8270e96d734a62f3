//! `RpcClient`: a getty-core client (N connections, reconnect) whose sessions speak getty-rpc.
//! It may serve a router too, so the server can call it back.

use std::sync::Arc;

use getty_core::{Client, NewSessionCallback};

use crate::connection::{OnPeer, PeerSet};
use crate::error::RpcError;
use crate::frame::Frame;
use crate::options::RpcOptions;
use crate::peer::Peer;
use crate::router::Router;
use crate::server::rpc_sessions;

/// Dropping it closes it like the getty-core [`Client`] it wraps: reconnecting stops and every
/// connection starts closing in the background (pending calls fail). [`RpcClient::close`] does
/// the same and waits.
pub struct RpcClient {
    core: Client<Frame>,
    peers: Arc<PeerSet>,
}

impl RpcClient {
    /// Starts a client on any transport: `connect` gets the session callback and starts the
    /// getty-core client, e.g. `|cb| ClientBuilder::new(addr).connections(2).connect_tcp(cb)`.
    /// Returns at once; await [`RpcClient::ready`].
    pub fn start<F>(router: Router, opts: RpcOptions, connect: F) -> getty_core::Result<RpcClient>
    where
        F: FnOnce(NewSessionCallback<Frame>) -> getty_core::Result<Client<Frame>>,
    {
        Self::start_with(router, opts, None, connect)
    }

    /// As [`RpcClient::start`], calling `on_peer` for every new connection.
    pub fn start_with<F>(
        router: Router,
        opts: RpcOptions,
        on_peer: Option<OnPeer>,
        connect: F,
    ) -> getty_core::Result<RpcClient>
    where
        F: FnOnce(NewSessionCallback<Frame>) -> getty_core::Result<Client<Frame>>,
    {
        Self::start_shared(Arc::new(router), Arc::new(opts), on_peer, connect)
    }

    /// As [`RpcClient::start_with`], sharing one router and options among many clients (a
    /// cluster keeps one client per instance).
    pub fn start_shared<F>(
        router: Arc<Router>,
        opts: Arc<RpcOptions>,
        on_peer: Option<OnPeer>,
        connect: F,
    ) -> getty_core::Result<RpcClient>
    where
        F: FnOnce(NewSessionCallback<Frame>) -> getty_core::Result<Client<Frame>>,
    {
        opts.validate()?;
        let peers = Arc::new(PeerSet::default());
        let core = connect(rpc_sessions(router, opts, peers.clone(), on_peer))?;
        Ok(RpcClient { core, peers })
    }

    /// Whether at least one connection is open.
    pub fn is_connected(&self) -> bool {
        self.peers.all().iter().any(|p| !p.is_closed())
    }

    /// Waits until every connection is up (or the client gave up).
    pub async fn ready(&self) -> getty_core::Result<()> {
        self.core.ready().await
    }

    /// A connected peer, round robin over the open connections.
    pub fn peer(&self) -> Result<Peer, RpcError> {
        self.core
            .session()
            .and_then(|s| self.peers.get(s.id()))
            .ok_or_else(|| RpcError::closed("no open connection"))
    }

    pub fn peers(&self) -> Vec<Peer> {
        self.peers.all()
    }
    pub fn core(&self) -> &Client<Frame> {
        &self.core
    }
    /// Closes every connection (pending calls fail, handlers are stopped), stops
    /// reconnecting, and waits until every handler has stopped.
    pub async fn close(&self) {
        self.core.close().await;
        self.peers.handlers_stopped().await;
    }
}
