#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| curve_tgt_fuzz::text_negotiate::run(data));
