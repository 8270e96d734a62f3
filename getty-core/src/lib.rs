//! getty-core: a Netty-like session library, usable alone as a network library.
//!
//! Map of the crate, one folder per role:
//! - [`session`]: one connection.
//!   - [`Session`] (`session/mod.rs`), the cheap clonable handle (writes, attributes, active
//!     time, stats, close callbacks);
//!   - [`listener`]: [`EventListener`], the events a session reports;
//!   - [`config`]: [`SessionConfig`], what the new-session callback sets per connection;
//!   - [`attributes`] and [`stats`]: per-session attributes and counters;
//!   - `driver` (internal): the session task and the writer task, shared by every transport;
//!   - `callbacks` (internal): close callbacks, run once.
//! - [`endpoint`]: the owners of sessions.
//!   - [`server`] and [`client`]: an accept loop, or N connections kept alive with reconnect
//!     and back-off; `serve_tcp`/`connect_tcp` live here, the other transports add their
//!     constructors to the same builders;
//!   - [`EndpointType`] (`endpoint/mod.rs`): what kind of endpoint a session belongs to;
//!   - `sessions` and `budget` (internal): an endpoint's live session set, and a server's cap on
//!     the bytes its sessions hold in partial packages.
//! - [`codec`]: [`Reader`]/[`Writer`] framing (sans-io, `codec/mod.rs`); [`length_prefixed`] is a
//!   ready one and [`tokio_codec`] adapts `tokio_util::codec` pairs.
//! - [`transport`]: the sockets under the driver.
//!   - `stream` (internal): the byte-stream source and sink (TCP and TLS);
//!   - [`tls`]: TCP+TLS (`serve_tls`/`connect_tls`) and the TLS configs, from PEM or rustls;
//!   - [`ws`]: WebSocket, plain and over TLS (`serve_ws`/`serve_wss`, `connect_ws`/`connect_wss`);
//!   - [`udp`]: [`UdpEndpoint`] (one socket, one session, every peer) and [`UdpClient`];
//!   - `unix`: Unix domain sockets (`serve_unix`/`connect_unix`);
//!   - [`incoming`]: any `AsyncRead + AsyncWrite` connection (`serve_incoming` over a stream of
//!     accepted connections, `connect_with` over a dial function; `tokio::io::duplex` too).
//! - [`options`]: session and socket options.
//! - [`pool`]: the optional [`TaskPool`] for handlers.
//! - [`error`]: typed errors.
//!
//! Each module is also reachable at the crate root (`getty_core::tls`, `getty_core::server`, …),
//! where it was before the folders, so code that names it there keeps compiling.

pub mod codec;
pub mod endpoint;
pub mod error;
pub mod options;
pub mod pool;
pub mod session;
pub mod transport;

pub use codec::{length_prefixed, tokio_codec};
pub use endpoint::{client, server};
pub use session::{attributes, config, listener, stats};
#[cfg(unix)]
pub use transport::unix;
pub use transport::{incoming, tls, udp, ws};

pub use codec::length_prefixed::LengthPrefixed;
pub use codec::tokio_codec::TokioCodec;
pub use codec::{Decoded, ReadWriter, Reader, Writer};
pub use endpoint::EndpointType;
pub use endpoint::client::{Client, ClientBuilder, ClientState};
pub use endpoint::server::{Server, ServerBuilder};
pub use error::{CodecError, Error, Result};
pub use options::{SessionOptions, SocketOptions};
pub use pool::TaskPool;
pub use session::Session;
pub use session::attributes::AttrKey;
pub use session::config::{NewSessionCallback, SessionConfig, new_session};
pub use session::listener::EventListener;
pub use session::stats::StatsSnapshot;
pub use transport::incoming::Connection;
pub use transport::tls::{TlsClientConfig, TlsServerConfig};
pub use transport::udp::{UdpClient, UdpEndpoint};
