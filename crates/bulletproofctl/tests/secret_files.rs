//! Secret files (issue 16, item 7): `--password-file`, `--secret-key` and the initial
//! log key are refused (exit 2, nothing written) when group or others can write them
//! (or their directory), when another user owns them, or when they are not regular
//! files (a FIFO must not hang us); a file others can only read works with one warning
//! line naming it and its mode; a private one works silently. The secret never
//! appears in any output.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

mod common;
use common::racer::{run_bounded, NOBODY};
use common::{ctl, ctl_command, ok, p, text};

const PASSWORD: &str = "secret-password-words-7c1e";
/// A FIFO must not hang a command: each run is bounded.
const DEADLINE: Duration = Duration::from_secs(30);

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A private scratch directory.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o700);
    dir
}

/// `name` in `dir` holding the password, mode `mode` exactly.
fn password_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("{PASSWORD}\n")).unwrap();
    chmod(&path, mode);
    path
}

fn assert_no_secret(output: &Output) {
    let said = text(output);
    assert!(
        !said.contains(PASSWORD),
        "the password in the output: {said}"
    );
}

/// Refused: exit 2, the error names the file and says why.
fn assert_refused(output: &Output, file: &Path, why: &str) {
    assert_no_secret(output);
    let said = text(output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    let error = said
        .lines()
        .find(|line| line.starts_with("bulletproofctl: error: "))
        .unwrap_or_else(|| panic!("no error line: {said}"));
    assert!(error.contains(p(file)), "{said}");
    assert!(error.contains(why), "{said}");
    assert!(error.contains("refused"), "{said}");
}

/// The warning lines of a run.
fn warnings(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains("warning"))
        .map(str::to_owned)
        .collect()
}

fn keygen(dir: &Path, name: &str, password: Option<&Path>) -> Output {
    let (sk, pk) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    let mut args = vec!["keygen", "--secret-key", p(&sk), "--public-key", p(&pk)];
    if let Some(password) = password {
        args.extend(["--password-file", p(password)]);
    }
    ctl(&args)
}

#[test]
fn keygen_refuses_a_password_file_others_can_write() {
    let dir = scratch();
    for mode in [0o666, 0o620, 0o602] {
        let password = password_file(dir.path(), "pw", mode);
        let output = keygen(dir.path(), "k", Some(&password));
        assert_refused(&output, &password, &format!("mode {mode:04o}"));
        assert!(text(&output).contains("chmod 600"), "{}", text(&output));
        assert!(!dir.path().join("k.key").exists(), "a key was written");
        assert!(!dir.path().join("k.pub").exists(), "a key was written");
    }
    // A private file in a directory others can write (no sticky bit): refused too.
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let password = password_file(&open, "pw", 0o600);
    let output = keygen(dir.path(), "k", Some(&password));
    assert_refused(&output, &password, "without the sticky bit");
    assert!(!dir.path().join("k.key").exists());
}

#[test]
fn keygen_warns_about_a_readable_password_file_and_is_silent_on_a_private_one() {
    let dir = scratch();
    let password = password_file(dir.path(), "pw", 0o644);
    let output = ok(keygen(dir.path(), "readable", Some(&password)));
    assert_no_secret(&output);
    let said = warnings(&output);
    assert_eq!(said.len(), 1, "{}", text(&output));
    assert!(
        said[0].starts_with("bulletproofctl: warning: password file")
            && said[0].contains(p(&password))
            && said[0].contains("mode 0644")
            && said[0].contains("chmod 600"),
        "{said:?}"
    );

    chmod(&password, 0o600);
    let output = ok(keygen(dir.path(), "private", Some(&password)));
    assert_no_secret(&output);
    assert_eq!(warnings(&output), Vec::<String>::new());
    assert!(!text(&output).contains(p(&password)), "{}", text(&output));
}

