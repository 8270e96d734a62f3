//! Load balancing over a list of instances (pure, no IO).
//!
//! Every balancer implements [`Balancer::pick`]; [`LoadBalancer`] bundles the built-in
//! strategies behind one type selected by [`Strategy`]:
//!
//! * [`RoundRobin`] (the default) — instances in turn, `n` picks over `k` instances give each
//!   `n / k`.
//! * [`Random`] — uniform.
//! * [`Weighted`] — smooth weighted round robin (as nginx): over any window of `Σ weights` picks,
//!   each instance is chosen exactly `weight` times, interleaved. Weight 0 excludes an instance
//!   (unless every weight is 0, then all count as 1).
//! * [`ConsistentHash`] — a hash ring with virtual nodes over `instance_id`; the same key maps to
//!   the same instance, and instances joining or leaving only move the keys they take or give
//!   up. Without a key it falls back to round robin.
//!
//! Custom strategies (e.g. "only instances whose metadata matches the caller") implement
//! [`Balancer`] themselves.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::model::ServiceInstance;

/// Chooses one instance for a call.
pub trait Balancer: Send + Sync {
    /// Picks an instance from `instances` (`None` if empty). `key` is a per-call affinity key,
    /// used by hashing strategies and ignored by the others.
    fn pick<'a>(
        &self,
        instances: &'a [ServiceInstance],
        key: Option<&[u8]>,
    ) -> Option<&'a ServiceInstance>;
}

/// Built-in strategy names, parsable from `round_robin`, `random`, `weighted`, `consistent_hash`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// [`RoundRobin`].
    #[default]
    RoundRobin,
    /// [`Random`].
    Random,
    /// [`Weighted`].
    Weighted,
    /// [`ConsistentHash`].
    ConsistentHash,
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "round_robin" | "roundrobin" | "rr" => Ok(Strategy::RoundRobin),
            "random" => Ok(Strategy::Random),
            "weighted" | "weight" => Ok(Strategy::Weighted),
            "consistent_hash" | "hash" => Ok(Strategy::ConsistentHash),
            other => Err(Error::Unsupported(format!(
                "unknown load-balancing strategy {other:?}"
            ))),
        }
    }
}

/// One of the built-in balancers.
#[derive(Debug)]
pub enum LoadBalancer {
    /// See [`RoundRobin`].
    RoundRobin(RoundRobin),
    /// See [`Random`].
    Random(Random),
    /// See [`Weighted`].
    Weighted(Weighted),
    /// See [`ConsistentHash`].
    ConsistentHash(ConsistentHash),
}

impl LoadBalancer {
    /// A fresh balancer of `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        match strategy {
            Strategy::RoundRobin => LoadBalancer::RoundRobin(RoundRobin::default()),
            Strategy::Random => LoadBalancer::Random(Random),
            Strategy::Weighted => LoadBalancer::Weighted(Weighted::default()),
            Strategy::ConsistentHash => LoadBalancer::ConsistentHash(ConsistentHash::default()),
        }
    }
}

impl Default for LoadBalancer {
    fn default() -> Self {
        LoadBalancer::new(Strategy::RoundRobin)
    }
}

impl Balancer for LoadBalancer {
    fn pick<'a>(
        &self,
        instances: &'a [ServiceInstance],
        key: Option<&[u8]>,
    ) -> Option<&'a ServiceInstance> {
        match self {
            LoadBalancer::RoundRobin(b) => b.pick(instances, key),
            LoadBalancer::Random(b) => b.pick(instances, key),
            LoadBalancer::Weighted(b) => b.pick(instances, key),
            LoadBalancer::ConsistentHash(b) => b.pick(instances, key),
        }
    }
}

/// Round robin; see the [module docs](self).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick<'a>(
        &self,
        instances: &'a [ServiceInstance],
        _key: Option<&[u8]>,
    ) -> Option<&'a ServiceInstance> {
        if instances.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        instances.get(i % instances.len())
    }
}

/// Uniform random choice.
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl Balancer for Random {
    fn pick<'a>(
        &self,
        instances: &'a [ServiceInstance],
        _key: Option<&[u8]>,
    ) -> Option<&'a ServiceInstance> {
        if instances.is_empty() {
            None
        } else {
            instances.get(fastrand::usize(..instances.len()))
        }
    }
}

/// Smooth weighted round robin; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Weighted {
    /// Current weight per instance identity.
    current: Mutex<HashMap<String, i64>>,
}

