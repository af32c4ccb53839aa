//! Router-level tests: the whole app (`app(state)`) driven with `oneshot`, a real sled
//! store and audit log in a temporary directory, no socket. The process-level suites
//! (`tests/`) cover the same API over TCP.

use super::*;
use crate::store::SledStore;
use http::Request as HttpRequest;
use integrity_common::report::{
    BaselineSource, HostReport, ReportBaseline, ReportMode, SignatureState,
};
use tower::ServiceExt;

pub(crate) const ADMIN: &str = "admin:root:admin-secret-0123456789";
pub(crate) const REPORT: &str = "report:agents:report-secret-0123456789";
pub(crate) const READ: &str = "read:ops:read-secret-0123456789";

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub state: Arc<AppState>,
    pub image_sha: String,
}

pub(crate) fn fixture() -> Fixture {
    fixture_with(FleetConfig::default())
}

pub(crate) fn fixture_with(fleet: FleetConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("data"), 8 << 20).unwrap();
    let audit = crate::audit::Audit::open(&dir.path().join("data")).unwrap();
    let state = AppState::new(
        Arc::new(store),
        Tokens::new([ADMIN, REPORT, READ]),
        Limits::default(),
        Vec::new(),
        fleet,
        Some(Arc::new(audit)),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        state,
        image_sha: String::new(),
    }
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {}", crate::auth::secret_of(token))
}

