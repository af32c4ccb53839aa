//! Replays the `minisign` fuzz corpus (`fuzz/corpus/minisign/`) with the fuzz target's
//! own checks, so plain `cargo test` keeps every input libFuzzer found interesting
//! passing.

use std::path::Path;

#[test]
fn minisign_corpus_keeps_its_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/minisign");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("fuzz corpus {} missing: {err}", dir.display()))
    {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        integrity_trust::fuzzing::check_key_and_signature_text(&bytes);
        count += 1;
    }
    assert!(count >= 4, "seeds missing");
    // The seed key parses (the corpus exercises the real formats, not only garbage).
    let key = std::fs::read_to_string(dir.join("seed-public-key")).unwrap();
    integrity_trust::parse_public_key(&key).unwrap();
}
