//! Property test: random operations against a model (a HashMap), with simulated restarts
//! (reopening the directory) in the middle; the store must equal the model after every step.

use proptest::prelude::*;
use segkv_engine::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
enum Op {
    Set(u8, u8, u8, Option<u64>),
    SetNx(u8, u8, u8),
    Del(u8, u8),
    Incr(u8, u8, i64),
    Append(u8, u8, u8),
    Expire(u8, u8, u64),
    Persist(u8, u8),
    Tick(u64),
    FlushDb(u8),
    SwapDb(u8, u8),
    Reopen,
    /// Run the cleaner (forced: any garbage is worth cleaning) with chunks of this many
    /// records, until it has nothing to do or for this many steps (a restart may then find
    /// some segments cleaned and others not, or one half cleaned).
    Clean(u8, Option<u8>),
    /// The active-expiry sweep over the whole index.
    Sweep,
    /// Write an index checkpoint (the next reopen starts from it).
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    let db = 0u8..3;
    let key = 0u8..24;
    prop_oneof![
        6 => (db.clone(), key.clone(), any::<u8>(), proptest::option::of(1u64..50)).prop_map(|(d, k, v, t)| Op::Set(d, k, v, t)),
        2 => (db.clone(), key.clone(), any::<u8>()).prop_map(|(d, k, v)| Op::SetNx(d, k, v)),
        3 => (db.clone(), key.clone()).prop_map(|(d, k)| Op::Del(d, k)),
        3 => (db.clone(), key.clone(), -5i64..5).prop_map(|(d, k, n)| Op::Incr(d, k, n)),
        1 => (db.clone(), key.clone(), any::<u8>()).prop_map(|(d, k, v)| Op::Append(d, k, v)),
        2 => (db.clone(), key.clone(), 0u64..50).prop_map(|(d, k, t)| Op::Expire(d, k, t)),
        1 => (db.clone(), key.clone()).prop_map(|(d, k)| Op::Persist(d, k)),
        2 => (1u64..30).prop_map(Op::Tick),
        1 => db.clone().prop_map(Op::FlushDb),
        1 => (db.clone(), db).prop_map(|(a, b)| Op::SwapDb(a, b)),
        1 => Just(Op::Reopen),
        3 => (1u8..20, proptest::option::of(1u8..30)).prop_map(|(c, n)| Op::Clean(c, n)),
        1 => Just(Op::Sweep),
        2 => Just(Op::Checkpoint),
    ]
}

type Model = Vec<HashMap<Vec<u8>, (Vec<u8>, Option<u64>)>>;

fn k(key: u8) -> Vec<u8> {
    format!("key:{key}").into_bytes()
}

fn open(dir: &std::path::Path, clock: &Arc<AtomicU64>) -> Engine {
    open_with(dir, clock, 8192)
}

fn open_with(dir: &std::path::Path, clock: &Arc<AtomicU64>, segment_size: u64) -> Engine {
    let mut c = Config::new(dir);
    c.databases = 3;
    c.segment_size = segment_size;
    c.appendfsync = FsyncPolicy::No;
    c.clock = Clock::Manual(clock.clone());
    Engine::open(c).unwrap()
}

fn live(m: &Model, db: usize, key: &[u8], now: u64) -> Option<(Vec<u8>, Option<u64>)> {
    m[db]
        .get(key)
        .filter(|e| e.1.is_none_or(|t| t > now))
        .cloned()
}

