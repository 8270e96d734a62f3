//! getty-core over WebSocket (ws:// and wss://), over real loopback sockets; also one listener
//! and codec used unchanged on every transport.

mod transport_common;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use getty::core::{
    Client, ClientBuilder, EndpointType, Server, ServerBuilder, SessionOptions, UdpClient,
    UdpEndpoint,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use transport_common::*;

type RawWs = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_server(endpoint: SessionOptions, session: SessionOptions) -> (Server<Bytes>, Events) {
    let (l, rx) = echo();
    let srv = ServerBuilder::new("127.0.0.1:0")
        .session_options(endpoint)
        .serve_ws("/ws", setup(l, session))
        .await
        .unwrap();
    (srv, rx)
}

fn url(srv: &Server<Bytes>) -> String {
    format!("ws://127.0.0.1:{}/ws", srv.local_addr().port())
}

async fn ws_client(url: &str, opts: SessionOptions) -> (Client<Bytes>, Events) {
    let (l, rx) = echo();
    let c = ClientBuilder::new(url)
        .session_options(opts.clone())
        .connect_ws(setup(l, opts))
        .unwrap();
    c.ready().await.unwrap();
    (c, rx)
}

async fn raw_client(srv: &Server<Bytes>) -> RawWs {
    let tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    tokio_tungstenite::client_async(url(srv), tcp)
        .await
        .unwrap()
        .0
}

/// The next message that is not a ping or pong.
async fn raw_next(ws: &mut RawWs) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("timed out")
            .expect("stream ended")
            .expect("read failed");
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return m;
        }
    }
}

