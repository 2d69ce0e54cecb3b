//! The segment cleaner: it reclaims space, never changes what a key reads (now or after a
//! restart), and is safe against writers and readers running beside it.

use segkv_engine::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn open(dir: &std::path::Path, clock: &Arc<AtomicU64>, seg: u64) -> Engine {
    let mut c = Config::new(dir);
    c.segment_size = seg;
    c.appendfsync = FsyncPolicy::No;
    c.clock = Clock::Manual(clock.clone());
    Engine::open(c).unwrap()
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:06}").into_bytes()
}

/// A value that says which key and which version it belongs to, so a torn or foreign read shows.
fn value(i: usize, version: u64) -> Vec<u8> {
    let mut v = format!("{i}:{version}:").into_bytes();
    v.resize(100, b'x');
    v
}

fn parse(v: &[u8]) -> (usize, u64) {
    let s = std::str::from_utf8(v).unwrap();
    let mut it = s.split(':');
    (
        it.next().unwrap().parse().unwrap(),
        it.next().unwrap().parse().unwrap(),
    )
}

fn clean_all(e: &Engine) {
    // Segments are cleaned once the flusher has settled them.
    e.sync().unwrap();
    e.expire_step(1 << 30);
    e.set_memory_pressure(true);
    let mut n = 0;
    while e.clean_step(1000).unwrap() {
        n += 1;
        assert!(n < 100_000, "the cleaner never settles");
    }
    e.set_memory_pressure(false);
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

#[test]
fn cleaning_reclaims_garbage_and_restart_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = open(dir.path(), &clock, 64 << 10);
    let n = 3000;
    let mut model: HashMap<usize, Option<(u64, Option<u64>)>> = HashMap::new();
    for version in 0..4u64 {
        for i in 0..n {
            e.set(0, &key(i), &value(i, version), SetOptions::default())
                .unwrap();
            model.insert(i, Some((version, None)));
        }
    }
    for i in (0..n).step_by(2) {
        e.delete(0, &key(i)).unwrap();
        model.insert(i, None);
    }
    let now = clock.load(Ordering::Relaxed);
    for i in (1..n).step_by(4) {
        e.expire(0, &key(i), Some(now + 10), ExpireCond::Always)
            .unwrap();
        model.insert(i, Some((3, Some(now + 10))));
    }
    let before_files = segment_files(dir.path());
    let before_bytes = e.log().data_bytes();
    clock.fetch_add(11, Ordering::Relaxed);
    for i in (1..n).step_by(4) {
        model.insert(i, None);
    }
    clean_all(&e);
    let st = e.cleaner_stats();
    assert!(st.segments_cleaned > 0, "{st:?}");
    assert!(st.records_copied > 0, "{st:?}");
    let live_keys = model.values().filter(|v| v.is_some()).count();
    // Every expired key left DBSIZE: the cleaner removed the entries of the records it dropped.
    assert_eq!(e.len(0), live_keys as u64);
    let after_bytes = e.log().data_bytes();
    // The running counters agree with the segments themselves.
    let segs = e.log().segments();
    assert_eq!(after_bytes, segs.iter().map(|s| s.data_bytes).sum::<u64>());
    assert!(
        after_bytes * 3 < before_bytes,
        "{before_bytes} -> {after_bytes} bytes"
    );
    assert!(segment_files(dir.path()) < before_files);
    let check = |e: &Engine| {
        for i in 0..n {
            let got = e.get(0, &key(i));
            match model[&i] {
                Some((version, _)) => assert_eq!(got, Some(value(i, version)), "key {i}"),
                None => assert_eq!(got, None, "key {i} came back"),
            }
        }
    };
    check(&e);
    drop(e);
    // Tombstones of keys whose old records were reclaimed must not be needed any more, and the
    // ones still needed must have survived: nothing deleted comes back after a restart.
    let e = open(dir.path(), &clock, 64 << 10);
    check(&e);
    assert_eq!(e.len(0), live_keys as u64);
    // Cleaning twice changes nothing more than space.
    clean_all(&e);
    check(&e);
    drop(e);
    let e = open(dir.path(), &clock, 64 << 10);
    check(&e);
}

