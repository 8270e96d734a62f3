//! ZooKeeper backend (`zookeeper://host:port[,host:port…][/root][?ttl=SECS][&timeout=SECS]`).
//!
//! * Container (empty) parents `{root}/{service}/{group}/{version}` — the server removes them
//!   once their last child is gone — and an **ephemeral** node `{instance_id}` below them holding
//!   the instance as JSON. `ttl` is the requested session timeout (default 10 s; the server
//!   clamps it to its min/max session timeouts).
//! * A node of our session is updated in place; a node of another session (our previous one,
//!   still expiring) is replaced in one multi-op (delete + create), so watchers never see the
//!   instance missing.
//! * Security: `zookeeper://user:password@host…` (or [`ZkOptions::digest`]) authenticates the
//!   session with ZooKeeper's `digest` scheme, and every node we create then carries the ACL
//!   `auth::cdrwa` + `world:anyone:r`: only that identity can change or delete its instances or
//!   create nodes below its parents, everyone can read. Without credentials nodes are
//!   world-writable (`anyone_all`), as before. All providers under one root must use the same
//!   identity (the first one owns the parents), or an administrator creates the parents.
//! * One session per [`ZkRegistry`], managed by a background task: it connects with retry (with
//!   several addresses it keeps cycling until one answers) and, when the session expires or is
//!   closed, opens a new one. Each registration's keeper then re-creates its ephemeral node in the
//!   new session; it also re-creates the node if it is deleted behind its back, and replaces a
//!   node still owned by an older session of ours (which the server would delete when that
//!   session expires).
//! * A query reads the subtree of its base path: `{root}/{service}[/{group}[/{version}]]`, or
//!   `{root}` itself for [`Query::all`](crate::Query::all) (instances are then 4 levels down:
//!   `S/G/V/ID`).
//! * A watch arms a persistent recursive watch on the query's base path *before* listing the
//!   subtree, so nothing between the snapshot and the first event is lost; every node event is
//!   answered by re-reading that node, and every reconnection (events may be lost while
//!   disconnected, ZOOKEEPER-4698) or new session re-arms the watch and re-lists, emitting only the
//!   differences against the last view.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
pub use zookeeper_client;
use zookeeper_client as zkc;
use zookeeper_client::{Acl, Acls, AddWatchMode, CreateMode, EventType, Permission, SessionState};

/// With digest auth: the registering identity may do anything, everyone else may only read.
static CREATOR_ALL_ANYONE_READ: [Acl; 2] = [
    Acl::new_const(Permission::ALL, "auth", ""),
    Acl::new_const(Permission::READ, "world", "anyone"),
];

use crate::error::{Error, Result};
use crate::metrics::{self, Op, observe};
use crate::model::{Event, Query, ServiceInstance};
use crate::registry::{
    AbortOnDrop, Backoff, BoxFuture, Owners, Registration, Registry, View, Watch,
};
use crate::secret::Credentials;
use crate::url::RegistryUrl;

/// Default time a call waits for a usable session.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// What [`Registry::kind`] reports (and the `backend` label of the [metrics](crate::metrics)).
const KIND: &str = "zookeeper";
const WATCH_BUFFER: usize = 1024;
/// Most node reads a watch sends before awaiting the first answer.
const MAX_PIPELINED_READS: usize = 1024;

/// A session of the registry's client; `generation` increases with every new session.
#[derive(Clone)]
struct Session {
    generation: u64,
    client: zkc::Client,
}

impl Session {
    fn owns(&self, stat: &zkc::Stat) -> bool {
        stat.ephemeral_owner == self.client.session_id().0
    }
}

struct Shared {
    servers: String,
    /// Digest identity of the session (`None`: unauthenticated, world-writable nodes).
    auth: Option<Credentials>,
    root: String,
    session_timeout: Duration,
    wait_timeout: Duration,
    session: watch::Receiver<Option<Session>>,
    owners: Owners,
}

/// ZooKeeper registry; see the [module docs](self).
#[derive(Clone)]
pub struct ZkRegistry {
    shared: Arc<Shared>,
    batch: Arc<Batch>,
}

