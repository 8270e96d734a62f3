//! WebSocket transports (`ws://`, and `wss://` over TLS), with tokio-tungstenite.
//!
//! - One `write_pkg` is one binary message; each received binary (or text) message is one
//!   package for the reader.
//! - Keep-alive: the session queues a ping each cron period; pings and pongs that arrive move
//!   the session's active time. Bytes of a message still arriving do not, and start the read
//!   timeout, which bounds the message from its first byte (tungstenite buffers frames out of
//!   the session's sight, so the stream notes when bytes arrive). Pong replies are queued by tungstenite while reading and put on
//!   the wire by the session task's very next read (the read and write halves share the stream).
//! - Closing sends a close frame with code 1000 (1009 after an over-long message, 1002 after a
//!   protocol error); a close frame from the peer ends the session normally, without `on_error`.
//! - The endpoint's `max_msg_len` also bounds what the WebSocket layer buffers (message and
//!   frame size): a longer message fails the session. A message within that bound but over the
//!   session's own (smaller) limit is dropped and counted, like a datagram.
//! - The server answers a request for another path with 404, a non-upgrade request with 426
//!   (405 for a method other than GET, 400 for a malformed one), so no client hangs.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{StatusCode, Uri};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, WebSocketConfig};

use crate::endpoint::EndpointType;
use crate::endpoint::client::{Client, ClientBuilder, Connected, Connector, dial_tcp};
use crate::endpoint::server::{Acceptor, Server, ServerBuilder};
use crate::error::{Error, Result};
use crate::options::SocketOptions;
use crate::session::config::NewSessionCallback;
use crate::session::driver::{Input, Sink, Source};
use crate::session::{WriteKind, WriteReq};
use crate::transport::tls::{TlsClientConfig, TlsConnect, TlsServerConfig};

/// Longest HTTP request head the server reads before answering 431.
const MAX_REQUEST_HEAD: usize = 16 << 10;

/// The WebSocket layer's limits from an endpoint's max message length (0: unlimited).
fn ws_config(max_msg_len: usize) -> WebSocketConfig {
    let max = (max_msg_len > 0).then_some(max_msg_len);
    WebSocketConfig::default()
        .max_message_size(max)
        .max_frame_size(max)
}

fn ws_io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        e => io::Error::other(Error::WebSocket(e.to_string())),
    }
}

// ---- the transport ----

/// The read half. Shares with its sink the close code to send.
pub(crate) struct WsSource<S> {
    rx: SplitStream<WebSocketStream<Prefixed<S>>>,
    close_code: Arc<AtomicU16>,
    /// Set by the stream when bytes arrive (see [`Prefixed`]).
    got_bytes: Arc<AtomicBool>,
}

/// The write half.
pub(crate) struct WsSink<S> {
    tx: SplitSink<WebSocketStream<Prefixed<S>>, Message>,
    close_code: Arc<AtomicU16>,
}