#[test]
fn wholly_expired_segments_are_dropped_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = open(dir.path(), &clock, 64 << 10);
    let now = clock.load(Ordering::Relaxed);
    // The wave first (the oldest segments hold only keys with an expiry), then persistent keys.
    for i in 0..5000 {
        let opts = SetOptions {
            expiry: SetExpiry::At(now + 4000),
            ..Default::default()
        };
        e.set(0, &key(i), &value(i, 0), opts).unwrap();
    }
    for i in 5000..5500 {
        e.set(0, &key(i), &value(i, 0), SetOptions::default())
            .unwrap();
    }
    clean_all(&e);
    assert_eq!(e.cleaner_stats().segments_dropped, 0, "nothing expired yet");
    assert_eq!(e.len(0), 5500);
    clock.fetch_add(4000, Ordering::Relaxed);
    clean_all(&e);
    let st = e.cleaner_stats();
    assert!(st.segments_dropped > 0, "{st:?}");
    assert_eq!(e.len(0), 500);
    assert_eq!(e.expires_len(0), 0);
    for i in 0..5500 {
        assert_eq!(e.get(0, &key(i)).is_some(), i >= 5000, "key {i}");
    }
    // A write to a key whose entry pointed into a dropped segment finds no stale slot.
    e.set(0, &key(7), b"again", SetOptions::default()).unwrap();
    assert_eq!(e.get(0, &key(7)), Some(b"again".to_vec()));
    assert_eq!(e.len(0), 501);
    drop(e);
    let e = open(dir.path(), &clock, 64 << 10);
    assert_eq!(e.len(0), 501);
    assert_eq!(e.get(0, &key(7)), Some(b"again".to_vec()));
}

#[test]
fn expiry_sweep_empties_dbsize_without_reads() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = open(dir.path(), &clock, 1 << 20);
    let now = clock.load(Ordering::Relaxed);
    for i in 0..2000 {
        let expiry = if i % 2 == 0 {
            SetExpiry::At(now + 100)
        } else {
            SetExpiry::Persist
        };
        let opts = SetOptions {
            expiry,
            ..Default::default()
        };
        e.set(0, &key(i), &value(i, 0), opts).unwrap();
    }
    // Not before the deadline.
    clock.fetch_add(99, Ordering::Relaxed);
    assert_eq!(e.expire_step(1 << 20), 0);
    assert_eq!(e.len(0), 2000);
    clock.fetch_add(1, Ordering::Relaxed);
    let mut removed = 0;
    for _ in 0..100 {
        removed += e.expire_step(64);
    }
    assert_eq!(removed, 1000);
    assert_eq!(e.len(0), 1000);
    assert_eq!(e.expires_len(0), 0);
    assert_eq!(e.stats().expired_keys, 1000);
}

#[test]
fn an_index_emptied_by_expiry_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = open(dir.path(), &clock, 1 << 20);
    let now = clock.load(Ordering::Relaxed);
    for i in 0..100_000 {
        let expiry = if i < 1000 {
            SetExpiry::Persist
        } else {
            SetExpiry::At(now + 10)
        };
        let opts = SetOptions {
            expiry,
            ..Default::default()
        };
        e.set(0, &key(i), &value(i, 0), opts).unwrap();
    }
    let big = e.stats().index_bytes;
    clock.fetch_add(10, Ordering::Relaxed);
    e.expire_step(1 << 30);
    assert_eq!(e.len(0), 1000);
    for _ in 0..1000 {
        e.maintain_index(64);
    }
    let small = e.stats().index_bytes;
    assert!(small * 10 < big, "index {big} -> {small} bytes");
    for i in 0..100_000 {
        assert_eq!(e.get(0, &key(i)).is_some(), i < 1000, "key {i}");
    }
    e.set(0, &key(5000), b"new", SetOptions::default()).unwrap();
    assert_eq!(e.len(0), 1001);
}

