//! Two replicas over one PostgreSQL database, as people and admins meet them (issue
//! 20): a page session started on one is valid on the other and a logout on either
//! ends it on both; an accept made through one is effective and listed on the other,
//! and so are its audit records; a report taken by one shows in the other's fleet views
//! within a couple of seconds.

mod support;

use std::time::{Duration, Instant};
use support::fleet::*;
use support::*;

/// Two replicas on one new database.
fn replicas(hint: &str) -> (tempfile::TempDir, Server, Server) {
    let url = pg::cluster().database(hint);
    let dir = tempfile::tempdir().unwrap();
    let a = start_fleet(&dir.path().join("a"), &["--store", &url]);
    let b = start_fleet(&dir.path().join("b"), &["--store", &url]);
    (dir, a, b)
}

/// Polls `check` until it holds (or panics after 10 s, saying what was awaited).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A raw HTTP/1.1 exchange; the status and the whole answer (headers and body).
fn exchange(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        server.addr
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw(server.addr, request.as_bytes())
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn a_page_session_is_valid_on_every_replica_and_ends_on_all() {
    let (_dir, a, b) = replicas("sessions");
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let (status, answer) = exchange(
        &a,
        "POST",
        "/ui/login",
        &form,
        &format!("token={ADMIN_TOKEN}"),
    );
    assert_eq!(status, 303, "{answer}");
    let cookie = header(&answer, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let cookie_header = format!("Cookie: {cookie}");
    let (status, page) = exchange(&b, "GET", "/ui/", &[&cookie_header], "");
    assert_eq!(status, 200, "the other replica knows the session: {page}");
    let start = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    let csrf = page[start..].split('"').next().unwrap().to_owned();
    // Log out through b (same origin as b, as a browser on b would send).
    let origin = format!("Origin: http://{}", b.addr);
    let (status, answer) = exchange(
        &b,
        "POST",
        "/ui/logout",
        &[&cookie_header, form[0], &origin],
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 303, "{answer}");
    for replica in [&a, &b] {
        let (status, answer) = exchange(replica, "GET", "/ui/", &[&cookie_header], "");
        assert_eq!(
            (status, header(&answer, "location")),
            (303, Some("/ui/login")),
            "logged out everywhere"
        );
    }
}

#[test]
fn accepts_and_their_audit_records_are_the_same_on_every_replica() {
    let (_dir, a, b) = replicas("accepts");
    upload_image(&a, "img-r");
    let key = HostKey::new();
    let report = with_findings(
        report(&host_id(1), "img-r", 1),
        vec![modified("/etc/motd", "ab")],
    );
    assert_eq!(send(&b, &key, &report).status, 201);
    let admin = bearer(ADMIN_TOKEN);
    let admin = [(admin.0, admin.1.as_str())];
    let read = bearer(READ_TOKEN);
    let read = [(read.0, read.1.as_str())];
    // b took the report; a's views show it within a couple of seconds.
    eventually("the report taken by b shows on a", || {
        let host = get(&a, &format!("/hosts/{}", host_id(1)), &read);
        host.status == 200 && host.json()["status"] == "drifted"
    });
    let body = serde_json::json!({
        "image_id": "img-r",
        "host_id": host_id(1),
        "path": "/etc/motd",
        "anomaly": "modified",
        "current": report.anomalies[0].current,
        "comment": "expected",
    });
    let made = post(&a, "/accepts", body.to_string().as_bytes(), &admin);
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["id"].as_str().unwrap().to_owned();
    eventually("b sees the accept and the host clean", || {
        let listed = get(&b, "/accepts", &admin).json();
        let host = get(&b, &format!("/hosts/{}", host_id(1)), &read).json();
        listed["accepts"]
            .as_array()
            .is_some_and(|all| all.len() == 1)
            && host["status"] == "clean"
    });
    // The audit listing is the same on both, whoever wrote the record.
    let events = |server: &Server| -> Vec<String> {
        get(server, "/audit?limit=50", &admin).json()["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| record["event"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert!(
        events(&b).contains(&"enroll".to_owned()),
        "{:?}",
        events(&b)
    );
    assert!(
        events(&b).iter().any(|event| event.starts_with("accept")),
        "{:?}",
        events(&b)
    );
    assert_eq!(events(&a), events(&b));
    // Revoked through b: a's views follow.
    let gone = exchange(
        &b,
        "DELETE",
        &format!("/accepts/{id}"),
        &[&format!("Authorization: Bearer {ADMIN_TOKEN}")],
        "",
    );
    assert_eq!(gone.0, 204, "{}", gone.1);
    eventually("a sees the revocation", || {
        get(&a, &format!("/hosts/{}", host_id(1)), &read).json()["status"] == "drifted"
    });
}

#[test]
fn a_baseline_posted_to_one_replica_is_served_at_once_by_the_other() {
    let (_dir, a, b) = replicas("baseline");
    upload_image(&a, "img-now");
    let first = get(&b, "/baselines/img-now", &[]);
    assert_eq!(first.status, 200, "no second of delay: {}", first.text());
    let etag = first.header("etag").unwrap().to_owned();
    let again = get(&a, "/baselines/img-now", &[]);
    assert_eq!(
        (again.body.clone(), again.header("etag")),
        (first.body.clone(), Some(etag.as_str()))
    );
    assert_eq!(
        get(&b, "/baselines/img-now", &[("If-None-Match", &etag)]).status,
        304
    );
    // A report of that image through b right away: the image is known.
    let key = HostKey::new();
    assert_eq!(
        send(&b, &key, &report(&host_id(2), "img-now", 1)).status,
        201
    );
}