fn identity(i: &ServiceInstance) -> &str {
    if i.instance_id.is_empty() {
        &i.address
    } else {
        &i.instance_id
    }
}

impl Balancer for Weighted {
    fn pick<'a>(
        &self,
        instances: &'a [ServiceInstance],
        _key: Option<&[u8]>,
    ) -> Option<&'a ServiceInstance> {
        if instances.is_empty() {
            return None;
        }
        let all_zero = instances.iter().all(|i| i.weight == 0);
        let weight = |i: &ServiceInstance| if all_zero { 1 } else { i64::from(i.weight) };
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        // Forget instances that are gone so the map does not grow without bound.
        if current.len() > instances.len() {
            let live: std::collections::HashSet<&str> = instances.iter().map(identity).collect();
            current.retain(|k, _| live.contains(k.as_str()));
        }
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (idx, inst) in instances.iter().enumerate() {
            let w = weight(inst);
            if w == 0 {
                continue;
            }
            total += w;
            let cur = current.entry(identity(inst).to_string()).or_insert(0);
            *cur += w;
            if best.is_none_or(|(_, b)| *cur > b) {
                best = Some((idx, *cur));
            }
        }
        let (idx, _) = best?;
        if let Some(cur) = current.get_mut(identity(&instances[idx])) {
            *cur -= total;
        }
        instances.get(idx)
    }
}

/// Sorted `(point, instance identity)` pairs.
type Ring = Vec<(u64, String)>;

/// Consistent hashing on a ring with virtual nodes; see the [module docs](self).
#[derive(Debug)]
pub struct ConsistentHash {
    vnodes: usize,
    fallback: RoundRobin,
    /// Ring built for the last instance list (identified by a fingerprint of its ids).
    ring: Mutex<Option<(u64, Arc<Ring>)>>,
}

impl Default for ConsistentHash {
    fn default() -> Self {
        ConsistentHash::new(Self::DEFAULT_VNODES)
    }
}

impl ConsistentHash {
    /// Virtual nodes per instance by default.
    pub const DEFAULT_VNODES: usize = 160;

    /// A ring with `vnodes` virtual nodes per instance (at least 1).
    pub fn new(vnodes: usize) -> Self {
        ConsistentHash {
            vnodes: vnodes.max(1),
            fallback: RoundRobin::default(),
            ring: Mutex::new(None),
        }
    }

    fn ring_for(&self, instances: &[ServiceInstance]) -> Arc<Ring> {
        let mut ids: Vec<&str> = instances.iter().map(identity).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut fp = FNV_OFFSET;
        for id in &ids {
            fp = fnv1a(fp, id.as_bytes());
            fp = fnv1a(fp, &[0xff]);
        }
        let mut cached = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((f, ring)) = cached.as_ref()
            && *f == fp
        {
            return ring.clone();
        }
        let mut ring = Vec::with_capacity(ids.len() * self.vnodes);
        for id in &ids {
            for v in 0..self.vnodes {
                let point = hash64(format!("{id}#{v}").as_bytes());
                ring.push((point, id.to_string()));
            }
        }
        ring.sort_unstable();
        let ring = Arc::new(ring);
        *cached = Some((fp, ring.clone()));
        ring
    }
}

impl Balancer for ConsistentHash {
    fn pick<'a>(
        &self,
        instances: &'a [ServiceInstance],
        key: Option<&[u8]>,
    ) -> Option<&'a ServiceInstance> {
        let Some(key) = key else {
            return self.fallback.pick(instances, None);
        };
        if instances.is_empty() {
            return None;
        }
        let ring = self.ring_for(instances);
        let h = hash64(key);
        let pos = ring.partition_point(|(p, _)| *p < h);
        let (_, id) = ring.get(pos).or_else(|| ring.first())?;
        instances.iter().find(|i| identity(i) == id)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Stable 64-bit hash (FNV-1a followed by the murmur3 finalizer for better spreading); does not
