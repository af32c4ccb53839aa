//! Fuzz target: what the agent does with a (hostile) service's answer to
//! `GET /baselines/{id}` — status, `ETag`, `Content-Encoding`, `Content-Length` and body
//! — through the client's bounded read, gzip, the ETag check, the check of the cached
//! copy and the one validator. Must never panic, never read or buffer past its limit,
//! and never hand on bytes that do not match their ETag (see
//! `integrity_client::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integrity_client::fuzzing::check_service_response(data);
});
