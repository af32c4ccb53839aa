//! `bulletproofctl bundle build` (ARCHITECTURE.md: trust chain) checked from the outside: `sha256sum -c`
//! over checksums.txt, the real `minisign` command over sig.minisig, `tar --zstd` over
//! the archives, the CycloneDX 1.5 JSON schema (cyclonedx-python-lib's validator, in
//! the virtualenv scripts/test makes: BULLETPROOF_TEST_PYTHON), byte-for-byte
//! reproducibility, and the inputs that must be refused without writing a bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{ctl, p, text, CTL};
const VERSION: &str = "1.2.3";
const BUNDLE_FILES: [&str; 6] = [
    "core-1.2.3.tar.zst",
    "modules-1.2.3.tar.zst",
    "manifest-1.2.3.json",
    "sbom-1.2.3.json",
    "checksums.txt",
    "sig.minisig",
];
/// What the reproducibility must cover: everything but the signature (random noise).
const REPRODUCIBLE: [&str; 5] = [
    "core-1.2.3.tar.zst",
    "modules-1.2.3.tar.zst",
    "manifest-1.2.3.json",
    "sbom-1.2.3.json",
    "checksums.txt",
];
const NON_ASCII: &str = "données-é.txt";

fn run_in(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/test installs it): {e}"))
}

/// An unencrypted release key pair made by bulletproofctl: (secret, public).
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let sk = dir.join("k.key");
    let pk = dir.join("k.pub");
    let made = ctl(&["keygen", "--secret-key", p(&sk), "--public-key", p(&pk)]);
    assert!(made.status.success(), "keygen: {}", text(&made));
    (sk, pk)
}

fn write(path: &Path, content: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A small core (VERSION, nested dirs, an executable, an in-tree symlink, a name with a
/// space, a non-ASCII name, a private file) and modules tree under `root`.
fn make_trees(root: &Path) -> (PathBuf, PathBuf) {
    let core = root.join("core");
    let modules = root.join("modules");
    write(
        &core.join("VERSION"),
        format!("{VERSION}\n").as_bytes(),
        0o644,
    );
    write(
        &core.join("bin/omniscient"),
        b"#!/bin/sh\necho omniscient\n",
        0o755,
    );
    write(
        &core.join("lib/deep/nested/data.txt"),
        b"nested data\n",
        0o644,
    );
    write(
        &core.join("etc/my config.conf"),
        b"key = value with spaces\n",
        0o640,
    );
    write(
        &core.join("share").join(NON_ASCII),
        "contenu non-ASCII: é à ü 漢字\n".as_bytes(),
        0o644,
    );
    write(&core.join("etc/secret"), b"private\n", 0o600);
    write(&core.join("empty"), b"", 0o644);
    symlink("deep/nested/data.txt", core.join("lib/current")).unwrap();
    symlink("../bin/omniscient", core.join("share/omniscient-link")).unwrap();
    fs::create_dir_all(core.join("var/empty-dir")).unwrap();
    chmod(&core.join("etc"), 0o750);
    chmod(&core.join("var/empty-dir"), 0o700);

    write(
        &modules.join("mod-a/module.toml"),
        b"name = \"mod-a\"\n",
        0o644,
    );
    write(&modules.join("mod-a/run.sh"), b"#!/bin/sh\nexit 0\n", 0o755);
    write(
        &modules.join("mod-b/data/blob.bin"),
        &(0..=255u8).cycle().take(70_000).collect::<Vec<_>>(),
        0o644,
    );
    symlink("../mod-a/module.toml", modules.join("mod-b/module.toml")).unwrap();
    (core, modules)
}

struct Build<'a> {
    version: &'a str,
    core: &'a Path,
    modules: &'a Path,
    secret_key: &'a Path,
    out: &'a Path,
    extra: &'a [&'a str],
    /// `Some` sets SOURCE_DATE_EPOCH; `None` removes it from the environment.
    source_date_epoch: Option<&'a str>,
}

impl Build<'_> {
    fn run(&self) -> Output {
        let mut command = Command::new(CTL);
        command
            .args([
                "bundle",
                "build",
                "--version",
                self.version,
                "--core",
                p(self.core),
                "--modules",
                p(self.modules),
                "--secret-key",
                p(self.secret_key),
                "--out",
                p(self.out),
            ])
            .args(self.extra)
            .stdin(Stdio::null());
        match self.source_date_epoch {
            Some(epoch) => command.env("SOURCE_DATE_EPOCH", epoch),
            None => command.env_remove("SOURCE_DATE_EPOCH"),
        };
        command.output().unwrap()
    }

    fn ok(&self) -> Output {
        let output = self.run();
        assert!(output.status.success(), "bundle build: {}", text(&output));
        output
    }
}

