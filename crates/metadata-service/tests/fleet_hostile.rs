//! The fleet (DESIGN §12) against hostile reporters and readers, on a real service
//! with a real sled directory: every bad report is a 4xx that stores nothing, scopes
//! hold, a host's key cannot speak for another host, floods never reach a 5xx, and
//! hostile text comes back intact as JSON text.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use support::fleet::*;
use support::*;

const IMG: &str = "img-hostile";

fn fleet_server(dir: &std::path::Path, args: &[&str]) -> Server {
    let server = start_fleet(dir, args);
    upload_image(&server, IMG);
    server
}

/// Nothing of the fleet is stored: no host listed, no report, every count zero.
fn assert_nothing_stored(server: &Server, hosts: &[String], why: &str) {
    let listed = read_json(server, "/hosts?limit=1000");
    assert_eq!(listed["hosts"], json!([]), "{why}: {listed}");
    for host in hosts {
        if integrity_common::report::validate_host_id(host).is_ok() {
            let answer = read(server, &format!("/hosts/{host}"));
            assert_eq!(answer.status, 404, "{why}: {}", answer.text());
            assert_eq!(
                read(server, &format!("/hosts/{host}/reports/1")).status,
                404
            );
        }
    }
    assert_eq!(
        fleet_counts(server, IMG),
        json!({"clean": 0, "drifted": 0, "failing": 0, "stale": 0}),
        "{why}"
    );
    assert_eq!(
        metric(
            server,
            "metadata_service_reports_total",
            "outcome=\"stored\""
        ),
        0.0,
        "{why}"
    );
}

/// A valid report of a fresh host as a JSON value, to be broken.
fn valid(n: u32) -> Value {
    serde_json::to_value(report(&host_id(0x9000 + n), IMG, 1)).unwrap()
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
    /// The field the error names first in `detail` (400 only).
    field: Option<&'static str>,
}

fn case(name: &'static str, value: Value, status: u16, field: Option<&'static str>) -> Case {
    Case {
        name,
        bytes: serde_json::to_vec(&value).unwrap(),
        status,
        field,
    }
}

fn edited(n: u32, edit: impl FnOnce(&mut Value)) -> Value {
    let mut value = valid(n);
    edit(&mut value);
    value
}

fn in_an_hour() -> String {
    timestamp(SystemTime::now() + Duration::from_secs(3600))
}

