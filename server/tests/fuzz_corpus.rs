//! The `resp` fuzz target's check (`segkv_server::fuzzing::check_resp`) on stable, in the normal
//! test suite: the checked-in corpus (`fuzz/corpus/resp/`, seeds and inputs that once failed)
//! and a few thousand deterministic mutations of it. `fuzz/run.sh` runs the real fuzzer.

use std::path::Path;

use segkv_server::fuzzing::check_resp;

#[test]
fn resp_parser_survives_corpus_and_mutations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/resp");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no corpus in {}", dir.display());
    seeds.iter().for_each(|s| check_resp(s));
    segkv_log::fuzzing::mutants(&seeds, 100_000, check_resp);
}