fn split<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocketStream<Prefixed<S>>,
) -> (WsSource<S>, WsSink<S>) {
    let got_bytes = ws.get_ref().got_bytes.clone();
    let (tx, rx) = ws.split();
    let close_code = Arc::new(AtomicU16::new(CloseCode::Normal.into()));
    (
        WsSource {
            rx,
            close_code: close_code.clone(),
            got_bytes,
        },
        WsSink { tx, close_code },
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Source for WsSource<S> {
    async fn read(&mut self, buf: &mut BytesMut, _chunk: usize) -> io::Result<Input> {
        // `next` is cancel-safe: tungstenite keeps a partly read frame in its own buffer.
        // Reading also flushes the pong (or close reply) that tungstenite queued on the
        // previous read, so replies go out even when the application writes nothing.
        loop {
            // Bytes that arrived without completing a frame are reported as `Partial`.
            self.got_bytes.store(false, Ordering::Relaxed);
            let next = std::future::poll_fn(|cx| match self.rx.poll_next_unpin(cx) {
                Poll::Ready(m) => Poll::Ready(Some(m)),
                Poll::Pending if self.got_bytes.swap(false, Ordering::Relaxed) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            let Some(next) = next else {
                return Ok(Input::Partial);
            };
            let msg = match next {
                None => return Ok(Input::Eof),
                Some(Ok(m)) => m,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Ok(Input::Eof);
                }
                Some(Err(e)) => {
                    let code = match &e {
                        WsError::Capacity(_) => CloseCode::Size,
                        WsError::Protocol(_) => CloseCode::Protocol,
                        WsError::Utf8(_) => CloseCode::Invalid,
                        _ => CloseCode::Normal,
                    };
                    self.close_code.store(code.into(), Ordering::Relaxed);
                    if let WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) = &e
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            Error::WebSocket(format!(
                                "message of {size} bytes exceeds the max message length {max_size}"
                            )),
                        ));
                    }
                    if let WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) = &e {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            Error::WebSocket(e.to_string()),
                        ));
                    }
                    return Err(ws_io_error(e));
                }
            };
            match msg {
                Message::Binary(b) => {
                    buf.extend_from_slice(&b);
                    return Ok(Input::Message { peer: None });
                }
                Message::Text(t) => {
                    buf.extend_from_slice(t.as_bytes());
                    return Ok(Input::Message { peer: None });
                }
                Message::Ping(_) | Message::Pong(_) => return Ok(Input::Control),
                Message::Close(frame) => {
                    tracing::debug!(?frame, "WebSocket peer closed");
                    return Ok(Input::Eof);
                }
                // Raw frames are never returned by reads.
                Message::Frame(_) => continue,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Sink for WsSink<S> {
    async fn write_batch(&mut self, batch: &[WriteReq]) -> io::Result<u64> {
        let mut total = 0u64;
        for req in batch {
            match &req.kind {
                WriteKind::One(b) => {
                    total += b.len() as u64;
                    self.tx
                        .feed(Message::Binary(b.clone()))
                        .await
                        .map_err(ws_io_error)?;
                }
                WriteKind::Parts([head, tail]) => {
                    // One message: the parts are joined.
                    total += (head.len() + tail.len()) as u64;
                    let joined = Bytes::from([&head[..], &tail[..]].concat());
                    self.tx
                        .feed(Message::Binary(joined))
                        .await
                        .map_err(ws_io_error)?;
                }
                WriteKind::Many(v) => {
                    for b in v {
                        total += b.len() as u64;
                        self.tx
                            .feed(Message::Binary(b.clone()))
                            .await
                            .map_err(ws_io_error)?;
                    }
                }
                WriteKind::Ping => {
                    self.tx
                        .feed(Message::Ping(Bytes::new()))
                        .await
                        .map_err(ws_io_error)?;
                }
            }
        }
        self.tx.flush().await.map_err(ws_io_error)?;
        Ok(total)
    }

    async fn shutdown(&mut self) {
        let code = CloseCode::from(self.close_code.load(Ordering::Relaxed));
        let frame = CloseFrame {
            code,
            reason: "".into(),
        };
        // After a close frame from the peer this only flushes tungstenite's queued reply.
        if let Err(e) = self.tx.send(Message::Close(Some(frame))).await {
            tracing::trace!(error = %e, "WebSocket close frame not sent");
        }
    }

    fn wants_pings(&self) -> bool {
        true
    }
}

// ---- the layer under WebSocket: plain TCP or TLS ----

/// Server side: what runs on an accepted TCP connection before the WebSocket handshake.
pub(crate) trait ServerLayer: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    const ENDPOINT: EndpointType;
    fn wrap(&self, tcp: TcpStream) -> impl Future<Output = Result<Self::Stream>> + Send;
}

pub(crate) struct Plain;