fn cases() -> Vec<Case> {
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let raw = |name, bytes: &[u8], field| Case {
        name,
        bytes: bytes.to_vec(),
        status: 400,
        field,
    };
    vec![
        raw("not JSON", b"{\"host_id\": ", Some("report")),
        raw("empty body", b"", Some("report")),
        raw("a JSON array", b"[1,2,3]", Some("report")),
        raw("a JSON string", b"\"report\"", Some("report")),
        raw(
            "invalid UTF-8",
            b"{\"host_id\":\"\xff\xfe\"}",
            Some("report"),
        ),
        raw("nul bytes", b"\0\0\0\0", Some("report")),
        case(
            "missing summary",
            edited(next(), |v| {
                v.as_object_mut().unwrap().remove("summary");
            }),
            400,
            Some("summary"),
        ),
        case(
            "missing host_id",
            edited(next(), |v| {
                v.as_object_mut().unwrap().remove("host_id");
            }),
            400,
            Some("host_id"),
        ),
        case(
            "seq as a string",
            edited(next(), |v| v["seq"] = json!("1")),
            400,
            Some("seq"),
        ),
        case(
            "seq negative",
            edited(next(), |v| v["seq"] = json!(-1)),
            400,
            Some("seq"),
        ),
        case(
            "seq fractional",
            edited(next(), |v| v["seq"] = json!(1.5)),
            400,
            Some("seq"),
        ),
        case(
            "seq zero",
            edited(next(), |v| v["seq"] = json!(0)),
            400,
            Some("seq"),
        ),
        case(
            "interval_secs a string",
            edited(next(), |v| v["interval_secs"] = json!("300")),
            400,
            Some("interval_secs"),
        ),
        case(
            "anomalies an object",
            edited(next(), |v| v["anomalies"] = json!({})),
            400,
            Some("anomalies"),
        ),
        case(
            "truncated null",
            edited(next(), |v| v["truncated"] = Value::Null),
            400,
            Some("truncated"),
        ),
        case(
            "host_id a number",
            edited(next(), |v| v["host_id"] = json!(12345)),
            400,
            Some("host_id"),
        ),
        case(
            "summary counts as strings",
            edited(next(), |v| v["summary"]["added"] = json!("many")),
            400,
            Some("summary"),
        ),
        case(
            "anomaly path a number",
            edited(next(), |v| {
                v["anomalies"] = json!([{"anomaly": "added", "path": 7, "changed": [],
                    "baseline": null, "current": null}])
            }),
            400,
            Some("anomalies"),
        ),
        case(
            "anomaly changed a string",
            edited(next(), |v| {
                v["anomalies"] = json!([{"anomaly": "added", "path": "/x", "changed": "all",
                    "baseline": null, "current": null}])
            }),
            400,
            Some("anomalies"),
        ),
        case(
            "error a number",
            edited(next(), |v| v["error"] = json!(500)),
            400,
            Some("error"),
        ),
        case(
            "spool_dropped a string",
            edited(next(), |v| v["spool_dropped"] = json!("lots")),
            400,
            Some("spool_dropped"),
        ),
        case(
            "last_full not a timestamp",
            edited(next(), |v| v["last_full"] = json!("last week")),
            400,
            Some("last_full"),
        ),
        case(
            "mode unknown",
            edited(next(), |v| v["mode"] = json!("sometimes")),
            400,
            Some("mode"),
        ),
        case(
            "baseline source unknown",
            edited(next(), |v| v["baseline"]["source"] = json!("usb-stick")),
            400,
            Some("baseline.source"),
        ),
        case(
            "baseline digest not hex",
            edited(next(), |v| v["baseline"]["sha256"] = json!("zz")),
            400,
            Some("baseline.sha256"),
        ),
        case(
            "no baseline and no error",
            edited(next(), |v| v["baseline"] = Value::Null),
            400,
            Some("baseline"),
        ),
        case(
            "unknown anomaly kind",
            edited(next(), |v| {
                v["anomalies"] = json!([{"anomaly": "pwned", "path": "/x", "changed": [],
                    "baseline": null, "current": null}])
            }),
            400,
            Some("anomalies"),
        ),
        case(
            "anomaly current a string",
            edited(next(), |v| {
                v["anomalies"] = json!([{"anomaly": "added", "path": "/x", "changed": [],
                    "baseline": null, "current": "evil"}])
            }),
            400,
            Some("anomalies"),
        ),
        case(
            "more anomalies than allowed",
            edited(next(), |v| {
                let one = json!({"anomaly": "added", "path": "/x", "changed": [],
                    "baseline": null, "current": {"kind": "file"}});
                v["anomalies"] = Value::Array(vec![one; 1001]);
            }),
            400,
            Some("anomalies"),
        ),
        case(
            "hostname with control characters",
            edited(next(), |v| v["hostname"] = json!("web\u{1b}[2J\r\nroot")),
            400,
            Some("hostname"),
        ),
        case(
            "finished in the future",
            edited(next(), |v| {
                v["finished"] = json!(in_an_hour());
            }),
            400,
            Some("finished"),
        ),
        case(
            "finished far in the future",
            edited(next(), |v| {
                v["started"] = json!("2999-01-01T00:00:00Z");
                v["finished"] = json!("2999-01-01T00:00:01Z");
            }),
            400,
            Some("finished"),
        ),
        case(
            "finished not a timestamp",
            edited(next(), |v| v["finished"] = json!("yesterday")),
            400,
            Some("finished"),
        ),
        case(
            "started not a timestamp",
            edited(next(), |v| v["started"] = json!("2026-13-45T99:99:99Z")),
            400,
            Some("started"),
        ),
        case(
            "finished before started",
            edited(next(), |v| {
                v["started"] = json!("2026-11-30T10:00:00Z");
                v["finished"] = json!("2026-11-30T09:00:00Z");
            }),
            400,
            Some("finished"),
        ),
        case(
            "host id of 31 hex digits",
            edited(next(), |v| v["host_id"] = json!("0".repeat(31))),
            400,
            Some("host_id"),
        ),
        case(
            "host id of 33 hex digits",
            edited(next(), |v| v["host_id"] = json!("0".repeat(33))),
            400,
            Some("host_id"),
        ),
        case(
            "host id in upper case",
            edited(next(), |v| v["host_id"] = json!("ABCDEF".repeat(5) + "AB")),
            400,
            Some("host_id"),
        ),
        case(
            "host id not hex",
            edited(next(), |v| v["host_id"] = json!("g".repeat(32))),
            400,
            Some("host_id"),
        ),
        case(
            "host id a path",
            edited(next(), |v| {
                v["host_id"] = json!("../../../../etc/passwd0000000000")
            }),
            400,
            Some("host_id"),
        ),
        case(
            "host id empty",
            edited(next(), |v| v["host_id"] = json!("")),
            400,
            Some("host_id"),
        ),
        case(
            "host id with a newline",
            edited(next(), |v| {
                v["host_id"] = json!(format!("{}\n", "a".repeat(31)))
            }),
            400,
            Some("host_id"),
        ),
        case(
            "image id a path",
            edited(next(), |v| v["image_id"] = json!("../baselines/x")),
            400,
            Some("image_id"),
        ),
        case(
            "unknown image",
            edited(next(), |v| v["image_id"] = json!("img-nobody-uploaded")),
            422,
            None,
        ),
    ]
}

