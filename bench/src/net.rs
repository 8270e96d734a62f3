//! Servers and clients on the three transports: TCP, WebSocket (`ws://ADDR/bench`) and TLS.
//!
//! TLS uses a throw-away CA made by the server at start-up. The server writes the CA
//! certificate (PEM) to `$TMPDIR/getty-bench-PORT-ca.pem` before it listens; the client
//! derives the same path from `--addr` and verifies the server's certificate against it.

use std::path::PathBuf;
use std::time::Duration;

use getty_core::{ClientBuilder, ServerBuilder, TlsClientConfig, TlsServerConfig};
use getty_rpc::{Router, RpcClient, RpcOptions, RpcServer};

use crate::Res;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Ws,
    Tls,
}

impl Transport {
    pub fn parse(s: &str) -> Option<Transport> {
        Some(match s {
            "tcp" => Transport::Tcp,
            "ws" => Transport::Ws,
            "tls" => Transport::Tls,
            _ => return None,
        })
    }
}

/// The WebSocket path served and dialled.
pub const WS_PATH: &str = "/bench";

/// A layer that only passes calls on: what one layer costs (`GETTY_BENCH_NOOP_LAYERS=N` puts N
/// of them on both paths of both ends; default none). `GETTY_BENCH_COMPRESS_ABOVE=BYTES`
/// turns on zstd bodies (feature `zstd`).
struct Noop;

impl getty_rpc::Middleware for Noop {
    fn call(
        &self,
        call: getty_rpc::Call,
        next: getty_rpc::Next,
    ) -> futures_util::future::BoxFuture<'static, Result<bytes::Bytes, getty_rpc::RpcError>> {
        next.run(call)
    }
}

fn options() -> RpcOptions {
    let n: usize = std::env::var("GETTY_BENCH_NOOP_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut o = (0..n).fold(RpcOptions::default(), |o, _| o.layer(Noop));
    // zstd bodies of at least this size (needs the `zstd` feature; both roles must set it).
    o.compress_above = std::env::var("GETTY_BENCH_COMPRESS_ABOVE")
        .ok()
        .and_then(|v| v.parse().ok());
    o
}

fn port_of(addr: &str) -> Res<u16> {
    let port = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| format!("--addr {addr:?} has no port"))?;
    Ok(port)
}

/// Where the TLS server of `port` leaves its CA certificate.
pub fn ca_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("getty-bench-{port}-ca.pem"))
}

/// A CA and a server certificate for `localhost` and `127.0.0.1`: (CA PEM, chain PEM, key PEM).
fn make_pki() -> Res<(String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "getty-bench throw-away CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "getty-bench");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// Writes `pem` to `path` atomically (a reader never sees half a file).
fn write_atomic(path: &PathBuf, pem: &str) -> Res<()> {
    let tmp = path.with_extension(format!("pem.{}", std::process::id()));
    std::fs::write(&tmp, pem)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Starts the server; with TLS, also returns the CA file it wrote.
pub async fn serve(
    router: Router,
    transport: Transport,
    addr: &str,
) -> Res<(RpcServer, Option<PathBuf>)> {
    let b = ServerBuilder::new(addr);
    Ok(match transport {
        Transport::Tcp => (
            RpcServer::start(router, options(), |cb| b.serve_tcp(cb)).await?,
            None,
        ),
        Transport::Ws => (
            RpcServer::start(router, options(), |cb| b.serve_ws(WS_PATH, cb)).await?,
            None,
        ),
        Transport::Tls => {
            let (ca, chain, key) = make_pki()?;
            let cfg = TlsServerConfig::from_pem(chain.as_bytes(), key.as_bytes(), None)?;
            // The CA file exists before the port opens, unless the port is chosen at bind.
            let port = port_of(addr)?;
            if port != 0 {
                write_atomic(&ca_path(port), &ca)?;
            }
            let s = RpcServer::start(router, options(), |cb| b.serve_tls(cfg, cb)).await?;
            let path = ca_path(s.local_addr().port());
            if port == 0 {
                write_atomic(&path, &ca)?;
            }
            (s, Some(path))
        }
    })
}

/// Starts a client of `conns` connections and waits until all are up.
pub async fn connect(
    router: Router,
    transport: Transport,
    addr: &str,
    conns: usize,
) -> Res<RpcClient> {
    // The client gives up after 5 failed dials in all (a dial that succeeds does not reset the
    // count), and with thousands of connections a server's full accept queue drops SYNs: each
    // one costs its dial a 1 s retransmit, two in a row 3 s, the default connect timeout. So a
    // dial gets 10 s (SYN retries at 1, 3 and 7 s); a server that is down still fails at once.
    let builder = |a: String| {
        ClientBuilder::new(a)
            .connections(conns)
            .reconnect_interval(Duration::from_millis(100))
            .reconnect_attempts(5)
            .connect_timeout(Duration::from_secs(10))
    };
    let client = match transport {
        Transport::Tcp => {
            RpcClient::start(router, options(), |cb| builder(addr.into()).connect_tcp(cb))?
        }
        Transport::Ws => RpcClient::start(router, options(), |cb| {
            builder(format!("ws://{addr}{WS_PATH}")).connect_ws(cb)
        })?,
        Transport::Tls => {
            let path = ca_path(port_of(addr)?);
            let tls = TlsClientConfig::from_pem_files(&path, None)
                .map_err(|e| format!("the server's CA ({}): {e}", path.display()))?;
            RpcClient::start(router, options(), |cb| {
                builder(addr.into()).connect_tls(tls, cb)
            })?
        }
    };
    client.ready().await?;
    Ok(client)
}
