//! Options in builder style: per-session settings and socket options, with getty's names
//! where they fit. Defaults are chosen to be safe, not tiny (getty's 4 KiB limit confused users).

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// Builder-style setters for an options struct's public fields: the structs are
/// `#[non_exhaustive]`, so that adding a field breaks no caller, and callers outside the crate
/// build them as `T::default().field(value)` (an `Option` field's setter takes the value).
#[doc(hidden)]
#[macro_export]
macro_rules! option_setters {
    ($t:ty { $($f:ident : $ft:ty),* $(,)? } $(some { $($o:ident : $ot:ty),* $(,)? })?) => {
        impl $t {
            $(
                #[doc = concat!("Sets `", stringify!($f), "`.")]
                #[must_use]
                pub fn $f(mut self, v: $ft) -> Self {
                    self.$f = v;
                    self
                }
            )*
            $($(
                #[doc = concat!("Sets `", stringify!($o), "` to `Some(v)`.")]
                #[must_use]
                pub fn $o(mut self, v: $ot) -> Self {
                    self.$o = Some(v);
                    self
                }
            )*)?
        }
    };
}

/// Per-session settings; the new-session callback may change them for each session.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Longest package accepted, in bytes; 0 means unlimited. Default 4 MiB.
    pub max_msg_len: usize,
    /// How long one package may take from its first byte to its last before the session fails
    /// (a peer that trickles bytes is cut too). An idle session with nothing buffered never
    /// times out: idleness is the listener's call, in cron.
    pub read_timeout: Duration,
    /// How long one socket write may take before the session fails with a write timeout.
    pub write_timeout: Duration,
    /// Period of `on_cron` (and of WebSocket pings). Default 60 s.
    pub cron_period: Duration,
    /// How long `close` keeps flushing already queued writes. Default 3 s.
    pub wait_time: Duration,
    /// Bound of the write queue, in writes: a full queue makes writers wait (back-pressure).
    pub write_queue_len: usize,
    /// Size of one socket read.
    pub read_buf_size: usize,
    /// Back-pressure from writes to reads: after a package whose handling filled the write
    /// queue, read nothing more until the writer made room (default on). A protocol that bounds
    /// what a peer can make it queue by other means (getty-rpc's windows) turns this off, since
    /// two peers that both pause while writing to each other can deadlock.
    pub pause_reads_when_queue_full: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            max_msg_len: 4 << 20,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            cron_period: Duration::from_secs(60),
            wait_time: Duration::from_secs(3),
            write_queue_len: 1024,
            read_buf_size: 64 << 10,
            pause_reads_when_queue_full: true,
        }
    }
}

option_setters!(SessionOptions {
    max_msg_len: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    cron_period: Duration,
    wait_time: Duration,
    write_queue_len: usize,
    read_buf_size: usize,
    pause_reads_when_queue_full: bool,
});

impl SessionOptions {
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |name, reason: &str| {
            Err(crate::Error::InvalidOption {
                name,
                reason: reason.to_string(),
            })
        };
        if self.cron_period.is_zero() {
            return bad("cron_period", "must be above zero");
        }
        if self.write_queue_len == 0 {
            return bad("write_queue_len", "must be above zero");
        }
        if self.read_buf_size < 512 {
            return bad("read_buf_size", "must be at least 512 bytes");
        }
        if self.read_timeout.is_zero() || self.write_timeout.is_zero() {
            return bad("read_timeout/write_timeout", "must be above zero");
        }
        // Each is added to `Instant::now()`, which panics on overflow.
        for (name, d) in [
            ("cron_period", self.cron_period),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
            ("wait_time", self.wait_time),
        ] {
            check_duration(name, d)?;
        }
        Ok(())
    }
}

/// Longest period or timeout accepted: far beyond any real use, far below what overflows a
/// deadline (`Instant::now() + d`).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Rejects a duration above [`MAX_DURATION`] with an [`crate::Error::InvalidOption`] naming it.
pub fn check_duration(name: &'static str, d: Duration) -> crate::Result<()> {
    if d > MAX_DURATION {
        return Err(crate::Error::InvalidOption {
            name,
            reason: format!("{d:?} is above the longest accepted duration, {MAX_DURATION:?}"),
        });
    }
    Ok(())
}

/// TCP socket options applied to every connection of an endpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SocketOptions {
    pub no_delay: bool,
    /// TCP keep-alive probe period; `None` leaves keep-alive off.
    pub keep_alive: Option<Duration>,
    pub send_buffer_size: Option<usize>,
    pub recv_buffer_size: Option<usize>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            no_delay: true,
            keep_alive: None,
            send_buffer_size: None,
            recv_buffer_size: None,
        }
    }
}

option_setters!(SocketOptions { no_delay: bool } some {
    keep_alive: Duration,
    send_buffer_size: usize,
    recv_buffer_size: usize,
});

impl SocketOptions {
    pub(crate) fn apply(&self, s: &TcpStream) -> io::Result<()> {
        s.set_nodelay(self.no_delay)?;
        let sock = socket2::SockRef::from(s);
        if let Some(period) = self.keep_alive {
            let ka = socket2::TcpKeepalive::new()
                .with_time(period)
                .with_interval(period);
            sock.set_tcp_keepalive(&ka)?;
        }
        if let Some(n) = self.send_buffer_size {
            sock.set_send_buffer_size(n)?;
        }
        if let Some(n) = self.recv_buffer_size {
            sock.set_recv_buffer_size(n)?;
        }
        Ok(())
    }
}
