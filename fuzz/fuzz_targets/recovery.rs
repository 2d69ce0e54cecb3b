//! Recovery and the read-only inspect API on segment files made from arbitrary bytes: see
//! `segkv_log::fuzzing::check_recovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| segkv_log::fuzzing::check_recovery(data));