impl std::fmt::Debug for ZkRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkRegistry")
            .field("servers", &self.shared.servers)
            .field("root", &self.shared.root)
            .field("session_timeout", &self.shared.session_timeout)
            .finish()
    }
}

fn classify(what: &str, e: zkc::Error) -> Error {
    match e {
        zkc::Error::ConnectionLoss
        | zkc::Error::SessionExpired
        | zkc::Error::ClientClosed
        | zkc::Error::Timeout
        | zkc::Error::NoHosts => Error::Unavailable(format!("zookeeper {what}: {e}")),
        e => Error::Backend(format!("zookeeper {what}: {e}")),
    }
}

fn transient(e: &zkc::Error) -> bool {
    matches!(
        e,
        zkc::Error::ConnectionLoss
            | zkc::Error::SessionExpired
            | zkc::Error::ClientClosed
            | zkc::Error::Timeout
            | zkc::Error::NoHosts
    )
}

impl ZkRegistry {
    /// Starts a registry on `servers` (`host:port,host:port`) under `root`. Returns at once; the
    /// session is established in the background (calls wait for it up to `wait_timeout`).
    pub fn new(
        servers: &str,
        root: &str,
        session_timeout: Duration,
        wait_timeout: Duration,
    ) -> Self {
        Self::with_options(
            ZkOptions::new(servers)
                .root(root)
                .session_timeout(session_timeout)
                .wait_timeout(wait_timeout),
        )
    }

    /// Starts a registry configured by `options` (see [`ZkOptions`]).
    pub fn with_options(options: ZkOptions) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(manage(
            options.servers.clone(),
            options.session_timeout,
            options.credentials.clone(),
            tx,
        ));
        let shared = Arc::new(Shared {
            servers: options.servers,
            auth: options.credentials,
            root: options.root.trim_end_matches('/').to_string(),
            session_timeout: options.session_timeout,
            wait_timeout: options.wait_timeout,
            session: rx,
            owners: Owners::default(),
        });
        ZkRegistry {
            batch: Arc::new(Batch(shared.clone())),
            shared,
        }
    }

    pub(crate) fn from_url(url: &RegistryUrl) -> Result<Self> {
        url.only_params(&["ttl", "timeout"])?;
        if url.hosts.is_empty() {
            return Err(url.error("no zookeeper address"));
        }
        let mut options = ZkOptions::new(&url.hosts.join(","))
            .root(&url.root(crate::DEFAULT_ROOT)?)
            .session_timeout(url.seconds("ttl")?.unwrap_or(crate::DEFAULT_TTL))
            .wait_timeout(url.seconds("timeout")?.unwrap_or(DEFAULT_TIMEOUT));
        if let Some(c) = &url.credentials {
            options = options.digest(c.clone());
        }
        Ok(Self::with_options(options))
    }

    /// The current session (id and password), if connected: for diagnostics, and for tests that
    /// force a session expiry by attaching a second client to it and closing that client.
    pub fn session(&self) -> Option<zkc::SessionInfo> {
        self.shared
            .session
            .borrow()
            .as_ref()
            .map(|s| s.client.session().clone())
    }

    /// Waits up to `timeout` for a session and returns its id.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<zkc::SessionId> {
        let mut rx = self.shared.session.clone();
        match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(s)) => Ok(s.as_ref().map(|s| s.client.session_id()).expect("checked")),
            _ => Err(Error::Unavailable(format!(
                "zookeeper {}: no session within {timeout:?}",
                self.shared.servers
            ))),
        }
    }

    /// The node path of `instance`.
    pub fn path_of(&self, instance: &ServiceInstance) -> String {
        self.shared.path_of(instance)
    }
}

