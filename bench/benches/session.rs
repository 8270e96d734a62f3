//! getty-core's session write path on loopback TCP: a client session `send_pkg`s
//! length-prefixed `Bytes` packages of 64 B and 16 KiB to a server in the same process, which
//! counts them. One iteration is one package sent and received; reported as payload bytes/s.
//!
//! `cargo bench -p getty-bench --bench session`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use getty_core::{
    ClientBuilder, EventListener, LengthPrefixed, ServerBuilder, Session, SessionConfig,
    new_session,
};
use tokio::sync::Notify;

/// Counts received payload bytes and wakes the sender once `target` is reached.
#[derive(Default)]
struct Counter {
    received: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl EventListener<Bytes> for Counter {
    fn on_message(&self, _s: &Session<Bytes>, pkg: Bytes) {
        let n = self.received.fetch_add(pkg.len() as u64, Ordering::AcqRel) + pkg.len() as u64;
        if n >= self.target.load(Ordering::Acquire) {
            self.reached.notify_one();
        }
    }
}

struct Nothing;
impl EventListener<Bytes> for Nothing {
    fn on_message(&self, _s: &Session<Bytes>, _pkg: Bytes) {}
}

fn configure(l: Arc<dyn EventListener<Bytes>>) -> getty_core::NewSessionCallback<Bytes> {
    new_session(move |c: &mut SessionConfig<Bytes>| {
        c.set_name("bench")
            .set_pkg_handler(Arc::new(LengthPrefixed))
            .set_event_listener(l.clone());
        Ok(())
    })
}

fn send_pkg(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counter = Arc::new(Counter::default());
    let (_server, _client, session) = rt.block_on(async {
        let server = ServerBuilder::new("127.0.0.1:0")
            .serve_tcp(configure(counter.clone()))
            .await
            .unwrap();
        let client = ClientBuilder::new(server.local_addr().to_string())
            .connect_tcp(configure(Arc::new(Nothing)))
            .unwrap();
        client.ready().await.unwrap();
        let session = client.session().unwrap();
        (server, client, session)
    });

    let mut g = c.benchmark_group("session/send_pkg");
    for len in [64usize, 16 << 10] {
        let pkg = Bytes::from(vec![b'x'; len]);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("tcp", len), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let target = counter.received.load(Ordering::Acquire) + iters * len as u64;
                    counter.target.store(target, Ordering::Release);
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        session.send_pkg(&pkg).await.unwrap();
                    }
                    while counter.received.load(Ordering::Acquire) < target {
                        counter.reached.notified().await;
                    }
                    t0.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = send_pkg
}
criterion_main!(benches);
