//! `maxmemory`: eviction before write commands (Redis's `performEvictions`), and the background
//! thread that drives the engine's cleaner and active expiry.
//!
//! What the limit counts is the data set: the index plus every record in the log, live or not
//! yet reclaimed (`Engine::used_memory`). Evicting a key only makes its record dead; the cleaner
//! returns the bytes. So eviction aims below the limit by `HEADROOM` (room for the garbage the
//! cleaner has not reached yet) and turns the cleaner's pressure mode on above it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use segkv_engine::{Engine, EvictPolicy};

use crate::server::Shared;

/// Redis's `shared.oomerr`.
pub const OOM_ERR: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Share of `maxmemory` kept free of live data for garbage awaiting the cleaner.
const HEADROOM: u64 = 8; // 1/8

/// `maxmemory-policy` names in the order of `Limits::evict_policy` codes (0: noeviction).
const POLICIES: [&str; 8] = [
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

/// The code `Limits::evict_policy` holds for a policy name.
pub fn policy_code(name: &str) -> u8 {
    POLICIES.iter().position(|p| *p == name).unwrap_or(0) as u8
}

fn policy_of(code: u8) -> Option<EvictPolicy> {
    EvictPolicy::parse(POLICIES.get(code as usize)?)
}

/// Segment size under a memory limit: the cleaner reclaims whole segments, so they must be
/// small next to the limit (1/32 of it, at least 1 MiB, at most `segment-size`).
pub fn segment_size_for(segment_size: u64, maxmemory: u64) -> u64 {
    if maxmemory == 0 {
        segment_size
    } else {
        (maxmemory / 32).clamp(1 << 20, segment_size.max(1 << 20))
    }
}

/// Before a command that may grow memory (`denyoom`): evicts under the policy until the data
/// set fits, as Redis does. False means the command must be refused with `OOM_ERR`.
pub fn make_room(srv: &Shared, e: &Engine) -> bool {
    let max = srv.limits.maxmemory.load(Relaxed);
    // A replica's data is its primary's (Redis's replica-ignore-maxmemory): no eviction.
    if max == 0 || srv.repl.is_replica() {
        return true;
    }
    let (used, mut live) = e.used_memory();
    if used <= max {
        return true;
    }
    let Some(policy) = policy_of(srv.limits.evict_policy.load(Relaxed)) else {
        return false; // noeviction
    };
    // Redis bounds one call's work by time (maxmemory-eviction-tenacity 10: 500 us) and lets
    // the command run when eviction made progress; only nothing left to evict refuses it.
    let limit = tenacity_limit(srv.limits.eviction_tenacity.load(Relaxed));
    evict(srv, e, policy, &mut live, limit) || live <= max
}

/// Redis's `evictionTimeLimitUs`: 50 us per step of tenacity up to 10 (500 us), then 15% more
/// per step; 100 means no limit.
fn tenacity_limit(tenacity: u64) -> Duration {
    match tenacity {
        0..=10 => Duration::from_micros(50 * tenacity),
        11..=99 => Duration::from_micros((500.0 * 1.15f64.powi(tenacity as i32 - 10)) as u64),
        _ => Duration::from_secs(3600),
    }
}

/// Evicts until the live data is below the target or `limit` passes. Returns whether it
/// evicted anything (or had nothing to do).
fn evict(srv: &Shared, e: &Engine, policy: EvictPolicy, live: &mut u64, limit: Duration) -> bool {
    let max = srv.limits.maxmemory.load(Relaxed);
    let target = max - max / HEADROOM;
    let samples = srv.limits.maxmemory_samples.load(Relaxed) as usize;
    let t = Instant::now();
    let mut progress = *live <= target;
    while *live > target {
        match e.evict_one(policy, samples) {
            Ok(true) => progress = true,
            _ => break,
        }
        *live = e.used_memory().1;
        if t.elapsed() >= limit {
            break;
        }
    }
    progress
}

/// Applies the memory settings to the engine (after loading, and after CONFIG SET).
pub fn apply(srv: &Shared, e: &Engine) {
    let c = srv.config.read().unwrap();
    let lfu = c.get("maxmemory-policy").contains("lfu");
    let num = |n: &str| c.get(n).parse::<u32>().unwrap_or(0);
    e.set_access_tracking(lfu, num("lfu-log-factor"), num("lfu-decay-time"));
    e.set_garbage_percent(num("cleaner-garbage-percent").into());
    let max = c.get("maxmemory").parse().unwrap_or(0);
    e.log()
        .set_segment_size(segment_size_for(c.segment_size(), max));
}

/// Index slots the active-expiry sweep visits per step.
const SWEEP_SLOTS: usize = 16 << 10;

/// The cleaner thread: active expiry and cleaning, a bounded slice of work at a time, pausing
/// between slices so it takes at most about half a core.
pub fn run_cleaner(srv: Arc<Shared>) {
    let Some(e) = srv.engine.loaded() else {
        return;
    };
    let mut failed = false;
    let mut last_trim = Instant::now();
    let mut last_checkpoint = (Instant::now(), e.durable_addr());
    loop {
        if srv.shutting_down.load(Relaxed) {
            return;
        }
        let max = srv.limits.maxmemory.load(Relaxed);
        let (used, mut live) = e.used_memory();
        e.set_memory_pressure(max > 0 && used > max - max / HEADROOM);
        srv.note_used_memory(used);
        // Eviction goes on between commands too (Redis's timer proc does the same).
        let replica = srv.repl.is_replica();
        if max > 0
            && !replica
            && let Some(policy) = policy_of(srv.limits.evict_policy.load(Relaxed))
        {
            evict(&srv, e, policy, &mut live, Duration::from_millis(2));
        }
        // Active expiry: ~16k slots per 10 ms round, a whole 1M-key index in about a second;
        // while more than a tenth of the records a step checks had expired (a mass expiry),
        // more steps, up to 4 ms (Redis's active expiry goes on under the same condition).
        let t = Instant::now();
        loop {
            let (removed, checked) = e.expire_step_counted(SWEEP_SLOTS);
            if removed == 0 || removed * 10 < checked || t.elapsed() >= Duration::from_millis(4) {
                break;
            }
        }
        let t = Instant::now();
        let mut worked = false;
        while t.elapsed() < Duration::from_millis(4) {
            match e.clean_step(2048) {
                Ok(true) => worked = true,
                Ok(false) => break,
                Err(err) => {
                    if !failed {
                        eprintln!("segkv: the cleaner stopped: {err}");
                        failed = true;
                    }
                    break;
                }
            }
        }
        // A resize's migration, 8k slots a round (~1M a second), a few ms of work.
        e.maintain_index(2);
        // Frees whose readers are gone (retired segments, replaced buffers and index tables).
        segkv_engine::reclaim_memory();
        let every = srv.limits.checkpoint_interval.load(Relaxed);
        // A replica replays its log at restart (it continues the segment it was copying).
        if every > 0
            && !replica
            && last_checkpoint.0.elapsed() >= Duration::from_secs(every)
            && e.durable_addr() != last_checkpoint.1
        {
            last_checkpoint = (Instant::now(), e.durable_addr());
            write_checkpoint(e, "on its interval");
        }
        if last_trim.elapsed() >= Duration::from_secs(1) {
            segkv_engine::trim_heap();
            last_trim = Instant::now();
        }
        // Paced at about half a core; flat out while garbage piles up faster than that.
        if worked && e.cleaner_behind() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(if worked {
                Duration::from_millis(4)
            } else {
                Duration::from_millis(10)
            });
        }
    }
}

