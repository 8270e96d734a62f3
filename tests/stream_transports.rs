//! getty-core sessions over a Unix domain socket and over `tokio::io::duplex` connections
//! (`serve_incoming` / `connect_with`): the events, echo, the session cap, reconnect after the
//! peer closes, and back-pressure, as over TCP.

mod common;

use std::io;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use getty::core::{ClientBuilder, EndpointType, Server, ServerBuilder, SessionOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

fn opts() -> SessionOptions {
    SessionOptions::default().cron_period(Duration::from_secs(3600))
}

fn incoming(
    rx: mpsc::UnboundedReceiver<DuplexStream>,
) -> impl futures_util::Stream<Item = io::Result<DuplexStream>> + Send + Unpin + 'static {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (Ok(c), rx))
    }))
}

async fn read_frame(c: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut h = [0u8; 4];
    c.read_exact(&mut h).await.unwrap();
    let mut b = vec![0u8; u32::from_be_bytes(h) as usize];
    c.read_exact(&mut b).await.unwrap();
    b
}

#[tokio::test]
async fn a_duplex_server_echoes_reports_events_and_keeps_its_cap() {
    let (tx, rx) = mpsc::unbounded_channel();
    let (l, mut ev) = recorder(true);
    let server: Server<Bytes> = ServerBuilder::new("")
        .max_sessions(1)
        .serve_incoming(incoming(rx), setup(l, opts()))
        .await
        .unwrap();
    assert_eq!(server.endpoint_type(), EndpointType::StreamServer);
    let (mut a, theirs) = tokio::io::duplex(4096);
    tx.send(theirs).unwrap();
    let Ev::Open(id) = next_non_cron(&mut ev).await else {
        panic!("no open")
    };
    a.write_all(&frame(b"hello")).await.unwrap();
    assert_eq!(read_frame(&mut a).await, b"hello");
    assert_eq!(
        next_non_cron(&mut ev).await,
        Ev::Msg(id, Bytes::from_static(b"hello"))
    );
    let s = &server.sessions()[0];
    assert_eq!(s.remote_addr(), None);
    // Over the cap: the second connection is closed at once.
    let (mut b, theirs) = tokio::io::duplex(4096);
    tx.send(theirs).unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), b.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed over the cap");
    // The peer closing ends the session.
    drop(a);
    assert_eq!(next_non_cron(&mut ev).await, Ev::Close(id));
    server.close().await;
}

#[tokio::test]
async fn a_unix_client_reconnects_to_a_unix_server() {
    let dir = std::env::temp_dir().join(format!("getty-core-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let (l, mut sev) = recorder(true);
    let server: Server<Bytes> = ServerBuilder::new(path.display().to_string())
        .serve_unix(setup(l, opts()))
        .await
        .unwrap();
    let (cl, mut cev) = recorder(false);
    let client = ClientBuilder::new(format!("unix://{}", path.display()))
        .reconnect_interval(Duration::from_millis(20))
        .connect_unix(setup(cl, opts()))
        .unwrap();
    client.ready().await.unwrap();
    assert_eq!(client.endpoint_type(), EndpointType::UnixClient);
    let Ev::Open(sid) = next_non_cron(&mut sev).await else {
        panic!()
    };
    let Ev::Open(cid) = next_non_cron(&mut cev).await else {
        panic!()
    };
    client
        .session()
        .unwrap()
        .send_pkg(&Bytes::from_static(b"ping"))
        .await
        .unwrap();
    assert_eq!(
        next_non_cron(&mut cev).await,
        Ev::Msg(cid, Bytes::from_static(b"ping"))
    );
    assert_eq!(
        next_non_cron(&mut sev).await,
        Ev::Msg(sid, Bytes::from_static(b"ping"))
    );
    // The server drops the connection; the client dials again.
    server.sessions()[0].close();
    assert_eq!(next_non_cron(&mut sev).await, Ev::Close(sid));
    assert_eq!(next_non_cron(&mut cev).await, Ev::Close(cid));
    let Ev::Open(cid2) = next_non_cron(&mut cev).await else {
        panic!("no reconnect")
    };
    assert_ne!(cid, cid2);
    eventually("the new session is up", || client.session().is_some()).await;
    client
        .session()
        .unwrap()
        .send_pkg(&Bytes::from_static(b"again"))
        .await
        .unwrap();
    assert_eq!(
        next_non_cron(&mut cev).await,
        Ev::Msg(cid2, Bytes::from_static(b"again"))
    );
    client.close().await;
    server.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_duplex_client_dials_through_its_function_and_back_pressure_holds() {
    // A peer that never reads: the client's writes fill the pipe and the write queue, then
    // writers wait (try_send_pkg refuses) instead of growing memory.
    let (tx, mut rx) = mpsc::unbounded_channel::<DuplexStream>();
    let (cl, _cev) = recorder(false);
    let client = ClientBuilder::new("")
        .connect_with(
            move || {
                let tx = tx.clone();
                async move {
                    let (mine, theirs) = tokio::io::duplex(1024);
                    tx.send(theirs).map_err(|_| io::Error::other("gone"))?;
                    Ok(mine)
                }
            },
            setup(cl, opts().write_queue_len(4)),
        )
        .unwrap();
    client.ready().await.unwrap();
    let silent = rx.recv().await.unwrap();
    let s = client.session().unwrap();
    let big = Bytes::from(vec![7u8; 4096]);
    let mut refused = false;
    for _ in 0..64 {
        if s.try_send_pkg(&big).is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "a full queue refuses instead of growing");
    assert!(s.queued_writes() > 0);
    drop(silent);
    client.close().await;
}