impl ServerLayer for Plain {
    type Stream = TcpStream;
    const ENDPOINT: EndpointType = EndpointType::WsServer;
    async fn wrap(&self, tcp: TcpStream) -> Result<TcpStream> {
        Ok(tcp)
    }
}

impl ServerLayer for tokio_rustls::TlsAcceptor {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;
    const ENDPOINT: EndpointType = EndpointType::WssServer;
    async fn wrap(&self, tcp: TcpStream) -> Result<Self::Stream> {
        crate::transport::tls::accept(self, tcp).await
    }
}

/// Client side: what runs on a dialled TCP connection before the WebSocket handshake.
pub(crate) trait ClientLayer: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    const ENDPOINT: EndpointType;
    fn wrap(&self, tcp: TcpStream) -> impl Future<Output = Result<Self::Stream>> + Send;
}

impl ClientLayer for Plain {
    type Stream = TcpStream;
    const ENDPOINT: EndpointType = EndpointType::WsClient;
    async fn wrap(&self, tcp: TcpStream) -> Result<TcpStream> {
        Ok(tcp)
    }
}

impl ClientLayer for TlsConnect {
    type Stream = tokio_rustls::client::TlsStream<TcpStream>;
    const ENDPOINT: EndpointType = EndpointType::WssClient;
    async fn wrap(&self, tcp: TcpStream) -> Result<Self::Stream> {
        self.connect(tcp).await
    }
}

// ---- server ----

/// The stream under tungstenite: it first yields bytes already read from it (the request head
/// the server checked before handing the connection over; none on a client), and notes when
/// bytes arrive, so the session can time a message that is still being received.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
    got_bytes: Arc<AtomicBool>,
}

impl<S> Prefixed<S> {
    fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed {
            prefix,
            inner,
            got_bytes: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.got_bytes.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a request is not a WebSocket upgrade for us: the HTTP answer and a reason for the log.
struct Refusal {
    status: StatusCode,
    headers: &'static str,
    reason: String,
}

fn refuse(status: StatusCode, headers: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        headers,
        reason: reason.into(),
    }
}

/// Reads the request head (up to the blank line). `Ok(Err(_))` is a request to refuse.
async fn read_request_head<S: AsyncRead + Unpin>(
    s: &mut S,
    path: &str,
) -> Result<std::result::Result<Vec<u8>, Refusal>> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => return Ok(check_request(&req, path).map(|_| head)),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Ok(Err(refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "",
                    "too many headers",
                )));
            }
            Err(e) => {
                return Ok(Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "",
                    format!("malformed request: {e}"),
                )));
            }
        }
        if head.len() >= MAX_REQUEST_HEAD {
            return Ok(Err(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "",
                "request head too large",
            )));
        }
        let mut chunk = [0u8; 2048];
        let want = chunk.len().min(MAX_REQUEST_HEAD - head.len());
        let n = s
            .read(&mut chunk[..want])
            .await
            .map_err(|e| Error::WebSocket(format!("reading the upgrade request: {e}")))?;
        if n == 0 {
            return Err(Error::WebSocket(
                "peer closed before sending a whole upgrade request".to_string(),
            ));
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(req: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

fn request_path(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or(target)
}

/// The checks tungstenite would make, answered with an HTTP error instead of a dropped socket.
fn check_request(req: &httparse::Request<'_, '_>, path: &str) -> std::result::Result<(), Refusal> {
    if req.method != Some("GET") {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "Allow: GET\r\n",
            format!("method {:?}", req.method.unwrap_or("")),
        ));
    }
    if req.version != Some(1) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "",
            "HTTP version below 1.1",
        ));
    }
    let target = req.path.unwrap_or("");
    if request_path(target) != path {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "",
            format!("path {target:?} is not {path:?}"),
        ));
    }
    let upgrade_conn = header(req, "Connection").is_some_and(|v| {
        v.split([' ', ','])
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
    });
    let upgrade_ws = header(req, "Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade_conn || !upgrade_ws {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "Upgrade: websocket\r\nConnection: Upgrade\r\n",
            "not a WebSocket upgrade request",
        ));
    }
    if header(req, "Sec-WebSocket-Version") != Some("13") {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version: 13\r\n",
            "unsupported Sec-WebSocket-Version",
        ));
    }
    if header(req, "Sec-WebSocket-Key").is_none_or(str::is_empty) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "",
            "missing Sec-WebSocket-Key",
        ));
    }
    Ok(())
}

