//! getty-core over TCP: real loopback sockets, one test per rule of the session layer.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use getty::core::{
    AttrKey, ClientBuilder, ClientState, Error, EventListener, LengthPrefixed, Server,
    ServerBuilder, Session, SessionConfig, SessionOptions, SocketOptions, TaskPool, TokioCodec,
    new_session,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn opts() -> SessionOptions {
    SessionOptions::default().cron_period(Duration::from_secs(3600))
}

async fn echo_server(
    o: SessionOptions,
) -> (Server<Bytes>, tokio::sync::mpsc::UnboundedReceiver<Ev>) {
    let (l, rx) = recorder(true);
    let s = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(setup(l, o))
        .await
        .unwrap();
    (s, rx)
}

async fn read_frame(c: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 4];
    c.read_exact(&mut h).await.unwrap();
    let mut b = vec![0u8; u32::from_be_bytes(h) as usize];
    c.read_exact(&mut b).await.unwrap();
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_port_open_echo_and_close_events() {
    let (srv, mut srx) = echo_server(opts()).await;
    assert_ne!(srv.local_addr().port(), 0);
    let (cl, mut crx) = recorder(false);
    let client = ClientBuilder::new(srv.local_addr().to_string())
        .connect_tcp(setup(cl, opts()))
        .unwrap();
    client.ready().await.unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    let Ev::Open(cid) = next(&mut crx).await else {
        panic!()
    };
    let s = client.session().unwrap();
    assert_eq!(s.id(), cid);
    let n = s
        .write_pkg(&Bytes::from_static(b"hello"), None)
        .await
        .unwrap();
    assert_eq!(n, 9, "4-byte header + 5-byte body");
    assert_eq!(
        next(&mut srx).await,
        Ev::Msg(sid, Bytes::from_static(b"hello"))
    );
    assert_eq!(
        next(&mut crx).await,
        Ev::Msg(cid, Bytes::from_static(b"hello"))
    );
    let st = s.stats();
    assert_eq!(
        (st.write_bytes, st.write_pkgs, st.read_pkgs, st.read_bytes),
        (9, 1, 1, 9)
    );
    assert!(s.stat().contains("write bytes: 9"), "{}", s.stat());
    assert!(s.stat().contains("TCP_CLIENT"), "{}", s.stat());
    assert_eq!(srv.session_count(), 1);
    client.close().await;
    assert_eq!(next(&mut crx).await, Ev::Close(cid));
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    assert!(matches!(client.state(), ClientState::Closed));
    srv.close().await;
    // close is idempotent
    srv.close().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_many_in_one_read_split_and_larger_than_read_buffer() {
    let o = opts().read_buf_size(1024);
    let (srv, mut srx) = echo_server(o).await;
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    // three packages in one write
    let mut all = Vec::new();
    for b in [&b"a"[..], b"bb", b"ccc"] {
        all.extend(frame(b));
    }
    c.write_all(&all).await.unwrap();
    for b in [&b"a"[..], b"bb", b"ccc"] {
        assert_eq!(
            next(&mut srx).await,
            Ev::Msg(sid, Bytes::copy_from_slice(b))
        );
    }
    // one package a byte at a time
    for byte in frame(b"split") {
        c.write_all(&[byte]).await.unwrap();
        c.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        next(&mut srx).await,
        Ev::Msg(sid, Bytes::from_static(b"split"))
    );
    // a package 100x the read buffer, followed by a small one in the same write
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = frame(&big);
    w.extend(frame(b"tail"));
    c.write_all(&w).await.unwrap();
    assert_eq!(next(&mut srx).await, Ev::Msg(sid, Bytes::from(big.clone())));
    assert_eq!(
        next(&mut srx).await,
        Ev::Msg(sid, Bytes::from_static(b"tail"))
    );
    // the echoes come back intact and in order
    for b in [&b"a"[..], b"bb", b"ccc", b"split", &big, b"tail"] {
        assert_eq!(read_frame(&mut c).await, b);
    }
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_package_closes_before_the_body_arrives() {
    let o = opts().max_msg_len(1024);
    let (srv, mut srx) = echo_server(o).await;
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    // at the limit is fine (4 header + 1020 body = 1024)
    c.write_all(&frame(&[7u8; 1020])).await.unwrap();
    assert!(matches!(next(&mut srx).await, Ev::Msg(id, b) if id == sid && b.len() == 1020));
    // a header claiming ~4 GiB, and no body at all: the session must fail on the header alone
    c.write_all(&[0xff, 0xff, 0xff, 0xf0]).await.unwrap();
    match next(&mut srx).await {
        Ev::Error(id, e) => {
            assert_eq!(id, sid);
            assert!(e.contains("exceeds the max message length 1024"), "{e}");
        }
        e => panic!("expected an error, got {e:?}"),
    }
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    let _ = read_frame(&mut c).await; // the echo of the valid package
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "peer sees the close");
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_never_interleave_and_order_is_kept() {
    let (srv, mut srx) = echo_server(opts()).await;
    let (cl, _crx) = recorder(false);
    let client = ClientBuilder::new(srv.local_addr().to_string())
        .connect_tcp(setup(cl, opts()))
        .unwrap();
    client.ready().await.unwrap();
    let s = client.session().unwrap();
    let Ev::Open(_) = next(&mut srx).await else {
        panic!()
    };
    // 8 tasks each send 200 packages of a distinct size and fill byte
    let mut tasks = Vec::new();
    for t in 0..8u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200u32 {
                let mut body = vec![t; 1000 + t as usize * 37];
                body[..4].copy_from_slice(&i.to_be_bytes());
                s.send_pkg(&Bytes::from(body)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut next_i = [0u32; 8];
    for _ in 0..1600 {
        let Ev::Msg(_, b) = next_non_cron(&mut srx).await else {
            panic!()
        };
        let t = b[4];
        assert!(
            b[4..].iter().all(|&x| x == t),
            "bytes of two packages interleaved"
        );
        assert_eq!(b.len(), 1000 + t as usize * 37);
        let i = u32::from_be_bytes(b[..4].try_into().unwrap());
        assert_eq!(
            i, next_i[t as usize],
            "packages of one writer arrive in order"
        );
        next_i[t as usize] += 1;
    }
    client.close().await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_bytes_and_vectored_array() {
    let (srv, mut srx) = echo_server(opts()).await;
    let (cl, _crx) = recorder(false);
    let client = ClientBuilder::new(srv.local_addr().to_string())
        .connect_tcp(setup(cl, opts()))
        .unwrap();
    client.ready().await.unwrap();
    let s = client.session().unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    let n = s
        .write_bytes(Bytes::from(frame(b"raw")), None)
        .await
        .unwrap();
    assert_eq!(n, 7);
    let bufs = vec![
        Bytes::from(frame(b"x")),
        Bytes::from(frame(b"yy")),
        Bytes::from(frame(b"zzz")),
    ];
    assert_eq!(s.write_bytes_array(bufs, None).await.unwrap(), 5 + 6 + 7);
    for b in [&b"raw"[..], b"x", b"yy", b"zzz"] {
        assert_eq!(
            next(&mut srx).await,
            Ev::Msg(sid, Bytes::copy_from_slice(b))
        );
    }
    assert_eq!(s.stats().write_pkgs, 4);
    client.close().await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_error_gives_on_error_then_on_close_once() {
    struct Strict;
    impl getty::core::Reader<Bytes> for Strict {
        fn read(&self, buf: &[u8]) -> Result<getty::core::Decoded<Bytes>, getty::core::CodecError> {
            if buf.first() == Some(&b'!') {
                return Err(getty::core::CodecError::msg("bang is not allowed"));
            }
            LengthPrefixed.read(buf)
        }
        // A wrapper that delegates `read` delegates `read_owned` too.
        fn read_owned(&self, pkg: Bytes) -> Result<Bytes, getty::core::CodecError> {
            LengthPrefixed.read_owned(pkg)
        }
    }
    let (l, mut srx) = recorder(false);
    let l2: Arc<dyn EventListener<Bytes>> = l;
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(new_session(move |c: &mut SessionConfig<Bytes>| {
            c.set_reader(Arc::new(Strict))
                .set_writer(Arc::new(LengthPrefixed))
                .set_event_listener(l2.clone());
            Ok(())
        }))
        .await
        .unwrap();
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    c.write_all(b"!!!!").await.unwrap();
    match next(&mut srx).await {
        Ev::Error(id, e) => {
            assert_eq!(id, sid);
            assert!(e.contains("bang is not allowed"), "{e}");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    srv.close().await;
    assert!(srx.try_recv().is_err(), "no second on_close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_eof_is_a_plain_close_and_a_cut_package_is_an_error() {
    // No echo: unread echoed bytes would turn the client's close into a reset.
    let (l, mut srx) = recorder(false);
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(setup(l, opts()))
        .await
        .unwrap();
    let c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    drop(c);
    assert_eq!(next(&mut srx).await, Ev::Close(sid));

    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    c.write_all(&frame(b"whole")).await.unwrap();
    c.write_all(&frame(b"cut-off body")[..8]).await.unwrap();
    assert_eq!(
        next(&mut srx).await,
        Ev::Msg(sid, Bytes::from_static(b"whole"))
    );
    drop(c);
    match next(&mut srx).await {
        Ev::Error(id, e) => assert!(id == sid && e.contains("unfinished package"), "{e}"),
        e => panic!("{e:?}"),
    }
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_open_and_new_session_callback_can_reject() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let l: Arc<dyn EventListener<Bytes>> = Arc::new(Recorder {
        tx,
        echo: false,
        reject: true,
    });
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(setup(l, opts()))
        .await
        .unwrap();
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "rejected connection is closed");
    srv.close().await;
    assert!(
        rx.try_recv().is_err(),
        "no open, no close for a rejected session"
    );

    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(new_session(|_c: &mut SessionConfig<Bytes>| {
            Err("no thanks".to_string())
        }))
        .await
        .unwrap();
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)));
    assert_eq!(srv.session_count(), 0);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_callbacks_replace_in_place_run_in_order_once_and_survive_panics() {
    let (srv, mut srx) = echo_server(opts()).await;
    let _c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(_) = next(&mut srx).await else {
        panic!()
    };
    let s = srv.sessions().pop().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let add = |h: &str, k: &str, tag: &'static str| {
        let log = log.clone();
        s.add_close_callback(h, k, move || log.lock().unwrap().push(tag))
    };
    assert!(add("h", "a", "A"));
    assert!(add("h", "b", "B"));
    assert!(s.add_close_callback("h", "p", || panic!("callback boom")));
    assert!(add("h", "c", "C"));
    assert!(add("h", "b", "B2")); // replaces B, keeps its place
    assert!(!s.remove_close_callback("h", "missing"));
    assert!(add("other", "a", "OA")); // same key, other handler: a different entry
    assert!(s.remove_close_callback("other", "a"));
    assert_eq!(s.close_callback_count(), 4);
    s.close();
    s.closed().await;
    assert_eq!(*log.lock().unwrap(), vec!["A", "B2", "C"]);
    assert!(!add("h", "late", "L"), "no adds after close");
    assert_eq!(
        *log.lock().unwrap(),
        vec!["A", "B2", "C"],
        "callbacks run once"
    );
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_ticks_each_period_and_stops_after_close() {
    let o = SessionOptions::default().cron_period(Duration::from_millis(50));
    let (srv, mut srx) = echo_server(o).await;
    let _c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = srv.sessions().pop().unwrap();
    s.close();
    s.closed().await;
    let mut crons = 0;
    let mut closed = false;
    while let Ok(e) = srx.try_recv() {
        match e {
            Ev::Cron(id) => {
                assert!(!closed, "cron after close");
                assert_eq!(id, sid);
                crons += 1;
            }
            Ev::Close(_) => closed = true,
            _ => {}
        }
    }
    assert!(closed);
    assert!(
        (6..=13).contains(&crons),
        "about 11 ticks in 600 ms, got {crons}"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(srx.try_recv().is_err(), "nothing after close");
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_time_moves_on_reads_never_on_writes() {
    let (srv, mut srx) = echo_server(opts()).await;
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(_) = next(&mut srx).await else {
        panic!()
    };
    let s = srv.sessions().pop().unwrap();
    let t0 = s.active();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_pkg(&Bytes::from_static(b"server speaks"), None)
        .await
        .unwrap();
    assert_eq!(read_frame(&mut c).await, b"server speaks");
    assert_eq!(s.active(), t0, "a write does not move the active time");
    assert!(s.idle() >= Duration::from_millis(50));
    c.write_all(&frame(b"client speaks")).await.unwrap();
    let Ev::Msg(..) = next(&mut srx).await else {
        panic!()
    };
    assert!(s.active() > t0, "a received package moves it");
    let t1 = s.active();
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.update_active();
    assert!(s.active() > t1);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_is_not_an_idle_timeout_but_stalls_a_partial_package() {
    let o = opts().read_timeout(Duration::from_millis(100));
    let (srv, mut srx) = echo_server(o).await;
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !srv.sessions()[0].is_closed(),
        "idle for 3 read timeouts and still open"
    );
    c.write_all(&frame(b"still here")).await.unwrap();
    assert_eq!(
        next(&mut srx).await,
        Ev::Msg(sid, Bytes::from_static(b"still here"))
    );
    c.write_all(&frame(b"half")[..5]).await.unwrap();
    match next(&mut srx).await {
        Ev::Error(_, e) => assert!(e.contains("read timeout"), "{e}"),
        e => panic!("{e:?}"),
    }
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_are_typed() {
    const USER: AttrKey<String> = AttrKey::new("user");
    const HITS: AttrKey<u32> = AttrKey::new("user"); // same name, other type: another slot
    let (srv, mut srx) = echo_server(opts()).await;
    let _c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(_) = next(&mut srx).await else {
        panic!()
    };
    let s = srv.sessions().pop().unwrap();
    assert_eq!(s.attr(&USER), None);
    assert_eq!(s.set_attr(&USER, "ann".to_string()), None);
    s.set_attr(&HITS, 3);
    assert_eq!(s.attr(&USER).as_deref(), Some("ann"));
    assert_eq!(s.attr(&HITS), Some(3));
    assert_eq!(s.remove_attr(&USER).as_deref(), Some("ann"));
    assert_eq!(s.attr(&USER), None);
    assert_eq!(s.attr(&HITS), Some(3));
    s.close();
    s.closed().await;
    assert_eq!(s.attr(&HITS), None, "cleared on close");
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cap_closes_the_extra_connection() {
    let (l, mut srx) = recorder(false);
    let srv = ServerBuilder::new("127.0.0.1:0")
        .max_sessions(2)
        .serve_tcp(setup(l, opts()))
        .await
        .unwrap();
    let _a = TcpStream::connect(srv.local_addr()).await.unwrap();
    let _b = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(_) = next(&mut srx).await else {
        panic!()
    };
    let Ev::Open(_) = next(&mut srx).await else {
        panic!()
    };
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "third connection closed");
    assert_eq!(srv.session_count(), 2);
    drop(_a);
    let Ev::Close(_) = next(&mut srx).await else {
        panic!()
    };
    let _d = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(_) = next(&mut srx).await else {
        panic!()
    };
    assert_eq!(srv.session_count(), 2);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_flushes_queued_writes() {
    let (srv, mut srx) = echo_server(opts()).await;
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    let Ev::Open(_) = next(&mut srx).await else {
        panic!()
    };
    let s = srv.sessions().pop().unwrap();
    for i in 0..500u32 {
        s.send_pkg(&Bytes::from(i.to_be_bytes().repeat(250)))
            .await
            .unwrap();
    }
    srv.close().await; // closes the session; queued writes must still go out
    for i in 0..500u32 {
        assert_eq!(read_frame(&mut c).await, i.to_be_bytes().repeat(250));
    }
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).await.unwrap(),
        0,
        "then a clean EOF"
    );
    assert!(matches!(
        s.write_pkg(&Bytes::new(), None).await,
        Err(Error::SessionClosed(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_bounds_the_queue_and_a_stalled_peer_times_out() {
    let o = opts()
        .write_queue_len(4)
        .write_timeout(Duration::from_millis(500));
    let (l, mut srx) = recorder(false);
    let srv = ServerBuilder::new("127.0.0.1:0")
        .socket_options(SocketOptions::default().send_buffer_size(8 << 10))
        .serve_tcp(setup(l, o))
        .await
        .unwrap();
    // A peer that never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(8 << 10).unwrap();
    let _c = sock.connect(srv.local_addr()).await.unwrap();
    let Ev::Open(sid) = next(&mut srx).await else {
        panic!()
    };
    let s = srv.sessions().pop().unwrap();
    let pkg = Bytes::from(vec![1u8; 64 << 10]);
    let mut accepted = 0;
    let err = loop {
        match s.write_pkg(&pkg, Some(Duration::from_millis(200))).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 200, "writes never pushed back");
    };
    assert!(
        matches!(
            err,
            Error::WriteTimeout { .. } | Error::Io { .. } | Error::SessionClosed(_)
        ),
        "{err}"
    );
    // The writer's own socket write times out and ends the session with that error.
    loop {
        match next(&mut srx).await {
            Ev::Error(id, e) => {
                assert_eq!(id, sid);
                assert!(e.contains("did not complete within"), "{e}");
                break;
            }
            Ev::Close(_) => panic!("close without error"),
            _ => {}
        }
    }
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_the_server_is_killed_and_restarted() {
    let (srv, srx) = echo_server(opts()).await;
    let addr = srv.local_addr();
    let (cl, mut crx) = recorder(false);
    let client = ClientBuilder::new(addr.to_string())
        .connections(3)
        .reconnect_interval(Duration::from_millis(20))
        .reconnect_attempts(0)
        .connect_tcp(setup(cl, opts()))
        .unwrap();
    client.ready().await.unwrap();
    assert_eq!(client.session_count(), 3);
    srv.close().await;
    let mut closes = 0;
    while closes < 3 {
        if let Ev::Close(_) = next_non_cron(&mut crx).await {
            closes += 1;
        }
    }
    eventually("client notices", || {
        !matches!(client.state(), ClientState::Ready)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await; // a few failed attempts while down
    let (l, mut srx2) = recorder(true);
    let srv2 = ServerBuilder::new(addr.to_string())
        .serve_tcp(setup(l, opts()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), client.ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.session_count(), 3);
    let s = client.session().unwrap();
    s.write_pkg(&Bytes::from_static(b"back"), None)
        .await
        .unwrap();
    loop {
        if let Ev::Msg(_, b) = next(&mut srx2).await {
            assert_eq!(b, "back");
            break;
        }
    }
    drop(srx);
    client.close().await;
    srv2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_is_retried_and_the_attempt_limit_is_reported() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let (cl, _crx) = recorder(false);
    let client = ClientBuilder::new(addr.to_string())
        .reconnect_interval(Duration::from_millis(10))
        .reconnect_attempts(4)
        .connect_tcp(setup(cl.clone(), opts()))
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), client.ready())
        .await
        .expect("gives up, does not hang")
        .unwrap_err();
    assert!(
        matches!(err, Error::ReconnectExhausted { attempts: 4, .. }),
        "{err}"
    );
    assert!(matches!(client.state(), ClientState::Failed(_)));
    client.close().await;

    // Down at start, up a little later: the same retry loop connects.
    let client = ClientBuilder::new(addr.to_string())
        .reconnect_interval(Duration::from_millis(20))
        .reconnect_attempts(0)
        .connect_tcp(setup(cl, opts()))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(client.state(), ClientState::Connecting));
    let (l, _srx) = recorder(true);
    let srv = ServerBuilder::new(addr.to_string())
        .serve_tcp(setup(l, opts()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), client.ready())
        .await
        .unwrap()
        .unwrap();
    client.close().await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_pool_keeps_a_slow_handler_from_stalling_other_sessions() {
    struct Slow(tokio::sync::mpsc::UnboundedSender<Bytes>);
    impl EventListener<Bytes> for Slow {
        fn on_message(&self, s: &Session<Bytes>, pkg: Bytes) {
            if pkg == "slow" {
                std::thread::sleep(Duration::from_millis(1500));
            }
            let _ = self.0.send(pkg.clone());
            let s = s.clone();
            tokio::spawn(async move { s.send_pkg(&pkg).await });
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let l: Arc<dyn EventListener<Bytes>> = Arc::new(Slow(tx));
    let srv = ServerBuilder::new("127.0.0.1:0")
        .task_pool(TaskPool::new(4, 64).unwrap())
        .serve_tcp(setup(l, opts()))
        .await
        .unwrap();
    let mut a = TcpStream::connect(srv.local_addr()).await.unwrap();
    let mut b = TcpStream::connect(srv.local_addr()).await.unwrap();
    a.write_all(&frame(b"slow")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = std::time::Instant::now();
    b.write_all(&frame(b"quick")).await.unwrap();
    assert_eq!(read_frame(&mut b).await, b"quick");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "quick reply waited {:?}",
        t.elapsed()
    );
    assert_eq!(rx.recv().await.unwrap(), "quick");
    assert_eq!(read_frame(&mut a).await, b"slow");
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_util_codec_frames_a_session() {
    use tokio_util::codec::LinesCodec;
    struct Upper;
    impl EventListener<String> for Upper {
        fn on_message(&self, s: &Session<String>, line: String) {
            let s = s.clone();
            tokio::spawn(async move { s.send_pkg(&line.to_uppercase()).await });
        }
    }
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(new_session(|c: &mut SessionConfig<String>| {
            c.set_tokio_codec(TokioCodec::new(LinesCodec::new_with_max_length(64)))
                .set_event_listener(Arc::new(Upper));
            Ok(())
        }))
        .await
        .unwrap();
    let mut c = TcpStream::connect(srv.local_addr()).await.unwrap();
    c.write_all(b"hello\nwor").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.write_all(b"ld\n").await.unwrap();
    let mut got = vec![0u8; 12];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, b"HELLO\nWORLD\n");
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_closes_only_its_session() {
    struct Boom(AtomicUsize);
    impl EventListener<Bytes> for Boom {
        fn on_message(&self, s: &Session<Bytes>, pkg: Bytes) {
            if pkg == "panic" {
                panic!("handler bug");
            }
            self.0.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move { s.send_pkg(&pkg).await });
        }
    }
    let l = Arc::new(Boom(AtomicUsize::new(0)));
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(setup(l.clone(), opts()))
        .await
        .unwrap();
    let mut a = TcpStream::connect(srv.local_addr()).await.unwrap();
    let mut b = TcpStream::connect(srv.local_addr()).await.unwrap();
    a.write_all(&frame(b"panic")).await.unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)));
    b.write_all(&frame(b"fine")).await.unwrap();
    assert_eq!(read_frame(&mut b).await, b"fine");
    srv.close().await;
}

/// The listen backlog a listening socket was given, as `ss` reports it (its Send-Q column).
fn listen_backlog(port: u16) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}: {text}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_backlog_is_the_default_or_the_one_set() {
    let (l, _rx) = recorder(true);
    let s = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(setup(l, opts()))
        .await
        .unwrap();
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = getty::core::endpoint::server::DEFAULT_BACKLOG.min(somaxconn);
    assert_eq!(listen_backlog(s.local_addr().port()), want);
    let (l, _rx) = recorder(true);
    let small = ServerBuilder::new("127.0.0.1:0")
        .backlog(7)
        .serve_tcp(setup(l, opts()))
        .await
        .unwrap();
    assert_eq!(listen_backlog(small.local_addr().port()), 7);
    // Still a working server.
    let mut c = TcpStream::connect(small.local_addr()).await.unwrap();
    c.write_all(&[0, 0, 0, 2, b'h', b'i']).await.unwrap();
    assert_eq!(read_frame(&mut c).await, b"hi");
}

/// Packages are encoded into a buffer the session keeps (small ones share one allocation): a
/// package the writer fails on, after writing part of it, must leave nothing behind, and
/// packages below, at and above the buffer's block size must all arrive whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_encode_leaves_no_bytes_and_every_size_arrives_whole() {
    struct HalfWriter;
    impl getty::core::Writer<Bytes> for HalfWriter {
        fn write(
            &self,
            pkg: &Bytes,
            dst: &mut bytes::BytesMut,
        ) -> Result<(), getty::core::CodecError> {
            if pkg.starts_with(b"bad") {
                // A header that promises a body, then a refusal.
                dst.extend_from_slice(&[0, 0, 0, 9, b'x']);
                return Err(getty::core::CodecError::msg("refused"));
            }
            LengthPrefixed.write(pkg, dst)
        }
    }
    let (srv, mut srx) = echo_server(opts()).await;
    let (cl, _crx) = recorder(false);
    let cl: Arc<dyn EventListener<Bytes>> = cl;
    let client = ClientBuilder::new(srv.local_addr().to_string())
        .connect_tcp(new_session(move |c: &mut SessionConfig<Bytes>| {
            c.set_reader(Arc::new(LengthPrefixed))
                .set_writer(Arc::new(HalfWriter))
                .set_event_listener(cl.clone())
                .set_options(opts());
            Ok(())
        }))
        .unwrap();
    client.ready().await.unwrap();
    let s = client.session().unwrap();
    let Ev::Open(_) = next(&mut srx).await else {
        panic!()
    };
    let sizes: Vec<usize> = (0..300).map(|i| 1 + (i * 997) % 9000).collect();
    for (i, &n) in sizes.iter().enumerate() {
        if i % 7 == 0 {
            let e = s
                .try_send_pkg(&Bytes::from_static(b"bad package"))
                .unwrap_err();
            assert!(matches!(e, Error::Encode { .. }), "{e}");
        }
        let body: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
        s.send_pkg(&Bytes::from(body)).await.unwrap();
    }
    for (i, &n) in sizes.iter().enumerate() {
        let Ev::Msg(_, b) = next_non_cron(&mut srx).await else {
            panic!()
        };
        assert_eq!(b.len(), n, "package {i}");
        assert!(
            b.iter().enumerate().all(|(j, &x)| x == (i + j) as u8),
            "package {i} arrived whole"
        );
    }
    client.close().await;
    srv.close().await;
}
