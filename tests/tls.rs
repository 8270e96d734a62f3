//! getty-core over TCP+TLS, over real loopback sockets, with certificates made at run time.

mod transport_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use getty::core::tls::rustls;
use getty::core::{
    Client, ClientBuilder, ClientState, EndpointType, Server, ServerBuilder, TlsClientConfig,
    TlsServerConfig,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use transport_common::*;

async fn tls_server(tls: TlsServerConfig) -> (Server<Bytes>, Events) {
    let (l, rx) = echo();
    let srv = ServerBuilder::new("127.0.0.1:0")
        .serve_tls(tls, setup(l, quiet()))
        .await
        .unwrap();
    (srv, rx)
}

fn tls_client(addr: String, tls: TlsClientConfig, attempts: u32) -> (Client<Bytes>, Events) {
    let (l, rx) = echo();
    let c = ClientBuilder::new(addr)
        .reconnect_attempts(attempts)
        .reconnect_interval(Duration::from_millis(50))
        .connect_tls(tls, setup(l, quiet()))
        .unwrap();
    (c, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_echo_both_ways_and_close() {
    let pki = pki();
    let (srv, mut srx) = tls_server(pki.server()).await;
    // Verified against the IP address in the certificate.
    let (c, mut crx) = tls_client(srv.local_addr().to_string(), pki.client(), 1);
    c.ready().await.unwrap();
    let (sid, st) = next_open(&mut srx).await;
    let (cid, ct) = next_open(&mut crx).await;
    assert_eq!((st, ct), (EndpointType::TlsServer, EndpointType::TlsClient));
    let cs = c.session().unwrap();
    ping_pong(&cs, &mut crx, &mut srx, "-from-client").await;
    let ss = srv.sessions().pop().unwrap();
    ping_pong(&ss, &mut srx, &mut crx, "-from-server").await;
    // A package larger than one TLS record.
    let mut big = b"ping".to_vec();
    big.resize(100_000, b'z');
    cs.write_pkg(&Bytes::from(big), None).await.unwrap();
    assert_eq!(next_msg(&mut srx).await.2.len(), 100_000);
    assert_eq!(next_msg(&mut crx).await.2.len(), 100_000);

    // close_notify then FIN: a normal close on both sides, no on_error.
    c.close().await;
    assert_eq!(next(&mut crx).await, Ev::Close(cid));
    assert_eq!(next(&mut srx).await, Ev::Close(sid));
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_from_pem_files() {
    let pki = pki();
    let dir = std::env::temp_dir().join(format!(
        "getty-tls-test-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let ca = write("ca.pem", &pki.ca);
    let (scert, skey) = (
        write("server.pem", &pki.server_cert),
        write("server.key", &pki.server_key),
    );
    let (ccert, ckey) = (
        write("client.pem", &pki.client_cert),
        write("client.key", &pki.client_key),
    );
    let server = TlsServerConfig::from_pem_files(&scert, &skey, Some(&ca));
    let client = TlsClientConfig::from_pem_files(&ca, Some((&ccert, &ckey)));
    let missing = TlsClientConfig::from_pem_files(dir.join("missing.pem"), None);
    std::fs::remove_dir_all(&dir).unwrap();
    let err = missing.err().unwrap().to_string();
    assert!(err.contains("missing.pem"), "{err}");

    let (srv, mut srx) = tls_server(server.unwrap()).await;
    let (c, mut crx) = tls_client(
        format!("localhost:{}", srv.local_addr().port()),
        client.unwrap(),
        1,
    );
    c.ready().await.unwrap();
    next_open(&mut srx).await;
    next_open(&mut crx).await;
    ping_pong(&c.session().unwrap(), &mut crx, &mut srx, "-files").await;
    c.close().await;
    srv.close().await;
}

fn unique_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_the_ca_is_rejected() {
    let (ours, theirs) = (pki(), pki());
    let (srv, mut srx) = tls_server(ours.server()).await;
    // Trusts another CA only.
    let stranger = theirs.client();
    let (c, _crx) = tls_client(srv.local_addr().to_string(), stranger, 1);
    let err = c.ready().await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // The server's handshake failed too: no session was ever opened.
    quiet_for(&mut srx, Duration::from_millis(50)).await;
    assert_eq!(srv.session_count(), 0);
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_must_match_the_server_name() {
    let pki = pki();
    let (srv, mut srx) = tls_server(pki.server()).await;
    let named = pki.client().with_server_name("example.com");
    let (c, _crx) = tls_client(srv.local_addr().to_string(), named, 1);
    let err = c.ready().await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    quiet_for(&mut srx, Duration::from_millis(50)).await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() {
    let pki = pki();
    let (srv, mut srx) = tls_server(pki.mtls_server()).await;
    let addr = srv.local_addr().to_string();

    // No client certificate: the server refuses the handshake. With TLS 1.3 the client only
    // learns it from the server's alert, after its own side of the handshake is done.
    let (c, mut crx) = tls_client(addr.clone(), pki.client(), 1);
    let err = first_failure(&c, &mut crx).await.to_lowercase();
    assert!(err.contains("certificate"), "{err}");
    c.close().await;
    // A certificate from a CA the server does not know is refused as well.
    let (c, mut crx) = tls_client(addr.clone(), cert_from_another_ca(&pki), 1);
    let err = first_failure(&c, &mut crx).await.to_lowercase();
    assert!(
        err.contains("alert") || err.contains("certificate"),
        "{err}"
    );
    c.close().await;
    quiet_for(&mut srx, Duration::from_millis(50)).await;
    assert_eq!(
        srv.session_count(),
        0,
        "no session without a valid client certificate"
    );

    // With a valid certificate the session opens and works.
    let (c, mut crx) = tls_client(addr, pki.client_with_cert(), 1);
    c.ready().await.unwrap();
    next_open(&mut srx).await;
    next_open(&mut crx).await;
    ping_pong(&c.session().unwrap(), &mut crx, &mut srx, "-mtls").await;
    c.close().await;
    srv.close().await;
}

/// A client that trusts the server's CA but shows a certificate from a CA the server does not
/// know.
fn cert_from_another_ca(server: &Pki) -> TlsClientConfig {
    let stranger = pki();
    TlsClientConfig::from_pem(
        server.ca.as_bytes(),
        Some((
            stranger.client_cert.as_bytes(),
            stranger.client_key.as_bytes(),
        )),
    )
    .unwrap()
}

/// The first failure a client reports: a failed connect, or an error on an opened session.
async fn first_failure(c: &Client<Bytes>, rx: &mut Events) -> String {
    let t = Instant::now();
    loop {
        if let ClientState::Failed(e) = c.state() {
            return e.to_string();
        }
        while let Ok(ev) = rx.try_recv() {
            if let Ev::Error(_, e) = ev {
                return e;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the client never failed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_is_cut_at_the_timeout() {
    let pki = pki();
    let (l, mut srx) = echo();
    let srv = ServerBuilder::new("127.0.0.1:0")
        .handshake_timeout(Duration::from_millis(300))
        .serve_tls(pki.server(), setup(l, quiet()))
        .await
        .unwrap();
    // Connects and says nothing.
    let mut tcp = TcpStream::connect(srv.local_addr()).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the server must close a silent connection");
    let waited = t.elapsed();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    quiet_for(&mut srx, Duration::from_millis(20)).await;
    assert_eq!(srv.session_count(), 0);

    // The server still serves.
    let (c, mut crx) = tls_client(srv.local_addr().to_string(), pki.client(), 1);
    c.ready().await.unwrap();
    next_open(&mut srx).await;
    next_open(&mut crx).await;
    c.close().await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_made_rustls_configs() {
    let pki = pki();
    // Built by hand with the same crypto provider getty-core uses.
    let provider = getty::core::tls::crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![
                rustls::pki_types::CertificateDer::from_pem_slice(pki.server_cert.as_bytes())
                    .unwrap(),
            ],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap(),
        )
        .unwrap();
    let (srv, mut srx) = tls_server(TlsServerConfig::from_rustls(server.into())).await;
    let (c, mut crx) = tls_client(
        srv.local_addr().to_string(),
        TlsClientConfig::from_rustls(client.into()),
        1,
    );
    c.ready().await.unwrap();
    next_open(&mut srx).await;
    next_open(&mut crx).await;
    ping_pong(&c.session().unwrap(), &mut crx, &mut srx, "-rustls").await;
    c.close().await;
    srv.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_handshake_is_bounded_by_the_connect_timeout() {
    // A server that accepts TCP and never answers the ClientHello.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let (l, _rx) = echo();
    let t = Instant::now();
    let c = ClientBuilder::new(addr.to_string())
        .connect_timeout(Duration::from_millis(200))
        .reconnect_attempts(1)
        .connect_tls(pki().client(), setup(l, quiet()))
        .unwrap();
    let err = c.ready().await.unwrap_err().to_string();
    assert!(err.contains("timed out"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    hold.abort();
}
