//! `scan_path`: the engine's scan of one path below a root, as the guard's targeted
//! checks and the agent's watch mode use it.

use integrity_common::{scan_path, EntryKind, ScanOutput};
use std::os::unix::fs::symlink;

fn paths(output: &ScanOutput) -> Vec<String> {
    let entries = output.entries.iter().map(|e| &e.path);
    let errors = output.errors.iter().map(|e| &e.path);
    entries
        .chain(errors)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

#[test]
fn scan_path_records_a_subtree_one_entry_or_nothing_and_never_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    std::fs::create_dir_all(tmp.path().join("core/d")).unwrap();
    std::fs::write(tmp.path().join("core/d/f"), b"x").unwrap();
    symlink(outside.path(), tmp.path().join("core/link")).unwrap();
    let root = tmp.path();

    let subtree = scan_path(root, b"/core/d", false).unwrap();
    assert_eq!(paths(&subtree), ["/core/d", "/core/d/f"]);
    assert_eq!(subtree.entries[1].size, Some(1));

    let one = scan_path(root, b"/core/d/f", false).unwrap();
    assert_eq!(paths(&one), ["/core/d/f"]);
    assert!(scan_path(root, b"/core/missing", false)
        .unwrap()
        .entries
        .is_empty());

    // The symlink is an entry; what is behind it is an error, never read.
    let link = scan_path(root, b"/core/link", false).unwrap();
    assert_eq!(link.entries[0].kind, EntryKind::Symlink);
    let through = scan_path(root, b"/core/link/secret", false).unwrap();
    assert!(through.entries.is_empty());
    assert_eq!(paths(&through), ["/core/link/secret"]);
}