fn check(e: &Engine, m: &Model, now: u64) {
    for db in 0..3 {
        for key in 0..24u8 {
            let want = live(m, db, &k(key), now);
            let got = e.read(db, &k(key), |c| (c.value.to_vec(), c.expire_at));
            assert_eq!(got, want, "db {db} key {key}");
        }
        let mut scanned = Vec::new();
        let mut cursor = 0;
        loop {
            cursor = e.scan(db, cursor, 3, |key| scanned.push(key.to_vec()));
            if cursor == 0 {
                break;
            }
        }
        scanned.sort();
        scanned.dedup();
        let mut want: Vec<Vec<u8>> = m[db]
            .iter()
            .filter(|(_, v)| v.1.is_none_or(|t| t > now))
            .map(|(k, _)| k.clone())
            .collect();
        want.sort();
        assert_eq!(scanned, want, "scan of db {db}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, 8192)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    /// The smallest segments and more operations: the log has several segments, so cleaning
    /// cut short and restarts find some reclaimed and others (or half of one) not.
    #[test]
    fn store_matches_model_on_many_segments(ops in proptest::collection::vec(op(), 1..400)) {
        run(ops, 4096)?;
    }
}

/// Applies `ops` to a store and to the model; they must agree after every step, and after a
/// final restart.
fn run(ops: Vec<Op>, segment_size: u64) -> Result<(), TestCaseError> {
    let open = |dir: &std::path::Path, clock: &Arc<AtomicU64>| open_with(dir, clock, segment_size);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000));
    let mut e = open(dir.path(), &clock);
    let mut m: Model = vec![HashMap::new(); 3];
    for op in ops {
        let now = clock.load(Ordering::Relaxed);
        match op {
            Op::Set(d, key, v, ttl) => {
                let exp = ttl.map(|t| now + t);
                let opts = SetOptions {
                    expiry: exp.map_or(SetExpiry::Persist, SetExpiry::At),
                    ..Default::default()
                };
                e.set(d as usize, &k(key), &[v], opts).unwrap();
                m[d as usize].insert(k(key), (vec![v], exp));
            }
            Op::SetNx(d, key, v) => {
                let opts = SetOptions {
                    cond: Cond::IfAbsent,
                    ..Default::default()
                };
                let r = e.set(d as usize, &k(key), &[v], opts).unwrap();
                let absent = live(&m, d as usize, &k(key), now).is_none();
                prop_assert_eq!(r.applied, absent);
                if absent {
                    m[d as usize].insert(k(key), (vec![v], None));
                }
            }
            Op::Del(d, key) => {
                let r = e.delete(d as usize, &k(key)).unwrap();
                let was = live(&m, d as usize, &k(key), now).is_some();
                m[d as usize].remove(&k(key));
                prop_assert_eq!(r, was);
            }
            Op::Incr(d, key, n) => {
                let r = e
                    .update(d as usize, &k(key), |cur| {
                        let old: Option<i64> = match cur {
                            None => Some(0),
                            Some(c) => std::str::from_utf8(c.value)
                                .ok()
                                .and_then(|s| s.parse().ok()),
                        };
                        match old {
                            Some(o) => (
                                Action::Put {
                                    value: (o + n).to_string().into_bytes(),
                                    expire_at: cur.and_then(|c| c.expire_at),
                                },
                                Some(o + n),
                            ),
                            None => (Action::Keep, None),
                        }
                    })
                    .unwrap();
                let cur = live(&m, d as usize, &k(key), now);
                let old: Option<i64> = match &cur {
                    None => Some(0),
                    Some(c) => std::str::from_utf8(&c.0).ok().and_then(|s| s.parse().ok()),
                };
                prop_assert_eq!(r, old.map(|o| o + n));
                if let Some(o) = old {
                    m[d as usize].insert(
                        k(key),
                        ((o + n).to_string().into_bytes(), cur.and_then(|c| c.1)),
                    );
                }
            }
            Op::Append(d, key, v) => {
                e.update(d as usize, &k(key), |cur| {
                    let mut val = cur.map_or(Vec::new(), |c| c.value.to_vec());
                    val.push(v);
                    (
                        Action::Put {
                            value: val,
                            expire_at: cur.and_then(|c| c.expire_at),
                        },
                        (),
                    )
                })
                .unwrap();
                let cur = live(&m, d as usize, &k(key), now);
                let mut val = cur.as_ref().map_or(Vec::new(), |c| c.0.clone());
                val.push(v);
                m[d as usize].insert(k(key), (val, cur.and_then(|c| c.1)));
            }
            Op::Expire(d, key, t) => {
                let at = now + t;
                let r = e
                    .expire(d as usize, &k(key), Some(at), ExpireCond::Always)
                    .unwrap();
                let cur = live(&m, d as usize, &k(key), now);
                prop_assert_eq!(r, cur.is_some());
                if let Some(c) = cur {
                    if at <= now {
                        m[d as usize].remove(&k(key));
                    } else {
                        m[d as usize].insert(k(key), (c.0, Some(at)));
                    }
                }
            }
            Op::Persist(d, key) => {
                let r = e.expire(d as usize, &k(key), None, ExpireCond::Xx).unwrap();
                let cur = live(&m, d as usize, &k(key), now);
                prop_assert_eq!(r, cur.as_ref().is_some_and(|c| c.1.is_some()));
                if let Some(c) = cur {
                    m[d as usize].insert(k(key), (c.0, None));
                }
            }
            Op::Tick(t) => {
                clock.fetch_add(t, Ordering::Relaxed);
            }
            Op::FlushDb(d) => {
                e.flush_db(d as usize).unwrap();
                m[d as usize].clear();
            }
            Op::SwapDb(a, b) => {
                e.swap_db(a as usize, b as usize).unwrap();
                m.swap(a as usize, b as usize);
            }
            Op::Reopen => {
                drop(e);
                e = open(dir.path(), &clock);
            }
            Op::Clean(chunk, limit) => {
                e.sync().unwrap();
                e.set_memory_pressure(true);
                let mut steps = 0;
                while limit.is_none_or(|n| steps < u32::from(n))
                    && e.clean_step(chunk as usize).unwrap()
                {
                    steps += 1;
                    prop_assert!(steps < 10_000, "the cleaner never settles");
                }
                e.set_memory_pressure(false);
            }
            Op::Checkpoint => {
                e.checkpoint().unwrap();
            }
            Op::Sweep => {
                e.expire_step(1 << 20);
                // Every expired key is gone from DBSIZE without anyone reading it.
                for (db, mdb) in m.iter().enumerate() {
                    let want = mdb.values().filter(|v| v.1.is_none_or(|t| t > now)).count() as u64;
                    prop_assert_eq!(e.len(db), want, "dbsize of db {} after the sweep", db);
                }
            }
        }
        let now = clock.load(Ordering::Relaxed);
        check(&e, &m, now);
        for (db, mdb) in m.iter().enumerate() {
            let want = mdb.values().filter(|v| v.1.is_none_or(|t| t > now)).count() as u64;
            // check() just read every key, which removes expired ones: DBSIZE is exact now.
            prop_assert_eq!(e.len(db), want, "dbsize of db {}", db);
        }
    }
    drop(e);
    let e = open(dir.path(), &clock);
    check(&e, &m, clock.load(Ordering::Relaxed));
    Ok(())
}

