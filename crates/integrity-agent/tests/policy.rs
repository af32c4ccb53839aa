//! The agent applies the policy inside the baseline (issue 9): what each rule lets
//! through, what it still reports, `--verbose`, `--explain`, a local policy that may
//! only add checks, and a signature that keeps a VM from widening the image's rules.
//! (The debootstrap first-boot test is `policy_debootstrap.rs`.)

use integrity_common::{Baseline, Policy, ScanOptions, ScanProgress};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");

const POLICY: &str = r#"
[[rule]]
name = "identity"
paths = ["/etc/hostname"]
check = ["mode", "owner", "type"]
reason = "set on first boot"

[[rule]]
name = "cloud state"
paths = ["/var/lib/cloud/**"]
ignore = true

[[rule]]
name = "package log"
paths = ["/var/log/dpkg.log"]
growing = true

[[rule]]
name = "homes"
paths = ["/home/**"]
check = ["owner"]
added_ok = true
"#;

fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for (path, content) in [
        ("etc/hostname", "golden\n"),
        ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        ("var/lib/cloud/instance/boot-finished", "1\n"),
        ("var/log/dpkg.log", "install a\n"),
        ("var/log/syslog", "boot\n"),
        ("home/u/.bashrc", "PS1=x\n"),
        ("usr/bin/tool", "#!/bin/sh\n"),
    ] {
        fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        fs::write(root.join(path), content).unwrap();
    }
    root
}

/// The baseline of `root` under `policy`, made with the engine (the collector's path).
fn collect(root: &Path, policy: &Policy, out: &Path) -> Vec<u8> {
    let scanned = integrity_common::scan(
        &ScanOptions {
            policy: Some(Arc::new(policy.clone())),
            ..ScanOptions::new(root)
        },
        &ScanProgress::default(),
    )
    .unwrap();
    let baseline = Baseline {
        image_id: "img".into(),
        timestamp: "2026-11-23T07:31:43Z".into(),
        entries: scanned.entries,
        errors: scanned.errors,
        policy: Some(policy.clone()),
    };
    let bytes = baseline.to_json_bytes();
    fs::write(out, &bytes).unwrap();
    bytes
}

