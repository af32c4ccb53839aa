//! Replays the `agent_response` fuzz corpus (`fuzz/corpus/agent_response/`) with the
//! fuzz target's own checks, so plain `cargo test` keeps every input libFuzzer ever
//! found interesting passing. Hand-written seeds: `valid-*` must give a usable
//! baseline, `invalid-*` must not, `seed-304*` are revalidations.

use integrity_client::fuzzing::{check_service_response, Outcome};
use std::path::Path;

#[test]
fn agent_response_corpus_keeps_its_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/agent_response");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("fuzz corpus {} missing: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    // Seeds whose outcome is more precise than "not used".
    let exact = [
        ("invalid-500", Outcome::Retry),
        ("invalid-truncated", Outcome::Retry),
        ("invalid-404", Outcome::Refused),
        ("invalid-etag-mismatch", Outcome::Refused),
        ("invalid-gzip-bomb", Outcome::Refused),
        ("invalid-plain-over-limit", Outcome::Refused),
        ("invalid-length-over-limit", Outcome::Refused),
        ("invalid-zstd", Outcome::Refused),
        ("invalid-not-a-baseline", Outcome::NotABaseline),
    ];
    let (mut valid, mut invalid) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let outcome = check_service_response(&std::fs::read(path).unwrap());
        if let Some((_, expected)) = exact.iter().find(|(seed, _)| *seed == name) {
            assert_eq!(outcome, *expected, "{name}");
        }
        if name.starts_with("valid-") {
            assert_eq!(outcome, Outcome::Baseline, "{name}");
            valid += 1;
        } else if name.starts_with("invalid-") {
            assert_ne!(outcome, Outcome::Baseline, "{name} must not be used");
            invalid += 1;
        } else if name.starts_with("seed-304") {
            assert_eq!(outcome, Outcome::NotModified, "{name}");
        }
    }
    assert!(valid >= 5 && invalid >= 10, "hand-written seeds missing");
}
