//! The pages (`/ui/`, REFERENCE §8) against hostile agents and hostile browsers, on a
//! real service process over a real socket: what agents send is inert text in every
//! page and attribute and survives the accept forms, forms need this session's CSRF
//! token, our origin and an admin, sessions cannot be fixated or flooded away, odd ids
//! and methods are 4xx, every answer carries the pages' headers, pages stay bounded.

mod support;

use integrity_common::report::ReportAnomaly;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::fleet::*;
use support::*;

const IMG: &str = "img-ui";
/// Text, tag and attribute break-outs; no control characters (hostname, error).
const PAYLOAD: &str = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>\
     \" onfocus=\"alert(3)\" autofocus x=\"</textarea></title><meta http-equiv=refresh \
     content=0;url=//evil.example><base href=//evil.example/><svg/onload=alert(4)>&lt;b&gt;";
/// Raw markup that would mean a break-out (the pieces of `PAYLOAD`, unescaped).
const BREAKOUTS: &str = "<script|<img|\" onfocus=\"|<meta http-equiv|<base|<svg/onload|</textarea>";
const SHOWN: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder().http_status_as_error(false);
    let config = config.max_redirects(0);
    let config = config.timeout_global(Some(Duration::from_secs(300)));
    config.build().new_agent()
}

type Answer = Result<ureq::http::Response<ureq::Body>, ureq::Error>;
type Headers<'a> = &'a [(&'a str, &'a str)];

fn finish(answer: Answer, what: &str) -> Reply {
    let mut response = answer.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    let headers = (response.headers().iter())
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 31)
        .read_to_vec();
    let body = body.unwrap_or_else(|error| panic!("{what}: body cut: {error}"));
    let status = response.status().as_u16();
    Reply {
        status,
        headers,
        body,
    }
}

/// A browser: its session cookie (`bp_session=…`, if any) and its pages' CSRF token.
struct Browser<'a> {
    server: &'a Server,
    cookie: Option<String>,
    csrf: String,
}

impl Browser<'_> {
    /// GET without following redirects.
    fn get(&self, path: &str) -> Reply {
        let mut request = agent().get(self.server.url(path));
        if let Some(cookie) = &self.cookie {
            request = request.header("Cookie", cookie);
        }
        finish(request.call(), path)
    }

    /// POSTs a urlencoded form.
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        self.post_with(path, fields, &[])
    }

    fn post_with(&self, path: &str, fields: &[(&str, &str)], headers: Headers) -> Reply {
        let mut request = agent().post(self.server.url(path));
        let cookie = self.cookie.as_deref().map(|c| ("Cookie", c));
        for (name, value) in cookie.iter().chain(headers) {
            request = request.header(*name, *value);
        }
        finish(request.send_form(fields.iter().copied()), path)
    }

    /// POSTs `fields` with this browser's CSRF token.
    fn submit(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let csrf = [("csrf", self.csrf.as_str())];
        self.post(path, &[&csrf[..], fields].concat())
    }
}

fn with_cookie<'a>(server: &'a Server, cookie: Option<&str>) -> Browser<'a> {
    let (cookie, csrf) = (cookie.map(str::to_owned), String::new());
    Browser {
        server,
        cookie,
        csrf,
    }
}

fn login<'a>(server: &'a Server, token: &str) -> Browser<'a> {
    let answer = with_cookie(server, None).post("/ui/login", &[("token", token)]);
    assert_eq!(answer.status, 303, "login: {}", answer.text());
    let cookie = answer.header("set-cookie").expect("a session cookie");
    let mut browser = with_cookie(server, cookie.split(';').next());
    browser.csrf = csrf_of(&browser.get("/ui/").text());
    browser
}

fn csrf_of(body: &str) -> String {
    let start = body.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    body[start..].split('"').next().unwrap().to_owned()
}

/// The status and `Location` of an answer.
fn to(answer: &Reply) -> (u16, &str) {
    (answer.status, answer.header("location").unwrap_or(""))
}

fn pairs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields.iter().map(|(k, v)| (&**k, &**v)).collect()
}

