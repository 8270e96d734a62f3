//! Data model: [`ServiceInstance`], [`Transport`], [`Query`], [`Event`] and path escaping.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default [`ServiceInstance::weight`].
pub const DEFAULT_WEIGHT: u32 = 100;

/// How a client reaches an instance.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain TCP (`address` is `host:port`).
    #[default]
    Tcp,
    /// TLS over TCP (`address` is `host:port`).
    Tls,
    /// WebSocket (`address` is `host:port` or a `ws://` URL).
    Ws,
    /// WebSocket over TLS (`address` is `host:port` or a `wss://` URL).
    Wss,
    /// A Unix domain socket, for consumers on the same machine (`address` is the absolute
    /// socket path). An address `unix:///path` given with the default transport is
    /// normalised to this transport and the bare path (see [`ServiceInstance::normalize`]).
    /// Readers older than this variant skip such records (an unknown transport) instead of
    /// dialling a path as `host:port`.
    Unix,
}

impl Transport {
    /// Lower-case name as stored in JSON (`tcp`, `tls`, `ws`, `wss`, `unix`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
            Transport::Unix => "unix",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            "ws" => Ok(Transport::Ws),
            "wss" => Ok(Transport::Wss),
            "unix" => Ok(Transport::Unix),
            other => Err(Error::InvalidInstance(format!(
                "unknown transport {other:?}"
            ))),
        }
    }
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// One published endpoint of a service. Stored as JSON by the etcd and ZooKeeper backends.
///
/// `service` and `address` are required; `group` and `version` may be empty. `instance_id` must be
/// unique within `(service, group, version)`; [`Registry::register`](crate::Registry::register)
/// generates a random one when it is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// Service name, e.g. `"EchoService"`.
    pub service: String,
    /// Service version, e.g. `"v1"`; may be empty.
    #[serde(default)]
    pub version: String,
    /// Group (e.g. a data-centre or tenant); may be empty.
    #[serde(default)]
    pub group: String,
    /// Codecs the instance accepts, e.g. `["json", "protobuf"]`.
    #[serde(default)]
    pub codecs: Vec<String>,
    /// Transport to reach `address` with.
    #[serde(default)]
    pub transport: Transport,
    /// `host:port` or a URL; for [`Transport::Unix`] the absolute socket path.
    pub address: String,
    /// Relative weight for weighted balancing (default [`DEFAULT_WEIGHT`]; 0 = never picked by
    /// the weighted balancer unless all weights are 0).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Unique id of this instance (generated on register when empty).
    #[serde(default)]
    pub instance_id: String,
}

impl ServiceInstance {
    /// A TCP instance of `service` at `address` with default weight and no group/version.
    pub fn new(service: impl Into<String>, address: impl Into<String>) -> Self {
        ServiceInstance {
            service: service.into(),
            version: String::new(),
            group: String::new(),
            codecs: Vec::new(),
            transport: Transport::Tcp,
            address: address.into(),
            weight: DEFAULT_WEIGHT,
            metadata: BTreeMap::new(),
            instance_id: String::new(),
        }
    }

    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Adds a codec name.
    pub fn with_codec(mut self, codec: impl Into<String>) -> Self {
        self.codecs.push(codec.into());
        self
    }