#[test]
fn bad_reports_are_4xx_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let key = HostKey::new();
    let mut hosts = Vec::new();
    let mut wrong = Vec::new();
    for case in cases() {
        // Well signed with a key offered: the refusal is about the content.
        let host = serde_json::from_slice::<Value>(&case.bytes)
            .ok()
            .and_then(|value| value["host_id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| host_id(0));
        let answer = send_bytes(&server, &key, &case.bytes, &host, 1);
        // Every case is a 4xx that stores nothing; the exact status and the field
        // named are collected, so one run shows every case that is off.
        assert!(
            (400..500).contains(&answer.status),
            "{}: {} {}",
            case.name,
            answer.status,
            answer.text()
        );
        hosts.push(host);
        assert_nothing_stored(&server, &hosts, case.name);
        let body = answer.json();
        if answer.status != case.status {
            wrong.push(format!(
                "{}: {} instead of {}: {body}",
                case.name, answer.status, case.status
            ));
        } else if case.status == 400 {
            let detail = body["detail"].as_str().unwrap_or_default();
            let field = case.field.unwrap();
            if body["error"] != "invalid_report" || !detail.starts_with(field) {
                wrong.push(format!(
                    "{}: the detail should start with {field:?}: {body}",
                    case.name
                ));
            }
        } else if body["error"] != "unknown_image" {
            wrong.push(format!("{}: {body}", case.name));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        metric(
            &server,
            "metadata_service_reports_total",
            "outcome=\"invalid_report\""
        ) >= 30.0
    );
    assert_eq!(
        metric(
            &server,
            "metadata_service_reports_total",
            "outcome=\"unknown_image\""
        ),
        1.0
    );
    // Nothing refused was audited as an enrollment.
    assert!(audit(&server)
        .iter()
        .all(|record| record["event"] != "enroll"));

    // A report within the allowed clock skew is taken (the control case).
    let mut soon = report(&host_id(0x9999), IMG, 1);
    soon.finished = timestamp(SystemTime::now() + Duration::from_secs(60));
    store(&server, &key, &soon);
}

#[test]
fn an_oversized_report_is_413_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &["--max-report-bytes", "65536"]);
    let key = HostKey::new();
    let host = host_id(0x9100);
    // A valid report whose hostname-like padding lies in an additive field.
    let mut value = serde_json::to_value(report(&host, IMG, 1)).unwrap();
    value["padding"] = json!("x".repeat(200_000));
    let bytes = serde_json::to_vec(&value).unwrap();
    let signature = key.sign(&bytes, &host, 1);
    let head = |framing: &str| {
        format!(
            "POST /reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {REPORT_TOKEN}\r\n\
             X-Bulletproof-Signature: {}\r\nX-Bulletproof-Host-Key: {}\r\n\
             {framing}\r\nConnection: close\r\n\r\n",
            integrity_trust::to_header(&signature),
            key.key_header()
        )
        .into_bytes()
    };
    // Announced too large: refused before the body is read (none is sent).
    let (status, text) = exchange(
        server.addr,
        head(&format!("Content-Length: {}", bytes.len())),
        Vec::new(),
    );
    assert_eq!(status, 413, "{text}");

    // The same sent chunked (no length to refuse up front): refused while read.
    let mut body = Vec::new();
    for chunk in bytes.chunks(8192) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = exchange(server.addr, head("Transfer-Encoding: chunked"), body);
    assert_eq!(status, 413, "{text}");
    assert_nothing_stored(&server, std::slice::from_ref(&host), "oversized");
    assert!(
        metric(
            &server,
            "metadata_service_reports_total",
            "outcome=\"too_large\""
        ) >= 1.0
    );

    // A report just under the limit is taken.
    value["padding"] = json!("x".repeat(10_000));
    let bytes = serde_json::to_vec(&value).unwrap();
    assert_eq!(send_bytes(&server, &key, &bytes, &host, 1).status, 201);
}

