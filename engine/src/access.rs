//! Access tracking and eviction: two bytes per index slot hold either an LRU clock (seconds,
//! 16 bits) or, under an LFU policy, Redis's logarithmic frequency counter (8 bits) with the
//! minute it was last decayed (8 bits). Eviction samples keys as Redis does
//! (`maxmemory-samples` per database into a pool of the best 16 candidates) and deletes the
//! best one; the cleaner returns its bytes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::time::Instant;

use segkv_log::epoch::pin;

use super::{Engine, MAX_DATABASES, State, random_u64};
use crate::api::EngineError;
use crate::index::{Index, slot_addr};

/// Redis's `LFU_INIT_VAL`: a new key's counter, so it is not evicted before it can be used.
const LFU_INIT_VAL: u8 = 5;
/// Redis's `EVPOOL_SIZE`.
const POOL_SIZE: usize = 16;

/// `maxmemory-policy`, minus `noeviction` (which never calls the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictPolicy {
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl EvictPolicy {
    /// From a `maxmemory-policy` name; None for `noeviction` (or an unknown name).
    pub fn parse(name: &str) -> Option<EvictPolicy> {
        Some(match name {
            "allkeys-lru" => EvictPolicy::AllKeysLru,
            "allkeys-lfu" => EvictPolicy::AllKeysLfu,
            "allkeys-random" => EvictPolicy::AllKeysRandom,
            "volatile-lru" => EvictPolicy::VolatileLru,
            "volatile-lfu" => EvictPolicy::VolatileLfu,
            "volatile-random" => EvictPolicy::VolatileRandom,
            "volatile-ttl" => EvictPolicy::VolatileTtl,
            _ => return None,
        })
    }

    fn volatile(self) -> bool {
        matches!(
            self,
            EvictPolicy::VolatileLru
                | EvictPolicy::VolatileLfu
                | EvictPolicy::VolatileRandom
                | EvictPolicy::VolatileTtl
        )
    }
}

/// (score, db, key, the key's address when sampled).
type Candidate = (u64, usize, Vec<u8>, u64);

pub(crate) struct Access {
    started: Instant,
    lfu: AtomicBool,
    log_factor: AtomicU32,
    decay_time: AtomicU32,
    /// Eviction candidates; the highest score goes first.
    pool: Mutex<Vec<Candidate>>,
    /// `set_access_tracking` was called (the first call follows loading the data set).
    configured: AtomicBool,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            started: Instant::now(),
            lfu: AtomicBool::new(false),
            log_factor: AtomicU32::new(10),
            decay_time: AtomicU32::new(1),
            pool: Mutex::new(Vec::new()),
            configured: AtomicBool::new(false),
        }
    }
}

impl Access {
    fn secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn lru_clock(&self) -> u16 {
        self.secs() as u16
    }

    fn minutes(&self) -> u8 {
        (self.secs() / 60) as u8
    }

    /// Redis's LFUDecrAndReturn: the counter less one per `lfu-decay-time` minutes idle.
    fn decayed(&self, m: u16) -> u8 {
        let (t, c) = ((m >> 8) as u8, m as u8);
        let decay = self.decay_time.load(Ordering::Relaxed);
        if decay == 0 {
            return c;
        }
        let periods = u32::from(self.minutes().wrapping_sub(t)) / decay;
        c.saturating_sub(periods.min(255) as u8)
    }

    /// Records an access (or, with `new`, a key just created) in `m`.
    #[inline]
    pub(crate) fn touch(&self, m: &AtomicU16, new: bool) {
        let cur = m.load(Ordering::Relaxed);
        let next = if self.lfu.load(Ordering::Relaxed) {
            // A key just created starts at LFU_INIT_VAL (an overwrite counts as an access).
            let c = if new {
                LFU_INIT_VAL
            } else {
                log_incr(self.decayed(cur), self)
            };
            (u16::from(self.minutes()) << 8) | u16::from(c)
        } else {
            self.lru_clock()
        };
        if next != cur {
            m.store(next, Ordering::Relaxed);
        }
    }
}

