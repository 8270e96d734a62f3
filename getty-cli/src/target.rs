//! TARGET → a connection: a direct one (TCP, TLS, WebSocket) or, for a registry URL, a
//! `getty_rpc::Cluster` that finds the instances of the service and balances over them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use getty_core::tls::{crypto_provider, rustls};
use getty_core::{ClientBuilder, TlsClientConfig};
use getty_registry::{Query, Registry};
use getty_rpc::{
    CallOptions, Cluster, ClusterOptions, CodecId, Peer, Router, RpcClient, RpcError, RpcOptions,
    Status,
};

use crate::{Failure, Result};

/// How to reach a peer: shared by `call`, `describe` and `ping`.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Time allowed for each step: reaching the registry, connecting, the call itself
    /// (e.g. 5s, 500ms, 1m)
    #[arg(short = 't', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Use TLS to a host:port target (the same as tls://host:port)
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) that the server's certificate must chain to [default: the
    /// system's CA bundle]
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for mutual TLS
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM), for mutual TLS
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name the server's certificate must be valid for [default: the target's host]
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    #[command(flatten)]
    pub filter: Filter,
}

/// Narrows a registry query.
#[derive(Args, Debug, Clone, Default)]
pub struct Filter {
    /// Registry targets: only instances of this group
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Registry targets: only instances of this service version
    #[arg(long, value_name = "VERSION")]
    pub service_version: Option<String>,
}

impl Filter {
    /// The query for `service`, or for every service with `None`.
    pub fn query(&self, service: Option<&str>) -> Query {
        let mut q = service.map_or_else(Query::all, Query::new);
        q.group = self.group.clone();
        q.version = self.service_version.clone();
        q
    }
}

/// A registry and, optionally, a service in it: shared by `list` and `watch`.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// etcd://host:port[/root], zookeeper://host:port[/root], static://…?service=S, memory://
    #[arg(value_name = "REGISTRY_URL")]
    pub url: String,
    /// Only this service [default: every service of the registry]
    #[arg(value_name = "SERVICE")]
    pub service: Option<String>,
    /// Time allowed for reaching the registry (e.g. 5s, 500ms)
    #[arg(short = 't', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub filter: Filter,
}

impl RegistryArgs {
    /// What to look at: the SERVICE, or every service without one (narrowed by the filter).
    pub fn query(&self) -> Result<Query> {
        if self.service.as_deref() == Some("") {
            return Err(Failure::usage(
                "SERVICE must not be empty (leave it out for every service)",
            ));
        }
        Ok(self.filter.query(self.service.as_deref()))
    }

    /// The service for messages: its name, or `every service`.
    pub fn what(&self) -> &str {
        self.service.as_deref().unwrap_or("every service")
    }
}

/// `5s`, `500ms`, `1.5s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 5s, 500ms, 1m)");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{s:?}: must be more than zero")),
        Err(_) => Err(bad()),
    }
}

/// How a direct target is dialled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
    /// A Unix domain socket; `addr` is its path.
    Unix,
}

/// A parsed TARGET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `addr` is `host:port` (TCP, TLS), the whole URL (WebSocket) or a path (Unix).
    Direct { transport: Transport, addr: String },
    /// A registry URL for `getty_registry::connect`.
    Registry(String),
}

pub const TARGET_HELP: &str = "host:port, tls://host:port, ws://host:port/path, wss://host:port/path, unix:///path, or a registry URL (etcd://…, zookeeper://…, static://…, memory://)";

fn host_port(addr: &str, target: &str) -> Result<String> {
    let addr = addr.trim_end_matches('/');
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(addr.to_string())
        }
        _ => Err(Failure::usage(format!(
            "bad target {target:?}: expected {TARGET_HELP}"
        ))),
    }
}

impl Target {
    pub fn parse(s: &str, tls: bool) -> Result<Target> {
        let target = match s.split_once("://") {
            None => Target::Direct {
                transport: if tls { Transport::Tls } else { Transport::Tcp },
                addr: host_port(s, s)?,
            },
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "tcp" if tls => Target::Direct {
                    transport: Transport::Tls,
                    addr: host_port(rest, s)?,
                },
                "tcp" => Target::Direct {
                    transport: Transport::Tcp,
                    addr: host_port(rest, s)?,
                },
                "tls" => Target::Direct {
                    transport: Transport::Tls,
                    addr: host_port(rest, s)?,
                },
                "ws" | "wss" if tls => {
                    return Err(Failure::usage(
                        "--tls goes with host:port; use wss:// for WebSocket over TLS",
                    ));
                }
                "ws" => Target::Direct {
                    transport: Transport::Ws,
                    addr: s.to_string(),
                },
                "wss" => Target::Direct {
                    transport: Transport::Wss,
                    addr: s.to_string(),
                },
                "unix" if tls => {
                    return Err(Failure::usage(
                        "--tls goes with host:port, not a Unix socket",
                    ));
                }
                "unix" if rest.starts_with('/') && rest.len() > 1 => Target::Direct {
                    transport: Transport::Unix,
                    addr: rest.to_string(),
                },
                "unix" => {
                    return Err(Failure::usage(format!(
                        "bad target {s:?}: a Unix socket is unix:///absolute/path"
                    )));
                }
                "etcd" | "zookeeper" | "zk" | "memory" | "static" => {
                    Target::Registry(s.to_string())
                }
                other => {
                    return Err(Failure::usage(format!(
                        "bad target {s:?}: unknown scheme {other:?}; expected {TARGET_HELP}"
                    )));
                }
            },
        };
        Ok(target)
    }
}

