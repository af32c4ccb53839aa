//! Token holders against each other (issue 16): a slow uploader cannot starve the
//! others' uploads, and nobody but the poster (or an admin) can put a signature on a
//! baseline when the service has no collector key to check it with. Real binary, real
//! store, loopback; each failed on the code before (uploads waited for the slow ones'
//! request timeout; any token could squat a signature).

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const ALICE: &str = "alice-token-0123456789abcdef";
const MALLORY: &str = "mallory-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// A minisign key pair in `dir` and a signature of `bytes` for `image_id`.
fn sign(dir: &Path, name: &str, bytes: &[u8], image_id: &str) -> String {
    let secret = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    if !secret.exists() {
        integrity_trust::keygen(&secret, &public, None).unwrap();
    }
    let key =
        integrity_trust::load_secret_key(&secret, integrity_trust::Password::PromptIfTerminal)
            .unwrap();
    integrity_trust::sign(
        &key,
        bytes,
        &format!("image_id:{image_id}\ttimestamp:1764547200"),
    )
    .unwrap()
}

#[test]
fn slow_uploads_do_not_starve_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--token", ALICE, "--request-timeout", "60"]);
    // Two authenticated uploads announce 1 MB and send one byte: as many as the
    // service validates at once (2).
    let slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            write!(
                stream,
                "POST /baselines HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{"
            )
            .unwrap();
            stream
        })
        .collect();
    // Another upload is stored at once (before: after the slow ones' 60 s timeout).
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent();
    let started = Instant::now();
    let (key, value) = bearer(ALICE);
    let answer = agent
        .post(server.url("/baselines"))
        .header(key, &value)
        .send(&baseline("img-fast", 10)[..])
        .expect("an upload behind two slow ones must not wait for their timeout");
    assert_eq!(answer.status().as_u16(), 201);
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(slow);
}

#[test]
fn only_the_poster_or_an_admin_may_sign_without_a_collector_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let admin = format!("admin:ops:{ADMIN}");
    let server = start(
        dir.path(),
        &[
            "--token",
            ALICE,
            "--token",
            MALLORY,
            "--token",
            &admin,
            "--token",
            "read:dashboard:read-token-0123456789abcdef",
        ],
    );
    let doc = baseline("img-a", 10);
    let (key, alice) = bearer(ALICE);
    assert_eq!(
        post(&server, "/baselines", &doc, &[(key, &alice)]).status,
        201
    );

    // Mallory's well-formed signature (her own key, the right image id) is refused:
    // she did not post the baseline and nothing can check whose key is right.
    let bogus = sign(keys.path(), "mallory", &doc, "img-a");
    let (_, mallory) = bearer(MALLORY);
    let refused = put(
        &server,
        "/baselines/img-a/signature",
        bogus.as_bytes(),
        &[(key, &mallory)],
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["error"], "not_poster");
    assert_eq!(get(&server, "/baselines/img-a/signature", &[]).status, 404);

    // The poster signs; Mallory still cannot replace it.
    let real = sign(keys.path(), "alice", &doc, "img-a");
    assert_eq!(
        put(
            &server,
            "/baselines/img-a/signature",
            real.as_bytes(),
            &[(key, &alice)]
        )
        .status,
        201
    );
    assert_eq!(
        put(
            &server,
            "/baselines/img-a/signature",
            bogus.as_bytes(),
            &[(key, &mallory)]
        )
        .status,
        403
    );
    // The poster cannot silently swap it either: signatures are immutable (409)...
    let other = sign(keys.path(), "alice-2", &doc, "img-a");
    assert_eq!(
        put(
            &server,
            "/baselines/img-a/signature",
            other.as_bytes(),
            &[(key, &alice)]
        )
        .status,
        409
    );
    assert_eq!(
        get(&server, "/baselines/img-a/signature", &[]).body,
        real.as_bytes()
    );
    // ...but an admin may correct it.
    let (_, admin) = bearer(ADMIN);
    assert_eq!(
        put(
            &server,
            "/baselines/img-a/signature",
            other.as_bytes(),
            &[(key, &admin)]
        )
        .status,
        201
    );
    assert_eq!(
        get(&server, "/baselines/img-a/signature", &[]).body,
        other.as_bytes()
    );
    // A read token writes nothing.
    let (_, read) = bearer("read-token-0123456789abcdef");
    let answer = post(
        &server,
        "/baselines",
        &baseline("img-r", 1),
        &[(key, &read)],
    );
    assert_eq!(answer.status, 403, "{}", answer.text());
    // Who posted survives a restart.
    drop(server);
    let server = start(dir.path(), &["--token", ALICE, "--token", MALLORY]);
    let doc_b = baseline("img-b", 3);
    assert_eq!(
        post(&server, "/baselines", &doc_b, &[(key, &alice)]).status,
        201
    );
    drop(server);
    let server = start(dir.path(), &["--token", ALICE, "--token", MALLORY]);
    let bogus_b = sign(keys.path(), "mallory", &doc_b, "img-b");
    assert_eq!(
        put(
            &server,
            "/baselines/img-b/signature",
            bogus_b.as_bytes(),
            &[(key, &mallory)]
        )
        .status,
        403
    );
    let real_b = sign(keys.path(), "alice", &doc_b, "img-b");
    assert_eq!(
        put(
            &server,
            "/baselines/img-b/signature",
            real_b.as_bytes(),
            &[(key, &alice)]
        )
        .status,
        201
    );
}

