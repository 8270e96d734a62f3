//! Transports: each puts its sockets on the session task and writer task of
//! `session/driver.rs` through the driver's `Source` (reads) and `Sink` (writes), and adds its
//! constructors to the endpoint builders.
//!
//! - `stream.rs` (internal): the byte-stream source and sink, for TCP, TLS and any
//!   `AsyncRead + AsyncWrite`.
//! - `tls.rs`: TCP+TLS (`serve_tls`/`connect_tls`) and the TLS configs, from PEM or rustls.
//! - `ws.rs`: WebSocket, plain and over TLS, a message transport.
//! - `udp.rs`: one socket, one session, every peer; a message transport.
//! - `unix.rs`: Unix domain sockets on the `incoming.rs` accept loop.
//! - `incoming.rs`: connections the application makes or accepts itself.

pub mod incoming;
pub(crate) mod stream;
pub mod tls;
pub mod udp;
#[cfg(unix)]
pub mod unix;
pub mod ws;
