//! Crash and corruption: a torn tail is cut at every byte offset, garbage after the last record
//! is truncated, a bad record in the middle is an error naming file and offset.

mod common;
use common::*;
use segkv_log::segment::{UNIT_SHIFT, segment_file_name};
use segkv_log::{FsyncPolicy, Kind, LogError, RecordSpec};
use std::path::Path;

fn spec(i: u32) -> (Vec<u8>, Vec<u8>) {
    (
        format!("key-{i}").into_bytes(),
        vec![b'a' + (i % 26) as u8; (i as usize * 7) % 61],
    )
}

/// Writes `n` records, syncs, closes; returns (addr, encoded_len) of each.
fn write_log(dir: &Path, w: segkv_log::WriterKind, n: u32) -> Vec<(u64, usize)> {
    let (log, _, _) = open(cfg(dir, w, 4096, FsyncPolicy::Always)).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let (k, v) = spec(i);
        let a = put(&log, &k, &v);
        let len = RecordSpec {
            kind: Kind::Put,
            keyspace: 0,
            key: &k,
            value: &v,
            expire_at: None,
        }
        .encoded_len();
        out.push((a, len));
    }
    log.sync().unwrap();
    drop(log);
    out
}

fn seg_path(dir: &Path, addr: u64) -> std::path::PathBuf {
    dir.join(segment_file_name(addr >> UNIT_SHIFT << UNIT_SHIFT))
}

#[test]
fn recovery_keeps_every_complete_record_at_every_cut_of_the_tail() {
    for w in WRITERS {
        let src = tempfile::tempdir().unwrap();
        let recs = write_log(src.path(), w, 120);
        let (last_addr, _) = *recs.last().unwrap();
        let base = last_addr >> UNIT_SHIFT << UNIT_SHIFT;
        let in_last: Vec<(usize, u64, usize)> = recs
            .iter()
            .enumerate()
            .filter(|(_, (a, _))| *a >> UNIT_SHIFT << UNIT_SHIFT == base)
            .map(|(i, (a, l))| (i, a - base, *l))
            .collect();
        assert!(
            in_last.len() >= 3,
            "need several records in the last segment"
        );
        let from = in_last[in_last.len() - 3].1;
        let (last_i, last_off, last_len) = *in_last.last().unwrap();
        let end = last_off + last_len as u64;
        for cut in from..=end {
            let d = copy_dir(src.path());
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(seg_path(d.path(), last_addr))
                .unwrap();
            f.set_len(cut).unwrap();
            drop(f);
            let (_log, got, rep) = open(cfg(d.path(), w, 4096, FsyncPolicy::No)).unwrap();
            let complete = in_last
                .iter()
                .filter(|(_, off, len)| off + *len as u64 <= cut)
                .count();
            let want = recs.len() - in_last.len() + complete;
            assert_eq!(got.len(), want, "cut at {cut}: {rep:?}");
            for (i, r) in got.iter().enumerate() {
                let (k, v) = spec(i as u32);
                assert_eq!((r.key.clone(), r.value.clone()), (k, v));
            }
            if cut == end {
                assert_eq!(got.len(), last_i + 1);
            }
        }
    }
}

#[test]
fn garbage_after_the_last_record_is_truncated_and_writing_goes_on() {
    for w in WRITERS {
        let src = tempfile::tempdir().unwrap();
        let recs = write_log(src.path(), w, 50);
        let (last_addr, last_len) = *recs.last().unwrap();
        let path = seg_path(src.path(), last_addr);
        let end = (last_addr & ((1 << UNIT_SHIFT) - 1)) + last_len as u64;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(end.next_multiple_of(4) as usize);
        // Something that looks like a commit word with a plausible length, then noise.
        bytes.extend_from_slice(&(0x8000_0040u32).to_le_bytes());
        bytes.extend((0..300u32).map(|i| (i * 31 + 7) as u8));
        std::fs::write(&path, &bytes).unwrap();
        let (log, got, rep) = open(cfg(src.path(), w, 4096, FsyncPolicy::No)).unwrap();
        assert_eq!(got.len(), 50);
        assert!(rep.truncated.is_some(), "{rep:?}");
        put(&log, b"after", b"restart");
        drop(log);
        let (_log, got, rep) = open(cfg(src.path(), w, 4096, FsyncPolicy::No)).unwrap();
        assert_eq!(got.len(), 51);
        assert_eq!(got[50].key, b"after");
        assert!(rep.truncated.is_none());
    }
}

