#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nepxy_tests::fuzzing::thunes_payload(data));
