//! getty-registry with the in-process `memory://` backend (and `static://`): no server needed.
//!
//! The scenarios shared with the etcd and ZooKeeper backends are in `registry_scenarios`; this
//! file has the memory hooks, thin wrappers and the tests of memory and `static://` alone.

mod registry_scenarios;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use getty::registry::{
    Balancer, Directory, Error, Event, LoadBalancer, Query, Registry, ServiceInstance, Strategy,
    connect,
};
use registry_scenarios::{self as scenarios, Backend, next};

const T: Duration = Duration::from_secs(5);

/// The in-process backend: a root names a namespace (namespaces are flat: a nested root is just
/// another one). What it stores is seen through a second handle on the namespace.
struct Memory;

impl Memory {
    async fn contents(&self, root: &str) -> Vec<ServiceInstance> {
        let other = connect(&self.url(root, 0)).await.unwrap();
        other.discover(&Query::all()).await.unwrap()
    }
}

impl Backend for Memory {
    const KIND: &'static str = "memory";

    fn url(&self, root: &str, _ttl: u32) -> String {
        format!("memory://{}", root.replace('/', "-"))
    }

    async fn stored(&self, root: &str) -> usize {
        self.contents(root).await.len()
    }

    async fn assert_stored(&self, root: &str, inst: &ServiceInstance) {
        assert_eq!(self.contents(root).await, vec![inst.clone()]);
    }

    async fn assert_deregistered(&self, root: &str, _inst: &ServiceInstance) {
        assert!(self.contents(root).await.is_empty());
    }
}

/// A namespace of the test `name` that no other test uses.
fn unique_root(name: &str) -> String {
    format!("{name}-{}", fastrand::u64(..))
}

fn unique(name: &str) -> String {
    Memory.url(&unique_root(name), 0)
}

