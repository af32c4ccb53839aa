//! The API against a real server on 127.0.0.1 with a real sled directory: every
//! endpoint and status of REFERENCE §2, and hostile requests that must change nothing.

mod support;

use std::io::Write;
use support::*;

const TOKEN: &str = "test-token-0123456789abcdef";

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

#[test]
fn post_then_get_returns_the_exact_bytes_in_every_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let doc = baseline("img-a", 500);

    let created = post(&server, "/baselines", &doc, &[]);
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("location"), Some("/baselines/img-a"));
    let etag = format!("\"{}\"", sha256_hex(&doc));
    assert_eq!(created.header("etag"), Some(etag.as_str()));
    assert_eq!(created.json()["entries"], 500);

    let plain = get(&server, "/baselines/img-a", &[]);
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, doc, "identity GET must be byte-for-byte");
    assert_eq!(plain.header("etag"), Some(etag.as_str()));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("content-type"), Some("application/json"));

    let gz = get(&server, "/baselines/img-a", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(gz.body.len() < doc.len() / 3, "stored compressed");
    assert_eq!(gunzip(&gz.body), doc);
    assert_eq!(gz.header("vary"), Some("accept-encoding"));
    assert_ne!(
        gz.header("etag"),
        Some(etag.as_str()),
        "one strong tag per form"
    );

    let zst = get(
        &server,
        "/baselines/img-a",
        &[("Accept-Encoding", "gzip, zstd")],
    );
    assert_eq!(zst.header("content-encoding"), Some("zstd"));
    assert_eq!(zstd::decode_all(&zst.body[..]).unwrap(), doc);

    let head = client()
        .head(server.url("/baselines/img-a"))
        .call()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        doc.len().to_string()
    );

    let listed = get(&server, "/baselines", &[]).json();
    let item = &listed["baselines"][0];
    assert_eq!(item["image_id"], "img-a");
    assert_eq!(item["timestamp"], "2026-11-23T07:31:43Z");
    assert_eq!(item["entries"], 500);
    assert_eq!(item["sha256"], sha256_hex(&doc));

    let missing = get(&server, "/baselines/img-b", &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not_found");
    assert!(missing.json()["detail"].is_string());
}

#[test]
fn if_none_match_answers_304_without_a_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let doc = baseline("img-etag", 50);
    assert_eq!(post(&server, "/baselines", &doc, &[]).status, 201);
    let first = get(
        &server,
        "/baselines/img-etag",
        &[("Accept-Encoding", "gzip")],
    );
    let etag = first.header("etag").unwrap().to_owned();

    let again = get(
        &server,
        "/baselines/img-etag",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &etag)],
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    // The tag of another form of the same bytes also matches (weak comparison).
    let plain = get(&server, "/baselines/img-etag", &[("If-None-Match", &etag)]);
    assert_eq!(plain.status, 304);
    let weak = format!("W/{etag}");
    assert_eq!(
        get(&server, "/baselines/img-etag", &[("If-None-Match", &weak)]).status,
        304
    );
    let changed = get(
        &server,
        "/baselines/img-etag",
        &[("If-None-Match", "\"0000\"")],
    );
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body, doc);
}

#[test]
fn a_stored_baseline_is_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let doc = baseline("img-imm", 3);
    assert_eq!(post(&server, "/baselines", &doc, &[]).status, 201);
    let other = String::from_utf8(doc.clone())
        .unwrap()
        .replace("07:31:43Z", "08:00:00Z");
    let conflict = post(&server, "/baselines", other.as_bytes(), &[]);
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.json()["error"], "exists");
    assert_eq!(conflict.json()["sha256"], sha256_hex(&doc));
    assert_eq!(get(&server, "/baselines/img-imm", &[]).body, doc);
}