#[test]
fn reports_and_reads_need_a_token_of_the_right_scope() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let key = HostKey::new();
    let host = host_id(0x9200);
    let r = report(&host, IMG, 1);
    let bytes = r.to_bytes();
    let signature = key.sign(&bytes, &host, 1);
    let header = key.key_header();
    let post_with = |token: Option<&str>| {
        post_raw_report(&server, &bytes, token, Some(&signature), Some(&header))
    };
    assert_eq!(post_with(None).status, 401);
    assert_eq!(
        post_with(Some("not-a-configured-token-000000000")).status,
        401
    );
    for token in [READ_TOKEN, BASELINE_TOKEN] {
        let answer = post_with(Some(token));
        assert_eq!(answer.status, 403, "{}", answer.text());
    }
    assert_nothing_stored(&server, std::slice::from_ref(&host), "unauthorised reports");
    // The report token cannot do anything else.
    let (k, v) = bearer(REPORT_TOKEN);
    assert_eq!(
        post(
            &server,
            "/baselines",
            &baseline("img-by-agent", 2),
            &[(k, &v)]
        )
        .status,
        403
    );

    let answer = post_with(Some(REPORT_TOKEN));
    assert_eq!(answer.status, 201, "{}", answer.text());

    let reads = [
        "/fleet".to_owned(),
        "/hosts".to_owned(),
        format!("/hosts/{host}"),
        format!("/hosts/{host}/reports"),
        format!("/hosts/{host}/reports/1"),
        format!("/drift?image_id={IMG}"),
    ];
    for path in &reads {
        assert_eq!(
            get(&server, path, &[]).status,
            401,
            "GET {path} without a token"
        );
        let (k, v) = bearer("wrong-token-00000000000000000000");
        assert_eq!(
            get(&server, path, &[(k, &v)]).status,
            401,
            "GET {path} bad token"
        );
        for token in [REPORT_TOKEN, BASELINE_TOKEN] {
            let (k, v) = bearer(token);
            let answer = get(&server, path, &[(k, &v)]);
            assert_eq!(
                answer.status,
                403,
                "GET {path} with {token}: {}",
                answer.text()
            );
            assert!(!answer.text().contains(&host), "GET {path} leaked data");
        }
        assert_eq!(read(&server, path).status, 200, "GET {path} with read");
        assert_eq!(
            admin_get(&server, path).status,
            200,
            "GET {path} with admin"
        );
    }
    // Admin only: the audit log, accepting drift, re-keying hosts.
    for token in [READ_TOKEN, REPORT_TOKEN, BASELINE_TOKEN] {
        let (k, v) = bearer(token);
        assert_eq!(get(&server, "/audit", &[(k, &v)]).status, 403);
        let accept = json!({"image_id": IMG, "host_id": null, "path": "/x", "anomaly": "added",
            "current": null, "comment": "sneaky"});
        let answer = post(
            &server,
            "/accepts",
            accept.to_string().as_bytes(),
            &[(k, &v), ("Content-Type", "application/json")],
        );
        assert_eq!(answer.status, 403, "POST /accepts with {token}");
        assert_eq!(
            delete(&server, &format!("/hosts/{host}/key"), &[(k, &v)]).status,
            403,
            "DELETE key with {token}"
        );
        assert_eq!(
            delete(&server, "/accepts/0011223344556677", &[(k, &v)]).status,
            403
        );
    }
    assert_eq!(get(&server, "/audit", &[]).status, 401);
    assert_eq!(
        delete(&server, &format!("/hosts/{host}/key"), &[]).status,
        401
    );
    // Nothing changed: the key is still pinned, no accept exists.
    assert_eq!(
        host_json(&server, &host)["key_fingerprint"],
        key.fingerprint()
    );
    assert_eq!(admin_get(&server, "/accepts").json()["accepts"], json!([]));
}