    /// Sets the transport.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the instance id.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = id.into();
        self
    }

    /// Checks required fields, puts a Unix socket address in its one form (see
    /// [`Transport::Unix`]) and fills in a random `instance_id` when it is empty.
    pub fn normalize(mut self) -> Result<Self> {
        if self.service.is_empty() {
            return Err(Error::InvalidInstance("service must not be empty".into()));
        }
        if self.address.is_empty() {
            return Err(Error::InvalidInstance("address must not be empty".into()));
        }
        self.canonical_address()?;
        if self.instance_id.is_empty() {
            self.instance_id = generate_instance_id();
        }
        Ok(self)
    }

    /// The escaped relative path `{service}/{group}/{version}/{instance_id}` used as the key of
    /// this instance in every backend (below the backend's root).
    pub fn path_key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            escape_component(&self.service),
            escape_component(&self.group),
            escape_component(&self.version),
            escape_component(&self.instance_id)
        )
    }

    /// JSON encoding as stored in the backends.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Decodes the JSON stored in a backend. A record written by another tool with a
    /// `unix://` address is read in the normalised form, as if registered here.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let mut i: ServiceInstance = serde_json::from_slice(bytes)?;
        i.canonical_address()?;
        Ok(i)
    }

    /// A `unix://PATH` address becomes [`Transport::Unix`] and `PATH`, so that consumers see one
    /// form; a Unix socket address must be an absolute path (a relative one would depend on
    /// each consumer's working directory).
    fn canonical_address(&mut self) -> Result<()> {
        let scheme = "unix://";
        if self
            .address
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        {
            if !matches!(self.transport, Transport::Tcp | Transport::Unix) {
                return Err(Error::InvalidInstance(format!(
                    "address {:?} is a Unix socket but the transport is {}",
                    self.address, self.transport
                )));
            }
            self.transport = Transport::Unix;
            self.address = self.address[scheme.len()..].to_string();
        }
        if self.transport == Transport::Unix
            && (!self.address.starts_with('/') || self.address.contains('\0'))
        {
            return Err(Error::InvalidInstance(format!(
                "a Unix socket address is an absolute path (or unix:///path), not {:?}",
                self.address
            )));
        }
        Ok(())
    }
}

/// A random 32-hex-digit id.
pub fn generate_instance_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Which instances a consumer wants: one service ([`Query::new`]) or every service
/// ([`Query::all`]), optionally narrowed to a group and a version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Query {
    /// Only this service (`None` = every service, see [`Query::all`]). `Some("")` is invalid.
    pub service: Option<String>,
    /// Only this version (`None` = any version).
    pub version: Option<String>,
    /// Only this group (`None` = any group).
    pub group: Option<String>,
}

impl Query {
    /// All instances of `service` (which must not be empty).
    pub fn new(service: impl Into<String>) -> Self {
        Query {
            service: Some(service.into()),
            version: None,
            group: None,
        }
    }

    /// All instances of every service (the whole registry, below the backend's root). Can be
    /// narrowed with [`Query::with_group`] / [`Query::with_version`] like any query, but the
    /// backends then still read the whole tree and filter.
    pub fn all() -> Self {
        Query::default()
    }

    /// Narrows to one version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Narrows to one group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The service this query is restricted to (`None` for every service).
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// Whether this query selects every service.
    pub fn is_all_services(&self) -> bool {
        self.service.is_none()
    }

    /// Whether `instance` is selected by this query.
    pub fn matches(&self, instance: &ServiceInstance) -> bool {
        self.service.as_ref().is_none_or(|s| *s == instance.service)
            && self.version.as_ref().is_none_or(|v| *v == instance.version)
            && self.group.as_ref().is_none_or(|g| *g == instance.group)
    }

    /// The escaped relative prefix (no leading or trailing `/`) that contains every matching
    /// instance: `""` (every service), `{service}`, `{service}/{group}` or
    /// `{service}/{group}/{version}`. Only the leading components given narrow the prefix: a
    /// version without a group, or a group without a service, cannot (the service comes first,
    /// then the group).
    pub fn path_prefix(&self) -> String {
        let Some(service) = &self.service else {
            return String::new();
        };
        let mut p = escape_component(service);
        if let Some(g) = &self.group {
            p.push('/');
            p.push_str(&escape_component(g));
            if let Some(v) = &self.version {
                p.push('/');
                p.push_str(&escape_component(v));
            }
        }
        p
    }

