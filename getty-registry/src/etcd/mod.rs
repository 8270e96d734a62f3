//! etcd v3 backend (`etcd://host:port[,host:port…][/root][?ttl=SECS][&timeout=SECS]`).
//!
//! * Key `{root}/{service}/{group}/{version}/{instance_id}` (escaped), value = JSON.
//! * **One lease per registry client** (a session, as etcd's own `concurrency` package does),
//!   shared by all its registrations and kept alive by one keep-alive stream ([`session`]).
//!   Registrations arriving together are written in one transaction (up to 128 keys); the keys
//!   of the session are watched (deletions only) so that a key deleted behind our back is put
//!   back at once; when the lease is lost (expired during a long partition, revoked, etcd came
//!   back without its data) a new lease is granted and every key is put again, one transaction
//!   per 128 keys. [`Registration::deregister_all`] of all of a client's registrations is one
//!   lease revoke.
//! * A query lists / watches the key prefix of its service (`{root}/{service}/…`), or `{root}/`
//!   for [`Query::all`](crate::Query::all) ([`watch`]).
//! * Requests failing with a transient error (unavailable, resource exhausted, a reset
//!   connection, a dead endpoint) are retried with jittered back-off within the request timeout.
//! * The HTTP/2 keep-alive ping runs every 10 s (timeout 5 s): etcd's default
//!   `--grpc-keepalive-min-time` is 5 s, and a client pinging more often is sent GOAWAY
//!   `too_many_pings`, which tears down every stream of the connection.

mod session;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use etcd_client;
use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::metrics::{Op, observe};
use crate::model::{Query, ServiceInstance};
use crate::registry::{BoxFuture, Registration, Registry, Watch};
use crate::secret::Credentials;
use crate::url::RegistryUrl;

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive ping interval: at least etcd's default minimum (5 s), with a margin.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long an unanswered HTTP/2 ping may stay unanswered before the connection is dropped.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// What [`Registry::kind`] reports (and the `backend` label of the [metrics](crate::metrics)).
const KIND: &str = "etcd";

struct Inner {
    client: Client,
    endpoints: Vec<String>,
    root: String,
    ttl: Duration,
    timeout: Duration,
}

/// etcd registry; see the [module docs](self).
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
    session: Arc<session::Handle>,
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

/// Errors worth retrying: the endpoint could not be reached, did not answer in time, shed load,
/// or the connection was reset under the request (with several endpoints the client may also
/// have picked a dead one).
fn is_transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            use tonic_code::*;
            let code = s.code() as i32;
            matches!(
                code,
                CANCELLED | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | UNAVAILABLE
            ) || (matches!(code, UNKNOWN | INTERNAL) && is_reset(s.message()))
        }
        _ => false,
    }
}

/// gRPC status codes (tonic's `Code` as numbers, so no tonic dependency is needed).
mod tonic_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

/// Whether an error message tells of a connection reset or torn down under the request.
fn is_reset(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "connection reset",
        "broken pipe",
        "h2 protocol error",
        "stream no longer needed",
        "connection closed",
        "goaway",
    ]
    .iter()
    .any(|p| m.contains(p))
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
            s.code() as i32 == tonic_code::NOT_FOUND || s.message().contains("lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        _ => false,
    }
}

/// Why a request failed after its retries.
enum Failure {
    Etcd(etcd_client::Error),
    /// No answer within the request timeout.
    Timeout,
}

impl Failure {
    fn lease_not_found(&self) -> bool {
        matches!(self, Failure::Etcd(e) if is_lease_not_found(e))
    }

    fn into_error(self, what: &str, timeout: Duration) -> Error {
        match self {
            Failure::Etcd(e) => classify(what, e),
            Failure::Timeout => {
                Error::Unavailable(format!("etcd {what}: no answer within {timeout:?}"))
            }
        }
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
        Self::with_options(
            EtcdOptions::new(endpoints.iter().copied())
                .root(root)
                .ttl(ttl)
                .timeout(timeout),
        )
        .await
    }

