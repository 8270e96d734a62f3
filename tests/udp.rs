//! getty-core over UDP: an endpoint serving several peers through one session, and connected
//! clients, over real loopback sockets.

mod transport_common;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use getty::core::{
    ClientBuilder, CodecError, Decoded, EndpointType, Error, LengthPrefixed, Reader, ServerBuilder,
    SessionConfig, SessionOptions, UdpClient, UdpEndpoint, Writer, new_session,
};
use tokio::net::UdpSocket;
use transport_common::*;

async fn endpoint(opts: SessionOptions) -> (UdpEndpoint<Bytes>, Events) {
    let (l, rx) = echo();
    let ep = UdpEndpoint::bind("127.0.0.1:0", opts.clone(), setup(l, opts))
        .await
        .unwrap();
    (ep, rx)
}

async fn client(addr: std::net::SocketAddr) -> (UdpClient<Bytes>, Events) {
    let (l, rx) = echo();
    let c = UdpClient::connect(addr.to_string(), quiet(), setup(l, quiet()))
        .await
        .unwrap();
    (c, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_both_ways_with_replies_routed_to_each_sender() {
    let (ep, mut erx) = endpoint(quiet()).await;
    let (eid, et) = next_open(&mut erx).await;
    assert_eq!(et, EndpointType::UdpEndpoint);
    assert_eq!(ep.session().id(), eid);

    let (c1, mut c1rx) = client(ep.local_addr()).await;
    let (c2, mut c2rx) = client(ep.local_addr()).await;
    assert_eq!(next_open(&mut c1rx).await.1, EndpointType::UdpClient);
    assert_eq!(next_open(&mut c2rx).await.1, EndpointType::UdpClient);
    assert_eq!(c1.peer_addr(), ep.local_addr());
    assert_eq!(c1.session().remote_addr(), Some(ep.local_addr()));

    // Client to endpoint: each client gets its own answer, and the endpoint's handle in
    // on_message is bound to the sender.
    for (c, rx, tag) in [(&c1, &mut c1rx, "-1"), (&c2, &mut c2rx, "-2")] {
        let ping = b(&format!("ping{tag}"));
        c.session().write_pkg(&ping, None).await.unwrap();
        assert_eq!(next_msg(&mut erx).await, (eid, Some(c.local_addr()), ping));
        assert_eq!(next_msg(rx).await.2, b(&format!("pong{tag}")));
    }

    // Endpoint to client, first: a handle bound to the client's address.
    let to_c2 = ep.session().to_peer(c2.local_addr());
    to_c2
        .write_pkg(&b("ping-from-endpoint"), None)
        .await
        .unwrap();
    assert_eq!(next_msg(&mut c2rx).await.2, b("ping-from-endpoint"));
    assert_eq!(
        next_msg(&mut erx).await,
        (eid, Some(c2.local_addr()), b("pong-from-endpoint"))
    );

    // One datagram per buffer of a write_bytes_array.
    let bufs = vec![Bytes::from(frame(b"one")), Bytes::from(frame(b"two"))];
    to_c2.write_bytes_array(bufs, None).await.unwrap();
    assert_eq!(next_msg(&mut c2rx).await.2, b("one"));
    assert_eq!(next_msg(&mut c2rx).await.2, b("two"));

    // The endpoint's own handle has no peer.
    let err = ep.session().write_pkg(&b("x"), None).await.unwrap_err();
    assert!(matches!(err, Error::NoPeerAddr { .. }), "{err}");
    assert!(matches!(
        ep.session().try_send_pkg(&b("x")),
        Err(Error::NoPeerAddr { .. })
    ));

    let st = ep.session().stats();
    assert_eq!((st.read_pkgs, st.dropped_pkgs), (3, 0));
    assert_eq!(st.write_pkgs, 5);

    c1.close().await;
    c2.close().await;
    assert!(matches!(next(&mut c1rx).await, Ev::Close(_)));
    ep.close().await;
    assert_eq!(next(&mut erx).await, Ev::Close(eid));
    assert!(ep.is_closed());
    ep.close().await;
}

/// LengthPrefixed, except that it refuses the package `reject`.
struct Picky;

impl Reader<Bytes> for Picky {
    fn read(&self, buf: &[u8]) -> Result<Decoded<Bytes>, CodecError> {
        LengthPrefixed.read(buf)
    }
    fn read_owned(&self, pkg: Bytes) -> Result<Bytes, CodecError> {
        match LengthPrefixed.read_owned(pkg)? {
            p if p == "reject" => Err(CodecError::msg("refused")),
            p => Ok(p),
        }
    }
}

impl Writer<Bytes> for Picky {
    fn write(&self, pkg: &Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        LengthPrefixed.write(pkg, dst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_incomplete_and_rejected_datagrams_are_dropped_and_counted() {
    let max = 100;
    let opts = quiet().max_msg_len(max);
    let (l, mut erx) = echo();
    let o = opts.clone();
    let cb = new_session(move |c: &mut SessionConfig<Bytes>| {
        c.set_pkg_handler(Arc::new(Picky))
            .set_event_listener(l.clone())
            .set_options(o.clone());
        Ok(())
    });
    let ep = ServerBuilder::new("127.0.0.1:0")
        .session_options(opts)
        .serve_udp(cb)
        .await
        .unwrap();
    let (eid, _) = next_open(&mut erx).await;
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    raw.connect(ep.local_addr()).await.unwrap();
    let s = ep.session();

    // Exactly the max length is accepted.
    let at_max = frame(&vec![b'a'; max - 4]);
    raw.send(&at_max).await.unwrap();
    assert_eq!(next_msg(&mut erx).await.2.len(), max - 4);
    // One byte over is dropped, and so is a far larger one.
    raw.send(&frame(&vec![b'b'; max - 3])).await.unwrap();
    raw.send(&frame(&vec![b'c'; 60_000])).await.unwrap();
    eventually("2 dropped", || s.stats().dropped_pkgs == 2).await;
    // A datagram holding less than its header announces.
    let mut short = frame(b"0123456789");
    short.truncate(8);
    raw.send(&short).await.unwrap();
    eventually("3 dropped", || s.stats().dropped_pkgs == 3).await;
    // A datagram the reader refuses.
    raw.send(&frame(b"reject")).await.unwrap();
    eventually("4 dropped", || s.stats().dropped_pkgs == 4).await;

    // The session is still up and serving.
    raw.send(&frame(b"ping-after")).await.unwrap();
    assert_eq!(next_msg(&mut erx).await.2, b("ping-after"));
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], &frame(b"pong-after")[..]);
    let st = s.stats();
    assert_eq!((st.read_pkgs, st.dropped_pkgs), (2, 4));
    assert!(!s.is_closed());
    ep.close().await;
    assert_eq!(next(&mut erx).await, Ev::Close(eid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_up_to_64k_with_unlimited_length() {
    let opts = quiet().max_msg_len(0);
    let (ep, mut erx) = endpoint(opts).await;
    next_open(&mut erx).await;
    let (c, mut crx) = client(ep.local_addr()).await;
    next_open(&mut crx).await;
    let mut big = b"ping".to_vec();
    big.resize(60_000, b'x');
    c.session()
        .write_pkg(&Bytes::from(big.clone()), None)
        .await
        .unwrap();
    assert_eq!(next_msg(&mut erx).await.2.len(), 60_000);
    let pong = next_msg(&mut crx).await.2;
    assert_eq!((&pong[..4], pong.len()), (&b"pong"[..], 60_000));
    c.close().await;
    ep.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_survives_port_unreachable() {
    // A port with nothing behind it (yet).
    let port = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (l, mut crx) = echo();
    let c = ClientBuilder::new(port.to_string())
        .session_options(quiet())
        .connect_udp(setup(l, quiet()))
        .await
        .unwrap();
    next_open(&mut crx).await;
    // The kernel answers with ICMP port unreachable, reported on the connected socket.
    for _ in 0..3 {
        c.session().write_pkg(&b("lost"), None).await.unwrap();
    }
    quiet_for(&mut crx, Duration::from_millis(200)).await;
    assert!(!c.is_closed());

    // Once something listens there, the same session reaches it.
    let (l, mut erx) = echo();
    let ep = UdpEndpoint::bind(port.to_string(), quiet(), setup(l, quiet()))
        .await
        .unwrap();
    next_open(&mut erx).await;
    c.session().write_pkg(&b("ping-late"), None).await.unwrap();
    assert_eq!(next_msg(&mut erx).await.2, b("ping-late"));
    assert_eq!(next_msg(&mut crx).await.2, b("pong-late"));
    c.close().await;
    ep.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_by_the_callback_or_bad_address() {
    let cb = new_session(|_: &mut SessionConfig<Bytes>| Err("no".to_string()));
    let err = UdpEndpoint::bind("127.0.0.1:0", quiet(), cb)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    let (l, _rx) = echo();
    let err = UdpClient::connect("not an address", quiet(), setup(l, quiet()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}
