//! The fuzz targets' checks (`segkv_log::fuzzing`) on stable, in the normal test suite: the
//! checked-in corpus (`fuzz/corpus/<target>/`, seeds and inputs that once failed) and a few
//! thousand deterministic mutations of it. `fuzz/run.sh` runs the real fuzzers.

use std::path::Path;

use segkv_log::fuzzing::{check_record, check_recovery, mutants};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no corpus in {}", dir.display());
    seeds
}

#[test]
fn record_decoder_survives_corpus_and_mutations() {
    let seeds = corpus("record");
    seeds.iter().for_each(|s| check_record(s));
    mutants(&seeds, 100_000, check_record);
}

#[test]
fn recovery_survives_corpus_and_mutations() {
    let seeds = corpus("recovery");
    seeds.iter().for_each(|s| check_recovery(s));
    mutants(&seeds, 1_500, check_recovery);
}

/// Inputs the recovery fuzzer broke recovery with (also in the corpus): segment headers whose
/// CRC is good but whose capacity is impossible. Each must be refused as corruption at offset 0.
mod recovery_regressions {
    use segkv_log::segment::{SegmentHeader, UNIT, segment_file_name};
    use segkv_log::{FsyncPolicy, Log, LogConfig, LogError, WriterKind};

    const FIXTURE: &[u8] = include_bytes!("fixtures/v1/0000000000000000.seg");

    /// Writes segments (base, claimed capacity, records) and opens the directory.
    fn open(segments: &[(u64, u64, &[u8])]) -> Result<u64, LogError> {
        let dir = tempfile::tempdir().unwrap();
        for &(base, capacity, records) in segments {
            let header = SegmentHeader {
                base,
                capacity,
                created_ms: 1,
            };
            let mut f = header.encode().to_vec();
            f.extend_from_slice(records);
            std::fs::write(dir.path().join(segment_file_name(base)), f).unwrap();
        }
        let mut cfg = LogConfig::new(dir.path());
        cfg.fsync = FsyncPolicy::No;
        cfg.writer = WriterKind::Pwrite;
        cfg.segment_size = 4096;
        let mut n = 0;
        let (log, _) = Log::open(cfg, |_, _| n += 1)?;
        log.close()?;
        Ok(n)
    }

    fn assert_corrupt_header(r: Result<u64, LogError>, why: &str) {
        match r {
            Err(LogError::Corrupt {
                offset: 0, why: w, ..
            }) if w.contains(why) => {}
            other => panic!("expected a corrupt header ({why}), got {other:?}"),
        }
    }

    #[test]
    fn the_fixture_recovers() {
        assert_eq!(open(&[(0, 4096, &FIXTURE[64..])]).unwrap(), 6);
    }

    /// Was: `base + units * UNIT` overflowed (a panic with overflow checks).
    #[test]
    fn capacity_past_the_address_space_is_corrupt() {
        assert_corrupt_header(
            open(&[(0, u64::MAX, &FIXTURE[64..])]),
            "impossible segment capacity",
        );
    }

    /// Was: the segment table was grown to 2^37 entries (out of memory).
    #[test]
    fn huge_capacity_is_corrupt() {
        assert_corrupt_header(
            open(&[(0, 1 << 63, &FIXTURE[64..])]),
            "impossible segment capacity",
        );
    }

    /// Was: recovery accepted a segment overlapping the next one; records of the next one were
    /// then looked up in the wrong segment, so `Log::read` of a recovered address failed.
    #[test]
    fn overlapping_segments_are_corrupt() {
        let r = open(&[
            (0, 1 << 30, &FIXTURE[64..128]),
            (UNIT, 4096, &FIXTURE[128..]),
        ]);
        assert_corrupt_header(r, "overlaps the next one");
    }

    #[test]
    fn file_longer_than_its_capacity_is_corrupt() {
        assert_corrupt_header(
            open(&[(0, 128, &FIXTURE[64..])]),
            "longer than its capacity",
        );
    }
}