fn build<'a>(core: &'a Path, modules: &'a Path, sk: &'a Path, out: &'a Path) -> Build<'a> {
    Build {
        version: VERSION,
        core,
        modules,
        secret_key: sk,
        out,
        extra: &[],
        source_date_epoch: None,
    }
}

/// SHA-256 of a file by the `sha256sum` command (not the code under test).
fn sha256sum(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .stdin(fs::File::open(path).unwrap())
        .output()
        .expect("the sha256sum command (coreutils)");
    assert!(output.status.success(), "sha256sum: {}", text(&output));
    let line = String::from_utf8(output.stdout).unwrap();
    let hex = line.split_whitespace().next().unwrap().to_owned();
    assert_eq!(hex.len(), 64, "{line}");
    hex
}

/// Every entry below `root` (not `root` itself), relative, with its lstat.
fn walk(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            found.insert(path.strip_prefix(root).unwrap().to_path_buf(), meta);
        }
    }
    found
}

/// `ls -l` style mode string of an lstat (`drwxr-x---`).
fn ls_mode(meta: &fs::Metadata) -> String {
    let kind = if meta.file_type().is_symlink() {
        'l'
    } else if meta.is_dir() {
        'd'
    } else {
        '-'
    };
    let mut out = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (meta.mode() >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    out
}

/// The files a failed build left in `out` (none, whether or not `out` exists).
fn leftovers(out: &Path) -> Vec<String> {
    match fs::read_dir(out) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn assert_bundle_complete(out: &Path) {
    for name in BUNDLE_FILES {
        assert!(out.join(name).is_file(), "{name} missing from the bundle");
    }
}

#[test]
fn bundle_verifies_with_sha256sum_minisign_and_ours() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = keygen(dir.path());
    let (core, modules) = make_trees(dir.path());
    let out = dir.path().join("out");
    let built = Build {
        extra: &["--expires", "2099-01-01T00:00:00Z"],
        ..build(&core, &modules, &sk, &out)
    }
    .ok();
    assert_bundle_complete(&out);
    let checksums = fs::read_to_string(out.join("checksums.txt")).unwrap();
    // The build prints what checksums.txt holds.
    assert_eq!(String::from_utf8_lossy(&built.stdout), checksums);
    let names: Vec<&str> = checksums
        .lines()
        .map(|line| line.split_once("  ").unwrap().1)
        .collect();
    assert_eq!(names, &REPRODUCIBLE[..4], "{checksums}");

    let checked = run_in(&out, "sha256sum", &["-c", "checksums.txt"]);
    assert!(checked.status.success(), "sha256sum -c: {}", text(&checked));
    for name in &REPRODUCIBLE[..4] {
        assert!(
            String::from_utf8_lossy(&checked.stdout).contains(&format!("{name}: OK")),
            "{}",
            text(&checked)
        );
    }

    fs::copy(&pk, out.join("k.pub")).unwrap();
    let verified = run_in(
        &out,
        "minisign",
        &["-Vm", "checksums.txt", "-x", "sig.minisig", "-p", "k.pub"],
    );
    assert!(
        verified.status.success(),
        "minisign -V: {}",
        text(&verified)
    );
    let minisign_said = text(&verified);
    let comment_line = minisign_said
        .lines()
        .find(|line| line.starts_with("Trusted comment: "))
        .unwrap_or_else(|| panic!("no trusted comment in minisign's output: {minisign_said}"));
    let comment = comment_line.strip_prefix("Trusted comment: ").unwrap();
    let fields: Vec<&str> = comment.split('\t').collect();
    assert_eq!(fields.len(), 3, "{comment:?}");
    assert_eq!(fields[0], "version:1.2.3", "{comment:?}");
    assert!(fields[1].starts_with("timestamp:"), "{comment:?}");
    assert_eq!(fields[2], "expires:2099-01-01T00:00:00Z", "{comment:?}");

    let ours = run_in(
        &out,
        CTL,
        &[
            "verify",
            "checksums.txt",
            "--public-key",
            "k.pub",
            "--signature",
            "sig.minisig",
        ],
    );
    assert!(
        ours.status.success(),
        "bulletproofctl verify: {}",
        text(&ours)
    );
    assert!(
        String::from_utf8_lossy(&ours.stdout).contains(comment_line),
        "ours: {} minisign: {minisign_said}",
        text(&ours)
    );

    // A byte changed in an archive: sha256sum -c notices; a byte changed in
    // checksums.txt: both signature checkers refuse.
    let mut core_bytes = fs::read(out.join("core-1.2.3.tar.zst")).unwrap();
    let middle = core_bytes.len() / 2;
    core_bytes[middle] ^= 1;
    fs::write(out.join("core-1.2.3.tar.zst"), core_bytes).unwrap();
    let checked = run_in(&out, "sha256sum", &["-c", "checksums.txt"]);
    assert!(!checked.status.success(), "{}", text(&checked));
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("core-1.2.3.tar.zst: FAILED"),
        "{}",
        text(&checked)
    );
    fs::write(out.join("checksums.txt"), checksums.replacen('0', "1", 1)).unwrap();
    let refused = run_in(
        &out,
        "minisign",
        &["-Vm", "checksums.txt", "-x", "sig.minisig", "-p", "k.pub"],
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    let refused = run_in(
        &out,
        CTL,
        &[
            "verify",
            "checksums.txt",
            "--public-key",
            "k.pub",
            "--signature",
            "sig.minisig",
        ],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
}

fn assert_same_bundles(a: &Path, b: &Path, what: &str) {
    for name in REPRODUCIBLE {
        let (left, right) = (
            fs::read(a.join(name)).unwrap(),
            fs::read(b.join(name)).unwrap(),
        );
        if left != right {
            let first = left
                .iter()
                .zip(&right)
                .position(|(x, y)| x != y)
                .unwrap_or(left.len().min(right.len()));
            panic!(
                "{what}: {name} differs between two builds of the same inputs \
                 ({} vs {} bytes, first difference at byte {first})",
                left.len(),
                right.len()
            );
        }
    }
}

#[test]
fn builds_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _) = keygen(dir.path());
    let (core, modules) = make_trees(dir.path());
    let out = |name: &str| dir.path().join(name);

    // Without SOURCE_DATE_EPOCH: the newest input mtime, not the clock.
    build(&core, &modules, &sk, &out("a")).ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build(&core, &modules, &sk, &out("b")).ok();
    assert_same_bundles(&out("a"), &out("b"), "without SOURCE_DATE_EPOCH");
    // The signatures are fresh (minisign signatures carry random noise) but over the
    // same checksums.
    assert_ne!(
        fs::read(out("a").join("sig.minisig")).unwrap(),
        fs::read(out("b").join("sig.minisig")).unwrap()
    );

    // With SOURCE_DATE_EPOCH, which also sets the manifest and SBOM timestamps.
    let with_epoch = |name: &'static str| {
        let o = out(name);
        Build {
            source_date_epoch: Some("1700000000"),
            ..build(&core, &modules, &sk, &o)
        }
        .ok();
    };
    with_epoch("c");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    with_epoch("d");
    assert_same_bundles(&out("c"), &out("d"), "with SOURCE_DATE_EPOCH");
    for name in ["manifest-1.2.3.json", "sbom-1.2.3.json"] {
        let json = fs::read_to_string(out("c").join(name)).unwrap();
        assert!(json.contains("2023-11-14T22:13:20Z"), "{name}: {json}");
    }

    // One file's content changed (same size, same mtime): the core archive, the
    // manifest, the SBOM and checksums.txt change; the modules archive does not.
    let changed = core.join("lib/deep/nested/data.txt");
    let before = fs::symlink_metadata(&changed).unwrap();
    fs::write(&changed, b"nested DATA\n").unwrap();
    let touched = Command::new("touch")
        .args(["-m", "-d", &format!("@{}", before.mtime()), p(&changed)])
        .status()
        .unwrap();
    assert!(touched.success());
    with_epoch("e");
    let differs = |name: &str| {
        fs::read(out("c").join(name)).unwrap() != fs::read(out("e").join(name)).unwrap()
    };
    for name in [
        "core-1.2.3.tar.zst",
        "manifest-1.2.3.json",
        "sbom-1.2.3.json",
        "checksums.txt",
    ] {
        assert!(
            differs(name),
            "{name} did not change with the core's content"
        );
    }
    assert!(!differs("modules-1.2.3.tar.zst"));
    let sums = |name: &str| fs::read_to_string(out(name).join("checksums.txt")).unwrap();
    let core_line = |text: String| {
        text.lines()
            .find(|l| l.ends_with("  core-1.2.3.tar.zst"))
            .unwrap()
            .to_owned()
    };
    assert_ne!(core_line(sums("c")), core_line(sums("e")));
}

