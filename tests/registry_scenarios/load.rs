//! What the fault tests of real registries share: providers that publish themselves, and a
//! steady load of calls from a consumer's `Cluster` (4 callers), with a raw watch of the
//! consumer counting `Removed` events.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use getty::core::ServerBuilder;
use getty::registry::{Event, Query, Registry, ServiceInstance, Watch, connect};
use getty::rpc::{
    CallOptions, Cluster, ClusterOptions, Context, Json, Router, RpcOptions, RpcServer,
};

/// An RPC server answering `service/Who` with `name`, published in `reg` as instance `name`.
pub async fn provider(reg: &Arc<dyn Registry>, service: &str, name: &str) -> RpcServer {
    let mut r = Router::new();
    let me = name.to_string();
    r.add_json(service, "Who", move |_ctx: Context, _: ()| {
        let me = me.clone();
        async move { Ok(me) }
    });
    let s = RpcServer::start(r, RpcOptions::default(), |cb| {
        ServerBuilder::new("127.0.0.1:0").serve_tcp(cb)
    })
    .await
    .unwrap();
    s.publish(
        &**reg,
        ServiceInstance::new(service, "").with_instance_id(name),
    )
    .await
    .unwrap();
    s
}

/// Two providers `p1` and `p2` published through one client of `url`, and a consumer's
/// `Cluster` (on another client) connected to both.
pub struct Setup {
    pub consumer_reg: Arc<dyn Registry>,
    pub cluster: Arc<Cluster>,
    pub providers: [RpcServer; 2],
}

impl Setup {
    pub async fn start(url: &str, service: &str) -> Setup {
        let providers_reg = connect(url).await.unwrap();
        let consumer_reg = connect(url).await.unwrap();
        let providers = [
            provider(&providers_reg, service, "p1").await,
            provider(&providers_reg, service, "p2").await,
        ];
        let cluster = Arc::new(Cluster::new(
            consumer_reg.clone(),
            Query::new(service),
            Router::new(),
            ClusterOptions::default().reconnect_interval(Duration::from_millis(50)),
        ));
        assert!(cluster.wait_connected(2, Duration::from_secs(15)).await);
        Setup {
            consumer_reg,
            cluster,
            providers,
        }
    }

    /// Closes the consumer and shuts the providers down.
    pub async fn stop(self) {
        self.cluster.close().await;
        for p in self.providers {
            p.shutdown(Duration::from_secs(1)).await;
        }
    }
}

/// The calls (and, optionally, a watch's removals) running in the background.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    served: Arc<Mutex<BTreeMap<String, u64>>>,
    failures: Arc<Mutex<Vec<String>>>,
    removed: Arc<Mutex<Vec<String>>>,
    callers: Vec<tokio::task::JoinHandle<()>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// What a [`Load`] saw.
pub struct Outcome {
    pub ok: u64,
    pub served: BTreeMap<String, u64>,
    pub failures: Vec<String>,
    pub removed: Vec<String>,
}

impl Load {
    /// 4 callers of `service/Who` through `cluster`, each pausing `pause` between calls; with a
    /// `watch`, every `Removed` it reports is recorded.
    pub fn start(
        cluster: Arc<Cluster>,
        service: &str,
        pause: Duration,
        watch: Option<Watch>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let served = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let removed = Arc::new(Mutex::new(Vec::new()));
        let callers = (0..4)
            .map(|_| {
                let (c, stop, ok, served, failures) = (
                    cluster.clone(),
                    stop.clone(),
                    ok.clone(),
                    served.clone(),
                    failures.clone(),
                );
                let service = service.to_string();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match c
                            .call::<Json, _, String>(None, &service, "Who", &(), CallOptions::new())
                            .await
                        {
                            Ok(who) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                *served.lock().unwrap().entry(who).or_default() += 1;
                            }
                            Err(e) => failures
                                .lock()
                                .unwrap()
                                .push(format!("after {:?}: {e}", t.elapsed())),
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        let watcher = watch.map(|mut watch| {
            let r = removed.clone();
            tokio::spawn(async move {
                while let Some(ev) = watch.next().await {
                    if let Event::Removed(i) = ev {
                        r.lock().unwrap().push(i.instance_id);
                    }
                }
            })
        });
        Load {
            stop,
            ok,
            served,
            failures,
            removed,
            callers,
            watcher,
        }
    }

    /// Calls that succeeded so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the callers (and the watch) and reports.
    pub async fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.callers {
            c.await.unwrap();
        }
        if let Some(w) = self.watcher {
            w.abort();
            let _ = w.await;
        }
        let outcome = Outcome {
            ok: self.ok.load(Ordering::Relaxed),
            served: self.served.lock().unwrap().clone(),
            failures: self.failures.lock().unwrap().clone(),
            removed: self.removed.lock().unwrap().clone(),
        };
        eprintln!(
            "calls: {} ok, {} failed; served by {:?}; removals seen: {:?}",
            outcome.ok,
            outcome.failures.len(),
            outcome.served,
            outcome.removed
        );
        outcome
    }
}