async fn echo_both_ways(
    srv: &Server<Bytes>,
    srx: &mut Events,
    c: &Client<Bytes>,
    crx: &mut Events,
) {
    let cs = c.session().unwrap();
    ping_pong(&cs, crx, srx, "-from-client").await;
    let ss = srv.sessions().pop().unwrap();
    ping_pong(&ss, srx, crx, "-from-server").await;
    // Each buffer of an array write is one message, hence one package.
    let bufs = vec![Bytes::from(frame(b"one")), Bytes::from(frame(b"two"))];
    ss.write_bytes_array(bufs, None).await.unwrap();
    assert_eq!(next_msg(crx).await.2, b("one"));
    assert_eq!(next_msg(crx).await.2, b("two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_echo_both_ways_and_normal_close() {
    let (srv, mut srx) = ws_server(quiet(), quiet()).await;
    let (c, mut crx) = ws_client(&url(&srv), quiet()).await;
    let (sid, st) = next_open(&mut srx).await;
    let (cid, ct) = next_open(&mut crx).await;
    assert_eq!((st, ct), (EndpointType::WsServer, EndpointType::WsClient));
    echo_both_ways(&srv, &mut srx, &c, &mut crx).await;

    // The server closes: the client sees a normal close (no on_error), and so does the server.
    srv.sessions().pop().unwrap().close();
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    assert_eq!(next(&mut crx).await, Ev::Close(cid));
    c.close().await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_is_a_normal_close_for_the_server() {
    let (srv, mut srx) = ws_server(quiet(), quiet()).await;
    let (c, mut crx) = ws_client(&url(&srv), quiet()).await;
    let (sid, _) = next_open(&mut srx).await;
    let (cid, _) = next_open(&mut crx).await;
    c.close().await;
    assert_eq!(next(&mut crx).await, Ev::Close(cid));
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sees_close_code_1000() {
    let (srv, mut srx) = ws_server(quiet(), quiet()).await;
    let mut raw = raw_client(&srv).await;
    let (sid, _) = next_open(&mut srx).await;
    srv.sessions().pop().unwrap().close();
    match raw_next(&mut raw).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        m => panic!("expected a close frame, got {m:?}"),
    }
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_messages_are_packages_too() {
    let (srv, mut srx) = ws_server(quiet(), quiet()).await;
    let mut raw = raw_client(&srv).await;
    next_open(&mut srx).await;
    let text = String::from_utf8(frame(b"ping-text")).unwrap();
    raw.send(Message::text(text)).await.unwrap();
    assert_eq!(next_msg(&mut srx).await.2, b("ping-text"));
    // Replies are binary messages, one package each.
    assert_eq!(
        raw_next(&mut raw).await,
        Message::Binary(Bytes::from(frame(b"pong-text")))
    );
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_and_pongs_move_the_active_time_without_app_data() {
    // The server pings every 50 ms; the client never does.
    let server_opts = quiet().cron_period(Duration::from_millis(50));
    let (srv, mut srx) = ws_server(server_opts.clone(), server_opts).await;
    let (c, mut crx) = ws_client(&url(&srv), quiet()).await;
    next_open(&mut srx).await;
    next_open(&mut crx).await;
    let ss = srv.sessions().pop().unwrap();
    let cs = c.session().unwrap();
    let (s0, c0) = (ss.active(), cs.active());
    // The client's time moves with the server's pings, the server's with the client's pongs.
    eventually("both active times move", || {
        ss.active() > s0 && cs.active() > c0
    })
    .await;
    let (s1, c1) = (ss.active(), cs.active());
    eventually("and keep moving", || ss.active() > s1 && cs.active() > c1).await;
    for s in [&ss, &cs] {
        let st = s.stats();
        assert_eq!((st.read_pkgs, st.write_pkgs), (0, 0), "no application data");
    }
    c.close().await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_answers_a_raw_ping_with_a_pong() {
    let (srv, mut srx) = ws_server(quiet(), quiet()).await;
    let mut raw = raw_client(&srv).await;
    next_open(&mut srx).await;
    let ss = srv.sessions().pop().unwrap();
    let before = ss.active();
    raw.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), raw.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(Bytes::from_static(b"are you there")));
    assert!(ss.active() > before);
    assert_eq!(ss.stats().read_pkgs, 0);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_the_endpoint_limit_fails_with_1009() {
    let endpoint = quiet().max_msg_len(1024);
    let (srv, mut srx) = ws_server(endpoint.clone(), endpoint).await;
    let mut raw = raw_client(&srv).await;
    let (sid, _) = next_open(&mut srx).await;
    raw.send(Message::binary(frame(&[7u8; 2000])))
        .await
        .unwrap();
    match next(&mut srx).await {
        Ev::Error(id, e) => {
            assert_eq!(id, sid);
            assert!(e.contains("max message length"), "{e}");
        }
        e => panic!("expected an error, got {e:?}"),
    }
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    match raw_next(&mut raw).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Size),
        m => panic!("expected a close frame, got {m:?}"),
    }
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_the_session_limit_is_dropped_and_counted() {
    let endpoint = quiet().max_msg_len(1024);
    let session = quiet().max_msg_len(100);
    let (srv, mut srx) = ws_server(endpoint, session).await;
    let mut raw = raw_client(&srv).await;
    next_open(&mut srx).await;
    let ss = srv.sessions().pop().unwrap();
    raw.send(Message::binary(frame(&[7u8; 500]))).await.unwrap();
    eventually("dropped", || ss.stats().dropped_pkgs == 1).await;
    raw.send(Message::binary(frame(b"ping-small")))
        .await
        .unwrap();
    assert_eq!(next_msg(&mut srx).await.2, b("ping-small"));
    assert_eq!(
        raw_next(&mut raw).await,
        Message::Binary(Bytes::from(frame(b"pong-small")))
    );
    assert!(!ss.is_closed());
    srv.close().await;
}

/// Sends a raw HTTP request and returns the response's status line.
async fn status_line(srv: &Server<Bytes>, request: &str) -> String {
    let mut tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut resp))
        .await
        .expect("the server must answer, not hang")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp).to_string();
    resp.lines().next().unwrap_or("").to_string()
}

const UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_http_errors() {
    let (srv, mut srx) = ws_server(quiet(), quiet()).await;
    let wrong_path = format!("GET /other HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n");
    assert_eq!(
        status_line(&srv, &wrong_path).await,
        "HTTP/1.1 404 Not Found"
    );
    let plain_get = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        status_line(&srv, plain_get).await,
        "HTTP/1.1 426 Upgrade Required"
    );
    let post = format!("POST /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}Content-Length: 0\r\n\r\n");
    assert_eq!(
        status_line(&srv, &post).await,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        status_line(&srv, "nonsense\r\n\r\n").await,
        "HTTP/1.1 400 Bad Request"
    );
    // The right path upgrades.
    let ok = format!("GET /ws?token=1 HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n");
    let mut tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    tcp.write_all(ok.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101 Switching Protocols"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    next_open(&mut srx).await;

    // A getty client on the wrong path fails with the status.
    let (l, _rx) = echo();
    let c = ClientBuilder::new(format!("ws://127.0.0.1:{}/nope", srv.local_addr().port()))
        .reconnect_attempts(1)
        .connect_ws(setup(l, quiet()))
        .unwrap();
    let err = c.ready().await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
    assert_eq!(srv.session_count(), 1);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_paths_are_refused_up_front() {
    let (l, _rx) = echo();
    for bad in ["127.0.0.1:80", "http://127.0.0.1/ws", "wss://127.0.0.1/ws"] {
        assert!(
            ClientBuilder::new(bad)
                .connect_ws(setup(l.clone(), quiet()))
                .is_err(),
            "{bad}"
        );
    }
    let err = ServerBuilder::new("127.0.0.1:0")
        .serve_ws("ws", setup(l, quiet()))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("path"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_echo_both_ways_and_normal_close() {
    let ours = pki();
    let (l, mut srx) = echo();
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_wss("/ws", ours.server(), setup(l, quiet()))
        .await
        .unwrap();
    let (l, mut crx) = echo();
    let c = ClientBuilder::new(format!("wss://localhost:{}/ws", srv.local_addr().port()))
        .connect_wss(ours.client(), setup(l, quiet()))
        .unwrap();
    c.ready().await.unwrap();
    let (sid, st) = next_open(&mut srx).await;
    let (cid, ct) = next_open(&mut crx).await;
    assert_eq!((st, ct), (EndpointType::WssServer, EndpointType::WssClient));
    echo_both_ways(&srv, &mut srx, &c, &mut crx).await;
    c.close().await;
    assert_eq!(next(&mut crx).await, Ev::Close(cid));
    assert_eq!(next(&mut srx).await, Ev::Close(sid));

    // A client that does not trust the server's CA never gets a session.
    // Trusts another CA only.
    let other = pki().client();
    let (l, _rx) = echo();
    let c = ClientBuilder::new(format!("wss://127.0.0.1:{}/ws", srv.local_addr().port()))
        .reconnect_attempts(1)
        .connect_wss(other, setup(l, quiet()))
        .unwrap();
    let err = c.ready().await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    quiet_for(&mut srx, Duration::from_millis(50)).await;
    srv.close().await;
}

/// A transport's name, its server and events, its client and events.
type Pair = (&'static str, Server<Bytes>, Events, Client<Bytes>, Events);

/// The same listener type and the same codec on every transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listener_and_codec_on_tcp_udp_ws_tls_wss() {
    let pki = pki();
    let mut pairs: Vec<Pair> = Vec::new();

    let (l, srx) = echo();
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tcp(setup(l, quiet()))
        .await
        .unwrap();
    let (l, crx) = echo();
    let c = ClientBuilder::new(srv.local_addr().to_string())
        .connect_tcp(setup(l, quiet()))
        .unwrap();
    pairs.push(("tcp", srv, srx, c, crx));

    let (l, srx) = echo();
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tls(pki.server(), setup(l, quiet()))
        .await
        .unwrap();
    let (l, crx) = echo();
    let c = ClientBuilder::new(srv.local_addr().to_string())
        .connect_tls(pki.client(), setup(l, quiet()))
        .unwrap();
    pairs.push(("tls", srv, srx, c, crx));

    let (l, srx) = echo();
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_ws("/ws", setup(l, quiet()))
        .await
        .unwrap();
    let (l, crx) = echo();
    let c = ClientBuilder::new(url(&srv))
        .connect_ws(setup(l, quiet()))
        .unwrap();
    pairs.push(("ws", srv, srx, c, crx));

    let (l, srx) = echo();
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_wss("/ws", pki.server(), setup(l, quiet()))
        .await
        .unwrap();
    let (l, crx) = echo();
    let c = ClientBuilder::new(format!("wss://localhost:{}/ws", srv.local_addr().port()))
        .connect_wss(pki.client(), setup(l, quiet()))
        .unwrap();
    pairs.push(("wss", srv, srx, c, crx));

    for (name, srv, srx, c, crx) in &mut pairs {
        c.ready().await.unwrap();
        next_open(srx).await;
        next_open(crx).await;
        let cs = c.session().unwrap();
        ping_pong(&cs, crx, srx, &format!("-{name}-c")).await;
        let ss = srv.sessions().pop().unwrap();
        ping_pong(&ss, srx, crx, &format!("-{name}-s")).await;
    }

    let (l, mut erx) = echo();
    let ep = UdpEndpoint::bind("127.0.0.1:0", quiet(), setup(l, quiet()))
        .await
        .unwrap();
    let (l, mut crx) = echo();
    let uc = UdpClient::connect(ep.local_addr().to_string(), quiet(), setup(l, quiet()))
        .await
        .unwrap();
    next_open(&mut erx).await;
    next_open(&mut crx).await;
    ping_pong(&uc.session(), &mut crx, &mut erx, "-udp-c").await;
    let to_client = ep.session().to_peer(uc.local_addr());
    ping_pong(&to_client, &mut erx, &mut crx, "-udp-s").await;

    for (_, srv, _, c, _) in &pairs {
        c.close().await;
        srv.close().await;
    }
    uc.close().await;
    ep.close().await;
}
