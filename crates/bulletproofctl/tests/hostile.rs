//! `bulletproofctl update` against hostile bundles (ARCHITECTURE.md: trust chain, the root): forged, edited or
//! truncated signatures, swapped archives, checksums listing too much or too little,
//! replayed and expired bundles, and malicious archive shapes that are validly signed
//! and hashed (so only the extractor and the manifest comparison stand in the way).
//!
//! Every refusal is checked the same way ([`Env::assert_refused`]): exit 1, the reason on
//! stderr, 1.0.0 still active with its core and modules unchanged, nothing staged,
//! nothing new kept or archived, and nothing written outside the root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{ctl, p, CTL};

/// The trusted comment of the re-signed 2.0.0 bundles.
const V2_COMMENT: &str = "version:2.0.0\ttimestamp:2026-01-01T00:00:00Z";

/// The four files `checksums.txt` must list for `version`.
fn bundle_files(version: &str) -> [String; 4] {
    [
        format!("core-{version}.tar.zst"),
        format!("modules-{version}.tar.zst"),
        format!("manifest-{version}.json"),
        format!("sbom-{version}.json"),
    ]
}

fn text(output: &Output) -> String {
    format!(
        "{} (exit code {:?})\nstdout:\n{}\nstderr:\n{}",
        output.status,
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ctl_ok(args: &[&str]) -> Output {
    let output = ctl(args);
    assert!(
        output.status.success(),
        "bulletproofctl {args:?} failed: {}",
        text(&output)
    );
    output
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn sha256_hex(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(output.status.success(), "sha256sum {}", path.display());
    String::from_utf8(output.stdout).unwrap()[..64].to_string()
}

/// Deterministic, incompressible bytes (so a cut archive is cut inside file data).
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A tree as kind, mode, owner, link target and content, by relative path.
type Tree = BTreeMap<PathBuf, (String, Vec<u8>)>;

fn snapshot(dir: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        for entry in fs::read_dir(dir.join(&relative)).unwrap() {
            let relative = relative.join(entry.unwrap().file_name());
            let path = dir.join(&relative);
            let meta = fs::symlink_metadata(&path).unwrap();
            let owner = format!("{:o} {}:{}", meta.mode(), meta.uid(), meta.gid());
            let item = if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                (format!("symlink -> {}", target.display()), Vec::new())
            } else if meta.is_dir() {
                stack.push(relative.clone());
                (format!("dir {owner}"), Vec::new())
            } else if meta.is_file() {
                (format!("file {owner}"), fs::read(&path).unwrap())
            } else {
                (format!("other {owner}"), Vec::new())
            };
            tree.insert(relative, item);
        }
    }
    tree
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("cannot list {}: {error}", dir.display()),
    };
    names.sort();
    names
}

/// One tar entry written byte for byte (a name the tar crate's `set_path` would refuse
/// goes straight into the header).
struct Raw {
    header: tar::Header,
    data: Vec<u8>,
}

fn raw(kind: tar::EntryType, name: &[u8], link: &[u8], data: &[u8]) -> Raw {
    assert!(
        name.len() < 100 && link.len() < 100,
        "names fit a v7 header"
    );
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_size(data.len() as u64);
    if kind == tar::EntryType::Char {
        header.set_device_major(1).unwrap();
        header.set_device_minor(3).unwrap();
    }
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name);
    old.linkname[..link.len()].copy_from_slice(link);
    header.set_cksum();
    Raw {
        header,
        data: data.to_vec(),
    }
}

fn file(name: &[u8], data: &[u8]) -> Raw {
    raw(tar::EntryType::Regular, name, b"", data)
}

fn dir(name: &[u8]) -> Raw {
    raw(tar::EntryType::Directory, name, b"", b"")
}

fn symlink(name: &[u8], target: &[u8]) -> Raw {
    raw(tar::EntryType::Symlink, name, target, b"")
}

/// The entries of a (good) `.tar.zst`, headers and data as they are.
fn read_entries(archive: &Path) -> Vec<Raw> {
    let decoder = zstd::Decoder::new(fs::File::open(archive).unwrap()).unwrap();
    let mut archive = tar::Archive::new(decoder);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        out.push(Raw { header, data });
    }
    out
}