    /// Number of path levels from [`Self::path_prefix`] down to an instance node (1..=4; 4 for
    /// every service: `S/G/V/ID`).
    pub fn levels_below_prefix(&self) -> usize {
        match (&self.service, &self.group, &self.version) {
            (None, _, _) => 4,
            (Some(_), Some(_), Some(_)) => 1,
            (Some(_), Some(_), None) => 2,
            (Some(_), None, _) => 3,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.service.as_ref().is_some_and(String::is_empty) {
            return Err(Error::InvalidQuery(
                "service must not be empty (use Query::all() for every service)".into(),
            ));
        }
        Ok(())
    }
}

/// A change seen by a [`Watch`](crate::Watch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The complete current set of matching instances. Always the first event of a watch.
    Snapshot(Vec<ServiceInstance>),
    /// A new matching instance appeared.
    Added(ServiceInstance),
    /// A known instance changed (same key, different content).
    Updated(ServiceInstance),
    /// A known instance disappeared (the value is its last known content).
    Removed(ServiceInstance),
}

/// Escapes one path component (service, group, version or instance id) for use in an etcd key or
/// a ZooKeeper path.
///
/// Bytes outside `[A-Za-z0-9._-]` are percent-encoded (`%XX`, upper-case hex; so `/`, `%`, `:`
/// and `~` are always encoded). The empty string becomes `~`, and a component made only of dots
/// (`.`/`..`, illegal in ZooKeeper) has its dots encoded as `%2E`. The mapping is injective and
/// [`unescape_component`] inverts it.
pub fn escape_component(s: &str) -> String {
    if s.is_empty() {
        return "~".to_string();
    }
    let all_dots = s.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && !all_dots);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Inverse of [`escape_component`]; `None` if `s` is not a valid escaped component.
