//! `memory://[name]`: an in-process registry (no server).
//!
//! Every [`MemoryRegistry`] opened with the same name in one process shares one store, so
//! instances registered through one are visible to all. `memory://` is the unnamed default
//! namespace. Watches are fed synchronously under the store's lock: nothing is ever lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;

use crate::error::Result;
use crate::metrics::{self, Op, observe};
use crate::model::{Event, Query, ServiceInstance};
use crate::registry::{BoxFuture, Registration, Registry, Watch};

#[derive(Default)]
struct State {
    /// key → (registration token, instance)
    entries: BTreeMap<String, (u64, ServiceInstance)>,
    watchers: Vec<(Query, mpsc::UnboundedSender<Event>)>,
    next_token: u64,
}

#[derive(Default)]
struct Store {
    state: Mutex<State>,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn notify(&mut self, instance: &ServiceInstance, event: impl Fn() -> Event) {
        self.watchers.retain(|(query, tx)| {
            if query.matches(instance) {
                tx.send(event()).is_ok()
            } else {
                !tx.is_closed()
            }
        });
    }
}

fn stores() -> &'static Mutex<HashMap<String, Arc<Store>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<Store>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// In-process registry; see the [module docs](self).
#[derive(Clone)]
pub struct MemoryRegistry {
    name: String,
    store: Arc<Store>,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegistry")
            .field("name", &self.name)
            .finish()
    }
}

impl MemoryRegistry {
    /// The registry of namespace `name` (`""` = the default namespace of `memory://`).
    pub fn named(name: &str) -> Self {
        let mut map = stores().lock().unwrap_or_else(|e| e.into_inner());
        let store = map.entry(name.to_string()).or_default().clone();
        MemoryRegistry {
            name: name.to_string(),
            store,
        }
    }

    /// A private registry shared with nobody else (handy in unit tests).
    pub fn isolated() -> Self {
        MemoryRegistry {
            name: String::from("<isolated>"),
            store: Arc::default(),
        }
    }

    /// Namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn register_now(&self, instance: ServiceInstance) -> Result<Registration> {
        let instance = instance.normalize()?;
        let key = instance.path_key();
        let token = {
            let mut st = self.store.lock();
            st.next_token += 1;
            let token = st.next_token;
            let previous = st.entries.insert(key.clone(), (token, instance.clone()));
            match previous {
                Some((_, old)) if old == instance => {}
                Some(_) => st.notify(&instance, || Event::Updated(instance.clone())),
                None => st.notify(&instance, || Event::Added(instance.clone())),
            }
            token
        };
        let store = self.store.clone();
        let remove = move || {
            let mut st = store.lock();
            // Only remove our own registration (a later register of the same id replaced it).
            if st.entries.get(&key).is_some_and(|(t, _)| *t == token)
                && let Some((_, old)) = st.entries.remove(&key)
            {
                st.notify(&old, || Event::Removed(old.clone()));
                metrics::deregistered("memory", 1);
            }
        };
        Ok(Registration::with_sync(instance, Box::new(remove)))
    }

    fn discover_now(&self, query: &Query) -> Result<Vec<ServiceInstance>> {
        query.validate()?;
        let st = self.store.lock();
        Ok(st
            .entries
            .values()
            .filter(|(_, i)| query.matches(i))
            .map(|(_, i)| i.clone())
            .collect())
    }

    fn watch_now(&self, query: &Query) -> Result<Watch> {
        query.validate()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.store.lock();
        let snapshot = st
            .entries
            .values()
            .filter(|(_, i)| query.matches(i))
            .map(|(_, i)| i.clone())
            .collect();
        let _ = tx.send(Event::Snapshot(snapshot));
        st.watchers.push((query.clone(), tx));
        Ok(Watch::unbounded("memory", rx))
    }
}