/// Runs cyclonedx-python-lib's strict JSON validator (CycloneDX 1.5) over `sbom`.
/// Needs the virtualenv of scripts/test; fails loudly without it, never skips.
fn validate_cyclonedx(sbom: &Path) {
    let python = std::env::var_os("BULLETPROOF_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "BULLETPROOF_TEST_PYTHON is not set: it must name the python of a virtualenv \
             with cyclonedx-python-lib[json-validation] (scripts/test makes target/test-venv \
             and sets it)"
        )
    });
    const SCRIPT: &str = r#"
import sys
try:
    from cyclonedx.validation.json import JsonStrictValidator
    from cyclonedx.schema import SchemaVersion
except ImportError as error:
    print(f"cannot import cyclonedx-python-lib's JSON validator: {error!r}", file=sys.stderr)
    sys.exit(3)
with open(sys.argv[1], encoding="utf-8") as f:
    text = f.read()
errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
if errors is not None:
    print(f"CycloneDX 1.5 schema validation failed: {errors!r}", file=sys.stderr)
    print(getattr(errors, "data", ""), file=sys.stderr)
    sys.exit(1)
print("valid")
"#;
    let output = Command::new(&python)
        .args(["-c", SCRIPT, p(sbom)])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run BULLETPROOF_TEST_PYTHON={python:?}: {e}"));
    match output.status.code() {
        Some(0) => assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "valid"),
        Some(3) => panic!(
            "BULLETPROOF_TEST_PYTHON={python:?} lacks cyclonedx-python-lib[json-validation]: {}",
            text(&output)
        ),
        _ => panic!(
            "{} is not valid CycloneDX 1.5: {}",
            sbom.display(),
            text(&output)
        ),
    }
}

