//! TLS over TCP (rustls through tokio-rustls, with the *ring* crypto provider).
//!
//! The Rust form of getty's TLS config builders: a [`TlsServerConfig`] or [`TlsClientConfig`]
//! is made from PEM files, from PEM bytes, or from a ready rustls config. The configs built here
//! name their crypto provider explicitly, so no process-wide default provider is needed.
//!
//! - The client always verifies the server's certificate chain and name; there is no option to
//!   turn that off.
//! - A server given a client CA requires and verifies client certificates (mutual TLS).
//! - Handshakes run under the endpoint's timeout: the server's `handshake_timeout`, the client's
//!   `connect_timeout`.
//!
//! Used by [`ServerBuilder::serve_tls`] and [`ClientBuilder::connect_tls`], and under WebSocket
//! by `serve_wss` / `connect_wss`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

pub use tokio_rustls::rustls;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::endpoint::EndpointType;
use crate::endpoint::client::{Client, ClientBuilder, Connected, Connector, dial_tcp};
use crate::endpoint::server::{Acceptor, Server, ServerBuilder};
use crate::error::{Error, Result};
use crate::options::SocketOptions;
use crate::session::config::NewSessionCallback;
use crate::transport::stream::{StreamSink, StreamSource};

/// The crypto provider of every config this module builds: *ring*.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Tls(format!("read {what} {}: {e}", path.display())))
}

fn parse_certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{what}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{what}: no certificate in the PEM data"
        )));
    }
    Ok(certs)
}

fn parse_key(what: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        Error::Tls(format!(
            "{what}: no usable private key in the PEM data: {e}"
        ))
    })
}

fn root_store(what: &str, pem: &[u8]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(what, pem)? {
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("{what}: {e}")))?;
    }
    Ok(roots)
}

/// A server's TLS settings: its certificate chain and key, and optionally the CA that client
/// certificates must chain to (mutual TLS).
#[derive(Clone)]
pub struct TlsServerConfig {
    config: Arc<ServerConfig>,
}

impl TlsServerConfig {
    /// From PEM files: the certificate chain (leaf first), its private key (PKCS#8, PKCS#1 or
    /// SEC1) and, for mutual TLS, the CA certificates that client certificates must chain to.
    /// Encrypted keys are not supported.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
        client_ca: Option<&Path>,
    ) -> Result<Self> {
        let chain = read_file("certificate chain", cert_chain.as_ref())?;
        let key = read_file("private key", private_key.as_ref())?;
        let ca = client_ca.map(|p| read_file("client CA", p)).transpose()?;
        Self::from_pem(&chain, &key, ca.as_deref())
    }

    /// As [`from_pem_files`](Self::from_pem_files), from PEM bytes in memory.
    pub fn from_pem(
        cert_chain: &[u8],
        private_key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<Self> {
        let chain = parse_certs("certificate chain", cert_chain)?;
        let key = parse_key("private key", private_key)?;
        let builder = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = root_store("client CA", ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                        .build()
                        .map_err(|e| Error::Tls(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| Error::Tls(format!("certificate and key: {e}")))?;
        Ok(TlsServerConfig {
            config: Arc::new(config),
        })
    }

    /// A ready rustls config, used as it is (its crypto provider, verifier, ALPN and so on).
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        TlsServerConfig { config }
    }

    pub fn rustls_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// A client's TLS settings: the CAs it trusts, optionally its own certificate for mutual TLS,
/// and optionally the name to verify (by default the host of the address being dialled).
#[derive(Clone)]
pub struct TlsClientConfig {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl TlsClientConfig {
    /// From PEM files: the CA certificates that the server's chain must lead to and, for
    /// mutual TLS, the client's certificate chain and private key.
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        client_auth: Option<(&Path, &Path)>,
    ) -> Result<Self> {
        let ca = read_file("CA", ca.as_ref())?;
        let auth = client_auth
            .map(|(c, k)| {
                Ok::<_, Error>((
                    read_file("client certificate chain", c)?,
                    read_file("client private key", k)?,
                ))
            })
            .transpose()?;
        Self::from_pem(&ca, auth.as_ref().map(|(c, k)| (&c[..], &k[..])))
    }

    /// As [`from_pem_files`](Self::from_pem_files), from PEM bytes in memory.
    pub fn from_pem(ca: &[u8], client_auth: Option<(&[u8], &[u8])>) -> Result<Self> {
        let roots = root_store("CA", ca)?;
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match client_auth {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let chain = parse_certs("client certificate chain", chain)?;
                let key = parse_key("client private key", key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Tls(format!("client certificate and key: {e}")))?
            }
        };
        Ok(TlsClientConfig {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// A ready rustls config, used as it is.
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        TlsClientConfig {
            config,
            server_name: None,
        }
    }

    /// The name (DNS name or IP address) the server's certificate must be valid for, when it is
    /// not the host being dialled.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    pub fn rustls_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The connector and the name to verify; `host` is the dialled host, used when no name was
    /// set.
    pub(crate) fn connector(&self, host: &str) -> Result<TlsConnect> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let bare = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let server_name = ServerName::try_from(bare.to_string())
            .map_err(|e| Error::Tls(format!("server name {name:?}: {e}")))?;
        Ok(TlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            server_name,
        })
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal kept).
pub(crate) fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    }
}

