//! Settings shared by both ends of an RPC connection.

use std::time::Duration;

use getty_core::SessionOptions;

use crate::frame::DEFAULT_MAX_FRAME;
use crate::middleware::{Layers, Middleware};

/// RPC behaviour of each connection of a server or client.
///
/// Built as `RpcOptions::default().max_inflight(64).identity("api-1".into())`: the struct is
/// `#[non_exhaustive]`, and every public field has a setter of its name.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RpcOptions {
    /// Timeout of a two-way call unless the call sets its own.
    pub default_timeout: Duration,
    /// This end's window, in calls: the peer's Requests and OneWays served at once per
    /// connection. Announced in the Hello, so a getty peer waits for room instead of sending
    /// more; a peer that sends more anyway is answered `OVERLOADED`.
    pub max_inflight: usize,
    /// This end's window, in bytes: the frames of the peer's calls in progress at once.
    /// Bounds the memory a peer's requests can take; at least `max_frame` is sensible.
    pub max_inflight_bytes: u64,
    /// The credit this end grants the sender of items on each stream, in items: what a slow
    /// consumer here may make the other side hold back, and at most what it holds itself.
    pub stream_window_items: u32,
    /// The same credit in bytes of items.
    pub stream_window_bytes: u64,
    /// Largest frame accepted or sent (header, meta and body).
    pub max_frame: usize,
    /// A Ping goes out every period (the session's cron period).
    pub heartbeat_period: Duration,
    /// A peer silent for this many periods (not even a Pong) is closed.
    pub heartbeat_misses: u32,
    /// The instance id this end announces on every connection it opens or accepts (a
    /// `getty.Peer/Hello` one-way frame, sent first), so the other side can find this
    /// connection by the id it saw in a registry. `None`: say nothing.
    pub identity: Option<String>,
    /// Poll each handler once on the connection's own task before giving it a task of its own:
    /// handlers that answer without waiting then cost no task and no wake-up. A handler that
    /// does heavy work before its first `.await` delays that connection's reads; turn this off
    /// for such handlers. Default on.
    pub inline_first_poll: bool,
    /// Answer `getty.Reflection/Describe` (what `getty describe` shows). Default on.
    pub reflection: bool,
    /// Compress call and reply bodies of at least this many bytes with zstd, when the other end
    /// announced it reads them (feature `zstd`; this end then announces it too and reads
    /// compressed bodies, never past `max_frame`). `None` (the default): never, and nothing
    /// is announced. Ignored without the feature.
    pub compress_above: Option<usize>,
    /// Middleware on the calls this endpoint serves and makes (see [`crate::middleware`]).
    /// None by default: calls then take the path without layers.
    pub layers: Layers,
    /// Everything else about the sessions; `cron_period` and `max_msg_len` are set from the
    /// fields above.
    pub session: SessionOptions,
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions {
            default_timeout: Duration::from_secs(10),
            max_inflight: 4096,
            max_inflight_bytes: 2 * DEFAULT_MAX_FRAME as u64,
            stream_window_items: 256,
            stream_window_bytes: 1 << 20,
            max_frame: DEFAULT_MAX_FRAME,
            heartbeat_period: Duration::from_secs(10),
            heartbeat_misses: 3,
            identity: None,
            reflection: true,
            inline_first_poll: true,
            layers: Layers::default(),
            compress_above: None,
            session: SessionOptions::default(),
        }
    }
}

getty_core::option_setters!(RpcOptions {
    default_timeout: Duration,
    max_inflight: usize,
    max_inflight_bytes: u64,
    stream_window_items: u32,
    stream_window_bytes: u64,
    max_frame: usize,
    heartbeat_period: Duration,
    heartbeat_misses: u32,
    inline_first_poll: bool,
    reflection: bool,
    layers: Layers,
    session: SessionOptions,
} some {
    identity: String,
    compress_above: usize,
});

impl RpcOptions {
    /// Adds a layer to both paths: the calls served and the calls made (one instance shared).
    pub fn layer(mut self, layer: impl Middleware) -> Self {
        self.layers.both(layer);
        self
    }
    /// Adds a layer to the calls this endpoint serves.
    pub fn inbound_layer(mut self, layer: impl Middleware) -> Self {
        self.layers.inbound(layer);
        self
    }
    /// Adds a layer to the calls this endpoint makes.
    pub fn outbound_layer(mut self, layer: impl Middleware) -> Self {
        self.layers.outbound(layer);
        self
    }

    pub(crate) fn session_options(&self) -> SessionOptions {
        self.session
            .clone()
            .cron_period(self.heartbeat_period)
            .max_msg_len(self.max_frame)
            // Reads never pause because this side's own calls fill the write queue (two peers
            // that both pause while writing to each other deadlock). The windows bound what a
            // flow-control peer can make us owe; for other peers the connection holds reads
            // while owed replies wait for room (see `peer::defer`).
            .pause_reads_when_queue_full(false)
    }

    /// The connection state machine's settings.
    pub(crate) fn machine_config(&self) -> crate::machine::Config {
        let calls = u32::try_from(self.max_inflight).unwrap_or(u32::MAX).max(1);
        crate::machine::Config {
            window: crate::machine::Limits {
                calls,
                bytes: self.max_inflight_bytes.max(1),
            },
            // Every Request of a flow-control peer holds window until answered, so it can make
            // us owe at most a window of answers, plus its pings' Pongs and our own Cancels.
            max_owed: 2 * calls as usize + 1024,
            heartbeat_misses: self.heartbeat_misses,
            stream_credit: crate::machine::Limits {
                calls: self.stream_window_items.max(1),
                bytes: self.stream_window_bytes.max(1),
            },
        }
    }
}

impl RpcOptions {
    /// Refuses options that cannot work or whose arithmetic overflows: a zero heartbeat period,
    /// a silence limit (`heartbeat_period × heartbeat_misses`) or call timeout beyond
    /// getty-core's longest duration, and bad session options.
    /// `RpcServer` and `RpcClient` call it before they start.
    pub fn validate(&self) -> getty_core::Result<()> {
        use getty_core::options::check_duration;
        let zero = |name| getty_core::Error::InvalidOption {
            name,
            reason: "must be above zero".to_string(),
        };
        if self.heartbeat_period.is_zero() {
            return Err(zero("heartbeat_period"));
        }
        if self.heartbeat_misses == 0 {
            return Err(zero("heartbeat_misses"));
        }
        let silence = self
            .heartbeat_period
            .checked_mul(self.heartbeat_misses)
            .unwrap_or(Duration::MAX);
        check_duration("heartbeat_period × heartbeat_misses", silence)?;
        check_duration("default_timeout", self.default_timeout)?;
        self.session_options().validate()
    }
}