/// depend on the Rust version, unlike `DefaultHasher`.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<ServiceInstance> {
        (1..=3)
            .map(|i| {
                ServiceInstance::new("s", format!("10.0.0.{i}:80"))
                    .with_instance_id(format!("node{i}"))
            })
            .collect()
    }

    fn counts<'a>(picks: impl Iterator<Item = &'a ServiceInstance>) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for p in picks {
            *m.entry(p.instance_id.clone()).or_default() += 1;
        }
        m
    }

    #[test]
    fn round_robin_is_even() {
        let list = three();
        let lb = LoadBalancer::default();
        let c = counts((0..300).map(|_| lb.pick(&list, None).unwrap()));
        assert_eq!(c.len(), 3);
        assert!(c.values().all(|&n| n == 100), "{c:?}");
        assert!(lb.pick(&[], None).is_none());
    }

    #[test]
    fn random_covers_all() {
        let list = three();
        let lb = LoadBalancer::new(Strategy::Random);
        let c = counts((0..3000).map(|_| lb.pick(&list, None).unwrap()));
        assert_eq!(c.len(), 3);
        assert!(c.values().all(|&n| n > 700), "{c:?}");
    }

    #[test]
    fn weighted_proportions_exact_and_smooth() {
        let mut list = three();
        list[0].weight = 5;
        list[1].weight = 1;
        list[2].weight = 1;
        let lb = LoadBalancer::new(Strategy::Weighted);
        let picks: Vec<_> = (0..700)
            .map(|_| lb.pick(&list, None).unwrap().instance_id.clone())
            .collect();
        let c = counts(
            picks
                .iter()
                .map(|id| list.iter().find(|i| &i.instance_id == id).unwrap()),
        );
        assert_eq!(c["node1"], 500);
        assert_eq!(c["node2"], 100);
        assert_eq!(c["node3"], 100);
        // Smooth: with weights 5/1/1 the cycle is a a b a c a a, so runs of node1 stay <= 4
        // (a plain cumulative-weight walk would give runs of 5).
        let mut run = 0;
        for id in &picks {
            run = if id == "node1" { run + 1 } else { 0 };
            assert!(run <= 4);
        }
        // Weight 0 is never picked unless all are 0.
        list[2].weight = 0;
        assert!((0..100).all(|_| lb.pick(&list, None).unwrap().instance_id != "node3"));
        for i in &mut list {
            i.weight = 0;
        }
        let lb = LoadBalancer::new(Strategy::Weighted);
        let c = counts((0..30).map(|_| lb.pick(&list, None).unwrap()));
        assert!(c.values().all(|&n| n == 10), "{c:?}");
    }

    #[test]
    fn consistent_hash_is_stable() {
        let list = three();
        let lb = LoadBalancer::new(Strategy::ConsistentHash);
        let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        let first: Vec<String> = keys
            .iter()
            .map(|k| {
                lb.pick(&list, Some(k.as_bytes()))
                    .unwrap()
                    .instance_id
                    .clone()
            })
            .collect();
        // Same key -> same instance, also with a fresh balancer and a shuffled list.
        let lb2 = ConsistentHash::default();
        let mut shuffled = list.clone();
        shuffled.reverse();
        for (k, id) in keys.iter().zip(&first) {
            assert_eq!(&lb.pick(&list, Some(k.as_bytes())).unwrap().instance_id, id);
            assert_eq!(
                &lb2.pick(&shuffled, Some(k.as_bytes())).unwrap().instance_id,
                id
            );
        }
        // All three get some keys.
        assert_eq!(
            first.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
        // Removing node2 only moves node2's keys.
        let without2: Vec<_> = list
            .iter()
            .filter(|i| i.instance_id != "node2")
            .cloned()
            .collect();
        let mut moved = 0;
        for (k, id) in keys.iter().zip(&first) {
            let now = &lb.pick(&without2, Some(k.as_bytes())).unwrap().instance_id;
            if id == "node2" {
                moved += 1;
                assert_ne!(now, "node2");
            } else {
                assert_eq!(now, id, "key {k} moved although its instance stayed");
            }
        }
        assert!(moved > 0);
        // Adding node4 only takes keys; nobody else's keys move between old instances.
        let mut with4 = list.clone();
        with4.push(ServiceInstance::new("s", "10.0.0.4:80").with_instance_id("node4"));
        for (k, id) in keys.iter().zip(&first) {
            let now = &lb.pick(&with4, Some(k.as_bytes())).unwrap().instance_id;
            assert!(now == id || now == "node4");
        }
        // No key: round robin.
        let c = counts((0..30).map(|_| lb.pick(&list, None).unwrap()));
        assert!(c.values().all(|&n| n == 10));
    }

    #[test]
    fn strategy_names() {
        assert_eq!(
            "round_robin".parse::<Strategy>().unwrap(),
            Strategy::RoundRobin
        );
        assert_eq!(
            "consistent-hash".parse::<Strategy>().unwrap(),
            Strategy::ConsistentHash
        );
        assert_eq!("weighted".parse::<Strategy>().unwrap(), Strategy::Weighted);
        assert!("nope".parse::<Strategy>().is_err());
    }
}