/// Owns the client: connects (retrying), publishes the session, and replaces it when it ends.
async fn manage(
    servers: String,
    session_timeout: Duration,
    auth: Option<Credentials>,
    tx: watch::Sender<Option<Session>>,
) {
    let mut generation = 0u64;
    let mut backoff = Backoff::new(MAX_BACKOFF);
    let digest = auth.map(|c| format!("{}:{}", c.user, c.password.expose()).into_bytes());
    loop {
        let mut connector = zkc::Client::connector().with_session_timeout(session_timeout);
        if let Some(d) = &digest {
            connector = connector.with_auth("digest", d);
        }
        let connect = connector.connect(&servers);
        let result = tokio::select! {
            _ = tx.closed() => return,
            r = tokio::time::timeout(session_timeout + Duration::from_secs(5), connect) => r,
        };
        let client = match result {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::warn!(servers = %servers, error = %e, "zookeeper connect failed; retrying");
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                continue;
            }
            Err(_) => {
                tracing::warn!(servers = %servers, "zookeeper connect timed out; retrying");
                continue;
            }
        };
        backoff.reset();
        generation += 1;
        let mut states = client.state_watcher();
        tracing::info!(servers = %servers, session = %client.session_id(), generation, "zookeeper session established");
        let terminated_already = client.state().is_terminated();
        tx.send_replace(Some(Session { generation, client }));
        if !terminated_already {
            loop {
                let state = tokio::select! {
                    _ = tx.closed() => return,
                    s = states.changed() => s,
                };
                if state.is_terminated() {
                    tracing::warn!(servers = %servers, ?state, "zookeeper session ended; opening a new one");
                    break;
                }
            }
        }
        tx.send_replace(None);
    }
}

impl Shared {
    /// ACLs of the nodes we create: world-writable without an identity; with digest auth,
    /// writable by our identity only and readable by everyone.
    fn acls(&self) -> Acls<'static> {
        match self.auth {
            None => Acls::anyone_all(),
            Some(_) => Acls::new(&CREATOR_ALL_ANYONE_READ),
        }
    }

    fn path_of(&self, instance: &ServiceInstance) -> String {
        format!("{}/{}", self.root, instance.path_key())
    }

    /// The node below which every instance matching `query` lies: `{root}/{path_prefix}`, or
    /// the root itself for every service (`/` when the root is the top of the tree).
    fn base_of(&self, query: &Query) -> String {
        let p = query.path_prefix();
        match (p.is_empty(), self.root.is_empty()) {
            (false, _) => format!("{}/{p}", self.root),
            (true, false) => self.root.clone(),
            (true, true) => "/".to_string(),
        }
    }

    /// Runs `op` on the current session, retrying transient failures, for at most `wait_timeout`.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = std::result::Result<T, zkc::Error>>,
    {
        let deadline = Instant::now() + self.wait_timeout;
        let mut rx = self.session.clone();
        loop {
            let session =
                match tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await {
                    Ok(Ok(s)) => s.clone().expect("checked"),
                    _ => {
                        return Err(Error::Unavailable(format!(
                            "zookeeper {what}: no session with {} within {:?}",
                            self.servers, self.wait_timeout
                        )));
                    }
                };
            match tokio::time::timeout_at(deadline, op(session)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if transient(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => return Err(classify(what, e)),
                Err(_) => return Err(Error::Unavailable(format!("zookeeper {what}: timed out"))),
            }
        }
    }
}

fn parent(path: &str) -> &str {
    &path[..path.rfind('/').unwrap_or(0)]
}