impl Registry for MemoryRegistry {
    fn register(&self, instance: ServiceInstance) -> BoxFuture<'_, Result<Registration>> {
        let r = self.register_now(instance);
        Box::pin(observe("memory", Op::Register, async move { r }))
    }

    fn discover<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Vec<ServiceInstance>>> {
        let r = self.discover_now(query);
        Box::pin(observe("memory", Op::List, async move { r }))
    }

    fn watch<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Watch>> {
        let r = self.watch_now(query);
        Box::pin(observe("memory", Op::Watch, async move { r }))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn register_discover_watch() {
        let reg = MemoryRegistry::isolated();
        let q = Query::new("svc");
        let mut w = reg.watch(&q).await.unwrap();
        assert_eq!(w.next().await, Some(Event::Snapshot(vec![])));
        let r = reg
            .register(ServiceInstance::new("svc", "h:1"))
            .await
            .unwrap();
        let inst = r.instance().clone();
        assert_eq!(w.next().await, Some(Event::Added(inst.clone())));
        assert_eq!(reg.discover(&q).await.unwrap(), vec![inst.clone()]);
        // Unrelated service: no event.
        let _other = reg
            .register(ServiceInstance::new("other", "h:2"))
            .await
            .unwrap();
        r.deregister().await.unwrap();
        assert_eq!(w.next().await, Some(Event::Removed(inst)));
        assert!(w.try_next().is_none());
        assert!(reg.discover(&q).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn all_services_discover_and_watch() {
        let reg = MemoryRegistry::isolated();
        let b = reg
            .register(ServiceInstance::new("b.Svc", "h:2").with_instance_id("b1"))
            .await
            .unwrap();
        let a = reg
            .register(
                ServiceInstance::new("a.Svc", "h:1")
                    .with_group("g")
                    .with_instance_id("a1"),
            )
            .await
            .unwrap();
        let all = reg.discover(&Query::all()).await.unwrap();
        assert_eq!(all, vec![a.instance().clone(), b.instance().clone()]);
        let in_g = reg.discover(&Query::all().with_group("g")).await.unwrap();
        assert_eq!(in_g, vec![a.instance().clone()]);

        let mut w = reg.watch(&Query::all()).await.unwrap();
        assert_eq!(w.next().await, Some(Event::Snapshot(all)));
        // A service that did not exist when the watch started.
        let c = reg
            .register(ServiceInstance::new("c.New", "h:3"))
            .await
            .unwrap();
        let ci = c.instance().clone();
        assert_eq!(w.next().await, Some(Event::Added(ci.clone())));
        let b2 = reg
            .register(
                ServiceInstance::new("b.Svc", "h:2")
                    .with_instance_id("b1")
                    .with_weight(5),
            )
            .await
            .unwrap();
        assert_eq!(w.next().await, Some(Event::Updated(b2.instance().clone())));
        c.deregister().await.unwrap();
        assert_eq!(w.next().await, Some(Event::Removed(ci)));
        drop(a);
        assert!(matches!(w.next().await, Some(Event::Removed(i)) if i.service == "a.Svc"));
        assert!(w.try_next().is_none());
        drop((b, b2));
        assert!(matches!(w.next().await, Some(Event::Removed(i)) if i.service == "b.Svc"));
        assert!(reg.discover(&Query::all()).await.unwrap().is_empty());
        assert!(matches!(
            reg.watch(&Query::new("")).await,
            Err(crate::Error::InvalidQuery(_))
        ));
    }

    #[tokio::test]
    async fn reregister_same_id_replaces_and_old_drop_keeps_new() {
        let reg = MemoryRegistry::isolated();
        let a = reg
            .register(ServiceInstance::new("s", "h:1").with_instance_id("x"))
            .await
            .unwrap();
        let b = reg
            .register(ServiceInstance::new("s", "h:2").with_instance_id("x"))
            .await
            .unwrap();
        drop(a);
        let found = reg.discover(&Query::new("s")).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, "h:2");
        drop(b);
        assert!(reg.discover(&Query::new("s")).await.unwrap().is_empty());
    }
}
