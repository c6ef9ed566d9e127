#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nepxy_tests::fuzzing::tmoney_signature_headers(data));