#[test]
fn sbom_is_valid_cyclonedx_and_lists_every_file_with_its_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _) = keygen(dir.path());
    let (core, modules) = make_trees(dir.path());
    let out = dir.path().join("out");
    build(&core, &modules, &sk, &out).ok();
    let sbom_path = out.join("sbom-1.2.3.json");
    validate_cyclonedx(&sbom_path);

    let sbom: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&sbom_path).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["specVersion"], "1.5");
    assert_eq!(sbom["metadata"]["component"]["version"], VERSION);
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    for component in sbom["components"].as_array().expect("components") {
        assert_eq!(component["type"], "file", "{component}");
        let name = component["name"].as_str().unwrap().to_owned();
        let hashes = component["hashes"].as_array().expect("hashes");
        let sha256 = hashes
            .iter()
            .find(|h| h["alg"] == "SHA-256")
            .unwrap_or_else(|| panic!("no SHA-256 for {name}"));
        let hex = sha256["content"].as_str().unwrap().to_owned();
        assert!(listed.insert(name.clone(), hex).is_none(), "{name} twice");
    }

    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let mut symlinks = BTreeSet::new();
    for (prefix, tree) in [("core", &core), ("modules", &modules)] {
        for (rel, meta) in walk(tree) {
            let name = format!("{prefix}/{}", rel.to_str().unwrap());
            if meta.file_type().is_file() {
                expected.insert(name, sha256sum(&tree.join(&rel)));
            } else if meta.file_type().is_symlink() {
                symlinks.insert(name);
            }
        }
    }
    assert!(expected.contains_key(&format!("core/share/{NON_ASCII}")));
    assert!(expected.contains_key("core/etc/my config.conf"));
    for (name, hex) in &expected {
        assert_eq!(
            listed.get(name),
            Some(hex),
            "the SBOM's SHA-256 of {name} (sha256sum says {hex})"
        );
    }
    for name in listed.keys() {
        assert!(
            expected.contains_key(name) || symlinks.contains(name),
            "the SBOM lists {name}, not a file of the trees"
        );
    }
}

struct TarEntry {
    mode: String,
    owner: String,
    date_time: String,
    path: String,
    link: Option<String>,
}

