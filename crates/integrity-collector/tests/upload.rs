//! `integrity-collector --server`: uploads to a real metadata service (in-process, on
//! 127.0.0.1 with a real sled directory), and the retry rule against a scripted server
//! (connection errors and 5xx retried, 4xx never).

use metadata_service::config::Config;
use metadata_service::Background;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_integrity-collector");
const TOKEN: &str = "upload-token-0123456789";

fn tree(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("tree");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/hostname"), "golden\n").unwrap();
    root
}

fn collect(root: &Path, image_id: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["--root"])
        .arg(root)
        .args(["--image-id", image_id, "--quiet"])
        .args(extra)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("BULLETPROOF_TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn service(data: &Path, tokens: &[&str], max_body: Option<u64>) -> Background {
    let mut config = Config::new("127.0.0.1:0", data);
    config.tokens = tokens.iter().map(|token| token.to_string()).collect();
    if let Some(max) = max_body {
        config.limits.max_body_bytes = max;
    }
    Background::start(config).unwrap()
}

fn fetch(addr: std::net::SocketAddr, image_id: &str) -> (u16, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /baselines/{image_id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, answer[split + 4..].to_vec())
}

#[test]
fn uploads_the_exact_bytes_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let server = service(&dir.path().join("data"), &[TOKEN], None);
    let url = format!("http://{}", server.addr);
    let file = dir.path().join("baseline.json");
    let output = collect(
        &root,
        "golden-1",
        &[
            "--server",
            &url,
            "--token",
            TOKEN,
            "--output",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "--output FILE: nothing on stdout");
    let (status, stored) = fetch(server.addr, "golden-1");
    assert_eq!(status, 200);
    assert_eq!(stored, std::fs::read(&file).unwrap());

    // --server alone: nothing on stdout; the token may come from the environment.
    let output = collect(
        &root,
        "golden-2",
        &["--server", &url],
        &[("BULLETPROOF_TOKEN", TOKEN)],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    assert_eq!(fetch(server.addr, "golden-2").0, 200);

    // --output - with --server: both.
    let output = collect(
        &root,
        "golden-3",
        &["--server", &url, "--token", TOKEN, "--output", "-"],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(fetch(server.addr, "golden-3").1, output.stdout);
}

#[test]
fn refusals_are_explained_and_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let server = service(&dir.path().join("data"), &[TOKEN], Some(200));
    let url = format!("http://{}", server.addr);

    let no_token = collect(&root, "img", &["--server", &url], &[]);
    assert_eq!(no_token.status.code(), Some(2));
    assert!(stderr(&no_token).contains("401"), "{}", stderr(&no_token));
    assert!(
        stderr(&no_token).contains("--token"),
        "{}",
        stderr(&no_token)
    );
    assert!(!stderr(&no_token).contains("retrying"));

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "wrong-token\n").unwrap();
    let wrong = collect(
        &root,
        "img",
        &[
            "--server",
            &url,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        !stderr(&wrong).contains("wrong-token"),
        "token echoed: {}",
        stderr(&wrong)
    );

    let too_large = collect(&root, "img", &["--server", &url, "--token", TOKEN], &[]);
    assert_eq!(too_large.status.code(), Some(2));
    assert!(
        stderr(&too_large).contains("larger than the service accepts"),
        "{}",
        stderr(&too_large)
    );
}

#[test]
fn a_409_is_success_only_for_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let server = service(&dir.path().join("data"), &[], None);
    let url = format!("http://{}", server.addr);
    assert_eq!(
        collect(&root, "img", &["--server", &url], &[])
            .status
            .code(),
        Some(0)
    );
    // Same tree, same SOURCE_DATE_EPOCH: the same bytes (a retried upload).
    let again = collect(&root, "img", &["--server", &url], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    // A changed tree under the same image id is a conflict.
    std::fs::write(root.join("etc/hostname"), "changed\n").unwrap();
    let changed = collect(&root, "img", &["--server", &url], &[]);
    assert_eq!(changed.status.code(), Some(2));
    let text = stderr(&changed);
    assert!(
        text.contains("already stored") && text.contains("--image-id"),
        "{text}"
    );
}

/// A server that answers each connection with the next scripted status (the last one
/// repeats) and counts requests.
fn scripted(statuses: &'static [u16]) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let status = statuses[n.min(statuses.len() - 1)];
            // Read the request head and its body.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let read = stream.read(&mut chunk).unwrap_or(0);
                if read == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..read]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map(|value| value.trim().parse().unwrap())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let body = format!(r#"{{"error":"x","detail":"scripted {status}"}}"#);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, count)
}

#[test]
fn connection_errors_and_5xx_are_retried_4xx_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());

    let (url, count) = scripted(&[503, 500, 201]);
    let output = collect(&root, "img", &["--server", &url], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert_eq!(stderr(&output).matches("retrying").count(), 2);

    let (url, count) = scripted(&[400]);
    let output = collect(&root, "img", &["--server", &url], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(count.load(Ordering::SeqCst), 1, "a 4xx is never retried");
    assert!(
        stderr(&output).contains("scripted 400"),
        "{}",
        stderr(&output)
    );

    let (url, count) = scripted(&[502]);
    let output = collect(
        &root,
        "img",
        &["--server", &url, "--upload-attempts", "3"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert!(
        stderr(&output).contains("after 3 attempt"),
        "{}",
        stderr(&output)
    );

    // Nobody listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = collect(
        &root,
        "img",
        &[
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--upload-attempts",
            "2",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).matches("retrying").count(),
        1,
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_server_arguments_fail_before_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    for args in [
        vec!["--server", "localhost:8080"],
        vec![
            "--server",
            "https://127.0.0.1:1",
            "--ca-cert",
            "/nonexistent.pem",
        ],
        vec![
            "--server",
            "http://127.0.0.1:1",
            "--token-file",
            "/nonexistent",
        ],
    ] {
        let output = collect(&root, "img", &args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!stderr(&output).contains("retrying"), "{args:?}");
    }
}

#[test]
fn uploads_over_https_trusting_a_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut config = Config::new("127.0.0.1:0", dir.path().join("data"));
    config.tokens = vec![TOKEN.to_owned()];
    config.tls = Some((cert.clone(), key));
    let server = Background::start(config).unwrap();
    let url = format!("https://localhost:{}", server.addr.port());

    let trusted = collect(
        &root,
        "img-tls",
        &[
            "--server",
            &url,
            "--token",
            TOKEN,
            "--ca-cert",
            cert.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(trusted.status.code(), Some(0), "{}", stderr(&trusted));
    // Without the CA the self-signed certificate is refused (and not retried forever).
    let untrusted = collect(
        &root,
        "img-tls-2",
        &["--server", &url, "--token", TOKEN, "--upload-attempts", "1"],
        &[],
    );
    assert_eq!(untrusted.status.code(), Some(2));
}

#[test]
fn several_servers_are_tried_in_order_the_next_on_5xx_or_no_answer_never_on_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let server = service(&dir.path().join("data"), &[TOKEN], None);
    let live = format!("http://{}", server.addr);
    let dead = format!(
        "http://{}",
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    );
    let (failing, failed) = scripted(&[503]);
    // One attempt: the fallback happens within it, not as a retry.
    let output = collect(
        &root,
        "img-a",
        &[
            "--server",
            &dead,
            "--server",
            &failing,
            "--server",
            &live,
            "--token",
            TOKEN,
            "--upload-attempts",
            "1",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(failed.load(Ordering::SeqCst), 1);
    assert_eq!(fetch(server.addr, "img-a").0, 200);

    // A 4xx is an answer: the next service is not asked.
    let (refusing, refused) = scripted(&[400]);
    let output = collect(
        &root,
        "img-b",
        &["--server", &refusing, "--server", &live, "--token", TOKEN],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(refused.load(Ordering::SeqCst), 1);
    assert_eq!(fetch(server.addr, "img-b").0, 404);
}