#[test]
fn hostile_bodies_get_400_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let good = String::from_utf8(baseline("img-h", 2)).unwrap();
    let hex = format!("{:064x}", 0);
    let entry =
        |path: &str| format!(r#"{{"path":"{path}","sha256":"{hex}","mode":420,"uid":0,"gid":0}}"#);
    let doc = |id: &str, entries: &[String]| {
        format!(
            r#"{{"image_id":"{id}","timestamp":"2026-11-23T07:31:43Z","entries":[{}]}}"#,
            entries.join(",")
        )
    };
    let hostile: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("not json", "hello".into()),
        ("truncated", good[..good.len() / 2].to_owned()),
        ("array", "[]".into()),
        ("deeply nested", "[".repeat(200_000)),
        (
            "nested in an entry",
            good.replace(
                "\"mode\":420",
                &format!("\"mode\":{}1{}", "[".repeat(5000), "]".repeat(5000)),
            ),
        ),
        (
            "wrong type",
            good.replace("\"mode\":420", "\"mode\":\"420\""),
        ),
        ("negative uid", good.replace("\"uid\":0", "\"uid\":-1")),
        ("invalid hex", good.replacen(&hex, &"g".repeat(64), 1)),
        ("short hex", good.replacen(&hex, "abcd", 1)),
        (
            "uppercase hex",
            doc("img-h", &[entry("/a").replace(&hex, &"A".repeat(64))]),
        ),
        ("duplicate paths", doc("img-h", &[entry("/a"), entry("/a")])),
        ("unsorted paths", doc("img-h", &[entry("/b"), entry("/a")])),
        ("traversal path", doc("img-h", &[entry("/../etc/passwd")])),
        ("relative path", doc("img-h", &[entry("etc/passwd")])),
        ("NUL in path", doc("img-h", &[entry("/a\\u0000b")])),
        ("traversal image id", doc("../../etc", &[entry("/a")])),
        ("slash image id", doc("a/b", &[entry("/a")])),
        ("NUL image id", doc("a\\u0000b", &[entry("/a")])),
        ("empty image id", doc("", &[entry("/a")])),
        ("long image id", doc(&"a".repeat(200), &[entry("/a")])),
        (
            "bad timestamp",
            good.replace("2026-11-23T07:31:43Z", "yesterday"),
        ),
        (
            "mode too big",
            good.replace("\"mode\":420", "\"mode\":70000"),
        ),
        (
            "not UTF-8",
            String::from_utf8_lossy(b"{\"image_id\":\"\xff\"}").into_owned(),
        ),
        (
            "policy with a bad glob",
            good.replacen(
                "\"entries\"",
                r#""policy":{"rules":[{"paths":["/a/["]}]},"entries""#,
                1,
            ),
        ),
        (
            "policy with an unknown check",
            good.replacen(
                "\"entries\"",
                r#""policy":{"rules":[{"paths":["/a"],"check":["all"]}]},"entries""#,
                1,
            ),
        ),
        (
            "policy with a traversal glob",
            good.replacen(
                "\"entries\"",
                r#""policy":{"rules":[{"paths":["/../**"],"ignore":true}]},"entries""#,
                1,
            ),
        ),
        (
            "policy that is not an object",
            good.replacen("\"entries\"", r#""policy":"ignore all","entries""#, 1),
        ),
    ];
    for (what, body) in &hostile {
        let answer = post(&server, "/baselines", body.as_bytes(), &[]);
        assert_eq!(answer.status, 400, "{what}: {}", answer.text());
        let json = answer.json();
        assert_eq!(json["error"], "invalid_baseline", "{what}");
        assert!(!json["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    // Raw invalid UTF-8 bytes.
    let mut bytes = good.clone().into_bytes();
    let at = good.find("file-").unwrap();
    bytes[at] = 0xff;
    assert_eq!(post(&server, "/baselines", &bytes, &[]).status, 400);

    assert_eq!(
        get(&server, "/baselines", &[]).json()["baselines"],
        serde_json::json!([])
    );
    // The service is still fine.
    assert_eq!(
        post(&server, "/baselines", good.as_bytes(), &[]).status,
        201
    );
}

#[test]
fn hostile_image_ids_in_urls_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    for path in [
        "/baselines/..",
        "/baselines/.hidden",
        "/baselines/a%00b",
        "/baselines/..%2F..%2Fetc%2Fpasswd",
        "/baselines/a%2Fb",
        "/baselines/%ff",
        "/baselines/a%20b",
    ] {
        let (status, text) = raw(
            server.addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(status == 400 || status == 404, "{path}: {status}\n{text}");
        assert!(
            text.contains("\"error\""),
            "{path}: JSON error body\n{text}"
        );
    }
    let (status, _) = raw(
        server.addr,
        b"GET /baselines/a%00b/signature HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400);
}

#[test]
fn oversized_bodies_get_413_whether_announced_or_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--max-body-bytes", "10000"]);
    let doc = baseline("img-big", 200);
    assert!(doc.len() > 10_000);
    let answer = post(&server, "/baselines", &doc, &[]);
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["error"], "too_large");

    // Announced by Content-Length: refused before the body is sent.
    let (status, text) = raw(
        server.addr,
        b"POST /baselines HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n",
    );
    assert_eq!(status, 413, "{text}");

    // Chunked, no length announced: cut off at the limit.
    let mut request =
        b"POST /baselines HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for chunk in doc.chunks(1000) {
        write!(request, "{:x}\r\n", chunk.len()).unwrap();
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw(server.addr, &request);
    assert_eq!(status, 413, "{text}");

    let small = baseline("img-small", 10);
    assert_eq!(post(&server, "/baselines", &small, &[]).status, 201);
    let listed = get(&server, "/baselines", &[]).json();
    assert_eq!(listed["baselines"].as_array().unwrap().len(), 1);
}

#[test]
fn writes_need_a_configured_token_and_tokens_are_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &["--token", TOKEN, "--token", "second-token-xyz"],
    );
    let doc = baseline("img-auth", 5);

    let none = post(&server, "/baselines", &doc, &[]);
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(none.json()["error"], "unauthorized");
    for wrong in [
        "Bearer wrong-token",
        "Bearer test-token-0123456789abcde",
        "Bearer test-token-0123456789abcdef0",
        "Basic dGVzdDp0ZXN0",
        "Bearer",
        TOKEN,
    ] {
        let answer = post(&server, "/baselines", &doc, &[("Authorization", wrong)]);
        assert_eq!(answer.status, 401, "{wrong}");
        assert!(!answer.text().contains(TOKEN));
    }
    let signature = b"untrusted comment: x\nRWQ=\ntrusted comment: y\nRWQ=\n";
    let (key, value) = bearer();
    assert_eq!(
        put(&server, "/baselines/img-auth/signature", signature, &[]).status,
        401
    );
    assert_eq!(
        get(&server, "/baselines", &[]).json()["baselines"],
        serde_json::json!([])
    );

    assert_eq!(
        post(&server, "/baselines", &doc, &[(key, &value)]).status,
        201
    );
    let second = baseline("img-auth-2", 5);
    assert_eq!(
        post(
            &server,
            "/baselines",
            &second,
            &[("Authorization", "bearer second-token-xyz")]
        )
        .status,
        201
    );
    // Reads are open.
    assert_eq!(get(&server, "/baselines/img-auth", &[]).body, doc);
    assert_eq!(
        put(
            &server,
            "/baselines/img-auth/signature",
            signature,
            &[(key, &value)]
        )
        .status,
        201
    );
    let log = server.log();
    assert!(!log.contains(TOKEN), "token in the log:\n{log}");
    assert!(
        !log.contains("second-token-xyz"),
        "token in the log:\n{log}"
    );
    assert!(
        !log.contains("wrong-token"),
        "presented token in the log:\n{log}"
    );
}

