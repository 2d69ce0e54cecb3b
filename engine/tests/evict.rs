//! Eviction by sampling: each policy picks the victims it should, and never a key it may not.

use segkv_engine::*;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

fn open(dir: &std::path::Path) -> Engine {
    let mut c = Config::new(dir);
    c.appendfsync = FsyncPolicy::No;
    c.clock = Clock::Manual(Arc::new(AtomicU64::new(1_000_000)));
    Engine::open(c).unwrap()
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:05}").into_bytes()
}

#[test]
fn lfu_keeps_the_frequently_read_keys() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    e.set_access_tracking(true, 10, 1);
    for i in 0..2000 {
        e.set(0, &key(i), b"v", SetOptions::default()).unwrap();
    }
    // Keys 0..100 are hot.
    for _ in 0..50 {
        for i in 0..100 {
            assert!(e.exists(0, &key(i)));
        }
    }
    for i in 0..100 {
        assert!(e.access_info(0, &key(i)).unwrap().1 > 5, "key {i}");
    }
    for _ in 0..1500 {
        assert!(e.evict_one(EvictPolicy::AllKeysLfu, 5).unwrap());
    }
    assert_eq!(e.len(0), 500);
    assert_eq!(e.evicted_keys(), 1500);
    let hot_left = (0..100).filter(|&i| e.exists(0, &key(i))).count();
    assert!(hot_left >= 95, "only {hot_left} of 100 hot keys survived");
}

#[test]
fn volatile_policies_only_evict_keys_with_an_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let now = e.now_ms();
    for i in 0..300 {
        let expiry = if i < 100 {
            SetExpiry::At(now + 1_000 + i as u64 * 1_000)
        } else {
            SetExpiry::Persist
        };
        let opts = SetOptions {
            expiry,
            ..Default::default()
        };
        e.set(0, &key(i), b"v", opts).unwrap();
    }
    // volatile-ttl: the soonest deadlines go first.
    for _ in 0..20 {
        assert!(e.evict_one(EvictPolicy::VolatileTtl, 10).unwrap());
    }
    let gone: Vec<usize> = (0..100).filter(|&i| !e.exists(0, &key(i))).collect();
    assert_eq!(gone.len(), 20);
    assert!(
        gone.iter().sum::<usize>() < 20 * 50,
        "victims are not the soonest: {gone:?}"
    );
    for policy in [
        EvictPolicy::VolatileRandom,
        EvictPolicy::VolatileLru,
        EvictPolicy::VolatileLfu,
    ] {
        while e.expires_len(0) > 0 {
            assert!(e.evict_one(policy, 5).unwrap());
        }
    }
    // Only persistent keys are left: a volatile policy has nothing to evict.
    assert!(!e.evict_one(EvictPolicy::VolatileLru, 5).unwrap());
    assert_eq!(e.len(0), 200);
    for i in 100..300 {
        assert!(e.exists(0, &key(i)));
    }
    // allkeys-random takes any key, until there are none.
    while e.len(0) > 0 {
        assert!(e.evict_one(EvictPolicy::AllKeysRandom, 5).unwrap());
    }
    assert!(!e.evict_one(EvictPolicy::AllKeysRandom, 5).unwrap());
    assert_eq!(e.evicted_keys(), 300);
}

#[test]
fn evicted_keys_stay_gone_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    for i in 0..100 {
        e.set(0, &key(i), b"v", SetOptions::default()).unwrap();
    }
    for _ in 0..40 {
        assert!(e.evict_one(EvictPolicy::AllKeysLru, 5).unwrap());
    }
    let left: Vec<usize> = (0..100).filter(|&i| e.exists(0, &key(i))).collect();
    drop(e);
    let e = open(dir.path());
    let after: Vec<usize> = (0..100).filter(|&i| e.exists(0, &key(i))).collect();
    assert_eq!(left, after);
    assert_eq!(after.len(), 60);
}
