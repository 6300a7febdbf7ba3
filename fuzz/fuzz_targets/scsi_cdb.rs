#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| curve_tgt_fuzz::scsi_cdb::run(data));
