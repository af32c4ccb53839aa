//! Fuzz target: manifest parsing and validation on hostile bytes. Must never panic;
//! whatever parses must satisfy the invariants (see `integrity_common::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integrity_common::fuzzing::check_manifest_bytes(data);
});
