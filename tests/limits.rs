//! What bounds a slow or hostile peer, over real loopback sockets: the read timeout bounds a
//! whole package from its first byte (a trickle of bytes neither extends it nor counts as
//! activity), and a server's partial-package budget bounds the memory held by peers that
//! announce big packages and stall.

mod common;
mod reliability;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use getty::core::{ServerBuilder, SessionOptions};
use reliability::{Counting, MB, live_bytes, mb, rss_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static A: Counting = Counting;

const READ_TIMEOUT: Duration = Duration::from_secs(2);

fn trickle_opts() -> SessionOptions {
    SessionOptions::default()
        .read_timeout(READ_TIMEOUT)
        .cron_period(Duration::from_secs(3600))
}

/// Writes `head`, then one byte every 500 ms for 12 s, then holds the connection open.
fn trickle<W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    mut w: W,
    head: Vec<u8>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if w.write_all(&head).await.is_err() {
            return;
        }
        for _ in 0..24 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if w.write_all(&[7]).await.is_err() {
                return;
            }
        }
        // Still connected after 12 s: keep the socket so the session is not ended by EOF.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    })
}

/// The session `sid` must fail with a read timeout and close, `READ_TIMEOUT` after `start`.
async fn cut_at_the_read_timeout(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Ev>,
    sid: u64,
    start: tokio::time::Instant,
) {
    let mut err = None;
    loop {
        match next_non_cron(rx).await {
            Ev::Error(id, e) if id == sid => err = Some(e),
            Ev::Close(id) if id == sid => break,
            e => panic!("unexpected {e:?}"),
        }
    }
    let took = start.elapsed();
    let err = err.expect("on_error before on_close");
    assert!(err.contains("read timeout"), "{err}");
    assert!(
        took >= READ_TIMEOUT && took < READ_TIMEOUT + Duration::from_millis(600),
        "cut after {took:?}, read timeout {READ_TIMEOUT:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_trickling_peer_is_cut_at_the_read_timeout_and_is_not_activity() {
    let (l, mut rx) = recorder(false);
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(setup(l, trickle_opts()))
        .await
        .unwrap();
    let peer = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(sid) = next(&mut rx).await else {
        panic!("open first")
    };
    let session = srv.sessions().pop().unwrap();
    let active_at_open = session.active();
    // A header announcing 1 MiB, then one byte every 500 ms.
    let start = tokio::time::Instant::now();
    let t = trickle(peer, (1u32 << 20).to_be_bytes().to_vec());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(
        session.stats().read_bytes >= 4 + 3,
        "the trickled bytes were read"
    );
    assert_eq!(
        session.active(),
        active_at_open,
        "bytes of an unfinished package are not activity"
    );
    cut_at_the_read_timeout(&mut rx, sid, start).await;
    t.abort();
    srv.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_websocket_peer_trickling_a_message_is_cut_at_the_read_timeout() {
    let (l, mut rx) = recorder(false);
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_ws("/ws", setup(l, trickle_opts()))
        .await
        .unwrap();
    let tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", srv.local_addr()), tcp)
        .await
        .unwrap();
    let Ev::Open(sid) = next(&mut rx).await else {
        panic!("open first")
    };
    // A masked binary frame announcing 1 MiB, then one payload byte every 500 ms.
    let start = tokio::time::Instant::now();
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 20).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    let t = trickle(ws.into_inner(), head);
    cut_at_the_read_timeout(&mut rx, sid, start).await;
    t.abort();
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partial_package_budget_holds_under_200_stalled_peers() {
    const PEERS: usize = 200;
    const ANNOUNCED: usize = 16 * MB;
    const SENT: usize = MB;
    let budget = 32 * MB;
    let o = SessionOptions::default()
        .max_msg_len(64 * MB)
        .read_timeout(Duration::from_secs(60))
        .cron_period(Duration::from_secs(3600));
    let (l, _rx) = recorder(false);
    let srv = ServerBuilder::new("127.0.0.1:0")
        .partial_budget(budget)
        .serve_tcp(setup(l, o))
        .await
        .unwrap();
    let addr = srv.local_addr();
    let (rss_before, heap_before) = (rss_bytes(), live_bytes());
    // Each peer announces a 16 MiB package, sends 1 MiB of it and stalls.
    let body = Bytes::from(vec![0u8; SENT]);
    let mut peers = Vec::new();
    for _ in 0..PEERS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let body = body.clone();
        peers.push(tokio::spawn(async move {
            s.write_all(&(ANNOUNCED as u32).to_be_bytes())
                .await
                .unwrap();
            // Most of it stays in the kernel's buffers while the session waits for budget.
            let _ = s.write_all(&body).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(s);
        }));
    }
    eventually("all peers connected", || srv.session_count() == PEERS).await;
    // Let every session read what it may.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = srv.partial_bytes();
    let (rss, heap) = (rss_bytes(), live_bytes());
    eprintln!(
        "{PEERS} stalled peers, {} announced and {} sent each, budget {}: held {}, \
         VmRSS {} -> {}, live heap {} -> {}",
        mb(ANNOUNCED),
        mb(SENT),
        mb(budget),
        mb(held),
        mb(rss_before),
        mb(rss),
        mb(heap_before),
        mb(heap)
    );
    assert!(held <= budget, "held {} over the budget", mb(held));
    assert!(held >= ANNOUNCED, "some sessions got budget");
    // The budget, plus at most one read (64 KiB) per waiting session, plus slack.
    let bound = budget + PEERS * (64 << 10) + 16 * MB;
    assert!(
        heap.saturating_sub(heap_before) < bound,
        "live heap grew by {} (bound {})",
        mb(heap.saturating_sub(heap_before)),
        mb(bound)
    );
    assert!(
        rss.saturating_sub(rss_before) < bound,
        "VmRSS grew by {} (bound {})",
        mb(rss.saturating_sub(rss_before)),
        mb(bound)
    );
    // The peers leave: every byte of budget comes back.
    for p in peers {
        p.abort();
    }
    eventually("sessions end", || srv.session_count() == 0).await;
    assert_eq!(srv.partial_bytes(), 0);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_bigger_than_the_whole_budget_closes_its_session() {
    let o = SessionOptions::default()
        .max_msg_len(64 * MB)
        .cron_period(Duration::from_secs(3600));
    let (l, mut rx) = recorder(true);
    let srv = ServerBuilder::new("127.0.0.1:0")
        .partial_budget(MB)
        .serve_tcp(setup(l, o))
        .await
        .unwrap();
    let mut peer = TcpStream::connect(srv.local_addr()).await.unwrap();
    // Small packages are not affected.
    peer.write_all(&frame(b"hi")).await.unwrap();
    let mut back = [0u8; 6];
    peer.read_exact(&mut back).await.unwrap();
    assert_eq!(&back[4..], b"hi");
    peer.write_all(&(2 * MB as u32).to_be_bytes())
        .await
        .unwrap();
    loop {
        match next_non_cron(&mut rx).await {
            Ev::Error(_, e) => {
                assert!(e.contains("partial-package budget"), "{e}");
                break;
            }
            Ev::Close(_) => panic!("on_error first"),
            _ => {}
        }
    }
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    srv.close().await;
}

#[tokio::test]
async fn a_budget_below_two_reads_is_refused() {
    let (l, _rx) = recorder(false);
    let err = ServerBuilder::new("127.0.0.1:0")
        .partial_budget(1000)
        .serve_tcp(setup(l, SessionOptions::default()))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            getty::core::Error::InvalidOption {
                name: "partial_budget",
                ..
            }
        ),
        "{err}"
    );
}
