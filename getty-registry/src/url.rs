//! Minimal parser for registry URLs: `scheme://host:port[,host:port...][/path][?k=v&...]`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};

/// A parsed registry URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUrl {
    /// Original text.
    pub raw: String,
    /// Lower-cased scheme (`etcd`, `zookeeper`, `memory`, `static`, ...).
    pub scheme: String,
    /// Comma-separated authority split into entries (may be empty).
    pub hosts: Vec<String>,
    /// Path, without a trailing `/` (may be empty).
    pub path: String,
    /// Percent-decoded query parameters.
    pub params: BTreeMap<String, String>,
}

impl RegistryUrl {
    /// Parses `raw`.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: raw.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| bad("missing `scheme://`"))?;
        if scheme.is_empty() {
            return Err(bad("empty scheme"));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i..]),
            None => (before_query, ""),
        };
        let hosts = authority
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect();
        let mut params = BTreeMap::new();
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = percent_decode(k).ok_or_else(|| bad("bad percent-encoding in query"))?;
                let v = percent_decode(v).ok_or_else(|| bad("bad percent-encoding in query"))?;
                params.insert(k, v);
            }
        }
        Ok(RegistryUrl {
            raw: raw.to_string(),
            scheme: scheme.to_ascii_lowercase(),
            hosts,
            path: path.trim_end_matches('/').to_string(),
            params,
        })
    }

    /// Error for this URL.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::InvalidUrl {
            url: self.raw.clone(),
            reason: reason.into(),
        }
    }

    /// The root path for etcd/ZooKeeper: the URL path, or `default` when empty. Always starts
    /// with `/`, never ends with `/`, and has no empty, `.` or `..` segments.
    pub fn root(&self, default: &str) -> Result<String> {
        let root = if self.path.is_empty() {
            default.to_string()
        } else {
            self.path.clone()
        };
        if root
            .split('/')
            .skip(1)
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(self.error("root path has an empty, `.` or `..` segment"));
        }
        Ok(root)
    }

    /// Parameter `name` as a duration in (possibly fractional) seconds.
    pub fn seconds(&self, name: &str) -> Result<Option<Duration>> {
        match self.params.get(name) {
            None => Ok(None),
            Some(v) => {
                let secs: f64 = v
                    .parse()
                    .map_err(|_| self.error(format!("`{name}` must be a number of seconds")))?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(self.error(format!("`{name}` must be > 0")));
                }
                Ok(Some(Duration::from_secs_f64(secs)))
            }
        }
    }

    /// Fails if a parameter other than `allowed` is present (catches typos).
    pub fn only_params(&self, allowed: &[&str]) -> Result<()> {
        match self.params.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(self.error(format!(
                "unknown parameter `{k}` (allowed: {})",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_urls() {
        let u = RegistryUrl::parse("etcd://127.0.0.1:2379,10.0.0.1:2379/getty/prod?ttl=5").unwrap();
        assert_eq!(u.scheme, "etcd");
        assert_eq!(u.hosts, vec!["127.0.0.1:2379", "10.0.0.1:2379"]);
        assert_eq!(u.path, "/getty/prod");
        assert_eq!(u.root("/getty").unwrap(), "/getty/prod");
        assert_eq!(u.seconds("ttl").unwrap(), Some(Duration::from_secs(5)));
        assert!(u.only_params(&["ttl"]).is_ok());
        assert!(u.only_params(&["x"]).is_err());

        let u = RegistryUrl::parse("memory://").unwrap();
        assert!(u.hosts.is_empty());
        assert_eq!(u.root("/getty").unwrap(), "/getty");

        let u = RegistryUrl::parse("static://a:1,b:2?service=Echo%20Svc&version=v1").unwrap();
        assert_eq!(u.params["service"], "Echo Svc");
        assert_eq!(u.path, "");

        assert!(RegistryUrl::parse("nope").is_err());
        assert!(
            RegistryUrl::parse("etcd://h:1/a//b")
                .unwrap()
                .root("/g")
                .is_err()
        );
        assert!(
            RegistryUrl::parse("etcd://h:1/?ttl=0")
                .unwrap()
                .seconds("ttl")
                .is_err()
        );
        assert!(
            RegistryUrl::parse("etcd://h:1/?ttl=x")
                .unwrap()
                .seconds("ttl")
                .is_err()
        );
    }
}
