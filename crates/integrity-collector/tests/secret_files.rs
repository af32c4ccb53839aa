//! Secret files (issue 16, item 7): `--token-file`, `--sign-key` and `--password-file`
//! are refused when group or others can write them (or their directory), when another
//! user owns them, or when they are not regular files (a FIFO must not hang us); a file
//! others can only read works with one warning line; a private one works silently. The
//! secret never appears in any output. Refusals exit 2 (nothing written or uploaded),
//! before anything is scanned or sent.

use metadata_service::config::Config;
use metadata_service::Background;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

#[path = "../../../tests-support/racer.rs"]
#[allow(dead_code)]
mod racer;
use racer::{run_bounded, NOBODY};

const BIN: &str = env!("CARGO_BIN_EXE_integrity-collector");
const TOKEN: &str = "secret-upload-token-4f1c9e";
const PASSWORD: &str = "secret-password-words-9d2b";
/// No run on these tiny trees may take longer (a FIFO must not hang the collector).
const DEADLINE: Duration = Duration::from_secs(30);

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        let root = dir.path().join("tree/etc");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("hostname"), "golden\n").unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `name` with `content`, mode `mode` exactly.
    fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, content).unwrap();
        chmod(&path, mode);
        path
    }

    fn collect(&self, image_id: &str, extra: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command
            .arg("--root")
            .arg(self.path("tree"))
            .args(["--image-id", image_id, "--quiet", "--upload-attempts", "1"])
            .args(extra)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("BULLETPROOF_TOKEN");
        run_bounded(command, DEADLINE)
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Neither stdout nor stderr carries a secret.
fn assert_no_secret(output: &Output) {
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        for secret in [TOKEN, PASSWORD] {
            assert!(!text.contains(secret), "secret in the output: {text}");
        }
    }
}

/// Refused: exit 2, one error naming the file and saying why.
fn assert_refused(output: &Output, file: &Path, why: &str) {
    assert_no_secret(output);
    let said = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains(p(file)), "{said}");
    assert!(said.contains(why), "{said}");
    assert!(said.contains("refused"), "{said}");
}

fn service(data: &Path) -> Background {
    let mut config = Config::new("127.0.0.1:0", data);
    config.tokens = vec![TOKEN.to_owned()];
    Background::start(config).unwrap()
}

fn status_of(server: &Background, image_id: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "GET /baselines/{image_id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn token_files_others_can_write_are_refused_and_nothing_is_uploaded() {
    let scratch = Scratch::new();
    let server = service(&scratch.path("data"));
    let url = format!("http://{}", server.addr);
    for (n, mode) in [0o666, 0o620, 0o602].into_iter().enumerate() {
        let token = scratch.file("token", &format!("{TOKEN}\n"), mode);
        let id = format!("refused-{n}");
        let output = scratch.collect(&id, &["--server", &url, "--token-file", p(&token)]);
        assert_refused(&output, &token, &format!("mode {mode:04o}"));
        assert!(stderr(&output).contains("chmod 600"), "{}", stderr(&output));
        assert_eq!(
            status_of(&server, &id),
            404,
            "uploaded with a refused token"
        );
    }
    // A private file in a directory others can write (no sticky bit): refused too.
    let open = scratch.path("open");
    fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let token = scratch.file("open/token", TOKEN, 0o600);
    let output = scratch.collect(
        "refused-dir",
        &["--server", &url, "--token-file", p(&token)],
    );
    assert_refused(&output, &token, "without the sticky bit");
    assert_eq!(status_of(&server, "refused-dir"), 404);
}

#[test]
fn a_readable_token_file_works_with_one_warning_a_private_one_silently() {
    let scratch = Scratch::new();
    let server = service(&scratch.path("data"));
    let url = format!("http://{}", server.addr);
    let token = scratch.file("token", &format!("{TOKEN}\n"), 0o644);
    let output = scratch.collect("readable", &["--server", &url, "--token-file", p(&token)]);
    assert_no_secret(&output);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert_eq!(status_of(&server, "readable"), 200);
    let warnings: Vec<&str> = said.lines().filter(|l| l.contains(p(&token))).collect();
    assert_eq!(warnings.len(), 1, "{said}");
    assert!(
        warnings[0].starts_with("integrity-collector: warning: --token-file")
            && warnings[0].contains("mode 0644")
            && warnings[0].contains("chmod 600"),
        "{said}"
    );

    chmod(&token, 0o600);
    let output = scratch.collect("private", &["--server", &url, "--token-file", p(&token)]);
    assert_no_secret(&output);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert_eq!(status_of(&server, "private"), 200);
    assert!(!said.contains(p(&token)), "{said}");
    assert!(!said.contains("readable by"), "{said}");
}