fn unescape(text: &str) -> String {
    let text = text.replace("&quot;", "\"").replace("&lt;", "<");
    text.replace("&gt;", ">").replace("&amp;", "&")
}

/// The hidden fields of every `<form class="CLASS"` of a page, unescaped.
fn forms(body: &str, class: &str) -> Vec<Vec<(String, String)>> {
    let opening = format!("<form class=\"{class}\"");
    let inputs = |form: &str| -> Vec<(String, String)> {
        let form = form.split("</form>").next().unwrap();
        (form.split("<input type=\"hidden\" name=\"").skip(1))
            .map(|input| {
                let (name, rest) = input.split_once('"').unwrap();
                let value = rest.split_once("value=\"").unwrap().1;
                (name.to_owned(), unescape(value.split('"').next().unwrap()))
            })
            .collect()
    };
    body.split(opening.as_str()).skip(1).map(inputs).collect()
}

/// What each submit button of every `<form class="CLASS"` sends: the form's hidden
/// fields, plus the button's own `name=value` when it has one (the image page has one
/// form around its drift table, a button per group).
fn submissions(body: &str, class: &str) -> Vec<Vec<(String, String)>> {
    let opening = format!("<form class=\"{class}\"");
    let hidden = forms(body, class);
    let bodies = body.split(opening.as_str()).skip(1);
    let mut out = Vec::new();
    for (fields, form) in hidden.into_iter().zip(bodies) {
        let form = form.split("</form>").next().unwrap();
        let buttons: Vec<(String, String)> = (form.split("<button ").skip(1))
            .filter_map(|button| {
                let tag = button.split('>').next().unwrap();
                let name = tag.split_once("name=\"")?.1.split('"').next()?;
                let value = tag.split_once("value=\"")?.1.split('"').next()?;
                Some((name.to_owned(), unescape(value)))
            })
            .collect();
        if buttons.is_empty() {
            out.push(fields);
            continue;
        }
        for button in buttons {
            let mut sent = fields.clone();
            sent.push(button);
            out.push(sent);
        }
    }
    out
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(key, _)| key == name).unwrap().1.as_str()
}

/// What REFERENCE §8 promises every page (`Referrer-Policy` is checked once, in
/// `every_answer_under_ui_carries_the_page_headers`).
fn assert_page_headers(answer: &Reply, what: &str) {
    let missing = header_problems(answer);
    assert!(missing.is_empty(), "{what}: {missing:?}");
}

fn header_problems(answer: &Reply) -> Vec<String> {
    let header = |name| answer.header(name).unwrap_or("");
    let csp = header("content-security-policy");
    let directives = "default-src 'none';frame-ancestors 'none';form-action 'self'";
    let weak = directives.split(';').any(|d| !csp.contains(d)) || csp.contains("unsafe");
    let mut problems = Vec::new();
    if weak {
        problems.push(format!("CSP {csp:?}"));
    }
    let wanted = "cache-control=no-store x-content-type-options=nosniff";
    for (name, value) in wanted.split(' ').filter_map(|pair| pair.split_once('=')) {
        if header(name) != value {
            problems.push(format!("{name}: {:?}", header(name)));
        }
    }
    problems
}

fn assert_inert(body: &str, what: &str) {
    for raw in BREAKOUTS.split('|') {
        assert!(!body.contains(raw), "{what}: raw {raw:?} in the page");
    }
    for secret in [ADMIN_TOKEN, READ_TOKEN, REPORT_TOKEN] {
        assert!(!body.contains(secret), "{what}: a token's secret");
    }
}

/// A service with the four tokens and a baseline of `IMG` (and its data directory).
fn fresh(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_fleet(dir.path(), args);
    upload_image(&server, IMG);
    (dir, server)
}

fn accepts_json(server: &Server) -> Vec<Value> {
    let answer = admin_get(server, "/accepts");
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["accepts"].as_array().unwrap().clone()
}

/// A finding of `path` with `current` values (no `changed`: every field is shown).
fn finding(kind: &str, path: &str, current: Value) -> ReportAnomaly {
    let baseline = json!({"mode": 420});
    let value = json!({"anomaly": kind, "path": path, "baseline": baseline, "current": current});
    serde_json::from_value(value).unwrap()
}

