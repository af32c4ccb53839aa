//! Replays the `request_body` fuzz corpus (`fuzz/corpus/request_body/`) with the fuzz
//! target's own checks, so plain `cargo test` keeps every input libFuzzer ever found
//! interesting passing. `valid-*` seeds must be storable, `invalid-*` refused.

use metadata_service::fuzzing::check_request_body;
use std::path::Path;

#[test]
fn request_body_corpus_keeps_its_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/request_body");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("fuzz corpus {} missing: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let (mut valid, mut invalid) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let stored = check_request_body(&std::fs::read(path).unwrap());
        if name.starts_with("valid-") {
            assert!(stored, "{name} must be storable");
            valid += 1;
        } else if name.starts_with("invalid-") {
            assert!(!stored, "{name} must be refused");
            invalid += 1;
        }
    }
    assert!(valid >= 5 && invalid >= 5, "hand-written seeds missing");
}

/// The `host_report` corpus (`fuzz/corpus/host_report/`): `valid-*` reports are
/// accepted, `invalid-*` refused, and nothing panics.
#[test]
fn host_report_corpus_keeps_its_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/host_report");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("fuzz corpus {} missing: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let (mut valid, mut invalid) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let accepted = metadata_service::fuzzing::check_host_report(&std::fs::read(path).unwrap());
        if name.starts_with("valid-") {
            assert!(accepted, "{name} must be accepted");
            valid += 1;
        } else if name.starts_with("invalid-") {
            assert!(!accepted, "{name} must be refused");
            invalid += 1;
        }
    }
    assert!(valid >= 5 && invalid >= 5, "hand-written seeds missing");
}
