#![no_main]
//! `checksums.txt` and a release signature's trusted comment (bulletproofctl).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bulletproofctl::fuzzing::check_release_meta(data);
});