/// The id accept forms name a finding by (path, kind, current values).
fn id_of(finding: &ReportAnomaly) -> String {
    metadata_service::fleet::drift::GroupKey::of(finding).id()
}

fn host_with(server: &Server, n: u32, findings: Vec<ReportAnomaly>) {
    let (host, key) = (host_id(n), HostKey::new());
    let report = with_findings(report(&host, IMG, 1), findings);
    store(server, &key, &report);
}

#[test]
fn agent_text_is_inert_in_every_page_and_attribute() {
    let (_dir, server) = fresh(&[]);
    let (host, key) = (host_id(0x51), HostKey::new());
    let mut first = report(&host, IMG, 1);
    first.error = Some(format!("first {PAYLOAD}"));
    store(&server, &key, &first);
    let mut latest = report(&host, IMG, 2);
    latest.hostname = PAYLOAD.to_owned();
    latest.agent_version = "<script>alert(9)</script>\"><img src=x>".to_owned();
    latest.error = Some(PAYLOAD.to_owned());
    let mut odd = modified(&format!("/srv/{PAYLOAD}"), &"ab".repeat(32));
    odd.changed = vec!["<script>".to_owned(), "\" onfocus=\"".to_owned()];
    odd.current["<script>"] = json!(PAYLOAD);
    odd.baseline["\" onfocus=\""] = json!(PAYLOAD);
    let keyed = json!({ PAYLOAD: PAYLOAD });
    let keyed = finding("added", "/srv/line\nbreak\r<script>x", keyed);
    let gone = finding("deleted", &format!("/gone/{PAYLOAD}"), Value::Null);
    let findings = vec![odd, keyed, gone.clone()];
    store(&server, &key, &with_findings(latest, findings));
    let accept = json!({"image_id": IMG, "host_id": host, "path": gone.path,
        "anomaly": "deleted", "current": null, "comment": PAYLOAD});
    let answer = admin_post(&server, "/accepts", &accept);
    assert_eq!(answer.status, 201, "{}", answer.text());
    let drift = read_json(&server, &format!("/drift?image_id={IMG}"));
    let group = drift["groups"][0]["id"].as_str().unwrap().to_owned();
    let admin = login(&server, ADMIN_TOKEN);
    let read = login(&server, READ_TOKEN);
    let pages = format!(
        "/ui/ /ui/images/{IMG} /ui/images/{IMG}/drift/{group} /ui/hosts/{host} /ui/accepts \
         /ui/audit"
    );
    for path in pages.split(' ') {
        for (who, browser) in [("admin", &admin), ("read", &read)] {
            let answer = browser.get(path);
            let what = format!("{who} {path}");
            let admin_only = path == "/ui/accepts" || path == "/ui/audit";
            let refused = who == "read" && admin_only;
            let status = if refused { 403 } else { 200 };
            assert_eq!(answer.status, status, "{what}: {}", answer.text());
            assert_page_headers(&answer, &what);
            let body = answer.text();
            assert_inert(&body, &what);
            if path != "/ui/" && !refused {
                assert!(body.contains(SHOWN), "{what} shows no hostile text");
                let kept = body.contains("&amp;lt;b&amp;gt;");
                assert!(kept, "{what}: text decoded");
            }
        }
    }
    let audit = admin.get("/ui/audit").text();
    let message = "accepted deleted of /gone/&quot;'&gt;&lt;script&gt;";
    assert!(audit.contains(message), "audit: {audit}");
}

