#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nepxy_tests::fuzzing::momo_callback_token(data));