/// Recovery at a scale where the replay buckets records by hash (thousands of keys, each
/// written several times, some deleted, some expired): the reopened store equals the model.
#[test]
fn recovery_of_many_keys_keeps_the_newest_record_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000));
    let mut m: HashMap<Vec<u8>, (Vec<u8>, Option<u64>)> = HashMap::new();
    {
        let e = open(dir.path(), &clock);
        for round in 0..3u32 {
            for i in 0..20_000u32 {
                let key = format!("k{i}").into_bytes();
                match (i + round) % 7 {
                    0 => {
                        e.delete(1, &key).unwrap();
                        m.remove(&key);
                    }
                    1 => {
                        let t = 1_000 + u64::from(i % 100);
                        let opts = SetOptions {
                            expiry: SetExpiry::At(t),
                            ..Default::default()
                        };
                        e.set(1, &key, b"short-lived", opts).unwrap();
                        m.insert(key, (b"short-lived".to_vec(), Some(t)));
                    }
                    _ => {
                        let v = format!("{round}:{i}").into_bytes();
                        e.set(1, &key, &v, SetOptions::default()).unwrap();
                        m.insert(key, (v, None));
                    }
                }
            }
        }
    }
    clock.store(1_050, Ordering::Relaxed);
    let now = 1_050;
    let e = open(dir.path(), &clock);
    let live: HashMap<_, _> = m
        .into_iter()
        .filter(|(_, v)| v.1.is_none_or(|t| t > now))
        .collect();
    assert_eq!(e.len(1), live.len() as u64);
    for i in 0..20_000u32 {
        let key = format!("k{i}").into_bytes();
        assert_eq!(
            e.read(1, &key, |c| (c.value.to_vec(), c.expire_at)),
            live.get(&key).cloned(),
            "k{i}"
        );
    }
}

/// SCAN of a small database finishes in one step (cursor 0, as Redis answers), and a scan of a
/// big one ends with cursor 0 and returns every key, in steps of about COUNT keys.
#[test]
fn scan_steps_are_about_count_keys_and_end_with_cursor_zero() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_000));
    let e = open(dir.path(), &clock);
    for i in 0..5u32 {
        e.set(
            0,
            format!("small{i}").as_bytes(),
            b"v",
            SetOptions::default(),
        )
        .unwrap();
    }
    let mut n = 0;
    assert_eq!(e.scan(0, 0, 10, |_| n += 1), 0);
    assert_eq!(n, 5);
    for i in 0..20_000u32 {
        e.set(1, format!("big{i}").as_bytes(), b"v", SetOptions::default())
            .unwrap();
    }
    let (mut seen, mut steps, mut cursor) = (std::collections::HashSet::new(), 0, 0);
    loop {
        cursor = e.scan(1, cursor, 100, |k| {
            seen.insert(k.to_vec());
        });
        steps += 1;
        if cursor == 0 {
            break;
        }
        assert_ne!(cursor, u64::MAX);
    }
    assert_eq!(seen.len(), 20_000);
    assert!(
        (100..=400).contains(&steps),
        "{steps} steps of COUNT 100 for 20000 keys"
    );
}