#[test]
fn accept_forms_round_trip_hostile_paths_and_values() {
    let (_dir, server) = fresh(&[]);
    let paths = [
        "/srv/\"quoted\" & <tagged>",
        "/srv/&quot;already-escaped&amp;",
        "/srv/'single' \u{202e}txt.exe \u{2028}sep 😀",
    ];
    let hosts = [(0x61, "accept-finding"), (0x62, "accept-group")];
    for (n, class) in hosts {
        let current = json!({"mode": "\"</textarea>", "x": {"k": [1, "&amp;"]}});
        let found = |path| {
            let path = format!("{path}/{class}");
            finding("metadata_changed", &path, current.clone())
        };
        host_with(&server, n, paths.iter().map(found).collect());
    }
    let admin = login(&server, ADMIN_TOKEN);
    for (n, class) in hosts {
        let host = host_id(n);
        let from = match class {
            "accept-finding" => format!("/ui/hosts/{host}"),
            _ => format!("/ui/images/{IMG}"),
        };
        let body = admin.get(&from).text();
        let current = json!({"mode": "\"</textarea>", "x": {"k": [1, "&amp;"]}});
        let ids: Vec<String> = (paths.iter())
            .map(|path| {
                id_of(&finding(
                    "metadata_changed",
                    &format!("{path}/{class}"),
                    current.clone(),
                ))
            })
            .collect();
        let found: Vec<_> = (submissions(&body, class).into_iter())
            .filter(|form| ids.iter().any(|id| id == field(form, "finding")))
            .collect();
        assert_eq!(found.len(), paths.len(), "{from}: {body}");
        for form in found {
            let answer = admin.post("/ui/accepts", &pairs(&form));
            assert_eq!(to(&answer), (303, from.as_str()), "{form:?}");
        }
        let json = host_json(&server, &host);
        for finding in json["latest"]["anomalies"].as_array().unwrap() {
            assert!(!finding["accepted"].is_null(), "not covered: {finding}");
        }
        assert_eq!(json["status"], "clean", "{json}");
    }
}

/// What a browser sends for a hidden field: its parser turned NUL into U+FFFD, and
/// form encoding writes every line break as CRLF (HTML, "converting an entry list to
/// a list of name-value pairs").
fn as_a_browser_sends(value: &str) -> String {
    let value = value.replace('\0', "\u{fffd}").replace("\r\n", "\n");
    value.replace('\r', "\n").replace('\n', "\r\n")
}

#[test]
fn a_path_with_a_line_break_or_nul_can_be_accepted_from_its_page() {
    let (_dir, server) = fresh(&[]);
    let paths = ["/tmp/evil\nname", "/tmp/nul\0name", "/tmp/cr\rname"];
    let mode = json!({"mode": 420});
    let found = |path: &&str| finding("added", path, mode.clone());
    host_with(&server, 0x71, paths.iter().map(found).collect());
    let admin = login(&server, ADMIN_TOKEN);
    let host = host_id(0x71);
    let body = admin.get(&format!("/ui/hosts/{host}")).text();
    let found = forms(&body, "accept-finding");
    assert_eq!(found.len(), 3);
    for form in found {
        let sent: Vec<_> = (form.iter())
            .map(|(k, v)| (k.clone(), as_a_browser_sends(v)))
            .collect();
        let answer = admin.post("/ui/accepts", &pairs(&sent));
        assert_eq!(answer.status, 303, "{}", answer.text());
    }
    let accepts = accepts_json(&server);
    let made: Vec<_> = accepts.iter().map(|a| &a["path"]).collect();
    let host = host_json(&server, &host);
    for finding in host["latest"]["anomalies"].as_array().unwrap() {
        let path = &finding["path"];
        let covered = !finding["accepted"].is_null();
        assert!(covered, "accepting {path} accepted: {made:?}");
    }
}

