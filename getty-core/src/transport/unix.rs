//! Unix domain sockets: `ServerBuilder::serve_unix` and `ClientBuilder::connect_unix`, with the
//! builder's address as the socket path (`/run/app.sock`, or `unix:///run/app.sock`).
//!
//! The sessions are those of TCP (same options, back-pressure, framing); there is no IP
//! address, so `local_addr` is `0.0.0.0:0` and sessions have no remote address. The server
//! removes its socket file when it stops; a path that exists is not replaced (bind fails), so a
//! second server cannot steal a live one's socket.

use std::io;
use std::path::{Path, PathBuf};

use futures_util::stream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

use crate::endpoint::EndpointType;
use crate::endpoint::client::{Client, ClientBuilder, Connected, Connector};
use crate::endpoint::server::{Server, ServerBuilder};
use crate::error::{Error, Result};
use crate::session::config::NewSessionCallback;
use crate::transport::incoming::NO_ADDR;
use crate::transport::stream::{StreamSink, StreamSource};

/// The socket path of an address: `unix://` stripped if present.
pub fn unix_path(addr: &str) -> &Path {
    Path::new(addr.strip_prefix("unix://").unwrap_or(addr))
}

/// Removes the socket file when the accept loop ends (the server closed or was dropped).
struct Unlink(PathBuf);
impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ServerBuilder {
    /// Listens on the Unix socket at the builder's address.
    pub async fn serve_unix<P: Send + 'static>(
        self,
        new_session: NewSessionCallback<P>,
    ) -> Result<Server<P>> {
        let path = unix_path(&self.addr).to_path_buf();
        let listener = UnixListener::bind(&path).map_err(|source| Error::Bind {
            addr: path.display().to_string(),
            source,
        })?;
        let unlink = Unlink(path);
        let incoming = Box::pin(stream::unfold(
            (listener, unlink),
            |(listener, unlink)| async move {
                let r: io::Result<_> = listener.accept().await.map(|(s, _)| {
                    let (r, w) = s.into_split();
                    ((StreamSource(r), StreamSink::new(w)), None)
                });
                Some((r, (listener, unlink)))
            },
        ));
        self.serve_streams(NO_ADDR, EndpointType::UnixServer, incoming, new_session)
    }
}

struct UnixConnector {
    path: PathBuf,
    timeout: std::time::Duration,
}

impl Connector for UnixConnector {
    type Source = StreamSource<OwnedReadHalf>;
    type Sink = StreamSink<OwnedWriteHalf>;
    fn endpoint_type(&self) -> EndpointType {
        EndpointType::UnixClient
    }
    async fn connect(&self) -> Result<Connected<Self::Source, Self::Sink>> {
        let err = |source| Error::Connect {
            addr: self.path.display().to_string(),
            source,
        };
        let s = tokio::time::timeout(self.timeout, UnixStream::connect(&self.path))
            .await
            .map_err(|_| err(io::ErrorKind::TimedOut.into()))?
            .map_err(err)?;
        let (r, w) = s.into_split();
        Ok(Connected {
            source: StreamSource(r),
            sink: StreamSink::new(w),
            local: None,
            remote: None,
        })
    }
}

impl ClientBuilder {
    /// Connects to the Unix socket at the builder's address.
    pub fn connect_unix<P: Send + 'static>(
        self,
        new_session: NewSessionCallback<P>,
    ) -> Result<Client<P>> {
        let c = UnixConnector {
            path: unix_path(&self.addr).to_path_buf(),
            timeout: self.connect_timeout,
        };
        self.start_with(c, new_session)
    }
}