pub(crate) struct WsAcceptor<L> {
    layer: L,
    path: Arc<str>,
    config: WebSocketConfig,
}

impl<L: ServerLayer> Acceptor for WsAcceptor<L> {
    type Source = WsSource<L::Stream>;
    type Sink = WsSink<L::Stream>;
    fn endpoint_type(&self) -> EndpointType {
        L::ENDPOINT
    }
    async fn accept(&self, tcp: TcpStream) -> Result<(Self::Source, Self::Sink)> {
        let mut s = self.layer.wrap(tcp).await?;
        let head = match read_request_head(&mut s, &self.path).await? {
            Ok(head) => head,
            Err(r) => {
                let answer = format!(
                    "HTTP/1.1 {} {}\r\n{}Connection: close\r\nContent-Length: 0\r\n\r\n",
                    r.status.as_u16(),
                    r.status.canonical_reason().unwrap_or(""),
                    r.headers
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
                return Err(Error::WebSocket(format!(
                    "refused with {}: {}",
                    r.status, r.reason
                )));
            }
        };
        let path = self.path.clone();
        // The error type is tungstenite's callback contract.
        #[allow(clippy::result_large_err)]
        let check_path = move |req: &Request, resp: Response| {
            if req.uri().path() == &*path {
                Ok(resp)
            } else {
                let mut err = ErrorResponse::new(None);
                *err.status_mut() = StatusCode::NOT_FOUND;
                Err(err)
            }
        };
        let stream = Prefixed::new(Bytes::from(head), s);
        let ws =
            tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(self.config))
                .await
                .map_err(|e| Error::WebSocket(format!("handshake: {e}")))?;
        Ok(split(ws))
    }
}

fn check_path(path: &str) -> Result<Arc<str>> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(Error::InvalidOption {
            name: "path",
            reason: format!("{path:?} is not an absolute path such as \"/ws\""),
        });
    }
    Ok(path.into())
}

impl ServerBuilder {
    /// Listens for WebSocket connections on `path` (such as `"/ws"`). The HTTP upgrade runs in
    /// the connection's own task under [`handshake_timeout`](Self::handshake_timeout).
    pub async fn serve_ws<P: Send + 'static>(
        self,
        path: &str,
        new_session: NewSessionCallback<P>,
    ) -> Result<Server<P>> {
        let acceptor = WsAcceptor {
            layer: Plain,
            path: check_path(path)?,
            config: ws_config(self.session.max_msg_len),
        };
        self.serve_with(acceptor, new_session).await
    }

    /// Listens for WebSocket connections over TLS (`wss://`) on `path`. The TLS and HTTP
    /// handshakes together run under [`handshake_timeout`](Self::handshake_timeout).
    pub async fn serve_wss<P: Send + 'static>(
        self,
        path: &str,
        tls: TlsServerConfig,
        new_session: NewSessionCallback<P>,
    ) -> Result<Server<P>> {
        let acceptor = WsAcceptor {
            layer: tls.acceptor(),
            path: check_path(path)?,
            config: ws_config(self.session.max_msg_len),
        };
        self.serve_with(acceptor, new_session).await
    }
}

// ---- client ----

pub(crate) struct WsConnector<L> {
    url: String,
    /// `host:port` to dial.
    addr: String,
    socket: SocketOptions,
    layer: L,
    config: WebSocketConfig,
}

