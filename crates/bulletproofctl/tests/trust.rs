//! `bulletproofctl keygen | sign | verify` against the real `minisign` command (Debian
//! package, installed by scripts/test), both directions, encrypted and unencrypted
//! keys, and the forgeries that must be refused.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{ctl, p, text};

/// Runs `minisign` with `input` on stdin (its password prompt reads stdin when it is
/// not a terminal).
fn minisign(args: &[&str], input: &str) -> Output {
    let mut child = Command::new("minisign")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the minisign command (Debian package minisign; scripts/test installs it)");
    // minisign may exit before reading its stdin (nothing to ask): a closed pipe is fine.
    if let Err(error) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn our_keys_and_signatures_verify_with_minisign() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("baseline.json");
    fs::write(&data, b"{\"image_id\":\"a\"}\n").unwrap();
    let password = dir.path().join("password");
    fs::write(&password, "correct horse\n").unwrap();
    for encrypted in [false, true] {
        let sk = dir.path().join(format!("k{encrypted}.key"));
        let pk = dir.path().join(format!("k{encrypted}.pub"));
        let mut args = vec!["keygen", "--secret-key", p(&sk), "--public-key", p(&pk)];
        if encrypted {
            args.extend(["--password-file", p(&password)]);
        }
        let made = ctl(&args);
        assert!(made.status.success(), "{}", text(&made));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Never overwritten.
        assert_eq!(ctl(&args).status.code(), Some(2));

        let mut args = vec![
            "sign",
            p(&data),
            "--secret-key",
            p(&sk),
            "--trusted-comment",
            "image:a timestamp:2026-11-23T07:31:43Z",
        ];
        if encrypted {
            args.extend(["--password-file", p(&password)]);
        }
        let signed = ctl(&args);
        assert!(signed.status.success(), "{}", text(&signed));
        let checked = minisign(&["-V", "-p", p(&pk), "-m", p(&data)], "");
        assert!(checked.status.success(), "minisign -V: {}", text(&checked));
        assert!(
            text(&checked).contains("image:a timestamp:2026-11-23T07:31:43Z"),
            "{}",
            text(&checked)
        );
        // And ours agrees.
        let ours = ctl(&["verify", p(&data), "--public-key", p(&pk)]);
        assert!(ours.status.success(), "{}", text(&ours));
        assert!(String::from_utf8_lossy(&ours.stdout)
            .contains("Trusted comment: image:a timestamp:2026-11-23T07:31:43Z"));
    }
    // An encrypted key without its password, and no terminal: refused, not prompted.
    let sk = dir.path().join("ktrue.key");
    let refused = ctl(&["sign", p(&data), "--secret-key", p(&sk)]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused).contains("--password-file"),
        "{}",
        text(&refused)
    );
    let wrong = dir.path().join("wrong");
    fs::write(&wrong, "incorrect\n").unwrap();
    let refused = ctl(&[
        "sign",
        p(&data),
        "--secret-key",
        p(&sk),
        "--password-file",
        p(&wrong),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(!text(&refused).contains("incorrect"), "password echoed");
}

#[test]
fn minisign_keys_and_signatures_verify_with_ours() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    fs::write(&data, vec![42u8; 100_000]).unwrap();
    // Unencrypted (-W) and encrypted keys made by minisign.
    for encrypted in [false, true] {
        let sk = dir.path().join(format!("m{encrypted}.key"));
        let pk = dir.path().join(format!("m{encrypted}.pub"));
        let mut args = vec!["-G", "-f", "-p", p(&pk), "-s", p(&sk)];
        if !encrypted {
            args.push("-W");
        }
        let made = minisign(&args, "pw-for-minisign\npw-for-minisign\n");
        assert!(made.status.success(), "minisign -G: {}", text(&made));

        // minisign signs (prehashed, its default); ours verifies.
        let signed = minisign(
            &[
                "-S",
                "-s",
                p(&sk),
                "-m",
                p(&data),
                "-t",
                "signed by minisign",
            ],
            "pw-for-minisign\n",
        );
        assert!(signed.status.success(), "minisign -S: {}", text(&signed));
        let ours = ctl(&["verify", p(&data), "--public-key", p(&pk)]);
        assert!(ours.status.success(), "{}", text(&ours));
        assert!(
            String::from_utf8_lossy(&ours.stdout).contains("Trusted comment: signed by minisign")
        );

        // Ours signs with minisign's key; minisign verifies.
        let password = dir.path().join("pw");
        fs::write(&password, "pw-for-minisign\n").unwrap();
        let mut args = vec!["sign", p(&data), "--secret-key", p(&sk)];
        if encrypted {
            args.extend(["--password-file", p(&password)]);
        }
        let resigned = ctl(&args);
        assert!(resigned.status.success(), "{}", text(&resigned));
        let checked = minisign(&["-V", "-p", p(&pk), "-m", p(&data)], "");
        assert!(checked.status.success(), "{}", text(&checked));
    }

    // Legacy (non-prehashed) signatures only on request.
    let sk = dir.path().join("mfalse.key");
    let pk = dir.path().join("mfalse.pub");
    let legacy = minisign(&["-S", "-l", "-s", p(&sk), "-m", p(&data)], "");
    assert!(legacy.status.success(), "minisign -S -l: {}", text(&legacy));
    assert_eq!(
        ctl(&["verify", p(&data), "--public-key", p(&pk)])
            .status
            .code(),
        Some(1)
    );
    let allowed = ctl(&["verify", p(&data), "--public-key", p(&pk), "--allow-legacy"]);
    assert!(allowed.status.success(), "{}", text(&allowed));
}

