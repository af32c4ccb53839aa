//! Replays the committed fuzz corpora (`fuzz/corpus/`) with the fuzz targets' own checks,
//! so plain `cargo test` keeps every input libFuzzer ever found interesting passing.
//! Hand-written seeds say what they must do: `valid-*` (`seed-valid-*` for policies)
//! parse, `invalid-*` (`seed-invalid-*`) are refused.

use integrity_common::fuzzing::{check_manifest_bytes, check_path_encoding, check_policy};
use std::fs;
use std::path::{Path, PathBuf};

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("fuzz corpus {} missing: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz corpus {} is empty", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn manifest_corpus_keeps_its_invariants() {
    let files = corpus("manifest");
    let (mut valid, mut invalid) = (0, 0);
    for (name, bytes) in &files {
        let parsed = check_manifest_bytes(bytes);
        if name.starts_with("valid-") {
            assert!(parsed.is_some(), "{name} must parse");
            valid += 1;
        } else if name.starts_with("invalid-") {
            assert!(parsed.is_none(), "{name} must be refused");
            invalid += 1;
        }
    }
    assert!(valid >= 5 && invalid >= 10, "hand-written seeds missing");
}

#[test]
fn pathenc_corpus_round_trips() {
    for (_, bytes) in corpus("pathenc") {
        check_path_encoding(&bytes);
    }
}

#[test]
fn policy_corpus_keeps_its_invariants() {
    let files = corpus("policy");
    let (mut valid, mut invalid) = (0, 0);
    for (name, bytes) in &files {
        let parsed = check_policy(bytes);
        if name.starts_with("seed-valid-") {
            assert!(parsed.is_some(), "{name} must parse");
            valid += 1;
        } else if name.starts_with("seed-invalid-") {
            assert!(parsed.is_none(), "{name} must be refused");
            invalid += 1;
        }
    }
    assert!(valid >= 5 && invalid >= 10, "hand-written seeds missing");
    // The seed is a copy; the built-in policy itself is checked as it is now.
    assert!(
        check_policy(integrity_common::policy::CLOUD_DEFAULT_TOML.as_bytes()).is_some(),
        "the built-in policy must pass the policy checks"
    );
}
