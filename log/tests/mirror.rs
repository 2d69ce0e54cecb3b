//! Replication at the log level: a primary's log read with `read_stream` and appended to a
//! replica's with `mirror_segment` / `mirror_append` gives the same segment files, byte for
//! byte, and the same records at the same addresses (shifted by a delta), whatever happens on
//! the primary meanwhile: appends from several threads, aborted records, records larger than a
//! segment, early seals (`roll`), retired segments, restarts of the replica (`reopen_tail`).

mod common;

use common::*;
use proptest::prelude::*;
use segkv_log::segment::{SEGMENT_HEADER_LEN, UNIT, segment_file_name};
use segkv_log::{FsyncPolicy, Kind, Log, Stream, WriterKind};

/// Copies everything the primary has written from `cursor` on; returns the new cursor.
fn pump(primary: &Log, replica: &Log, mut cursor: u64, delta: u64) -> u64 {
    let mut data = Vec::new();
    loop {
        data.clear();
        match primary.read_stream(cursor, 4 << 10, &mut data) {
            (Stream::Segment(mut h), next) => {
                h.base += delta;
                replica.mirror_segment(h).unwrap();
                cursor = next;
            }
            (Stream::Data(addr), next) => {
                replica
                    .mirror_append(addr + delta, &data, |_, _| Ok(()))
                    .unwrap();
                cursor = next;
            }
            (Stream::Wait, _) => return cursor,
            (Stream::Gone, _) => panic!("cursor {cursor:#x} is gone"),
        }
    }
}

/// Every segment file of the primary equals the replica's at base + delta, byte for byte,
/// except the two header fields that name the base (the base and the header's checksum).
/// Segments without a record are left out: recovery deletes them on either side.
fn same_files(pdir: &std::path::Path, rdir: &std::path::Path, delta: u64) {
    for (base, path) in segkv_log::list_segments(pdir).unwrap() {
        let p = std::fs::read(&path).unwrap();
        if p.len() as u64 == SEGMENT_HEADER_LEN {
            continue;
        }
        let r = std::fs::read(rdir.join(segment_file_name(base + delta))).unwrap_or_else(|e| {
            panic!(
                "segment {base:#x} (delta {delta:#x}): {e}; primary {:x?}, replica {:x?}",
                segkv_log::list_segments(pdir).unwrap(),
                segkv_log::list_segments(rdir).unwrap()
            )
        });
        assert_eq!(p.len(), r.len(), "segment {base:#x}: length");
        assert_eq!(&p[..16], &r[..16], "segment {base:#x}: header");
        assert_eq!(&p[24..60], &r[24..60], "segment {base:#x}: header");
        assert!(p[64..] == r[64..], "segment {base:#x}: records differ");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize),
    Abort(u8),
    Big,
    Roll,
    Pump,
    RestartReplica,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), 0usize..3000).prop_map(|(k, n)| Op::Put(k, n)),
        1 => any::<u8>().prop_map(Op::Abort),
        1 => Just(Op::Big),
        1 => Just(Op::Roll),
        3 => Just(Op::Pump),
        1 => Just(Op::RestartReplica),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_mirrored_log_is_a_byte_copy(ops in prop::collection::vec(op(), 1..60), shift in 0u64..3) {
        let pd = tempfile::tempdir().unwrap();
        let rd = tempfile::tempdir().unwrap();
        let seg = 16 << 10;
        let (primary, _, _) = open(cfg(pd.path(), WriterKind::Pwrite, seg, FsyncPolicy::No)).unwrap();
        let mut rcfg = cfg(rd.path(), WriterKind::Pwrite, seg, FsyncPolicy::No);
        rcfg.reopen_tail = true;
        let (mut replica, _, _) = open(rcfg.clone()).unwrap();
        replica.set_mirroring(true);
        // The replica's own (empty) first segment is below everything it copies.
        let delta = replica.active_next_base() + shift * UNIT;
        let mut cursor = primary.first_base();
        for op in ops {
            match op {
                Op::Put(k, n) => {
                    put(&primary, &[k], &vec![k; n]);
                }
                Op::Abort(k) => {
                    put_aborted(&primary, &[k], b"aborted");
                }
                Op::Big => {
                    put(&primary, b"big", &vec![7u8; 40 << 10]);
                }
                Op::Roll => primary.roll().unwrap(),
                Op::Pump => {
                    primary.sync().unwrap();
                    cursor = pump(&primary, &replica, cursor, delta);
                }
                Op::RestartReplica => {
                    replica.close().unwrap();
                    drop(replica);
                    let (r, _, _) = open(rcfg.clone()).unwrap();
                    r.set_mirroring(true);
                    replica = r;
                    // It resumes where its log ends (an empty last segment is gone at a
                    // restart: the one before it ends where the primary's next begins).
                    let tail = replica.tail_addr();
                    cursor = if tail >= delta + SEGMENT_HEADER_LEN {
                        tail - delta
                    } else {
                        primary.first_base()
                    };
                    prop_assert!(primary.holds_position(cursor), "{cursor:#x}");
                }
            }
        }
        primary.sync().unwrap();
        cursor = pump(&primary, &replica, cursor, delta);
        prop_assert_eq!(cursor, primary.written_addr());
        primary.close().unwrap();
        replica.close().unwrap();
        drop(primary);
        drop(replica);
        same_files(pd.path(), rd.path(), delta);
        // Both replay to the same records, at the same addresses (shifted).
        let (_, precs, _) = open(cfg(pd.path(), WriterKind::Pwrite, seg, FsyncPolicy::No)).unwrap();
        let (_, rrecs, _) = open(cfg(rd.path(), WriterKind::Pwrite, seg, FsyncPolicy::No)).unwrap();
        let shifted: Vec<Rec> = precs.into_iter().map(|mut r| { r.addr += delta; r }).collect();
        prop_assert_eq!(shifted, rrecs);
    }
}

