//! A memory-bounded cache of values computed once per key, least recently used out first.
//!
//! Concurrent requests for the same cold key compute it once: the first caller runs the
//! computation while the others wait on the same cell. Failures are not cached. Hits, misses,
//! evictions and resident bytes are counted here (for tests and the API) and exported through
//! the `metrics` crate under `explaind_activation_cache_*`.

use dashmap::DashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Counters since the cache was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub bytes: u64,
    pub entries: u64,
}

struct Slot<V> {
    cell: OnceLock<Arc<V>>,
    /// Serialises the computation of a cold key (the cell stays empty if it fails).
    computing: Mutex<()>,
    last_used: AtomicU64,
    bytes: AtomicU64,
}

pub struct BoundedCache<K, V> {
    budget_bytes: u64,
    slots: DashMap<K, Arc<Slot<V>>>,
    clock: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    bytes: AtomicU64,
    /// Held while evicting, so two evictions do not race over the same victims.
    evicting: Mutex<()>,
}

impl<K: Eq + Hash + Clone, V> BoundedCache<K, V> {
    pub fn new(budget_bytes: u64) -> Self {
        BoundedCache {
            budget_bytes,
            slots: DashMap::new(),
            clock: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            evicting: Mutex::new(()),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            entries: self.slots.len() as u64,
        }
    }

    /// The value for `key`, computing it with `compute` (which also returns its size in bytes)
    /// if it is not resident.
    pub fn get_or_compute<E>(&self, key: &K, compute: impl FnOnce() -> Result<(V, u64), E>) -> Result<Arc<V>, E> {
        let slot = self
            .slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    cell: OnceLock::new(),
                    computing: Mutex::new(()),
                    last_used: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                })
            })
            .clone();
        slot.last_used.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        if let Some(value) = slot.cell.get() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("explaind_activation_cache_hits_total").increment(1);
            return Ok(value.clone());
        }
        let _computing = slot.computing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(value) = slot.cell.get() {
            // Another request computed it while this one waited.
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("explaind_activation_cache_hits_total").increment(1);
            return Ok(value.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("explaind_activation_cache_misses_total").increment(1);
        let (value, size) = match compute() {
            Ok(v) => v,
            Err(e) => {
                self.slots.remove_if(key, |_, s| Arc::ptr_eq(s, &slot));
                return Err(e);
            }
        };
        let value = Arc::new(value);
        let _ = slot.cell.set(value.clone());
        slot.bytes.store(size, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.evict_over_budget(key);
        Ok(value)
    }

    /// Drops least recently used entries until the resident bytes fit the budget. The entry
    /// just added goes too if it alone is over the budget: its caller still gets the value.
    fn evict_over_budget(&self, newest: &K) {
        let _guard = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        while self.bytes.load(Ordering::Relaxed) > self.budget_bytes {
            let victim = self
                .slots
                .iter()
                .filter(|e| e.value().cell.get().is_some())
                .min_by_key(|e| (e.key() == newest, e.value().last_used.load(Ordering::Relaxed)))
                .map(|e| e.key().clone());
            let Some(victim) = victim else { break };
            if let Some((_, slot)) = self.slots.remove(&victim) {
                self.bytes.fetch_sub(slot.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("explaind_activation_cache_evictions_total").increment(1);
            }
        }
        metrics::gauge!("explaind_activation_cache_bytes").set(self.bytes.load(Ordering::Relaxed) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_misses_and_lru_eviction() {
        let cache: BoundedCache<&str, u32> = BoundedCache::new(100);
        let ok = |v: u32, size: u64| move || Ok::<_, ()>((v, size));
        assert_eq!(*cache.get_or_compute(&"a", ok(1, 40)).unwrap(), 1);
        assert_eq!(*cache.get_or_compute(&"b", ok(2, 40)).unwrap(), 2);
        // A hit does not recompute (the closure would give another value).
        assert_eq!(*cache.get_or_compute(&"a", ok(99, 40)).unwrap(), 1);
        // "c" pushes the total over 100: "b" is the least recently used and goes.
        assert_eq!(*cache.get_or_compute(&"c", ok(3, 40)).unwrap(), 3);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions, stats.bytes, stats.entries), (1, 3, 1, 80, 2));
        assert_eq!(*cache.get_or_compute(&"b", ok(22, 40)).unwrap(), 22, "b was evicted and is computed again");
        // An entry larger than the whole budget is returned but not kept.
        assert_eq!(*cache.get_or_compute(&"huge", ok(4, 500)).unwrap(), 4);
        assert!(cache.stats().bytes <= 100);
    }

    #[test]
    fn failures_are_not_cached() {
        let cache: BoundedCache<u8, u8> = BoundedCache::new(10);
        assert!(cache.get_or_compute(&1, || Err::<(u8, u64), _>("boom")).is_err());
        assert_eq!(*cache.get_or_compute(&1, || Ok::<_, &str>((7, 1))).unwrap(), 7);
        assert_eq!(cache.stats().misses, 2);
    }

    #[test]
    fn concurrent_cold_requests_compute_once() {
        let cache: Arc<BoundedCache<u8, u64>> = Arc::new(BoundedCache::new(1 << 20));
        let computed = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, computed) = (cache.clone(), computed.clone());
                std::thread::spawn(move || {
                    *cache
                        .get_or_compute(&0, || {
                            computed.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok::<_, ()>((42, 8))
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 42);
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.hits), (1, 7));
    }
}
