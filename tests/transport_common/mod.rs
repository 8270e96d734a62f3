//! Shared helpers for the UDP, WebSocket and TLS tests: one listener type used on every
//! transport, and certificates made at run time (no keys are committed).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use getty::core::{
    EndpointType, EventListener, LengthPrefixed, NewSessionCallback, Session, SessionConfig,
    SessionOptions, new_session,
};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Open(u64, EndpointType),
    /// Session id, the handle's remote address (the sender, on a UDP endpoint), the package.
    Msg(u64, Option<SocketAddr>, Bytes),
    Error(u64, String),
    Close(u64),
}

/// Reports every event on a channel and answers each package starting with `ping` with the
/// same package starting with `pong`, on the handle it got (so on a UDP endpoint the answer
/// goes to the sender). Both sides of every test use it.
pub struct Echo {
    pub tx: mpsc::UnboundedSender<Ev>,
}

impl EventListener<Bytes> for Echo {
    fn on_open(&self, s: &Session<Bytes>) -> Result<(), String> {
        let _ = self.tx.send(Ev::Open(s.id(), s.endpoint_type()));
        Ok(())
    }
    fn on_close(&self, s: &Session<Bytes>) {
        let _ = self.tx.send(Ev::Close(s.id()));
    }
    fn on_error(&self, s: &Session<Bytes>, e: &getty::core::Error) {
        let _ = self.tx.send(Ev::Error(s.id(), e.to_string()));
    }
    fn on_message(&self, s: &Session<Bytes>, pkg: Bytes) {
        if let Some(rest) = pkg.strip_prefix(b"ping") {
            let reply = Bytes::from([b"pong", rest].concat());
            if let Err(e) = s.try_send_pkg(&reply) {
                let _ = self
                    .tx
                    .send(Ev::Error(s.id(), format!("reply failed: {e}")));
            }
        }
        let _ = self.tx.send(Ev::Msg(s.id(), s.remote_addr(), pkg));
    }
}

pub type Events = mpsc::UnboundedReceiver<Ev>;

pub fn echo() -> (Arc<Echo>, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Echo { tx }), rx)
}

/// Length-prefixed framing, the given listener, the given options.
pub fn setup(l: Arc<dyn EventListener<Bytes>>, opts: SessionOptions) -> NewSessionCallback<Bytes> {
    new_session(move |c: &mut SessionConfig<Bytes>| {
        c.set_pkg_handler(Arc::new(LengthPrefixed))
            .set_event_listener(l.clone())
            .set_options(opts.clone());
        Ok(())
    })
}

/// Options without cron noise.
pub fn quiet() -> SessionOptions {
    SessionOptions::default()
        .cron_period(Duration::from_secs(3600))
        .wait_time(Duration::from_millis(500))
}

pub async fn next(rx: &mut Events) -> Ev {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("timed out waiting for an event")
        .expect("event channel closed")
}

pub async fn next_open(rx: &mut Events) -> (u64, EndpointType) {
    match next(rx).await {
        Ev::Open(id, t) => (id, t),
        e => panic!("expected Open, got {e:?}"),
    }
}

/// The next message: (session id, remote address, package).
pub async fn next_msg(rx: &mut Events) -> (u64, Option<SocketAddr>, Bytes) {
    match next(rx).await {
        Ev::Msg(id, from, b) => (id, from, b),
        e => panic!("expected Msg, got {e:?}"),
    }
}

/// Asserts that no event arrives for `d`.
pub async fn quiet_for(rx: &mut Events, d: Duration) {
    if let Ok(e) = tokio::time::timeout(d, rx.recv()).await {
        panic!("expected no event, got {e:?}");
    }
}

/// Waits until `f` holds, polling; panics after 5 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = tokio::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Sends `ping<tag>` on `from` and checks that `to_rx` sees it and `from_rx` gets `pong<tag>`.
pub async fn ping_pong(from: &Session<Bytes>, from_rx: &mut Events, to_rx: &mut Events, tag: &str) {
    let ping = b(&format!("ping{tag}"));
    from.write_pkg(&ping, None).await.unwrap();
    assert_eq!(next_msg(to_rx).await.2, ping);
    assert_eq!(next_msg(from_rx).await.2, b(&format!("pong{tag}")));
}

/// A CA, a server certificate for `localhost` and `127.0.0.1`, and a client certificate, as
/// PEM.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

pub fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A distinct name per CA, so a stranger's chain is an unknown issuer, not a bad signature.
    static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ca.distinguished_name
        .push(DnType::CommonName, format!("getty-rs test CA {n}"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, eku: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "getty-rs test");
        p.extended_key_usages = vec![eku];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        vec!["client.test".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

impl Pki {
    pub fn server(&self) -> getty::core::TlsServerConfig {
        getty::core::TlsServerConfig::from_pem(
            self.server_cert.as_bytes(),
            self.server_key.as_bytes(),
            None,
        )
        .unwrap()
    }
    /// A server that requires client certificates issued by this CA.
    pub fn mtls_server(&self) -> getty::core::TlsServerConfig {
        getty::core::TlsServerConfig::from_pem(
            self.server_cert.as_bytes(),
            self.server_key.as_bytes(),
            Some(self.ca.as_bytes()),
        )
        .unwrap()
    }
    pub fn client(&self) -> getty::core::TlsClientConfig {
        getty::core::TlsClientConfig::from_pem(self.ca.as_bytes(), None).unwrap()
    }
    pub fn client_with_cert(&self) -> getty::core::TlsClientConfig {
        getty::core::TlsClientConfig::from_pem(
            self.ca.as_bytes(),
            Some((self.client_cert.as_bytes(), self.client_key.as_bytes())),
        )
        .unwrap()
    }
}