#[test]
fn retired_segments_reach_the_stream_as_retire_records_and_the_hold_keeps_them() {
    let pd = tempfile::tempdir().unwrap();
    let (primary, _, _) = open(cfg(
        pd.path(),
        WriterKind::Pwrite,
        16 << 10,
        FsyncPolicy::No,
    ))
    .unwrap();
    for i in 0..100u32 {
        put(&primary, &i.to_le_bytes(), &[1u8; 1000]);
    }
    primary.roll().unwrap();
    primary.sync().unwrap();
    let first = primary.first_base();
    // A replica still reading the first segment holds it.
    primary.set_retire_hold(first + SEGMENT_HEADER_LEN);
    assert_eq!(primary.retire(first).unwrap(), 0);
    assert!(primary.holds_position(first + SEGMENT_HEADER_LEN));
    primary.set_retire_hold(u64::MAX);
    let tail = primary.tail_addr();
    assert!(primary.retire(first).unwrap() > 0);
    assert!(!primary.holds_position(first + SEGMENT_HEADER_LEN));
    let mut data = Vec::new();
    assert_eq!(
        primary
            .read_stream(first + SEGMENT_HEADER_LEN, 1 << 20, &mut data)
            .0,
        Stream::Gone
    );
    // The Retire record follows, naming the segment.
    primary.sync().unwrap();
    let mut found = false;
    let mut cursor = tail;
    loop {
        data.clear();
        match primary.read_stream(cursor, 1 << 20, &mut data) {
            (Stream::Data(_), next) => {
                let mut p = 0;
                while p < data.len() {
                    match segkv_log::record::scan(&data[p..]).unwrap() {
                        segkv_log::record::Scanned::Record(r, len) => {
                            if r.kind == Kind::Retire {
                                assert_eq!(r.value, first.to_le_bytes());
                                found = true;
                            }
                            p += len;
                        }
                        segkv_log::record::Scanned::Invalid(len) => p += len,
                        segkv_log::record::Scanned::End => break,
                    }
                }
                cursor = next;
            }
            (Stream::Segment(_), next) => cursor = next,
            _ => break,
        }
    }
    assert!(found, "no Retire record after the retirement");
}

