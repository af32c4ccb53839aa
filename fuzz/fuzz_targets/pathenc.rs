//! Fuzz target: the byte-path encoding round-trips and is one-to-one.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integrity_common::fuzzing::check_path_encoding(data);
});
