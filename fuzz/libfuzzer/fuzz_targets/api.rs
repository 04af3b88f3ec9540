//! libFuzzer entry for the `api` target (see `hangar_fuzz::api`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hangar_fuzz::api::run(data));
