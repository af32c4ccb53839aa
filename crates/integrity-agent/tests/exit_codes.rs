//! The one-shot exit status is AIDE's bitmask (REFERENCE §3–4): 1 added, 2 deleted, 4 changed
//! of any kind (content, type or metadata), 0 clean. Every combination of drift is
//! planted for real on a tree and checked against a baseline file: the status is the OR
//! of the bits, so drift is 1–7 and never reads as an error (14+).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");

/// The agent's first error code: drift must stay below it.
const FIRST_ERROR: i32 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drift {
    Added,
    Deleted,
    /// Content modified, or (when `kind_change`) the entry's type changed.
    Changed,
    MetadataChanged,
}

impl Drift {
    const ALL: [Drift; 4] = [
        Drift::Added,
        Drift::Deleted,
        Drift::Changed,
        Drift::MetadataChanged,
    ];

    fn bit(self) -> i32 {
        match self {
            Drift::Added => 1,
            Drift::Deleted => 2,
            Drift::Changed | Drift::MetadataChanged => 4,
        }
    }
}

/// A tree with one path for each kind of drift to happen to.
fn golden(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for sub in ["etc", "srv", "usr/bin"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    fs::write(root.join("etc/stays"), "unchanged\n").unwrap();
    fs::write(root.join("etc/goes"), "to be deleted\n").unwrap();
    fs::write(root.join("etc/content"), "original\n").unwrap();
    fs::write(root.join("usr/bin/kind"), "a file, for now\n").unwrap();
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    root
}

/// The baseline of `root`, made with the engine (the collector's own code path).
fn collect(root: &Path, out: &Path) {
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
    let baseline = integrity_common::Baseline {
        image_id: "img-exit".to_owned(),
        timestamp: "2026-12-01T07:00:00Z".to_owned(),
        entries: scanned.entries,
        errors: scanned.errors,
        policy: None,
    };
    fs::write(out, baseline.to_json_bytes()).unwrap();
}

fn plant(root: &Path, drift: Drift, kind_change: bool) {
    match drift {
        Drift::Added => fs::write(root.join("srv/backdoor"), "nc -l\n").unwrap(),
        Drift::Deleted => fs::remove_file(root.join("etc/goes")).unwrap(),
        Drift::Changed if kind_change => {
            fs::remove_file(root.join("usr/bin/kind")).unwrap();
            symlink("/etc/shadow", root.join("usr/bin/kind")).unwrap();
        }
        Drift::Changed => fs::write(root.join("etc/content"), "tampered\n").unwrap(),
        Drift::MetadataChanged => {
            fs::set_permissions(
                root.join("usr/bin/tool"),
                fs::Permissions::from_mode(0o4755),
            )
            .unwrap();
        }
    }
}

/// The anomaly kinds the report names for `drift` (planted with `kind_change`).
fn reported_kind(drift: Drift, kind_change: bool) -> &'static str {
    match drift {
        Drift::Added => "added",
        Drift::Deleted => "deleted",
        Drift::Changed if kind_change => "type_changed",
        Drift::Changed => "modified",
        Drift::MetadataChanged => "metadata_changed",
    }
}

fn check(root: &Path, baseline: &Path) -> Output {
    Command::new(AGENT)
        .args(["--once", "--format", "json", "--baseline"])
        .arg(baseline)
        .arg("--root")
        .arg(root)
        .env_remove("IMAGE_ID")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The sorted anomaly kinds of a JSON report.
fn kinds(output: &Output) -> Vec<String> {
    let mut kinds: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value
                .get("anomaly")
                .map(|kind| kind.as_str().unwrap().to_owned())
        })
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn every_combination_of_drift_exits_with_the_or_of_its_bits() {
    let dir = tempfile::tempdir().unwrap();
    let golden_dir = dir.path().join("golden");
    fs::create_dir(&golden_dir).unwrap();
    let root = golden(&golden_dir);
    let baseline = dir.path().join("baseline.json");
    collect(&root, &baseline);

    let clean = check(&root, &baseline);
    assert_eq!(clean.status.code(), Some(0), "{}", said(&clean));
    assert!(kinds(&clean).is_empty(), "{}", said(&clean));

    for subset in 1u32..16 {
        let planted: Vec<Drift> = Drift::ALL
            .into_iter()
            .enumerate()
            .filter(|(bit, _)| subset >> bit & 1 == 1)
            .map(|(_, drift)| drift)
            .collect();
        // "Changed" alternates between a content change and a type change, so both
        // are covered alone and together with every other kind.
        for kind_change in [false, true] {
            if kind_change && !planted.contains(&Drift::Changed) {
                continue;
            }
            let case = dir.path().join(format!("case-{subset}-{kind_change}"));
            fs::create_dir(&case).unwrap();
            let root = golden(&case);
            for &drift in &planted {
                plant(&root, drift, kind_change);
            }
            let output = check(&root, &baseline);
            let expected = planted.iter().fold(0, |bits, drift| bits | drift.bit());
            let what = format!("{planted:?} (type change: {kind_change})");
            assert_eq!(
                output.status.code(),
                Some(expected),
                "{what}: {}",
                said(&output)
            );
            assert!(
                (1..FIRST_ERROR).contains(&expected) && expected < 8,
                "{what}: drift {expected} must read as drift, not as an error"
            );
            let mut expected_kinds: Vec<String> = planted
                .iter()
                .map(|&drift| reported_kind(drift, kind_change).to_owned())
                .collect();
            expected_kinds.sort();
            assert_eq!(kinds(&output), expected_kinds, "{what}: {}", said(&output));
        }
    }
}

/// The largest drift (everything at once) is 7, far from the first error code, and an
/// error is still told apart from it.
#[test]
fn all_drift_at_once_is_seven_and_errors_stay_fourteen_and_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, &baseline);
    for drift in Drift::ALL {
        plant(&root, drift, false);
    }
    // A type change and a content change on top: still bit 4.
    plant(&root, Drift::Changed, true);
    let output = check(&root, &baseline);
    assert_eq!(output.status.code(), Some(7), "{}", said(&output));

    let missing = check(&root, &dir.path().join("no-such-baseline.json"));
    assert_eq!(missing.status.code(), Some(15), "{}", said(&missing));
    fs::write(dir.path().join("bad.json"), "{").unwrap();
    let invalid = check(&root, &dir.path().join("bad.json"));
    assert_eq!(invalid.status.code(), Some(16), "{}", said(&invalid));
}
