//! getty-rpc through a registry: providers publish, a consumer's `Cluster` follows them and
//! balances calls, and a provider finds a consumer through the registry to call it back.
//! Runs on `memory://`, and on real etcd and ZooKeeper with `--features etcd,zookeeper`
//! (start them with `scripts/servers.sh up`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use getty::core::{ClientBuilder, ServerBuilder};
use getty::registry::{Query, Registry, ServiceInstance, Strategy, connect};
use getty::rpc::{
    CallOptions, Cluster, ClusterOptions, Context, Json, Router, RpcClient, RpcOptions, RpcServer,
};

const SVC: &str = "cluster.Echo";

async fn provider(reg: &Arc<dyn Registry>, name: &str) -> RpcServer {
    provider_as(
        reg,
        name,
        ServiceInstance::new(SVC, "").with_instance_id(name),
    )
    .await
}

/// The router of a provider: `Who` answers `name`, `Slow` sleeps.
fn provider_router(name: &str) -> Router {
    let mut r = Router::new();
    let me = name.to_string();
    r.add_json(SVC, "Who", move |_ctx: Context, _: ()| {
        let me = me.clone();
        async move { Ok(me) }
    });
    r.add_json(SVC, "Slow", move |_ctx: Context, ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    });
    r
}

/// A TCP provider answering `name`, published as `inst` (its address filled in).
async fn provider_as(reg: &Arc<dyn Registry>, name: &str, inst: ServiceInstance) -> RpcServer {
    let s = RpcServer::start(provider_router(name), RpcOptions::default(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    s.publish(&**reg, inst).await.unwrap();
    s
}

fn cluster(reg: &Arc<dyn Registry>, strategy: Strategy) -> Cluster {
    Cluster::new(
        reg.clone(),
        Query::new(SVC),
        Router::new(),
        ClusterOptions::default()
            .strategy(strategy)
            .reconnect_interval(Duration::from_millis(50)),
    )
}

async fn who(c: &Cluster, key: Option<&[u8]>) -> String {
    c.call::<Json, _, String>(key, SVC, "Who", &(), CallOptions::new())
        .await
        .unwrap()
}

async fn round_robin_spreads_300_calls_100_each(url: &str) {
    let reg = connect(url).await.unwrap();
    let ps = [
        provider(&reg, "p1").await,
        provider(&reg, "p2").await,
        provider(&reg, "p3").await,
    ];
    let c = cluster(&reg, Strategy::RoundRobin);
    let ok = c.wait_connected(3, Duration::from_secs(3)).await;
    assert!(ok, "consumer found the providers");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *counts.entry(who(&c, None).await).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 100), "{counts:?}");
    c.close().await;
    for p in ps {
        p.shutdown(Duration::from_secs(1)).await;
    }
}

async fn consistent_hash_sticks_to_one_instance(url: &str) {
    let reg = connect(url).await.unwrap();
    let ps = [
        provider(&reg, "h1").await,
        provider(&reg, "h2").await,
        provider(&reg, "h3").await,
    ];
    let c = cluster(&reg, Strategy::ConsistentHash);
    assert!(c.wait_connected(3, Duration::from_secs(10)).await);
    let mut used = std::collections::HashSet::new();
    for k in 0..30 {
        let key = format!("user-{k}");
        let first = who(&c, Some(key.as_bytes())).await;
        for _ in 0..10 {
            assert_eq!(
                who(&c, Some(key.as_bytes())).await,
                first,
                "key {key} moved"
            );
        }
        used.insert(first);
    }
    assert!(
        used.len() > 1,
        "30 keys all on one instance: the ring does not spread"
    );
    c.close().await;
    for p in ps {
        p.shutdown(Duration::from_secs(1)).await;
    }
}

