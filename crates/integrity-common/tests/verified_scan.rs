//! The engine's incremental scan (DESIGN §14): with a verified state, a file in the
//! recorded kernel state is not read again; any change the kernel records (content,
//! even with size and mtime put back; mode; owner; another inode at the path) makes
//! it read again; files changed in the last seconds before a check are not recorded.

use integrity_common::verified::{Binding, VerifiedState};
use integrity_common::{scan_verified, ScanOptions, ScanProgress, Sha256Digest, Verify};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A scan of `root` using `known`, recording as if the check started `later` seconds
/// from now (files just written count as settled).
fn check(root: &Path, known: Option<&VerifiedState>, later: i64) -> integrity_common::ScanOutput {
    let mut options = ScanOptions::new(root);
    options.exclusions = integrity_common::Exclusions::none();
    scan_verified(
        &options,
        &ScanProgress::default(),
        Verify {
            known,
            record_before: Some((now() + later, 0)),
        },
    )
    .unwrap()
}

fn state_of(output: &integrity_common::ScanOutput) -> VerifiedState {
    VerifiedState {
        binding: Binding {
            host_id: "h".into(),
            baseline: Sha256Digest::of(b"b"),
            root: b"/".to_vec(),
        },
        last_full: 0,
        entries: output.verified.clone(),
    }
}

fn digest_of(output: &integrity_common::ScanOutput, path: &str) -> Option<Sha256Digest> {
    output
        .entries
        .iter()
        .find(|entry| &*entry.path == path.as_bytes())
        .and_then(|entry| entry.sha256)
}

#[test]
fn unchanged_files_are_not_read_and_every_kernel_visible_change_is() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for name in ["a", "b", "c", "d"] {
        std::fs::write(root.join(name), format!("content {name}")).unwrap();
    }
    let first = check(root, None, 10);
    assert_eq!(first.rehashed, 4);
    assert_eq!(first.verified.len(), 4);
    let state = state_of(&first);

    let again = check(root, Some(&state), 10);
    assert_eq!(again.rehashed, 0, "nothing changed: nothing read");
    assert_eq!(
        again.entries, first.entries,
        "the same entries, digests from the state"
    );

    // Same size, mtime put back: ctime moved, so it is read again and its new digest
    // is the true one.
    let path = root.join("a");
    let before = std::fs::metadata(&path).unwrap();
    std::fs::write(&path, "CONTENT a").unwrap();
    set_mtime(&path, (before.mtime(), before.mtime_nsec()));
    assert_eq!(std::fs::metadata(&path).unwrap().mtime(), before.mtime());
    // chmod of another, and a rename of a same-sized file over a third.
    std::fs::set_permissions(
        root.join("b"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(root.join("new-c"), "CONTENT c").unwrap();
    std::fs::rename(root.join("new-c"), root.join("c")).unwrap();
    let changed = check(root, Some(&state), 10);
    assert_eq!(
        changed.rehashed, 3,
        "a (content), b (ctime of chmod), c (another inode)"
    );
    assert_eq!(
        digest_of(&changed, "/a"),
        Some(Sha256Digest::of(b"CONTENT a"))
    );
    assert_eq!(
        digest_of(&changed, "/c"),
        Some(Sha256Digest::of(b"CONTENT c"))
    );
    assert_eq!(digest_of(&changed, "/d"), digest_of(&first, "/d"));
}

#[test]
fn files_changed_just_before_a_check_are_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fresh"), "x").unwrap();
    // The check starts at the file's ctime: within the settle time.
    let ctime = {
        let meta = std::fs::metadata(dir.path().join("fresh")).unwrap();
        (meta.ctime(), meta.ctime_nsec() as u32)
    };
    let mut options = ScanOptions::new(dir.path());
    options.exclusions = integrity_common::Exclusions::none();
    let output = scan_verified(
        &options,
        &ScanProgress::default(),
        Verify {
            known: None,
            record_before: Some(ctime),
        },
    )
    .unwrap();
    assert_eq!(output.rehashed, 1);
    assert!(output.verified.is_empty(), "{:?}", output.verified);
}

/// Sets a file's mtime (and atime) with `touch -d @SECS.NANOS`.
fn set_mtime(path: &Path, (secs, nanos): (i64, i64)) {
    let status = std::process::Command::new("touch")
        .arg("-m")
        .arg("-d")
        .arg(format!("@{secs}.{nanos:09}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}
