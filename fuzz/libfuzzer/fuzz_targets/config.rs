//! libFuzzer entry for the `config` target (see `hangar_fuzz::config`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hangar_fuzz::config::run(data));