#[test]
fn forms_need_this_sessions_token_our_origin_and_an_admin() {
    let (_dir, server) = fresh(&[]);
    let (host, bad) = (host_id(0x81), modified("/usr/bin/su", &"cd".repeat(32)));
    host_with(&server, 0x81, vec![bad.clone()]);
    let admin = login(&server, ADMIN_TOKEN);
    let other = login(&server, ADMIN_TOKEN);
    let read = login(&server, READ_TOKEN);
    let id = id_of(&bad);
    let accept = [
        ("image_id", IMG),
        ("host_id", &*host),
        ("finding", &*id),
        ("back", "/ui/"),
    ];
    let addr = server.addr;
    let (suffixed, userinfo) = (
        format!("http://{addr}.x.example"),
        format!("http://{addr}@x.example"),
    );
    let (suffixed, userinfo) = ([("Origin", &*suffixed)], [("Origin", &*userinfo)]);
    let (longer, zeros) = (format!("{}0", admin.csrf), "0".repeat(64));
    let cases: [(&str, &Browser, &str, Headers); 10] = [
        ("no token", &admin, "", &[]),
        ("wrong token", &admin, &zeros, &[]),
        ("token with a suffix", &admin, &longer, &[]),
        ("another admin's token", &admin, &other.csrf, &[]),
        ("the read session's token", &admin, &read.csrf, &[]),
        ("read session, own token", &read, &read.csrf, &[]),
        (
            "cross-origin",
            &admin,
            &admin.csrf,
            &[("Origin", "https://evil.example")],
        ),
        ("Origin null", &admin, &admin.csrf, &[("Origin", "null")]),
        ("origin with a suffix", &admin, &admin.csrf, &suffixed),
        ("origin with userinfo", &admin, &admin.csrf, &userinfo),
    ];
    for (why, browser, csrf, headers) in cases {
        let fields = [&[("csrf", csrf)][..], &accept].concat();
        let answer = browser.post_with("/ui/accepts", &fields, headers);
        assert_eq!(answer.status, 403, "{why}: {}", answer.text());
        assert_page_headers(&answer, why);
        assert!(accepts_json(&server).is_empty(), "{why}: accepted");
    }
    let anonymous = with_cookie(&server, None);
    let no_session = anonymous.post("/ui/accepts", &[("csrf", &admin.csrf)]);
    assert_eq!(no_session.status, 403);
    let ours = format!("http://{addr}");
    let made = admin.post_with("/ui/accepts", &accept, &[("Origin", &ours)]);
    assert_eq!(made.status, 403, "no token: {}", made.text());
    let fields = [&[("csrf", &*admin.csrf)][..], &accept].concat();
    let made = admin.post_with("/ui/accepts", &fields, &[("Origin", &ours)]);
    assert_eq!(made.status, 303, "{}", made.text());
    let id = accepts_json(&server)[0]["id"].as_str().unwrap().to_owned();
    let revoke = format!("/ui/accepts/{id}/revoke");
    for (why, browser, csrf, headers) in cases {
        let answer = browser.post_with(&revoke, &[("csrf", csrf)], headers);
        assert_eq!(answer.status, 403, "revoke, {why}: {}", answer.text());
        assert_eq!(accepts_json(&server).len(), 1, "revoke, {why}");
    }
    let answer = read.post("/ui/logout", &[("csrf", &admin.csrf)]);
    assert_eq!(answer.status, 403, "read logs out with the admin's token");
    for path in ["/ui/accepts", "/ui/audit"] {
        assert_eq!(read.get(path).status, 403, "{path}");
    }
    let host_page = read.get(&format!("/ui/hosts/{host}")).text();
    let forms = host_page.contains("action=\"/ui/accepts\"");
    assert!(!forms, "read sees accept forms");
    let done = admin.submit(&revoke, &[]);
    assert_eq!(done.status, 303, "{}", done.text());
    assert!(accepts_json(&server).is_empty());
}

