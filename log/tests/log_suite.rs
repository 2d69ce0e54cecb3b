//! The log suite: each test runs against both flush writers (io_uring and pwrite).

mod common;
use common::*;
use segkv_log::epoch::pin;
use segkv_log::{FsyncPolicy, Kind, LogError, RecordSpec};
use std::sync::Arc;

#[test]
fn appended_records_are_readable_at_once_and_after_reopen() {
    for w in WRITERS {
        let dir = tempfile::tempdir().unwrap();
        let (log, recs, _) = open(cfg(dir.path(), w, 16 << 10, FsyncPolicy::EverySec)).unwrap();
        assert!(recs.is_empty());
        let mut addrs = Vec::new();
        for i in 0..1000u32 {
            let a = put(
                &log,
                format!("key{i}").as_bytes(),
                &i.to_le_bytes().repeat(i as usize % 20),
            );
            let g = pin();
            let v = log.read(a, &g).unwrap();
            assert_eq!(v.key, format!("key{i}").as_bytes());
            addrs.push(a);
        }
        assert!(addrs.windows(2).all(|w| w[0] < w[1]), "addresses grow");
        assert!(
            log.segment_count() > 1,
            "16 KiB segments must have rolled over"
        );
        drop(log);
        let (_log, recs, rep) = open(cfg(dir.path(), w, 16 << 10, FsyncPolicy::EverySec)).unwrap();
        assert_eq!(recs.len(), 1000, "{w:?}");
        assert_eq!(rep.truncated, None);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.addr, addrs[i]);
            assert_eq!(r.key, format!("key{i}").as_bytes());
            assert_eq!(r.value, (i as u32).to_le_bytes().repeat(i % 20));
        }
    }
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() {
    for w in WRITERS {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(cfg(dir.path(), w, 4096, FsyncPolicy::No)).unwrap();
        put(&log, b"small", b"x");
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let a = put(&log, b"big", &big);
        put(&log, b"after", b"y");
        assert_eq!(log.read(a, &pin()).unwrap().value, &big[..]);
        drop(log);
        let (_log, recs, _) = open(cfg(dir.path(), w, 4096, FsyncPolicy::No)).unwrap();
        let keys: Vec<&[u8]> = recs.iter().map(|r| &r.key[..]).collect();
        assert_eq!(keys, vec![&b"small"[..], b"big", b"after"]);
        assert_eq!(recs[1].value, big);
    }
}

#[test]
fn aborted_records_are_skipped_by_recovery() {
    for w in WRITERS {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(cfg(dir.path(), w, 1 << 20, FsyncPolicy::Always)).unwrap();
        put(&log, b"a", b"1");
        {
            let g = pin();
            let p = log
                .append(
                    &RecordSpec {
                        kind: Kind::Put,
                        keyspace: 0,
                        key: b"b",
                        value: b"2",
                        expire_at: None,
                    },
                    &g,
                )
                .unwrap();
            p.abort();
            let p2 = log
                .append(
                    &RecordSpec {
                        kind: Kind::Put,
                        keyspace: 0,
                        key: b"c",
                        value: b"3",
                        expire_at: None,
                    },
                    &g,
                )
                .unwrap();
            drop(p2); // dropped without commit: invalid too
        }
        put(&log, b"d", b"4");
        log.sync().unwrap();
        drop(log);
        let (_log, recs, rep) = open(cfg(dir.path(), w, 1 << 20, FsyncPolicy::Always)).unwrap();
        let keys: Vec<&[u8]> = recs.iter().map(|r| &r.key[..]).collect();
        assert_eq!(keys, vec![&b"a"[..], b"d"]);
        assert_eq!(rep.invalid_records, 2);
    }
}

#[test]
fn concurrent_appenders_lose_nothing_across_segments() {
    for w in WRITERS {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(cfg(dir.path(), w, 16 << 10, FsyncPolicy::No)).unwrap();
        let log = Arc::new(log);
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..5000u32 {
                        let key = [&[t][..], &i.to_le_bytes()].concat();
                        let a = put(&log, &key, &vec![t; (i % 97) as usize]);
                        assert_eq!(log.read(a, &pin()).unwrap().key, &key[..]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(Arc::try_unwrap(log).unwrap());
        let (_log, recs, _) = open(cfg(dir.path(), w, 16 << 10, FsyncPolicy::No)).unwrap();
        assert_eq!(recs.len(), 8 * 5000);
        let mut per_thread = [0u32; 8];
        for r in &recs {
            let t = r.key[0] as usize;
            let i = u32::from_le_bytes(r.key[1..5].try_into().unwrap());
            assert_eq!(
                i, per_thread[t],
                "each writer's records recover in its own order"
            );
            assert_eq!(r.value, vec![t as u8; (i % 97) as usize]);
            per_thread[t] += 1;
        }
    }
}

#[test]
fn always_makes_each_write_durable_before_wait_returns() {
    for w in WRITERS {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(cfg(dir.path(), w, 1 << 20, FsyncPolicy::Always)).unwrap();
        let before = log.fsyncs();
        for i in 0..20u32 {
            let a = put(&log, &i.to_le_bytes(), b"v");
            let tail = log.tail_addr();
            assert!(tail > a);
            log.wait_durable(tail).unwrap();
            assert!(log.durable_addr() >= tail);
        }
        assert!(log.fsyncs() > before, "fsyncs were issued");
        // Copy the files while the log is still open: what a crash would leave.
        let crashed = copy_dir(dir.path());
        let (_l2, recs, _) = open(cfg(crashed.path(), w, 1 << 20, FsyncPolicy::Always)).unwrap();
        assert_eq!(recs.len(), 20);
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _, _) = open(cfg(dir.path(), WRITERS[0], 1 << 20, FsyncPolicy::No)).unwrap();
    match open(cfg(dir.path(), WRITERS[0], 1 << 20, FsyncPolicy::No)) {
        Err(LogError::Locked(p)) => assert_eq!(p, dir.path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
}
