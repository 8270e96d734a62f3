//! The session of one etcd registry client: one lease for all of its registrations.
//!
//! A single task owns the lease, its keep-alive stream, a watch on the registry's keys
//! (deletions only) and the table of registered keys. Registrations and deregistrations reach it
//! as commands; those queued together are written together (one transaction per
//! [`MAX_TXN_OPS`] keys), which is what lets 10,000 registrations of one process cost one lease,
//! one stream and a few dozen writes instead of 10,000 of each.
//!
//! * Keep-alive: one request every TTL/3 on one stream. No answer within the TTL: the stream is
//!   re-opened (the lease may still be alive). A TTL of 0 or "lease not found": the lease is
//!   lost, a new one is granted and every key is put again.
//! * Key loss: a deletion of one of our keys newer than our last write of it (someone deleted
//!   it, or the lease expired) is repaired by putting it again; a compacted watch is replaced by
//!   one full check of the keys.
//! * Repairs that fail (etcd unreachable) are retried with jittered back-off until they succeed
//!   or the keys are deregistered.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, WatchFilterType, WatchOptions, WatchStream,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Inner, KIND, MAX_BACKOFF};
use crate::error::{Error, Result};
use crate::metrics::{self, Op};
use crate::registry::{Backoff, Releaser};

/// etcd's default `--max-txn-ops`: the most operations one transaction may hold.
pub(super) const MAX_TXN_OPS: usize = 128;
/// Conditional deletes are nested transactions, which etcd counts against the outer limit.
const DELETES_PER_TXN: usize = MAX_TXN_OPS / 2;

type Reply<T> = oneshot::Sender<Result<T>>;
/// Registrations to remove, `(key, token)`, and who waits for the outcome.
type Release = (Vec<(String, u64)>, Option<Reply<()>>);

pub(super) enum Cmd {
    Register {
        key: String,
        value: Vec<u8>,
        reply: Reply<u64>,
    },
    Release {
        items: Vec<(String, u64)>,
        reply: Option<Reply<()>>,
    },
}

/// The registry's (and each registration's) way to the session task.
pub(super) struct Handle {
    pub(super) tx: mpsc::UnboundedSender<Cmd>,
}

impl Handle {
    /// Writes `key` under the session lease; returns the registration's ownership token.
    pub(super) async fn register(&self, key: String, value: Vec<u8>) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Register { key, value, reply })
            .map_err(|_| Error::Closed)?;
        rx.await.unwrap_or(Err(Error::Closed))
    }
}

impl Releaser for Handle {
    fn release(&self, items: Vec<(String, u64)>, reply: Option<Reply<()>>) {
        if let Err(mpsc::error::SendError(Cmd::Release {
            reply: Some(reply), ..
        })) = self.tx.send(Cmd::Release { items, reply })
        {
            let _ = reply.send(Err(Error::Closed));
        }
    }
}

struct Entry {
    value: Vec<u8>,
    token: u64,
    /// Revision of our last write of the key: older deletions are our own history.
    rev: i64,
}

struct Lease {
    id: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    last_ok: Instant,
}

struct Session {
    inner: Arc<Inner>,
    entries: HashMap<String, Entry>,
    lease: Option<Lease>,
    /// Our keys' deletions, from `watch_rev` on.
    watch: Option<WatchStream>,
    watch_rev: i64,
    /// Keys to put again (lost or deleted behind our back).
    dirty: BTreeSet<String>,
    /// Deregistered keys whose delete has not succeeded yet.
    undead: BTreeSet<String>,
    /// When the next repair may run (after a failed one).
    retry_at: Option<Instant>,
    backoff: Backoff,
    next_token: u64,
}

