//! Root trusts only files that only root could have written: a configuration, updater
//! state or journal left writable by others, or owned by another user, is refused
//! before anything acts on it (a planted `restart_command` would run as root).

use std::fs;
use std::os::unix::fs::PermissionsExt;

mod common;
use common::{ctl, ok, p, text};

fn installed() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    ok(ctl(&["install", "--root", p(&root)]));
    (dir, root)
}

#[test]
fn a_configuration_others_can_write_is_refused() {
    let (_dir, root) = installed();
    let config = root.join("install/bulletproof.toml");
    ok(ctl(&["status", "--root", p(&root)]));
    fs::write(&config, "restart_command = [\"/bin/sh\", \"-c\", \"id\"]\n").unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o666)).unwrap();
    let out = ctl(&["rollback", "--root", p(&root)]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("refusing") && said.contains("0666"), "{said}");

    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&config, Some(65534), Some(65534)).unwrap();
    let said = text(&ctl(&["rollback", "--root", p(&root)]));
    assert!(said.contains("owned by uid 65534"), "{said}");
}

#[test]
fn updater_state_in_a_group_writable_directory_is_refused() {
    let (_dir, root) = installed();
    ok(ctl(&["status", "--root", p(&root)]));
    let install = root.join("install");
    let mode = fs::metadata(&install).unwrap().permissions().mode();
    fs::set_permissions(&install, fs::Permissions::from_mode(mode | 0o020)).unwrap();
    let out = ctl(&["status", "--root", p(&root)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("refusing"), "{}", text(&out));
}

#[test]
fn a_fifo_in_place_of_the_state_is_refused_without_hanging() {
    let (_dir, root) = installed();
    let state = root.join("install/state.json");
    let _ = fs::remove_file(&state);
    let made = std::process::Command::new("mkfifo")
        .arg(&state)
        .status()
        .unwrap();
    assert!(made.success());
    // A blocking open of the FIFO would never return; the test harness would time out.
    let out = ctl(&["status", "--root", p(&root)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not a regular file"), "{}", text(&out));
}
