//! Registry URLs: `scheme://[user[:password]@]host:port[,host:port…][/path][?k=v&…]`.
//!
//! The `url` crate parses and percent-decodes everything it can; what it cannot take, a
//! comma-separated list of hosts in one authority, is split here and each host is checked by
//! the `url` crate on its own. Every problem is an [`Error::InvalidUrl`] naming the URL with
//! its password replaced by `***`; a password never appears in `Debug` output or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::secret::{Credentials, Secret};

/// Largest value accepted for a duration parameter (`ttl`, `timeout`): one day.
pub const MAX_SECONDS: f64 = 86_400.0;

/// A parsed registry URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryUrl {
    /// The URL as given, with any password replaced by `***` (safe to print).
    pub raw: String,
    /// Lower-cased scheme (`etcd`, `zookeeper`, `memory`, `static`, ...).
    pub scheme: String,
    /// Comma-separated authority split into entries (may be empty).
    pub hosts: Vec<String>,
    /// Path, without a trailing `/` (may be empty).
    pub path: String,
    /// Percent-decoded query parameters.
    pub params: BTreeMap<String, String>,
    /// `user[:password]@` of the URL, percent-decoded.
    pub credentials: Option<Credentials>,
}

impl fmt::Debug for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryUrl")
            .field("raw", &self.raw)
            .field("scheme", &self.scheme)
            .field("hosts", &self.hosts)
            .field("path", &self.path)
            .field("params", &self.params)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// `raw` with the password of its user info (if any) replaced by `***`; works on text that is
/// not a valid URL too, so that tools can print what they were given.
pub fn redact_url(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{hosts}{tail}"),
            None => raw.to_string(),
        },
        None => raw.to_string(),
    }
}

