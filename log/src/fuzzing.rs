//! The checks behind the `record` and `recovery` fuzz targets (`fuzz/fuzz_targets/`), shared
//! with the corpus-replay test `tests/fuzz_corpus.rs`, which runs them on stable in the normal
//! test suite. They use only the crate's public API. Not part of the log's API.

use std::path::{Path, PathBuf};

use crate::inspect::{self, Item};
use crate::record::{self, DONE, HEADER_LEN, LEN_MASK, RecordSpec, RecordView, Scanned};
use crate::segment::{SEGMENT_HEADER_LEN, SegmentHeader, UNIT, segment_file_name};
use crate::{FsyncPolicy, Kind, Log, LogConfig, LogError, WriterKind};

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr_range(), inner.as_ptr_range());
    o.start <= i.start && i.end <= o.end
}

/// Checks a view decoded from `rec` (a record's `length` bytes, or its body) lies inside it.
fn check_view(rec: &[u8], v: &RecordView<'_>) {
    assert!(
        within(rec, v.key) && within(rec, v.value),
        "view outside the record"
    );
    assert!(v.key.len() + v.value.len() + 8 <= rec.len());
    // The value runs to the end of the record.
    assert_eq!(v.value.as_ptr_range().end, rec.as_ptr_range().end);
}

/// `record::scan`, `decode_verified`, `decode_body` and `commit_word` on arbitrary bytes: no
/// panic, every view inside the input, a scan step that always advances and never past the
/// input, and a record that scans decodes the same through every entry point and re-encodes to
/// a record that scans back to it. Also encodes a record built from the input and checks that it
/// scans back and that no prefix of it scans as a record.
pub fn check_record(data: &[u8]) {
    let w = record::commit_word(data);
    assert_eq!(w.is_some(), data.len() >= 4);
    match record::scan(data) {
        Ok(Scanned::Record(v, n)) => {
            let len = (w.unwrap() & LEN_MASK) as usize;
            assert!(w.unwrap() & DONE != 0);
            assert!((HEADER_LEN..=n).contains(&len) && n <= data.len() && n <= record::pad(len));
            let rec = &data[..len];
            check_view(rec, &v);
            assert_eq!(record::decode_verified(rec), Some(v));
            assert_eq!(record::decode_body(&rec[4..]), Some(v));
            round_trip(&v);
        }
        Ok(Scanned::Invalid(n)) => assert!(n >= HEADER_LEN && n <= data.len()),
        Ok(Scanned::End) => assert!(w.is_none() || w == Some(DONE)),
        Err(_) => {}
    }
    if let Some(v) = record::decode_verified(data) {
        check_view(data, &v);
    }
    if let Some(v) = record::decode_body(data) {
        check_view(data, &v);
    }
    // A record made from the input: kind, keyspace, expiry and key length from its first bytes.
    if let [k, ks, flags, rest @ ..] = data {
        let key_len = match flags >> 6 {
            0 => 0,
            1 => usize::from(flags & 0x3f),
            2 => 255 + usize::from(flags & 0x3f),
            _ => rest.len() / 2,
        }
        .min(rest.len());
        let expire_at = (flags & 0x20 != 0).then_some(u64::from(*ks) << 40 | u64::from(*k));
        let spec = RecordSpec {
            kind: Kind::from_u8(k % 4 + 1).unwrap(),
            keyspace: ks & 15,
            key: &rest[..key_len],
            value: &rest[key_len..],
            expire_at,
        };
        let bytes = spec.encode();
        let len = spec.encoded_len();
        match record::scan(&bytes) {
            Ok(Scanned::Record(v, n)) => {
                assert_eq!(n, bytes.len());
                assert_eq!(
                    (v.kind, v.keyspace, v.key, v.value, v.expire_at),
                    (
                        spec.kind,
                        spec.keyspace,
                        spec.key,
                        spec.value,
                        spec.expire_at
                    )
                );
            }
            other => panic!("an encoded record scanned as {other:?}"),
        }
        for cut in 0..len {
            assert!(
                !matches!(record::scan(&bytes[..cut]), Ok(Scanned::Record(..))),
                "a record cut at {cut} of {len} bytes scanned as valid"
            );
        }
    }
}