/// Runs the session until the registry and all its registrations are gone.
pub(super) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let period = (inner.ttl / 3).max(Duration::from_millis(300));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut s = Session {
        inner,
        entries: HashMap::new(),
        lease: None,
        watch: None,
        watch_rev: 0,
        dirty: BTreeSet::new(),
        undead: BTreeSet::new(),
        retry_at: None,
        backoff: Backoff::new(MAX_BACKOFF),
        next_token: 0,
    };
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return s.close().await,
                Some(cmd) => {
                    let mut batch = vec![cmd];
                    while batch.len() < MAX_TXN_OPS {
                        match rx.try_recv() {
                            Ok(cmd) => batch.push(cmd),
                            Err(_) => break,
                        }
                    }
                    s.handle(batch).await;
                }
            },
            msg = keep_alive_message(&mut s.lease) => s.on_keep_alive(msg),
            msg = watch_message(&mut s.watch) => s.on_watch(msg).await,
            _ = tick.tick() => s.on_tick().await,
            _ = sleep_until(s.retry_at) => s.retry_at = None,
        }
        if s.retry_at.is_none() && !(s.dirty.is_empty() && s.undead.is_empty()) {
            s.repair().await;
        }
    }
}

async fn keep_alive_message(
    lease: &mut Option<Lease>,
) -> std::result::Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error> {
    match lease.as_mut().and_then(|l| l.keeper.as_mut()) {
        Some((_, stream)) => stream.message().await,
        None => std::future::pending().await,
    }
}

