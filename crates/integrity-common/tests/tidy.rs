//! House rules, checked by plain `cargo test`: every Rust file opens with a `//!`
//! module doc, no trailing whitespace, no ignored tests, no placeholders.

use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn house_rules_hold() {
    let root = workspace_root();
    let mut files = Vec::new();
    for top in ["crates", "fuzz"] {
        if root.join(top).is_dir() {
            rust_files(&root.join(top), &mut files);
        }
    }
    assert!(files.len() > 5, "found only {files:?}");
    // Spelled in pieces so this file does not trip its own checks.
    let forbidden = [
        concat!("#[", "ignore"),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("should", "_panic"),
    ];
    let mut problems = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(&root).unwrap_or(file).display();
        if !text.starts_with("//!") && !text.starts_with("#![") {
            problems.push(format!("{shown}: does not open with a //! module doc"));
        }
        for (idx, line) in text.lines().enumerate() {
            if line.ends_with(' ') || line.ends_with('\t') {
                problems.push(format!("{shown}:{}: trailing whitespace", idx + 1));
            }
            for needle in forbidden {
                if line.contains(needle) {
                    problems.push(format!("{shown}:{}: {needle}", idx + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// ARCHITECTURE.md: the binaries that run on every machine never link the service's stack.
#[test]
fn fleet_binaries_do_not_link_the_service_stack() {
    for package in ["integrity-collector", "integrity-client", "integrity-agent"] {
        let output = std::process::Command::new(env!("CARGO"))
            .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
            .args(["--offline", "--locked"])
            .current_dir(workspace_root())
            .output()
            .expect("cargo tree");
        assert!(
            output.status.success(),
            "cargo tree -p {package}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let tree = String::from_utf8_lossy(&output.stdout);
        for forbidden in ["axum", "sled", "tokio", "hyper"] {
            assert!(
                !tree
                    .lines()
                    .any(|line| line.split(' ').next() == Some(forbidden)),
                "{package} depends on {forbidden}:\n{tree}"
            );
        }
    }
}
