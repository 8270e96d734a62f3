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
use crate::model::{Query, ServiceInstance};
use crate::registry::{BoxFuture, Registration, Registry, Watch};
use crate::url::RegistryUrl;

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive ping interval: at least etcd's default minimum (5 s), with a margin.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long an unanswered HTTP/2 ping may stay unanswered before the connection is dropped.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| classify("connect", e))?;
        let inner = Arc::new(Inner {
            client,
            endpoints,
            root: root.trim_end_matches('/').to_string(),
            ttl: ttl.max(Duration::from_secs(1)),
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
        Box::pin(async move {
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
        Box::pin(watch::start(self.inner.clone(), query))
    }

    fn kind(&self) -> &'static str {
        "etcd"
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