fn write_archive(path: &Path, entries: &[Raw]) {
    let encoder = zstd::Encoder::new(fs::File::create(path).unwrap(), 3).unwrap();
    let mut builder = tar::Builder::new(encoder);
    for entry in entries {
        builder
            .append(&entry.header, entry.data.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// A temporary directory with a key pair, a root installed with `--mounts no` on which
/// release 1.0.0 is active, a sentinel directory beside the root and a victim file.
struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    key: PathBuf,
    public: PathBuf,
    root: PathBuf,
    /// Must stay empty: hostile archives aim at it.
    outside: PathBuf,
    /// A file outside the root that hardlink entries name; must stay as it is.
    victim: PathBuf,
    b1: PathBuf,
    before: (Tree, Tree),
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        assert!(dir.as_os_str().len() < 60, "short temporary paths");
        let key = dir.join("k.key");
        let public = dir.join("k.pub");
        ctl_ok(&[
            "keygen",
            "--secret-key",
            p(&key),
            "--public-key",
            p(&public),
        ]);
        let outside = dir.join("outside");
        fs::create_dir(&outside).unwrap();
        let victim = dir.join("victim");
        write(&victim, b"do not touch\n", 0o640);
        let mut env = Env {
            _tmp: tmp,
            root: dir.join("root"),
            b1: dir.join("B1"),
            dir,
            key,
            public,
            outside,
            victim,
            before: (Tree::new(), Tree::new()),
        };
        let (core, modules) = env.sources("1.0.0");
        env.build("1.0.0", &core, &modules, &env.b1, &[]);
        ctl_ok(&[
            "install",
            "--root",
            p(&env.root),
            "--public-key",
            p(&env.public),
            "--mounts",
            "no",
        ]);
        let out = env.update(&env.b1);
        assert_eq!(
            out.status.code(),
            Some(0),
            "update to 1.0.0: {}",
            text(&out)
        );
        assert_eq!(env.active(), PathBuf::from("releases/1.0.0"));
        env.before = env.trees();
        assert!(env.before.0.contains_key(Path::new("bin/app")));
        env
    }

    /// Source trees of a good release `version`.
    fn sources(&self, version: &str) -> (PathBuf, PathBuf) {
        let base = self.dir.join(format!("src-{version}"));
        if base.exists() {
            fs::remove_dir_all(&base).unwrap();
        }
        let core = base.join("core");
        let modules = base.join("modules");
        write(
            &core.join("VERSION"),
            format!("{version}\n").as_bytes(),
            0o644,
        );
        write(
            &core.join("bin/app"),
            format!("#!/bin/sh\necho app {version}\n").as_bytes(),
            0o755,
        );
        write(&core.join("data.bin"), &noise(96 << 10), 0o644);
        std::os::unix::fs::symlink("bin/app", core.join("app")).unwrap();
        write(&modules.join("mod/mod.txt"), b"a module\n", 0o644);
        (core, modules)
    }

    fn build(&self, version: &str, core: &Path, modules: &Path, out: &Path, extra: &[&str]) {
        let mut args = vec![
            "bundle",
            "build",
            "--version",
            version,
            "--core",
            p(core),
            "--modules",
            p(modules),
            "--secret-key",
            p(&self.key),
            "--out",
            p(out),
        ];
        args.extend_from_slice(extra);
        ctl_ok(&args);
    }

    /// A good, validly signed bundle of `version` in `DIR/<name>`.
    fn good_bundle_named(&self, version: &str, name: &str, extra: &[&str]) -> PathBuf {
        let (core, modules) = self.sources(version);
        let out = self.dir.join(name);
        self.build(version, &core, &modules, &out, extra);
        out
    }

    fn good_bundle(&self, version: &str) -> PathBuf {
        self.good_bundle_named(version, &format!("B-{version}"), &[])
    }

    /// Rewrites `checksums.txt` over the four files of 2.0.0 as they now are and signs
    /// it again with `key` (signature and hashes valid).
    fn resign_with(&self, bundle: &Path, key: &Path) {
        let mut checksums = String::new();
        for name in bundle_files("2.0.0") {
            checksums.push_str(&format!("{}  {name}\n", sha256_hex(&bundle.join(&name))));
        }
        fs::write(bundle.join("checksums.txt"), checksums).unwrap();
        self.sign_checksums(bundle, key, V2_COMMENT);
    }

    fn resign(&self, bundle: &Path) {
        self.resign_with(bundle, &self.key);
    }

    /// Signs `checksums.txt` as it is, into `sig.minisig`.
    fn sign_checksums(&self, bundle: &Path, key: &Path, comment: &str) {
        let checksums = bundle.join("checksums.txt");
        ctl_ok(&[
            "sign",
            p(&checksums),
            "--secret-key",
            p(key),
            "--trusted-comment",
            comment,
        ]);
        fs::rename(
            bundle.join("checksums.txt.minisig"),
            bundle.join("sig.minisig"),
        )
        .unwrap();
    }

    fn update(&self, bundle: &Path) -> Output {
        ctl(&["update", p(bundle), "--root", p(&self.root)])
    }

    /// `update` under `ulimit LIMIT` (dash and bash: `-f` in 512- or 1024-byte
    /// blocks, `-d` in KiB): a bound that is not enforced before the bytes are written
    /// or allocated shows up as a process killed by SIGXFSZ or aborted on allocation.
    fn update_limited(&self, bundle: &Path, limit: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
            .arg(CTL)
            .args(["update", p(bundle), "--root", p(&self.root)])
            .env_remove("BULLETPROOF_ROOT")
            .env_remove("BULLETPROOF_CRASH_AT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Lowers `max_release_bytes` to 1 MiB.
    fn lower_size_bound(&self) {
        let config = self.root.join("install/bulletproof.toml");
        let text = fs::read_to_string(&config).unwrap();
        let lowered: String = text
            .lines()
            .map(|line| {
                if line.starts_with("max_release_bytes") {
                    "max_release_bytes = 1048576\n".to_string()
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        assert_ne!(
            lowered, text,
            "bulletproof.toml has a max_release_bytes line"
        );
        fs::write(&config, lowered).unwrap();
    }

    fn active(&self) -> PathBuf {
        fs::read_link(self.root.join("install/active")).unwrap()
    }

    fn trees(&self) -> (Tree, Tree) {
        (
            snapshot(&self.root.join("core")),
            snapshot(&self.root.join("modules")),
        )
    }

    /// Everything a refused update must leave as it was.
    fn assert_refused(&self, case: &str, out: &Output, reasons: &[&str]) {
        let all = text(out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case}: update must be refused with exit 1: {all}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "{case}: bulletproofctl panicked: {all}"
        );
        for reason in ["refused"].iter().chain(reasons) {
            assert!(
                stderr.contains(reason),
                "{case}: stderr does not name the problem ({reason:?}): {all}"
            );
        }
        assert_eq!(
            self.active(),
            PathBuf::from("releases/1.0.0"),
            "{case}: install/active moved"
        );
        assert_eq!(
            fs::read_to_string(self.root.join("core/VERSION")).unwrap(),
            "1.0.0\n",
            "{case}: core/VERSION changed"
        );
        let now = self.trees();
        assert!(now.0 == self.before.0, "{case}: the active core changed");
        assert!(now.1 == self.before.1, "{case}: the active modules changed");
        assert_eq!(
            names(&self.root.join("install/stage")),
            Vec::<String>::new(),
            "{case}: install/stage is not empty"
        );
        assert_eq!(
            names(&self.root.join("install/releases")),
            ["1.0.0", "none"],
            "{case}: install/releases holds something new"
        );
        assert!(
            !self.root.join("archives/2.0.0").exists(),
            "{case}: the refused bundle was archived"
        );
        assert!(
            !self.root.join("install/txn.json").exists(),
            "{case}: a journal was left behind"
        );
        // Nothing outside the root.
        assert_eq!(
            names(&self.outside),
            Vec::<String>::new(),
            "{case}: something was written into {}",
            self.outside.display()
        );
        assert!(
            fs::symlink_metadata(self.dir.join("evil")).is_err(),
            "{case}: {}/evil was written",
            self.dir.display()
        );
        assert!(
            fs::symlink_metadata(self.root.join("evil")).is_err()
                && fs::symlink_metadata(self.root.join("install/evil")).is_err(),
            "{case}: an `evil` entry was written in the root"
        );
        let victim = fs::symlink_metadata(&self.victim).unwrap();
        assert_eq!(
            (victim.mode() & 0o7777, victim.nlink(), victim.uid()),
            (0o640, 1, fs::metadata(&self.dir).unwrap().uid()),
            "{case}: {} was linked, chmod-ed or chown-ed",
            self.victim.display()
        );
        assert_eq!(
            fs::read(&self.victim).unwrap(),
            b"do not touch\n",
            "{case}: {} was written",
            self.victim.display()
        );
    }
}

// ---------------------------------------------------------------------------------
// Signatures

#[test]
fn signature_by_another_key_is_refused() {
    let env = Env::new();
    let other_key = env.dir.join("other.key");
    let other_pub = env.dir.join("other.pub");
    ctl_ok(&[
        "keygen",
        "--secret-key",
        p(&other_key),
        "--public-key",
        p(&other_pub),
    ]);
    let bundle = env.good_bundle("2.0.0");
    env.resign_with(&bundle, &other_key);
    let out = env.update(&bundle);
    env.assert_refused("signed by another key", &out, &["sig.minisig"]);
}

#[test]
fn update_with_another_public_key_is_refused() {
    let env = Env::new();
    let other_key = env.dir.join("other.key");
    let other_pub = env.dir.join("other.pub");
    ctl_ok(&[
        "keygen",
        "--secret-key",
        p(&other_key),
        "--public-key",
        p(&other_pub),
    ]);
    let pinned = fs::read(env.root.join("install/release.pub")).unwrap();
    let bundle = env.good_bundle("2.0.0");
    let out = ctl(&[
        "update",
        p(&bundle),
        "--root",
        p(&env.root),
        "--public-key",
        p(&other_pub),
    ]);
    env.assert_refused(
        "--public-key other.pub for a bundle signed by k.key",
        &out,
        &["sig.minisig"],
    );
    assert_eq!(
        fs::read(env.root.join("install/release.pub")).unwrap(),
        pinned,
        "--public-key other.pub: the pinned key was replaced"
    );
}

#[test]
fn flipped_byte_in_checksums_is_refused() {
    let env = Env::new();
    let bundle = env.good_bundle("2.0.0");
    let path = bundle.join("checksums.txt");
    let mut bytes = fs::read(&path).unwrap();
    // A hex digit of the first digest: still well-formed, no longer what was signed.
    bytes[10] = if bytes[10] == b'0' { b'1' } else { b'0' };
    fs::write(&path, bytes).unwrap();
    let out = env.update(&bundle);
    env.assert_refused("flipped byte in checksums.txt", &out, &["sig.minisig"]);
}

#[test]
fn edited_trusted_comment_is_refused() {
    let env = Env::new();
    // The version raised in the trusted comment.
    let bundle = env.good_bundle("2.0.0");
    let path = bundle.join("sig.minisig");
    let signature = fs::read_to_string(&path).unwrap();
    assert!(signature.contains("trusted comment: version:2.0.0\t"));
    fs::write(
        &path,
        signature.replace(
            "trusted comment: version:2.0.0",
            "trusted comment: version:3.0.0",
        ),
    )
    .unwrap();
    let out = env.update(&bundle);
    env.assert_refused(
        "trusted comment edited (version 2.0.0 -> 3.0.0)",
        &out,
        &["sig.minisig"],
    );

    // The expiry removed from the trusted comment of an expired bundle.
    let bundle = env.good_bundle_named(
        "2.0.0",
        "B-2.0.0-exp",
        &["--expires", "2020-01-01T00:00:00Z"],
    );
    let path = bundle.join("sig.minisig");
    let signature = fs::read_to_string(&path).unwrap();
    assert!(signature.contains("\texpires:2020-01-01T00:00:00Z"));
    fs::write(
        &path,
        signature.replace("\texpires:2020-01-01T00:00:00Z", ""),
    )
    .unwrap();
    let out = env.update(&bundle);
    env.assert_refused(
        "trusted comment edited (expiry removed)",
        &out,
        &["sig.minisig"],
    );
}

#[test]
fn garbage_or_truncated_signature_is_refused() {
    let env = Env::new();
    let good = fs::read(env.good_bundle("2.0.0").join("sig.minisig")).unwrap();
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        (
            "garbage sig.minisig",
            Some(b"this is not a signature\n".to_vec()),
        ),
        ("binary garbage sig.minisig", Some(noise(300))),
        ("empty sig.minisig", Some(Vec::new())),
        (
            "sig.minisig truncated in half",
            Some(good[..good.len() / 2].to_vec()),
        ),
        (
            "sig.minisig without its last line",
            Some({
                let text = String::from_utf8(good.clone()).unwrap();
                let mut lines: Vec<&str> = text.lines().collect();
                lines.pop();
                (lines.join("\n") + "\n").into_bytes()
            }),
        ),
        ("huge sig.minisig", Some(vec![b'A'; 1 << 20])),
        ("missing sig.minisig", None),
    ];
    for (case, bytes) in cases {
        let bundle = env.dir.join(format!("B-{}", case.replace(' ', "-")));
        let (core, modules) = env.sources("2.0.0");
        env.build("2.0.0", &core, &modules, &bundle, &[]);
        match bytes {
            Some(bytes) => fs::write(bundle.join("sig.minisig"), bytes).unwrap(),
            None => fs::remove_file(bundle.join("sig.minisig")).unwrap(),
        }
        let out = env.update(&bundle);
        env.assert_refused(case, &out, &["sig.minisig"]);
    }
}

// ---------------------------------------------------------------------------------
// Checksums

#[test]
fn swapped_archive_is_refused() {
    let env = Env::new();
    let bundle = env.good_bundle("2.0.0");
    // A valid archive, but not the one the signed checksums name.
    fs::copy(
        env.b1.join("core-1.0.0.tar.zst"),
        bundle.join("core-2.0.0.tar.zst"),
    )
    .unwrap();
    let out = env.update(&bundle);
    env.assert_refused(
        "core-2.0.0.tar.zst swapped for another valid archive",
        &out,
        &["core-2.0.0.tar.zst"],
    );
}

#[test]
fn checksums_listing_extra_or_missing_files_are_refused() {
    let env = Env::new();
    let bundle = env.good_bundle("2.0.0");
    // An extra, unexpected file (present, hashed, signed).
    fs::write(bundle.join("extra.sh"), b"#!/bin/sh\nrm -rf /\n").unwrap();
    let mut checksums = fs::read_to_string(bundle.join("checksums.txt")).unwrap();
    checksums.push_str(&format!(
        "{}  extra.sh\n",
        sha256_hex(&bundle.join("extra.sh"))
    ));
    fs::write(bundle.join("checksums.txt"), checksums).unwrap();
    env.sign_checksums(&bundle, &env.key, V2_COMMENT);
    let out = env.update(&bundle);
    env.assert_refused("checksums.txt lists an extra file", &out, &["extra.sh"]);

    // A required file missing from checksums.txt (validly signed without it).
    for missing in bundle_files("2.0.0") {
        let bundle = env.good_bundle_named("2.0.0", &format!("B-without-{missing}"), &[]);
        let checksums = fs::read_to_string(bundle.join("checksums.txt")).unwrap();
        let kept: String = checksums
            .lines()
            .filter(|line| !line.ends_with(&format!("  {missing}")))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_ne!(kept, checksums);
        fs::write(bundle.join("checksums.txt"), kept).unwrap();
        env.sign_checksums(&bundle, &env.key, V2_COMMENT);
        let out = env.update(&bundle);
        env.assert_refused(
            &format!("checksums.txt does not list {missing}"),
            &out,
            &[&missing],
        );
    }

    // Listed but absent from the bundle directory.
    let bundle = env.good_bundle_named("2.0.0", "B-sbom-absent", &[]);
    fs::remove_file(bundle.join("sbom-2.0.0.json")).unwrap();
    let out = env.update(&bundle);
    env.assert_refused(
        "sbom-2.0.0.json listed but absent",
        &out,
        &["sbom-2.0.0.json"],
    );
}

// ---------------------------------------------------------------------------------
// Replay and freeze

#[test]
fn replayed_older_or_equal_version_is_refused() {
    let env = Env::new();
    let older = env.good_bundle("0.9.0");
    let out = env.update(&older);
    env.assert_refused("replayed older bundle 0.9.0", &out, &["0.9.0", "1.0.0"]);
    assert!(
        !env.root.join("archives/0.9.0").exists(),
        "replayed older bundle 0.9.0: archived"
    );

    let out = env.update(&env.b1);
    env.assert_refused("the active version 1.0.0 again", &out, &["1.0.0"]);
}

#[test]
fn expired_bundle_is_refused() {
    let env = Env::new();
    let bundle =
        env.good_bundle_named("2.0.0", "B-expired", &["--expires", "2020-01-01T00:00:00Z"]);
    let out = env.update(&bundle);
    env.assert_refused(
        "bundle expired 2020-01-01",
        &out,
        &["expired", "2020-01-01T00:00:00Z"],
    );
}

// ---------------------------------------------------------------------------------
// Malicious archive shapes, validly signed and hashed

/// Builds a good 2.0.0 bundle, rewrites its core archive as the good entries followed by
/// `hostile(env)`'s, re-signs it, and checks the update is refused for `reasons`.
fn hostile_core(case: &str, hostile: impl Fn(&Env) -> Vec<Raw>, reasons: &[&str]) {
    let env = Env::new();
    let bundle = env.good_bundle("2.0.0");
    let archive = bundle.join("core-2.0.0.tar.zst");
    let mut entries = read_entries(&archive);
    entries.extend(hostile(&env));
    write_archive(&archive, &entries);
    env.resign(&bundle);
    let out = env.update(&bundle);
    env.assert_refused(case, &out, reasons);
}

#[test]
fn archive_entry_with_dotdot_is_refused() {
    hostile_core(
        "entry ../evil",
        |_| vec![file(b"../evil", b"evil\n")],
        &["../evil"],
    );
    // core → stage/<ver>.X → stage → install → root → the temporary directory.
    hostile_core(
        "entry ../../../../../outside/evil",
        |_| vec![file(b"../../../../../outside/evil", b"evil\n")],
        &["outside/evil"],
    );
    hostile_core(
        "entry bin/../../evil",
        |_| vec![file(b"bin/../../evil", b"evil\n")],
        &["bin/../../evil"],
    );
}

#[test]
fn archive_entry_with_absolute_path_is_refused() {
    hostile_core(
        "absolute entry <tmp>/outside/evil",
        |env| {
            let name = env.outside.join("evil");
            vec![file(name.as_os_str().as_encoded_bytes(), b"evil\n")]
        },
        &["outside/evil"],
    );
}

#[test]
fn archive_hardlink_entry_is_refused() {
    hostile_core(
        "hardlink entry to a file outside the root",
        |env| {
            vec![raw(
                tar::EntryType::Link,
                b"hardln",
                env.victim.as_os_str().as_encoded_bytes(),
                b"",
            )]
        },
        &["hardln", "hardlink"],
    );
    hostile_core(
        "hardlink entry to a file of the archive",
        |_| vec![raw(tar::EntryType::Link, b"hardln", b"VERSION", b"")],
        &["hardln", "hardlink"],
    );
}

#[test]
fn archive_character_device_entry_is_refused() {
    hostile_core(
        "character device entry",
        |_| vec![raw(tar::EntryType::Char, b"nulldev", b"", b"")],
        &["nulldev", "device"],
    );
}

#[test]
fn archive_fifo_entry_is_refused() {
    hostile_core(
        "fifo entry",
        |_| vec![raw(tar::EntryType::Fifo, b"pipefifo", b"", b"")],
        &["pipefifo", "fifo"],
    );
}

#[test]
fn archive_symlink_with_absolute_target_is_refused() {
    hostile_core(
        "symlink to an absolute target",
        |env| {
            vec![symlink(
                b"abslink",
                env.outside.as_os_str().as_encoded_bytes(),
            )]
        },
        &["abslink"],
    );
    hostile_core(
        "symlink to an absolute target, then a file through it",
        |env| {
            vec![
                symlink(b"abslink", env.outside.as_os_str().as_encoded_bytes()),
                file(b"abslink/evil", b"evil\n"),
            ]
        },
        &["abslink"],
    );
}

#[test]
fn archive_symlink_climbing_out_is_refused() {
    hostile_core(
        "symlink ../../outside",
        |_| vec![symlink(b"esclink", b"../../outside")],
        &["esclink"],
    );
    hostile_core(
        "symlink ../../../../../outside (the sentinel), then a file through it",
        |_| {
            vec![
                symlink(b"esclink", b"../../../../../outside"),
                file(b"esclink/evil", b"evil\n"),
            ]
        },
        &["esclink"],
    );
}

#[test]
fn archive_symlink_chain_escaping_once_resolved_is_refused() {
    hostile_core(
        "symlink chain loopa -> . then loopb -> loopa/..",
        |_| vec![symlink(b"loopa", b"."), symlink(b"loopb", b"loopa/..")],
        &["loopb"],
    );
    hostile_core(
        "symlink chain loopa -> ., loopb -> loopa/.., then loopb/outside/evil",
        |_| {
            vec![
                symlink(b"loopa", b"."),
                symlink(b"loopb", b"loopa/.."),
                file(b"loopb/outside/evil", b"evil\n"),
            ]
        },
        &["loopb"],
    );
}

#[test]
fn archive_file_through_symlink_is_refused() {
    hostile_core(
        "symlink dlink -> sub then file dlink/evil",
        |_| {
            vec![
                dir(b"sub"),
                symlink(b"dlink", b"sub"),
                file(b"dlink/evil", b"evil\n"),
            ]
        },
        &["dlink/evil"],
    );
    hostile_core(
        "symlink bin2 -> bin then file bin2/app (overwriting through the link)",
        |_| {
            vec![
                symlink(b"bin2", b"bin"),
                file(b"bin2/app", b"#!/bin/sh\necho owned\n"),
            ]
        },
        &["bin2/app"],
    );
}

#[test]
fn archive_duplicated_entry_is_refused() {
    hostile_core(
        "duplicated entry bin/app",
        |_| vec![file(b"bin/app", b"#!/bin/sh\necho second copy\n")],
        &["bin/app"],
    );
    hostile_core(
        "duplicated entry ./VERSION",
        |_| vec![file(b"./VERSION", b"9.9.9\n")],
        &["VERSION"],
    );
    hostile_core(
        "duplicated entry bin as a symlink",
        |_| vec![symlink(b"bin", b".")],
        &["bin"],
    );
}

#[test]
fn truncated_archive_is_refused() {
    let env = Env::new();
    let bundle = env.good_bundle("2.0.0");
    let archive = bundle.join("core-2.0.0.tar.zst");
    let bytes = fs::read(&archive).unwrap();
    assert!(
        bytes.len() > 64 << 10,
        "the core archive holds incompressible data"
    );
    fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    env.resign(&bundle);
    let out = env.update(&bundle);
    env.assert_refused(
        "core-2.0.0.tar.zst cut in half",
        &out,
        &["core-2.0.0.tar.zst"],
    );

    // A tar cut at an entry boundary (a valid zstd stream of an incomplete tar).
    let bundle = env.good_bundle_named("2.0.0", "B-tar-cut", &[]);
    let archive = bundle.join("core-2.0.0.tar.zst");
    let entries = read_entries(&archive);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in &entries[..entries.len() / 2] {
        builder
            .append(&entry.header, entry.data.as_slice())
            .unwrap();
    }
    // No end-of-archive blocks: the stream just stops after a whole entry.
    let mut tar = builder.into_inner().unwrap();
    tar.truncate(tar.len() - 1024);
    fs::write(&archive, zstd::encode_all(tar.as_slice(), 3).unwrap()).unwrap();
    env.resign(&bundle);
    let out = env.update(&bundle);
    env.assert_refused(
        "core-2.0.0.tar.zst holding half of its entries",
        &out,
        &["core"],
    );
}

/// `-f 16384`: 8 MiB (dash, 512-byte blocks) or 16 MiB (bash), far above the 1 MiB
/// bound and far below the 64 MiB a bomb holds.
const FSIZE_LIMIT: &str = "-f 16384";

#[test]
fn zstd_bomb_is_refused() {
    let env = Env::new();
    env.lower_size_bound();
    let (core, modules) = env.sources("2.0.0");
    let zeros = fs::File::create(core.join("zeros.bin")).unwrap();
    zeros.set_len(64 << 20).unwrap();
    drop(zeros);
    let bundle = env.dir.join("B-bomb");
    env.build("2.0.0", &core, &modules, &bundle, &[]);
    let size = fs::metadata(bundle.join("core-2.0.0.tar.zst"))
        .unwrap()
        .len();
    assert!(
        size < 1 << 20,
        "64 MiB of zeros compresses below the 1 MiB bound ({size} bytes)"
    );
    let out = env.update_limited(&bundle, FSIZE_LIMIT);
    env.assert_refused("zstd bomb (64 MiB of zeros)", &out, &["zeros.bin"]);
}

/// One PAX extended-header record, `LEN key=value\n` (LEN counts the whole record).
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let tail = 1 + key.len() + 1 + value.len() + 1;
    let mut len = tail + 1;
    while len.to_string().len() + tail != len {
        len = len.to_string().len() + tail;
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn pax(records: &[(&str, &[u8])]) -> Raw {
    let data: Vec<u8> = records
        .iter()
        .flat_map(|(key, value)| pax_record(key, value))
        .collect();
    raw(tar::EntryType::XHeader, b"PaxHeaders/entry", b"", &data)
}

#[test]
fn zstd_bomb_sized_by_pax_header_is_refused_within_the_bound() {
    // The ustar header says 0 bytes, the PAX `size` record (which the tar crate obeys
    // when it reads the entry) says 64 MiB: the bound must be applied to the size the
    // data really has, before it is written.
    let env = Env::new();
    env.lower_size_bound();
    let bundle = env.good_bundle("2.0.0");
    let archive = bundle.join("core-2.0.0.tar.zst");
    let mut entries = read_entries(&archive);
    entries.push(pax(&[("size", (64u64 << 20).to_string().as_bytes())]));
    entries.push(Raw {
        header: file(b"paxbomb.bin", b"").header,
        data: vec![0; 64 << 20],
    });
    write_archive(&archive, &entries);
    assert!(fs::metadata(&archive).unwrap().len() < 1 << 20);
    env.resign(&bundle);
    let out = env.update_limited(&bundle, FSIZE_LIMIT);
    env.assert_refused(
        "zstd bomb sized by a PAX size record (header says 0)",
        &out,
        &["paxbomb.bin"],
    );
}

/// A GNU long-name entry or a PAX header of 1 GiB (a few KB compressed) is read into
/// memory by the tar crate before the extractor sees the entry it describes: the
/// total bound must hold for those bytes too. The child may use 512 MiB of data.
fn huge_extension_header(case: &str, kind: tar::EntryType, name: &[u8]) {
    let env = Env::new();
    env.lower_size_bound();
    let bundle = env.good_bundle("2.0.0");
    let archive = bundle.join("core-2.0.0.tar.zst");
    let entries = read_entries(&archive);
    let encoder = zstd::Encoder::new(fs::File::create(&archive).unwrap(), 1).unwrap();
    let mut builder = tar::Builder::new(encoder);
    for entry in &entries {
        builder
            .append(&entry.header, entry.data.as_slice())
            .unwrap();
    }
    let mut header = raw(kind, name, b"", b"").header;
    header.set_size(1 << 30);
    header.set_cksum();
    // PAX: one record whose declared length covers the whole gigabyte.
    let prefix = format!("{} comment=", 1u64 << 30).into_bytes();
    let body = std::io::Read::chain(
        if kind == tar::EntryType::XHeader {
            prefix.as_slice()
        } else {
            &b""[..]
        },
        std::io::Read::take(std::io::repeat(b'a'), 1 << 30),
    );
    builder
        .append(&header, std::io::Read::take(body, 1 << 30))
        .unwrap();
    builder
        .append(&file(b"after", b"x\n").header, &b"x\n"[..])
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap();
    assert!(fs::metadata(&archive).unwrap().len() < 1 << 20, "{case}");
    env.resign(&bundle);
    let out = env.update_limited(&bundle, "-d 524288");
    env.assert_refused(case, &out, &["core-2.0.0.tar.zst"]);
    // Refused by the release's bound, not because the allocator gave up (without
    // the ulimit the whole gigabyte would have been allocated).
    assert!(
            !String::from_utf8_lossy(&out.stderr).contains("out of memory"),
            "{case}: refused only because memory ran out under the 512 MiB ulimit, not by the 1 MiB bound: {}",
            text(&out)
        );
}

#[test]
fn huge_gnu_long_name_is_refused_within_memory_bound() {
    huge_extension_header(
        "GNU long-name entry of 1 GiB",
        tar::EntryType::GNULongName,
        b"././@LongLink",
    );
}

#[test]
fn huge_pax_header_is_refused_within_memory_bound() {
    huge_extension_header(
        "PAX extended header of 1 GiB",
        tar::EntryType::XHeader,
        b"PaxHeaders/huge",
    );
}

#[test]
fn the_bomb_tests_limits_allow_a_good_update() {
    // Control for the tests above: the ulimits alone do not make an update fail.
    for limit in [FSIZE_LIMIT, "-d 524288"] {
        let env = Env::new();
        env.lower_size_bound();
        let bundle = env.good_bundle("2.0.0");
        let out = env.update_limited(&bundle, limit);
        assert_eq!(
            out.status.code(),
            Some(0),
            "good update under ulimit {limit}: {}",
            text(&out)
        );
        assert_eq!(env.active(), PathBuf::from("releases/2.0.0"));
    }
}

#[test]
fn pax_and_gnu_long_names_are_checked_like_plain_ones() {
    hostile_core(
        "PAX path ../../../../../outside/evil on an innocent header",
        |_| {
            vec![
                pax(&[("path", b"../../../../../outside/evil")]),
                file(b"innocent", b"evil\n"),
            ]
        },
        &["outside/evil"],
    );
    hostile_core(
        "PAX path absolute <tmp>/outside/evil",
        |env| {
            let target = env.outside.join("evil");
            vec![
                pax(&[("path", target.as_os_str().as_encoded_bytes())]),
                file(b"innocent", b"evil\n"),
            ]
        },
        &["outside/evil"],
    );
    hostile_core(
        "PAX linkpath absolute on a symlink with a harmless target",
        |env| {
            vec![
                pax(&[("linkpath", env.outside.as_os_str().as_encoded_bytes())]),
                symlink(b"paxlink", b"VERSION"),
            ]
        },
        &["paxlink"],
    );
    hostile_core(
        "GNU long name ../../../../../outside/evil",
        |_| {
            vec![
                raw(
                    tar::EntryType::GNULongName,
                    b"././@LongLink",
                    b"",
                    b"../../../../../outside/evil\0",
                ),
                file(b"innocent", b"evil\n"),
            ]
        },
        &["outside/evil"],
    );
    hostile_core(
        "GNU long link name ../../../../../outside on a symlink",
        |_| {
            vec![
                raw(
                    tar::EntryType::GNULongLink,
                    b"././@LongLink",
                    b"",
                    b"../../../../../outside\0",
                ),
                symlink(b"gnulink", b"VERSION"),
            ]
        },
        &["gnulink"],
    );
}

#[test]
fn modules_archive_attacks_are_refused() {
    let cases: Vec<(&str, Vec<Raw>, &str)> = vec![
        (
            "modules entry ../../../../../outside/evil",
            vec![file(b"../../../../../outside/evil", b"evil\n")],
            "outside/evil",
        ),
        (
            "modules symlink modlink -> ../../core",
            vec![symlink(b"modlink", b"../../core")],
            "modlink",
        ),
        (
            "modules symlink chain loopa -> . then loopb -> loopa/..",
            vec![symlink(b"loopa", b"."), symlink(b"loopb", b"loopa/..")],
            "loopb",
        ),
        (
            "modules file through a symlink mod2 -> mod",
            vec![symlink(b"mod2", b"mod"), file(b"mod2/mod.txt", b"owned\n")],
            "mod2/mod.txt",
        ),
        (
            "modules hardlink entry",
            vec![raw(tar::EntryType::Link, b"hardln", b"mod/mod.txt", b"")],
            "hardln",
        ),
        (
            "modules file not in the signed manifest",
            vec![file(b"mod/extra.txt", b"extra\n")],
            "extra.txt",
        ),
    ];
    for (case, hostile, reason) in cases {
        let env = Env::new();
        let bundle = env.good_bundle("2.0.0");
        let archive = bundle.join("modules-2.0.0.tar.zst");
        let mut entries = read_entries(&archive);
        entries.extend(hostile);
        write_archive(&archive, &entries);
        env.resign(&bundle);
        let out = env.update(&bundle);
        env.assert_refused(case, &out, &[reason]);
    }
}

#[test]
fn archive_file_not_in_signed_manifest_is_refused() {
    hostile_core(
        "core archive file missing from the signed manifest",
        |_| vec![file(b"extra.txt", b"not in the manifest\n")],
        &["extra.txt"],
    );
    hostile_core(
        "core archive directory missing from the signed manifest",
        |_| vec![dir(b"extra.d")],
        &["extra.d"],
    );
}

#[test]
fn archive_file_differing_from_signed_manifest_is_refused() {
    let env = Env::new();
    let bundle = env.good_bundle("2.0.0");
    let archive = bundle.join("core-2.0.0.tar.zst");
    let entries: Vec<Raw> = read_entries(&archive)
        .into_iter()
        .map(|entry| {
            if entry.header.path_bytes().as_ref() == b"bin/app" {
                file(b"bin/app", b"#!/bin/sh\necho owned\n")
            } else {
                entry
            }
        })
        .collect();
    write_archive(&archive, &entries);
    env.resign(&bundle);
    let out = env.update(&bundle);
    env.assert_refused(
        "core archive bin/app differs from the signed manifest",
        &out,
        &["bin/app"],
    );
}

// ---------------------------------------------------------------------------------
// The bundle's own preflight

fn preflight_bundle(env: &Env, script: &str) -> PathBuf {
    let (core, modules) = env.sources("2.0.0");
    write(&core.join("preflight"), script.as_bytes(), 0o755);
    let bundle = env.dir.join("B-preflight");
    env.build("2.0.0", &core, &modules, &bundle, &[]);
    bundle
}

#[test]
fn failing_preflight_is_refused() {
    let env = Env::new();
    let bundle = preflight_bundle(&env, "#!/bin/sh\nexit 7\n");
    let out = env.update(&bundle);
    env.assert_refused("preflight exits 7", &out, &["preflight"]);
}

#[test]
fn passing_preflight_is_accepted() {
    let env = Env::new();
    let bundle = preflight_bundle(&env, "#!/bin/sh\nexit 0\n");
    let out = env.update(&bundle);
    assert_eq!(
        out.status.code(),
        Some(0),
        "preflight exits 0: update must succeed: {}",
        text(&out)
    );
    assert_eq!(
        env.active(),
        PathBuf::from("releases/2.0.0"),
        "preflight exits 0: 2.0.0 is active"
    );
    assert_eq!(
        fs::read_to_string(env.root.join("core/VERSION")).unwrap(),
        "2.0.0\n",
        "preflight exits 0: core/VERSION"
    );
    assert_eq!(
        names(&env.root.join("install/stage")),
        Vec::<String>::new(),
        "preflight exits 0: install/stage is empty"
    );
    assert_eq!(
        names(&env.outside),
        Vec::<String>::new(),
        "preflight exits 0: nothing outside the root"
    );
}