/// Writers overwrite and delete their own keys while the cleaner copies them and readers read
/// them: no copy brings back an old value or a deleted key, no reader sees a torn or foreign
/// value, and a restart agrees with the writers' last word.
#[test]
fn cleaner_races_writers_and_readers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = Arc::new(open(dir.path(), &clock, 32 << 10));
    let writers = 3;
    let per = 400;
    for w in 0..writers {
        for j in 0..per {
            let i = w * per + j;
            e.set(0, &key(i), &value(i, 0), SetOptions::default())
                .unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..writers {
        let e = e.clone();
        handles.push(std::thread::spawn(move || {
            let mut last: HashMap<usize, Option<u64>> = HashMap::new();
            let mut x = (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for round in 1..=30u64 {
                for j in 0..per {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = w * per + j;
                    if x.is_multiple_of(5) {
                        e.delete(0, &key(i)).unwrap();
                        last.insert(i, None);
                    } else {
                        e.set(0, &key(i), &value(i, round), SetOptions::default())
                            .unwrap();
                        last.insert(i, Some(round));
                    }
                }
            }
            last
        }));
    }
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let e = e.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 7) % (writers * per);
                    if let Some(v) = e.get(0, &key(i)) {
                        assert_eq!(v.len(), 100);
                        assert_eq!(parse(&v).0, i, "a foreign value under key {i}");
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let cleaner = {
        let e = e.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            e.set_memory_pressure(true);
            while !stop.load(Ordering::Relaxed) {
                if !e.clean_step(200).unwrap() {
                    std::thread::yield_now();
                }
            }
        })
    };
    let mut last = HashMap::new();
    for h in handles {
        last.extend(h.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    cleaner.join().unwrap();
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert!(e.cleaner_stats().segments_cleaned > 0);
    let check = |e: &Engine| {
        for (&i, &v) in &last {
            assert_eq!(e.get(0, &key(i)), v.map(|r| value(i, r)), "key {i}");
        }
    };
    check(&e);
    clean_all(&e);
    check(&e);
    let e = Arc::into_inner(e).unwrap();
    drop(e);
    let e = open(dir.path(), &clock, 32 << 10);
    check(&e);
}

/// A shrink reserves room in the new table for the keys live when it starts; writes that bring
/// deleted keys back while it migrates must not overfill it (found by review: "index table
/// being migrated into has no empty slot").
#[test]
fn refilling_deleted_keys_during_a_shrink_fits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = open(dir.path(), &clock, 64 << 20);
    let n = 200_000;
    for i in 0..n {
        e.set(0, &key(i), b"v", SetOptions::default()).unwrap();
    }
    for i in 100..n {
        e.delete(0, &key(i)).unwrap();
    }
    // Attach the shrink's table, migrate nothing: the writes below do the migrating.
    e.maintain_index(0);
    let mut x: u64 = 88172645463325252;
    let mut back = std::collections::HashSet::new();
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = 100 + (x as usize) % (n - 100);
        e.set(0, &key(i), b"w", SetOptions::default()).unwrap();
        back.insert(i);
    }
    assert_eq!(e.len(0), 100 + back.len() as u64);
    for &i in back.iter().take(1000) {
        assert_eq!(e.get(0, &key(i)), Some(b"w".to_vec()));
    }
}

/// With `recover-corrupt`, recovery skips a damaged record and keeps the ones after it in the
/// same segment; cleaning that segment must copy those too (found by review: the walk stopped
/// at the damage and the segment was retired with them).
#[test]
fn cleaning_a_segment_with_a_skipped_damaged_record_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    {
        let e = open(dir.path(), &clock, 64 << 10);
        for i in 0..2000 {
            e.set(0, &key(i), &value(i, 0), SetOptions::default())
                .unwrap();
        }
    }
    // Damage record 10 of the first segment (header 64 B, records of 12 + 10 + 100 B, padded
    // to 124 B): its commit word claims 1280 bytes, which would swallow the next records if its
    // length were trusted, and its checksum fails.
    let first = segkv_log::list_segments(dir.path()).unwrap()[0].1.clone();
    let mut bytes = std::fs::read(&first).unwrap();
    let at = 64 + 10 * 124;
    bytes[at..at + 4].copy_from_slice(&(0x8000_0000u32 | 1280).to_le_bytes());
    std::fs::write(&first, &bytes).unwrap();
    let mut c = Config::new(dir.path());
    c.segment_size = 64 << 10;
    c.appendfsync = FsyncPolicy::No;
    c.clock = Clock::Manual(clock.clone());
    c.recover_corrupt = true;
    let e = Engine::open(c).unwrap();
    assert_eq!(e.recovery().report.skipped.len(), 1);
    assert_eq!(e.len(0), 1999);
    e.delete(0, &key(0)).unwrap();
    clean_all(&e);
    assert!(e.cleaner_stats().segments_cleaned > 0);
    for i in 1..2000 {
        let want = if i == 10 { None } else { Some(value(i, 0)) };
        assert_eq!(e.get(0, &key(i)), want, "key {i}");
    }
    drop(e);
    let e = open(dir.path(), &clock, 64 << 10);
    assert_eq!(e.len(0), 1998);
    assert_eq!(e.get(0, &key(11)), Some(value(11, 0)));
}

/// FLUSHALL makes every record garbage: the cleaner must give the disk back without being
/// pushed (no memory pressure), and nothing flushed comes back after a restart.
#[test]
fn flushall_gives_the_log_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = open(dir.path(), &clock, 64 << 10);
    for db in 0..2 {
        for i in 0..3000 {
            e.set(db, &key(i), &value(i, 0), SetOptions::default())
                .unwrap();
        }
    }
    let before = e.log().data_bytes();
    e.flush_all().unwrap();
    e.sync().unwrap();
    let mut n = 0;
    while e.clean_step(1000).unwrap() {
        n += 1;
        assert!(n < 10_000);
        e.sync().unwrap();
    }
    let after = e.log().data_bytes();
    assert!(after * 10 < before, "{before} -> {after} bytes");
    drop(e);
    let e = open(dir.path(), &clock, 64 << 10);
    assert_eq!(e.len(0) + e.len(1), 0);
}

