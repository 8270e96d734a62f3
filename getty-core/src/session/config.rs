//! What the new-session callback sees and sets for each connection before it starts: the
//! Rust form of getty's `NewSessionCallback`, which configured a session through setters.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::codec::tokio_codec::{DecodeHalf, EncodeHalf, TokioCodec};
use crate::codec::{Deframer, ReadWriter, Reader, Writer};
use crate::endpoint::EndpointType;
use crate::options::SessionOptions;
use crate::session::listener::EventListener;

/// Called once per new connection; return `Err` to reject it (the socket is closed, no
/// `on_close`). It must set a codec and an event listener.
pub type NewSessionCallback<P> =
    Arc<dyn Fn(&mut SessionConfig<P>) -> Result<(), String> + Send + Sync + 'static>;

/// Makes a [`NewSessionCallback`] from a closure.
pub fn new_session<P, F>(f: F) -> NewSessionCallback<P>
where
    F: Fn(&mut SessionConfig<P>) -> Result<(), String> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The settings of one session about to start.
pub struct SessionConfig<P> {
    pub(crate) id: u64,
    pub(crate) endpoint: EndpointType,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) name: String,
    /// Limits, timeouts and periods; start from the endpoint's defaults.
    pub options: SessionOptions,
    pub(crate) deframer: Option<Deframer<P>>,
    pub(crate) writer: Option<Arc<dyn Writer<P>>>,
    pub(crate) listener: Option<Arc<dyn EventListener<P>>>,
}

impl<P: Send + 'static> SessionConfig<P> {
    pub(crate) fn new(
        id: u64,
        endpoint: EndpointType,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
        options: SessionOptions,
    ) -> Self {
        SessionConfig {
            id,
            endpoint,
            local,
            remote,
            name: "session".to_string(),
            options,
            deframer: None,
            writer: None,
            listener: None,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn endpoint_type(&self) -> EndpointType {
        self.endpoint
    }
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote
    }

    pub fn set_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.name = name.into();
        self
    }
    pub fn set_options(&mut self, options: SessionOptions) -> &mut Self {
        self.options = options;
        self
    }
    /// Sets reader and writer from one value, as getty's `SetPkgHandler`.
    pub fn set_pkg_handler<RW: ReadWriter<P>>(&mut self, rw: Arc<RW>) -> &mut Self {
        self.deframer = Some(Deframer::Getty(rw.clone()));
        self.writer = Some(rw);
        self
    }
    pub fn set_reader(&mut self, r: Arc<dyn Reader<P>>) -> &mut Self {
        self.deframer = Some(Deframer::Getty(r));
        self
    }
    pub fn set_writer(&mut self, w: Arc<dyn Writer<P>>) -> &mut Self {
        self.writer = Some(w);
        self
    }
    /// Frames the session with a `tokio_util::codec` Decoder/Encoder pair.
    pub fn set_tokio_codec<C>(&mut self, codec: TokioCodec<C>) -> &mut Self
    where
        C: tokio_util::codec::Decoder<Item = P>
            + tokio_util::codec::Encoder<P>
            + Clone
            + Send
            + 'static,
        <C as tokio_util::codec::Decoder>::Error: std::error::Error + Send + Sync + 'static,
        <C as tokio_util::codec::Encoder<P>>::Error: std::error::Error + Send + Sync + 'static,
        P: Clone,
    {
        self.deframer = Some(Deframer::Stateful(Box::new(DecodeHalf(
            codec.codec.clone(),
        ))));
        self.writer = Some(Arc::new(EncodeHalf(Arc::new(Mutex::new(codec.codec)))));
        self
    }
    pub fn set_event_listener(&mut self, l: Arc<dyn EventListener<P>>) -> &mut Self {
        self.listener = Some(l);
        self
    }
}
