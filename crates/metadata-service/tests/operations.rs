//! The service as an operator runs it: durability across `kill -9`, racing writers,
//! idle and slow clients, TLS, graceful shutdown, configuration and logs.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn kill_9_right_after_201_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A large baseline (sled keeps it in a blob file) and a small one (inline).
    let big = baseline("img-big", 20_000);
    let small = baseline("img-small", 3);
    let server = start(dir.path(), &[]);
    assert_eq!(post(&server, "/baselines", &big, &[]).status, 201);
    assert_eq!(post(&server, "/baselines", &small, &[]).status, 201);
    server.kill9();

    let server = start(dir.path(), &[]);
    assert_eq!(get(&server, "/baselines/img-big", &[]).body, big);
    assert_eq!(get(&server, "/baselines/img-small", &[]).body, small);
    let gz = get(
        &server,
        "/baselines/img-big",
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(gunzip(&gz.body), big);
    assert_eq!(
        get(&server, "/baselines", &[]).json()["baselines"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn kill_9_during_a_stream_of_writes_keeps_every_acknowledged_baseline_whole() {
    let dir = tempfile::tempdir().unwrap();
    let docs: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let id = format!("img-{i:03}");
            let doc = baseline(&id, 200 + (i % 7) * 3000);
            (id, doc)
        })
        .collect();
    let server = start(dir.path(), &[]);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let docs = Arc::new(docs);
    let writers: Vec<_> = (0..4)
        .map(|worker| {
            let docs = docs.clone();
            let acknowledged = acknowledged.clone();
            let url = server.url("/baselines");
            std::thread::spawn(move || {
                for (id, doc) in docs.iter().skip(worker).step_by(4) {
                    match client().post(&url).send(&doc[..]) {
                        Ok(response) if response.status() == 201 => {
                            acknowledged.lock().unwrap().push(id.clone())
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    // Kill while writes are in flight.
    while acknowledged.lock().unwrap().len() < 12 {
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill9();
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() < docs.len(),
        "the kill came too late to test anything"
    );

    let server = start(dir.path(), &[]);
    let listed = get(&server, "/baselines", &[]).json();
    let stored: Vec<&serde_json::Value> = listed["baselines"].as_array().unwrap().iter().collect();
    for id in &acknowledged {
        let doc = &docs.iter().find(|(doc_id, _)| doc_id == id).unwrap().1;
        assert_eq!(
            &get(&server, &format!("/baselines/{id}"), &[]).body,
            doc,
            "{id}"
        );
    }
    // Whatever else survived is whole: listed, and its bytes match its digest.
    for item in stored {
        let id = item["image_id"].as_str().unwrap();
        let body = get(&server, &format!("/baselines/{id}"), &[]).body;
        assert_eq!(sha256_hex(&body), item["sha256"].as_str().unwrap(), "{id}");
        let doc = &docs.iter().find(|(doc_id, _)| doc_id == id).unwrap().1;
        assert_eq!(&body, doc);
    }
}

#[test]
fn concurrent_posts_of_one_image_id_give_exactly_one_201() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let threads = 12;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            // Different bytes for the same image id: the winner's must be what is kept.
            let doc = String::from_utf8(baseline("img-race", 2000 + i))
                .unwrap()
                .into_bytes();
            let barrier = barrier.clone();
            let url = server.url("/baselines");
            std::thread::spawn(move || {
                barrier.wait();
                let status = client()
                    .post(&url)
                    .send(&doc[..])
                    .unwrap()
                    .status()
                    .as_u16();
                (status, doc)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect();
    let winners: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status == 201)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(results
        .iter()
        .all(|(status, _)| *status == 201 || *status == 409));
    assert_eq!(get(&server, "/baselines/img-race", &[]).body, winners[0].1);
}

#[test]
fn hundreds_of_idle_connections_do_not_stop_a_real_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    assert_eq!(
        post(&server, "/baselines", &baseline("img-idle", 10), &[]).status,
        201
    );
    let mut idle = Vec::new();
    for i in 0..400 {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        if i % 2 == 0 {
            // Half of them start a request and stall (slowloris).
            stream
                .write_all(b"GET /baselines/img-idle HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        idle.push(stream);
    }
    let started = Instant::now();
    let answer = get(&server, "/baselines/img-idle", &[]);
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
}

#[test]
fn idle_clients_cannot_hold_every_connection_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &["--max-connections", "20", "--header-timeout", "1"],
    );
    let mut idle = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        idle.push(stream);
    }
    // Every slot is taken by a stalled client; the header deadline frees them.
    let started = Instant::now();
    let answer = get(&server, "/healthz", &[]);
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The stalled ones were closed.
    let mut buf = [0u8; 256];
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let read = idle[0].read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..read]);
    assert!(read == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[test]
fn a_request_that_takes_too_long_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--request-timeout", "1"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(
            b"POST /baselines HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"image_id\"",
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        get(&server, "/baselines", &[]).json()["baselines"],
        serde_json::json!([])
    );
}

fn tls_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().to_vec())
}

fn tls_client(der: &[u8]) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(vec![Certificate::from_der(
            der,
        )
        .to_owned()])))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        // No automatic Accept-Encoding (nor decoding): the tests check stored forms.
        .accept_encoding(ureq::config::AutoHeaderValue::None)
        .build()
        .new_agent()
}

