//! What the agent's test binaries share.

use std::path::Path;

/// The baseline of `root` for `image_id`, made by the collector's code path (the
/// engine's scan with its default exclusions).
pub fn baseline(root: &Path, image_id: &str) -> Vec<u8> {
    let scanned = integrity_common::scan(
        &integrity_common::ScanOptions {
            root: root.to_owned(),
            exclusions: integrity_common::Exclusions::defaults(),
            cross_filesystems: false,
            policy: None,
        },
        &integrity_common::ScanProgress::default(),
    )
    .unwrap();
    integrity_common::Baseline {
        image_id: image_id.to_owned(),
        timestamp: "2026-11-23T07:31:43Z".to_owned(),
        entries: scanned.entries,
        errors: scanned.errors,
        policy: None,
    }
    .to_json_bytes()
}