impl RegistryUrl {
    /// Parses `raw`.
    pub fn parse(raw: &str) -> Result<Self> {
        let shown = redact_url(raw);
        let bad = |reason: String| Error::InvalidUrl {
            url: shown.clone(),
            reason,
        };
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| bad("missing `scheme://`".into()))?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, host_list) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        // Everything but the host list, through the `url` crate (a placeholder host).
        let userinfo_part = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let rebuilt = format!("{scheme}://{userinfo_part}h{tail}");
        let parsed = url::Url::parse(&rebuilt).map_err(|e| bad(e.to_string()))?;
        if parsed.fragment().is_some() {
            return Err(bad("a registry URL has no `#fragment`".into()));
        }
        let path_text = tail.split(['?', '#']).next().unwrap_or("");
        if path_text.split('/').skip(1).any(|s| {
            s == "."
                || s == ".."
                || s.eq_ignore_ascii_case("%2e")
                || s.eq_ignore_ascii_case("%2e%2e")
        }) {
            return Err(bad("path has a `.` or `..` segment".into()));
        }
        let mut hosts = Vec::new();
        for host in host_list
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
        {
            let one = url::Url::parse(&format!("{scheme}://{host}"))
                .map_err(|e| bad(format!("bad host {host:?}: {e}")))?;
            if one.host_str().is_none_or(str::is_empty)
                || !one.username().is_empty()
                || one.path() != ""
                || one.query().is_some()
            {
                return Err(bad(format!("bad host {host:?}")));
            }
            hosts.push(host.to_string());
        }
        let mut params = BTreeMap::new();
        for (k, v) in parsed.query_pairs() {
            if params.insert(k.to_string(), v.to_string()).is_some() {
                return Err(bad(format!("parameter `{k}` given twice")));
            }
        }
        let credentials = match userinfo {
            None => None,
            Some(_) => {
                let user = decode(parsed.username()).map_err(|r| bad(r.into()))?;
                let password =
                    decode(parsed.password().unwrap_or("")).map_err(|r| bad(r.into()))?;
                if user.is_empty() {
                    return Err(bad("empty user name before `@`".into()));
                }
                Some(Credentials::new(user, Secret::new(password)))
            }
        };
        Ok(RegistryUrl {
            raw: shown.clone(),
            scheme: parsed.scheme().to_string(),
            hosts,
            path: path_text.trim_end_matches('/').to_string(),
            params,
            credentials,
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

    /// Parameter `name` as a duration in (possibly fractional) seconds, above 0 and at most
    /// [`MAX_SECONDS`].
    pub fn seconds(&self, name: &str) -> Result<Option<Duration>> {
        let Some(v) = self.params.get(name) else {
            return Ok(None);
        };
        let secs: f64 = v
            .parse()
            .map_err(|_| self.error(format!("`{name}` must be a number of seconds, not {v:?}")))?;
        if !(secs > 0.0 && secs <= MAX_SECONDS) {
            return Err(self.error(format!(
                "`{name}` must be above 0 and at most {MAX_SECONDS} seconds, not {v:?}"
            )));
        }
        Duration::try_from_secs_f64(secs)
            .map(Some)
            .map_err(|e| self.error(format!("`{name}`: {e}")))
    }

    /// Parameter `name` as a boolean (`true`/`false`, `1`/`0`, `yes`/`no`).
    pub fn flag(&self, name: &str) -> Result<Option<bool>> {
        match self.params.get(name).map(String::as_str) {
            None => Ok(None),
            Some("true" | "1" | "yes") => Ok(Some(true)),
            Some("false" | "0" | "no") => Ok(Some(false)),
            Some(v) => Err(self.error(format!("`{name}` must be true or false, not {v:?}"))),
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

    /// Fails if the URL has `user:password@` (for backends without authentication).
    pub fn no_credentials(&self) -> Result<()> {
        match self.credentials {
            Some(_) => Err(self.error("this registry takes no `user:password@`")),
            None => Ok(()),
        }
    }
}

/// Percent-decodes user info.
fn decode(s: &str) -> std::result::Result<String, &'static str> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "user info is not UTF-8 after percent-decoding")
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
        assert!(u.credentials.is_none());

        let u = RegistryUrl::parse("memory://").unwrap();
        assert!(u.hosts.is_empty());
        assert_eq!(u.root("/getty").unwrap(), "/getty");

        let u = RegistryUrl::parse("static://a:1,b:2?service=Echo%20Svc&version=v1").unwrap();
        assert_eq!(u.params["service"], "Echo Svc");
        assert_eq!(u.path, "");

        let u = RegistryUrl::parse("ETCD://[::1]:2379").unwrap();
        assert_eq!(u.scheme, "etcd");
        assert_eq!(u.hosts, vec!["[::1]:2379"]);

        assert!(RegistryUrl::parse("nope").is_err());
        assert!(
            RegistryUrl::parse("etcd://h:1/a//b")
                .unwrap()
                .root("/g")
                .is_err()
        );
        for bad in [
            "etcd://h:1/?ttl=0",
            "etcd://h:1/?ttl=x",
            "etcd://h:1/?ttl=-1",
            "etcd://h:1/?ttl=NaN",
            "etcd://h:1/?ttl=inf",
            "etcd://h:1/?ttl=1e20",
            "etcd://h:1/?ttl=86401",
        ] {
            let e = RegistryUrl::parse(bad).unwrap().seconds("ttl");
            assert!(matches!(e, Err(Error::InvalidUrl { .. })), "{bad}: {e:?}");
        }
        for bad in [
            "etcd://h:99999",
            "etcd://h:1,x y:2",
            "etcd://h:1/a/../b",
            "etcd://h:1/a/%2e%2E/b",
            "etcd://h:1?ttl=1&ttl=2",
            "etcd://h:1#frag",
            "1etcd://h:1",
            "etcd://:pw@h:1",
        ] {
            assert!(
                matches!(RegistryUrl::parse(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let raw = "etcds://alice:p%40ss%3Aw0rd@h1:2379,h2:2379/root?ca=/tmp/ca.pem&ttl=1e20";
        let u = RegistryUrl::parse(raw).unwrap();
        let c = u.credentials.clone().unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.password.expose(), "p@ss:w0rd");
        assert_eq!(u.hosts, ["h1:2379", "h2:2379"]);
        assert_eq!(u.params["ca"], "/tmp/ca.pem");
        assert_eq!(
            u.raw,
            "etcds://alice:***@h1:2379,h2:2379/root?ca=/tmp/ca.pem&ttl=1e20"
        );
        let shown = format!("{u:?} {}", u.seconds("ttl").unwrap_err());
        assert!(
            !shown.contains("p%40ss") && !shown.contains("p@ss"),
            "{shown}"
        );
        // Errors of URLs that do not even parse are redacted too.
        let e = RegistryUrl::parse("etcd://bob:hunter2@h:99999").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(redact_url("x://u:pw@h"), "x://u:***@h");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
