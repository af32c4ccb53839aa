//! Fuzz target: minisign public key and signature text (what `--public-key`, `.minisig`
//! files, the service's signature store and the `X-Bulletproof-Signature` header carry).
//! Must never panic, and nothing may verify under a key nobody holds (see
//! `integrity_trust::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integrity_trust::fuzzing::check_key_and_signature_text(data);
});
