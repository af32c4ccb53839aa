//! Router-level tests of the pages: every page's status codes with and without a
//! session, login and logout, CSRF, scopes, escaping of what agents sent. The real
//! browser suite is `integrity-agent/tests/ui_browser.rs`.

use crate::app::tests::{
    call, fixture, host, modified, post_report, report, with_baseline, Fixture, ADMIN, READ, REPORT,
};
use http::StatusCode;

/// Logs in with `token`; the session cookie (`name=value`).
async fn login(fixture: &Fixture, token: &str) -> String {
    let form = format!("token={}", crate::auth::secret_of(token));
    let (status, headers, body) = call(
        &fixture.state,
        "POST",
        "/ui/login",
        None,
        &[("content-type", "application/x-www-form-urlencoded".into())],
        form.into_bytes(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers["location"], "/ui/");
    let cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

async fn get(fixture: &Fixture, cookie: &str, uri: &str) -> (StatusCode, String) {
    let (status, headers, body) = call(
        &fixture.state,
        "GET",
        uri,
        None,
        &[("cookie", cookie.into())],
        vec![],
    )
    .await;
    if status == StatusCode::OK {
        assert_eq!(headers["content-type"], "text/html; charset=utf-8", "{uri}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(headers["cache-control"], "no-store");
    }
    (status, String::from_utf8(body).unwrap())
}

async fn post(fixture: &Fixture, cookie: &str, uri: &str, form: &str) -> (StatusCode, String) {
    let (status, headers, body) = call(
        &fixture.state,
        "POST",
        uri,
        None,
        &[
            ("cookie", cookie.into()),
            ("content-type", "application/x-www-form-urlencoded".into()),
        ],
        form.as_bytes().to_vec(),
    )
    .await;
    let location = headers
        .get("location")
        .map(|value| value.to_str().unwrap().to_owned());
    (
        status,
        location.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
    )
}

/// The CSRF token in a page.
fn csrf(page: &str) -> String {
    let start = page.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    page[start..start + 64].to_owned()
}

/// The id of the `/etc/motd` finding the drifted host reports (what accept forms name).
fn motd() -> String {
    crate::fleet::drift::GroupKey {
        path: "/etc/motd".into(),
        anomaly: "modified".into(),
        current: integrity_common::report::canonical_current(
            &serde_json::json!({"path": "/etc/motd", "sha256": "ee"}),
        ),
    }
    .id()
}

/// A service with a baseline, a clean host and a drifted one whose finding's path holds HTML.
async fn fleet() -> (Fixture, String, String) {
    let fixture = with_baseline(fixture()).await;
    let clean = host(1);
    let drifted = host(2);
    let sha = fixture.image_sha.clone();
    let (status, _) = post_report(
        &fixture.state,
        &clean,
        &clean.key,
        &report(&clean, &sha, 1, vec![]),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let findings = vec![
        modified("/etc/<script>alert(1)</script>", "ff"),
        modified("/etc/motd", "ee"),
    ];
    let (status, _) = post_report(
        &fixture.state,
        &drifted,
        &drifted.key,
        &report(&drifted, &sha, 1, findings),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    (fixture, clean.id.clone(), drifted.id.clone())
}

#[tokio::test]
async fn without_a_session_pages_go_to_login_and_posts_are_refused() {
    let (fixture, _, drifted) = fleet().await;
    for uri in [
        "/ui/".to_owned(),
        "/ui/images/img-1".into(),
        format!("/ui/hosts/{drifted}"),
        "/ui/accepts".into(),
        "/ui/audit".into(),
    ] {
        let (status, headers, _) = call(&fixture.state, "GET", &uri, None, &[], vec![]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(headers["location"], "/ui/login", "{uri}");
        // A bearer token is not a session.
        let (status, _, _) = call(&fixture.state, "GET", &uri, Some(ADMIN), &[], vec![]).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{uri}");
    }
    let (status, _) = post(&fixture, "bp_session=00", "/ui/accepts", "csrf=x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = call(&fixture.state, "GET", "/ui/login", None, &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let (status, headers, body) =
        call(&fixture.state, "GET", "/ui/style.css", None, &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    assert!(body.len() < 8192, "one small stylesheet");
    let (status, headers, _) = call(&fixture.state, "GET", "/ui", None, &[], vec![]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/");
}

#[tokio::test]
async fn login_takes_only_read_or_admin_tokens() {
    let fixture = fixture();
    for (form, why) in [
        ("token=wrong-token-0123456789".to_owned(), "unknown"),
        (
            format!("token={}", crate::auth::secret_of(REPORT)),
            "report scope",
        ),
        ("token=".to_owned(), "empty"),
        ("nothing=1".to_owned(), "no field"),
    ] {
        let (status, headers, body) = call(
            &fixture.state,
            "POST",
            "/ui/login",
            None,
            &[("content-type", "application/x-www-form-urlencoded".into())],
            form.into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
        assert!(headers.get("set-cookie").is_none(), "{why}");
        assert!(
            String::from_utf8_lossy(&body).contains("class=\"error\""),
            "{why}"
        );
    }
    login(&fixture, READ).await;
    login(&fixture, ADMIN).await;
}

#[tokio::test]
async fn a_read_session_sees_every_page_it_may_and_no_buttons() {
    let (fixture, clean, drifted) = fleet().await;
    let cookie = login(&fixture, READ).await;
    let (status, page) = get(&fixture, &cookie, "/ui/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(r#"data-image="img-1""#) && page.contains("svg"),
        "{page}"
    );
    assert!(page.contains("ops (read)"));
    let (status, page) = get(&fixture, &cookie, "/ui/images/img-1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!(r#"data-host="{drifted}""#)));
    assert!(page.contains(&format!(r#"data-host="{clean}""#)));
    assert!(
        !page.contains("button class=\"accept\""),
        "read sees no accept button"
    );
    let (status, page) = get(&fixture, &cookie, &format!("/ui/hosts/{drifted}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("class=\"finding\"") && !page.contains("class=\"accept\""));
    let (status, page) = get(&fixture, &cookie, "/ui/images/img-1?status=drifted").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&drifted) && !page.contains(&format!(r#"data-host="{clean}""#)));
    let csrf = csrf(&page);
    for (uri, expected) in [
        ("/ui/accepts".to_owned(), StatusCode::FORBIDDEN),
        ("/ui/audit".into(), StatusCode::FORBIDDEN),
        ("/ui/images/img-none".into(), StatusCode::NOT_FOUND),
        ("/ui/images/bad%20id".into(), StatusCode::BAD_REQUEST),
        (
            "/ui/images/img-1?status=sleepy".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/ui/hosts/{}", "f".repeat(32)),
            StatusCode::NOT_FOUND,
        ),
        ("/ui/hosts/not-hex".into(), StatusCode::BAD_REQUEST),
        (
            "/ui/images/img-1/drift/0000000000000000".into(),
            StatusCode::NOT_FOUND,
        ),
        ("/ui/nothing".into(), StatusCode::NOT_FOUND),
    ] {
        let (status, _) = get(&fixture, &cookie, &uri).await;
        assert_eq!(status, expected, "{uri}");
    }
    // A read session with a right CSRF token still cannot accept.
    let form = format!(
        "csrf={csrf}&image_id=img-1&host_id=&finding={}&back=%2Fui%2F",
        motd()
    );
    let (status, _) = post(&fixture, &cookie, "/ui/accepts", &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(crate::app::accepts::accepts(&fixture.state, None).is_empty());
}

#[tokio::test]
async fn an_admin_accepts_and_revokes_with_csrf_and_logs_out() {
    let (fixture, _, drifted) = fleet().await;
    let cookie = login(&fixture, ADMIN).await;
    let (status, page) = get(&fixture, &cookie, &format!("/ui/hosts/{drifted}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page.matches("class=\"accept-finding\"").count(),
        2,
        "{page}"
    );
    let csrf = csrf(&page);
    let fields = format!(
        "image_id=img-1&host_id={drifted}&finding={}&back=%2Fui%2Fhosts%2F{drifted}",
        motd()
    );
    // Forged: no CSRF token, a wrong one, another origin.
    let (status, _) = post(&fixture, &cookie, "/ui/accepts", &fields).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(
        &fixture,
        &cookie,
        "/ui/accepts",
        &format!("csrf={}&{fields}", "0".repeat(64)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(
        &fixture.state,
        "POST",
        "/ui/accepts",
        None,
        &[
            ("cookie", cookie.clone()),
            ("content-type", "application/x-www-form-urlencoded".into()),
            ("origin", "http://evil.example".into()),
            ("host", "127.0.0.1:1".into()),
        ],
        format!("csrf={csrf}&{fields}").into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        crate::app::accepts::accepts(&fixture.state, None).is_empty(),
        "nothing accepted"
    );
    // The real form.
    let (status, location) = post(
        &fixture,
        &cookie,
        "/ui/accepts",
        &format!("csrf={csrf}&{fields}"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    assert_eq!(location, format!("/ui/hosts/{drifted}"));
    let accepts = crate::app::accepts::accepts(&fixture.state, None);
    assert_eq!(accepts.len(), 1);
    assert_eq!(accepts[0].created_by, "name:root");
    let (_, page) = get(&fixture, &cookie, &format!("/ui/hosts/{drifted}")).await;
    assert_eq!(
        page.matches("class=\"accept-finding\"").count(),
        1,
        "one left to accept"
    );
    // A bad form is a 400 page, not a panic; a hostile `back` returns to our pages.
    let (status, _) = post(
        &fixture,
        &cookie,
        "/ui/accepts",
        &format!("csrf={csrf}&image_id=img-1&back=%2Fui%2F"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A finding the latest report no longer has (or never had) is not accepted.
    let (status, _) = post(
        &fixture,
        &cookie,
        "/ui/accepts",
        &format!("csrf={csrf}&image_id=img-1&host_id={drifted}&finding=0000000000000000"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, location) = post(
        &fixture,
        &cookie,
        "/ui/accepts",
        &format!(
            "csrf={csrf}&image_id=img-1&host_id=&finding={}&back=https%3A%2F%2Fevil.example%2F",
            motd()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/ui/");
    // The accepts page lists both, with revoke forms; revoking needs the token too.
    let (status, page) = get(&fixture, &cookie, "/ui/accepts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.matches("<form class=\"revoke\"").count(), 2);
    let id = accepts[0].id.clone();
    let (status, _) = post(&fixture, &cookie, &format!("/ui/accepts/{id}/revoke"), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, location) = post(
        &fixture,
        &cookie,
        &format!("/ui/accepts/{id}/revoke"),
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/accepts")
    );
    assert_eq!(crate::app::accepts::accepts(&fixture.state, None).len(), 1);
    let (status, _) = post(
        &fixture,
        &cookie,
        &format!("/ui/accepts/{id}/revoke"),
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The audit page shows the actions and the log's state.
    let (status, page) = get(&fixture, &cookie, "/ui/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("accept_created") && page.contains("accept_deleted"),
        "{page}"
    );
    assert!(page.contains("intact"), "{page}");
    // Logout needs the token, ends the session and removes the cookie.
    let (status, _) = post(&fixture, &cookie, "/ui/logout", "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = call(
        &fixture.state,
        "POST",
        "/ui/logout",
        None,
        &[
            ("cookie", cookie.clone()),
            ("content-type", "application/x-www-form-urlencoded".into()),
        ],
        format!("csrf={csrf}").into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, headers, _) = call(
        &fixture.state,
        "GET",
        "/ui/",
        None,
        &[("cookie", cookie.clone())],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/login");
}

#[tokio::test]
async fn what_agents_sent_is_text_never_markup() {
    let (fixture, _, drifted) = fleet().await;
    let cookie = login(&fixture, ADMIN).await;
    for uri in [format!("/ui/hosts/{drifted}"), "/ui/images/img-1".into()] {
        let (status, page) = get(&fixture, &cookie, &uri).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("/etc/&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{uri}: {page}"
        );
        assert!(!page.contains("<script"), "{uri}");
    }
    // The group page of that path, found from the image page's link.
    let (_, page) = get(&fixture, &cookie, "/ui/images/img-1").await;
    let start = page.find("/ui/images/img-1/drift/").unwrap();
    let link = &page[start..start + "/ui/images/img-1/drift/".len() + 16];
    let (status, group) = get(&fixture, &cookie, link).await;
    assert_eq!(status, StatusCode::OK, "{link}");
    assert!(group.contains(&format!(r#"data-host="{drifted}""#)));
}