/// `cleaner-garbage-percent`: the cleaner leaves garbage below the set share of the live data
/// alone, starts once it is past it, and stops when the log is back under it.
#[test]
fn the_garbage_percent_decides_when_cleaning_starts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = open(dir.path(), &clock, 64 << 10);
    let n = 4000;
    for i in 0..n {
        e.set(0, &key(i), &value(i, 0), SetOptions::default())
            .unwrap();
    }
    // A third of the keys rewritten: garbage is about 33% of the live data.
    for i in (0..n).step_by(3) {
        e.set(0, &key(i), &value(i, 1), SetOptions::default())
            .unwrap();
    }
    e.sync().unwrap();
    let garbage = |e: &Engine| {
        let (data, dead) = e.log().space();
        dead as f64 / (data - dead) as f64
    };
    let g0 = garbage(&e);
    assert!((0.30..0.37).contains(&g0), "garbage {g0:.3}");
    e.set_garbage_percent(40);
    assert!(!e.clean_step(1000).unwrap(), "cleaned below the threshold");
    assert_eq!(e.cleaner_stats().segments_cleaned, 0);
    e.set_garbage_percent(20);
    let mut steps = 0;
    while e.clean_step(1000).unwrap() {
        steps += 1;
        assert!(steps < 10_000);
        e.sync().unwrap();
    }
    assert!(e.cleaner_stats().segments_cleaned > 0);
    let g1 = garbage(&e);
    assert!(g1 <= 0.20, "garbage {g1:.3} left past the threshold");
    for i in 0..n {
        let version = u64::from(i % 3 == 0);
        assert_eq!(e.get(0, &key(i)), Some(value(i, version)), "key {i}");
    }
}

/// A crash between a Retire record reaching the disk and the segment's file going: the next
/// open must build the index as if the segment were gone (its records would otherwise count
/// as other keys: a key found in a missing segment cannot be compared), then delete it.
#[test]
fn a_segment_named_by_a_retire_record_is_left_out_and_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = open(dir.path(), &clock, 64 << 10);
    let n = 2000;
    for version in 0..4u64 {
        for i in 0..n {
            e.set(0, &key(i), &value(i, version), SetOptions::default())
                .unwrap();
        }
    }
    e.sync().unwrap();
    // Keep copies of the segments the cleaner is about to delete.
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    clean_all(&e);
    assert!(e.cleaner_stats().segments_cleaned > 0);
    drop(e);
    // The crash: every deleted segment's file is back, its Retire record on disk.
    let mut restored = 0;
    for (p, b) in &saved {
        if !p.exists() {
            std::fs::write(p, b).unwrap();
            restored += 1;
        }
    }
    assert!(restored > 0);
    let e = open(dir.path(), &clock, 64 << 10);
    assert_eq!(e.len(0), n as u64);
    for i in 0..n {
        assert_eq!(e.get(0, &key(i)), Some(value(i, 3)), "key {i}");
    }
    let back = saved.iter().filter(|(p, _)| p.exists()).count();
    assert_eq!(
        back,
        saved.len() - restored,
        "the restored segments go again"
    );
}

/// A primary demoted while the cleaner is half way through a segment, its log then cut back
/// to before the copies the cleaner made (its new primary forked there), then promoted again:
/// the cleaner must look at the segment from its start, or it would retire it with the live
/// records it had already "copied" (the copies are gone) and lose them.
#[test]
fn cleaning_interrupted_by_a_cut_back_starts_the_segment_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let e = open(dir.path(), &clock, 64 << 10);
    let n = 400;
    for i in 0..n {
        e.set(0, &key(i), &value(i, 0), SetOptions::default())
            .unwrap();
    }
    e.log().roll().unwrap();
    // Every other key rewritten: the first segment is half garbage.
    for i in (0..n).step_by(2) {
        e.set(0, &key(i), &value(i, 1), SetOptions::default())
            .unwrap();
    }
    e.log().roll().unwrap();
    e.sync().unwrap();
    let fork = e.log().tail_addr();
    e.set_memory_pressure(true);
    // A few records of the first segment: some live ones copied past `fork`.
    for _ in 0..5 {
        assert!(e.clean_step(20).unwrap());
    }
    assert!(e.cleaner_stats().records_copied > 0);
    assert_eq!(e.cleaner_stats().segments_cleaned, 0);
    e.sync().unwrap();
    e.set_mirroring(true);
    assert!(e.mirror_truncate(fork).unwrap(), "the cut was refused");
    e.set_mirroring(false);
    let check = |e: &Engine| {
        for i in 0..n {
            let version = u64::from(i % 2 == 0);
            assert_eq!(e.get(0, &key(i)), Some(value(i, version)), "key {i}");
        }
    };
    check(&e);
    clean_all(&e);
    assert!(e.cleaner_stats().segments_cleaned > 0);
    check(&e);
    drop(e);
    let e = open(dir.path(), &clock, 64 << 10);
    check(&e);
}