    /// Connects as `options` say (TLS, user). Without a user no request is made yet; with one
    /// the client authenticates now (and fails if etcd cannot be reached or refuses the user).
    pub async fn with_options(options: EtcdOptions) -> Result<Self> {
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoints: Vec<String> = options
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err(Error::InvalidConfig("no etcd endpoint".into()));
        }
        let timeout = options.timeout;
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(timeout.min(Duration::from_secs(3)))
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls.load()?);
        }
        if let Some(c) = &options.credentials {
            connect = connect
                .with_user(c.user.clone(), c.password.expose())
                .with_auto_token_refresh(true);
        }
        let client = tokio::time::timeout(timeout, Client::connect(&endpoints, Some(connect)))
            .await
            .map_err(|_| Error::Unavailable(format!("etcd connect: no answer within {timeout:?}")))?
            .map_err(|e| classify("connect", e))?;
        let inner = Arc::new(Inner {
            client,
            endpoints,
            root: options.root.trim_end_matches('/').to_string(),
            ttl: options.ttl.max(Duration::from_secs(1)),
            timeout,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(session::run(inner.clone(), rx));
        Ok(EtcdRegistry {
            inner,
            session: Arc::new(session::Handle { tx }),
        })
    }

    pub(crate) async fn from_url(url: &RegistryUrl) -> Result<Self> {
        let tls = url.scheme == "etcds";
        const TLS_PARAMS: [&str; 4] = ["ca", "cert", "key", "server_name"];
        if !tls && let Some(p) = TLS_PARAMS.iter().find(|p| url.params.contains_key(**p)) {
            return Err(url.error(format!("`{p}=` is a TLS parameter: use etcds://")));
        }
        url.only_params(&["ttl", "timeout", "ca", "cert", "key", "server_name"])?;
        if url.hosts.is_empty() {
            return Err(url.error("no etcd endpoint"));
        }
        let mut options = EtcdOptions::new(url.hosts.iter().map(String::as_str))
            .root(&url.root(crate::DEFAULT_ROOT)?)
            .ttl(url.seconds("ttl")?.unwrap_or(crate::DEFAULT_TTL))
            .timeout(url.seconds("timeout")?.unwrap_or(DEFAULT_TIMEOUT));
        if tls {
            let path = |k: &str| url.params.get(k).map(std::path::PathBuf::from);
            let t = EtcdTls {
                ca: path("ca"),
                cert: path("cert"),
                key: path("key"),
                server_name: url.params.get("server_name").cloned(),
            };
            if t.ca.is_none() {
                return Err(url.error("etcds:// needs `ca=PATH` (the CA certificate, PEM)"));
            }
            if t.cert.is_some() != t.key.is_some() {
                return Err(url.error("`cert=` and `key=` go together"));
            }
            options = options.tls(t);
        }
        if let Some(c) = &url.credentials {
            options = options.credentials(c.clone());
        }
        match Self::with_options(options).await {
            Err(Error::InvalidConfig(reason)) => Err(url.error(reason)),
            other => other,
        }
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

/// How to reach and use etcd (see [`EtcdRegistry::with_options`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// `host:port` (or full `http(s)://host:port`) of the members.
    pub endpoints: Vec<String>,
    /// Key prefix (default [`DEFAULT_ROOT`](crate::DEFAULT_ROOT)).
    pub root: String,
    /// Lease TTL (default [`DEFAULT_TTL`](crate::DEFAULT_TTL)).
    pub ttl: Duration,
    /// Per-request timeout (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// etcd user and password (etcd's auth must be enabled for them to matter).
    pub credentials: Option<Credentials>,
    /// TLS towards the members (`https://`); `None`: plaintext.
    pub tls: Option<EtcdTls>,
}

impl EtcdOptions {
    /// Defaults for `endpoints`.
    pub fn new<'a>(endpoints: impl IntoIterator<Item = &'a str>) -> Self {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(String::from).collect(),
            root: crate::DEFAULT_ROOT.to_string(),
            ttl: crate::DEFAULT_TTL,
            timeout: DEFAULT_TIMEOUT,
            credentials: None,
            tls: None,
        }
    }

    /// The key prefix.
    pub fn root(mut self, root: &str) -> Self {
        self.root = root.to_string();
        self
    }

    /// The lease TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The per-request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Authenticates as `credentials`.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Speaks TLS to the members.
    pub fn tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// TLS towards etcd: the CA that signed the members' certificates, optionally a client
/// certificate (etcd's `--client-cert-auth`), and the name to verify when it differs from the
/// endpoint's host.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EtcdTls {
    /// CA certificate(s), PEM.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate chain, PEM (with `key`).
    pub cert: Option<std::path::PathBuf>,
    /// Client private key, PEM (with `cert`).
    pub key: Option<std::path::PathBuf>,
    /// Server name to verify instead of the endpoint's host.
    pub server_name: Option<String>,
}