/// The system's CA bundle, for TLS without `--ca`.
fn system_roots() -> Option<rustls::RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        );
    for path in candidates {
        let Ok(pem) = std::fs::read(&path) else {
            continue;
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(|c| c.ok()));
        if !roots.is_empty() {
            return Some(roots);
        }
    }
    None
}

/// The TLS settings from the flags: `Ok(None)` when no CA is given and the system has none
/// (an error instead when TLS is `required`).
pub fn tls_config(a: &ConnArgs, required: bool) -> Result<Option<TlsClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let auth = a.cert.as_deref().zip(a.key.as_deref());
    let config = match &a.ca {
        Some(ca) => TlsClientConfig::from_pem_files(ca, auth).map_err(Failure::connect)?,
        None => {
            let Some(roots) = system_roots() else {
                return if required {
                    Err(Failure::connect(
                        "TLS: no system CA bundle found; pass --ca FILE",
                    ))
                } else {
                    Ok(None)
                };
            };
            let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| Failure::connect(format!("TLS: {e}")))?
                .with_root_certificates(roots);
            let config = match auth {
                None => builder.with_no_client_auth(),
                Some((cert, key)) => {
                    let chain = CertificateDer::pem_file_iter(cert)
                        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| Failure::connect(format!("TLS: {}: {e}", cert.display())))?;
                    let key = PrivateKeyDer::from_pem_file(key)
                        .map_err(|e| Failure::connect(format!("TLS: {}: {e}", key.display())))?;
                    builder.with_client_auth_cert(chain, key).map_err(|e| {
                        Failure::connect(format!("TLS: client certificate and key: {e}"))
                    })?
                }
            };
            TlsClientConfig::from_rustls(Arc::new(config))
        }
    };
    Ok(Some(match &a.server_name {
        Some(name) => config.with_server_name(name),
        None => config,
    }))
}

/// One-line reasons for registry failures; bad URLs are usage errors.
pub fn registry_error(url: &str, e: getty_registry::Error) -> Failure {
    use getty_registry::Error as E;
    match e {
        E::InvalidUrl { .. } | E::FeatureDisabled(_) | E::InvalidQuery(_) | E::Unsupported(_) => {
            Failure::usage(e)
        }
        other => Failure::connect(format!(
            "registry {}: {other}",
            getty_registry::redact_url(url)
        )),
    }
}

/// Opens the registry named by `url` and runs `op` on it, all within `timeout`.
pub async fn with_registry<T, F>(url: &str, timeout: Duration, op: F) -> Result<T>
where
    F: AsyncFnOnce(Arc<dyn Registry>) -> getty_registry::Result<T>,
{
    let work = async {
        let reg = getty_registry::connect(url).await?;
        op(reg).await
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map_err(|e| registry_error(url, e)),
        Err(_) => Err(Failure::connect(format!(
            "registry {} did not answer within {timeout:?}",
            getty_registry::redact_url(url)
        ))),
    }
}

fn rpc_options(timeout: Duration) -> RpcOptions {
    RpcOptions::default()
        .default_timeout(timeout)
        // This end serves nothing.
        .reflection(false)
}

/// `cannot connect to HOST:PORT: REASON`, without the repetitions of the error chain.
fn connect_failure(e: getty_core::Error) -> Failure {
    match e {
        getty_core::Error::ReconnectExhausted { addr, last, .. } => {
            let reason = last
                .strip_prefix(&format!("connect {addr}: "))
                .unwrap_or(&last);
            Failure::connect(format!("cannot connect to {addr}: {reason}"))
        }
        other => Failure::connect(format!("cannot connect: {other}")),
    }
}

enum Via {
    Direct(RpcClient),
    Cluster(Cluster),
}

/// An open connection to the target (or to the instances of a service).
pub struct Conn {
    via: Via,
    /// The target as given, for messages.
    pub target: String,
}

impl Conn {
    /// Connects to `target`; `service` picks the instances when the target is a registry.
    pub async fn open(target: &str, service: Option<&str>, a: &ConnArgs) -> Result<Conn> {
        let via = match Target::parse(target, a.tls)? {
            Target::Direct { transport, addr } => Via::Direct(direct(transport, addr, a).await?),
            Target::Registry(url) => {
                let Some(service) = service else {
                    return Err(Failure::usage(
                        "a registry target needs a service: pass --service NAME",
                    ));
                };
                Via::Cluster(cluster(&url, service, a).await?)
            }
        };
        Ok(Conn {
            via,
            target: target.to_string(),
        })
    }

