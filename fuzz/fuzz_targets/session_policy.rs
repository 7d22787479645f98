#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storage_grants::fuzzing::session_policy(data));
