//! Fuzz target: the metadata service's request body parsers (`POST /baselines`,
//! `PUT /baselines/{id}/signature`) on hostile bytes. Must never panic; what is accepted
//! must keep the store's invariants (see `metadata_service::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    metadata_service::fuzzing::check_request_body(data);
});