async fn follows_instances_as_they_come_and_go(url: &str) {
    let reg = connect(url).await.unwrap();
    let a = provider(&reg, "a").await;
    let c = cluster(&reg, Strategy::RoundRobin);
    assert!(c.wait_connected(1, Duration::from_secs(10)).await);
    assert_eq!(who(&c, None).await, "a");
    // A new instance is used without a restart.
    let b = provider(&reg, "b").await;
    assert!(
        c.wait_connected(2, Duration::from_secs(10)).await,
        "b picked up"
    );
    let seen: std::collections::HashSet<String> =
        futures_util::future::join_all((0..10).map(|_| who(&c, None)))
            .await
            .into_iter()
            .collect();
    assert_eq!(seen.len(), 2);
    // A graceful shutdown of `a` deregisters first and drains: a call in flight on `a` completes.
    let on_a = loop {
        let (inst, peer) = c.pick(None, &[]).expect("connected");
        if inst.instance_id == "a" {
            break peer;
        }
    };
    let in_flight = on_a
        .start_call_raw(
            SVC,
            "Slow",
            getty::rpc::CodecId::Json,
            "300".into(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    let (done, ()) = tokio::join!(in_flight, a.shutdown(Duration::from_secs(5)));
    assert_eq!(
        &done.unwrap()[..],
        b"300",
        "the in-flight call finished before the close"
    );
    for _ in 0..50 {
        assert_eq!(
            who(&c, None).await,
            "b",
            "a removed instance gets no more calls"
        );
    }
    // A provider that dies without deregistering: its connection drops, calls go elsewhere.
    let d = provider(&reg, "d").await;
    assert!(c.wait_connected(2, Duration::from_secs(10)).await);
    d.close().await; // no deregistration: the registry still lists it until TTL/drop
    // A call already sent on the dying connection fails (it may have been served); once the
    // consumer sees the connection gone, it routes nothing more there.
    let t = std::time::Instant::now();
    while c.connected().len() != 1 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "dead provider still routed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        c.instances().iter().any(|i| i.instance_id == "d"),
        "still listed"
    );
    for _ in 0..50 {
        assert_eq!(who(&c, None).await, "b");
    }
    drop(d);
    c.close().await;
    b.shutdown(Duration::from_secs(1)).await;
}

async fn provider_calls_a_consumer_found_through_the_registry(url: &str) {
    let reg = connect(url).await.unwrap();
    let p = provider(&reg, "prov").await;
    // The consumer serves `cluster.Member` and publishes itself under its instance id.
    let id = format!("member-{}", fastrand::u32(..));
    let mut mine = Router::new();
    let me = id.clone();
    mine.add_json(
        "cluster.Member",
        "Greet",
        move |_ctx: Context, from: String| {
            let me = me.clone();
            async move { Ok(format!("{me} greeted by {from}")) }
        },
    );
    let addr = p.local_addr().to_string();
    let consumer = RpcClient::start(mine, RpcOptions::default().identity(id.clone()), |cb| {
        ClientBuilder::new(addr).connect_tcp(cb)
    })
    .unwrap();
    consumer.ready().await.unwrap();
    let _published = reg
        .register(ServiceInstance::new("cluster.Member", "connected").with_instance_id(id.clone()))
        .await
        .unwrap();
    // The provider looks the consumer up in the registry and calls it on its own connection.
    let found = reg.discover(&Query::new("cluster.Member")).await.unwrap();
    let target = found
        .iter()
        .find(|i| i.instance_id == id)
        .expect("consumer published");
    let mut peer = None;
    for _ in 0..200 {
        peer = p.peer_by_instance(&target.instance_id);
        if peer.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peer = peer.expect("provider knows the consumer's connection");
    let r: String = peer
        .call_json("cluster.Member", "Greet", &"prov".to_string())
        .await
        .unwrap();
    assert_eq!(r, format!("{id} greeted by prov"));
    consumer.close().await;
    p.shutdown(Duration::from_secs(1)).await;
}

macro_rules! backend {
    ($m:ident, $url:expr $(, $cfg:meta)?) => {
        $(#[$cfg])?
        mod $m {
            use super::*;
            fn url() -> String {
                $url
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_robin() {
                round_robin_spreads_300_calls_100_each(&url()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn consistent_hash() {
                consistent_hash_sticks_to_one_instance(&url()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn follows_instances() {
                follows_instances_as_they_come_and_go(&url()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reverse_call_through_registry() {
                provider_calls_a_consumer_found_through_the_registry(&url()).await
            }
        }
    };
}

backend!(memory, format!("memory://cluster-{}", fastrand::u64(..)));
backend!(
    etcd,
    format!(
        "etcd://{}/cluster-{}?ttl=5",
        std::env::var("GETTY_ETCD").unwrap_or_else(|_| "127.0.0.1:23790".into()),
        fastrand::u64(..)
    ),
    cfg(feature = "etcd")
);
backend!(
    zookeeper,
    format!(
        "zookeeper://{}/cluster-{}?ttl=5",
        std::env::var("GETTY_ZK").unwrap_or_else(|_| "127.0.0.1:21810".into()),
        fastrand::u64(..)
    ),
    cfg(feature = "zookeeper")
);

// ---- lifecycle and policy (memory:// only: none of it depends on the backend) ----

mod transport_common;

use bytes::Bytes;
use getty::registry::Transport;
use getty::rpc::{CodecId, TransportSecurity};

fn memory_url() -> String {
    format!("memory://cluster-lc-{}", fastrand::u64(..))
}

/// A memory registry, provider "p1" and a cluster connected to it.
async fn one_provider() -> (Arc<dyn Registry>, RpcServer, Cluster) {
    let reg = connect(&memory_url()).await.unwrap();
    let p = provider(&reg, "p1").await;
    let c = cluster(&reg, Strategy::RoundRobin);
    assert!(c.wait_connected(1, Duration::from_secs(3)).await);
    (reg, p, c)
}

/// Waits (at most `within`) until `f` holds.
async fn within(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = tokio::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_cluster_closes_its_connections() {
    let (_reg, p, c) = one_provider().await;
    within(
        "the provider sees the consumer",
        Duration::from_secs(3),
        || p.core().session_count() == 1,
    )
    .await;
    drop(c);
    within(
        "the dropped cluster's connection closes",
        Duration::from_secs(1),
        || p.core().session_count() == 0,
    )
    .await;
    p.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_stops_following_the_directory() {
    let (reg, p1, c) = one_provider().await;
    c.close().await;
    let p2 = provider(&reg, "p2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        p2.core().session_count(),
        0,
        "a closed cluster dials nothing"
    );
    assert!(c.connected().is_empty());
    let err = c
        .call::<Json, _, String>(None, SVC, "Who", &(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.status, getty::rpc::Status::ConnectionClosed, "{err}");
    p1.close().await;
    p2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_listed_again_at_another_address_is_reconnected() {
    let (reg, p1, c) = one_provider().await;
    assert_eq!(who(&c, None).await, "p1");
    // A new server takes over the same instance id (a restart on another port).
    let p2 = provider_as(
        &reg,
        "p2",
        ServiceInstance::new(SVC, "").with_instance_id("p1"),
    )
    .await;
    let t = tokio::time::Instant::now();
    loop {
        if let Ok(w) = c
            .call::<Json, _, String>(None, SVC, "Who", &(), CallOptions::new())
            .await
            && w == "p2"
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "calls never reached the new address"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.close().await;
    p1.close().await;
    p2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_in_two_groups_is_two_instances() {
    let reg = connect(&memory_url()).await.unwrap();
    let mut ps = Vec::new();
    for (group, name) in [("a", "in-a"), ("b", "in-b")] {
        let inst = ServiceInstance::new(SVC, "")
            .with_group(group)
            .with_instance_id("same");
        ps.push(provider_as(&reg, name, inst).await);
    }
    let c = cluster(&reg, Strategy::RoundRobin);
    assert!(
        c.wait_connected(2, Duration::from_secs(3)).await,
        "both instances connected, though they share an id"
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(who(&c, None).await);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    c.close().await;
    for p in ps {
        p.close().await;
    }
}

/// A listener that accepts and never reads; `close_one` closes the oldest connection it holds.
struct Sink {
    addr: String,
    held: Arc<std::sync::Mutex<std::collections::VecDeque<tokio::net::TcpStream>>>,
}

impl Sink {
    async fn start() -> Sink {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let held = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let h = held.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                h.lock().unwrap().push_back(s);
            }
        });
        Sink { addr, held }
    }
    fn close_one(&self) {
        self.held.lock().unwrap().pop_front();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_fails_at_once_when_every_connected_instance_was_tried() {
    // One instance with two connections to a peer that never reads: big calls fill both write
    // queues, then one more call waits for room. Its connection is closed under it (nothing
    // was sent: fail-over), while the instance stays connected through the other connection or
    // the reconnect. Every connected instance was then tried: the call must fail now, not
    // poll until its deadline.
    let reg = connect(&memory_url()).await.unwrap();
    let sink = Sink::start().await;
    let _r = reg
        .register(ServiceInstance::new(SVC, sink.addr.clone()).with_instance_id("deaf"))
        .await
        .unwrap();
    let mut rpc = RpcOptions::default()
        .max_frame(64 << 20)
        .default_timeout(Duration::from_secs(6));
    rpc.session.write_queue_len = 1;
    let c = Arc::new(Cluster::new(
        reg.clone(),
        Query::new(SVC),
        Router::new(),
        ClusterOptions::default()
            .rpc(rpc)
            .connections(2)
            .reconnect_interval(Duration::from_millis(20)),
    ));
    assert!(c.wait_connected(1, Duration::from_secs(3)).await);
    within("both connections up", Duration::from_secs(3), || {
        sink.held.lock().unwrap().len() == 2
    })
    .await;
    let big = Bytes::from(vec![0u8; 32 << 20]);
    let call = |body: Bytes| {
        let c = c.clone();
        tokio::spawn(async move {
            let t = tokio::time::Instant::now();
            let r = c
                .call_raw(None, SVC, "Who", CodecId::Json, body, CallOptions::new())
                .await;
            (r, t.elapsed())
        })
    };
    // Two stuck writes and two queued ones fill both connections.
    let fill: Vec<_> = (0..4).map(|_| call(big.clone())).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = call(Bytes::from_static(b"null"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!last.is_finished(), "the last call waits for room");
    // Close the original connections one by one; the last call's goes down with one of them.
    sink.close_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sink.close_one();
    let (r, took) = tokio::time::timeout(Duration::from_secs(10), last)
        .await
        .unwrap()
        .unwrap();
    let err = r.unwrap_err();
    assert_eq!(err.status, getty::rpc::Status::ConnectionClosed, "{err}");
    assert!(
        took < Duration::from_secs(3),
        "failed after {took:?}: it waited for its deadline (6 s)"
    );
    for f in fill {
        f.abort();
    }
    c.close().await;
}

/// A provider over TLS with the test CA's certificate, published as instance `tls`.
async fn tls_provider(reg: &Arc<dyn Registry>, pki: &transport_common::Pki) -> RpcServer {
    let tls = RpcServer::start(provider_router("tls"), RpcOptions::default(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tls(pki.server(), cb)
    })
    .await
    .unwrap();
    tls.publish(
        &**reg,
        ServiceInstance::new(SVC, "")
            .with_transport(Transport::Tls)
            .with_instance_id("tls"),
    )
    .await
    .unwrap();
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_requires_tls_never_dials_plaintext() {
    let reg = connect(&memory_url()).await.unwrap();
    let pki = transport_common::pki();
    // A plaintext provider, and one that says `wss` but gives a `ws://` URL.
    let plain = provider(&reg, "plain").await;
    let _ws = reg
        .register(
            ServiceInstance::new(SVC, format!("ws://{}/", plain.local_addr()))
                .with_transport(Transport::Wss)
                .with_instance_id("ws-url"),
        )
        .await
        .unwrap();
    // A TLS provider.
    let tls = tls_provider(&reg, &pki).await;
    // A cluster that trusts the CA (no client certificate) and requires `security`.
    let secure = |security| {
        Cluster::new(
            reg.clone(),
            Query::new(SVC),
            Router::new(),
            ClusterOptions::default()
                .tls(pki.client())
                .security(security),
        )
    };
    let c = secure(TransportSecurity::Tls);
    assert!(c.wait_connected(1, Duration::from_secs(3)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        plain.core().session_count(),
        0,
        "nothing dialled in plaintext"
    );
    assert_eq!(
        c.refused(),
        2,
        "both plaintext advertisements refused and counted"
    );
    for _ in 0..5 {
        assert_eq!(who(&c, None).await, "tls");
    }
    c.close().await;

    // Mutual TLS required, but no client certificate: the TLS instance is refused too.
    let c = secure(TransportSecurity::MutualTls);
    within("all three refused", Duration::from_secs(3), || {
        c.refused() == 3
    })
    .await;
    assert!(c.connected().is_empty());
    assert_eq!(tls.core().session_count(), 0);
    c.close().await;
    plain.close().await;
    tls.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_before_any_connection_waits_for_one() {
    let reg = connect(&memory_url()).await.unwrap();
    let p = provider(&reg, "p1").await;
    for _ in 0..20 {
        // No wait_connected: the call waits for the first connection (woken by it, no polling).
        let c = cluster(&reg, Strategy::RoundRobin);
        assert_eq!(who(&c, None).await, "p1");
        c.close().await;
    }
    p.close().await;
}

// ---- Unix socket instances ----

/// A fresh socket path under the temp dir (short: a socket path has ~100 bytes at most).
fn socket_path(tag: &str) -> String {
    std::env::temp_dir()
        .join(format!("getty-cl-{tag}-{:08x}.sock", fastrand::u32(..)))
        .display()
        .to_string()
}

/// A provider answering `name` on the Unix socket at `path`.
async fn unix_provider(name: &str, path: &str) -> RpcServer {
    let path = path.to_string();
    RpcServer::start(provider_router(name), RpcOptions::default(), |cb| {
        ServerBuilder::new(path).serve_unix(cb)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_dials_unix_and_tcp_instances_and_reconnects_a_restarted_unix_one() {
    let reg = connect(&memory_url()).await.unwrap();
    let tcp = provider(&reg, "tcp").await;
    let path = socket_path("rr");
    let unix = unix_provider("unix", &path).await;
    // Advertised as `unix:///path`: the registry stores Transport::Unix and the bare path.
    let _r = reg
        .register(ServiceInstance::new(SVC, format!("unix://{path}")).with_instance_id("unix"))
        .await
        .unwrap();
    let listed = reg.discover(&Query::new(SVC)).await.unwrap();
    let u = listed.iter().find(|i| i.instance_id == "unix").unwrap();
    assert_eq!((u.transport, u.address.as_str()), (Transport::Unix, &*path));

    let c = cluster(&reg, Strategy::RoundRobin);
    assert!(
        c.wait_connected(2, Duration::from_secs(5)).await,
        "both the tcp and the unix instance connected: {:?}",
        c.connected()
    );
    assert_eq!(
        unix.core().session_count(),
        1,
        "one session over the socket"
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        *counts.entry(who(&c, None).await).or_default() += 1;
    }
    assert_eq!(counts.get("tcp"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("unix"), Some(&10), "{counts:?}");

    // The unix server goes away (its socket file with it): calls go to the tcp instance.
    unix.close().await;
    within("the socket file is removed", Duration::from_secs(3), || {
        !std::path::Path::new(&path).exists()
    })
    .await;
    within(
        "the unix instance is disconnected",
        Duration::from_secs(3),
        || c.connected().len() == 1,
    )
    .await;
    for _ in 0..5 {
        assert_eq!(who(&c, None).await, "tcp");
    }
    // A new server on the same path, same registration: the cluster's client reconnects.
    let unix2 = unix_provider("unix-2", &path).await;
    within(
        "the unix instance reconnects",
        Duration::from_secs(10),
        || c.connected().len() == 2,
    )
    .await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(who(&c, None).await);
    }
    assert!(seen.contains("unix-2") && seen.contains("tcp"), "{seen:?}");
    c.close().await;
    unix2.close().await;
    tcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_requires_tls_refuses_a_unix_instance() {
    let reg = connect(&memory_url()).await.unwrap();
    let pki = transport_common::pki();
    let path = socket_path("tls");
    let unix = unix_provider("unix", &path).await;
    let _r = reg
        .register(
            ServiceInstance::new(SVC, path.clone())
                .with_transport(Transport::Unix)
                .with_instance_id("unix"),
        )
        .await
        .unwrap();
    let tls = tls_provider(&reg, &pki).await;
    let c = Cluster::new(
        reg.clone(),
        Query::new(SVC),
        Router::new(),
        ClusterOptions::default()
            .tls(pki.client())
            .security(TransportSecurity::Tls),
    );
    assert!(c.wait_connected(1, Duration::from_secs(3)).await);
    within(
        "the unix instance is refused",
        Duration::from_secs(3),
        || c.refused() == 1,
    )
    .await;
    for _ in 0..5 {
        assert_eq!(who(&c, None).await, "tls");
    }
    assert_eq!(unix.core().session_count(), 0, "nothing dialled the socket");
    // The same registry without the policy dials it: the refusal was the policy's.
    let open = cluster(&reg, Strategy::RoundRobin);
    within(
        "an open cluster dials the socket",
        Duration::from_secs(3),
        || unix.core().session_count() == 1,
    )
    .await;
    open.close().await;
    c.close().await;
    unix.close().await;
    tls.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_server_is_not_published_with_a_made_up_address() {
    let reg = connect(&memory_url()).await.unwrap();
    let path = socket_path("pub");
    let unix = unix_provider("unix", &path).await;
    let err = unix
        .publish(&*reg, ServiceInstance::new(SVC, ""))
        .await
        .unwrap_err();
    assert!(
        matches!(err, getty::registry::Error::InvalidInstance(_)),
        "{err}"
    );
    assert!(reg.discover(&Query::new(SVC)).await.unwrap().is_empty());
    unix.publish(&*reg, ServiceInstance::new(SVC, format!("unix://{path}")))
        .await
        .unwrap();
    let listed = reg.discover(&Query::new(SVC)).await.unwrap();
    assert_eq!(listed[0].address, path);
    unix.close().await;
}
