//! Sessions over any byte stream: a server fed by a stream of accepted connections of your
//! own (`ServerBuilder::serve_incoming`) and a client that dials with a function of yours
//! (`ClientBuilder::connect_with`), for any `AsyncRead + AsyncWrite` connection: a listener
//! getty does not know, a socket handed over by a supervisor, `tokio::io::duplex` in memory.
//!
//! The sessions are the ones of every transport (the same two tasks, options, back-pressure,
//! heartbeats through the listener's cron); the connection is only read and written. Unix
//! domain sockets (`unix.rs`) are served by the same loop.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};

use crate::endpoint::EndpointType;
use crate::endpoint::client::{Client, ClientBuilder, Connected, Connector};
use crate::endpoint::server::{Server, ServerBuilder, Shared, Slot, run_session};
use crate::error::{Error, Result};
use crate::session::config::{NewSessionCallback, SessionConfig};
use crate::session::driver::{Sink, Source};
use crate::session::next_id;
use crate::transport::stream::{StreamSink, StreamSource};

/// A connection getty can run a session on: any byte stream.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// What a server without an IP listener reports as its `local_addr`: `0.0.0.0:0`.
pub const NO_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

fn split<C: Connection>(c: C) -> (StreamSource<ReadHalf<C>>, StreamSink<WriteHalf<C>>) {
    let (r, w) = tokio::io::split(c);
    (StreamSource(r), StreamSink::new(w))
}

impl ServerBuilder {
    /// Serves every connection `incoming` yields, until it ends or the server closes. The
    /// builder's address is not used (`local_addr` is `0.0.0.0:0`); session options, the
    /// session cap and the task pool apply as on TCP. An `Err` from the stream is logged and
    /// skipped, as a failed accept is.
    pub async fn serve_incoming<P, I, C>(
        self,
        incoming: I,
        new_session: NewSessionCallback<P>,
    ) -> Result<Server<P>>
    where
        P: Send + 'static,
        I: Stream<Item = io::Result<C>> + Send + Unpin + 'static,
        C: Connection,
    {
        let incoming = incoming.map(|r| r.map(|c| (split(c), None)));
        self.serve_streams(NO_ADDR, EndpointType::StreamServer, incoming, new_session)
    }

    /// The accept loop of servers whose connections come from a stream (custom, Unix).
    pub(crate) fn serve_streams<P, I, S, K>(
        self,
        local: SocketAddr,
        endpoint: EndpointType,
        mut incoming: I,
        new_session: NewSessionCallback<P>,
    ) -> Result<Server<P>>
    where
        P: Send + 'static,
        I: Stream<Item = io::Result<((S, K), Option<SocketAddr>)>> + Send + Unpin + 'static,
        S: Source,
        K: Sink,
    {
        self.session.validate()?;
        let opts = self;
        Ok(Server::start_custom(
            opts.pool.clone(),
            opts.partial_budget,
            local,
            endpoint,
            move |shared: Arc<Shared<P>>| async move {
                let mut backoff = Duration::from_millis(5);
                loop {
                    let next = tokio::select! {
                        _ = shared.closing.cancelled() => break,
                        n = incoming.next() => n,
                    };
                    let ((source, sink), remote) = match next {
                        None => break,
                        Some(Ok(c)) => {
                            backoff = Duration::from_millis(5);
                            c
                        }
                        Some(Err(e)) => {
                            tracing::warn!(?endpoint, error = %e, ?backoff, "accept failed");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                            continue;
                        }
                    };
                    if opts.max_sessions > 0
                        && shared.slots.load(Ordering::Acquire) >= opts.max_sessions
                    {
                        tracing::warn!(
                            ?endpoint,
                            max = opts.max_sessions,
                            "session cap reached; connection closed"
                        );
                        continue;
                    }
                    shared.slots.fetch_add(1, Ordering::AcqRel);
                    let (shared2, new_session, session_opts) =
                        (shared.clone(), new_session.clone(), opts.session.clone());
                    shared.rt.tracker.spawn(async move {
                        let shared = shared2;
                        let _slot = Slot(&shared.slots);
                        let cfg =
                            SessionConfig::new(next_id(), endpoint, None, remote, session_opts);
                        run_session(&shared, &new_session, cfg, source, sink).await;
                    });
                }
            },
        ))
    }
}

/// Dials with a function of the application's.
struct FnConnector<F> {
    dial: F,
    timeout: Duration,
}

impl<F, Fut, C> Connector for FnConnector<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<C>> + Send,
    C: Connection,
{
    type Source = StreamSource<ReadHalf<C>>;
    type Sink = StreamSink<WriteHalf<C>>;
    fn endpoint_type(&self) -> EndpointType {
        EndpointType::StreamClient
    }
    async fn connect(&self) -> Result<Connected<Self::Source, Self::Sink>> {
        let addr = || "a connection of the application's dial function".to_string();
        let c = tokio::time::timeout(self.timeout, (self.dial)())
            .await
            .map_err(|_| Error::Connect {
                addr: addr(),
                source: io::ErrorKind::TimedOut.into(),
            })?
            .map_err(|source| Error::Connect {
                addr: addr(),
                source,
            })?;
        let (source, sink) = split(c);
        Ok(Connected {
            source,
            sink,
            local: None,
            remote: None,
        })
    }
}

impl ClientBuilder {
    /// A client whose connections `dial` makes (once per connection and per reconnect, under
    /// the connect timeout). The builder's address is not used; connections, reconnects and
    /// back-off work as on TCP.
    pub fn connect_with<P, F, Fut, C>(
        self,
        dial: F,
        new_session: NewSessionCallback<P>,
    ) -> Result<Client<P>>
    where
        P: Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<C>> + Send + 'static,
        C: Connection,
    {
        let timeout = self.connect_timeout;
        self.start_with(FnConnector { dial, timeout }, new_session)
    }
}