/// The path of child `name` of `dir` (`dir` may be `/`).
fn child(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Makes sure `path` exists as an ephemeral node of `session` holding `data`. Returns whether
/// anything had to be written.
///
/// Parents are container nodes (the server removes them once their last child is gone). A node
/// of ours is updated in place (`setData`); a node of another session (e.g. our previous,
/// expiring one) is replaced by one multi-op (delete + create), so that a watcher never sees the
/// instance missing in between.
async fn ensure_node(
    session: &Session,
    acls: Acls<'static>,
    path: &str,
    data: &[u8],
) -> std::result::Result<bool, zkc::Error> {
    let client = &session.client;
    let dir_opts = CreateMode::Container.with_acls(acls);
    let node_opts = CreateMode::Ephemeral.with_acls(acls);
    for _ in 0..5 {
        client.mkdir(parent(path), &dir_opts).await?;
        match client.create(path, data, &node_opts).await {
            Ok(_) => return Ok(true),
            Err(zkc::Error::NoNode) => continue, // a parent vanished meanwhile
            Err(zkc::Error::NodeExists) => match client.get_data(path).await {
                Ok((current, stat)) if session.owns(&stat) => {
                    if current != data {
                        client.set_data(path, data, Some(stat.version)).await?;
                        return Ok(true);
                    }
                    return Ok(false);
                }
                Ok((_, stat)) => {
                    tracing::warn!(
                        path,
                        owner = stat.ephemeral_owner,
                        "replacing a node owned by another session"
                    );
                    let mut multi = client.new_multi_writer();
                    multi.add_delete(path, Some(stat.version))?;
                    multi.add_create(path, data, &node_opts)?;
                    match multi.commit().await.map_err(zkc::Error::from) {
                        Ok(_) => return Ok(true),
                        // Changed or gone meanwhile: look again.
                        Err(
                            zkc::Error::NoNode | zkc::Error::BadVersion | zkc::Error::NodeExists,
                        ) => {
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(zkc::Error::NoNode) => continue,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Err(zkc::Error::ConnectionLoss)
}

// ---------------------------------------------------------------------------------------------
// Registration keeper
// ---------------------------------------------------------------------------------------------

type StopRx = oneshot::Receiver<oneshot::Sender<Result<()>>>;

async fn keeper(
    shared: Arc<Shared>,
    path: String,
    data: Vec<u8>,
    first_gen: u64,
    token: u64,
    mut stop: StopRx,
) {
    let mut rx = shared.session.clone();
    let mut ensured: Option<u64> = Some(first_gen);
    let mut backoff = Backoff::new(MAX_BACKOFF);
    loop {
        if !shared.owners.is_current(&path, token) {
            // A later registration of the same instance took over the node: stay passive.
            if let Ok(reply) = stop.await {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        let current = rx.borrow_and_update().clone();
        let Some(session) = current else {
            tokio::select! {
                s = &mut stop => return finish(&shared, &path, token, s.ok()).await,
                r = rx.changed() => if r.is_err() { return },
            }
            continue;
        };
        if ensured != Some(session.generation) {
            let r = tokio::select! {
                s = &mut stop => return finish(&shared, &path, token, s.ok()).await,
                r = ensure_node(&session, shared.acls(), &path, &data) => r,
            };
            match r {
                Ok(wrote) => {
                    if wrote {
                        tracing::info!(path = %path, session = %session.client.session_id(), "zookeeper registration restored");
                        metrics::reregistered(KIND, 1);
                    }
                    ensured = Some(session.generation);
                    backoff.reset();
                }
                Err(e) => {
                    tracing::warn!(path = %path, error = %e, "zookeeper registration not restored yet; retrying");
                    let delay = backoff.next_delay();
                    tokio::select! {
                        s = &mut stop => return finish(&shared, &path, token, s.ok()).await,
                        _ = rx.changed() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
        }
        // Watch our node: deleted or changed behind our back -> ensure again.
        let r = tokio::select! {
            s = &mut stop => return finish(&shared, &path, token, s.ok()).await,
            r = session.client.check_and_watch_stat(&path) => r,
        };
        match r {
            Ok((Some(stat), watcher)) if session.owns(&stat) => {
                // Awaited in its own task: zookeeper-client 0.11 can panic in
                // `OneshotWatcher::changed` when a session ends abruptly; that must not kill
                // the keeper.
                let mut event = AbortOnDrop(tokio::spawn(async move {
                    let ev = watcher.changed().await;
                    tracing::debug!(?ev, "zookeeper registration node event");
                }));
                tokio::select! {
                    s = &mut stop => return finish(&shared, &path, token, s.ok()).await,
                    _ = rx.changed() => {}
                    _ = &mut event.0 => {
                        // Node changed/deleted, session event or watcher failure: check again.
                        ensured = None;
                    }
                }
            }
            Ok(_) => {
                tracing::warn!(path = %path, "zookeeper registration node missing or not ours; re-creating");
                ensured = None;
            }
            Err(e) => {
                tracing::debug!(path = %path, error = %e, "zookeeper exists-watch failed");
                ensured = None;
                let delay = backoff.next_delay();
                tokio::select! {
                    s = &mut stop => return finish(&shared, &path, token, s.ok()).await,
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Deletes the node if this registration still owns it and it belongs to the current session;
/// answers `reply`.
async fn finish(
    shared: &Shared,
    path: &str,
    token: u64,
    reply: Option<oneshot::Sender<Result<()>>>,
) {
    if !shared.owners.release(path, token) {
        if let Some(reply) = reply {
            let _ = reply.send(Ok(()));
        }
        return;
    }
    let result = shared
        .retrying("deregister", |session| async move {
            match session.client.get_data(path).await {
                Ok((_, stat)) if session.owns(&stat) => {
                    match session.client.delete(path, Some(stat.version)).await {
                        Ok(()) | Err(zkc::Error::NoNode) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Ok(_) | Err(zkc::Error::NoNode) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await;
    match &result {
        Ok(()) => metrics::deregistered(KIND, 1),
        Err(e) => {
            tracing::warn!(path, error = %e, "zookeeper deregistration failed; the node goes with its session");
            metrics::failed(KIND, Op::Deregister, 1);
        }
    }
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// Batched deregistration ([`Registration::deregister_all`]): ownership is released first (the
/// keepers, stopped afterwards, then leave the nodes alone), the nodes are read in one pipeline
/// to keep only those of our session, and deleted [`DELETES_PER_MULTI`] per multi-op.
struct Batch(Arc<Shared>);

/// Deletes per multi-op (one write transaction on the server instead of one per node).
const DELETES_PER_MULTI: usize = 100;

impl crate::registry::Releaser for Batch {
    fn release(&self, items: Vec<(String, u64)>, reply: Option<oneshot::Sender<Result<()>>>) {
        let shared = self.0.clone();
        tokio::spawn(async move {
            let paths: Vec<String> = items
                .into_iter()
                .filter(|(path, token)| shared.owners.release(path, *token))
                .map(|(path, _)| path)
                .collect();
            let paths = &paths;
            let result = shared
                .retrying("deregister", |session| async move {
                    delete_owned(&session, paths).await
                })
                .await;
            match &result {
                Ok(()) => metrics::deregistered(KIND, paths.len()),
                Err(e) => {
                    tracing::warn!(error = %e, "zookeeper deregistration failed; the nodes go with their session");
                    metrics::failed(KIND, Op::Deregister, 1);
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        });
    }
}

/// Deletes those of `paths` that are nodes of `session`.
async fn delete_owned(session: &Session, paths: &[String]) -> std::result::Result<(), zkc::Error> {
    let client = &session.client;
    let reads: Vec<_> = paths.iter().map(|p| client.get_data(p)).collect();
    let mut owned = Vec::new();
    for (path, read) in paths.iter().zip(reads) {
        match read.await {
            Ok((_, stat)) if session.owns(&stat) => owned.push((path.as_str(), stat.version)),
            Ok(_) | Err(zkc::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    let commits: Vec<_> = owned
        .chunks(DELETES_PER_MULTI)
        .map(|chunk| {
            let mut multi = client.new_multi_writer();
            for (path, version) in chunk {
                multi.add_delete(path, Some(*version))?;
            }
            Ok((chunk, multi.commit()))
        })
        .collect::<std::result::Result<_, zkc::Error>>()?;
    for (chunk, commit) in commits {
        match commit.await.map_err(zkc::Error::from) {
            Ok(_) => {}
            // One node changed or went meanwhile: the others one by one.
            Err(zkc::Error::NoNode | zkc::Error::BadVersion) => {
                for (path, version) in chunk {
                    match client.delete(path, Some(*version)).await {
                        Ok(()) | Err(zkc::Error::NoNode | zkc::Error::BadVersion) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------------------------

/// Lists every instance node below `base` (`levels` path levels down) on `session`.
async fn list_tree(
    session: &Session,
    base: &str,
    levels: usize,
    query: &Query,
) -> std::result::Result<BTreeMap<String, ServiceInstance>, zkc::Error> {
    let client = &session.client;
    let mut dirs = vec![base.to_string()];
    for _ in 1..=levels {
        // Requests are sent when the futures are created, so this pipelines each level (a whole
        // registry, for every service, is read in `levels + 1` round trips).
        let lists: Vec<_> = dirs.iter().map(|d| client.list_children(d)).collect();
        let mut next = Vec::new();
        for (dir, list) in dirs.iter().zip(lists) {
            match list.await {
                Ok(children) => next.extend(children.iter().map(|c| child(dir, c))),
                Err(zkc::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        dirs = next;
    }
    let reads: Vec<_> = dirs.iter().map(|p| client.get_data(p)).collect();
    let mut map = BTreeMap::new();
    for (path, read) in dirs.iter().zip(reads) {
        match read.await {
            Ok((data, _)) => {
                if let Some(inst) = decode(path, &data, query) {
                    map.insert(path.clone(), inst);
                }
            }
            Err(zkc::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(map)
}

fn decode(path: &str, data: &[u8], query: &Query) -> Option<ServiceInstance> {
    if data.is_empty() {
        // A persistent parent node (e.g. of another registry rooted below ours): not an instance.
        return None;
    }
    match ServiceInstance::from_json(data) {
        Ok(i) if query.matches(&i) => Some(i),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(path, error = %e, "ignoring zookeeper node that is not a service instance");
            None
        }
    }
}

/// Arms the recursive watch on `base` and then lists it.
async fn arm_and_list(
    session: &Session,
    base: &str,
    levels: usize,
    query: &Query,
) -> std::result::Result<(zkc::PersistentWatcher, BTreeMap<String, ServiceInstance>), zkc::Error> {
    let watcher = session
        .client
        .watch(base, AddWatchMode::PersistentRecursive)
        .await?;
    let map = list_tree(session, base, levels, query).await?;
    Ok((watcher, map))
}

/// Moves a persistent watcher into its own task and forwards its events (up to and including a
/// terminal session event). Contains panics of the watcher (zookeeper-client 0.11 panics when
/// polled after its session ended abruptly): the channel then just closes.
fn is_node_event(ev: &zkc::WatchedEvent) -> bool {
    matches!(
        ev.event_type,
        EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted
    )
}

fn forward(
    mut watcher: zkc::PersistentWatcher,
) -> (mpsc::UnboundedReceiver<zkc::WatchedEvent>, AbortOnDrop) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = tx.closed() => return,
                ev = watcher.changed() => ev,
            };
            let terminal = ev.event_type == EventType::Session && ev.session_state.is_terminated();
            if tx.send(ev).is_err() || terminal {
                return;
            }
        }
    });
    (rx, AbortOnDrop(task))
}

struct WatchState {
    /// Whether the view is current: false from a disconnection until the re-list after it.
    live: watch::Sender<bool>,
    shared: Arc<Shared>,
    query: Query,
    base: String,
    levels: usize,
    view: View,
    tx: mpsc::Sender<Event>,
}

impl WatchState {
    fn set_live(&self, up: bool) {
        self.live
            .send_if_modified(|l| std::mem::replace(l, up) != up);
    }

    /// Whether `path` is an instance node of this watch (`levels` below the base).
    fn is_leaf(&self, path: &str) -> bool {
        let rest = if self.base.ends_with('/') {
            path.strip_prefix(&self.base)
        } else {
            path.strip_prefix(&self.base)
                .and_then(|rest| rest.strip_prefix('/'))
        };
        rest.is_some_and(|rest| !rest.is_empty() && rest.split('/').count() == self.levels)
    }

    async fn emit(&self, events: impl IntoIterator<Item = Event>) -> bool {
        for ev in events {
            if self.tx.send(ev).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Re-reads `paths` and emits the resulting changes. The reads are pipelined (all sent
    /// before the first answer is awaited), so a burst of node events costs one round trip, not
    /// one per node.
    async fn refresh(
        &mut self,
        session: &Session,
        paths: &[String],
    ) -> std::result::Result<bool, zkc::Error> {
        let reads: Vec<_> = paths.iter().map(|p| session.client.get_data(p)).collect();
        for (path, read) in paths.iter().zip(reads) {
            let change = match read.await {
                Ok((data, _)) => self.view.upsert(path, decode(path, &data, &self.query)),
                Err(zkc::Error::NoNode) => self.view.remove(path),
                Err(e) => return Err(e),
            };
            if !self.emit(change).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn run(mut self, mut session: Session, watcher: zkc::PersistentWatcher) {
        let (mut events, mut _forwarder) = forward(watcher);
        let mut rx = self.shared.session.clone();
        let mut backoff = Backoff::new(MAX_BACKOFF);
        // Set when events may have been missed: re-list (and, after a session change, re-arm).
        let mut relist = false;
        let mut rearm = false;
        // An event taken from the queue but not handled yet.
        let mut held: Option<zkc::WatchedEvent> = None;
        loop {
            if rearm {
                // Wait for a live session (a newer one if ours ended), then arm + list + diff.
                let next = tokio::select! {
                    _ = self.tx.closed() => return,
                    r = rx.wait_for(|s| s.as_ref().is_some_and(|s| {
                        s.generation > session.generation || !s.client.state().is_terminated()
                    })) => match r {
                        Ok(s) => s.clone().expect("checked"),
                        Err(_) => return,
                    },
                };
                match arm_and_list(&next, &self.base, self.levels, &self.query).await {
                    Ok((w, fresh)) => {
                        session = next;
                        (events, _forwarder) = forward(w);
                        held = None;
                        rearm = false;
                        relist = false;
                        backoff.reset();
                        let events = self.view.reconcile(fresh);
                        if !self.emit(events).await {
                            return;
                        }
                        self.set_live(true);
                    }
                    Err(e) => {
                        tracing::warn!(base = %self.base, error = %e, "zookeeper watch not re-armed yet; retrying");
                        if matches!(e, zkc::Error::SessionExpired | zkc::Error::ClientClosed) {
                            session = next; // wait for an even newer session
                        }
                        if !self.pause(&mut backoff).await {
                            return;
                        }
                    }
                }
                continue;
            }
            if relist {
                match list_tree(&session, &self.base, self.levels, &self.query).await {
                    Ok(fresh) => {
                        relist = false;
                        backoff.reset();
                        let events = self.view.reconcile(fresh);
                        if !self.emit(events).await {
                            return;
                        }
                        self.set_live(true);
                    }
                    Err(e) => {
                        tracing::debug!(base = %self.base, error = %e, "zookeeper re-list failed; retrying");
                        if session.client.state().is_terminated() {
                            rearm = true;
                            continue;
                        }
                        if !self.pause(&mut backoff).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let ev = match held.take() {
                Some(ev) => Some(ev),
                None => tokio::select! {
                    _ = self.tx.closed() => return,
                    ev = events.recv() => ev,
                },
            };
            let Some(ev) = ev else {
                // The forwarder ended without a terminal event (watcher failure): start over.
                tracing::warn!(base = %self.base, "zookeeper watcher failed; re-arming");
                self.set_live(false);
                rearm = true;
                continue;
            };
            match ev.event_type {
                EventType::Session => match ev.session_state {
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => relist = true,
                    SessionState::Disconnected => self.set_live(false),
                    terminal => {
                        self.set_live(false);
                        tracing::warn!(base = %self.base, state = ?terminal, "zookeeper watch lost its session; re-arming on the next one");
                        // The watcher must not be polled after a terminal state.
                        rearm = true;
                    }
                },
                EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted
                    if self.is_leaf(&ev.path) =>
                {
                    // The node events already queued are read together; anything else waits
                    // in `held` for the next turn.
                    let mut paths = vec![ev.path];
                    while paths.len() < MAX_PIPELINED_READS {
                        match events.try_recv() {
                            Ok(next) if is_node_event(&next) && self.is_leaf(&next.path) => {
                                paths.push(next.path)
                            }
                            Ok(next) if is_node_event(&next) => {}
                            Ok(next) => {
                                held = Some(next);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    match self.refresh(&session, &paths).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            tracing::debug!(error = %e, "zookeeper read failed; will re-list");
                            relist = true;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    async fn pause(&self, backoff: &mut Backoff) -> bool {
        tokio::select! {
            _ = self.tx.closed() => false,
            _ = tokio::time::sleep(backoff.next_delay()) => true,
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// How to reach and use a ZooKeeper ensemble (see [`ZkRegistry::with_options`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ZkOptions {
    /// `host:port[,host:port…]`.
    pub servers: String,
    /// Root node (default [`DEFAULT_ROOT`](crate::DEFAULT_ROOT)).
    pub root: String,
    /// Requested session timeout (the server clamps it), default [`DEFAULT_TTL`](crate::DEFAULT_TTL).
    pub session_timeout: Duration,
    /// How long a call waits for a usable session, default [`DEFAULT_TIMEOUT`].
    pub wait_timeout: Duration,
    /// Digest identity (`user:password`); with it every node we create is writable by this
    /// identity only and readable by everyone.
    pub credentials: Option<Credentials>,
}

impl ZkOptions {
    /// Defaults for `servers`.
    pub fn new(servers: &str) -> Self {
        ZkOptions {
            servers: servers.to_string(),
            root: crate::DEFAULT_ROOT.to_string(),
            session_timeout: crate::DEFAULT_TTL,
            wait_timeout: DEFAULT_TIMEOUT,
            credentials: None,
        }
    }

    /// The root node.
    pub fn root(mut self, root: &str) -> Self {
        self.root = root.to_string();
        self
    }

    /// The requested session timeout.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long a call waits for a session.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Authenticates with digest `credentials` and protects our nodes with them.
    pub fn digest(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }
}

impl Registry for ZkRegistry {
    fn register(&self, instance: ServiceInstance) -> BoxFuture<'_, Result<Registration>> {
        Box::pin(observe(KIND, Op::Register, async move {
            let instance = instance.normalize()?;
            let path = self.shared.path_of(&instance);
            let data = instance.to_json()?;
            let generation = self
                .shared
                .retrying("register", |session| {
                    let (path, data) = (path.clone(), data.clone());
                    let acls = self.shared.acls();
                    async move {
                        ensure_node(&session, acls, &path, &data)
                            .await
                            .map(|_| session.generation)
                    }
                })
                .await?;
            // Claimed after the write: a failed register leaves an older registration in charge.
            let token = self.shared.owners.claim(&path);
            let (stop_tx, stop_rx) = oneshot::channel();
            tokio::spawn(keeper(
                self.shared.clone(),
                path.clone(),
                data,
                generation,
                token,
                stop_rx,
            ));
            Ok(Registration::with_batchable_task(
                instance,
                stop_tx,
                self.batch.clone(),
                path,
                token,
            ))
        }))
    }

    fn discover<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Vec<ServiceInstance>>> {
        Box::pin(observe(KIND, Op::List, async move {
            query.validate()?;
            let base = self.shared.base_of(query);
            let levels = query.levels_below_prefix();
            let map = self
                .shared
                .retrying("discover", |session| {
                    let base = base.clone();
                    async move { list_tree(&session, &base, levels, query).await }
                })
                .await?;
            Ok(map.into_values().collect())
        }))
    }

    fn watch<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(observe(KIND, Op::Watch, async move {
            query.validate()?;
            let base = self.shared.base_of(query);
            let levels = query.levels_below_prefix();
            let (session, watcher, entries) = self
                .shared
                .retrying("watch", |session| {
                    let base = base.clone();
                    async move {
                        let (w, map) = arm_and_list(&session, &base, levels, query).await?;
                        Ok((session, w, map))
                    }
                })
                .await?;
            let view = View::from_entries(entries);
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            let _ = tx.try_send(Event::Snapshot(view.snapshot()));
            let (live, live_rx) = watch::channel(true);
            let state = WatchState {
                live,
                shared: self.shared.clone(),
                query: query.clone(),
                base,
                levels,
                view,
                tx,
            };
            let task = tokio::spawn(state.run(session, watcher));
            Ok(Watch::bounded(KIND, rx, Some(task)).with_liveness(live_rx))
        }))
    }

    fn kind(&self) -> &'static str {
        KIND
    }
}
