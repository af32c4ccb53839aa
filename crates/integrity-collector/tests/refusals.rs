//! Refusals that must not look like network failures (issue 17): a wrong token on a
//! large upload, and TLS certificates, against a real metadata service (in-process, on
//! 127.0.0.1) and certificates made by the `openssl` CLI as an operator makes them.

use integrity_client::{Client, ClientConfig, ClientError, Fetched, Retry};
use metadata_service::config::Config;
use metadata_service::Background;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_integrity-collector");
const TOKEN: &str = "refusal-token-0123456789";

fn collect(root: &Path, image_id: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--root"])
        .arg(root)
        .args(["--image-id", image_id, "--quiet"])
        .args(extra)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("BULLETPROOF_TOKEN")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn small_tree(dir: &Path) -> PathBuf {
    let root = dir.join("tree");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/hostname"), "golden\n").unwrap();
    root
}

/// `GET path` over plain HTTP: the body.
fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    String::from_utf8_lossy(&answer[split + 4..]).into_owned()
}

/// `metadata_service_requests_total` for one route, method and status (0 if absent).
fn requests(addr: std::net::SocketAddr, route: &str, method: &str, status: u16) -> u64 {
    let metrics = get(addr, "/metrics");
    metrics
        .lines()
        .filter(|line| line.starts_with("metadata_service_requests_total{"))
        .filter(|line| {
            line.contains(&format!("route=\"{route}\""))
                && line.contains(&format!("method=\"{method}\""))
                && line.contains(&format!("status=\"{status}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_wrong_token_on_a_large_upload_is_one_refusal_not_retried_network_errors() {
    let dir = tempfile::tempdir().unwrap();
    // ≈ 20 MB of manifest: 5000 symlinks with 4000-byte targets.
    let root = dir.path().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    for n in 0..5000 {
        let target = format!("{n:05}{}", "t".repeat(3995));
        std::os::unix::fs::symlink(target, root.join(format!("link{n:05}"))).unwrap();
    }
    let manifest = dir.path().join("baseline.json");
    let mut config = Config::new("127.0.0.1:0", dir.path().join("data"));
    config.tokens = vec![TOKEN.to_owned()];
    let server = Background::start(config).unwrap();
    let url = format!("http://{}", server.addr);

    let started = Instant::now();
    let output = collect(
        &root,
        "big",
        &[
            "--server",
            &url,
            "--token",
            "not-the-token-0123456789",
            "--output",
            manifest.to_str().unwrap(),
            "--upload-attempts",
            "5",
        ],
    );
    let elapsed = started.elapsed();
    let text = stderr(&output);
    assert!(
        std::fs::metadata(&manifest).unwrap().len() > 19_000_000,
        "the manifest is meant to be ≈ 20 MB"
    );
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("refused the token (401)") && text.contains("--token"),
        "{text}"
    );
    assert!(!text.contains("retrying"), "{text}");
    assert!(!text.contains("not-the-token"), "token echoed: {text}");
    assert_eq!(requests(server.addr, "/baselines", "POST", 401), 1);
    // No backoff (the first would sleep ≥ 250 ms, all four ≥ 3.75 s); the scan and the
    // manifest take the rest.
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");

    // The right token still uploads the same 20 MB.
    let output = collect(&root, "big", &["--server", &url, "--token", TOKEN]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(requests(server.addr, "/baselines", "POST", 201), 1);
}

/// `openssl req -x509 …` exactly as the operator runs it (issue 17): a self-signed
/// P-256 certificate for 127.0.0.1, which openssl marks `CA:TRUE`.
fn openssl_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .expect("the openssl CLI (see scripts/test's package list)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

fn tls_service(dir: &Path, cert: &Path, key: &Path) -> Background {
    let mut config = Config::new("127.0.0.1:0", dir.join("data"));
    config.tokens = vec![TOKEN.to_owned()];
    config.tls = Some((cert.to_owned(), key.to_owned()));
    Background::start(config).unwrap()
}

fn client(url: &str, ca_cert: &Path) -> Client {
    let mut config = ClientConfig::new(url, "refusals-test");
    config.ca_cert = Some(ca_cert.to_owned());
    config.retry = Retry {
        attempts: 5,
        initial_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(8),
    };
    Client::new(&config).unwrap()
}

#[test]
fn the_certificate_openssl_makes_first_is_trusted_when_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let root = small_tree(dir.path());
    let (cert, key) = openssl_certificate(dir.path(), "service");
    let text = String::from_utf8_lossy(
        &Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(text.contains("CA:TRUE"), "the case of the issue: {text}");
    let server = tls_service(dir.path(), &cert, &key);
    let file = dir.path().join("baseline.json");

    // By its address, and by a name the certificate does not hold: a pin is exact, so
    // the name is not checked (the handshake signature still is).
    for url in [
        format!("https://127.0.0.1:{}", server.addr.port()),
        format!("https://localhost:{}", server.addr.port()),
    ] {
        let output = collect(
            &root,
            "pinned",
            &[
                "--server",
                &url,
                "--token",
                TOKEN,
                "--ca-cert",
                cert.to_str().unwrap(),
                "--output",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(output.status.code(), Some(0), "{url}: {}", stderr(&output));
        assert!(!stderr(&output).contains("retrying"));

        // The agent's fetch, through the same client and the same --ca-cert.
        match client(&url, &cert)
            .fetch_baseline("pinned", None, &mut |_, why, _| panic!("retried: {why}"))
        {
            Ok(Fetched::Body { bytes, .. }) => {
                assert_eq!(bytes, std::fs::read(&file).unwrap())
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[test]
fn an_untrusted_certificate_is_one_clear_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let root = small_tree(dir.path());
    let (cert, key) = openssl_certificate(dir.path(), "service");
    let (other, _) = openssl_certificate(dir.path(), "other");
    let server = tls_service(dir.path(), &cert, &key);
    let url = format!("https://127.0.0.1:{}", server.addr.port());

    let started = Instant::now();
    let output = collect(
        &root,
        "img",
        &[
            "--server",
            &url,
            "--token",
            TOKEN,
            "--ca-cert",
            other.to_str().unwrap(),
            "--upload-attempts",
            "5",
        ],
    );
    let elapsed = started.elapsed();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(!text.contains("retrying"), "{text}");
    let expected = format!(
        "TLS: the service's certificate is not trusted by --ca-cert {}: ",
        other.display()
    );
    assert!(text.contains(&expected), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    // Without --ca-cert: the public web roots do not know it either.
    let output = collect(&root, "img", &["--server", &url, "--token", TOKEN]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(!text.contains("retrying"), "{text}");
    assert!(
        text.contains("not trusted by the public web roots") && text.contains("--ca-cert"),
        "{text}"
    );

    // The agent's fetch: a refusal, at once.
    let started = Instant::now();
    let error = client(&url, &other)
        .fetch_baseline("img", None, &mut |_, why, _| panic!("retried: {why}"))
        .unwrap_err();
    assert!(matches!(error, ClientError::Untrusted { .. }), "{error:?}");
    assert!(error.to_string().starts_with(&expected), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