#[test]
fn serves_https_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = tls_files(dir.path());
    let data = dir.path().join("data");
    let server = start(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let agent = tls_client(&der);
    let doc = baseline("img-tls", 100);
    let url = format!("https://localhost:{}", server.addr.port());
    let created = agent
        .post(format!("{url}/baselines"))
        .send(&doc[..])
        .unwrap();
    assert_eq!(created.status(), 201);
    let mut fetched = agent
        .get(format!("{url}/baselines/img-tls"))
        .call()
        .unwrap();
    assert_eq!(fetched.body_mut().read_to_vec().unwrap(), doc);

    // Plain HTTP to the TLS port gets no answer.
    let (status, _) = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 0);
    // A client that does not trust the certificate is refused.
    let elsewhere = tempfile::tempdir().unwrap();
    let untrusting = tls_client(&tls_files(elsewhere.path()).2);
    assert!(untrusting.get(format!("{url}/healthz")).call().is_err());
    // Still serving.
    assert_eq!(
        agent.get(format!("{url}/healthz")).call().unwrap().status(),
        200
    );

    // A key that does not match the certificate is a start-up error.
    let other = tls_files(elsewhere.path());
    let output = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data2"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&other.1)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn sigterm_lets_an_in_flight_upload_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let doc = baseline("img-term", 5000);
    let (first, rest) = doc.split_at(doc.len() / 2);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "POST /baselines HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        doc.len()
    )
    .unwrap();
    stream.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    server.signal("TERM");
    // No new connections once shutting down (polled: a loaded machine may take a while
    // to deliver the signal).
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(server.addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited with a request open"
    );

    stream.write_all(rest).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = server.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(server.log().contains("SIGTERM"));

    let server = start(dir.path(), &[]);
    assert_eq!(get(&server, "/baselines/img-term", &[]).body, doc);
}

#[test]
fn sigint_stops_an_idle_service_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    // An idle keep-alive connection must not hold the shutdown up.
    let _idle = TcpStream::connect(server.addr).unwrap();
    server.signal("INT");
    let started = Instant::now();
    assert_eq!(server.wait(Duration::from_secs(10)).code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn config_file_environment_and_flags_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("service.toml");
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, "# fleet tokens\nfile-token-aaaaaaaa\n\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "tokens = [\"config-token-bbbbbbbb\"]\ntoken_file = \"{}\"\nmax_body_bytes = 5000\nlog_format = \"json\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    let server = start(&data, &["--config", config.to_str().unwrap()]);
    let doc = baseline("img-cfg", 3);
    for token in ["config-token-bbbbbbbb", "file-token-aaaaaaaa"] {
        let id = format!("img-{}", &token[..4]);
        let doc = baseline(&id, 3);
        let auth = format!("Bearer {token}");
        assert_eq!(
            post(&server, "/baselines", &doc, &[("Authorization", &auth)]).status,
            201
        );
    }
    assert_eq!(post(&server, "/baselines", &doc, &[]).status, 401);
    let big = baseline("img-big", 100);
    let answer = post(
        &server,
        "/baselines",
        &big,
        &[("Authorization", "Bearer file-token-aaaaaaaa")],
    );
    assert_eq!(answer.status, 413, "max_body_bytes from the file");
    // JSON logs: every line is an object.
    let log = server.log();
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(value["level"].is_string());
    }
    assert!(log.contains("baseline stored"));
    drop(server);

    // The environment overrides the file, a flag overrides the environment.
    let server = start_with(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--max-body-bytes",
            "100000000",
        ],
        &[
            ("METADATA_TOKENS", "env-token-cccccccc,env-token-dddddddd"),
            ("METADATA_MAX_BODY_BYTES", "10"),
        ],
    );
    assert_eq!(
        post(
            &server,
            "/baselines",
            &big,
            &[("Authorization", "Bearer env-token-dddddddd")]
        )
        .status,
        201
    );
    let other = baseline("img-other", 3);
    assert_eq!(
        post(
            &server,
            "/baselines",
            &other,
            &[("Authorization", "Bearer config-token-bbbbbbbb")]
        )
        .status,
        401,
        "METADATA_TOKENS replaces the file's tokens"
    );
    drop(server);

    // A typo in the config file is an error, not a silently ignored setting.
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\ntokenz = [\"x\"]\n").unwrap();
    let output = std::process::Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("tokenz"));
}

