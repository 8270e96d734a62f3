//! getty-core: a Netty-like session library, usable alone as a network library.
//!
//! Map of the crate:
//! - [`session`]: [`Session`], the cheap clonable handle of one connection (writes, attributes,
//!   active time, stats, close callbacks).
//! - [`listener`]: [`EventListener`], the events a session reports.
//! - [`codec`]: [`Reader`]/[`Writer`] framing (sans-io); [`length_prefixed`] is a ready one and
//!   [`tokio_codec`] adapts `tokio_util::codec` pairs.
//! - [`config`]: [`SessionConfig`], what the new-session callback sets per connection.
//! - [`options`]: session and socket options.
//! - [`server`] and [`client`]: endpoints with an accept loop, or N connections kept alive with
//!   reconnect and back-off. The transports add their constructors to the same builders:
//!   `serve_tcp`/`connect_tcp` here, and in their own modules:
//!   - [`tls`]: TCP+TLS (`serve_tls`/`connect_tls`) and the TLS configs, from PEM or rustls;
//!   - [`ws`]: WebSocket, plain and over TLS (`serve_ws`/`serve_wss`, `connect_ws`/`connect_wss`);
//!   - [`udp`]: [`UdpEndpoint`] (one socket, one session, every peer) and [`UdpClient`];
//!   - `unix`: Unix domain sockets (`serve_unix`/`connect_unix`);
//!   - [`incoming`]: any `AsyncRead + AsyncWrite` connection (`serve_incoming` over a stream of
//!     accepted connections, `connect_with` over a dial function; `tokio::io::duplex` too).
//! - [`pool`]: the optional [`TaskPool`] for handlers.
//! - `budget` (internal): a server's cap on the bytes its sessions hold in partial packages.
//! - `driver` (internal): the session task and the writer task, shared by every transport;
//!   `stream` is the byte-stream transport under it (TCP and TLS); `ws` and `udp` are the
//!   message transports.
//! - [`error`]: typed errors.

pub mod attributes;
mod budget;
mod callbacks;
pub mod client;
pub mod codec;
pub mod config;
mod driver;
pub mod endpoint;
pub mod error;
pub mod incoming;
pub mod length_prefixed;
pub mod listener;
pub mod options;
pub mod pool;
pub mod server;
pub mod session;
mod sessions;
pub mod stats;
mod stream;
pub mod tls;
pub mod tokio_codec;
pub mod udp;
#[cfg(unix)]
pub mod unix;
pub mod ws;

pub use attributes::AttrKey;
pub use client::{Client, ClientBuilder, ClientState};
pub use codec::{Decoded, ReadWriter, Reader, Writer};
pub use config::{NewSessionCallback, SessionConfig, new_session};
pub use endpoint::EndpointType;
pub use error::{CodecError, Error, Result};
pub use incoming::Connection;
pub use length_prefixed::LengthPrefixed;
pub use listener::EventListener;
pub use options::{SessionOptions, SocketOptions};
pub use pool::TaskPool;
pub use server::{Server, ServerBuilder};
pub use session::Session;
pub use stats::StatsSnapshot;
pub use tls::{TlsClientConfig, TlsServerConfig};
pub use tokio_codec::TokioCodec;
pub use udp::{UdpClient, UdpEndpoint};
