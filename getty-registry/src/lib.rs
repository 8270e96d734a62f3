//! Service registry for getty-rs: publish endpoints and discover them.
//!
//! A provider [`register`](Registry::register)s a [`ServiceInstance`] and keeps the returned
//! [`Registration`] alive; a consumer [`discover`](Registry::discover)s or
//! [`watch`](Registry::watch)es a [`Query`], or keeps a live [`Directory`] and picks an instance
//! per call with a [`balance::Balancer`]. The crate is standalone (no RPC dependency).
//!
//! A [`Query`] names one service ([`Query::new`]) or every service ([`Query::all`]), optionally
//! narrowed to a group and a version. Every backend accepts both, with the same guarantees.
//!
//! # Backends, selected by URL ([`connect`])
//!
//! | URL | backend | cargo feature |
//! |---|---|---|
//! | `memory://` or `memory://NAME` | in-process store shared by every `memory://NAME` registry of the process (no server) | — (default) |
//! | `static://host:port[,host:port…]?service=NAME[&version=V][&group=G][&transport=tcp\|tls\|ws\|wss][&codec=a,b][&weight=N]` | fixed list of `host:port` entries (a URL has no syntax for a Unix socket path); **`register` fails with [`Error::Unsupported`]** (read-only) | — (default) |
//! | `etcd://[user:password@]host:port[,host:port…][/root][?ttl=SECS]` | etcd v3, keys under the client's lease (TTL default 10 s) | `etcd` |
//! | `etcds://[user:password@]host:port[,…][/root]?ca=PEM[&cert=PEM&key=PEM][&server_name=NAME][&ttl=SECS]` | etcd v3 over TLS (CA, optional client certificate, name to verify) | `etcd` |
//! | `zookeeper://[user:password@]host:port[,host:port…][/root][?ttl=SECS]` (also `zk://`) | ZooKeeper, ephemeral nodes (session timeout = `ttl`, default 10 s); with a user, digest auth and creator-only-write ACLs | `zookeeper` |
//!
//! URLs are parsed with the `url` crate; every malformed part or parameter is an
//! [`Error::InvalidUrl`] (durations must be above 0 and at most [`MAX_SECONDS`]). Percent-encode
//! `@`, `:` and `/` in a user name or password. A password is never shown: the URL in errors and
//! `Debug` output has it replaced by `***` ([`redact_url`]), and [`Secret`] hides it elsewhere.
//! In code, [`etcd::EtcdOptions`] (with [`etcd::EtcdTls`]) and [`zk::ZkOptions`] take the same
//! settings (feature-gated modules).
//!
//! The root defaults to `/getty`. A URL naming a backend whose feature is off yields
//! [`Error::FeatureDisabled`]. etcd also accepts `timeout=SECS` (per-request timeout, default 5 s);
//! ZooKeeper accepts `timeout=SECS` too (how long a call waits for a session, default 10 s).
//!
//! # Storage layout (etcd and ZooKeeper)
//!
//! Each path component is escaped with [`escape_component`]: bytes outside `[A-Za-z0-9._-]` become
//! `%XX`, the empty string becomes `~`, and `.`/`..` become `%2E`/`%2E%2E`. With
//! `S`, `G`, `V`, `ID` the escaped service, group, version and instance id:
//!
//! * **etcd:** key `{root}/S/G/V/ID`, value = the instance as JSON, attached to the lease of
//!   the registry client (one lease per client, shared by all its registrations).
//! * **ZooKeeper:** container (empty) parent nodes `{root}/S/G/V` (removed by the server once
//!   empty), and an **ephemeral** child node `ID` whose data is the instance as JSON.
//!
//! A query reads (and a watch follows) the smallest subtree holding its instances:
//!
//! | query | etcd key prefix | ZooKeeper base node (instances *n* levels below) |
//! |---|---|---|
//! | `Query::all()` (every service) | `{root}/` | `{root}` (4: `S/G/V/ID`) |
//! | `Query::new(s)` | `{root}/S/` | `{root}/S` (3) |
//! | `…with_group(g)` | `{root}/S/G/` | `{root}/S/G` (2) |
//! | `…with_group(g).with_version(v)` | `{root}/S/G/V/` | `{root}/S/G/V` (1) |
//!
//! A version without a group (or a group or version without a service) filters the instances
//! read but cannot narrow the subtree. Only keys / nodes exactly at the depth of `{root}/S/G/V/ID`
//! are read as instances (so another registry rooted *below* this root is not mixed in); values
//! there that are not instances are skipped with a warning.
//!
//! JSON example (`serde_json` of [`ServiceInstance`]):
//! `{"service":"Echo","version":"v1","group":"bj","codecs":["json"],"transport":"tcp","address":"10.0.0.1:8000","weight":100,"metadata":{},"instance_id":"node-1"}`
//! (`transport` is `tcp`, `tls`, `ws`, `wss` or `unix`, whose `address` is the absolute socket
//! path; `unix:///path` is normalised to that).
//!
//! # Guarantees (and the Go getty defects they avoid)
//!
//! * **Registrations heal themselves.** etcd: one lease per registry client, kept alive by one
//!   stream (every TTL/3); the client's keys are watched, so a key deleted behind its back is put
//!   back at once, and when the lease is lost (expired, revoked, etcd restarted with another data
//!   dir) a new lease is granted and every key put again (one transaction per 128 keys),
//!   retrying with back-off (100 ms doubling to 5 s) until deregistered. ZooKeeper: after the
//!   session expires a new session is opened and the ephemeral node re-created; a node deleted
//!   behind our back, or still owned by our previous (expiring) session, is replaced.
//! * **Explicit and on-drop deregistration.** [`Registration::deregister`] removes the instance
//!   now; dropping the handle removes it in the background (best effort), and a crashed process
//!   disappears when its lease TTL / session timeout runs out. A deregistration only removes the
//!   key if it still belongs to this registration (same lease / same session).
//!   [`Registration::deregister_all`] removes many at once (etcd: one lease revoke when they are
//!   all of a client's registrations).
//! * **Re-registering an instance** (same service, group, version and `instance_id`) through the
//!   same registry client replaces it (watchers see `Updated`); the older [`Registration`] then
//!   stops maintaining the entry and its deregistration leaves the newer one alone. Two processes
//!   must not use the same `instance_id`.
//! * **Watches lose nothing** (for one service or for all of them). The first event is a full
//!   [`Event::Snapshot`]; etcd watches start at the snapshot's revision + 1 and resume after
//!   errors from the last seen revision (after a compaction or a data loss they re-list and emit
//!   the differences); ZooKeeper arms a persistent recursive watch *before* listing, re-reads each
//!   changed node, and re-lists and diffs after a reconnect or a new session. Every event batch
//!   is de-duplicated against the last view, so `Added`/`Updated`/`Removed` are exact (no
//!   duplicates like Go getty's "append on update").
//! * **Outages never empty a consumer's view.** See [`Directory`].
//! * **Multiple addresses:** clients retry until one server answers (etcd: a request that hits a
//!   dead endpoint is retried within the request timeout; ZooKeeper: the session keeps cycling
//!   through the addresses).
//!
//! # Metrics
//!
//! With the `metrics` feature every backend counts its registrations, deregistrations,
//! self-healing re-registrations, delivered watch events and failed operations through the
//! `metrics` facade (names and labels in [`metrics`]).
//!
//! # Integration tests
//!
//! The workspace-root tests `registry_memory` (no server), `registry_etcd` and `registry_zk` (real
//! servers, never mocks), `registry_secure` (etcd with TLS and auth) and `registry_cluster` (a
//! 3-member etcd cluster and a 3-server ZooKeeper ensemble losing their leader and their quorum)
//! run with:
//!
//! ```text
//! bash scripts/servers.sh up      # installs etcd, ZooKeeper, a JRE, openssl and protoc if
//!                                 # missing; starts etcd on 127.0.0.1:23790, ZooKeeper on
//!                                 # 127.0.0.1:21810, the secured etcd, the etcd cluster and the
//!                                 # ZooKeeper ensemble (ports in the script's header)
//! cargo test -p getty --features etcd,zookeeper --test registry_memory --test registry_etcd \
//!     --test registry_zk --test registry_secure --test registry_cluster
//! bash scripts/servers.sh down
//! ```
//!
//! `registry_metrics` (feature `metrics` of `getty`, with `etcd` and `zookeeper`) checks the
//! counters' exact values over a Prometheus scrape, on every backend.
//!
//! `bench`'s `getty-registry-scale` measures 10,000 registrations of one process on each backend
//! (results in `bench/results/registry-scale.txt`).
//!
//! `GETTY_ETCD` / `GETTY_ZK` point the tests at other servers; an unreachable server fails the
//! tests with a hint to run `scripts/servers.sh up`. The disruptive tests restart, stop and wipe
//! the script's servers, serialized against the other tests of the same binary by a lock; test
//! binaries must therefore not run concurrently (plain `cargo test` runs them one after another).
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use getty_registry::{connect, Query, ServiceInstance, Event};
//!
//! let registry = connect("memory://doc-example").await?;
//! let mut watch = registry.watch(&Query::new("Echo")).await?;
//! assert_eq!(watch.next().await, Some(Event::Snapshot(vec![])));
//!
//! let reg = registry.register(ServiceInstance::new("Echo", "127.0.0.1:8000").with_version("v1")).await?;
//! assert!(matches!(watch.next().await, Some(Event::Added(_))));
//! assert_eq!(registry.discover(&Query::new("Echo").with_version("v1")).await?.len(), 1);
//!
//! reg.deregister().await?;
//! assert!(matches!(watch.next().await, Some(Event::Removed(_))));
//!
//! // Every service at once: `Query::all()` (sorted by service, group, version, instance id).
//! let _a = registry.register(ServiceInstance::new("Echo", "127.0.0.1:8000")).await?;
//! let _b = registry.register(ServiceInstance::new("Math", "127.0.0.1:8001")).await?;
//! let services: Vec<_> = registry.discover(&Query::all()).await?.into_iter().map(|i| i.service).collect();
//! assert_eq!(services, ["Echo", "Math"]);
//! # Ok::<(), getty_registry::Error>(()) }).unwrap();
//! ```

