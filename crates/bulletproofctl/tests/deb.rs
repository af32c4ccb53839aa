//! The .deb, for real on this machine (CI machines are disposable; run as root): built
//! by scripts/deb, `lintian`-checked, installed with `dpkg -i` (postinst lays out
//! /opt/omniscient and makes the customer key pair), its binaries and units checked,
//! removed with `dpkg -r` (data and keys stay), reinstalled (the key pair is not
//! replaced), purged with `dpkg -P` (everything goes).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        text(&output)
    );
    text(&output)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", "bulletproof"])
        .stdout
        .starts_with(b"install ok installed")
}

#[test]
fn the_deb_builds_installs_runs_and_removes() {
    assert!(
        !Path::new("/opt/omniscient").exists() || installed(),
        "/opt/omniscient exists and is not this package's: refusing to install over it"
    );
    if installed() {
        ok("dpkg", &["--purge", "bulletproof"]);
    }
    let root = workspace();
    let build = Command::new("bash")
        .arg(root.join("scripts/deb"))
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(build.status.success(), "scripts/deb: {}", text(&build));
    let deb = fs::read_dir(root.join("target/debian"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let deb = deb.to_str().unwrap();

    // lintian: the one finding left is explained in docs/ARCHITECTURE.md (a vendor
    // package has no Debian ITP bug to close).
    let lint = run("lintian", &["--tag-display-limit", "0", deb]);
    let findings: Vec<String> = String::from_utf8_lossy(&lint.stdout)
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .filter(|l| !l.contains("initial-upload-closes-no-bugs"))
        .map(str::to_owned)
        .collect();
    assert!(findings.is_empty(), "lintian: {findings:#?}");

    let install = ok("dpkg", &["-i", deb]);
    assert!(install.contains("log-initial.key"), "{install}");
    for bin in [
        "bulletproofctl",
        "integrity-collector",
        "integrity-agent",
        "metadata-service",
    ] {
        let version = ok(&format!("/usr/bin/{bin}"), &["--version"]);
        assert!(version.contains(bin), "{version}");
        assert!(Path::new(&format!("/usr/share/man/man1/{bin}.1.gz")).exists());
        assert!(Path::new(&format!("/usr/share/bash-completion/completions/{bin}")).exists());
    }
    for dir in [
        "core",
        "modules",
        "state/conf.d",
        "logs/security",
        "archives",
    ] {
        assert!(Path::new("/opt/omniscient").join(dir).is_dir(), "{dir}");
    }
    let key = fs::read("/etc/bulletproof/release.key").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata("/etc/bulletproof/release.key")
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // It will hold the agent's report token: shipped 0644 (Debian policy for /etc), made
    // root's alone by postinst.
    assert_eq!(
        fs::metadata("/etc/default/integrity-agent")
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let status = ok("/usr/bin/bulletproofctl", &["status", "--json"]);
    assert!(status.contains("\"active\":\"none\""), "{status}");
    assert!(
        !status.contains("\"release_key\":null"),
        "the customer key is not pinned: {status}"
    );
    // The installed units, with the installed binaries.
    let units: Vec<String> = [
        "metadata-service.service",
        "integrity-agent.service",
        "integrity-agent-check.service",
        "integrity-agent-check.timer",
        "integrity-agent-watch.service",
        "bulletproof-guard.service",
    ]
    .iter()
    .map(|u| format!("/lib/systemd/system/{u}"))
    .collect();
    let mut verify = vec!["verify", "--man=no"];
    verify.extend(units.iter().map(String::as_str));
    let verified = run("systemd-analyze", &verify);
    assert!(
        verified.status.success() && text(&verified).trim().is_empty(),
        "{}",
        text(&verified)
    );

    // Removal keeps data and keys; a reinstall keeps the key pair.
    ok("dpkg", &["-r", "bulletproof"]);
    assert!(!Path::new("/usr/bin/bulletproofctl").exists());
    assert!(Path::new("/opt/omniscient/install/state.json").exists());
    assert_eq!(fs::read("/etc/bulletproof/release.key").unwrap(), key);
    ok("dpkg", &["-i", deb]);
    assert_eq!(
        fs::read("/etc/bulletproof/release.key").unwrap(),
        key,
        "the customer key pair was replaced"
    );
    let again = ok("/usr/bin/bulletproofctl", &["install", "--mounts", "no"]);
    assert!(again.contains("nothing to change"), "{again}");

    // Purge removes everything.
    ok("dpkg", &["--purge", "bulletproof"]);
    for gone in [
        "/etc/bulletproof",
        "/opt/omniscient",
        "/usr/bin/integrity-agent",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} survived the purge");
    }
}
