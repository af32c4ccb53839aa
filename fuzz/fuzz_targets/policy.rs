//! Fuzz target: the TOML policy parser on hostile text. Must never panic; a policy that
//! parses must round-trip through a manifest as JSON and answer path questions
//! consistently (see `integrity_common::fuzzing::check_policy`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integrity_common::fuzzing::check_policy(data);
});
