//! `static://host:port[,host:port...]?service=NAME[&version=V][&group=G][&transport=tcp][&codec=json][&weight=N]`:
//! a fixed list of instances of one service.
//!
//! `discover`/`watch` return the list (a watch yields one [`Event::Snapshot`] and then nothing,
//! forever); `register` fails with [`Error::Unsupported`]: a static registry is read-only.
//! Each address becomes one instance whose `instance_id` is the address itself.
//!
//! A static URL cannot name a Unix socket: its addresses are the `host:port` entries of the
//! authority and it has no path, so `transport=unix` is refused. Publish Unix socket instances
//! through a registry that stores instances (`memory://`, etcd, ZooKeeper), or build a
//! [`StaticRegistry::new`] from [`ServiceInstance`]s in code.

use crate::error::{Error, Result};
use crate::metrics::{Op, observe};
use crate::model::{Event, Query, ServiceInstance, Transport};
use crate::registry::{BoxFuture, Registration, Registry, Watch};
use crate::url::RegistryUrl;

/// Fixed-list registry; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct StaticRegistry {
    instances: Vec<ServiceInstance>,
}

impl StaticRegistry {
    /// A registry serving exactly `instances` (normalized: ids generated when empty).
    pub fn new(instances: Vec<ServiceInstance>) -> Result<Self> {
        let mut instances = instances
            .into_iter()
            .map(ServiceInstance::normalize)
            .collect::<Result<Vec<_>>>()?;
        instances.sort_by_key(|i| i.path_key());
        Ok(StaticRegistry { instances })
    }

    pub(crate) fn from_url(url: &RegistryUrl) -> Result<Self> {
        url.only_params(&[
            "service",
            "version",
            "group",
            "transport",
            "codec",
            "weight",
        ])?;
        let service = url
            .params
            .get("service")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| url.error("missing `service=`"))?;
        if url.hosts.is_empty() {
            return Err(url.error("no address"));
        }
        if !url.path.is_empty() {
            return Err(url.error("a static:// URL has no path"));
        }
        let transport: Transport = match url.params.get("transport") {
            Some(t) => t
                .parse()
                .map_err(|_| url.error(format!("unknown transport {t:?}")))?,
            None => Transport::Tcp,
        };
        if transport == Transport::Unix {
            return Err(url.error(
                "a static:// URL cannot name a Unix socket (its addresses are host:port entries \
                 and it has no path); register the instance in memory://, etcd or ZooKeeper",
            ));
        }
        let weight = match url.params.get("weight") {
            Some(w) => w
                .parse()
                .map_err(|_| url.error("`weight` must be an integer"))?,
            None => crate::DEFAULT_WEIGHT,
        };
        let instances = url
            .hosts
            .iter()
            .map(|addr| {
                let mut i = ServiceInstance::new(service.clone(), addr.clone())
                    .with_transport(transport)
                    .with_weight(weight)
                    .with_instance_id(addr.clone());
                i.version = url.params.get("version").cloned().unwrap_or_default();
                i.group = url.params.get("group").cloned().unwrap_or_default();
                if let Some(codecs) = url.params.get("codec") {
                    i.codecs = codecs
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(String::from)
                        .collect();
                }
                i
            })
            .collect();
        Self::new(instances)
    }

    fn matching(&self, query: &Query) -> Result<Vec<ServiceInstance>> {
        query.validate()?;
        Ok(self
            .instances
            .iter()
            .filter(|i| query.matches(i))
            .cloned()
            .collect())
    }
}

impl Registry for StaticRegistry {
    fn register(&self, _instance: ServiceInstance) -> BoxFuture<'_, Result<Registration>> {
        Box::pin(observe("static", Op::Register, async {
            Err(Error::Unsupported(
                "static:// registry is read-only; register is not possible".into(),
            ))
        }))
    }

    fn discover<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Vec<ServiceInstance>>> {
        let r = self.matching(query);
        Box::pin(observe("static", Op::List, async move { r }))
    }

    fn watch<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Watch>> {
        let r = self.matching(query).map(|list| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let _ = tx.send(Event::Snapshot(list));
            // Keep the sender so the stream never ends.
            Watch::unbounded("static", rx).keep(tx)
        });
        Box::pin(observe("static", Op::Watch, async move { r }))
    }

    fn kind(&self) -> &'static str {
        "static"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_list() {
        let url =
            RegistryUrl::parse("static://a:1,b:2?service=Echo&version=v1&codec=json,pb&weight=5")
                .unwrap();
        let reg = StaticRegistry::from_url(&url).unwrap();
        let all = reg.discover(&Query::new("Echo")).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].address, "a:1");
        assert_eq!(all[0].instance_id, "a:1");
        assert_eq!(all[0].codecs, vec!["json", "pb"]);
        assert_eq!(all[1].weight, 5);
        assert!(
            reg.discover(&Query::new("Echo").with_version("v2"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(reg.discover(&Query::new("Other")).await.unwrap().is_empty());
        assert_eq!(reg.discover(&Query::all()).await.unwrap(), all);
        assert!(
            reg.discover(&Query::all().with_group("g"))
                .await
                .unwrap()
                .is_empty()
        );
        let mut w = reg.watch(&Query::new("Echo")).await.unwrap();
        assert_eq!(w.next().await, Some(Event::Snapshot(all)));
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), w.next()).await;
        assert!(pending.is_err(), "static watch must stay open");
        assert!(matches!(
            reg.register(ServiceInstance::new("Echo", "c:3")).await,
            Err(Error::Unsupported(_))
        ));
        assert!(StaticRegistry::from_url(&RegistryUrl::parse("static://a:1").unwrap()).is_err());
        // No syntax for a socket path: transport=unix is refused, and so is a path.
        for bad in [
            "static://a:1?service=Echo&transport=unix",
            "static:///run/a.sock?service=Echo&transport=unix",
        ] {
            let e = StaticRegistry::from_url(&RegistryUrl::parse(bad).unwrap());
            assert!(matches!(e, Err(Error::InvalidUrl { .. })), "{bad}: {e:?}");
        }
        // Built in code, a static registry serves Unix socket instances like any other.
        let unix =
            StaticRegistry::new(vec![ServiceInstance::new("Echo", "unix:///run/a.sock")]).unwrap();
        let found = unix.discover(&Query::new("Echo")).await.unwrap();
        assert_eq!(found[0].transport, Transport::Unix);
        assert_eq!(found[0].address, "/run/a.sock");
    }
}