#[test]
fn sign_checks_the_secret_key_and_its_password_file() {
    let dir = scratch();
    let password = password_file(dir.path(), "pw", 0o600);
    ok(keygen(dir.path(), "k", Some(&password)));
    let (sk, pk) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    let data = dir.path().join("data");
    fs::write(&data, "signed bytes\n").unwrap();
    let signature = dir.path().join("data.minisig");
    let sign = |password: &Path| {
        ctl(&[
            "sign",
            p(&data),
            "--secret-key",
            p(&sk),
            "--password-file",
            p(password),
        ])
    };

    for mode in [0o666, 0o660] {
        chmod(&sk, mode);
        assert_refused(&sign(&password), &sk, &format!("mode {mode:04o}"));
        assert!(!signature.exists(), "signed with a refused key file");
    }
    chmod(&sk, 0o600);
    chmod(&password, 0o622);
    assert_refused(&sign(&password), &password, "mode 0622");
    assert!(!signature.exists(), "signed with a refused password file");

    // Both readable by others: signed, one warning for each.
    chmod(&sk, 0o644);
    chmod(&password, 0o604);
    let output = ok(sign(&password));
    assert_no_secret(&output);
    let said = warnings(&output);
    assert_eq!(said.len(), 2, "{}", text(&output));
    assert!(said[0].contains("secret key") && said[0].contains("mode 0644"));
    assert!(said[1].contains("password file") && said[1].contains("mode 0604"));
    ok(ctl(&["verify", p(&data), "--public-key", p(&pk)]));

    // Private: not a word about them.
    chmod(&sk, 0o600);
    chmod(&password, 0o400);
    let output = ok(sign(&password));
    assert_eq!(warnings(&output), Vec::<String>::new(), "{}", text(&output));
}

#[test]
fn a_fifo_password_file_is_refused_without_hanging() {
    let dir = scratch();
    let fifo = dir.path().join("pw");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo.as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (sk, pk) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    let command = ctl_command(&[
        "keygen",
        "--secret-key",
        p(&sk),
        "--public-key",
        p(&pk),
        "--password-file",
        p(&fifo),
    ]);
    let output = run_bounded(command, DEADLINE);
    assert_refused(&output, &fifo, "a FIFO, not a regular file");
    assert!(!sk.exists());
}

#[test]
fn password_and_key_files_of_another_user_are_refused() {
    let dir = scratch();
    let password = password_file(dir.path(), "pw", 0o600);
    std::os::unix::fs::chown(&password, Some(NOBODY), Some(NOBODY)).unwrap();
    let output = keygen(dir.path(), "k", Some(&password));
    assert_refused(&output, &password, "owned by uid 65534");
    assert!(!dir.path().join("k.key").exists());

    ok(keygen(dir.path(), "plain", None));
    let sk = dir.path().join("plain.key");
    std::os::unix::fs::chown(&sk, Some(NOBODY), Some(NOBODY)).unwrap();
    let data = dir.path().join("data");
    fs::write(&data, "x").unwrap();
    let output = ctl(&["sign", p(&data), "--secret-key", p(&sk)]);
    assert_refused(&output, &sk, "owned by uid 65534");
}

#[test]
fn log_verify_checks_the_initial_log_key() {
    let dir = scratch();
    let root = dir.path().join("root");
    let exported = dir.path().join("initial.key");
    ok(ctl(&[
        "install",
        "--root",
        p(&root),
        "--mounts",
        "no",
        "--no-venv",
        "--log-key-out",
        p(&exported),
    ]));
    ok(ctl(&["guard", "--once", "--root", p(&root)]));
    let log = root.join("logs/security/guard.jsonl");
    let key_hex = fs::read_to_string(&exported).unwrap();
    let verify = || {
        ctl(&[
            "log",
            "verify",
            p(&log),
            "--root",
            p(&root),
            "--initial-key",
            p(&exported),
        ])
    };
    // Whoever can write the key can make a forged chain verify.
    for mode in [0o666, 0o620] {
        chmod(&exported, mode);
        let output = verify();
        assert_refused(&output, &exported, &format!("mode {mode:04o}"));
        assert!(!text(&output).contains(key_hex.trim()), "{}", text(&output));
    }
    chmod(&exported, 0o644);
    let output = ok(verify());
    let said = warnings(&output);
    assert_eq!(said.len(), 1, "{}", text(&output));
    assert!(said[0].contains("initial log key") && said[0].contains("mode 0644"));
    assert!(!text(&output).contains(key_hex.trim()));
    chmod(&exported, 0o400);
    let output = ok(verify());
    assert_eq!(warnings(&output), Vec::<String>::new(), "{}", text(&output));
}