#[test]
fn without_tokens_it_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let output = std::process::Command::new(BIN)
            .args(["--listen", listen, "--data"])
            .arg(dir.path())
            .env_remove("METADATA_TOKENS")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{listen}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("loopback"), "{stderr}");
    }
    // With a token it may.
    let mut child = std::process::Command::new(BIN)
        .args(["--listen", "0.0.0.0:0", "--token", TOKEN, "--data"])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "should be running");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn signatures_are_stored_beside_their_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let signature = b"untrusted comment: signature from minisign secret key\nRUQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3r2T2kbgJUCI+PmuzVBwBuAWD3n8tLZ7Fz4uHs0aqugI=\ntrusted comment: timestamp:1556193335\tfile:test\ny/rUw2y8/hOUYjZU71eHp/Wo1KZ40fGy2VJEDl34XMJM+TX48Ss/17u3IvIfbVR1FkZZSNCisQbuQY+bHwhEBg==\n";
    assert_eq!(
        put(&server, "/baselines/img-s/signature", signature, &[]).status,
        404
    );
    assert_eq!(get(&server, "/baselines/img-s/signature", &[]).status, 404);
    assert_eq!(
        post(&server, "/baselines", &baseline("img-s", 3), &[]).status,
        201
    );
    assert_eq!(get(&server, "/baselines/img-s/signature", &[]).status, 404);
    let garbage = put(&server, "/baselines/img-s/signature", b"garbage", &[]);
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["error"], "invalid_signature");
    assert_eq!(
        put(
            &server,
            "/baselines/img-s/signature",
            &vec![b'a'; 100_000],
            &[]
        )
        .status,
        413
    );
    assert_eq!(
        put(&server, "/baselines/img-s/signature", signature, &[]).status,
        201
    );
    assert_eq!(
        put(&server, "/baselines/img-s/signature", signature, &[]).status,
        200
    );
    let mut other = signature.to_vec();
    other[30] = b'X';
    assert_eq!(
        put(&server, "/baselines/img-s/signature", &other, &[]).status,
        409
    );
    let stored = get(&server, "/baselines/img-s/signature", &[]);
    assert_eq!(stored.status, 200);
    assert_eq!(stored.body, signature);

    let data = server.data.clone();
    server.kill9();
    let server = start(&data, &[]);
    assert_eq!(
        get(&server, "/baselines/img-s/signature", &[]).body,
        signature
    );
}

