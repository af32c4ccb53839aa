//! The checks of the fuzz targets `release_meta` and `release_archive` (`fuzz/`), here
//! so the corpus replay test runs them without libFuzzer.

use crate::checksums;
use crate::extract::{self, Budget};

/// `checksums.txt` and the trusted comment, as hostile text: never a panic, and what
/// parses is what the format allows.
pub fn check_release_meta(data: &[u8]) {
    if let Ok(files) = checksums::parse(data) {
        for (name, _) in &files {
            assert!(!name.contains('/') && !name.starts_with('.') && !name.is_empty());
        }
        let again =
            checksums::parse(checksums::format(&files).as_bytes()).expect("own output parses");
        assert_eq!(again, files);
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(claim) = checksums::parse_release_comment(&text) {
        let version = claim.version.to_string();
        let _ = checksums::parse_version(&version);
        let _ = checksums::bundle_files(&version);
    }
}

/// A hostile archive (raw tar bytes) extracted into a fresh directory: never a panic,
/// and nothing ever lands outside that directory.
pub fn check_release_archive(data: &[u8]) {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let dest = scratch.path().join("tree");
    let outside = scratch.path().join("outside");
    std::fs::create_dir(&dest).expect("mkdir");
    std::fs::create_dir(&outside).expect("mkdir");
    let budget = Budget::new(8 << 20, 10_000);
    let _ = extract::extract(data, &dest, &budget);
    let mut names: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("readable")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["outside", "tree"],
        "extraction wrote beside its directory"
    );
    assert!(
        std::fs::read_dir(&outside)
            .expect("readable")
            .next()
            .is_none(),
        "extraction wrote outside its directory"
    );
}