#[test]
fn a_fifo_token_file_is_refused_without_hanging() {
    let scratch = Scratch::new();
    let fifo = scratch.path("token");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo.as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // Bounded: a collector that opened the FIFO for reading would wait for a writer.
    let output = scratch.collect(
        "fifo",
        &["--server", "http://127.0.0.1:9", "--token-file", p(&fifo)],
    );
    assert_refused(&output, &fifo, "a FIFO, not a regular file");
}

#[test]
fn token_and_password_files_of_another_user_are_refused() {
    let scratch = Scratch::new();
    let token = scratch.file("token", TOKEN, 0o600);
    std::os::unix::fs::chown(&token, Some(NOBODY), Some(NOBODY)).unwrap();
    let output = scratch.collect(
        "nobody",
        &["--server", "http://127.0.0.1:9", "--token-file", p(&token)],
    );
    assert_refused(&output, &token, "owned by uid 65534");
    assert!(!stderr(&output).contains("upload attempt"));

    let (sk, pk) = (scratch.path("c.key"), scratch.path("c.pub"));
    let password = scratch.file("pw", &format!("{PASSWORD}\n"), 0o600);
    integrity_trust::keygen(&sk, &pk, Some(&password)).unwrap();
    std::os::unix::fs::chown(&password, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = scratch.path("baseline.json");
    let output = scratch.collect(
        "nobody",
        &[
            "--output",
            p(&out),
            "--sign-key",
            p(&sk),
            "--password-file",
            p(&password),
        ],
    );
    assert_refused(&output, &password, "owned by uid 65534");
    assert!(!out.exists());
}

#[test]
fn sign_key_and_password_files_are_checked_like_the_token() {
    let scratch = Scratch::new();
    let (sk, pk) = (scratch.path("c.key"), scratch.path("c.pub"));
    let password = scratch.file("pw", &format!("{PASSWORD}\n"), 0o600);
    integrity_trust::keygen(&sk, &pk, Some(&password)).unwrap();
    let out = scratch.path("baseline.json");
    let sign = |scratch: &Scratch| {
        scratch.collect(
            "signed",
            &[
                "--output",
                p(&out),
                "--sign-key",
                p(&sk),
                "--password-file",
                p(&password),
            ],
        )
    };

    for mode in [0o666, 0o620] {
        chmod(&password, mode);
        let output = sign(&scratch);
        assert_refused(&output, &password, &format!("mode {mode:04o}"));
        assert!(!out.exists(), "written with a refused password file");
    }
    chmod(&password, 0o600);
    for mode in [0o666, 0o660] {
        chmod(&sk, mode);
        let output = sign(&scratch);
        assert_refused(&output, &sk, &format!("mode {mode:04o}"));
        assert!(!out.exists(), "written with a refused key file");
    }

    // Readable by others: signed, one warning line per file.
    chmod(&sk, 0o644);
    chmod(&password, 0o640);
    let output = sign(&scratch);
    assert_no_secret(&output);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert_eq!(said.lines().count(), 2, "{said}");
    for (file, mode) in [(&sk, "mode 0644"), (&password, "mode 0640")] {
        assert!(
            said.lines()
                .any(|line| line.starts_with("integrity-collector: warning: ")
                    && line.contains(p(file))
                    && line.contains(mode)),
            "{said}"
        );
    }
    assert!(integrity_trust::signature_path(&out).exists());

    // Private: signed, and not a word (--quiet).
    chmod(&sk, 0o600);
    chmod(&password, 0o400);
    let output = sign(&scratch);
    assert_no_secret(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
}