fn agent(root: &Path, baseline: &Path, extra: &[&str]) -> Output {
    Command::new(AGENT)
        .args(["--root", root.to_str().unwrap()])
        .args(["--baseline", baseline.to_str().unwrap()])
        .args(["--format", "json"])
        .args(extra)
        .env_remove("IMAGE_ID")
        .output()
        .unwrap()
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// (key value, path, rule) of the lines that have `key` (`anomaly` or `allowed`).
fn found(output: &Output, key: &str) -> Vec<(String, String, String)> {
    let mut found: Vec<_> = json_lines(output)
        .into_iter()
        .filter(|line| line.get(key).is_some())
        .map(|line| {
            (
                line[key].as_str().unwrap().to_owned(),
                line["path"].as_str().unwrap().to_owned(),
                line["rule"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

fn own(kind: &str, path: &str, rule: &str) -> (String, String, String) {
    (kind.into(), path.into(), rule.into())
}

#[test]
fn the_baselines_policy_decides_what_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let baseline = dir.path().join("b.json");
    let policy = Policy::from_toml_str(POLICY).unwrap();
    let bytes = collect(&root, &policy, &baseline);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains(r#""policy":{"rules":[{"name":"identity""#),
        "{text}"
    );
    assert!(
        !text.contains("boot-finished"),
        "ignored paths are not scanned"
    );
    assert!(text.contains("/var/log/dpkg.log") && !text.contains("/var/log/syslog"));

    // What first boot and normal use do: all let through.
    fs::write(root.join("etc/hostname"), "vm-17\n").unwrap();
    fs::write(root.join("var/lib/cloud/instance/boot-finished"), "2\n").unwrap();
    fs::write(
        root.join("var/lib/cloud/instance/user-data"),
        "#cloud-config\n",
    )
    .unwrap();
    fs::write(root.join("var/log/dpkg.log"), "install a\ninstall b\n").unwrap();
    fs::write(root.join("var/log/syslog"), "other\n").unwrap();
    fs::write(root.join("home/u/.bashrc"), "PS1=y\n").unwrap();
    fs::write(root.join("home/u/notes"), "n\n").unwrap();
    let quiet = agent(&root, &baseline, &["--verbose"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", stderr(&quiet));
    assert_eq!(found(&quiet, "anomaly"), vec![]);
    assert_eq!(
        found(&quiet, "allowed"),
        vec![
            own("added", "/home/u/notes", "baseline rule 4 \"homes\""),
            own("modified", "/etc/hostname", "baseline rule 1 \"identity\""),
            own("modified", "/home/u/.bashrc", "baseline rule 4 \"homes\""),
            own(
                "modified",
                "/var/log/dpkg.log",
                "baseline rule 3 \"package log\""
            ),
        ]
    );
    let summary = json_lines(&quiet).pop().unwrap();
    assert_eq!(summary["summary"]["allowed"], 4);
    // Without --verbose the report is REFERENCE §3–4's, nothing more.
    let plain = agent(&root, &baseline, &[]);
    assert!(found(&plain, "allowed").is_empty());
    assert!(json_lines(&plain)
        .iter()
        .all(|line| line.get("rule").is_none()));

    // Drift the same rules still catch.
    fs::set_permissions(root.join("etc/hostname"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/bash\n").unwrap();
    fs::write(root.join("var/log/dpkg.log"), "remove a\ninstall b\n").unwrap();
    std::os::unix::fs::chown(root.join("home/u/.bashrc"), Some(1000), None).unwrap();
    fs::write(root.join("etc/new"), "x\n").unwrap();
    let drift = agent(&root, &baseline, &["--verbose"]);
    assert_eq!(drift.status.code(), Some(1 | 4), "{}", stderr(&drift));
    assert_eq!(
        found(&drift, "anomaly"),
        vec![
            own("added", "/etc/new", ""),
            own(
                "metadata_changed",
                "/etc/hostname",
                "baseline rule 1 \"identity\""
            ),
            own(
                "metadata_changed",
                "/home/u/.bashrc",
                "baseline rule 4 \"homes\""
            ),
            own("modified", "/etc/passwd", ""),
            own(
                "modified",
                "/var/log/dpkg.log",
                "baseline rule 3 \"package log\""
            ),
        ]
    );
    // A shrunk log is drift too.
    fs::write(root.join("var/log/dpkg.log"), "").unwrap();
    let truncated = agent(&root, &baseline, &[]);
    assert!(found(&truncated, "anomaly").contains(&own("modified", "/var/log/dpkg.log", "")));

    // The text report names the rule with --verbose.
    let text = Command::new(AGENT)
        .args(["--root", root.to_str().unwrap(), "--baseline"])
        .arg(&baseline)
        .arg("--verbose")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("[baseline rule 1 \"identity\"]"), "{text}");
    assert!(text.contains("[no rule: every check]"), "{text}");
}

#[test]
fn a_signed_policy_cannot_be_widened_on_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let baseline = dir.path().join("b.json");
    let policy = Policy::from_toml_str(POLICY).unwrap();
    let bytes = collect(&root, &policy, &baseline);
    let (sk, pk) = (dir.path().join("c.key"), dir.path().join("c.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    let key =
        integrity_trust::load_secret_key(&sk, integrity_trust::Password::PromptIfTerminal).unwrap();
    let sig = integrity_trust::sign(&key, &bytes, "image_id:img\ttimestamp:2026-11-23T07:31:43Z")
        .unwrap();
    fs::write(dir.path().join("b.json.minisig"), sig).unwrap();
    fs::write(root.join("etc/passwd"), "intruder\n").unwrap();
    let pinned = ["--public-key", pk.to_str().unwrap()];
    let honest = agent(&root, &baseline, &pinned);
    assert_eq!(honest.status.code(), Some(4), "{}", stderr(&honest));

    // The VM's copy edited to ignore /etc: the signature no longer verifies.
    let widened = String::from_utf8(bytes).unwrap().replace(
        r#""rules":["#,
        r#""rules":[{"paths":["/etc/**"],"ignore":true},"#,
    );
    fs::write(&baseline, widened).unwrap();
    let refused = agent(&root, &baseline, &pinned);
    assert_eq!(refused.status.code(), Some(17), "{}", stderr(&refused));
    // Unpinned, the edit works: why production agents pin the key.
    let unpinned = agent(&root, &baseline, &[]);
    assert_eq!(unpinned.status.code(), Some(0), "{}", stderr(&unpinned));
}

#[test]
fn a_local_policy_only_adds_checks_unless_explicitly_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let baseline = dir.path().join("b.json");
    collect(&root, &Policy::from_toml_str(POLICY).unwrap(), &baseline);
    fs::write(root.join("etc/hostname"), "vm-17\n").unwrap();
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\nevil\n").unwrap();

    let stricter = dir.path().join("stricter.toml");
    fs::write(&stricter, "[[rule]]\npaths = [\"/etc/hostname\"]\n").unwrap();
    let out = agent(
        &root,
        &baseline,
        &["--policy", stricter.to_str().unwrap(), "-v"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(found(&out, "anomaly").contains(&own(
        "modified",
        "/etc/hostname",
        "baseline rule 1 \"identity\"; checks added by local rule 1 (/etc/hostname)"
    )));

    let weaker = dir.path().join("weaker.toml");
    fs::write(
        &weaker,
        "[[rule]]\npaths = [\"/usr/bin/**\"]\nignore = true\n",
    )
    .unwrap();
    let refused = agent(&root, &baseline, &["--policy", weaker.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(14), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("may only add checks"),
        "{}",
        stderr(&refused)
    );
    assert!(refused.stdout.is_empty());

    let allowed = agent(
        &root,
        &baseline,
        &[
            "--policy",
            weaker.to_str().unwrap(),
            "--allow-weaker-policy",
        ],
    );
    assert_eq!(allowed.status.code(), Some(0), "{}", stderr(&allowed));
    assert!(
        stderr(&allowed).contains("SECURITY: the local policy"),
        "{}",
        stderr(&allowed)
    );

    // Bad local policies and a lone override flag are usage errors.
    let broken = dir.path().join("broken.toml");
    fs::write(
        &broken,
        "[[rule]]\npaths = [\"/a\"]\ncheck = [\"everything\"]\n",
    )
    .unwrap();
    let bad = agent(&root, &baseline, &["--policy", broken.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(14));
    assert!(
        stderr(&bad).contains("unknown check \"everything\""),
        "{}",
        stderr(&bad)
    );
    let lone = agent(&root, &baseline, &["--allow-weaker-policy"]);
    assert_eq!(lone.status.code(), Some(14), "{}", stderr(&lone));
}

#[test]
fn explain_says_which_rule_applies_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let baseline = dir.path().join("b.json");
    collect(&root, &Policy::from_toml_str(POLICY).unwrap(), &baseline);
    let out = agent(
        &root,
        &baseline,
        &[
            "--explain",
            "/etc/hostname",
            "--explain",
            "/var/lib/cloud/instance/x",
            "--explain",
            "/var/log/syslog",
            "--explain",
            "/usr/bin/tool",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["rule"], "baseline rule 1 \"identity\"");
    assert_eq!(
        lines[0]["checks"],
        serde_json::json!(["mode", "owner", "type"])
    );
    assert_eq!(lines[0]["reason"], "set on first boot");
    assert_eq!(lines[1]["scanned"], false);
    assert!(lines[1]["not_scanned"]
        .as_str()
        .unwrap()
        .contains("\"cloud state\""));
    assert!(lines[2]["not_scanned"]
        .as_str()
        .unwrap()
        .contains("/var/log is excluded"));
    assert_eq!(lines[3]["rule"], serde_json::Value::Null);
    assert_eq!(
        lines[3]["checks"],
        serde_json::json!(["content", "mode", "owner", "type"])
    );

    let text = Command::new(AGENT)
        .args(["--root", root.to_str().unwrap(), "--baseline"])
        .arg(&baseline)
        .args(["--explain", "/etc/hostname"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("not checked: content"), "{text}");
    assert!(text.contains("why: set on first boot"), "{text}");

    let bad = agent(&root, &baseline, &["--explain", "relative/path"]);
    assert_eq!(bad.status.code(), Some(14));
    // A baseline without a policy: every check everywhere.
    let bare = dir.path().join("bare.json");
    collect(&root, &Policy::empty(), &bare);
    let none = agent(&root, &bare, &["--explain", "/etc/hostname"]);
    assert_eq!(json_lines(&none)[0]["checks"].as_array().unwrap().len(), 4);
}

#[test]
fn a_local_exclusion_is_announced_and_not_read_as_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let baseline = dir.path().join("b.json");
    collect(&root, &Policy::from_toml_str(POLICY).unwrap(), &baseline);
    fs::write(root.join("usr/bin/tool"), "changed\n").unwrap();
    let out = agent(&root, &baseline, &["--exclude", "/usr"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(found(&out, "anomaly").is_empty());
    assert!(
        stderr(&out).contains("--exclude /usr: not checked on this machine"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn widening_is_reported_where_the_rule_lets_changes_through() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    fs::set_permissions(root.join("home/u"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        root.join("home/u/.bashrc"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let baseline = dir.path().join("b.json");
    collect(&root, &Policy::from_toml_str(POLICY).unwrap(), &baseline);

    // "homes" checks only the owner and lets additions through; widening is reported.
    fs::set_permissions(
        root.join("home/u/.bashrc"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    fs::write(root.join("home/u/sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("home/u/sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    // Narrowing and a plain new file are still let through.
    fs::set_permissions(root.join("home/u"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(root.join("home/u/notes"), "n\n").unwrap();
    fs::set_permissions(root.join("home/u/notes"), fs::Permissions::from_mode(0o644)).unwrap();

    let out = agent(&root, &baseline, &[]);
    // Added and changed (content or metadata alike set 4).
    assert_eq!(out.status.code(), Some(1 | 4), "{}", stderr(&out));
    let lines = json_lines(&out);
    let reported: Vec<_> = lines
        .iter()
        .filter(|l| l.get("anomaly").is_some())
        .collect();
    assert_eq!(reported.len(), 2, "{lines:#?}");
    let bashrc = reported
        .iter()
        .find(|l| l["path"] == "/home/u/.bashrc")
        .unwrap();
    assert_eq!(bashrc["anomaly"], "metadata_changed");
    assert_eq!(bashrc["changed"], serde_json::json!(["mode"]));
    assert_eq!(bashrc["widening"], serde_json::json!(["g+w", "o+w"]));
    // REFERENCE §3–4's fields in their order, then the additive one.
    let raw = raw_line(&out, "/home/u/.bashrc");
    assert_eq!(
        top_level_keys(&raw),
        ["anomaly", "path", "changed", "baseline", "current", "widening"],
        "{raw}"
    );
    let sh = reported.iter().find(|l| l["path"] == "/home/u/sh").unwrap();
    assert_eq!(sh["anomaly"], "added");
    assert_eq!(sh["widening"], serde_json::json!(["setuid"]));

    let verbose = agent(&root, &baseline, &["--verbose"]);
    let allowed = found(&verbose, "allowed");
    assert!(
        allowed.contains(&own(
            "metadata_changed",
            "/home/u",
            "baseline rule 4 \"homes\""
        )),
        "{allowed:?}"
    );
    assert!(allowed.contains(&own("added", "/home/u/notes", "baseline rule 4 \"homes\"")));
    let raw = raw_line(&verbose, "/home/u/sh");
    assert_eq!(
        top_level_keys(&raw),
        ["anomaly", "path", "changed", "baseline", "current", "widening", "rule"],
        "{raw}"
    );
}

/// The report line (as written) of the anomaly at `path`.
fn raw_line(output: &Output, path: &str) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|value| value.get("anomaly").is_some() && value["path"] == path)
        })
        .unwrap_or_else(|| panic!("no line for {path}"))
        .to_owned()
}

/// The keys of a report line's top level, in the order written (serde_json's `Value`
/// sorts them): each key where it first appears (the entries inside `baseline` and
/// `current` hold none of the line's own keys, and come after `path`).
fn top_level_keys(line: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    let mut keys: Vec<(usize, String)> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|key| {
            let quoted = format!("{}:", serde_json::to_string(key).unwrap());
            (line.find(&quoted).unwrap(), key.clone())
        })
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, key)| key).collect()
}
