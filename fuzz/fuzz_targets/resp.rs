//! The RESP request parser on arbitrary bytes, cut into arbitrary reads, with an arbitrary bulk
//! length limit: see `segkv_server::fuzzing::check_resp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| segkv_server::fuzzing::check_resp(data));
