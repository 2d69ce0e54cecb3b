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
