//! The record decoder (`scan`, `decode_verified`, `decode_body`, `commit_word`) on arbitrary
//! bytes: see `segkv_log::fuzzing::check_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| segkv_log::fuzzing::check_record(data));