/// `tar --zstd -tvf ARCHIVE`, names unquoted, times in UTC.
fn tar_list(archive: &Path) -> Vec<TarEntry> {
    let output = Command::new("tar")
        .args(["--zstd", "--quoting-style=literal", "--full-time", "-tvf"])
        .arg(archive)
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .output()
        .expect("GNU tar with zstd (scripts/test installs zstd)");
    assert!(output.status.success(), "tar -t: {}", text(&output));
    let listing = String::from_utf8(output.stdout).unwrap();
    listing
        .lines()
        .map(|line| {
            // `-rwxr-xr-x 0/0  27 2023-11-14 22:13:20 bin/omniscient`
            let mut rest = line;
            let mut fields = Vec::new();
            for _ in 0..5 {
                rest = rest.trim_start();
                let end = rest.find(' ').unwrap_or_else(|| panic!("{line:?}"));
                fields.push(&rest[..end]);
                rest = &rest[end..];
            }
            let name = &rest[1..];
            let (path, link) = if fields[0].starts_with('l') {
                let (path, link) = name.split_once(" -> ").unwrap();
                (path, Some(link.to_owned()))
            } else {
                (name, None)
            };
            TarEntry {
                mode: fields[0].to_owned(),
                owner: fields[1].to_owned(),
                date_time: format!("{} {}", fields[3], fields[4]),
                path: path.trim_end_matches('/').to_owned(),
                link,
            }
        })
        .collect()
}

#[test]
fn archives_hold_relative_paths_root_owners_and_source_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _) = keygen(dir.path());
    let (core, modules) = make_trees(dir.path());
    let out = dir.path().join("out");
    Build {
        source_date_epoch: Some("1700000000"),
        ..build(&core, &modules, &sk, &out)
    }
    .ok();
    for (archive, tree) in [
        ("core-1.2.3.tar.zst", &core),
        ("modules-1.2.3.tar.zst", &modules),
    ] {
        let entries = tar_list(&out.join(archive));
        let sources = walk(tree);
        let mut seen = BTreeSet::new();
        for entry in &entries {
            let path = Path::new(&entry.path);
            assert!(
                path.is_relative() && !entry.path.starts_with('/'),
                "{archive}: absolute {}",
                entry.path
            );
            assert!(
                path.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
                "{archive}: {} is not a plain relative path",
                entry.path
            );
            assert_eq!(entry.owner, "0/0", "{archive}: owner of {}", entry.path);
            assert_eq!(
                entry.date_time, "2023-11-14 22:13:20",
                "{archive}: mtime of {}",
                entry.path
            );
            let source = sources
                .get(path)
                .unwrap_or_else(|| panic!("{archive}: {} is not in the source", entry.path));
            assert_eq!(
                entry.mode,
                ls_mode(source),
                "{archive}: mode of {}",
                entry.path
            );
            if source.file_type().is_symlink() {
                let target = fs::read_link(tree.join(path)).unwrap();
                assert_eq!(entry.link.as_deref(), target.to_str(), "{}", entry.path);
            }
            assert!(seen.insert(entry.path.clone()), "{} twice", entry.path);
        }
        let all: BTreeSet<String> = sources
            .keys()
            .map(|k| k.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(seen, all, "{archive}: entries vs the source tree");
    }
    let core_paths: Vec<String> = tar_list(&out.join("core-1.2.3.tar.zst"))
        .into_iter()
        .map(|e| e.path)
        .collect();
    for wanted in [
        "VERSION",
        "bin/omniscient",
        "etc/my config.conf",
        &format!("share/{NON_ASCII}"),
        "lib/current",
    ] {
        assert!(
            core_paths.iter().any(|p| p == wanted),
            "{wanted}: {core_paths:?}"
        );
    }

    // --owner is what every entry records.
    let owned = dir.path().join("owned");
    Build {
        extra: &["--owner", "123:456"],
        ..build(&core, &modules, &sk, &owned)
    }
    .ok();
    for entry in tar_list(&owned.join("core-1.2.3.tar.zst")) {
        assert_eq!(entry.owner, "123/456", "{}", entry.path);
    }
}

