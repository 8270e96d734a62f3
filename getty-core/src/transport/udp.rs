//! UDP transports: an unconnected endpoint and a connected client, one socket and one session
//! each.
//!
//! - One datagram is one package. A datagram longer than the session's max message length, or
//!   one the reader rejects (or finds incomplete), is dropped and counted in
//!   `stats().dropped_pkgs`; the session goes on. Only a socket error ends it.
//! - On the endpoint, `on_message` gets a handle bound to the sender ([`Session::to_peer`]), so
//!   `write_pkg` replies to that peer; a write on a handle without a peer fails with
//!   [`Error::NoPeerAddr`]. To send first, bind a handle with `session.to_peer(addr)`.
//! - Each write is one datagram (with `write_bytes_array`, one per buffer). ICMP errors such as
//!   "port unreachable", and per-destination send errors, are logged and the datagram is lost,
//!   as UDP loses datagrams anyway; they do not end the session.
//! - The receive buffer is `max_msg_len + 1` bytes (so an over-long datagram is seen as such),
//!   at most 64 KiB.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::UdpSocket;
use tokio_util::task::TaskTracker;

use crate::endpoint::EndpointType;
use crate::endpoint::client::ClientBuilder;
use crate::endpoint::server::ServerBuilder;
use crate::error::{Error, Result};
use crate::options::{SessionOptions, SocketOptions};
use crate::pool::TaskPool;
use crate::session::config::{NewSessionCallback, SessionConfig};
use crate::session::driver::{self, Input, Runtime, Sink, Source};
use crate::session::{Session, WriteKind, WriteReq, next_id};

/// Largest receive buffer: any UDP payload fits.
const MAX_DATAGRAM: usize = 64 << 10;

fn recv_cap(max_msg_len: usize) -> usize {
    if max_msg_len == 0 {
        MAX_DATAGRAM
    } else {
        max_msg_len.saturating_add(1).min(MAX_DATAGRAM)
    }
}

/// Errors about one datagram or one destination, not about the socket.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::InvalidInput
    )
}

pub(crate) struct UdpSource {
    sock: Arc<UdpSocket>,
    connected: bool,
    /// The session's max message length, set once the new-session callback has decided it.
    max_msg_len: Arc<AtomicUsize>,
}