/// Redis's LFULogIncr: the counter grows with probability 1 / ((c - LFU_INIT_VAL) * factor + 1).
fn log_incr(c: u8, a: &Access) -> u8 {
    if c == 255 {
        return 255;
    }
    let base = f64::from(c.saturating_sub(LFU_INIT_VAL));
    let p = 1.0 / (base * f64::from(a.log_factor.load(Ordering::Relaxed)) + 1.0);
    let r = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    if r < p { c + 1 } else { c }
}

impl Engine {
    /// Switches access tracking between LRU clocks and LFU counters (`maxmemory-policy`),
    /// with Redis's `lfu-log-factor` and `lfu-decay-time`.
    pub fn set_access_tracking(&self, lfu: bool, log_factor: u32, decay_time: u32) {
        let a = &self.access;
        a.log_factor.store(log_factor, Ordering::Relaxed);
        a.decay_time.store(decay_time, Ordering::Relaxed);
        let first = !a.configured.swap(true, Ordering::Relaxed);
        if a.lfu.swap(lfu, Ordering::Relaxed) != lfu {
            a.pool.lock().unwrap().clear();
            // LRU clocks read as LFU counters (or the reverse) are noise: every key starts
            // from the same point. Under LFU: as a new key (LFU_INIT_VAL) right after
            // loading, as Redis's keys loaded from an AOF; after a switch at run time, 0,
            // what Redis's OBJECT FREQ shows then (its reinterpreted counters decay to 0).
            // Under LRU: accessed now.
            let m = if lfu {
                (u16::from(a.minutes()) << 8) | if first { u16::from(LFU_INIT_VAL) } else { 0 }
            } else {
                a.lru_clock()
            };
            let g = pin();
            for ks in self.keyspaces.iter() {
                ks.index.load(&g).reset_meta(m, &g);
            }
        }
    }

    /// OBJECT IDLETIME (seconds since the last access) and OBJECT FREQ (the decayed LFU
    /// counter) of a live key, read from its metadata under the current tracking mode.
    pub fn access_info(&self, db: usize, key: &[u8]) -> Option<(u64, u8)> {
        let g = pin();
        let (_, index) = self.index(db, &g);
        let (v, slot) = index.get(&self.log, key, super::hash(key), &g)?;
        let rec = self.log.read(slot_addr(v), &g)?;
        if !matches!(self.state(&rec), State::Live(_)) {
            return None;
        }
        let m = index.meta(slot, &g)?.load(Ordering::Relaxed);
        let idle = u64::from(self.access.lru_clock().wrapping_sub(m));
        Some((idle, self.access.decayed(m)))
    }

