//! Concurrency: exact counters, no torn or invented values, online growth, SCAN's guarantee.

use segkv_engine::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn open(dir: &std::path::Path) -> Engine {
    let mut c = Config::new(dir);
    c.segment_size = 1 << 20;
    c.appendfsync = FsyncPolicy::No;
    Engine::open(c).unwrap()
}

fn incr(e: &Engine, key: &[u8], by: i64) -> i64 {
    e.update(0, key, |cur| {
        let old: i64 = cur.map_or(0, |c| {
            std::str::from_utf8(c.value).unwrap().parse().unwrap()
        });
        (
            Action::Put {
                value: (old + by).to_string().into_bytes(),
                expire_at: None,
            },
            old + by,
        )
    })
    .unwrap()
}

#[test]
fn incr_is_exact_with_8_threads_on_16_keys() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(open(dir.path()));
    let per_thread = 100_000;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    incr(&e, format!("counter:{}", (i + t) % 16).as_bytes(), 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total: i64 = (0..16)
        .map(|k| {
            std::str::from_utf8(&e.get(0, format!("counter:{k}").as_bytes()).unwrap())
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 8 * per_thread as i64);
    for k in 0..16 {
        assert_eq!(
            e.get(0, format!("counter:{k}").as_bytes()).unwrap(),
            (per_thread / 2).to_string().into_bytes()
        );
    }
    drop(e);
    let e = open(dir.path());
    for k in 0..16 {
        assert_eq!(
            e.get(0, format!("counter:{k}").as_bytes()).unwrap(),
            (per_thread / 2).to_string().into_bytes()
        );
    }
}

/// A value that names its key and writer, so a reader can tell a real write from garbage.
fn value_for(key: u32, writer: u32, seq: u32) -> Vec<u8> {
    let mut v = format!("{key}:{writer}:{seq}:").into_bytes();
    v.resize(16 + (seq as usize % 50), b'a' + (key % 26) as u8);
    v
}

fn well_formed(key: u32, v: &[u8]) -> bool {
    let s = std::str::from_utf8(v).unwrap();
    let mut it = s.split(':');
    let k: u32 = it.next().unwrap().parse().unwrap();
    let w: u32 = it.next().unwrap().parse().unwrap();
    let seq: u32 = it.next().unwrap().parse().unwrap();
    k == key && value_for(k, w, seq) == v
}

#[test]
fn concurrent_set_del_get_never_return_an_unwritten_value() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(open(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let e = e.clone();
            std::thread::spawn(move || {
                for seq in 0..20_000u32 {
                    let key = (seq * 7 + w) % 64;
                    if seq % 5 == 0 {
                        e.delete(0, &key.to_le_bytes()).unwrap();
                    } else {
                        e.set(
                            0,
                            &key.to_le_bytes(),
                            &value_for(key, w, seq),
                            SetOptions::default(),
                        )
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for key in 0..64u32 {
                        if let Some(v) = e.get(0, &key.to_le_bytes()) {
                            assert!(
                                well_formed(key, &v),
                                "key {key} read a value never written: {v:?}"
                            );
                            seen += 1;
                        }
                    }
                }
                seen
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let seen: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(seen > 0);
}

#[test]
fn the_index_grows_online_while_readers_and_writers_run() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(open(dir.path()));
    let per_writer = 60_000u32;
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (e, progress, stop) = (e.clone(), progress.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = r as u64;
                while !stop.load(Ordering::Relaxed) {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let w = (i >> 60) as usize % 4;
                    let done = progress[w].load(Ordering::Acquire);
                    if done == 0 {
                        continue;
                    }
                    let k = (i >> 20) % done;
                    let key = format!("w{w}:{k}");
                    assert_eq!(
                        e.get(0, key.as_bytes()),
                        Some(key.clone().into_bytes()),
                        "{key} vanished"
                    );
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (e, progress) = (e.clone(), progress.clone());
            std::thread::spawn(move || {
                for k in 0..per_writer {
                    let key = format!("w{w}:{k}");
                    e.set(0, key.as_bytes(), key.as_bytes(), SetOptions::default())
                        .unwrap();
                    progress[w].store(k as u64 + 1, Ordering::Release);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(e.len(0), 4 * per_writer as u64);
    // Reads move a resize under way to its end; then only one table is left.
    for k in 0..20_000u32 {
        e.get(0, format!("w0:{k}").as_bytes());
    }
    let stats = e.stats();
    let per_key = stats.index_bytes as f64 / (4 * per_writer) as f64;
    assert!(per_key <= 16.0 + 1.0, "index bytes per key {per_key}");
    drop(e);
    let e = open(dir.path());
    assert_eq!(e.len(0), 4 * per_writer as u64);
    for w in 0..4 {
        for k in (0..per_writer).step_by(97) {
            let key = format!("w{w}:{k}");
            assert_eq!(e.get(0, key.as_bytes()), Some(key.into_bytes()));
        }
    }
}

#[test]
fn scan_returns_every_key_present_for_the_whole_scan_while_writes_resize_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(open(dir.path()));
    for k in 0..2000u32 {
        e.set(
            0,
            format!("stable:{k}").as_bytes(),
            b"v",
            SetOptions::default(),
        )
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut k = 0u32;
            while !stop.load(Ordering::Relaxed) && k < 400_000 {
                e.set(
                    0,
                    format!("churn:{k}").as_bytes(),
                    b"x",
                    SetOptions::default(),
                )
                .unwrap();
                if k.is_multiple_of(3) {
                    e.delete(0, format!("churn:{}", k / 2).as_bytes()).unwrap();
                }
                k += 1;
            }
        })
    };
    for _round in 0..5 {
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        loop {
            cursor = e.scan(0, cursor, 50, |k| {
                if k.starts_with(b"stable:") {
                    seen.insert(k.to_vec());
                }
            });
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 2000);
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
}

/// More inserting threads than an empty table has spare slots: inserts past the load limit
/// start the resize instead of claiming slots, so the table never fills up.
#[test]
fn many_threads_inserting_into_an_empty_database_never_fill_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(open(dir.path()));
    let start = Arc::new(std::sync::Barrier::new(48));
    let threads: Vec<_> = (0..48u32)
        .map(|t| {
            let (e, start) = (e.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..500u32 {
                    e.set(
                        5,
                        format!("{t}:{i}").as_bytes(),
                        b"v",
                        SetOptions::default(),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(e.len(5), 48 * 500);
    for t in 0..48u32 {
        assert!(e.exists(5, format!("{t}:499").as_bytes()));
    }
}