#[test]
fn bad_inputs_are_refused_without_a_bundle() {
    type Spoil = fn(&Path, &Path);
    let cases: Vec<(&str, &str, Spoil, &[&str])> = vec![
        (
            "a VERSION that is not a file",
            VERSION,
            |core, _| {
                fs::remove_file(core.join("VERSION")).unwrap();
                fs::create_dir(core.join("VERSION")).unwrap();
            },
            &["VERSION", "not a regular file"],
        ),
        (
            "VERSION naming another version",
            VERSION,
            |core, _| fs::write(core.join("VERSION"), "1.2.4\n").unwrap(),
            &["VERSION", "1.2.4"],
        ),
        (
            "a two-part version",
            "1.2",
            |core, _| fs::write(core.join("VERSION"), "1.2\n").unwrap(),
            &["1.2", "semver"],
        ),
        (
            "a v-prefixed version",
            "v1.2.3",
            |core, _| fs::write(core.join("VERSION"), "v1.2.3\n").unwrap(),
            &["v1.2.3", "semver"],
        ),
        (
            "a word for a version",
            "latest",
            |core, _| fs::write(core.join("VERSION"), "latest\n").unwrap(),
            &["latest", "semver"],
        ),
        (
            "a fifo in the core",
            VERSION,
            |core, _| mkfifo(&core.join("lib/deep/pipe")),
            &["pipe", "fifo"],
        ),
        (
            "a fifo in the modules",
            VERSION,
            |_, modules| mkfifo(&modules.join("mod-a/pipe")),
            &["pipe", "fifo"],
        ),
        (
            "a symlink to /etc/passwd",
            VERSION,
            |core, _| symlink("/etc/passwd", core.join("etc/passwd-link")).unwrap(),
            &["passwd-link", "/etc/passwd"],
        ),
        (
            "a symlink to ../../x",
            VERSION,
            |core, _| symlink("../../x", core.join("lib/up")).unwrap(),
            &["lib/up", "../../x"],
        ),
        (
            "a top-level symlink to ../../x",
            VERSION,
            |core, _| symlink("../../x", core.join("up")).unwrap(),
            &["up", "../../x"],
        ),
        (
            "a modules symlink to ../../x",
            VERSION,
            |_, modules| symlink("../../x", modules.join("mod-a/up")).unwrap(),
            &["mod-a/up", "../../x"],
        ),
        (
            "a nonexistent core",
            VERSION,
            |core, _| fs::remove_dir_all(core).unwrap(),
            &["core", "not a directory"],
        ),
    ];
    for (what, version, spoil, mentions) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (sk, _) = keygen(dir.path());
        let (core, modules) = make_trees(dir.path());
        spoil(&core, &modules);
        let out = dir.path().join("out");
        let refused = Build {
            version,
            ..build(&core, &modules, &sk, &out)
        }
        .run();
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{what}: not refused: {}",
            text(&refused)
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("bulletproofctl: error:"),
            "{what}: {stderr}"
        );
        for mention in mentions {
            assert!(
                stderr.contains(mention),
                "{what}: the error does not name {mention:?}: {stderr}"
            );
        }
        assert!(refused.stdout.is_empty(), "{what}: {}", text(&refused));
        let left = leftovers(&out);
        assert!(left.is_empty(), "{what}: the failed build wrote {left:?}");
    }
}

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// A core without VERSION gets one from the build (the core always carries it), listed
/// in the signed manifest like any file.
#[test]
fn a_core_without_version_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _pk) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    let keygen = Command::new(CTL)
        .args([
            "keygen",
            "--secret-key",
            sk.to_str().unwrap(),
            "--public-key",
            _pk.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let core = dir.path().join("core");
    let modules = dir.path().join("modules");
    fs::create_dir_all(core.join("bin")).unwrap();
    fs::create_dir_all(&modules).unwrap();
    fs::write(core.join("bin/app"), "app\n").unwrap();
    let out = dir.path().join("out");
    let built = Command::new(CTL)
        .args(["bundle", "build", "--version", "2.0.0-rc.1"])
        .arg("--core")
        .arg(&core)
        .arg("--modules")
        .arg(&modules)
        .arg("--secret-key")
        .arg(&sk)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let version = Command::new("tar")
        .args(["--zstd", "-xOf"])
        .arg(out.join("core-2.0.0-rc.1.tar.zst"))
        .arg("VERSION")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout), "2.0.0-rc.1\n");
    let manifest = fs::read_to_string(out.join("manifest-2.0.0-rc.1.json")).unwrap();
    assert!(manifest.contains("\"/core/VERSION\""), "{manifest}");
    assert!(
        !core.join("VERSION").exists(),
        "the source tree was written to"
    );
}
