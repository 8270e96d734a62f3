//! A window: how many calls, and how many bytes of them, one peer may have in progress with the
//! other. The callee announces it (Hello); the caller takes from it before sending and gets it
//! back with each Response (two-way) or Credit (one-way). Both ends count the same way, so the
//! caller never sends what the callee would refuse, and the callee can bound its memory without
//! ever pausing its reads (`PROTOCOL.md` section 17).

/// A window's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Calls (Requests and OneWays) in progress at once.
    pub calls: u32,
    /// Bytes of those calls' frames (header, meta and body) in progress at once.
    pub bytes: u64,
}

/// One direction's use of a window. `limit` is `None` while the size is unknown (the other peer
/// has not announced flow control): usage is still counted, but nothing is refused.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Window {
    pub(crate) limit: Option<Limits>,
    pub(crate) calls: u32,
    pub(crate) bytes: u64,
}

impl Window {
    pub(crate) fn new(limit: Option<Limits>) -> Window {
        Window {
            limit,
            calls: 0,
            bytes: 0,
        }
    }

    /// Whether a call of `bytes` fits now. A call larger than the whole window fits when the
    /// window is empty, so no frame the limits allow can wait forever.
    pub(crate) fn fits(&self, bytes: u64) -> bool {
        match self.limit {
            None => true,
            Some(l) => {
                self.calls < l.calls
                    && (self.calls == 0 || self.bytes.saturating_add(bytes) <= l.bytes)
            }
        }
    }

    pub(crate) fn take(&mut self, bytes: u64) {
        self.calls = self.calls.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    pub(crate) fn give_back(&mut self, calls: u32, bytes: u64) {
        self.calls = self.calls.saturating_sub(calls);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}
