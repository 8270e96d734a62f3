//! Traffic counters per session, lock-free so the hot path pays one relaxed add per event.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default, Debug)]
pub struct Stats {
    pub(crate) read_bytes: AtomicU64,
    pub(crate) write_bytes: AtomicU64,
    pub(crate) read_pkgs: AtomicU64,
    pub(crate) write_pkgs: AtomicU64,
    pub(crate) dropped_pkgs: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_pkgs: u64,
    pub write_pkgs: u64,
    /// Packages dropped on message transports (over-long or rejected datagrams/messages).
    pub dropped_pkgs: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            read_bytes: self.read_bytes.load(Relaxed),
            write_bytes: self.write_bytes.load(Relaxed),
            read_pkgs: self.read_pkgs.load(Relaxed),
            write_pkgs: self.write_pkgs.load(Relaxed),
            dropped_pkgs: self.dropped_pkgs.load(Relaxed),
        }
    }
    pub(crate) fn add_read(&self, bytes: u64) {
        self.read_bytes.fetch_add(bytes, Relaxed);
    }
    pub(crate) fn add_read_pkg(&self) {
        self.read_pkgs.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_written(&self, bytes: u64, pkgs: u64) {
        self.write_bytes.fetch_add(bytes, Relaxed);
        self.write_pkgs.fetch_add(pkgs, Relaxed);
    }
    pub(crate) fn add_dropped(&self) {
        self.dropped_pkgs.fetch_add(1, Relaxed);
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read bytes: {}, write bytes: {}, read pkgs: {}, write pkgs: {}, dropped pkgs: {}",
            self.read_bytes, self.write_bytes, self.read_pkgs, self.write_pkgs, self.dropped_pkgs
        )
    }
}
