//! Replays the `release_meta` and `release_archive` fuzz corpora (`fuzz/corpus/`) with
//! the fuzz targets' own checks, so plain `cargo test` keeps every input libFuzzer found
//! interesting passing.

use std::path::Path;

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("fuzz corpus {} missing: {err}", dir.display()))
    {
        let entry = entry.unwrap();
        inputs.push((
            entry.file_name().to_string_lossy().into_owned(),
            std::fs::read(entry.path()).unwrap(),
        ));
    }
    inputs
}

#[test]
fn release_meta_corpus_keeps_its_invariants() {
    let inputs = corpus("release_meta");
    assert!(inputs.len() >= 2, "seeds missing");
    for (_, bytes) in &inputs {
        bulletproofctl::fuzzing::check_release_meta(bytes);
    }
}

#[test]
fn release_archive_corpus_keeps_its_invariants() {
    let inputs = corpus("release_archive");
    assert!(inputs.len() >= 8, "seeds missing");
    for (name, bytes) in &inputs {
        bulletproofctl::fuzzing::check_release_archive(bytes);
        // The hostile seeds are refused, the real core archive is accepted.
        let dir = tempfile::tempdir().unwrap();
        let budget = bulletproofctl::extract::Budget::new(1 << 30, 100_000);
        let result = bulletproofctl::extract::extract(bytes.as_slice(), dir.path(), &budget);
        match name.as_str() {
            "seed-core.tar" | "seed-longname.tar" => {
                assert!(result.is_ok(), "{name}: {:?}", result.err())
            }
            name if name.starts_with("seed-") => assert!(result.is_err(), "{name} accepted"),
            _ => {}
        }
    }
}
