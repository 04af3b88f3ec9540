//! libFuzzer entry for the `webhook` target (see `hangar_fuzz::webhook`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hangar_fuzz::webhook::run(data));