#[test]
fn one_hosts_key_cannot_speak_for_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let (a, b) = (host_id(0x9301), host_id(0x9302));
    let (key_a, key_b) = (HostKey::new(), HostKey::new());
    store(&server, &key_a, &report(&a, IMG, 1));
    store(&server, &key_b, &report(&b, IMG, 1));

    // Host a's key signs a report that claims to be host b's: offered or not.
    let forged = with_findings(
        report(&b, IMG, 2),
        vec![modified("/usr/sbin/sshd", &"66".repeat(32))],
    );
    let bytes = forged.to_bytes();
    let signature = key_a.sign(&bytes, &b, 2);
    let with_key = post_raw_report(
        &server,
        &bytes,
        Some(REPORT_TOKEN),
        Some(&signature),
        Some(&key_a.key_header()),
    );
    assert_eq!(with_key.status, 403, "{}", with_key.text());
    assert_eq!(with_key.json()["error"], "key_mismatch");
    let without_key = post_raw_report(&server, &bytes, Some(REPORT_TOKEN), Some(&signature), None);
    assert_eq!(without_key.status, 403, "{}", without_key.text());
    assert_eq!(without_key.json()["error"], "bad_signature");

    // Host a's real signed report, its host id edited to b's: no longer verifies.
    let genuine = report(&a, IMG, 2).to_bytes();
    let genuine_signature = key_a.sign(&genuine, &a, 2);
    let edited = String::from_utf8(genuine.clone()).unwrap().replace(&a, &b);
    let answer = post_raw_report(
        &server,
        edited.as_bytes(),
        Some(REPORT_TOKEN),
        Some(&genuine_signature),
        None,
    );
    assert_eq!(answer.status, 403, "{}", answer.text());
    // A valid signature of other bytes, by the right key.
    let other_signature = key_b.sign(b"something else", &b, 2);
    let answer = post_raw_report(
        &server,
        &report(&b, IMG, 2).to_bytes(),
        Some(REPORT_TOKEN),
        Some(&other_signature),
        None,
    );
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.json()["error"], "bad_signature");
    // No signature at all.
    let answer = post_raw_report(
        &server,
        &report(&b, IMG, 2).to_bytes(),
        Some(REPORT_TOKEN),
        None,
        None,
    );
    assert!(
        matches!(answer.status, 400 | 403),
        "unsigned: {} {}",
        answer.status,
        answer.text()
    );

    assert!(
        metric(
            &server,
            "metadata_service_reports_total",
            "outcome=\"bad_signature\""
        ) >= 2.0
    );
    let host_b = host_json(&server, &b);
    assert_eq!(host_b["last_seq"], 1);
    assert_eq!(host_b["status"], "clean");
    assert_eq!(host_b["key_fingerprint"], key_b.fingerprint());
    assert_eq!(read(&server, &format!("/hosts/{b}/reports/2")).status, 404);
    assert_eq!(host_json(&server, &a)["last_seq"], 1);
    // Each refusal is audited.
    let refused = wait_for(Duration::from_secs(5), "refusals audited", || {
        let refused: Vec<Value> = audit(&server)
            .into_iter()
            .filter(|record| record["event"] == "report_refused")
            .collect();
        (refused.len() >= 3).then_some(refused)
    });
    assert!(refused
        .iter()
        .any(|record| record["data"]["host_id"] == b.as_str()));
}

#[test]
fn a_first_report_without_a_usable_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let key = HostKey::new();
    let host = host_id(0x9400);
    let bytes = report(&host, IMG, 1).to_bytes();
    let signature = key.sign(&bytes, &host, 1);

    let answer = post_raw_report(&server, &bytes, Some(REPORT_TOKEN), Some(&signature), None);
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.json()["error"], "no_host_key");

    for (what, header) in [
        ("not base64", "%%%not base64%%%".to_owned()),
        ("not a key", integrity_trust::to_header("hello, I am a key")),
        ("empty", String::new()),
    ] {
        let answer = post_raw_report(
            &server,
            &bytes,
            Some(REPORT_TOKEN),
            Some(&signature),
            Some(&header),
        );
        assert!(
            matches!(answer.status, 400 | 403),
            "key header {what}: {} {}",
            answer.status,
            answer.text()
        );
    }
    // Another key offered than the one that signed.
    let other = HostKey::new();
    let answer = post_raw_report(
        &server,
        &bytes,
        Some(REPORT_TOKEN),
        Some(&signature),
        Some(&other.key_header()),
    );
    assert_eq!(answer.status, 403, "{}", answer.text());
    // A signature header that is not a signature.
    let answer = post_raw_report(
        &server,
        &bytes,
        Some(REPORT_TOKEN),
        Some("untrusted comment: nothing\nAAAA\n"),
        Some(&key.key_header()),
    );
    assert!(matches!(answer.status, 400 | 403), "{}", answer.text());
    assert_nothing_stored(&server, std::slice::from_ref(&host), "no usable key");
    // Every refused report (403) is audited (DESIGN §12), the missing key included.
    let reasons: Vec<Value> = wait_for(Duration::from_secs(5), "403s audited", || {
        let reasons: Vec<Value> = audit(&server)
            .into_iter()
            .filter(|record| {
                record["event"] == "report_refused" && record["data"]["host_id"] == host.as_str()
            })
            .map(|record| record["data"]["reason"].clone())
            .collect();
        (reasons.len() >= 2).then_some(reasons)
    });
    assert!(
        reasons.contains(&json!("no_host_key")),
        "the refusal for a missing key is not audited: {reasons:?}"
    );
    // The real first report enrolls.
    store(&server, &key, &report(&host, IMG, 1));
}