impl<L: ClientLayer> Connector for WsConnector<L> {
    type Source = WsSource<L::Stream>;
    type Sink = WsSink<L::Stream>;
    fn endpoint_type(&self) -> EndpointType {
        L::ENDPOINT
    }
    async fn connect(&self) -> Result<Connected<Self::Source, Self::Sink>> {
        let tcp = dial_tcp(&self.addr, &self.socket).await?;
        let (local, remote) = (tcp.local_addr().ok(), tcp.peer_addr().ok());
        let s = Prefixed::new(Bytes::new(), self.layer.wrap(tcp).await?);
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(self.url.as_str(), s, Some(self.config))
                .await
                .map_err(|e| Error::WebSocket(format!("handshake with {}: {e}", self.url)))?;
        let (source, sink) = split(ws);
        Ok(Connected {
            source,
            sink,
            local,
            remote,
        })
    }
}

/// Checks a `ws://` or `wss://` URL; returns the host (IPv6 in brackets) and `host:port`.
fn parse_url(url: &str, scheme: &str) -> Result<(String, String)> {
    let bad = |reason: String| Error::InvalidOption {
        name: "addr",
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some(scheme) {
        return Err(bad(format!("{url:?} is not a {scheme}:// URL")));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad(format!("{url:?} has no host")))?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "wss" { 443 } else { 80 });
    Ok((host.clone(), format!("{host}:{port}")))
}

impl ClientBuilder {
    /// Starts a WebSocket client; the builder's address is the `ws://host:port/path` URL.
    pub fn connect_ws<P: Send + 'static>(
        self,
        new_session: NewSessionCallback<P>,
    ) -> Result<Client<P>> {
        let (_, addr) = parse_url(&self.addr, "ws")?;
        let c = WsConnector {
            url: self.addr.clone(),
            addr,
            socket: self.socket.clone(),
            layer: Plain,
            config: ws_config(self.session.max_msg_len),
        };
        self.start_with(c, new_session)
    }

    /// Starts a WebSocket client over TLS; the builder's address is the `wss://` URL, and the
    /// server's certificate must be valid for its host (or the config's server name). TLS and
    /// HTTP handshakes count against [`connect_timeout`](Self::connect_timeout).
    pub fn connect_wss<P: Send + 'static>(
        self,
        tls: TlsClientConfig,
        new_session: NewSessionCallback<P>,
    ) -> Result<Client<P>> {
        let (host, addr) = parse_url(&self.addr, "wss")?;
        let c = WsConnector {
            url: self.addr.clone(),
            addr,
            socket: self.socket.clone(),
            layer: tls.connector(&host)?,
            config: ws_config(self.session.max_msg_len),
        };
        self.start_with(c, new_session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:9000/ws", "ws").unwrap(),
            ("127.0.0.1".to_string(), "127.0.0.1:9000".to_string())
        );
        assert_eq!(
            parse_url("wss://localhost/x", "wss").unwrap(),
            ("localhost".to_string(), "localhost:443".to_string())
        );
        assert_eq!(parse_url("ws://[::1]:80/", "ws").unwrap().1, "[::1]:80");
        assert!(parse_url("http://localhost/", "ws").is_err());
        assert!(parse_url("127.0.0.1:80", "ws").is_err());
        assert!(check_path("ws").is_err());
        assert!(check_path("/ws").is_ok());
    }

    fn check(raw: &str, path: &str) -> std::result::Result<(), u16> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(raw.as_bytes()).unwrap().is_complete());
        check_request(&req, path).map_err(|r| r.status.as_u16())
    }

    #[test]
    fn request_checks() {
        let good = "GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\
                    Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n\r\n";
        assert_eq!(check(good, "/ws"), Ok(()));
        assert_eq!(check(good, "/other"), Err(404));
        assert_eq!(
            check("GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", "/ws"),
            Err(426)
        );
        assert_eq!(
            check("POST /ws HTTP/1.1\r\nHost: a\r\n\r\n", "/ws"),
            Err(405)
        );
    }
}
