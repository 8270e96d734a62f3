//! The live sessions of one endpoint: what a server closes on shutdown and counts against its
//! cap, and what a client counts to keep N connections.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::session::Session;

pub(crate) struct SessionSet<P> {
    map: Mutex<HashMap<u64, Session<P>>>,
    /// Woken whenever a session leaves the set.
    pub(crate) changed: Notify,
}

impl<P: Send + 'static> SessionSet<P> {
    pub(crate) fn new() -> Self {
        SessionSet {
            map: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session<P>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn insert(&self, s: Session<P>) {
        self.map().insert(s.id(), s);
    }
    pub(crate) fn remove(&self, id: u64) {
        self.map().remove(&id);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
    pub(crate) fn all(&self) -> Vec<Session<P>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by_key(Session::id);
        v
    }
}

// Without bounds, so that the `Drop` of an endpoint (which has none) can close its sessions.
impl<P> SessionSet<P> {
    pub(crate) fn close_all(&self) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for s in map.values() {
            s.inner.start_close();
        }
    }
}