#[test]
fn healthz_metrics_and_json_errors_for_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let health = get(&server, "/healthz", &[]);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(
        post(&server, "/baselines", &baseline("img-m", 5), &[]).status,
        201
    );
    assert_eq!(get(&server, "/baselines/img-m", &[]).status, 200);
    assert_eq!(get(&server, "/baselines/nope", &[]).status, 404);

    let unknown = get(&server, "/nothing/here", &[]);
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "not_found");
    let wrong_method = client()
        .delete(server.url("/baselines/img-m"))
        .call()
        .unwrap();
    assert_eq!(wrong_method.status(), 405);

    let metrics = get(&server, "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for expected in [
        r#"metadata_service_requests_total{route="/baselines",method="POST",status="201"} 1"#,
        r#"metadata_service_requests_total{route="/baselines/{image_id}",method="GET",status="200"} 1"#,
        r#"metadata_service_requests_total{route="/baselines/{image_id}",method="GET",status="404"} 1"#,
        "metadata_service_request_duration_seconds_bucket{",
        "metadata_service_baselines 1",
        "# TYPE metadata_service_store_bytes gauge",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let store_bytes: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("metadata_service_store_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(store_bytes > 0.0);
}

#[test]
fn with_collector_keys_only_baselines_signed_by_one_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = (dir.path().join("c.key"), dir.path().join("c.pub"));
    let (other_sk, other_pk) = (dir.path().join("o.key"), dir.path().join("o.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    integrity_trust::keygen(&other_sk, &other_pk, None).unwrap();
    let server = start(
        &dir.path().join("data"),
        &["--collector-key", pk.to_str().unwrap()],
    );
    let sign = |key: &std::path::Path, bytes: &[u8], comment: &str| {
        let key =
            integrity_trust::load_secret_key(key, integrity_trust::Password::PromptIfTerminal)
                .unwrap();
        integrity_trust::sign(&key, bytes, comment).unwrap()
    };
    let doc = baseline("img-k", 5);
    let header = |sig: &str| integrity_trust::to_header(sig);

    let unsigned = post(&server, "/baselines", &doc, &[]);
    assert_eq!(unsigned.status, 403, "{}", unsigned.text());
    assert_eq!(unsigned.json()["error"], "untrusted_signature");
    let foreign = header(&sign(&other_sk, &doc, "image_id:img-k"));
    let answer = post(
        &server,
        "/baselines",
        &doc,
        &[("X-Bulletproof-Signature", &foreign)],
    );
    assert_eq!(answer.status, 403);
    let elsewhere = header(&sign(&sk, &doc, "image_id:img-other"));
    let answer = post(
        &server,
        "/baselines",
        &doc,
        &[("X-Bulletproof-Signature", &elsewhere)],
    );
    assert_eq!(answer.status, 403);
    let answer = post(
        &server,
        "/baselines",
        &doc,
        &[("X-Bulletproof-Signature", "%%%")],
    );
    assert_eq!(answer.status, 400);
    let mut tampered = doc.clone();
    tampered[40] ^= 1;
    let good_sig = sign(&sk, &doc, "image_id:img-k\ttimestamp:2026-11-23T07:31:43Z");
    let answer = post(
        &server,
        "/baselines",
        &tampered,
        &[("X-Bulletproof-Signature", &header(&good_sig))],
    );
    assert!(
        answer.status == 403 || answer.status == 400,
        "{}",
        answer.status
    );
    assert_eq!(
        get(&server, "/baselines", &[]).json()["baselines"],
        serde_json::json!([])
    );

    let stored = post(
        &server,
        "/baselines",
        &doc,
        &[("X-Bulletproof-Signature", &header(&good_sig))],
    );
    assert_eq!(stored.status, 201, "{}", stored.text());
    assert_eq!(
        get(&server, "/baselines/img-k/signature", &[]).text(),
        good_sig
    );
    // Signatures stay immutable; another key's is refused outright.
    let other = sign(&other_sk, &doc, "image_id:img-k");
    assert_eq!(
        put(&server, "/baselines/img-k/signature", other.as_bytes(), &[]).status,
        403
    );
    assert_eq!(
        put(
            &server,
            "/baselines/img-k/signature",
            good_sig.as_bytes(),
            &[]
        )
        .status,
        200
    );
}

/// Hostile methods, paths and headers cannot grow `/metrics`: labels come from closed
/// sets (a made-up method is `other`, an unknown path `unmatched`).
#[test]
fn hostile_methods_paths_and_headers_do_not_grow_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let request = |method: &str, path: &str| {
        let text = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nX-Made-Up-{method}: {path}\r\nConnection: close\r\n\r\n"
        );
        raw(server.addr, text.as_bytes())
    };
    request("GET", "/healthz");
    let before = get(&server, "/metrics", &[]).text().len();
    for i in 0..300 {
        let method = format!("M{i:04}{}", "X".repeat(1000));
        request(&method, &format!("/made/up/{i}"));
        request("GET", &format!("/nothing-{i}"));
    }
    let text = get(&server, "/metrics", &[]).text();
    assert!(!text.contains("M0001X"), "a made-up method became a label");
    assert!(!text.contains("/made/up/") && !text.contains("/nothing-"));
    assert!(text.contains(r#"method="other""#), "{text}");
    // A handful of new series (other/unmatched and their statuses), not 600.
    assert!(
        text.len() < before + 8 * 1024,
        "/metrics grew from {before} to {} bytes",
        text.len()
    );
}