impl Source for UdpSource {
    async fn read(&mut self, buf: &mut BytesMut, _chunk: usize) -> io::Result<Input> {
        // The driver hands an empty buffer for message transports.
        let cap = recv_cap(self.max_msg_len.load(Ordering::Relaxed));
        loop {
            buf.clear();
            buf.reserve(cap);
            // Both receives are cancel-safe: nothing is taken off the socket unless they finish.
            let mut dst = (&mut *buf).limit(cap);
            let got = if self.connected {
                self.sock.recv_buf(&mut dst).await.map(|_| None)
            } else {
                self.sock
                    .recv_buf_from(&mut dst)
                    .await
                    .map(|(_, p)| Some(p))
            };
            match got {
                Ok(peer) => return Ok(Input::Message { peer }),
                Err(e) if transient(&e) => {
                    tracing::debug!(error = %e, "UDP receive error ignored");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

pub(crate) struct UdpSink {
    sock: Arc<UdpSocket>,
    connected: bool,
}

/// Largest UDP payload over IPv4 (IPv6 allows 20 bytes more; this is the portable bound).
const MAX_PAYLOAD: usize = 65_507;

impl UdpSink {
    async fn send(&self, b: &Bytes, peer: Option<SocketAddr>) -> io::Result<u64> {
        if b.len() > MAX_PAYLOAD {
            tracing::warn!(
                ?peer,
                len = b.len(),
                max = MAX_PAYLOAD,
                "UDP datagram too long; not sent"
            );
            return Ok(0);
        }
        let res = match (self.connected, peer) {
            (true, _) => self.sock.send(b).await,
            (false, Some(p)) => self.sock.send_to(b, p).await,
            (false, None) => {
                tracing::warn!(len = b.len(), "UDP write without a peer address dropped");
                return Ok(0);
            }
        };
        match res {
            Ok(n) => Ok(n as u64),
            Err(e) if transient(&e) => {
                tracing::warn!(?peer, len = b.len(), error = %e, "UDP datagram not sent");
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }
}

impl Sink for UdpSink {
    async fn write_batch(&mut self, batch: &[WriteReq]) -> io::Result<u64> {
        let mut total = 0;
        for req in batch {
            match &req.kind {
                WriteKind::One(b) => total += self.send(b, req.peer).await?,
                WriteKind::Parts([head, tail]) => {
                    // One datagram: the parts are joined.
                    let joined = [&head[..], &tail[..]].concat();
                    total += self.send(&Bytes::from(joined), req.peer).await?;
                }
                WriteKind::Many(v) => {
                    for b in v {
                        total += self.send(b, req.peer).await?;
                    }
                }
                WriteKind::Ping => {}
            }
        }
        Ok(total)
    }

    async fn shutdown(&mut self) {}
}

fn apply_socket_options(sock: &UdpSocket, opts: &SocketOptions) {
    let s = socket2::SockRef::from(sock);
    if let Some(n) = opts.send_buffer_size
        && let Err(e) = s.set_send_buffer_size(n)
    {
        tracing::warn!(error = %e, "could not set the UDP send buffer size");
    }
    if let Some(n) = opts.recv_buffer_size
        && let Err(e) = s.set_recv_buffer_size(n)
    {
        tracing::warn!(error = %e, "could not set the UDP receive buffer size");
    }
}

/// What the endpoint and the client share: the socket's session and its tasks.
struct Udp<P> {
    local: SocketAddr,
    session: Session<P>,
    tracker: TaskTracker,
}

fn start<P: Send + 'static>(
    sock: UdpSocket,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    options: SessionOptions,
    pool: Option<TaskPool>,
    new_session: &NewSessionCallback<P>,
) -> Result<Udp<P>> {
    let endpoint = if remote.is_some() {
        EndpointType::UdpClient
    } else {
        EndpointType::UdpEndpoint
    };
    let sock = Arc::new(sock);
    let connected = remote.is_some();
    let max_msg_len = Arc::new(AtomicUsize::new(options.max_msg_len));
    let source = UdpSource {
        sock: sock.clone(),
        connected,
        max_msg_len: max_msg_len.clone(),
    };
    let sink = UdpSink { sock, connected };
    let cfg = SessionConfig::new(next_id(), endpoint, Some(local), remote, options);
    let opened = driver::open(cfg, new_session, source, sink, !connected, |_| {})?;
    let session = opened.session.clone();
    max_msg_len.store(session.max_msg_len(), Ordering::Relaxed);
    let rt = Runtime {
        tracker: TaskTracker::new(),
        pool,
        budget: None,
    };
    rt.tracker.spawn(opened.run(rt.clone()));
    Ok(Udp {
        local,
        session,
        tracker: rt.tracker,
    })
}

/// Dropping an endpoint or client closes its session (as dropping a server or client does).
impl<P> Drop for Udp<P> {
    fn drop(&mut self) {
        self.session.inner.start_close();
    }
}

impl<P: Send + 'static> Udp<P> {
    async fn close(&self) {
        self.session.close();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// An unconnected UDP socket serving any number of peers through one session.
pub struct UdpEndpoint<P> {
    udp: Udp<P>,
}

impl<P: Send + 'static> UdpEndpoint<P> {
    /// Binds `addr` (such as `127.0.0.1:0`) with default socket options; a shortcut for
    /// `ServerBuilder::new(addr).session_options(options).serve_udp(new_session)`.
    pub async fn bind(
        addr: impl Into<String>,
        options: SessionOptions,
        new_session: NewSessionCallback<P>,
    ) -> Result<Self> {
        ServerBuilder::new(addr)
            .session_options(options)
            .serve_udp(new_session)
            .await
    }
    /// The endpoint's only session. Its handle has no peer: bind one with `to_peer` to write.
    pub fn session(&self) -> Session<P> {
        self.udp.session.clone()
    }
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local
    }
    pub fn endpoint_type(&self) -> EndpointType {
        EndpointType::UdpEndpoint
    }
    pub fn is_closed(&self) -> bool {
        self.udp.session.is_closed()
    }
    /// Closes the session (queued datagrams are flushed for its wait time) and waits for its
    /// tasks. Idempotent.
    pub async fn close(&self) {
        self.udp.close().await
    }
}

/// A UDP socket connected to one server, with one session. There is nothing to reconnect:
/// the session ends only on a socket error or `close`.
pub struct UdpClient<P> {
    udp: Udp<P>,
    peer: SocketAddr,
}

impl<P: Send + 'static> UdpClient<P> {
    /// Connects to `addr` (`host:port`) with default socket options; a shortcut for
    /// `ClientBuilder::new(addr).session_options(options).connect_udp(new_session)`.
    pub async fn connect(
        addr: impl Into<String>,
        options: SessionOptions,
        new_session: NewSessionCallback<P>,
    ) -> Result<Self> {
        ClientBuilder::new(addr)
            .session_options(options)
            .connect_udp(new_session)
            .await
    }
    pub fn session(&self) -> Session<P> {
        self.udp.session.clone()
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local
    }
    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
    pub fn endpoint_type(&self) -> EndpointType {
        EndpointType::UdpClient
    }
    pub fn is_closed(&self) -> bool {
        self.udp.session.is_closed()
    }
    /// Closes the session and waits for its tasks. Idempotent.
    pub async fn close(&self) {
        self.udp.close().await
    }
}

impl ServerBuilder {
    /// Binds a UDP endpoint: one socket and one session for every peer. The socket options'
    /// buffer sizes apply; the session cap and handshake timeout do not.
    pub async fn serve_udp<P: Send + 'static>(
        self,
        new_session: NewSessionCallback<P>,
    ) -> Result<UdpEndpoint<P>> {
        self.session.validate()?;
        let sock = UdpSocket::bind(&self.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: self.addr.clone(),
                source,
            })?;
        apply_socket_options(&sock, &self.socket);
        let local = sock.local_addr().map_err(|source| Error::Bind {
            addr: self.addr.clone(),
            source,
        })?;
        let udp = start(sock, local, None, self.session, self.pool, &new_session)?;
        Ok(UdpEndpoint { udp })
    }
}

impl ClientBuilder {
    /// Opens a UDP socket connected to the builder's `host:port`, with one session. Unlike the
    /// stream clients it returns a [`UdpClient`] (one session, nothing to reconnect); the
    /// connection count and reconnect settings do not apply.
    pub async fn connect_udp<P: Send + 'static>(
        self,
        new_session: NewSessionCallback<P>,
    ) -> Result<UdpClient<P>> {
        self.session.validate()?;
        let connect_err = |source| Error::Connect {
            addr: self.addr.clone(),
            source,
        };
        let peer = tokio::net::lookup_host(&self.addr)
            .await
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| {
                connect_err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the address resolved to nothing",
                ))
            })?;
        let any: SocketAddr = if peer.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(any).await.map_err(connect_err)?;
        apply_socket_options(&sock, &self.socket);
        sock.connect(peer).await.map_err(connect_err)?;
        let local = sock.local_addr().map_err(connect_err)?;
        let udp = start(
            sock,
            local,
            Some(peer),
            self.session,
            self.pool,
            &new_session,
        )?;
        Ok(UdpClient { udp, peer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_buffer_size() {
        assert_eq!(recv_cap(0), MAX_DATAGRAM);
        assert_eq!(recv_cap(100), 101);
        assert_eq!(recv_cap(4 << 20), MAX_DATAGRAM);
        assert_eq!(recv_cap(usize::MAX), MAX_DATAGRAM);
    }
}
