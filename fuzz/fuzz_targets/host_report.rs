//! Fuzz target: `POST /reports` bodies (host reports, REFERENCE §7) on hostile bytes.
//! Must never panic; what is accepted round-trips (see `metadata_service::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    metadata_service::fuzzing::check_host_report(data);
});