#[test]
fn a_flood_from_one_host_is_limited_and_never_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &["--host-burst", "5"]);
    let key = std::sync::Arc::new(HostKey::new());
    let host = host_id(0x9500);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for seq in 1..=40 {
        let answer = send(&server, &key, &report(&host, IMG, seq));
        if answer.status == 429 && retry_after.is_none() {
            retry_after = answer.header("retry-after").map(str::to_owned);
        }
        statuses.push(answer.status);
    }
    assert!(
        statuses.iter().all(|status| matches!(status, 201 | 429)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "40 reports at once from one host: {statuses:?}"
    );
    let secs: u64 = retry_after
        .expect("a 429 says when to retry")
        .trim()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=3600).contains(&secs));
    assert!(
        metric(
            &server,
            "metadata_service_reports_total",
            "outcome=\"rate_limited\""
        ) >= 1.0
    );

    // Concurrent posts of one host: no 5xx, and nothing stored twice.
    let server = std::sync::Arc::new(server);
    let threads: Vec<_> = (0..8u64)
        .map(|thread| {
            let (server, key, host) = (server.clone(), key.clone(), host.clone());
            std::thread::spawn(move || {
                (0..10u64)
                    .map(|i| send(&server, &key, &report(&host, IMG, 100 + i * 8 + thread)).status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    for thread in threads {
        for status in thread.join().unwrap() {
            assert!(
                matches!(status, 200 | 201 | 409 | 429),
                "a concurrent report answered {status}"
            );
        }
    }
    let seqs = listed_seqs(&server, &host);
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(seqs, unique, "a seq stored twice");
    assert!(seqs.windows(2).all(|pair| pair[0] > pair[1]), "{seqs:?}");
    let last = host_json(&server, &host)["last_seq"].as_u64().unwrap();
    assert_eq!(last, seqs[0]);
    // Another host is not limited by this one.
    store(&server, &HostKey::new(), &report(&host_id(0x9501), IMG, 1));
}

#[test]
fn hostile_text_in_findings_comes_back_intact_as_json_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let key = HostKey::new();
    let host = host_id(0x9600);
    let path = "/srv/<script>alert(\"x\")</script>\u{1b}[31mred\u{7}\u{0}nul\n\r\t\
                \u{2028}\u{202e}evil\\back';--&amp;</textarea>";
    let mut finding = modified(path, &"12".repeat(32));
    finding.current["target"] = json!("<img src=x onerror=alert(1)>\u{1}");
    let mut r = with_findings(report(&host, IMG, 1), vec![finding.clone()]);
    r.hostname = "<b>web</b>&\"'".into();
    store(&server, &key, &r);

    let answer = read(&server, &format!("/hosts/{host}"));
    assert_eq!(answer.status, 200);
    let content_type = answer.header("content-type").unwrap_or_default().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(
        !answer.body.iter().any(|byte| *byte < 0x20),
        "control characters must be escaped in JSON text"
    );
    let body = answer.json();
    assert_eq!(body["hostname"], "<b>web</b>&\"'");
    assert_eq!(body["latest"]["anomalies"][0]["path"], path);
    assert_eq!(
        body["latest"]["anomalies"][0]["current"]["target"],
        "<img src=x onerror=alert(1)>\u{1}"
    );
    let groups = read_json(&server, &format!("/drift?image_id={IMG}"));
    assert_eq!(groups["groups"][0]["path"], path);
    assert_eq!(groups["groups"][0]["current"], finding.current);
    let listed = read_json(&server, "/hosts");
    assert_eq!(listed["hosts"][0]["hostname"], "<b>web</b>&\"'");
    assert_eq!(
        read(&server, &format!("/hosts/{host}/reports/1")).body,
        r.to_bytes()
    );
    // The same hostile text accepted and listed intact.
    let id = accept(&server, IMG, None, &finding);
    let accepts = admin_get(&server, &format!("/accepts?image_id={IMG}")).json();
    assert_eq!(accepts["accepts"][0]["path"], path);
    assert_eq!(host_status(&server, &host), "clean");
    let _ = id;
}

fn host_status(server: &Server, host: &str) -> String {
    read_json(server, &format!("/hosts/{host}"))["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn hostile_queries_and_paths_are_4xx_never_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let host = host_id(0x9700);
    store(&server, &HostKey::new(), &report(&host, IMG, 1));
    let paths = [
        "/hosts?limit=abc".to_owned(),
        "/hosts?limit=-1".to_owned(),
        "/hosts?limit=99999999999999999999999".to_owned(),
        "/hosts?status=%00".to_owned(),
        "/hosts?after=%FF%FE".to_owned(),
        "/hosts?image_id=..%2F..%2Fetc".to_owned(),
        "/hosts/NOT-A-HOST".to_owned(),
        "/hosts/..%2F..%2Fetc%2Fpasswd".to_owned(),
        format!("/hosts/{}", "A".repeat(32)),
        format!("/hosts/{}", "a".repeat(4000)),
        format!("/hosts/{host}/reports/abc"),
        format!("/hosts/{host}/reports/-1"),
        format!("/hosts/{host}/reports/99999999999999999999999"),
        format!("/hosts/{host}/reports/0"),
        format!("/hosts/{host}/reports?before=x"),
        format!("/hosts/{host}/reports?limit=0"),
        "/hosts/zzzz/reports/1".to_owned(),
        "/drift?image_id=%00".to_owned(),
        "/drift?image_id=nobody".to_owned(),
        "/fleet?x=%25%".to_owned(),
    ];
    for path in &paths {
        let answer = read(&server, path);
        assert!(
            (200..500).contains(&answer.status),
            "GET {path}: {} {}",
            answer.status,
            answer.text()
        );
        if answer.status != 200 {
            assert!(
                answer.json()["error"].is_string(),
                "GET {path}: {}",
                answer.text()
            );
        }
    }
    assert_eq!(read(&server, "/hosts/NOT-A-HOST").status, 400);
    assert_eq!(
        read(&server, &format!("/hosts/{}", "A".repeat(32))).status,
        400
    );
    assert_eq!(
        read(&server, &format!("/hosts/{host}/reports/abc")).status,
        400
    );
    assert_eq!(
        read(&server, &format!("/hosts/{host}/reports/7")).status,
        404
    );
}

#[test]
fn bad_accepts_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let good = json!({"image_id": IMG, "host_id": null, "path": "/etc/motd", "anomaly": "modified",
        "current": {"sha256": "ab"}, "comment": "ok"});
    let mut cases: Vec<(&str, Value, u16)> = Vec::new();
    let mut with = |name, edit: &dyn Fn(&mut Value), status| {
        let mut value = good.clone();
        edit(&mut value);
        cases.push((name, value, status));
    };
    with(
        "unknown image",
        &|v| v["image_id"] = json!("img-nobody"),
        422,
    );
    with("image id a path", &|v| v["image_id"] = json!("../x"), 400);
    with(
        "host id not hex",
        &|v| v["host_id"] = json!("x".repeat(32)),
        400,
    );
    with("host id short", &|v| v["host_id"] = json!("abc"), 400);
    with(
        "anomaly unknown",
        &|v| v["anomaly"] = json!("everything"),
        400,
    );
    with("path empty", &|v| v["path"] = json!(""), 400);
    with("current a string", &|v| v["current"] = json!("*"), 400);
    with("current an array", &|v| v["current"] = json!([1]), 400);
    with("unknown field", &|v| v["expires"] = json!("never"), 400);
    with(
        "no path",
        &|v| {
            v.as_object_mut().unwrap().remove("path");
        },
        400,
    );
    with(
        "comment too long",
        &|v| v["comment"] = json!("c".repeat(100_000)),
        400,
    );
    for (name, value, status) in cases {
        let answer = admin_post(&server, "/accepts", &value);
        assert_eq!(answer.status, status, "{name}: {}", answer.text());
    }
    let (k, v) = bearer(ADMIN_TOKEN);
    for body in [&b"not json"[..], b"", b"[]", b"null"] {
        let answer = post(&server, "/accepts", body, &[(k, &v)]);
        assert_eq!(answer.status, 400, "{:?}: {}", body, answer.text());
    }
    assert_eq!(admin_get(&server, "/accepts").json()["accepts"], json!([]));
    assert_eq!(
        admin_delete(&server, "/accepts/0011223344556677").status,
        404
    );
    assert_eq!(
        admin_delete(&server, &format!("/hosts/{}/key", "A".repeat(32))).status,
        400
    );
    assert!(audit(&server)
        .iter()
        .all(|record| record["event"] != "accept_created"));
}

#[test]
fn many_keys_racing_to_enroll_one_host_pin_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(fleet_server(dir.path(), &[]));
    let host = host_id(0x9800);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let (server, host, barrier) = (server.clone(), host.clone(), barrier.clone());
            std::thread::spawn(move || {
                let key = HostKey::new();
                let report = report(&host, IMG, 1);
                barrier.wait();
                let status = send(&server, &key, &report).status;
                (status, key.fingerprint())
            })
        })
        .collect();
    let outcomes: Vec<(u16, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<&(u16, String)> = outcomes
        .iter()
        .filter(|(status, _)| *status == 201)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|(status, _)| matches!(status, 201 | 403 | 409 | 429)),
        "{outcomes:?}"
    );
    let view = host_json(&server, &host);
    assert_eq!(view["key_fingerprint"], winners[0].1.as_str(), "{view}");
    assert_eq!(view["last_seq"], 1);
    let enrolls = audit(&server)
        .into_iter()
        .filter(|record| record["event"] == "enroll")
        .count();
    assert_eq!(enrolls, 1);
}

