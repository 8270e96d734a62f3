//! Endpoints, the owners of sessions: a [`Server`](server::Server) with its accept loop, a
//! [`Client`](client::Client) that keeps N connections with reconnect, and what kind of
//! endpoint a session belongs to (this file, as getty's `EndPointType`).
//!
//! - `server.rs`: the accept loop, the session cap and close shared by every transport.
//! - `client.rs`: the dial supervisor with back-off.
//! - `sessions.rs` (internal): an endpoint's set of live sessions, which its close waits for.
//! - `budget.rs` (internal): a server's cap on the bytes its sessions hold in partial packages.

pub(crate) mod budget;
pub mod client;
pub mod server;
pub(crate) mod sessions;

use std::fmt;

/// The endpoint kind a session was created by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointType {
    UdpEndpoint,
    UdpClient,
    TcpClient,
    WsClient,
    WssClient,
    TcpServer,
    WsServer,
    WssServer,
    TlsClient,
    TlsServer,
    /// Unix domain sockets.
    UnixClient,
    UnixServer,
    /// Connections the application made (`connect_with`, `serve_incoming`).
    StreamClient,
    StreamServer,
}

impl EndpointType {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::UdpEndpoint => "UDP_ENDPOINT",
            EndpointType::UdpClient => "UDP_CLIENT",
            EndpointType::TcpClient => "TCP_CLIENT",
            EndpointType::WsClient => "WS_CLIENT",
            EndpointType::WssClient => "WSS_CLIENT",
            EndpointType::TcpServer => "TCP_SERVER",
            EndpointType::WsServer => "WS_SERVER",
            EndpointType::WssServer => "WSS_SERVER",
            EndpointType::TlsClient => "TLS_CLIENT",
            EndpointType::TlsServer => "TLS_SERVER",
            EndpointType::UnixClient => "UNIX_CLIENT",
            EndpointType::UnixServer => "UNIX_SERVER",
            EndpointType::StreamClient => "STREAM_CLIENT",
            EndpointType::StreamServer => "STREAM_SERVER",
        }
    }

    /// Whether this side accepted the connection.
    pub fn is_server(self) -> bool {
        matches!(
            self,
            EndpointType::UdpEndpoint
                | EndpointType::TcpServer
                | EndpointType::WsServer
                | EndpointType::WssServer
                | EndpointType::TlsServer
                | EndpointType::UnixServer
                | EndpointType::StreamServer
        )
    }
}

impl fmt::Display for EndpointType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
