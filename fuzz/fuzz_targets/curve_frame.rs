#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| curve_tgt_fuzz::curve_frame::run(data));
