//! `integrity-collector --sign-key`: the exact bytes written or uploaded are signed,
//! the signature is checked by the real `minisign` command, stored beside the baseline
//! in the service, and the trusted comment names the image id and timestamp.

use metadata_service::config::Config;
use metadata_service::Background;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_integrity-collector");

fn tree(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("tree");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    root
}

fn collect(root: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(["--image-id", "img-signed", "--quiet"])
        .args(extra)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn signs_the_file_it_writes_and_minisign_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let (sk, pk) = (dir.path().join("c.key"), dir.path().join("c.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    let out = dir.path().join("baseline.json");
    let output = collect(&root, &["--output", p(&out), "--sign-key", p(&sk)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let sig = dir.path().join("baseline.json.minisig");
    let checked = Command::new("minisign")
        .args(["-V", "-p", p(&pk), "-m", p(&out)])
        .output()
        .expect("the minisign command (scripts/test installs it)");
    let said = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(checked.status.success(), "{said}{}", stderr(&checked));
    assert!(
        said.contains("image_id:img-signed\ttimestamp:2023-11-14T22:13:20Z"),
        "{said}"
    );
    // The signature covers the exact bytes: one changed byte and it fails.
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[10] ^= 1;
    let key = integrity_trust::load_public_key(&pk).unwrap();
    let text = std::fs::read_to_string(&sig).unwrap();
    assert!(integrity_trust::verify(&key, &bytes, &text, false).is_err());

    // Nowhere to put the signature, an encrypted key with no password and no terminal:
    // refused before scanning.
    assert_eq!(
        collect(&root, &["--sign-key", p(&sk)]).status.code(),
        Some(2)
    );
    let (esk, epk) = (dir.path().join("e.key"), dir.path().join("e.pub"));
    let password = dir.path().join("pw");
    std::fs::write(&password, "secret words\n").unwrap();
    integrity_trust::keygen(&esk, &epk, Some(&password)).unwrap();
    let out2 = dir.path().join("b2.json");
    let refused = collect(&root, &["--output", p(&out2), "--sign-key", p(&esk)]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("--password-file"),
        "{}",
        stderr(&refused)
    );
    assert!(!out2.exists());
    let signed = collect(
        &root,
        &[
            "--output",
            p(&out2),
            "--sign-key",
            p(&esk),
            "--password-file",
            p(&password),
        ],
    );
    assert_eq!(signed.status.code(), Some(0), "{}", stderr(&signed));
}

#[test]
fn uploads_the_signature_beside_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let (sk, pk) = (dir.path().join("c.key"), dir.path().join("c.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    let server = Background::start(Config::new("127.0.0.1:0", dir.path().join("store"))).unwrap();
    let url = format!("http://{}", server.addr);
    let output = collect(&root, &["--server", &url, "--sign-key", p(&sk)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let get = |path: &str| {
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        std::io::Write::write_all(
            &mut stream,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        answer[split + 4..].to_vec()
    };
    let bytes = get("/baselines/img-signed");
    let signature = String::from_utf8(get("/baselines/img-signed/signature")).unwrap();
    let key = integrity_trust::load_public_key(&pk).unwrap();
    let trusted = integrity_trust::verify(&key, &bytes, &signature, false).unwrap();
    assert!(trusted.starts_with("image_id:img-signed\t"), "{trusted}");

    // The same upload again (an answer lost, say): both are already there and the
    // stored signature is ours, so that is success.
    let again = collect(&root, &["--server", &url, "--sign-key", p(&sk)]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    // Another key's signature of the same bytes is not ours: refused.
    let (other, other_pk) = (dir.path().join("o.key"), dir.path().join("o.pub"));
    integrity_trust::keygen(&other, &other_pk, None).unwrap();
    let foreign = collect(&root, &["--server", &url, "--sign-key", p(&other)]);
    assert_eq!(foreign.status.code(), Some(2));
    assert!(
        stderr(&foreign).contains("not ours"),
        "{}",
        stderr(&foreign)
    );
}

#[test]
fn a_service_that_pins_collector_keys_takes_our_signed_upload_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let (sk, pk) = (dir.path().join("c.key"), dir.path().join("c.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    let mut config = Config::new("127.0.0.1:0", dir.path().join("store"));
    config.collector_keys = vec![pk.clone()];
    let server = Background::start(config).unwrap();
    let url = format!("http://{}", server.addr);
    let unsigned = collect(&root, &["--server", &url]);
    assert_eq!(unsigned.status.code(), Some(2));
    assert!(stderr(&unsigned).contains("403"), "{}", stderr(&unsigned));
    let signed = collect(&root, &["--server", &url, "--sign-key", p(&sk)]);
    assert_eq!(signed.status.code(), Some(0), "{}", stderr(&signed));
}
