//! getty-rpc: bidirectional RPC over getty-core sessions.
//!
//! Either end of a connection may call the other: both peers send Requests and OneWays, and
//! answer the ones they receive. The bytes on the wire are specified, language-neutrally, in
//! `PROTOCOL.md` next to this crate's `Cargo.toml`; the code below implements that file.
//!
//! Map of the crate (bottom up):
//! - [`status`]: [`Status`], the `u16` outcome a Response carries, plus the two codes that are
//!   only reported locally (`CONNECTION_CLOSED`, `TIMEOUT`).
//! - [`frame`]: the wire format, sans-io (bytes in, bytes out, no sockets): [`Frame`] and its
//!   constructors, [`frame::encode`], [`frame::decode`], [`frame::peek_header`], and
//!   [`FrameCodec`], the getty-core `Reader`/`Writer` that puts frames on a session.
//! - [`error`]: [`RpcError`], a status and a message: what every failed call returns.
//! - [`body`]: how typed messages become bodies per codec ([`Json`] for serde types, [`Prost`]
//!   for prost messages over Protobuf and JSON).
//! - [`router`]: [`Router`], the services a peer serves; [`context`]: [`Context`], what a
//!   handler knows (the calling peer, deadline, metadata).
//! - [`peer`]: [`Peer`], the handle to call the other end of one connection, and the pending
//!   calls it matches replies to.
//! - `machine` (internal): the protocol state of one connection, sans-io: sequence ids, pending
//!   calls, running handlers, both flow-control windows, owed frames, heartbeat policy. Events
//!   in, actions out; property-tested by driving two machines against each other.
//! - `connection` (internal): drives the machine as a getty-core event listener.
//! - [`stream`]: streaming calls either way on one connection: [`StreamReceiver`] (a
//!   `futures::Stream`), [`StreamSender`] (waits for the receiver's credit), typed
//!   [`Receiver`] / [`Sender`], and [`StreamHandler`] for the acceptor.
//! - [`server`] and [`client`]: [`RpcServer`] and [`RpcClient`] on any getty-core transport.
//! - [`cluster`]: [`Cluster`], calling a service found through a getty-registry: follows its
//!   instances, balances calls, fails over calls that were never sent, drains removed instances,
//!   and can refuse plaintext instances ([`TransportSecurity`]).
//!   Providers publish with [`RpcServer::publish`] and leave with [`RpcServer::shutdown`].
//! - [`compression`]: per-call zstd bodies (feature `zstd`), negotiated in the Hello, inflated
//!   never past the frame limit.
//! - `builtin` (internal): services every peer answers itself (`getty.Peer/Hello`).
//! - [`middleware`]: [`Middleware`], layers on the calls an endpoint serves and makes and on
//!   streams' opens (both paths of both peers; `middleware::streams`), and a tower adapter
//!   (feature `tower`).
//! - [`options`]: [`RpcOptions`] (timeouts, windows, stream credit, heartbeats, frame limit).

pub mod body;
mod builtin;
pub mod client;
pub mod cluster;
pub mod compression;
mod connection;
pub mod context;
pub mod error;
pub mod frame;
mod machine;
pub mod middleware;
pub mod options;
pub mod peer;
pub mod router;
pub mod server;
pub mod status;
pub mod stream;

pub use body::{BodyCodec, Json, Prost};
pub use client::RpcClient;
pub use cluster::{Cluster, ClusterOptions, TransportSecurity};
pub use connection::OnPeer;
pub use context::Context;
pub use error::RpcError;
pub use frame::{CodecId, Frame, FrameCodec, FrameError, Kind};
/// `#[getty_rpc::service]`: a typed service (server trait + client stub) from a Rust trait.
pub use getty_rpc_macros::service;
pub use middleware::{Call, CallKind, Direction, Layers, Middleware, Next};
pub use options::RpcOptions;
pub use peer::{CallOptions, Peer, PeerStats, PendingCall};
pub use router::{Handler, MethodInfo, Router};
pub use server::RpcServer;
pub use status::Status;
pub use stream::{Receiver, Sender, StreamHandler, StreamKind, StreamReceiver, StreamSender};