#[test]
fn sessions_cannot_be_fixated_and_end_at_logout() {
    let (_dir, server) = fresh(&[]);
    let chosen = format!("bp_session={}", "a1".repeat(32));
    let attacker = with_cookie(&server, Some(&chosen));
    let answer = attacker.post("/ui/login", &[("token", ADMIN_TOKEN)]);
    assert_eq!(to(&answer), (303, "/ui/"));
    assert_page_headers(&answer, "login redirect");
    let cookie = answer.header("set-cookie").unwrap().to_owned();
    let (pair, attributes) = cookie.split_once(';').unwrap();
    let id = pair.strip_prefix("bp_session=").unwrap();
    let random = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(random, "{cookie}");
    assert_ne!(pair, chosen, "the attacker's cookie became the session");
    let mut flags: Vec<&str> = attributes.split(';').map(str::trim).collect();
    flags.sort_unstable();
    let expected = ["HttpOnly", "Max-Age=28800", "Path=/ui", "SameSite=Strict"];
    assert_eq!(flags, expected);
    assert_eq!(to(&attacker.get("/ui/")), (303, "/ui/login"));
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let request = agent().get(server.url("/ui/"));
    let request = request.header("Authorization", &bearer);
    let with_bearer = finish(request.call(), "bearer");
    assert_eq!(with_bearer.status, 303, "a bearer is a session");
    let mut browser = with_cookie(&server, Some(pair));
    browser.csrf = csrf_of(&browser.get("/ui/").text());
    assert_ne!(browser.csrf, id, "the CSRF token is the session id");
    let refused = browser.post("/ui/logout", &[("csrf", "x")]);
    assert_eq!(refused.status, 403);
    assert_eq!(browser.get("/ui/").status, 200, "a refused logout ended it");
    let out = browser.submit("/ui/logout", &[]);
    assert_eq!(to(&out), (303, "/ui/login"));
    let removal = out.header("set-cookie").unwrap();
    assert!(removal.contains("Max-Age=0"), "{removal}");
    assert_eq!(to(&browser.get("/ui/audit")), (303, "/ui/login"));
    let replay = browser.submit("/ui/logout", &[]);
    assert_eq!(replay.status, 403, "an ended session still posts");
}

/// The status of a raw request whose body is sent from another thread (the answer may
/// come before the body is read); 0 when none came.
fn raw_status(server: &Server, head: String, body: Vec<u8>) -> u16 {
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    let timeout = Some(Duration::from_secs(60));
    stream.set_read_timeout(timeout).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&body);
    });
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    sender.join().unwrap();
    let text = String::from_utf8_lossy(&answer);
    let code = text.split(' ').nth(1).and_then(|code| code.parse().ok());
    code.unwrap_or(0)
}