#[test]
fn forgeries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("file");
    fs::write(&data, b"the exact bytes").unwrap();
    let (sk, pk) = (dir.path().join("a.key"), dir.path().join("a.pub"));
    let (_, other_pk) = (dir.path().join("b.key"), dir.path().join("b.pub"));
    assert!(
        ctl(&["keygen", "--secret-key", p(&sk), "--public-key", p(&pk)])
            .status
            .success()
    );
    assert!(ctl(&[
        "keygen",
        "--secret-key",
        p(&dir.path().join("b.key")),
        "--public-key",
        p(&other_pk)
    ])
    .status
    .success());
    assert!(ctl(&[
        "sign",
        p(&data),
        "--secret-key",
        p(&sk),
        "--trusted-comment",
        "image:A"
    ])
    .status
    .success());
    let sig_path = dir.path().join("file.minisig");
    let signature = fs::read_to_string(&sig_path).unwrap();
    let verify = |data: &Path, pk: &Path, sig: &str| {
        fs::write(dir.path().join("x.minisig"), sig).unwrap();
        ctl(&[
            "verify",
            p(data),
            "--public-key",
            p(pk),
            "--signature",
            p(&dir.path().join("x.minisig")),
        ])
        .status
        .code()
    };
    assert_eq!(verify(&data, &pk, &signature), Some(0));

    // A flipped byte in the signed data.
    let flipped = dir.path().join("flipped");
    let mut bytes = fs::read(&data).unwrap();
    bytes[3] ^= 1;
    fs::write(&flipped, bytes).unwrap();
    assert_eq!(verify(&flipped, &pk, &signature), Some(1));
    // The wrong key.
    assert_eq!(verify(&data, &other_pk, &signature), Some(1));
    // An edited trusted comment (image A's signature presented as image B's).
    let edited = signature.replace("trusted comment: image:A", "trusted comment: image:B");
    assert_ne!(edited, signature);
    assert_eq!(verify(&data, &pk, &edited), Some(1));
    // Truncated and garbage signature files.
    assert_eq!(
        verify(&data, &pk, &signature[..signature.len() / 2]),
        Some(1)
    );
    assert_eq!(verify(&data, &pk, "garbage\n"), Some(1));
    assert_eq!(verify(&data, &pk, ""), Some(1));
    let mut lines: Vec<&str> = signature.lines().collect();
    lines[1] = "RWQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(verify(&data, &pk, &lines.join("\n")), Some(1));
}