#[test]
fn help_documents_the_api_and_hides_token_values() {
    let output = std::process::Command::new(BIN)
        .arg("--help")
        .env("METADATA_TOKENS", "very-secret-token")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--listen",
        "--data",
        "--token",
        "METADATA_LISTEN",
        "METADATA_DATA_DIR",
        "METADATA_TOKENS",
        "--tls-cert",
        "POST /baselines",
    ] {
        assert!(help.contains(expected), "{expected} missing from --help");
    }
    assert!(!help.contains("very-secret-token"));
    let version = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
}

#[test]
fn restart_with_many_baselines_is_quick() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    for i in 0..30 {
        let id = format!("img-{i}");
        assert_eq!(
            post(&server, "/baselines", &baseline(&id, 2000), &[]).status,
            201
        );
    }
    drop(server);
    let started = Instant::now();
    let server = start(dir.path(), &[]);
    let elapsed = started.elapsed();
    assert_eq!(
        get(&server, "/baselines", &[]).json()["baselines"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    // Not a benchmark (see bench/service): a guard against loading every body at start.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn leftovers_of_an_interrupted_write_are_cleared_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let doc = baseline("img-kept", 10);
    assert_eq!(post(&server, "/baselines", &doc, &[]).status, 201);
    server.kill9();
    // What a crash between writing the bodies and committing the index leaves.
    let objects = dir.path().join("objects");
    let orphan = objects.join(format!("{}.json", "ab".repeat(32)));
    let temp = objects.join(".tmp-interrupted");
    std::fs::write(&orphan, b"{}").unwrap();
    std::fs::write(&temp, b"{\"image_id\":").unwrap();

    let server = start(dir.path(), &[]);
    // The temp file is removed; the orphan (not a baseline, so not rebuilt) is kept
    // aside in lost+found, never deleted.
    assert!(!orphan.exists() && !temp.exists());
    let kept = dir
        .path()
        .join("lost+found")
        .join(orphan.file_name().unwrap());
    assert_eq!(std::fs::read(kept).unwrap(), b"{}");
    assert_eq!(get(&server, "/baselines/img-kept", &[]).body, doc);
    assert_eq!(
        get(&server, "/baselines", &[]).json()["baselines"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Runs the service to its start-up error: `(exit code, stderr)`.
fn fails_to_start(args: &[&str], data: &std::path::Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("METADATA_TOKENS")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_start_up_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    for format in ["text", "json"] {
        let (code, stderr) = fails_to_start(
            &["--listen", &listen, "--log-format", format],
            &dir.path().join("data"),
        );
        assert_eq!(code, Some(2), "{stderr}");
        let message = format!("cannot listen on {listen}");
        assert_eq!(stderr.matches(&message).count(), 1, "{format}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|line| line.starts_with(&format!("metadata-service: {message}"))),
            "{format}: {stderr}"
        );
    }
}

#[test]
fn a_second_service_on_the_same_data_directory_is_refused_with_the_first_ones_pid() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = start(&data, &[]);
    let (code, stderr) = fails_to_start(&["--listen", "127.0.0.1:0"], &data);
    assert_eq!(code, Some(2), "{stderr}");
    let message = format!(
        "data directory {} is already in use by pid {}",
        data.display(),
        first.child.id()
    );
    assert_eq!(stderr.matches(&message).count(), 1, "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with(&format!("metadata-service: {message}"))),
        "{stderr}"
    );
    // The first one is untouched and still serves.
    assert_eq!(get(&first, "/healthz", &[]).status, 200);
    // Once it is gone (even by kill -9), its stale lock file stops nobody.
    first.kill9();
    let second = start(&data, &[]);
    assert_eq!(get(&second, "/healthz", &[]).status, 200);
    assert_eq!(
        std::fs::read_to_string(data.join("lock")).unwrap().trim(),
        second.child.id().to_string()
    );
}