#[test]
fn login_refuses_other_tokens_origins_and_huge_forms_quickly() {
    let (_dir, server) = fresh(&[]);
    let anonymous = with_cookie(&server, None);
    let huge = "r".repeat(1 << 20);
    let evil = [("Origin", "https://evil.example")];
    let cases: [(&str, &str, Headers, u16); 8] = [
        ("report token", REPORT_TOKEN, &[], 401),
        ("baseline token", BASELINE_TOKEN, &[], 401),
        ("unknown token", "not-a-token", &[], 401),
        ("blank token", "   ", &[], 401),
        ("1 MiB token", &huge, &[], 401),
        ("cross-origin", ADMIN_TOKEN, &evil, 403),
        ("Origin null", ADMIN_TOKEN, &[("Origin", "null")], 403),
        ("a bearer", "", &[("Authorization", "Bearer x")], 401),
    ];
    for (why, token, headers, status) in cases {
        let started = Instant::now();
        let answer = anonymous.post_with("/ui/login", &[("token", token)], headers);
        assert_eq!(answer.status, status, "{why}: {}", answer.text());
        assert!(answer.header("set-cookie").is_none(), "{why}: a cookie");
        assert_page_headers(&answer, why);
        assert!(started.elapsed() < Duration::from_secs(10), "{why}: slow");
    }
    for size in [3usize << 20, 256 << 20] {
        let head = format!(
            "POST /ui/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-\
             urlencoded\r\nContent-Length: {size}\r\nConnection: close\r\n\r\ntoken=",
            server.addr
        );
        let started = Instant::now();
        let status = raw_status(&server, head, vec![b'a'; size - 6]);
        assert!(matches!(status, 401 | 413), "{size} bytes: {status}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "{size} bytes: {took:?}");
    }
}

#[test]
fn a_read_token_cannot_log_admins_out_by_flooding_logins() {
    let (_dir, server) = fresh(&[]);
    let admin = login(&server, ADMIN_TOKEN);
    let (client, url) = (agent(), server.url("/ui/login"));
    for n in 0..10_000 {
        let answer = client.post(&url).send_form([("token", READ_TOKEN)]);
        assert_eq!(finish(answer, "login").status, 303, "login {n}");
    }
    let home = admin.get("/ui/");
    assert_eq!(home.status, 200, "10,000 read logins ended the admin's");
}

#[test]
fn back_never_leaves_our_pages_nor_breaks_the_answer() {
    let (_dir, server) = fresh(&[]);
    let added = finding("added", "/p", json!({"mode": 420}));
    host_with(&server, 0x91, vec![added.clone()]);
    let id = id_of(&added);
    let admin = login(&server, ADMIN_TOKEN);
    let backs = "https://evil.example/|//evil.example/ui/|/ui/\\evil|javascript:alert(1)|\
        /ui/\r\nSet-Cookie: bp_session=x|/ui/..//evil.example|/ui/%0d%0aX: y|/ui/\t//evil|\
        /ui/é|/ui/\u{1}|/ui/\u{7f}";
    let mut broken = Vec::new();
    for back in backs.split('|') {
        let fields = [("image_id", IMG), ("finding", &*id), ("back", back)];
        let answer = admin.submit("/ui/accepts", &fields);
        if answer.status != 303 {
            broken.push(format!("{back:?}: {} {}", answer.status, answer.text()));
            continue;
        }
        let location = answer.header("location").unwrap();
        let local = location.starts_with("/ui/") && !location.starts_with("//");
        assert!(local, "{back:?} → {location:?}");
        assert!(answer.header("set-cookie").is_none(), "{back:?}");
    }
    let made = accepts_json(&server).len();
    assert!(broken.is_empty(), "{made} accepts made; {broken:#?}");
}

#[test]
fn odd_ids_and_methods_are_refused_without_a_5xx() {
    let (_dir, server) = fresh(&[]);
    let admin = login(&server, ADMIN_TOKEN);
    let long = "a".repeat(60_000);
    // Traversal, markup, bad hex, unknown ids, bad UTF-8, NUL, 60 KB ids, odd queries.
    let odd = "/ui/hosts/..%2F..%2Fetc%2Fpasswd /ui/hosts/%3Cscript%3Ealert(1)%3C%2Fscript%3E \
        /ui/hosts/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA /ui/hosts/0000000000000000000000000000dead \
        /ui/hosts/%FF%FE /ui/hosts/LONG /ui/images/%2E%2E /ui/images/%3Cscript%3E \
        /ui/images/IMG?status=%3Cscript%3E /ui/images/IMG?status=clean&status=drifted \
        /ui/images/nope /ui/images/IMG/drift/..%2F..%2F /ui/images/IMG/drift/LONG \
        /ui/images/%00/drift/%3Cscript%3E";
    let odd = odd.replace("LONG", &long).replace("IMG", IMG);
    for path in odd.split_whitespace() {
        let answer = admin.get(path);
        let status = answer.status;
        assert!((400..500).contains(&status), "{path:.80}: {status}");
        assert_inert(&answer.text(), path);
        assert_page_headers(&answer, path);
    }
    let after = format!("/ui/images/{IMG}?after=%3Cscript%3E&status=drifted");
    assert_eq!(admin.get(&after).status, 200);
    for id in [
        "..",
        "%2e%2e%2f%2e%2e",
        "%3Cscript%3E",
        long.as_str(),
        "%FF",
    ] {
        let path = format!("/ui/accepts/{id}/revoke");
        let answer = admin.submit(&path, &[]);
        let status = answer.status;
        assert!((400..500).contains(&status), "{path:.80}: {status}");
        assert_inert(&answer.text(), &path);
    }
    let cookie = admin.cookie.as_deref().unwrap();
    let head = agent().head(server.url("/ui/")).header("Cookie", cookie);
    let head = finish(head.call(), "HEAD");
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_page_headers(&head, "HEAD /ui/");
    let methods = [
        "OPTIONS", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "BREW",
    ];
    for method in methods {
        for path in [
            "/ui/",
            "/ui/login",
            "/ui/accepts",
            "/ui/logout",
            "/ui/style.css",
        ] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\
                 Connection: close\r\n\r\n",
                server.addr
            );
            let (status, text) = raw(server.addr, request.as_bytes());
            assert!((400..500).contains(&status), "{method} {path}: {text}");
        }
    }
}