#[tokio::test]
async fn registration_stored_and_deregistered() {
    scenarios::registration_stored_and_deregistered(&Memory, &unique_root("stored")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_50_none_lost() {
    scenarios::watch_sees_burst_of_50(&Memory, &unique_root("burst")).await;
}

/// `Query::all()` (see the scenario); and `static://`, which holds one service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_services_discover_and_watch() {
    scenarios::all_services_discover_and_watch(&Memory, &unique_root("all")).await;

    let st = connect("static://10.0.0.1:80?service=S").await.unwrap();
    assert_eq!(st.discover(&Query::all()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn group_and_version_filtering() {
    scenarios::discovery_and_watch_filtered_by_group_and_version(&Memory, &unique_root("filter"))
        .await;
}

#[tokio::test]
async fn register_discover_watch_deregister() {
    let reg = connect(&unique("basic")).await.unwrap();
    assert_eq!(reg.kind(), "memory");
    let q = Query::new("Echo").with_version("v1");
    let mut w = reg.watch(&q).await.unwrap();
    assert_eq!(next(&mut w).await, Event::Snapshot(vec![]));

    let inst = ServiceInstance::new("Echo", "127.0.0.1:9000")
        .with_version("v1")
        .with_group("g")
        .with_codec("json");
    let r = reg.register(inst.clone()).await.unwrap();
    let published = r.instance().clone();
    assert_eq!(published.instance_id.len(), 32, "an id is generated");
    assert_eq!(
        published,
        inst.clone().with_instance_id(published.instance_id.clone())
    );
    assert_eq!(next(&mut w).await, Event::Added(published.clone()));
    assert_eq!(reg.discover(&q).await.unwrap(), vec![published.clone()]);
    // Another version is not selected.
    let _v2 = reg
        .register(ServiceInstance::new("Echo", "127.0.0.1:9001").with_version("v2"))
        .await
        .unwrap();
    assert_eq!(reg.discover(&q).await.unwrap().len(), 1);
    assert_eq!(reg.discover(&Query::new("Echo")).await.unwrap().len(), 2);

    // Re-registering the same id with new content is an update.
    let r2 = reg
        .register(published.clone().with_weight(7))
        .await
        .unwrap();
    assert_eq!(
        next(&mut w).await,
        Event::Updated(published.clone().with_weight(7))
    );

    // Explicit deregistration removes at once.
    r2.deregister().await.unwrap();
    assert_eq!(
        next(&mut w).await,
        Event::Removed(published.clone().with_weight(7))
    );
    assert!(reg.discover(&q).await.unwrap().is_empty());
    // The older handle of the same id no longer owns the entry: dropping it changes nothing.
    drop(r);
    assert!(w.try_next().is_none());

    // Deregister on drop.
    let r3 = reg
        .register(ServiceInstance::new("Echo", "127.0.0.1:9002").with_version("v1"))
        .await
        .unwrap();
    let i3 = r3.instance().clone();
    assert_eq!(next(&mut w).await, Event::Added(i3.clone()));
    drop(r3);
    assert_eq!(next(&mut w).await, Event::Removed(i3));
    assert!(reg.discover(&q).await.unwrap().is_empty());
}

#[tokio::test]
async fn directory_and_balancers() {
    let reg = connect(&unique("dir")).await.unwrap();
    let mut regs = Vec::new();
    for i in 1..=3 {
        regs.push(
            reg.register(
                ServiceInstance::new("Calc", format!("10.0.0.{i}:80"))
                    .with_instance_id(format!("node{i}")),
            )
            .await
            .unwrap(),
        );
    }
    let dir = Directory::new(reg.clone(), Query::new("Calc"));
    assert!(dir.ready(T).await);
    assert_eq!(dir.instances().len(), 3);

    // 300 round-robin picks over 3 instances: 100 each.
    let lb = LoadBalancer::default();
    let list = dir.instances();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *counts
            .entry(lb.pick(&list, None).unwrap().instance_id.clone())
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&n| n == 100), "{counts:?}");

    // Consistent hash: a key stays on its instance when another one leaves.
    let ch = LoadBalancer::new(Strategy::ConsistentHash);
    let owner = ch
        .pick(&list, Some(b"user-42"))
        .unwrap()
        .instance_id
        .clone();
    let victim = regs
        .iter()
        .position(|r| r.instance().instance_id != owner)
        .unwrap();
    let gone = regs.remove(victim);
    let gone_id = gone.instance().instance_id.clone();
    drop(gone);
    assert!(
        dir.wait_for(T, |l| l.len() == 2).await,
        "directory follows the removal"
    );
    let list = dir.instances();
    assert!(list.iter().all(|i| i.instance_id != gone_id));
    assert_eq!(ch.pick(&list, Some(b"user-42")).unwrap().instance_id, owner);

    // A new provider becomes selectable without a restart.
    let mut sub = dir.subscribe();
    let _r4 = reg
        .register(ServiceInstance::new("Calc", "10.0.0.4:80").with_instance_id("node4"))
        .await
        .unwrap();
    tokio::time::timeout(T, sub.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(dir.instances().iter().any(|i| i.instance_id == "node4"));
}

#[tokio::test]
async fn memory_namespaces_and_static() {
    let name = unique("ns");
    let a = connect(&name).await.unwrap();
    let b = connect(&name).await.unwrap();
    let other = connect(&unique("ns-other")).await.unwrap();
    let _r = a.register(ServiceInstance::new("S", "h:1")).await.unwrap();
    assert_eq!(b.discover(&Query::new("S")).await.unwrap().len(), 1);
    assert!(other.discover(&Query::new("S")).await.unwrap().is_empty());

    let st: Arc<dyn Registry> = connect("static://10.0.0.1:80,10.0.0.2:80?service=S&version=v1")
        .await
        .unwrap();
    let list = st.discover(&Query::new("S")).await.unwrap();
    assert_eq!(
        list.iter().map(|i| i.address.as_str()).collect::<Vec<_>>(),
        ["10.0.0.1:80", "10.0.0.2:80"]
    );
    assert!(matches!(
        st.register(ServiceInstance::new("S", "h:1")).await,
        Err(Error::Unsupported(_))
    ));
    let dir = Directory::new(st, Query::new("S").with_version("v1"));
    assert!(dir.wait_for(T, |l| l.len() == 2).await);

    assert!(matches!(
        connect("nope://x").await,
        Err(Error::InvalidUrl { .. })
    ));
    #[cfg(not(feature = "etcd"))]
    assert!(matches!(
        connect("etcd://127.0.0.1:1/x").await,
        Err(Error::FeatureDisabled("etcd"))
    ));
}
