//! Close callbacks keyed by (handler, key), as getty's `AddCloseCallback`: replace in place,
//! run once in insertion order, and one that panics is logged without skipping the rest
//! (getty's recovered once for the whole list, so a panic skipped every later callback).

use std::panic::{AssertUnwindSafe, catch_unwind};

type Callback = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
pub(crate) struct CloseCallbacks {
    list: Vec<((String, String), Callback)>,
    done: bool,
}

impl CloseCallbacks {
    /// Adds or replaces; returns false when the callbacks already ran (the session is closed).
    pub(crate) fn add(&mut self, handler: String, key: String, f: Callback) -> bool {
        if self.done {
            return false;
        }
        let id = (handler, key);
        match self.list.iter_mut().find(|(k, _)| *k == id) {
            Some(slot) => slot.1 = f,
            None => self.list.push((id, f)),
        }
        true
    }

    pub(crate) fn remove(&mut self, handler: &str, key: &str) -> bool {
        let before = self.list.len();
        self.list.retain(|((h, k), _)| !(h == handler && k == key));
        before != self.list.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Takes the list for running; later adds are refused.
    pub(crate) fn take(&mut self) -> Vec<((String, String), Callback)> {
        self.done = true;
        std::mem::take(&mut self.list)
    }
}

/// Runs each callback, catching and logging panics one by one.
pub(crate) fn run_all(session: u64, list: Vec<((String, String), Callback)>) {
    for ((handler, key), f) in list {
        if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
            tracing::error!(session, %handler, %key, panic = %panic_message(&*p), "close callback panicked");
        }
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