    /// Evicts one key under `policy`, sampling `samples` keys per database. Returns false when
    /// there is nothing it may evict (no keys, or no key with an expiry for volatile-*).
    pub fn evict_one(&self, policy: EvictPolicy, samples: usize) -> Result<bool, EngineError> {
        // Pool entries go stale when their key is rewritten or moved by the cleaner: if every
        // one of them did, sample afresh (a few times) before giving up.
        for _ in 0..4 {
            if self.evict_from_pool(policy, samples)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn evict_from_pool(&self, policy: EvictPolicy, samples: usize) -> Result<bool, EngineError> {
        let now = self.now_ms();
        let mut pool = self.access.pool.lock().unwrap();
        {
            let g = pin();
            let samples = samples.max(1);
            for db in 0..self.cfg.databases {
                let (_, index) = self.index(db, &g);
                if index.len() == 0
                    || (policy.volatile() && index.expires.load(Ordering::Relaxed) <= 0)
                {
                    continue;
                }
                // Scores a sampled entry into the pool; false if the policy may not evict it.
                let mut consider = |v: u64, m: u16| -> bool {
                    let Some(rec) = self.log.read(slot_addr(v), &g) else {
                        return false;
                    };
                    if policy.volatile() && rec.expire_at.is_none() {
                        return false;
                    }
                    let score = match policy {
                        EvictPolicy::AllKeysRandom | EvictPolicy::VolatileRandom => 0,
                        EvictPolicy::AllKeysLru | EvictPolicy::VolatileLru => {
                            u64::from(self.access.lru_clock().wrapping_sub(m))
                        }
                        EvictPolicy::AllKeysLfu | EvictPolicy::VolatileLfu => {
                            255 - u64::from(self.access.decayed(m))
                        }
                        EvictPolicy::VolatileTtl => {
                            u64::MAX - rec.expire_at.unwrap_or(u64::MAX).max(now)
                        }
                    };
                    let addr = slot_addr(v);
                    if pool.iter().any(|c| c.3 == addr) {
                        return true;
                    }
                    if pool.len() < POOL_SIZE {
                        pool.push((score, db, rec.key.to_vec(), addr));
                    } else if let Some(w) = pool.iter_mut().min_by_key(|c| c.0)
                        && w.0 < score
                    {
                        *w = (score, db, rec.key.to_vec(), addr);
                    }
                    true
                };
                let random = matches!(
                    policy,
                    EvictPolicy::AllKeysRandom | EvictPolicy::VolatileRandom
                );
                // One random key is as good as any; never more than the database holds (as
                // Redis's dictGetSomeKeys), whatever maxmemory-samples says.
                let mut samples = samples.min(usize::try_from(index.len()).unwrap_or(usize::MAX));
                if policy.volatile() {
                    // (They look 64 times as far: no further than there are keys to find.)
                    let expires = index.expires.load(Ordering::Relaxed).max(1);
                    samples = samples.min(usize::try_from(expires).unwrap_or(usize::MAX));
                }
                let want = if random { 1 } else { samples };
                // Volatile policies look further: keys with an expiry may be rare among the
                // sampled ones (Redis samples its separate dictionary of them).
                let tries = if policy.volatile() {
                    64 * samples
                } else {
                    samples
                };
                let mut found = 0;
                for _ in 0..tries {
                    if found == want {
                        break;
                    }
                    let Some((v, m)) = index.sample(random_u64(), &g) else {
                        break;
                    };
                    if consider(v, m) {
                        found += 1;
                    }
                }
                if found == 0 && policy.volatile() {
                    // Rare keys with an expiry that sampling missed: walk the table for them.
                    let mut pos = Some(0);
                    while let Some(p) = pos
                        && found < want
                    {
                        pos = index.walk_slots(p, 4096, &g, &mut |_, v, m| {
                            if found < want && !crate::index::is_tomb(v) && consider(v, m) {
                                found += 1;
                            }
                        });
                    }
                }
            }
        }
        // The best candidate that is still what was sampled (not rewritten or gone meanwhile).
        while let Some(i) = (0..pool.len()).max_by_key(|&i| pool[i].0) {
            let (_, db, key, addr) = pool.swap_remove(i);
            let g = pin();
            let (_, index) = self.index(db, &g);
            let current = index
                .get(&self.log, &key, super::hash(&key), &g)
                .is_some_and(|(v, _)| slot_addr(v) == addr);
            drop(g);
            if current && self.delete(db, &key)? {
                self.evicted_keys.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Keys evicted so far.
    pub fn evicted_keys(&self) -> u64 {
        self.evicted_keys.load(Ordering::Relaxed)
    }

    /// Bytes the data set takes: the index and every record in the log, live or not yet
    /// reclaimed. What `maxmemory` limits and INFO's `used_memory` reports.
    pub fn used_memory(&self) -> (u64, u64) {
        let g = pin();
        let index: u64 = self
            .keyspaces
            .iter()
            .map(|k| k.index.load(&g).bytes(&g) as u64)
            .sum();
        let (data, dead) = self.log.space();
        (index + data, index + data - dead)
    }
}

/// Touches `slot`'s metadata in `index` (a read or an overwrite; `new` for a created key).
#[inline]
pub(crate) fn touch_slot(
    e: &Engine,
    index: &Index,
    slot: &crate::sync::AtomicU64,
    new: bool,
    g: &segkv_log::epoch::EpochGuard,
) {
    if let Some(m) = index.meta(slot, g) {
        e.access.touch(m, new);
    }
}

const _: () = assert!(MAX_DATABASES <= 16);