#[test]
fn extreme_seqs_and_intervals_are_never_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    for (n, seq, interval) in [
        (1u32, u64::MAX, None),
        (2, u64::MAX - 1, Some(u64::MAX)),
        (3, 1u64 << 63, Some(0)),
        (4, 1, Some(u64::MAX)),
    ] {
        let host = host_id(0x9900 + n);
        let key = HostKey::new();
        let mut r = report(&host, IMG, seq);
        r.interval_secs = interval;
        let answer = send(&server, &key, &r);
        assert!(
            matches!(answer.status, 201 | 400),
            "seq {seq}, interval {interval:?}: {} {}",
            answer.status,
            answer.text()
        );
        if answer.status == 201 {
            let view = host_json(&server, &host);
            assert_eq!(view["last_seq"], seq, "{view}");
            // Nothing above: the next report can only be a replay or a retry.
            let again = send(&server, &key, &r);
            assert_eq!(again.status, 200, "{}", again.text());
            let mut other = r.clone();
            other.hostname = "other".into();
            let answer = send(&server, &key, &other);
            assert!(matches!(answer.status, 409 | 400), "{}", answer.text());
        }
        for path in [
            "/fleet".to_owned(),
            "/hosts".to_owned(),
            format!("/hosts/{host}/reports"),
        ] {
            let answer = read(&server, &path);
            assert!(
                matches!(answer.status, 200 | 404),
                "{path}: {}",
                answer.text()
            );
        }
    }
    assert!(get(&server, "/metrics", &[]).status == 200);
}

/// Writes `head` then `body` on one connection while reading the answer, so that an
/// early answer (and the close after it) is read, not lost to a broken pipe.
fn exchange(addr: std::net::SocketAddr, head: Vec<u8>, body: Vec<u8>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&head);
        let _ = writer.write_all(&body);
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // Up to the end of the head: the status line is all this needs.
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn the_allowed_clock_skew_is_the_services_setting() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &["--max-clock-skew", "5"]);
    let key = HostKey::new();
    let host = host_id(0x9a00);
    let mut ahead = report(&host, IMG, 1);
    ahead.finished = timestamp(SystemTime::now() + Duration::from_secs(60));
    let answer = send(&server, &key, &ahead);
    assert_eq!(answer.status, 400, "{}", answer.text());
    let detail = answer.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("finished"), "{detail}");
    assert_nothing_stored(&server, std::slice::from_ref(&host), "a minute ahead");
    store(&server, &key, &report(&host, IMG, 1));
}