#[test]
fn a_token_file_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::set_permissions(secrets.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = secrets.path().join("tokens");
    std::fs::write(&file, format!("# tokens\n{ALICE}\n")).unwrap();
    let run = |mode: u32| {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        std::process::Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .arg("--token-file")
            .arg(&file)
            .arg("--max-connections")
            .arg("0") // a configuration error after the token file: exits at once
            .env_remove("METADATA_TOKENS")
            .output()
            .unwrap()
    };
    for mode in [0o666, 0o620, 0o602] {
        let out = run(mode);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode:o}: {stderr}");
        assert!(
            stderr.contains("token file") && stderr.contains("chmod"),
            "{mode:o}: {stderr}"
        );
        assert!(!stderr.contains(ALICE));
    }
    // Readable by others: used, with a warning in the log; private: silent.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = start(dir.path(), &["--token-file", file.to_str().unwrap()]);
    let (key, alice) = bearer(ALICE);
    assert_eq!(
        post(
            &server,
            "/baselines",
            &baseline("img-t", 1),
            &[(key, &alice)]
        )
        .status,
        201
    );
    let log = server.log();
    assert!(log.contains("readable by group or others"), "{log}");
    assert!(!log.contains(ALICE));
    drop(server);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = start(dir.path(), &["--token-file", file.to_str().unwrap()]);
    assert!(!server.log().contains("readable by group or others"));
}

#[test]
fn uploads_that_do_not_fit_the_memory_budget_together_never_wait_for_each_other() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &[
            "--token",
            ALICE,
            "--max-body-bytes",
            "1048576",
            "--upload-memory-bytes",
            "1048576",
            "--request-timeout",
            "60",
        ],
    );
    // Two bodies of ~0.8 MB each: both fit alone, not together. Each sends half,
    // then the rest. Before, each held half the budget and waited for the other's
    // half until the request timeout (408).
    let bodies = [baseline("img-m1", 4000), baseline("img-m2", 4000)];
    assert!(bodies
        .iter()
        .all(|b| b.len() > 600_000 && b.len() < 1_000_000));
    let mut streams: Vec<TcpStream> = bodies
        .iter()
        .map(|body| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            write!(
                stream,
                "POST /baselines HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\
                 Connection: close\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(&body[..body.len() / 2]).unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for (stream, body) in streams.iter_mut().zip(&bodies) {
        let _ = stream.write_all(&body[body.len() / 2..]);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer).into_owned();
        statuses.push(text.get(9..12).unwrap_or("cut").to_owned());
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "uploads waited for each other: {statuses:?} after {:?}",
        started.elapsed()
    );
    assert!(statuses.contains(&"201".to_owned()), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| s == "201" || s == "503" || s == "cut"),
        "{statuses:?}"
    );
    // The refused one goes through when retried.
    let (key, alice) = bearer(ALICE);
    for body in &bodies {
        let status = post(&server, "/baselines", body, &[(key, &alice)]).status;
        assert!(status == 201 || status == 409, "{status}");
    }
}

#[test]
fn one_secret_under_two_scopes_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("admin:ops:{ALICE}");
    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--token", ALICE, "--token", &admin])
        .env_remove("METADATA_TOKENS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("two scopes"), "{stderr}");
    assert!(!stderr.contains(ALICE));
    // The same token given twice is one token.
    let server = start(dir.path(), &["--token", ALICE, "--token", ALICE]);
    let (key, alice) = bearer(ALICE);
    assert_eq!(
        post(
            &server,
            "/baselines",
            &baseline("img-d", 1),
            &[(key, &alice)]
        )
        .status,
        201
    );
}