    /// A connected peer (with a registry target: one instance, chosen by the balancer) and a
    /// name for it.
    pub fn peer(&self) -> Result<(Peer, String)> {
        let closed = |e: RpcError| Failure::connect(format!("{}: {}", self.target, e.message));
        match &self.via {
            Via::Direct(c) => c.peer().map(|p| (p, self.target.clone())).map_err(closed),
            Via::Cluster(c) => c
                .pick(None, &[])
                .map(|(inst, p)| (p, format!("{} ({})", inst.address, inst.instance_id)))
                .ok_or_else(|| {
                    Failure::connect(format!("{}: no instance is connected", self.target))
                }),
        }
    }

    /// One two-way call with a raw JSON body.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        body: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, RpcError> {
        match &self.via {
            Via::Direct(c) => {
                c.peer()?
                    .call_raw(service, method, CodecId::Json, body, opts)
                    .await
            }
            Via::Cluster(c) => {
                c.call_raw(None, service, method, CodecId::Json, body, opts)
                    .await
            }
        }
    }

    pub async fn close(self) {
        match self.via {
            Via::Direct(c) => c.close().await,
            Via::Cluster(c) => c.close().await,
        }
    }
}

/// The failure of a call: the connection's kind of failure, or the peer's answer (whatever
/// its status: a peer that sends `CONNECTION_CLOSED` still answered).
pub fn call_failure(e: RpcError) -> Failure {
    if e.status == Status::ConnectionClosed && !e.is_from_peer() {
        Failure::connect(e)
    } else {
        Failure::call(e)
    }
}

async fn direct(transport: Transport, addr: String, a: &ConnArgs) -> Result<RpcClient> {
    let builder = ClientBuilder::new(addr)
        .reconnect_attempts(1)
        .connect_timeout(a.timeout);
    let opts = rpc_options(a.timeout);
    let started = match transport {
        Transport::Tcp => RpcClient::start(Router::new(), opts, |cb| builder.connect_tcp(cb)),
        Transport::Ws => RpcClient::start(Router::new(), opts, |cb| builder.connect_ws(cb)),
        Transport::Unix => RpcClient::start(Router::new(), opts, |cb| builder.connect_unix(cb)),
        Transport::Tls | Transport::Wss => {
            let tls = tls_config(a, true)?.ok_or_else(|| Failure::connect("TLS: no CA"))?;
            RpcClient::start(Router::new(), opts, |cb| {
                if transport == Transport::Tls {
                    builder.connect_tls(tls, cb)
                } else {
                    builder.connect_wss(tls, cb)
                }
            })
        }
    };
    let client = started.map_err(|e| match e {
        getty_core::Error::Tls(_) => Failure::connect(e),
        other => Failure::usage(other),
    })?;
    client.ready().await.map_err(connect_failure)?;
    Ok(client)
}

async fn cluster(url: &str, service: &str, a: &ConnArgs) -> Result<Cluster> {
    let query = a.filter.query(Some(service));
    let q = query.clone();
    let (registry, found) = with_registry(url, a.timeout, async move |reg| {
        let found = reg.discover(&q).await?;
        Ok((reg, found))
    })
    .await?;
    if found.is_empty() {
        return Err(Failure::connect(format!(
            "no instance of {service} is registered in {}",
            getty_registry::redact_url(url)
        )));
    }
    let mut opts = ClusterOptions::default().rpc(rpc_options(a.timeout));
    opts.tls = tls_config(a, false)?;
    let cluster = Cluster::new(registry, query, Router::new(), opts);
    if !cluster.wait_connected(1, a.timeout).await {
        let addrs: Vec<_> = found.iter().map(|i| i.address.as_str()).collect();
        return Err(Failure::connect(format!(
            "could not connect to any instance of {service} within {:?} (tried {})",
            a.timeout,
            addrs.join(", ")
        )));
    }
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn targets() {
        let d = |t, a: &str| Target::Direct {
            transport: t,
            addr: a.to_string(),
        };
        assert_eq!(
            Target::parse("127.0.0.1:7200", false).unwrap(),
            d(Transport::Tcp, "127.0.0.1:7200")
        );
        assert_eq!(
            Target::parse("localhost:1", true).unwrap(),
            d(Transport::Tls, "localhost:1")
        );
        assert_eq!(
            Target::parse("tls://h:9/", false).unwrap(),
            d(Transport::Tls, "h:9")
        );
        assert_eq!(
            Target::parse("ws://h:9/rpc", false).unwrap(),
            d(Transport::Ws, "ws://h:9/rpc")
        );
        assert_eq!(
            Target::parse("etcd://h:2379/root", false).unwrap(),
            Target::Registry("etcd://h:2379/root".into())
        );
        assert_eq!(
            Target::parse("unix:///run/getty.sock", false).unwrap(),
            d(Transport::Unix, "/run/getty.sock")
        );
        assert!(Target::parse("unix:///run/getty.sock", true).is_err());
        for bad in [
            "h",
            "h:port",
            ":80",
            "ftp://h:1",
            "tls://h",
            "unix://",
            "unix://rel.sock",
        ] {
            assert_eq!(Target::parse(bad, false).unwrap_err().code, 2, "{bad}");
        }
        assert!(Target::parse("ws://h:1/", true).is_err());
    }
}