#[test]
fn a_bad_record_in_the_middle_is_an_error_naming_file_and_offset() {
    let src = tempfile::tempdir().unwrap();
    let recs = write_log(src.path(), WRITERS[0], 200);
    let (victim, _) = recs[5];
    let path = seg_path(src.path(), victim);
    let off = victim & ((1 << UNIT_SHIFT) - 1);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[off as usize + 14] ^= 0x40; // inside the key
    std::fs::write(&path, &bytes).unwrap();
    match open(cfg(src.path(), WRITERS[0], 4096, FsyncPolicy::No)) {
        Err(LogError::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, off);
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|(_, r, _)| r.len())),
    }
    let mut c = cfg(src.path(), WRITERS[0], 4096, FsyncPolicy::No);
    c.recover_corrupt = true;
    let (_log, got, rep) = open(c).unwrap();
    assert_eq!(got.len(), 199, "every good record is kept");
    assert_eq!(rep.skipped.len(), 1);
    assert!(got.iter().all(|r| r.key != b"key-5"));
}

/// A segment file written by format version 1, checked in: the format cannot change by accident.
#[test]
fn the_checked_in_v1_segment_still_reads() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let d = copy_dir(&fixture);
    let (_log, got, rep) = open(cfg(d.path(), WRITERS[0], 4096, FsyncPolicy::No)).unwrap();
    assert_eq!(rep.truncated, None);
    let want = fixture_records();
    assert_eq!(got.len(), want.len());
    for (r, (kind, ks, k, v, t)) in got.iter().zip(want) {
        assert_eq!(
            (r.kind, r.ks, &r.key[..], &r.value[..], r.expire_at),
            (kind, ks, &k[..], &v[..], t)
        );
    }
    assert_eq!(
        got[0].addr, 64,
        "first record right after the 64-byte segment header"
    );
}

#[test]
fn the_checked_in_corrupt_v1_segment_is_refused() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-corrupt");
    let d = copy_dir(&fixture);
    match open(cfg(d.path(), WRITERS[0], 4096, FsyncPolicy::No)) {
        Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, 64),
        other => panic!("expected Corrupt, got {:?}", other.map(|(_, r, _)| r.len())),
    }
}

type FixtureRec = (Kind, u8, Vec<u8>, Vec<u8>, Option<u64>);

fn fixture_records() -> Vec<FixtureRec> {
    vec![
        (Kind::Put, 0, b"hello".to_vec(), b"world".to_vec(), None),
        (
            Kind::Put,
            3,
            b"ttl".to_vec(),
            b"value with expiry".to_vec(),
            Some(4_102_444_800_000),
        ),
        (Kind::Put, 0, vec![b'k'; 300], b"wide key".to_vec(), None),
        (Kind::Delete, 0, b"hello".to_vec(), Vec::new(), None),
        (Kind::FlushKeyspace, 5, Vec::new(), Vec::new(), None),
        (Kind::SwapDb, 0, Vec::new(), vec![1, 2], None),
    ]
}

/// Regenerates the fixtures (run by hand with `--ignored` only if the format is meant to change,
/// which it is not: add a v2 fixture instead).
#[test]
#[ignore]
fn regenerate_fixtures() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let d = tempfile::tempdir().unwrap();
    {
        let (log, _, _) = open(cfg(d.path(), WRITERS[0], 4096, FsyncPolicy::Always)).unwrap();
        let g = segkv_log::epoch::pin();
        for (kind, ks, k, v, t) in fixture_records() {
            log.append(
                &RecordSpec {
                    kind,
                    keyspace: ks,
                    key: &k,
                    value: &v,
                    expire_at: t,
                },
                &g,
            )
            .unwrap()
            .commit();
        }
        drop(g);
        log.sync().unwrap();
    }
    let seg = d.path().join(segment_file_name(0));
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes.truncate(end.next_multiple_of(4));
    std::fs::create_dir_all(out.join("v1")).unwrap();
    std::fs::create_dir_all(out.join("v1-corrupt")).unwrap();
    std::fs::write(out.join("v1").join(segment_file_name(0)), &bytes).unwrap();
    bytes[64 + 12] ^= 0x01; // first record's key
    std::fs::write(out.join("v1-corrupt").join(segment_file_name(0)), &bytes).unwrap();
}