#![warn(missing_docs)]

pub mod balance;
mod directory;
mod error;
pub mod memory;
pub mod metrics;
mod model;
mod registry;
mod secret;
pub mod static_list;
mod url;

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "zookeeper")]
pub mod zk;

use std::sync::Arc;

pub use balance::{Balancer, LoadBalancer, Strategy};
pub use directory::{Directory, Snapshot};
pub use error::{Error, Result};
pub use model::{
    DEFAULT_WEIGHT, Event, Query, ServiceInstance, Transport, escape_component,
    generate_instance_id, unescape_component,
};
pub use registry::{BoxFuture, Registration, Registry, Watch};
pub use secret::{Credentials, Secret};
pub use url::{MAX_SECONDS, RegistryUrl, redact_url};

/// Default root path of the etcd and ZooKeeper backends.
pub const DEFAULT_ROOT: &str = "/getty";

/// Default lease TTL (etcd) and session timeout (ZooKeeper).
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the registry named by `url` (see the [crate docs](crate) for the URL forms).
///
/// For etcd and ZooKeeper this does not wait for the server: the first call that needs it does
/// (and fails with [`Error::Unavailable`] when it cannot be reached in time). Must be called inside
/// a Tokio runtime for the etcd and ZooKeeper backends.
pub async fn connect(url: &str) -> Result<Arc<dyn Registry>> {
    let parsed = RegistryUrl::parse(url)?;
    match parsed.scheme.as_str() {
        "memory" => {
            parsed.only_params(&[])?;
            parsed.no_credentials()?;
            if !parsed.path.is_empty() || parsed.hosts.len() > 1 {
                return Err(parsed.error("use memory:// or memory://NAME"));
            }
            let name = parsed.hosts.first().map(String::as_str).unwrap_or("");
            Ok(Arc::new(memory::MemoryRegistry::named(name)))
        }
        "static" => {
            parsed.no_credentials()?;
            Ok(Arc::new(static_list::StaticRegistry::from_url(&parsed)?))
        }
        "etcd" | "etcds" => {
            #[cfg(feature = "etcd")]
            {
                Ok(Arc::new(etcd::EtcdRegistry::from_url(&parsed).await?))
            }
            #[cfg(not(feature = "etcd"))]
            {
                Err(Error::FeatureDisabled("etcd"))
            }
        }
        "zookeeper" | "zk" => {
            #[cfg(feature = "zookeeper")]
            {
                Ok(Arc::new(zk::ZkRegistry::from_url(&parsed)?))
            }
            #[cfg(not(feature = "zookeeper"))]
            {
                Err(Error::FeatureDisabled("zookeeper"))
            }
        }
        other => Err(parsed.error(format!(
            "unknown scheme {other:?} (memory, static, etcd, zookeeper)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_by_url() {
        assert_eq!(connect("memory://").await.unwrap().kind(), "memory");
        assert_eq!(connect("memory://ns1").await.unwrap().kind(), "memory");
        assert_eq!(
            connect("static://a:1?service=s").await.unwrap().kind(),
            "static"
        );
        assert!(matches!(
            connect("bogus://x").await,
            Err(Error::InvalidUrl { .. })
        ));
        assert!(connect("memory://a/b").await.is_err());
        #[cfg(not(feature = "etcd"))]
        assert!(matches!(
            connect("etcd://127.0.0.1:1/x").await,
            Err(Error::FeatureDisabled("etcd"))
        ));
        #[cfg(not(feature = "zookeeper"))]
        assert!(matches!(
            connect("zookeeper://127.0.0.1:1/x").await,
            Err(Error::FeatureDisabled("zookeeper"))
        ));
    }

    /// Out-of-range durations were handed to `Duration::from_secs_f64`, which panicked.
    #[tokio::test]
    async fn bad_parameters_are_invalid_url_errors_not_panics() {
        #[cfg_attr(not(any(feature = "etcd", feature = "zookeeper")), allow(unused_mut))]
        let mut urls = vec![
            "memory://a?x=1",
            "memory://u:p@a",
            "static://u:pw@a:1?service=s",
        ];
        #[cfg(feature = "etcd")]
        urls.extend([
            "etcd://127.0.0.1:1/x?ttl=1e20",
            "etcd://127.0.0.1:1/x?timeout=1e20",
            "etcd://127.0.0.1:1/x?ttl=-0",
            "etcd://127.0.0.1:99999/x",
            "etcd://127.0.0.1:1/x?ca=/tmp/ca.pem",
            "etcds://127.0.0.1:1/x",
            "etcds://127.0.0.1:1/x?ca=/nonexistent/ca.pem",
            "etcds://127.0.0.1:1/x?ca=/nonexistent/ca.pem&cert=/nonexistent/c.pem",
            "etcds://u:pw@127.0.0.1:1/x?ca=/nonexistent/ca.pem",
        ]);
        #[cfg(feature = "zookeeper")]
        urls.extend([
            "zookeeper://127.0.0.1:1/x?ttl=1e20",
            "zk://127.0.0.1:1/x?timeout=1e20",
        ]);
        for url in urls {
            let r = connect(url).await;
            assert!(matches!(r, Err(Error::InvalidUrl { .. })), "{url}: {r:?}");
            let shown = r.unwrap_err().to_string();
            assert!(!shown.contains(":pw@") && !shown.contains(":p@"), "{shown}");
        }
    }

    #[tokio::test]
    async fn memory_namespaces_are_shared_by_name() {
        let a = connect("memory://shared-ns-test").await.unwrap();
        let b = connect("memory://shared-ns-test").await.unwrap();
        let c = connect("memory://other-ns-test").await.unwrap();
        let _r = a
            .register(ServiceInstance::new("svc", "h:1"))
            .await
            .unwrap();
        assert_eq!(b.discover(&Query::new("svc")).await.unwrap().len(), 1);
        assert!(c.discover(&Query::new("svc")).await.unwrap().is_empty());
    }
}