/// Pages, error pages, redirects and the router's fallbacks under `/ui/`. The
/// `Referrer-Policy` must not be REFERENCE §8's `no-referrer`: under it a browser sends
/// `Origin: null` with every form POST (Fetch, "append a request `Origin` header"),
/// which `same_origin` refuses; `same-origin` keeps referrers at home just as well.
#[test]
fn every_answer_under_ui_carries_the_page_headers() {
    let (_dir, server) = fresh(&[]);
    let admin = login(&server, ADMIN_TOKEN);
    let read = login(&server, READ_TOKEN);
    let anonymous = with_cookie(&server, None);
    let added = finding("added", "/x", json!({"mode": 420}));
    host_with(&server, 0xa1, vec![added.clone()]);
    let fields = [("image_id", IMG), ("finding", &*id_of(&added))];
    let accepted = admin.submit("/ui/accepts", &fields);
    let id = accepts_json(&server)[0]["id"].as_str().unwrap().to_owned();
    let revoked = admin.submit(&format!("/ui/accepts/{id}/revoke"), &[]);
    let put = agent().put(server.url("/ui/login")).send(&b""[..]);
    let answers = [
        ("login page", anonymous.get("/ui/login")),
        ("overview", admin.get("/ui/")),
        ("image", admin.get(&format!("/ui/images/{IMG}"))),
        ("404 page", admin.get("/ui/images/unknown")),
        ("400 page", admin.get("/ui/hosts/xyz")),
        ("403 page", read.get("/ui/audit")),
        ("no session", anonymous.post("/ui/logout", &[])),
        ("bad form", admin.submit("/ui/accepts", &[])),
        ("/ui without session", anonymous.get("/ui")),
        ("page without session", anonymous.get("/ui/hosts/x")),
        ("accept redirect", accepted),
        ("revoke redirect", revoked),
        ("unknown /ui/ path", admin.get("/ui/nope")),
        ("405 under /ui/", finish(put, "PUT")),
    ];
    let mut problems = Vec::new();
    for (what, answer) in &answers {
        let mut wrong = header_problems(answer);
        let policy = answer.header("referrer-policy").unwrap_or("");
        if policy != "same-origin" {
            wrong.push(format!("referrer-policy: {policy:?}"));
        }
        let kind = answer.header("content-type").unwrap_or("");
        if answer.status != 303 && !kind.starts_with("text/html") {
            wrong.push(format!("content-type: {kind:?}"));
        }
        if !wrong.is_empty() {
            problems.push(format!("{what} ({}): {}", answer.status, wrong.join("; ")));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// One agent's report of 1000 findings of 64 KiB (the most a finding may be; a path
/// is at most 4 KiB) of `&`s: the pages must not grow without bound.
#[test]
fn a_thousand_64_kib_findings_give_bounded_pages() {
    let (_dir, server) = fresh(&["--max-report-bytes", "80000000"]);
    let (host, key) = (host_id(0x91), HostKey::new());
    let big = |n| {
        let path = format!("/{n:04}/{}", "&".repeat(4000));
        let current = json!({ "x": "&".repeat(60_000) });
        let mut finding = finding("added", &path, current);
        finding.baseline = Value::Null;
        finding
    };
    let report = with_findings(report(&host, IMG, 1), (0..1000).map(big).collect());
    let bytes = report.to_bytes();
    let answer = send_bytes(&server, &key, &bytes, &host, 1);
    assert_eq!(answer.status, 201, "{}", answer.text());
    let admin = login(&server, ADMIN_TOKEN);
    let read = login(&server, READ_TOKEN);
    let (mut pages, mut largest) = (Vec::new(), 0);
    let paths = [format!("/ui/hosts/{host}"), format!("/ui/images/{IMG}")];
    for path in paths {
        for (who, browser) in [("admin", &admin), ("read", &read)] {
            let started = Instant::now();
            let answer = browser.get(&path);
            assert_eq!(answer.status, 200, "{path}");
            let (size, took) = (answer.body.len(), started.elapsed());
            pages.push(format!("{who} {path}: {size} bytes in {took:.1?}"));
            largest = largest.max(size);
        }
    }
    let sent = bytes.len();
    let pages = format!("a report of {sent} bytes; {pages:#?}");
    assert!(largest < 16 << 20, "{pages}");
}