impl EtcdTls {
    /// Trusts the CA certificate(s) in `ca` (PEM).
    pub fn with_ca(ca: impl Into<std::path::PathBuf>) -> Self {
        EtcdTls {
            ca: Some(ca.into()),
            ..EtcdTls::default()
        }
    }

    /// Presents the client certificate `cert` with its key `key` (PEM files).
    pub fn client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Verifies the members' certificates against `name`.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    fn load(&self) -> Result<etcd_client::TlsOptions> {
        let read = |what: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                Error::InvalidConfig(format!(
                    "cannot read the etcd TLS {what} {}: {e}",
                    p.display()
                ))
            })
        };
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read("CA", ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(etcd_client::Identity::from_pem(
                    read("certificate", cert)?,
                    read("key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(Error::InvalidConfig(
                    "an etcd client certificate needs both cert and key".into(),
                ));
            }
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
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

    /// Runs `op`, retrying transient failures with jittered back-off until `deadline`.
    async fn call_until<T, F, Fut>(
        &self,
        what: &str,
        deadline: tokio::time::Instant,
        mut op: F,
    ) -> std::result::Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut backoff = crate::registry::Backoff::starting_at(
            Duration::from_millis(20),
            Duration::from_millis(500),
        );
        loop {
            match tokio::time::timeout_at(deadline, op(self.client.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_transient(&e) => {
                    let pause = backoff.next_delay();
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(Failure::Etcd(e));
                    }
                    tracing::debug!(what, error = %e, "etcd request failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Ok(Err(e)) => return Err(Failure::Etcd(e)),
                Err(_) => return Err(Failure::Timeout),
            }
        }
    }

    /// Runs `op`, retrying transient failures until the request timeout.
    async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.call_until(what, deadline, op)
            .await
            .map_err(|f| f.into_error(what, self.timeout))
    }

    /// Lists `prefix`: (revision, raft term, matching instances by key).
    async fn list(
        &self,
        prefix: &str,
        query: &Query,
    ) -> Result<(
        i64,
        u64,
        std::collections::BTreeMap<String, ServiceInstance>,
    )> {
        let resp = self
            .call("get", |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        let (rev, term) = resp
            .header()
            .map(|h| (h.revision(), h.raft_term()))
            .unwrap_or((0, 0));
        let mut map = std::collections::BTreeMap::new();
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

impl Registry for EtcdRegistry {
    fn register(&self, instance: ServiceInstance) -> BoxFuture<'_, Result<Registration>> {
        Box::pin(observe(KIND, Op::Register, async move {
            let instance = instance.normalize()?;
            let key = self.inner.key_of(&instance);
            let value = instance.to_json()?;
            let token = self.session.register(key.clone(), value).await?;
            Ok(Registration::with_owner(
                instance,
                self.session.clone(),
                key,
                token,
            ))
        }))
    }

    fn discover<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Vec<ServiceInstance>>> {
        Box::pin(observe(KIND, Op::List, async move {
            query.validate()?;
            let (_, _, map) = self.inner.list(&self.inner.prefix_of(query), query).await?;
            Ok(map.into_values().collect())
        }))
    }

    fn watch<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(observe(
            KIND,
            Op::Watch,
            watch::start(self.inner.clone(), query),
        ))
    }

    fn kind(&self) -> &'static str {
        KIND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_pings_no_faster_than_etcd_accepts() {
        // etcd's default --grpc-keepalive-min-time.
        assert!(KEEP_ALIVE_INTERVAL >= Duration::from_secs(5));
        assert!(KEEP_ALIVE_TIMEOUT >= Duration::from_secs(5));
    }

    #[test]
    fn transient_errors() {
        let status = |code: tonic::Code, msg: &str| {
            etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg.to_string()))
        };
        // A reset connection surfaces as "resource exhausted" (the h2 layer's
        // `too_many_data_frames`): retried, not a failed registration.
        assert!(is_transient(&status(
            tonic::Code::ResourceExhausted,
            "h2 protocol error: too_many_data_frames"
        )));
        assert!(is_transient(&status(tonic::Code::Unavailable, "x")));
        assert!(is_transient(&status(
            tonic::Code::Unknown,
            "transport error: connection reset by peer"
        )));
        assert!(!is_transient(&status(tonic::Code::Unknown, "bad thing")));
        assert!(!is_transient(&status(
            tonic::Code::NotFound,
            "etcdserver: requested lease not found"
        )));
        assert!(is_lease_not_found(&status(
            tonic::Code::NotFound,
            "etcdserver: requested lease not found"
        )));
    }
}