pub fn unescape_component(s: &str) -> Option<String> {
    if s == "~" {
        return Some(String::new());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_roundtrip() {
        for s in [
            "",
            "a",
            "EchoService",
            "v1.0",
            ".",
            "..",
            "a/b",
            "100%",
            "h:1",
            "~",
            "ünï",
            "a b",
        ] {
            let e = escape_component(s);
            assert!(!e.is_empty());
            assert!(!e.contains('/'), "{e}");
            assert_ne!(e, ".");
            assert_ne!(e, "..");
            assert_eq!(unescape_component(&e).as_deref(), Some(s), "{s:?} -> {e:?}");
        }
        assert_eq!(escape_component("a/b"), "a%2Fb");
        assert_eq!(escape_component(""), "~");
        assert_eq!(escape_component("~"), "%7E");
        assert_eq!(escape_component(".."), "%2E%2E");
        assert_eq!(escape_component("v1.0"), "v1.0");
    }

    #[test]
    fn path_key_and_prefix() {
        let i = ServiceInstance::new("Echo", "127.0.0.1:1")
            .with_group("g/1")
            .with_version("v1")
            .with_instance_id("id:1");
        assert_eq!(i.path_key(), "Echo/g%2F1/v1/id%3A1");
        let q = Query::new("Echo");
        assert_eq!(q.path_prefix(), "Echo");
        assert_eq!(q.levels_below_prefix(), 3);
        let q = Query::new("Echo").with_group("g/1");
        assert_eq!(q.path_prefix(), "Echo/g%2F1");
        let q = q.with_version("v1");
        assert_eq!(q.path_prefix(), "Echo/g%2F1/v1");
        assert!(q.matches(&i));
        assert!(!q.matches(&i.clone().with_version("v2")));
        assert!(Query::new("Echo").with_version("v1").matches(&i));
        assert!(!Query::new("Echo2").matches(&i));
    }

    #[test]
    fn query_all() {
        let i = ServiceInstance::new("Echo", "127.0.0.1:1")
            .with_group("g")
            .with_version("v1")
            .with_instance_id("a");
        let all = Query::all();
        assert!(all.is_all_services());
        assert_eq!(all.service(), None);
        assert_eq!(all.path_prefix(), "");
        assert_eq!(all.levels_below_prefix(), 4);
        assert!(all.validate().is_ok());
        assert!(all.matches(&i));
        assert!(all.matches(&ServiceInstance::new("Other", "h:1")));
        // A group or version without a service filters but cannot narrow the prefix.
        let g = Query::all().with_group("g").with_version("v1");
        assert_eq!(g.path_prefix(), "");
        assert_eq!(g.levels_below_prefix(), 4);
        assert!(g.matches(&i));
        assert!(!g.matches(&i.clone().with_group("h")));
        assert!(!Query::all().with_version("v2").matches(&i));
        assert_eq!(Query::new("Echo").service(), Some("Echo"));
        assert!(matches!(
            Query::new("").validate(),
            Err(Error::InvalidQuery(_))
        ));
    }

    #[test]
    fn json_roundtrip_and_defaults() {
        let i = ServiceInstance::new("Echo", "127.0.0.1:1")
            .with_codec("json")
            .with_transport(Transport::Wss)
            .with_metadata("k", "v")
            .normalize()
            .unwrap();
        assert_eq!(i.instance_id.len(), 32);
        let back = ServiceInstance::from_json(&i.to_json().unwrap()).unwrap();
        assert_eq!(back, i);
        let minimal = ServiceInstance::from_json(br#"{"service":"s","address":"a:1"}"#).unwrap();
        assert_eq!(minimal.weight, DEFAULT_WEIGHT);
        assert_eq!(minimal.transport, Transport::Tcp);
        assert!(ServiceInstance::new("", "a").normalize().is_err());
        assert!(ServiceInstance::new("s", "").normalize().is_err());
    }

    #[test]
    fn unix_socket_addresses() {
        // `unix:///path` with the default transport becomes Unix + the bare path.
        let i = ServiceInstance::new("s", "unix:///run/getty.sock")
            .normalize()
            .unwrap();
        assert_eq!(
            (i.transport, i.address.as_str()),
            (Transport::Unix, "/run/getty.sock")
        );
        let j = ServiceInstance::new("s", "/run/getty.sock")
            .with_transport(Transport::Unix)
            .normalize()
            .unwrap();
        assert_eq!(
            (j.transport, j.address.as_str()),
            (i.transport, "/run/getty.sock")
        );
        // Stored as `"transport":"unix"` and read back the same.
        let json = String::from_utf8(i.to_json().unwrap()).unwrap();
        assert!(json.contains(r#""transport":"unix""#), "{json}");
        assert_eq!(ServiceInstance::from_json(json.as_bytes()).unwrap(), i);
        // A record written elsewhere with a unix:// address is read normalised.
        let other = ServiceInstance::from_json(
            br#"{"service":"s","address":"UNIX:///tmp/a.sock","transport":"tcp"}"#,
        )
        .unwrap();
        assert_eq!(
            (other.transport, other.address.as_str()),
            (Transport::Unix, "/tmp/a.sock")
        );
        assert_eq!("UNIX".parse::<Transport>().unwrap(), Transport::Unix);
        assert_eq!(Transport::Unix.to_string(), "unix");
        for (transport, address) in [
            (Transport::Unix, "rel.sock"),
            (Transport::Unix, "unix://rel.sock"),
            (Transport::Unix, "unix://"),
            (Transport::Unix, "host:1"),
            (Transport::Unix, "/a\0b"),
            (Transport::Tls, "unix:///run/a.sock"),
            (Transport::Ws, "unix:///run/a.sock"),
        ] {
            let r = ServiceInstance::new("s", address)
                .with_transport(transport)
                .normalize();
            assert!(
                matches!(r, Err(Error::InvalidInstance(_))),
                "{transport} {address:?}: {r:?}"
            );
        }
        assert!(
            ServiceInstance::from_json(br#"{"service":"s","address":"x","transport":"unix"}"#)
                .is_err()
        );
    }
}