fn round_trip(v: &RecordView<'_>) {
    let spec = RecordSpec {
        kind: v.kind,
        keyspace: v.keyspace,
        key: v.key,
        value: v.value,
        expire_at: v.expire_at,
    };
    let bytes = spec.encode();
    match record::scan(&bytes) {
        Ok(Scanned::Record(w, _)) => assert_eq!(&w, v),
        other => panic!("a re-encoded record scanned as {other:?}"),
    }
}

/// A scratch data directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // In memory where possible: recovery syncs the directory, slow on a real disk.
        let shm = Path::new("/dev/shm");
        let root = if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = root.join(format!("segkv-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A record as recovery or inspect saw it: address, kind, keyspace, key, value, expiry.
type Seen = (u64, Kind, u8, Vec<u8>, Vec<u8>, Option<u64>);

fn seen(addr: u64, v: &RecordView<'_>) -> Seen {
    (
        addr,
        v.kind,
        v.keyspace,
        v.key.to_vec(),
        v.value.to_vec(),
        v.expire_at,
    )
}

/// Writes segment files made from `data` into a scratch directory and opens it with the
/// read-only inspect API and with `Log::open` (recovery), twice. Neither may panic or hang;
/// errors are fine. When recovery succeeds: addresses ascend, every record reads back through
/// `Log::read`, a clean recovery sees exactly what inspect sees, and a second open finds the
/// same records and nothing left to cut.
///
/// Input: byte 0 flags (bit 0 `recover_corrupt`; bit 1 a second file at base `UNIT`; bit 2 the
/// first file is raw bytes, without a header written for it; bit 3 the same for the second
/// file; bits 4-5 the capacity the written headers claim: 4096, `UNIT`, the file's size, or the
/// next 8 bytes); bytes 1-2 where the second file's bytes start (LE u16); the rest is file bytes.
pub fn check_recovery(data: &[u8]) {
    let [flags, s0, s1, rest @ ..] = data else {
        return;
    };
    let (capacity, rest) = match flags >> 4 & 3 {
        0 => (Some(4096), rest),
        1 => (Some(UNIT), rest),
        2 => (None, rest),
        _ if rest.len() >= 8 => (
            Some(u64::from_le_bytes(rest[..8].try_into().unwrap())),
            &rest[8..],
        ),
        _ => (Some(0), rest),
    };
    let split = usize::from(u16::from_le_bytes([*s0, *s1])).min(rest.len());
    let mut files = vec![(0, flags & 4 != 0, rest)];
    if flags & 2 != 0 {
        files = vec![
            (0, flags & 4 != 0, &rest[..split]),
            (UNIT, flags & 8 != 0, &rest[split..]),
        ];
    }
    let scratch = Scratch::new();
    for (base, raw, bytes) in files {
        let mut f = Vec::new();
        if !raw {
            let header = SegmentHeader {
                base,
                capacity: capacity.unwrap_or(SEGMENT_HEADER_LEN + bytes.len() as u64),
                created_ms: 1,
            };
            f.extend_from_slice(&header.encode());
        }
        f.extend_from_slice(bytes);
        std::fs::write(scratch.0.join(segment_file_name(base)), f).expect("write a segment");
    }
    let inspected = inspect_dir(&scratch.0);
    let recover_corrupt = flags & 1 != 0;
    let Ok((first, report)) = open(&scratch.0, recover_corrupt) else {
        return;
    };
    if report.truncated.is_none()
        && report.skipped.is_empty()
        && let Ok(inspected) = inspected
    {
        assert_eq!(first, inspected, "recovery and inspect disagree");
    }
    let (second, report2) = open(&scratch.0, recover_corrupt).expect("a recovered log opens again");
    assert_eq!(first, second, "a second recovery found other records");
    assert_eq!(
        report2.truncated, None,
        "a second recovery cut the log again"
    );
}

/// Every record the inspect API finds in `dir`, after checking what it reports is in bounds.
fn inspect_dir(dir: &Path) -> Result<Vec<Seen>, LogError> {
    let files = inspect::segment_files(dir)?;
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let later_has_data = files[i + 1..].iter().any(|f| f.starts_with_valid_record());
        let seg = f.load()?;
        let mut next = SEGMENT_HEADER_LEN;
        for item in seg.items(later_has_data) {
            let (offset, padded) = match item {
                Item::Record {
                    offset,
                    padded,
                    view,
                } => {
                    assert!(within(&seg.data[offset as usize..], view.key));
                    assert!(within(&seg.data[offset as usize..], view.value));
                    out.push(seen(f.base + offset, &view));
                    (offset, padded)
                }
                Item::Invalid { offset, padded } => (offset, padded),
                Item::Damaged { offset, .. } => (offset, 4),
            };
            assert!(
                offset >= next && padded > 0,
                "inspect went backwards or stood still"
            );
            assert!(
                offset as usize + padded <= seg.data.len(),
                "item past the end of the file"
            );
            next = offset + padded as u64;
        }
    }
    Ok(out)
}

fn open(dir: &Path, recover_corrupt: bool) -> Result<(Vec<Seen>, crate::RecoveryReport), LogError> {
    let cfg = LogConfig {
        dir: dir.to_path_buf(),
        segment_size: 4096,
        fsync: FsyncPolicy::No,
        writer: WriterKind::Pwrite,
        recover_corrupt,
        replay_from: 0,
        reopen_tail: false,
    };
    let mut recs = Vec::new();
    let (log, report) = Log::open(cfg, |addr, v| recs.push(seen(addr, &v)))?;
    assert!(
        recs.windows(2).all(|w| w[0].0 < w[1].0),
        "records not in address order"
    );
    let g = crate::epoch::pin();
    for r in &recs {
        let v = log.read(r.0, &g).expect("a recovered record reads back");
        assert_eq!(
            seen(r.0, &v),
            *r,
            "a recovered record reads back differently"
        );
    }
    drop(g);
    log.close()?;
    Ok((recs, report))
}

/// Deterministic mutations of `seeds` for the corpus-replay tests: `count` inputs made by
/// flipping, overwriting, inserting, deleting, duplicating and splicing bytes, each passed to `f`.
pub fn mutants(seeds: &[Vec<u8>], count: usize, mut f: impl FnMut(&[u8])) {
    let mut rng = 0x5eed_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..count {
        let mut m = seeds[i % seeds.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = if m.is_empty() {
                0
            } else {
                next() as usize % m.len()
            };
            match next() % 7 {
                0 if !m.is_empty() => m[at] ^= 1 << (next() % 8),
                1 if !m.is_empty() => {
                    m[at] = [0, 0xff, b'\r', b'\n', b'*', b'$', b'0', b'9'][next() as usize % 8]
                }
                2 => m.insert(at, next() as u8),
                3 if !m.is_empty() => {
                    let n = (next() as usize % 16).min(m.len() - at);
                    m.drain(at..at + n);
                }
                4 if !m.is_empty() => {
                    let n = (next() as usize % 16).min(m.len() - at);
                    let piece = m[at..at + n].to_vec();
                    m.splice(at..at, piece);
                }
                5 => {
                    let other = &seeds[next() as usize % seeds.len()];
                    let from = next() as usize % (other.len() + 1);
                    m.truncate(at);
                    m.extend_from_slice(&other[from..]);
                }
                _ if !m.is_empty() => m.truncate(at),
                _ => {}
            }
        }
        f(&m);
    }
}