async fn watch_message(
    watch: &mut Option<WatchStream>,
) -> std::result::Result<Option<etcd_client::WatchResponse>, etcd_client::Error> {
    match watch {
        Some(w) => w.message().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn handle(&mut self, batch: Vec<Cmd>) {
        let mut registers = Vec::new();
        let mut releases = Vec::new();
        for cmd in batch {
            match cmd {
                Cmd::Register { key, value, reply } => registers.push((key, value, reply)),
                Cmd::Release { items, reply } => releases.push((items, reply)),
            }
        }
        // Registrations first: a release in the same batch can only name an older token (its
        // handle existed before), which a registration of the same key supersedes anyway.
        if !registers.is_empty() {
            self.register(registers).await;
        }
        if !releases.is_empty() {
            self.release(releases).await;
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Writes a batch of registrations in one transaction (a key named twice: the last wins,
    /// the earlier registration is superseded at once).
    async fn register(&mut self, batch: Vec<(String, Vec<u8>, Reply<u64>)>) {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, (key, _, _)) in batch.iter().enumerate() {
            last.insert(key.as_str(), i);
        }
        let writes: Vec<(String, Vec<u8>)> = batch
            .iter()
            .enumerate()
            .filter(|(i, (key, _, _))| last[key.as_str()] == *i)
            .map(|(_, (key, value, _))| (key.clone(), value.clone()))
            .collect();
        let deadline = Instant::now() + self.inner.timeout;
        match self.put_all(&writes, deadline).await {
            Ok(rev) => {
                for (key, value, reply) in batch {
                    let token = self.token();
                    self.dirty.remove(&key);
                    self.undead.remove(&key);
                    self.entries.insert(key, Entry { value, token, rev });
                    let _ = reply.send(Ok(token));
                }
                self.ensure_watch().await;
            }
            Err(e) => {
                let text = e.to_string();
                for (_, _, reply) in batch {
                    let _ = reply.send(Err(same_error(&e, &text)));
                }
            }
        }
    }

    /// Puts `writes` under the session lease (granting one first if there is none, and again
    /// if it turns out to be lost) in one transaction; returns its revision.
    async fn put_all(&mut self, writes: &[(String, Vec<u8>)], deadline: Instant) -> Result<i64> {
        loop {
            let lease = self.ensure_lease(deadline).await?;
            let ops: Vec<TxnOp> = writes
                .iter()
                .map(|(k, v)| {
                    TxnOp::put(
                        k.as_str(),
                        v.as_slice(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                })
                .collect();
            let r = self
                .inner
                .call_until("put", deadline, |mut c| {
                    let txn = Txn::new().and_then(ops.clone());
                    async move { c.txn(txn).await }
                })
                .await;
            match r {
                Ok(resp) => return Ok(resp.header().map_or(0, |h| h.revision())),
                Err(f) if f.lease_not_found() && Instant::now() < deadline => {
                    tracing::warn!(lease, "etcd session lease lost; granting a new one");
                    self.lost();
                }
                Err(f) => return Err(f.into_error("put", self.inner.timeout)),
            }
        }
    }

    /// The session lease, granted now if there is none (every key is then to be put again).
    async fn ensure_lease(&mut self, deadline: Instant) -> Result<i64> {
        if let Some(l) = &self.lease {
            return Ok(l.id);
        }
        let ttl = self.inner.ttl_secs();
        let resp = self
            .inner
            .call_until("lease grant", deadline, |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await
            .map_err(|f| f.into_error("lease grant", self.inner.timeout))?;
        let id = resp.id();
        // Deletions of our keys from here on concern this lease.
        self.watch = None;
        self.watch_rev = resp.header().map_or(0, |h| h.revision()) + 1;
        self.lease = Some(Lease {
            id,
            keeper: None,
            last_ok: Instant::now(),
        });
        self.open_keeper().await;
        self.dirty.extend(self.entries.keys().cloned());
        tracing::debug!(
            lease = id,
            keys = self.entries.len(),
            "etcd session lease granted"
        );
        Ok(id)
    }

    /// The lease is gone (and with it every key attached to it).
    fn lost(&mut self) {
        self.lease = None;
        self.watch = None;
        // The deregistered keys still to delete went with the lease.
        metrics::deregistered(KIND, self.undead.len());
        self.undead.clear();
        self.dirty.extend(self.entries.keys().cloned());
    }

    /// Opens the keep-alive stream of the current lease (best effort: the tick retries).
    async fn open_keeper(&mut self) {
        let Some(lease) = &mut self.lease else { return };
        let mut c = self.inner.client.clone();
        match tokio::time::timeout(self.inner.timeout, c.lease_keep_alive(lease.id)).await {
            Ok(Ok(pair)) => {
                lease.keeper = Some(pair);
                lease.last_ok = Instant::now();
            }
            Ok(Err(e)) if super::is_lease_not_found(&e) => {
                tracing::warn!(
                    lease = lease.id,
                    "etcd session lease lost; granting a new one"
                );
                self.lost();
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = lease.id, error = %e, "etcd keep-alive stream not opened; retrying");
            }
            Err(_) => {
                tracing::warn!(
                    lease = lease.id,
                    "etcd keep-alive stream not opened in time; retrying"
                );
            }
        }
    }

    /// Watches deletions under the root from `watch_rev` on (when we hold keys).
    async fn ensure_watch(&mut self) {
        if self.watch.is_some() || self.lease.is_none() || self.entries.is_empty() {
            return;
        }
        let mut c = self.inner.client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_filters([WatchFilterType::NoPut])
            .with_start_revision(self.watch_rev);
        let prefix = format!("{}/", self.inner.root);
        match tokio::time::timeout(self.inner.timeout, c.watch(prefix, Some(opts))).await {
            Ok(Ok(w)) => self.watch = Some(w),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "etcd watch of own keys not created; retrying")
            }
            Err(_) => tracing::warn!("etcd watch of own keys not created in time; retrying"),
        }
    }

    fn on_keep_alive(
        &mut self,
        msg: std::result::Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error>,
    ) {
        let Some(lease) = &mut self.lease else { return };
        match msg {
            Ok(Some(resp)) if resp.ttl() <= 0 => {
                tracing::warn!(
                    lease = lease.id,
                    "etcd session lease expired; granting a new one"
                );
                self.lost();
            }
            Ok(Some(_)) => lease.last_ok = Instant::now(),
            Ok(None) => {
                tracing::warn!(
                    lease = lease.id,
                    "etcd keep-alive stream closed; re-opening"
                );
                lease.keeper = None;
            }
            Err(e) => {
                tracing::warn!(lease = lease.id, error = %e, "etcd keep-alive stream failed; re-opening");
                lease.keeper = None;
            }
        }
    }

    async fn on_watch(
        &mut self,
        msg: std::result::Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    ) {
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                self.watch = None;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "etcd watch of own keys interrupted; resuming");
                self.watch = None;
                return;
            }
        };
        if resp.compact_revision() > 0 || resp.canceled() {
            // Deletions may have been missed: check every key once, then watch from there.
            self.watch = None;
            self.check_all().await;
            return;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            self.watch_rev = self.watch_rev.max(kv.mod_revision() + 1);
            if ev.event_type() != EventType::Delete {
                continue;
            }
            let Ok(key) = kv.key_str() else { continue };
            if let Some(entry) = self.entries.get(key)
                && kv.mod_revision() > entry.rev
            {
                tracing::warn!(key, "etcd key deleted behind our back; putting it again");
                self.dirty.insert(key.to_string());
            }
        }
    }

    /// Finds keys of ours that are missing or attached to another lease (full read).
    async fn check_all(&mut self) {
        let Some(lease) = self.lease.as_ref().map(|l| l.id) else {
            return;
        };
        let prefix = format!("{}/", self.inner.root);
        let got = self
            .inner
            .call("get", |mut c| {
                let prefix = prefix.clone();
                async move {
                    c.get(
                        prefix,
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    )
                    .await
                }
            })
            .await;
        let resp = match got {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(error = %e, "etcd check of own keys failed; retrying");
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                return;
            }
        };
        let ours: HashMap<&str, i64> = resp
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok().map(|k| (k, kv.lease())))
            .collect();
        for key in self.entries.keys() {
            if ours.get(key.as_str()) != Some(&lease) {
                self.dirty.insert(key.clone());
            }
        }
        self.watch_rev = resp.header().map_or(0, |h| h.revision()) + 1;
        self.ensure_watch().await;
    }

    async fn on_tick(&mut self) {
        if let Some(lease) = &mut self.lease {
            if lease.last_ok.elapsed() > self.inner.ttl {
                tracing::warn!(
                    lease = lease.id,
                    "no etcd keep-alive answer within the TTL; re-opening the stream"
                );
                lease.keeper = None;
                lease.last_ok = Instant::now();
            }
            match &mut lease.keeper {
                Some((keeper, _)) => {
                    if let Err(e) = keeper.keep_alive().await {
                        tracing::warn!(lease = lease.id, error = %e, "etcd keep-alive failed; re-opening the stream");
                        lease.keeper = None;
                    }
                }
                None => self.open_keeper().await,
            }
        }
        self.ensure_watch().await;
    }

    /// Puts the dirty keys again and deletes the undead ones; on failure schedules a retry.
    async fn repair(&mut self) {
        let deadline = Instant::now() + self.inner.timeout;
        while !self.dirty.is_empty() {
            let keys: Vec<String> = self.dirty.iter().take(MAX_TXN_OPS).cloned().collect();
            let writes: Vec<(String, Vec<u8>)> = keys
                .iter()
                .filter_map(|k| self.entries.get(k).map(|e| (k.clone(), e.value.clone())))
                .collect();
            if writes.is_empty() {
                keys.iter().for_each(|k| {
                    self.dirty.remove(k);
                });
                continue;
            }
            match self.put_all(&writes, deadline).await {
                Ok(rev) => {
                    for k in &keys {
                        self.dirty.remove(k);
                        if let Some(e) = self.entries.get_mut(k) {
                            e.rev = rev;
                        }
                    }
                    tracing::info!(keys = writes.len(), "etcd registrations restored");
                    metrics::reregistered(KIND, writes.len());
                }
                Err(e) => {
                    tracing::warn!(keys = self.dirty.len(), error = %e, "etcd registrations not restored yet; retrying");
                    self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                    return;
                }
            }
        }
        if !self.undead.is_empty() {
            let keys: Vec<String> = std::mem::take(&mut self.undead).into_iter().collect();
            if let Err(e) = self.delete(&keys, deadline).await {
                tracing::warn!(keys = keys.len(), error = %e, "etcd deregistration not done yet; retrying");
                self.undead.extend(keys);
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                return;
            }
            metrics::deregistered(KIND, keys.len());
        }
        self.backoff.reset();
        self.ensure_watch().await;
    }

    /// Deletes `keys` where they are still attached to our lease (nothing of ours is stored
    /// without a lease).
    async fn delete(&mut self, keys: &[String], deadline: Instant) -> Result<()> {
        let Some(lease) = self.lease.as_ref().map(|l| l.id) else {
            return Ok(());
        };
        for chunk in keys.chunks(DELETES_PER_TXN) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|k| {
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::lease(k.as_str(), CompareOp::Equal, lease)])
                            .and_then([TxnOp::delete(k.as_str(), None)]),
                    )
                })
                .collect();
            let r = self
                .inner
                .call_until("delete", deadline, |mut c| {
                    let txn = Txn::new().and_then(ops.clone());
                    async move { c.txn(txn).await }
                })
                .await;
            match r {
                Ok(_) => {}
                // The lease is gone, and every key attached to it.
                Err(f) if f.lease_not_found() => {
                    self.lost();
                    return Ok(());
                }
                Err(f) => return Err(f.into_error("delete", self.inner.timeout)),
            }
        }
        Ok(())
    }

    /// Deregisters: the keys still owned by the given tokens are removed; when that is every key
    /// of the session, by revoking the lease (one request for any number of keys).
    async fn release(&mut self, releases: Vec<Release>) {
        let mut keys = Vec::new();
        for (items, _) in &releases {
            for (key, token) in items {
                if self.entries.get(key).is_some_and(|e| e.token == *token) {
                    self.entries.remove(key);
                    self.dirty.remove(key);
                    keys.push(key.clone());
                }
            }
        }
        let deadline = Instant::now() + self.inner.timeout;
        let result = if keys.is_empty() {
            Ok(())
        } else if self.entries.is_empty() && keys.len() > 1 {
            self.revoke(deadline).await
        } else {
            self.delete(&keys, deadline).await
        };
        let result = match result {
            Ok(()) => {
                metrics::deregistered(KIND, keys.len());
                Ok(())
            }
            Err(e) => {
                metrics::failed(KIND, Op::Deregister, releases.len());
                // Keep trying in the background: with a shared lease nothing else removes them.
                tracing::warn!(keys = keys.len(), error = %e, "etcd deregistration failed; retrying in the background");
                self.undead.extend(keys);
                if self.retry_at.is_none() {
                    self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                }
                Err(e)
            }
        };
        let text = result.as_ref().err().map(ToString::to_string);
        for (_, reply) in releases {
            if let Some(reply) = reply {
                let _ = reply.send(match (&result, &text) {
                    (Err(e), Some(t)) => Err(same_error(e, t)),
                    _ => Ok(()),
                });
            }
        }
        if self.entries.is_empty() {
            self.watch = None;
        }
    }

    /// Revokes the session lease (deleting every key attached to it); the next registration
    /// grants a new one.
    async fn revoke(&mut self, deadline: Instant) -> Result<()> {
        let Some(id) = self.lease.as_ref().map(|l| l.id) else {
            return Ok(());
        };
        let r = self
            .inner
            .call_until("lease revoke", deadline, |mut c| async move {
                c.lease_revoke(id).await
            })
            .await;
        match r {
            Ok(_) => {}
            Err(f) if f.lease_not_found() => {}
            Err(f) => return Err(f.into_error("lease revoke", self.inner.timeout)),
        }
        self.lease = None;
        self.watch = None;
        metrics::deregistered(KIND, self.undead.len());
        self.undead.clear();
        Ok(())
    }

    /// Every handle is gone: give the lease back rather than let it expire.
    async fn close(mut self) {
        let deadline = Instant::now() + self.inner.timeout;
        if let Err(e) = self.revoke(deadline).await {
            tracing::debug!(error = %e, "etcd session lease not revoked; it expires with its TTL");
        }
    }
}

/// One error for several waiters (`Error` is not `Clone`): same kind, same text.
fn same_error(e: &Error, text: &str) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Backend(m) => Error::Backend(m.clone()),
        Error::Closed => Error::Closed,
        _ => Error::Backend(text.to_string()),
    }
}
