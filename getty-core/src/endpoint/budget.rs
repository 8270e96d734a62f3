//! The partial-package budget: a cap on the bytes that all sessions of one server hold in
//! packages they have begun but not finished receiving.
//!
//! Without it, each peer may make the server buffer up to the max message length and then
//! stall, so a few hundred such peers exhaust memory. A session that holds a partial package
//! is charged its read buffer's capacity (what it has allocated for that package, including the
//! room reserved for an announced length); a session whose buffer is empty holds no charge.
//! A session that cannot get the charge it needs stops reading (its bytes wait in the kernel)
//! until other sessions release budget; its read timeout, which bounds a whole package from its
//! first byte, still runs, so a session that waits too long is cut. A partial package larger
//! than the whole budget can never fit and ends its session at once.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// One server's budget, shared by its sessions. Permits are bytes.
pub(crate) struct PartialBudget {
    sem: Semaphore,
    total: usize,
}

impl PartialBudget {
    pub(crate) fn new(total: usize) -> Arc<PartialBudget> {
        let total = total.min(Semaphore::MAX_PERMITS);
        Arc::new(PartialBudget {
            sem: Semaphore::new(total),
            total,
        })
    }

    /// Bytes currently charged to sessions.
    pub(crate) fn in_use(&self) -> usize {
        self.total - self.sem.available_permits()
    }
}

/// What one session holds of its server's budget; released when dropped.
pub(crate) struct Charge {
    budget: Option<Arc<PartialBudget>>,
    held: usize,
}

/// A partial package that the whole budget cannot hold.
pub(crate) struct OverBudget {
    pub(crate) want: usize,
    pub(crate) total: usize,
}

impl Charge {
    pub(crate) fn new(budget: Option<Arc<PartialBudget>>) -> Charge {
        Charge { budget, held: 0 }
    }

    /// Brings the charge to `want` bytes without waiting. Returns false when more budget is
    /// needed than is free (then [`Charge::wait_for`] waits for it).
    pub(crate) fn try_settle(&mut self, want: usize) -> Result<bool, OverBudget> {
        let Some(b) = &self.budget else {
            return Ok(true);
        };
        if want <= self.held {
            if want < self.held {
                b.sem.add_permits(self.held - want);
                self.held = want;
            }
            return Ok(true);
        }
        if want > b.total {
            return Err(OverBudget {
                want,
                total: b.total,
            });
        }
        let more = want - self.held;
        let Ok(n) = u32::try_from(more) else {
            return Ok(false);
        };
        match b.sem.try_acquire_many(n) {
            Ok(p) => {
                p.forget();
                self.held = want;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Waits until the charge is `want` bytes (cancel-safe: nothing is held on cancel beyond
    /// what was held before). `want` is at most the budget (checked by `try_settle`).
    pub(crate) async fn wait_for(&mut self, want: usize) {
        let Some(b) = self.budget.clone() else {
            return;
        };
        while self.held < want {
            let step = u32::try_from(want - self.held).unwrap_or(u32::MAX);
            match b.sem.acquire_many(step).await {
                Ok(p) => {
                    p.forget();
                    self.held += step as usize;
                }
                // The semaphore is never closed.
                Err(_) => return,
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(b) = &self.budget
            && self.held > 0
        {
            b.sem.add_permits(self.held);
        }
    }
}
