//! getty-registry with the in-process `memory://` backend (and `static://`): no server needed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use getty::registry::{
    Balancer, Directory, Error, Event, LoadBalancer, Query, Registry, ServiceInstance, Strategy,
    Watch, connect,
};

const T: Duration = Duration::from_secs(5);

async fn next(w: &mut Watch) -> Event {
    tokio::time::timeout(T, w.next())
        .await
        .expect("watch event in time")
        .expect("watch open")
}

fn unique(name: &str) -> String {
    format!("memory://{name}-{}", fastrand::u64(..))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_50_none_lost() {
    let reg = connect(&unique("burst")).await.unwrap();
    let q = Query::new("Burst");
    let mut early = reg.watch(&q).await.unwrap();
    assert_eq!(next(&mut early).await, Event::Snapshot(vec![]));

    // 50 concurrent registrations.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let reg = reg.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let _counted = Counted(done);
            // Spread over ~100 ms so that the late watcher below starts mid-burst.
            tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
            reg.register(
                ServiceInstance::new("Burst", format!("10.0.0.1:{}", 1000 + i))
                    .with_instance_id(format!("n{i}")),
            )
            .await
            .unwrap()
        }));
    }
    // A second watcher created while the registrations are landing (after about 20 of them).
    let start = std::time::Instant::now();
    while done.load(std::sync::atomic::Ordering::SeqCst) < 20
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut late = reg.watch(&q).await.unwrap();
    let mut regs = Vec::new();
    for t in tasks {
        regs.push(t.await.unwrap());
    }
    let want: BTreeSet<String> = (0..50).map(|i| format!("n{i}")).collect();

    let mut seen = BTreeSet::new();
    while seen.len() < 50 {
        match next(&mut early).await {
            Event::Added(i) => assert!(
                seen.insert(i.instance_id.clone()),
                "duplicate Added {}",
                i.instance_id
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, want);
    assert!(early.try_next().is_none());

    // Late watcher: snapshot + Added = all 50, each exactly once.
    let mut late_seen = BTreeSet::new();
    match next(&mut late).await {
        Event::Snapshot(list) => late_seen.extend(list.into_iter().map(|i| i.instance_id)),
        other => panic!("first event must be a snapshot, got {other:?}"),
    }
    while late_seen.len() < 50 {
        match next(&mut late).await {
            Event::Added(i) => assert!(
                late_seen.insert(i.instance_id.clone()),
                "duplicate {}",
                i.instance_id
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(late_seen, want);

    // 50 concurrent deregistrations: 50 Removed.
    let tasks: Vec<_> = regs
        .into_iter()
        .map(|r| tokio::spawn(r.deregister()))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut removed = BTreeSet::new();
    while removed.len() < 50 {
        match next(&mut early).await {
            Event::Removed(i) => assert!(removed.insert(i.instance_id.clone())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(removed, want);
    assert!(reg.discover(&q).await.unwrap().is_empty());
}

/// `Query::all()`: every service of the namespace (and nothing of another one); a watch that sees
/// new services join, change and leave; a Directory over every service.
#[tokio::test]
async fn all_services_discover_and_watch() {
    let reg = connect(&unique("all")).await.unwrap();
    assert!(reg.discover(&Query::all()).await.unwrap().is_empty());
    let mut early = reg.watch(&Query::all()).await.unwrap();
    assert_eq!(next(&mut early).await, Event::Snapshot(vec![]));
    let everything = Directory::new(reg.clone(), Query::all());
    let other_ns = connect(&unique("all-other")).await.unwrap();
    let _elsewhere = other_ns
        .register(ServiceInstance::new("Elsewhere", "10.9.9.9:1"))
        .await
        .unwrap();

    let mut regs = Vec::new();
    for (svc, g, v, id) in [
        ("b.Beta", "", "v2", "b2"),
        ("a.Alpha", "g1", "v1", "a1"),
        ("b.Beta", "", "v1", "b1"),
    ] {
        let inst = ServiceInstance::new(svc, format!("{id}:1"))
            .with_group(g)
            .with_version(v)
            .with_instance_id(id);
        regs.push(reg.register(inst).await.unwrap());
        assert!(matches!(next(&mut early).await, Event::Added(i) if i.instance_id == id));
    }
    let ids = |l: Vec<ServiceInstance>| l.into_iter().map(|i| i.instance_id).collect::<Vec<_>>();
    // Sorted by path key: service, group, version, instance id.
    assert_eq!(
        ids(reg.discover(&Query::all()).await.unwrap()),
        ["a1", "b1", "b2"]
    );
    assert_eq!(
        ids(reg.discover(&Query::all().with_group("g1")).await.unwrap()),
        ["a1"]
    );
    assert_eq!(
        ids(reg
            .discover(&Query::all().with_version("v2"))
            .await
            .unwrap()),
        ["b2"]
    );
    assert!(
        everything
            .wait_for(T, |l| l
                .iter()
                .map(|i| i.instance_id.as_str())
                .eq(["a1", "b1", "b2"]))
            .await
    );
    let mut late = reg.watch(&Query::all()).await.unwrap();
    assert_eq!(
        next(&mut late).await,
        Event::Snapshot(reg.discover(&Query::all()).await.unwrap())
    );

    // A service that did not exist when the watches started joins, changes and leaves.
    let c = reg
        .register(ServiceInstance::new("c.New", "10.0.0.3:1").with_instance_id("c1"))
        .await
        .unwrap();
    let ci = c.instance().clone();
    for w in [&mut early, &mut late] {
        assert_eq!(next(w).await, Event::Added(ci.clone()));
    }
    let c2 = reg.register(ci.clone().with_weight(5)).await.unwrap();
    for w in [&mut early, &mut late] {
        assert_eq!(next(w).await, Event::Updated(ci.clone().with_weight(5)));
    }
    drop(c); // superseded: removes nothing
    c2.deregister().await.unwrap();
    for w in [&mut early, &mut late] {
        assert_eq!(next(w).await, Event::Removed(ci.clone().with_weight(5)));
        assert!(w.try_next().is_none(), "nothing of the other namespace");
    }
    drop(regs);
    assert!(everything.wait_for(T, |l| l.is_empty()).await);

    // static:// holds one service: Query::all() lists it.
    let st = connect("static://10.0.0.1:80?service=S").await.unwrap();
    assert_eq!(st.discover(&Query::all()).await.unwrap().len(), 1);
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
async fn group_and_version_filtering() {
    let reg = connect(&unique("filter")).await.unwrap();
    let mut regs = Vec::new();
    for (g, v, id) in [("A", "v1", "a1"), ("A", "v2", "a2"), ("B", "v1", "b1")] {
        let inst = ServiceInstance::new("Svc", format!("{id}:1"))
            .with_group(g)
            .with_version(v)
            .with_instance_id(id);
        regs.push(reg.register(inst).await.unwrap());
    }
    let ids = |l: Vec<ServiceInstance>| l.into_iter().map(|i| i.instance_id).collect::<Vec<_>>();
    assert_eq!(
        ids(reg.discover(&Query::new("Svc")).await.unwrap()),
        ["a1", "a2", "b1"]
    );
    assert_eq!(
        ids(reg
            .discover(&Query::new("Svc").with_group("A"))
            .await
            .unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(
        ids(reg
            .discover(&Query::new("Svc").with_version("v1"))
            .await
            .unwrap()),
        ["a1", "b1"]
    );
    assert_eq!(
        ids(reg
            .discover(&Query::new("Svc").with_group("A").with_version("v2"))
            .await
            .unwrap()),
        ["a2"]
    );
    assert!(reg.discover(&Query::new("Other")).await.unwrap().is_empty());
    assert!(matches!(
        reg.discover(&Query::new("")).await,
        Err(Error::InvalidQuery(_))
    ));
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

/// Counts a finished registration task when dropped.
struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