#[test]
fn a_mirror_refuses_bytes_that_do_not_fit_or_are_damaged() {
    let pd = tempfile::tempdir().unwrap();
    let rd = tempfile::tempdir().unwrap();
    let (primary, _, _) =
        open(cfg(pd.path(), WriterKind::Pwrite, 1 << 20, FsyncPolicy::No)).unwrap();
    let (replica, _, _) =
        open(cfg(rd.path(), WriterKind::Pwrite, 1 << 20, FsyncPolicy::No)).unwrap();
    replica.set_mirroring(true);
    put(&primary, b"k", b"v");
    primary.sync().unwrap();
    let delta = replica.active_next_base();
    let mut data = Vec::new();
    let (s, next) = primary.read_stream(primary.first_base(), 1 << 20, &mut data);
    let Stream::Segment(mut h) = s else {
        panic!("{s:?}")
    };
    // A segment below the replica's own is refused.
    let mut low = h;
    low.base = 0;
    assert!(replica.mirror_segment(low).is_err());
    h.base += delta;
    replica.mirror_segment(h).unwrap();
    let (s, _) = primary.read_stream(next, 1 << 20, &mut data);
    let Stream::Data(addr) = s else {
        panic!("{s:?}")
    };
    // Not at the tail.
    assert!(
        replica
            .mirror_append(addr + delta + 4, &data, |_, _| Ok(()))
            .is_err()
    );
    // A flipped bit fails its checksum; a cut record is partial.
    let mut bad = data.clone();
    let last = bad.len() - 5;
    bad[last] ^= 1;
    assert!(
        replica
            .mirror_append(addr + delta, &bad, |_, _| Ok(()))
            .is_err()
    );
    assert!(
        replica
            .mirror_append(addr + delta, &data[..data.len() - 4], |_, _| Ok(()))
            .is_err()
    );
    // Nothing was taken: the good bytes still go at the tail.
    let mut seen = Vec::new();
    replica
        .mirror_append(addr + delta, &data, |a, r| {
            seen.push((a, r.key.to_vec()));
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, vec![(addr + delta, b"k".to_vec())]);
}

/// A replica's segment whose file still holds its preallocated zeros (its tail never reached
/// the disk: not finished) ahead of later segments, as a crash can leave a copy whose later
/// segments were written straight to their files: recovery cuts the log where that segment's
/// data ends and removes the later ones (they are copied again), instead of replaying past a
/// hole. A primary's log keeps them (its flusher never writes a segment before the one
/// ahead of it is finished).
#[test]
fn a_replica_copy_is_cut_after_a_segment_that_was_not_finished() {
    for replica_mode in [true, false] {
        let pd = tempfile::tempdir().unwrap();
        let rd = tempfile::tempdir().unwrap();
        let seg = 16 << 10;
        let (primary, _, _) =
            open(cfg(pd.path(), WriterKind::Pwrite, seg, FsyncPolicy::No)).unwrap();
        let mut rcfg = cfg(rd.path(), WriterKind::Pwrite, seg, FsyncPolicy::No);
        rcfg.reopen_tail = true;
        let (replica, _, _) = open(rcfg.clone()).unwrap();
        replica.set_mirroring(true);
        let delta = replica.active_next_base();
        let mut addrs = Vec::new();
        for i in 0..60u32 {
            addrs.push(put(&primary, format!("k{i}").as_bytes(), &[i as u8; 900]));
        }
        primary.sync().unwrap();
        pump(&primary, &replica, primary.first_base(), delta);
        replica.sync().unwrap();
        replica.close().unwrap();
        drop(replica);
        // The second copied segment loses its last record and gets its zeros back.
        let files = segkv_log::list_segments(rd.path()).unwrap();
        let copied: Vec<_> = files.iter().filter(|(b, _)| *b >= delta).collect();
        assert!(copied.len() >= 3, "{copied:?}");
        let (sbase, spath) = copied[1];
        let in_s: Vec<u64> = addrs
            .iter()
            .map(|a| a + delta)
            .filter(|a| a >> 26 << 26 == *sbase)
            .collect();
        let cut = *in_s.last().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(spath).unwrap();
        f.set_len(cut - sbase).unwrap();
        f.set_len(seg).unwrap();
        drop(f);
        rcfg.reopen_tail = replica_mode;
        let (log, recs, _) = open(rcfg.clone()).unwrap();
        let last = recs.iter().map(|r| r.addr).max().unwrap();
        if replica_mode {
            assert!(
                last < cut,
                "records past the cut replayed: {last:#x} >= {cut:#x}"
            );
            assert_eq!(log.tail_addr(), cut);
            assert!(
                segkv_log::list_segments(rd.path())
                    .unwrap()
                    .iter()
                    .all(|(b, _)| b <= sbase)
            );
        } else {
            assert!(last > cut, "a primary's later segments stay");
        }
    }
}
