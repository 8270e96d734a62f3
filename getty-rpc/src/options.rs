//! Settings shared by both ends of an RPC connection.

use std::time::Duration;

use getty_core::SessionOptions;

use crate::frame::DEFAULT_MAX_FRAME;

/// RPC behaviour of each connection of a server or client.
#[derive(Clone, Debug)]
pub struct RpcOptions {
    /// Timeout of a two-way call unless the call sets its own.
    pub default_timeout: Duration,
    /// Requests served at once per connection; more are answered `OVERLOADED` at once.
    pub max_inflight: usize,
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
    /// Everything else about the sessions; `cron_period` and `max_msg_len` are set from the
    /// fields above.
    pub session: SessionOptions,
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions {
            default_timeout: Duration::from_secs(10),
            max_inflight: 4096,
            max_frame: DEFAULT_MAX_FRAME,
            heartbeat_period: Duration::from_secs(10),
            heartbeat_misses: 3,
            identity: None,
            reflection: true,
            inline_first_poll: true,
            session: SessionOptions::default(),
        }
    }
}

impl RpcOptions {
    pub(crate) fn session_options(&self) -> SessionOptions {
        SessionOptions {
            cron_period: self.heartbeat_period,
            max_msg_len: self.max_frame,
            ..self.session.clone()
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