pub(crate) async fn call(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = HttpRequest::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", bearer(token));
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = app(state.clone())
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

pub(crate) fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

pub(crate) async fn with_baseline(mut fixture: Fixture) -> Fixture {
    let doc = br#"{"image_id":"img-1","timestamp":"2026-12-01T00:00:00Z","entries":[]}"#.to_vec();
    let (status, _, body) = call(
        &fixture.state,
        "POST",
        "/baselines",
        Some(ADMIN),
        &[],
        doc.clone(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    fixture.image_sha = integrity_common::Sha256Digest::of(&doc).to_hex();
    fixture
}

pub(crate) struct TestHost {
    pub id: String,
    pub key: integrity_trust::SecretKey,
    public: String,
    _dir: tempfile::TempDir,
}

pub(crate) fn host(index: u32) -> TestHost {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = (dir.path().join("host.key"), dir.path().join("host.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    TestHost {
        id: format!("{index:032x}"),
        key: integrity_trust::load_secret_key(&sk, integrity_trust::Password::PromptIfTerminal)
            .unwrap(),
        public: std::fs::read_to_string(&pk).unwrap(),
        _dir: dir,
    }
}

pub(crate) fn report(
    host: &TestHost,
    sha: &str,
    seq: u64,
    anomalies: Vec<serde_json::Value>,
) -> HostReport {
    let summary = integrity_common::DriftSummary {
        modified: anomalies.len() as u64,
        ..Default::default()
    };
    HostReport {
        host_id: host.id.clone(),
        hostname: format!("host-{}", &host.id[28..]),
        image_id: "img-1".into(),
        seq,
        interval_secs: Some(300),
        started: integrity_common::manifest::now_timestamp(),
        finished: integrity_common::manifest::now_timestamp(),
        agent_version: "test".into(),
        mode: ReportMode::Full,
        baseline: Some(ReportBaseline {
            sha256: sha.into(),
            source: BaselineSource::Server,
            signature: SignatureState::Verified,
        }),
        summary,
        anomalies: anomalies
            .into_iter()
            .map(|value| serde_json::from_value(value).unwrap())
            .collect(),
        truncated: 0,
        error: None,
        spool_dropped: 0,
        last_full: None,
    }
}

pub(crate) fn modified(path: &str, sha: &str) -> serde_json::Value {
    serde_json::json!({"anomaly":"modified","path":path,"changed":["sha256"],
        "baseline":{"path":path,"sha256":"00"},"current":{"path":path,"sha256":sha}})
}

pub(crate) async fn post_report(
    state: &Arc<AppState>,
    host: &TestHost,
    signer: &integrity_trust::SecretKey,
    report: &HostReport,
    with_key: bool,
) -> (StatusCode, serde_json::Value) {
    let bytes = report.to_bytes();
    let signature = integrity_trust::sign(signer, &bytes, "bulletproof-report").unwrap();
    let mut headers = vec![(
        "x-bulletproof-signature",
        integrity_trust::to_header(&signature),
    )];
    if with_key {
        headers.push((
            "x-bulletproof-host-key",
            integrity_trust::to_header(&host.public),
        ));
    }
    let (status, _, body) = call(state, "POST", "/reports", Some(REPORT), &headers, bytes).await;
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn every_new_route_needs_its_scope() {
    let fixture = fixture();
    let state = &fixture.state;
    for (method, uri, scope_ok) in [
        ("GET", "/fleet", READ),
        ("GET", "/drift", READ),
        ("GET", "/hosts", READ),
        ("GET", "/accepts", ADMIN),
        ("GET", "/audit", ADMIN),
    ] {
        let (status, _, _) = call(state, method, uri, None, &[], vec![]).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} without a token"
        );
        let (status, _, _) = call(state, method, uri, Some(REPORT), &[], vec![]).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {uri} with a report token"
        );
        let (status, _, _) = call(state, method, uri, Some(scope_ok), &[], vec![]).await;
        assert_eq!(status, StatusCode::OK, "{method} {uri}");
        let (status, _, _) = call(state, method, uri, Some(ADMIN), &[], vec![]).await;
        assert_eq!(status, StatusCode::OK, "{method} {uri} as admin");
    }
    let (status, _, _) = call(state, "POST", "/reports", Some(READ), &[], b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(state, "POST", "/accepts", Some(READ), &[], b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(state, "GET", "/hosts/nothex", Some(READ), &[], vec![]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(
        state,
        "GET",
        &format!("/hosts/{:032x}", 9),
        Some(READ),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(state, "GET", "/hosts?status=weird", Some(READ), &[], vec![]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(state, "DELETE", "/fleet", Some(ADMIN), &[], vec![]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn enrollment_retry_replay_and_a_second_key() {
    let fixture = with_baseline(fixture()).await;
    let (state, sha) = (&fixture.state, fixture.image_sha.clone());
    let alice = host(1);
    let first = report(&alice, &sha, 1, vec![]);
    let (status, _) = post_report(state, &alice, &alice.key, &first, false).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a first report without its key"
    );
    let (status, body) = post_report(state, &alice, &alice.key, &first, true).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "stored");
    let (status, _) = post_report(state, &alice, &alice.key, &first, false).await;
    assert_eq!(status, StatusCode::OK, "the same report again is a retry");

    let second = report(&alice, &sha, 2, vec![]);
    assert_eq!(
        post_report(state, &alice, &alice.key, &second, false)
            .await
            .0,
        StatusCode::CREATED
    );
    let mut older = report(&alice, &sha, 1, vec![]);
    older.hostname = "changed".into();
    let (status, body) = post_report(state, &alice, &alice.key, &older, false).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "replay");

    // Someone else's key for alice's host id: refused and audited.
    let mallory = host(1);
    let forged = report(&mallory, &sha, 3, vec![]);
    let (status, body) = post_report(state, &mallory, &mallory.key, &forged, true).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "key_mismatch");

    let (status, _, body) = call(
        state,
        "GET",
        &format!("/hosts/{}", alice.id),
        Some(READ),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let alice_json = json(&body);
    assert_eq!(alice_json["last_seq"], 2);
    assert_eq!(alice_json["status"], "clean");
    assert_eq!(alice_json["latest"]["seq"], 2);
    assert!(alice_json["key_fingerprint"]
        .as_str()
        .is_some_and(|id| id.len() == 16));

    // The audit trail: an enrollment, a replay and a key mismatch (refusals are
    // appended without waiting: poll).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, _, body) = call(state, "GET", "/audit", Some(ADMIN), &[], vec![]).await;
        let events: Vec<String> = json(&body)["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| record["event"].as_str().unwrap().to_owned())
            .collect();
        let refused = events
            .iter()
            .filter(|event| *event == "report_refused")
            .count();
        if events.contains(&"enroll".to_owned()) && refused >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit records missing: {events:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // An admin re-opens enrollment: the new key is pinned.
    let (status, _, _) = call(
        state,
        "DELETE",
        &format!("/hosts/{}/key", alice.id),
        Some(ADMIN),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = post_report(state, &mallory, &mallory.key, &forged, true).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = post_report(
        state,
        &alice,
        &alice.key,
        &report(&alice, &sha, 4, vec![]),
        true,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the old key is no longer the host's"
    );
}

#[tokio::test]
async fn one_change_on_many_hosts_is_one_group_until_accepted() {
    let fixture = with_baseline(fixture()).await;
    let (state, sha) = (&fixture.state, fixture.image_sha.clone());
    let hosts: Vec<TestHost> = (1..=5).map(host).collect();
    for host in &hosts {
        let drifted = report(host, &sha, 1, vec![modified("/usr/bin/su", "bad")]);
        assert_eq!(
            post_report(state, host, &host.key, &drifted, true).await.0,
            StatusCode::CREATED
        );
    }
    let (_, _, body) = call(
        state,
        "GET",
        "/drift?image_id=img-1",
        Some(READ),
        &[],
        vec![],
    )
    .await;
    let groups = json(&body)["groups"].as_array().unwrap().clone();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["hosts"], 5);
    assert_eq!(groups[0]["accepted"], serde_json::Value::Null);
    let (_, _, body) = call(state, "GET", "/fleet", Some(READ), &[], vec![]).await;
    assert_eq!(json(&body)["images"][0]["hosts"]["drifted"], 5);

    let accept = serde_json::json!({"image_id":"img-1","host_id":null,"path":"/usr/bin/su",
        "anomaly":"modified","current":groups[0]["current"],"comment":"hotfix 42"});
    let (status, _, body) = call(
        state,
        "POST",
        "/accepts",
        Some(ADMIN),
        &[],
        accept.to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let id = json(&body)["id"].as_str().unwrap().to_owned();
    let (_, _, body) = call(state, "GET", "/fleet", Some(READ), &[], vec![]).await;
    assert_eq!(json(&body)["images"][0]["hosts"]["clean"], 5);
    let (_, _, body) = call(state, "GET", "/drift", Some(READ), &[], vec![]).await;
    assert_eq!(json(&body)["groups"][0]["accepted"], id.as_str());

    // A different change on one host: drifted again.
    let changed = report(&hosts[0], &sha, 2, vec![modified("/usr/bin/su", "worse")]);
    assert_eq!(
        post_report(state, &hosts[0], &hosts[0].key, &changed, false)
            .await
            .0,
        StatusCode::CREATED
    );
    let (_, _, body) = call(
        state,
        "GET",
        &format!("/hosts/{}", hosts[0].id),
        Some(READ),
        &[],
        vec![],
    )
    .await;
    assert_eq!(json(&body)["status"], "drifted");
    let (_, _, body) = call(
        state,
        "GET",
        "/hosts?status=clean&limit=2",
        Some(READ),
        &[],
        vec![],
    )
    .await;
    let page = json(&body);
    assert_eq!(page["hosts"].as_array().unwrap().len(), 2);
    let after = page["next"].as_str().unwrap();
    let (_, _, body) = call(
        state,
        "GET",
        &format!("/hosts?status=clean&limit=2&after={after}"),
        Some(READ),
        &[],
        vec![],
    )
    .await;
    let page = json(&body);
    assert_eq!(page["hosts"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], serde_json::Value::Null);

    let (status, _, _) = call(
        state,
        "DELETE",
        &format!("/accepts/{id}"),
        Some(ADMIN),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, _, body) = call(state, "GET", "/fleet", Some(READ), &[], vec![]).await;
    assert_eq!(json(&body)["images"][0]["hosts"]["drifted"], 5);
}

#[tokio::test]
async fn bad_reports_are_4xx_and_store_nothing() {
    let fixture = with_baseline(fixture()).await;
    let (state, sha) = (&fixture.state, fixture.image_sha.clone());
    let eve = host(7);
    let mut future = report(&eve, &sha, 1, vec![]);
    future.finished = "2099-01-01T00:00:00Z".into();
    let mut unknown = report(&eve, &sha, 1, vec![]);
    unknown.image_id = "img-nope".into();
    let mut bad_id = report(&eve, &sha, 1, vec![]);
    bad_id.host_id = "ABC".into();
    for (case, expected) in [
        (future, StatusCode::BAD_REQUEST),
        (unknown, StatusCode::UNPROCESSABLE_ENTITY),
        (bad_id, StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = post_report(state, &eve, &eve.key, &case, true).await;
        assert_eq!(status, expected, "{body}");
    }
    for body in [&b"not json"[..], b"[]", br#"{"host_id":1}"#] {
        let (status, _, _) =
            call(state, "POST", "/reports", Some(REPORT), &[], body.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, _, _) = call(
        state,
        "GET",
        &format!("/hosts/{}", eve.id),
        Some(READ),
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
}

/// Hosts, their latest reports' drift and the accepts come back after a restart.
#[tokio::test]
async fn the_fleet_is_rebuilt_from_the_store_at_start() {
    let fixture = with_baseline(fixture()).await;
    let sha = fixture.image_sha.clone();
    let data = fixture._dir.path().join("data");
    let hosts: Vec<TestHost> = (1..=3).map(host).collect();
    for host in &hosts {
        let drifted = report(host, &sha, 2, vec![modified("/etc/passwd", "x")]);
        assert_eq!(
            post_report(&fixture.state, host, &host.key, &drifted, true)
                .await
                .0,
            StatusCode::CREATED
        );
    }
    let (_, _, before) = call(&fixture.state, "GET", "/drift", Some(READ), &[], vec![]).await;
    let Fixture { _dir, state, .. } = fixture;
    drop(state);
    // The writer thread lets go of the store when its last handle is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let store = loop {
        match SledStore::open(&data, 8 << 20) {
            Ok(store) => break store,
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "{error}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let state = AppState::new(
        Arc::new(store),
        Tokens::new([ADMIN, REPORT, READ]),
        Limits::default(),
        Vec::new(),
        FleetConfig::default(),
        Some(Arc::new(crate::audit::Audit::open(&data).unwrap())),
    )
    .unwrap();
    let (_, _, after) = call(&state, "GET", "/drift", Some(READ), &[], vec![]).await;
    assert_eq!(json(&before), json(&after));
    assert_eq!(json(&after)["groups"][0]["hosts"], 3);
    let (_, _, body) = call(
        &state,
        "GET",
        &format!("/hosts/{}", hosts[0].id),
        Some(READ),
        &[],
        vec![],
    )
    .await;
    let host_json = json(&body);
    assert_eq!(
        host_json["gaps"],
        serde_json::json!([[1, 1]]),
        "seq 1 never arrived"
    );
    assert_eq!(host_json["status"], "drifted");
    // The pinned key survived: a retry is still recognised, a replay refused.
    let again = report(&hosts[0], &sha, 3, vec![]);
    assert_eq!(
        post_report(&state, &hosts[0], &hosts[0].key, &again, false)
            .await
            .0,
        StatusCode::CREATED
    );
}

/// Reports signed by anyone but the host charge nothing of the host's: a flood of them
/// neither rate-limits nor blocks its real reports.
#[tokio::test]
async fn forged_reports_cannot_silence_a_host() {
    let fixture = with_baseline(fixture_with(FleetConfig {
        host_burst: 3,
        ..FleetConfig::default()
    }))
    .await;
    let (state, sha) = (&fixture.state, fixture.image_sha.clone());
    let alice = host(1);
    let mallory = host(1);
    assert_eq!(
        post_report(
            state,
            &alice,
            &alice.key,
            &report(&alice, &sha, 1, vec![]),
            true
        )
        .await
        .0,
        StatusCode::CREATED
    );
    for seq in 2..10 {
        let forged = report(&mallory, &sha, seq, vec![]);
        let (status, _) = post_report(state, &mallory, &mallory.key, &forged, false).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, body) = post_report(
        state,
        &alice,
        &alice.key,
        &report(&alice, &sha, 2, vec![]),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A seq far above the host's last is refused (it would end the host's number space
/// or push its history out at once); after an allowed jump, the per-host cap takes no
/// more of the earlier reports than it would have anyway.
#[tokio::test]
async fn seq_jumps_are_bounded_and_do_not_wipe_the_history() {
    let fixture = with_baseline(fixture_with(FleetConfig {
        max_reports_per_host: 3,
        ..FleetConfig::default()
    }))
    .await;
    let (state, sha) = (&fixture.state, fixture.image_sha.clone());
    let alice = host(1);
    for seq in 1..=3 {
        let sent = report(&alice, &sha, seq, vec![]);
        assert_eq!(
            post_report(state, &alice, &alice.key, &sent, true).await.0,
            StatusCode::CREATED
        );
    }
    let far = report(&alice, &sha, 3 + crate::fleet::MAX_SEQ_JUMP + 1, vec![]);
    let (status, body) = post_report(state, &alice, &alice.key, &far, false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().starts_with("seq:"),
        "{body}"
    );
    let jump = report(&alice, &sha, 100, vec![]);
    assert_eq!(
        post_report(state, &alice, &alice.key, &jump, false).await.0,
        StatusCode::CREATED
    );
    let uri = format!("/hosts/{}/reports", alice.id);
    let (_, _, body) = call(state, "GET", &uri, Some(READ), &[], vec![]).await;
    let seqs: Vec<u64> = json(&body)["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![100, 3, 2]);
}

/// A flood of refused reports is itemised in the audit log up to a rate, and the rest
/// is counted in a summary record: nothing goes unrecorded, and the log stays bounded.
#[tokio::test]
async fn a_flood_of_refusals_is_counted_not_itemised() {
    let fixture = with_baseline(fixture()).await;
    let (state, sha) = (&fixture.state, fixture.image_sha.clone());
    let stranger = host(9);
    let flood = 6 * crate::fleet::REFUSALS_PER_SECOND;
    for seq in 1..=flood {
        // Unknown host, no key: refused (403) and audited.
        let sent = report(&stranger, &sha, seq, vec![]);
        assert_eq!(
            post_report(state, &stranger, &stranger.key, &sent, false)
                .await
                .0,
            StatusCode::FORBIDDEN
        );
    }
    // One more refusal in a later second flushes the count of the last one.
    let started = crate::fleet::now_secs();
    while crate::fleet::now_secs() == started {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let last = report(&stranger, &sha, flood + 1, vec![]);
    post_report(state, &stranger, &stranger.key, &last, false).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, _, body) = call(state, "GET", "/audit?limit=10000", Some(ADMIN), &[], vec![]).await;
        let records = json(&body)["records"].as_array().unwrap().clone();
        let refused: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["event"] == "report_refused")
            .collect();
        let itemised = refused.iter().filter(|r| r["data"]["seq"].is_u64()).count() as u64;
        let counted: u64 = refused
            .iter()
            .filter_map(|r| r["data"]["suppressed"].as_u64())
            .sum();
        if itemised + counted == flood + 1 {
            assert!(itemised < flood, "a flood is not itemised record by record");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "itemised {itemised}, counted {counted}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_accept_too_large_is_refused() {
    let fixture = with_baseline(fixture()).await;
    let huge = "x".repeat(integrity_common::report::MAX_FINDING_BYTES);
    let accept = serde_json::json!({"image_id":"img-1","host_id":null,"path":"/etc/x",
        "anomaly":"modified","current":{"sha256": huge},"comment":""});
    let (status, _, _) = call(
        &fixture.state,
        "POST",
        "/accepts",
        Some(ADMIN),
        &[],
        accept.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