/// Server side: the TLS handshake on an accepted connection.
pub(crate) async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let remote = tcp.peer_addr().ok();
    acceptor.accept(tcp).await.map_err(|e| {
        Error::Tls(format!(
            "handshake with {}: {e}",
            remote.map_or_else(|| "-".to_string(), |a| a.to_string())
        ))
    })
}

/// Client side: a connector and the server name it verifies.
pub(crate) struct TlsConnect {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsConnect {
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let remote: Option<SocketAddr> = tcp.peer_addr().ok();
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                Error::Tls(format!(
                    "handshake with {} ({}): {e}",
                    self.server_name.to_str(),
                    remote.map_or_else(|| "-".to_string(), |a| a.to_string())
                ))
            })
    }
}

type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;
type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

pub(crate) struct TlsAcceptor(tokio_rustls::TlsAcceptor);

impl Acceptor for TlsAcceptor {
    type Source = StreamSource<ReadHalf<ServerTls>>;
    type Sink = StreamSink<WriteHalf<ServerTls>>;
    fn endpoint_type(&self) -> EndpointType {
        EndpointType::TlsServer
    }
    async fn accept(&self, tcp: TcpStream) -> Result<(Self::Source, Self::Sink)> {
        let tls = accept(&self.0, tcp).await?;
        let (r, w) = tokio::io::split(tls);
        Ok((StreamSource(r), StreamSink::new(w)))
    }
}

pub(crate) struct TlsConnector {
    addr: String,
    socket: SocketOptions,
    tls: TlsConnect,
}

impl Connector for TlsConnector {
    type Source = StreamSource<ReadHalf<ClientTls>>;
    type Sink = StreamSink<WriteHalf<ClientTls>>;
    fn endpoint_type(&self) -> EndpointType {
        EndpointType::TlsClient
    }
    async fn connect(&self) -> Result<Connected<Self::Source, Self::Sink>> {
        let tcp = dial_tcp(&self.addr, &self.socket).await?;
        let (local, remote) = (tcp.local_addr().ok(), tcp.peer_addr().ok());
        let tls = self.tls.connect(tcp).await?;
        let (r, w) = tokio::io::split(tls);
        Ok(Connected {
            source: StreamSource(r),
            sink: StreamSink::new(w),
            local,
            remote,
        })
    }
}

impl ServerBuilder {
    /// Listens for TLS connections. The handshake runs in the connection's own task under
    /// [`handshake_timeout`](Self::handshake_timeout); a peer that fails or stalls it is dropped
    /// without a session.
    pub async fn serve_tls<P: Send + 'static>(
        self,
        tls: TlsServerConfig,
        new_session: NewSessionCallback<P>,
    ) -> Result<Server<P>> {
        self.serve_with(TlsAcceptor(tls.acceptor()), new_session)
            .await
    }
}

impl ClientBuilder {
    /// Starts a TLS client to `host:port`. The server must present a certificate valid for the
    /// config's server name, or else for `host`. The handshake counts against
    /// [`connect_timeout`](Self::connect_timeout).
    pub fn connect_tls<P: Send + 'static>(
        self,
        tls: TlsClientConfig,
        new_session: NewSessionCallback<P>,
    ) -> Result<Client<P>> {
        let c = TlsConnector {
            addr: self.addr.clone(),
            socket: self.socket.clone(),
            tls: tls.connector(host_of(&self.addr))?,
        };
        self.start_with(c, new_session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addr() {
        assert_eq!(host_of("localhost:80"), "localhost");
        assert_eq!(host_of("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8443"), "[::1]");
        assert_eq!(host_of("example.com"), "example.com");
    }

    #[test]
    fn bad_pem_is_a_tls_error() {
        assert!(matches!(
            TlsServerConfig::from_pem(b"nope", b"nope", None),
            Err(Error::Tls(_))
        ));
        assert!(matches!(
            TlsClientConfig::from_pem(b"", None),
            Err(Error::Tls(_))
        ));
    }
}
