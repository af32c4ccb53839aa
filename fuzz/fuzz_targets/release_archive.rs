#![no_main]
//! A release archive's tar stream through bulletproofctl's safe extractor.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bulletproofctl::fuzzing::check_release_archive(data);
});