/// Writes an index checkpoint, logging what it took (or why it failed: the next start then
/// replays more of the log, nothing is lost).
pub fn write_checkpoint(e: &Engine, when: &str) {
    match e.checkpoint() {
        Ok(c) => eprintln!(
            "segkv: index checkpoint written {when}: {} keys, {} bytes, covers the log up to {:#x}, {:.3} seconds",
            c.keys, c.bytes, c.covered, c.seconds
        ),
        Err(err) => eprintln!("segkv: index checkpoint {when} failed: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_small_next_to_maxmemory() {
        assert_eq!(segment_size_for(64 << 20, 0), 64 << 20);
        assert_eq!(segment_size_for(64 << 20, 64 << 20), 2 << 20);
        assert_eq!(segment_size_for(64 << 20, 1 << 20), 1 << 20);
        assert_eq!(segment_size_for(64 << 20, 1 << 40), 64 << 20);
    }

    #[test]
    fn tenacity_is_redis_time_limit() {
        assert_eq!(tenacity_limit(10), Duration::from_micros(500));
        assert_eq!(tenacity_limit(11), Duration::from_micros(575));
        assert!(tenacity_limit(100) >= Duration::from_secs(60));
    }

    #[test]
    fn policy_codes_round_trip() {
        for (i, p) in POLICIES.iter().enumerate() {
            assert_eq!(policy_code(p) as usize, i);
        }
        assert_eq!(policy_of(0), None);
        assert_eq!(policy_of(2), Some(EvictPolicy::AllKeysLfu));
    }
}
