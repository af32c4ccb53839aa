//! The fleet pages (`/ui/`, REFERENCE §8) in a real browser: headless Chromium
//! driven over WebDriver (chromedriver, fantoccini) against a real service that real
//! agents filled. Written against the page contract (element ids and classes, form
//! fields, redirects), not against the markup.
//!
//! Each test starts its own service (in this process), uploads the baseline of a small
//! tree, runs three agents once each (two clean, one drifted: a modified file and two
//! files whose paths hold HTML), then its own chromedriver and browser. The tests take
//! turns (one browser at a time). chromedriver and everything it started are killed when
//! a test ends, passed or failed ([`Driver`]'s `Drop`).
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium`, `chromium-driver`; installed
//! by `scripts/test`): a test fails, never skips, without them.

mod support;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use metadata_service::config::Config;
use metadata_service::Background;
use serde_json::{json, Value};
use std::fs;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";
const REPORT_TOKEN: &str = "rrrrrrrr-ui-report-token-0123456";
const READ_TOKEN: &str = "oooooooo-ui-read-token-012345678";
const ADMIN_TOKEN: &str = "aaaaaaaa-ui-admin-token-01234567";
const BASELINE_TOKEN: &str = "bbbbbbbb-ui-baseline-token-01234";
const IMG: &str = "img-ui";
/// The file the drifted host changed.
const MODIFIED: &str = "/etc/hosts";
/// A file the drifted host gained whose name is an HTML element with a handler.
const IMG_TAG_PATH: &str = "/etc/<img src=x onerror=alert(1)>";
/// A file the drifted host gained whose path is a script element (the `/` of `</script>`
/// is a directory: `/etc/<script>alert(1)<` holds `script>.txt`).
const SCRIPT_PATH: &str = "/etc/<script>alert(1)</script>.txt";
/// How long anything may take to happen (a page to load, a process to answer).
const TIMEOUT: Duration = Duration::from_secs(30);

/// One browser at a time: the machine may have two cores.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn one_browser() -> std::sync::MutexGuard<'static, ()> {
    ONE_BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------
// The fleet: a service with a baseline and three hosts that reported.

/// The service (in this process) and what its hosts reported.
struct Fleet {
    /// Stopped before `_dir` goes (fields drop in order).
    _service: Background,
    url: String,
    /// The two hosts that reported no drift.
    clean: Vec<String>,
    /// The host whose tree drifted.
    drifted: String,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new("127.0.0.1:0", dir.path().join("store"));
        config.tokens = vec![
            format!("report:agents:{REPORT_TOKEN}"),
            format!("read:ops:{READ_TOKEN}"),
            format!("admin:root:{ADMIN_TOKEN}"),
            format!("baseline:ci:{BASELINE_TOKEN}"),
        ];
        let service = Background::start(config).expect("service start");
        let url = format!("http://{}", service.addr);

        let root = dir.path().join("root");
        for d in ["etc", "usr/bin"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        fs::write(root.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
        let mut client_config = integrity_client::ClientConfig::new(url.clone(), "ui-browser");
        client_config.token = Some(BASELINE_TOKEN.into());
        integrity_client::Client::new(&client_config)
            .unwrap()
            .upload_baseline(IMG, &support::baseline(&root, IMG), None, &mut |_, _, _| {})
            .unwrap();
        let token_file = dir.path().join("token");
        fs::write(&token_file, format!("{REPORT_TOKEN}\n")).unwrap();
        fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();

        let hosts: Vec<String> = (1..=3u64)
            .map(|n| format!("{:032x}", 0x0b1e_0000u64 + n))
            .collect();
        let run = |n: usize| {
            let host = &hosts[n];
            let output = Command::new(AGENT)
                .args(["--root", root.to_str().unwrap(), "--image-id", IMG])
                .args(["--format", "json", "--fetch-attempts", "1", "--once"])
                .args(["--server", &url])
                .arg("--cache-dir")
                .arg(dir.path().join(format!("cache-{n}")))
                .arg("--state-dir")
                .arg(dir.path().join(format!("state-{n}")))
                .args(["--host-id", host])
                .arg("--token-file")
                .arg(&token_file)
                .env_remove("IMAGE_ID")
                .env_remove("BULLETPROOF_TOKEN")
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            (output.status.code(), stderr)
        };
        // Two hosts check the tree as the baseline has it...
        for (n, host) in hosts.iter().enumerate().take(2) {
            let (code, stderr) = run(n);
            assert_eq!(code, Some(0), "agent {host}: {stderr}");
        }
        // ...then the tree drifts and the third checks it.
        fs::write(
            root.join("etc/hosts"),
            "127.0.0.1 localhost\n10.6.6.6 evil\n",
        )
        .unwrap();
        fs::write(root.join(&IMG_TAG_PATH[1..]), "planted\n").unwrap();
        let (dir_part, file_part) = SCRIPT_PATH[1..].rsplit_once('/').unwrap();
        fs::create_dir(root.join(dir_part)).unwrap();
        fs::write(root.join(dir_part).join(file_part), "planted\n").unwrap();
        let (code, stderr) = run(2);
        assert!(
            matches!(code, Some(1..=7)),
            "the drifted agent: {code:?} {stderr}"
        );

        let fleet = Fleet {
            _service: service,
            url,
            clean: hosts[..2].to_vec(),
            drifted: hosts[2].clone(),
            _dir: dir,
        };
        let counts = &fleet.api_get("/fleet", READ_TOKEN)["images"][0]["hosts"];
        assert_eq!(counts["clean"], 2, "{counts}");
        assert_eq!(counts["drifted"], 1, "{counts}");
        fleet
    }

    fn api_get(&self, path: &str, token: &str) -> Value {
        let mut response = http()
            .get(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The drift group of `path` (`GET /drift`).
    fn group(&self, path: &str) -> Value {
        let drift = self.api_get(&format!("/drift?image_id={IMG}"), READ_TOKEN);
        drift["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|group| group["path"] == path)
            .unwrap_or_else(|| panic!("no drift group of {path}: {drift}"))
            .clone()
    }

    /// Every accept (`GET /accepts`).
    fn accepts(&self) -> Vec<Value> {
        self.api_get("/accepts", ADMIN_TOKEN)["accepts"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// An accept made through the JSON API (admin token), its id.
    fn accept_via_api(&self, path: &str, host: Option<&str>) -> String {
        let group = self.group(path);
        let body = json!({
            "image_id": IMG,
            "host_id": host,
            "path": group["path"],
            "anomaly": group["anomaly"],
            "current": group["current"],
            "comment": "made by the test",
        });
        let mut response = http()
            .post(format!("{}/accepts", self.url))
            .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        assert_eq!(response.status().as_u16(), 201, "POST /accepts: {text}");
        serde_json::from_str::<Value>(&text).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The fields of the pages' accept form for `path` on `host` (every host: `""`),
    /// without `csrf`.
    fn accept_fields(&self, path: &str, host: &str, back: &str) -> Vec<(String, String)> {
        let group = self.group(path);
        [
            ("image_id", IMG.to_owned()),
            ("host_id", host.to_owned()),
            // The finding's id: the same as its drift group's (`GET /drift`).
            ("finding", group["id"].as_str().unwrap().to_owned()),
            ("comment", "forged".to_owned()),
            ("back", back.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }
}

/// A plain HTTP client: statuses are answers, redirects are not followed.
fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(TIMEOUT))
        .build()
        .into()
}

/// What a page answered a plain HTTP client: status, `Location`, body.
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

/// A form POST to the pages as a browser would send it (same `Origin`), with the
/// session cookie when given.
fn post_form(base: &str, path: &str, cookie: Option<&str>, fields: &[(String, String)]) -> Answer {
    let mut request = http().post(format!("{base}{path}")).header("Origin", base);
    if let Some(cookie) = cookie {
        request = request.header("Cookie", format!("bp_session={cookie}"));
    }
    let response = request
        .send_form(
            fields
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .unwrap();
    answer(response)
}

fn get_page(base: &str, path: &str, cookie: Option<&str>) -> Answer {
    let mut request = http().get(format!("{base}{path}"));
    if let Some(cookie) = cookie {
        request = request.header("Cookie", format!("bp_session={cookie}"));
    }
    answer(request.call().unwrap())
}

fn answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Answer {
        status: response.status().as_u16(),
        location,
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

impl Answer {
    /// The page's error (`p.error`), else its start: for failure messages.
    fn why(&self) -> String {
        let error = self
            .body
            .split_once("role=\"alert\">")
            .and_then(|(_, rest)| rest.split_once("</p>"))
            .map(|(error, _)| error.to_owned());
        error.unwrap_or_else(|| self.body.chars().take(400).collect())
    }
}

fn with_csrf(fields: &[(String, String)], csrf: &str) -> Vec<(String, String)> {
    let mut fields = fields.to_vec();
    fields.push(("csrf".to_owned(), csrf.to_owned()));
    fields
}

// ---------------------------------------------------------------------------------
// The browser: chromedriver, and Chromium under it.

/// A running chromedriver (in a process group of its own, with the browser it starts)
/// and the temporary directory of the browser's profile. Dropping it ends the WebDriver
/// session, then kills the whole group and waits until it is gone.
struct Driver {
    child: Child,
    url: String,
    session: Option<String>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: install the Debian package chromium (scripts/test does)"
        );
        let mut dir = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let log = dir.path().join(format!("chromedriver-{attempt}.log"));
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot run {CHROMEDRIVER} ({error}): install the Debian package \
                         chromium-driver (scripts/test does)"
                    )
                });
            let mut driver = Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
                session: None,
                log,
                dir,
            };
            // Until /status says it is ready, or until it exits (the port was taken
            // since we found it free: another port).
            loop {
                if driver.child.try_wait().unwrap().is_some() {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver keeps exiting: {}",
                        driver.log_tail()
                    );
                    break;
                }
                if driver.ready() {
                    return driver;
                }
                assert!(
                    Instant::now() < deadline,
                    "chromedriver did not answer /status: {}",
                    driver.log_tail()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            dir = driver.take_dir();
        }
    }

    /// Moves the temporary directory out of a driver that is given up.
    fn take_dir(mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    fn ready(&self) -> bool {
        let Ok(mut response) = http().get(format!("{}/status", self.url)).call() else {
            return false;
        };
        let Ok(text) = response.body_mut().read_to_string() else {
            return false;
        };
        serde_json::from_str::<Value>(&text).is_ok_and(|status| status["value"]["ready"] == true)
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(1500);
        let start = (start..text.len())
            .find(|at| text.is_char_boundary(*at))
            .unwrap_or(text.len());
        format!(
            "chromedriver log ({}):\n{}",
            self.log.display(),
            &text[start..]
        )
    }

    /// A WebDriver session with a headless Chromium of its own profile.
    async fn connect(&mut self, base: &str) -> Browser {
        let profile = self.dir.path().join("profile");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1024",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("no browser session: {error}\n{}", self.log_tail()));
        self.session = client.session_id().await.unwrap();
        Browser {
            client,
            base: base.to_owned(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        // The browser first, the way WebDriver ends it (Chromium quits)...
        if let Some(session) = self.session.take() {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let _ = agent
                .delete(format!("{}/session/{session}", self.url))
                .call();
        }
        // ...then whatever is left of the group chromedriver leads.
        let group = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + TIMEOUT;
        while rustix::process::test_kill_process_group(group).is_ok() && !group_is_zombies(group) {
            if Instant::now() > deadline {
                eprintln!("processes of chromedriver's group {group:?} outlived SIGKILL");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether every process left in the process group `group` is a zombie (dead, waiting
/// for whoever inherited it to reap it).
fn group_is_zombies(group: rustix::process::Pid) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).all(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return true;
        };
        // pid (comm) state ppid pgrp ...; comm may hold anything but not after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return true;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.get(2).and_then(|pgrp| pgrp.parse::<i32>().ok())
            != Some(group.as_raw_nonzero().get())
            || fields.first() == Some(&"Z")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `probe` until it gives a value, for at most [`TIMEOUT`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The browser session and the service's address.
struct Browser {
    client: Client,
    base: String,
}

impl Browser {
    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|error| panic!("GET {path} in the browser: {error}"));
    }

    /// The current page's path and query.
    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the browser shows `path` (and query), loaded.
    async fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.path().await == path && self.loaded().await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for the browser at {path}: it is at {} (HTTP {}), \
                     showing:\n{}",
                    self.path().await,
                    self.status().await,
                    self.visible_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text the page shows (its `main`, else its body), for failure messages.
    async fn visible_text(&self) -> String {
        for css in ["main", "body"] {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                return element.text().await.unwrap_or_default();
            }
        }
        String::new()
    }

    async fn loaded(&self) -> bool {
        self.client
            .execute("return document.readyState === 'complete';", vec![])
            .await
            .is_ok_and(|ready| ready == json!(true))
    }

    /// Clicks `element` (a submit button or a link) and waits until the next page has
    /// replaced this one and has loaded.
    async fn navigate_by(&self, element: &Element, what: &str) {
        // A mark on this document that the next one will not have.
        self.client
            .execute("window.bpOldPage = true; return null;", vec![])
            .await
            .unwrap();
        element
            .click()
            .await
            .unwrap_or_else(|error| panic!("clicking {what}: {error}"));
        self.wait_new_page(what).await;
    }

    async fn wait_new_page(&self, what: &str) {
        eventually(&format!("the page after {what}"), || async move {
            let fresh = self
                .client
                .execute(
                    "return window.bpOldPage === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .ok()?;
            (fresh == json!(true)).then_some(())
        })
        .await;
    }

    /// The HTTP status of the current page (the navigation's response).
    async fn status(&self) -> u64 {
        let status = self
            .client
            .execute(
                "return performance.getEntriesByType('navigation')[0].responseStatus;",
                vec![],
            )
            .await
            .unwrap();
        status
            .as_u64()
            .unwrap_or_else(|| panic!("no response status: {status}"))
    }

    async fn find(&self, css: &str) -> Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(error) => panic!(
                "no {css} on {}: {error}\n{}",
                self.path().await,
                self.source_excerpt().await
            ),
        }
    }

    async fn all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    async fn count(&self, css: &str) -> usize {
        self.all(css).await.len()
    }

    /// The text of the element `css` (trimmed).
    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap().trim().to_owned()
    }

    async fn source_excerpt(&self) -> String {
        let source = self.client.source().await.unwrap_or_default();
        let end = (0..=source.len().min(3000))
            .rev()
            .find(|at| source.is_char_boundary(*at))
            .unwrap_or(0);
        format!("page source (start):\n{}", &source[..end])
    }

    /// Logs in with `token` on the login page; returns the session cookie's value.
    async fn login(&self, token: &str) -> String {
        self.goto("/ui/login").await;
        self.find("input#token")
            .await
            .send_keys(token)
            .await
            .unwrap();
        let submit = self.find("button#login-submit").await;
        self.navigate_by(&submit, "#login-submit").await;
        self.wait_path("/ui/").await;
        self.cookie()
            .await
            .expect("a session cookie after logging in")
    }

    /// The value of `bp_session` as the browser holds it.
    async fn cookie(&self) -> Option<String> {
        match self.client.get_named_cookie("bp_session").await {
            Ok(cookie) => Some(cookie.value().to_owned()),
            Err(error) if error.is_no_such_cookie() => None,
            Err(error) => panic!("reading the cookie: {error}"),
        }
    }

    /// The session's CSRF token, from the logout form every page has.
    async fn csrf(&self) -> String {
        let field = self.find("form#logout input[name=csrf]").await;
        let csrf = field.prop("value").await.unwrap().unwrap_or_default();
        assert!(!csrf.is_empty(), "an empty csrf field");
        csrf
    }

    /// Nothing on the page runs or was injected: no script element, no event handler
    /// attribute, no alert open.
    async fn assert_inert(&self) {
        let at = self.path().await;
        assert_eq!(self.count("script").await, 0, "a script element on {at}");
        assert_eq!(
            self.count("[onerror],[onload],[onclick],[onmouseover],[onfocus]")
                .await,
            0,
            "an element with an event handler on {at}"
        );
        match self.client.get_alert_text().await {
            Err(error) if error.is_no_such_alert() => {}
            other => panic!("an alert is open on {at}: {other:?}"),
        }
    }

    /// No control that changes something is on the page.
    async fn assert_no_admin_controls(&self) {
        let at = self.path().await;
        for css in [
            "button.accept",
            "button.revoke",
            "form.accept-finding",
            "form.accept-group",
            "form.revoke",
        ] {
            assert_eq!(self.count(css).await, 0, "{css} on {at} for a read session");
        }
    }

    /// The overview's counts of IMG: clean, drifted, failing, stale.
    async fn overview_counts(&self) -> [String; 4] {
        let row = format!("table#images tr[data-image=\"{IMG}\"]");
        [
            self.text(&format!("{row} td.clean")).await,
            self.text(&format!("{row} td.drifted")).await,
            self.text(&format!("{row} td.failing")).await,
            self.text(&format!("{row} td.stale")).await,
        ]
    }

    /// The image page's counts: clean, drifted, failing, stale.
    async fn image_counts(&self) -> [String; 4] {
        let count = |status: &'static str| format!("#counts [data-status=\"{status}\"] .count");
        [
            self.text(&count("clean")).await,
            self.text(&count("drifted")).await,
            self.text(&count("failing")).await,
            self.text(&count("stale")).await,
        ]
    }

    /// Rows of `rows_css` whose `td.path` text is `path`.
    async fn rows_of(&self, rows_css: &str, path: &str) -> Vec<Element> {
        let mut found = Vec::new();
        for row in self.all(rows_css).await {
            let text = row
                .find(Locator::Css("td.path"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.trim() == path {
                found.push(row);
            }
        }
        found
    }

    /// The one row of `rows_css` whose `td.path` text is `path`.
    async fn row_of(&self, rows_css: &str, path: &str) -> Element {
        let mut rows = self.rows_of(rows_css, path).await;
        assert_eq!(
            rows.len(),
            1,
            "rows {rows_css} with td.path {path:?} on {}: paths are {:?}",
            self.path().await,
            self.paths(rows_css).await
        );
        rows.pop().unwrap()
    }

    /// The `td.path` texts of the rows `rows_css`.
    async fn paths(&self, rows_css: &str) -> Vec<String> {
        let mut paths = Vec::new();
        for cell in self.all(&format!("{rows_css} td.path")).await {
            paths.push(cell.text().await.unwrap().trim().to_owned());
        }
        paths
    }
}

async fn cell(row: &Element, css: &str) -> String {
    row.find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("no {css} in the row: {error}"))
        .text()
        .await
        .unwrap()
        .trim()
        .to_owned()
}

async fn has(row: &Element, css: &str) -> bool {
    !row.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

fn counts(clean: u32, drifted: u32, failing: u32, stale: u32) -> [String; 4] {
    [clean, drifted, failing, stale].map(|count| count.to_string())
}

/// Runs `test` with a fleet and a connected browser; the browser is closed, and
/// chromedriver with everything it started killed, however the test ends.
fn with_browser<F, Fut>(test: F)
where
    F: FnOnce(Fleet, Browser) -> Fut,
    Fut: Future<Output = Browser>,
{
    let _turn = one_browser();
    let fleet = Fleet::new();
    let mut driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let base = fleet.url.clone();
        let browser = driver.connect(&base).await;
        let browser = test(fleet, browser).await;
        browser.client.close().await.unwrap();
    });
    drop(runtime);
    drop(driver);
}

// ---------------------------------------------------------------------------------
// The tests.

/// The admin's way through the pages: log in, see the fleet and the drifted host,
/// accept its drift (one finding on the host page, the rest as drift groups for the
/// image), revoke an accept and see the host drifted again, log out. Also writes the
/// screenshot of the image page (drifted) to `docs/ui-image.png`.
#[test]
fn an_admin_accepts_drift_revokes_it_and_logs_out() {
    with_browser(|fleet, browser| async move {
        let b = &browser;
        let drifted = fleet.drifted.clone();
        let image_page = format!("/ui/images/{IMG}");
        let host_page = format!("/ui/hosts/{drifted}");

        // No session: the pages send to the login page.
        b.goto("/ui/").await;
        b.wait_path("/ui/login").await;
        let form = b.find("form#login").await;
        assert_eq!(
            form.attr("method").await.unwrap().map(|m| m.to_lowercase()),
            Some("post".to_owned())
        );
        assert_eq!(
            form.attr("action").await.unwrap().as_deref(),
            Some("/ui/login")
        );
        let token = b.find("input#token").await;
        assert_eq!(
            token.attr("type").await.unwrap().as_deref(),
            Some("password")
        );
        assert_eq!(token.attr("name").await.unwrap().as_deref(), Some("token"));
        assert_eq!(b.count("label[for=token]").await, 1, "the token's label");
        b.assert_inert().await;

        // Logged in: the cookie is HttpOnly, SameSite=Strict, for /ui.
        let session = b.login(ADMIN_TOKEN).await;
        let cookie = b.client.get_named_cookie("bp_session").await.unwrap();
        assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
        assert_eq!(
            format!("{:?}", cookie.same_site()),
            "Some(Strict)",
            "{cookie:?}"
        );
        assert_eq!(cookie.path(), Some("/ui"), "{cookie:?}");
        assert_eq!(b.text("span#whoami").await, "root (admin)");
        assert!(!session.is_empty());

        // The overview: the image, its counts, its chart.
        assert_eq!(b.overview_counts().await, counts(2, 1, 0, 0));
        assert_eq!(b.count("table#images tr[data-image]").await, 1);
        assert!(
            b.count("svg.chart").await >= 1,
            "no svg.chart on the overview"
        );
        b.assert_inert().await;
        let link = b
            .find(&format!("table#images tr[data-image=\"{IMG}\"] a.image"))
            .await;
        b.navigate_by(&link, "a.image").await;
        b.wait_path(&image_page).await;

        // The image page: counts, hosts, drift groups.
        assert_eq!(b.image_counts().await, counts(2, 1, 0, 0));
        assert_eq!(b.count("table#hosts tr[data-host]").await, 3);
        for host in &fleet.clean {
            assert_eq!(
                b.text(&format!("table#hosts tr[data-host=\"{host}\"] td.status"))
                    .await,
                "clean"
            );
        }
        let drifted_row = format!("table#hosts tr[data-host=\"{drifted}\"]");
        assert_eq!(b.text(&format!("{drifted_row} td.status")).await, "drifted");
        assert_eq!(b.count("a#next").await, 0, "a next page of three hosts");
        let groups = b.count("table#drift tr.group").await;
        assert!(groups >= 3, "{groups} drift groups");
        for path in [MODIFIED, IMG_TAG_PATH, SCRIPT_PATH] {
            let row = b.row_of("table#drift tr.group", path).await;
            assert_eq!(cell(&row, "td.hosts").await, "1", "hosts of {path}");
            assert_eq!(cell(&row, "td.accepted").await, "no", "accepted of {path}");
            assert!(has(&row, "a.group").await, "a.group of {path}");
            // One form around the table, a button per group naming it.
            assert!(
                has(&row, "button.accept[name=finding]").await,
                "an admin's accept of {path}"
            );
        }
        assert_eq!(
            cell(
                &b.row_of("table#drift tr.group", MODIFIED).await,
                "td.anomaly"
            )
            .await,
            "modified"
        );
        b.assert_inert().await;

        // The screenshot for the documentation: the image page, drifted.
        let png = b.client.screenshot().await.unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!(width, 1280, "screenshot {width}x{height}");
        // The viewport of a 1280x1024 window: headless Chromium keeps room for a frame.
        assert!(
            (700..=1024).contains(&height),
            "screenshot {width}x{height}"
        );
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ui-image.png");
        fs::write(&docs, &png).unwrap();

        // The status filter.
        let filter = b.find("form#filter").await;
        assert_eq!(
            filter
                .attr("method")
                .await
                .unwrap()
                .map(|m| m.to_lowercase()),
            Some("get".to_owned())
        );
        let select = b.find("form#filter select#status").await;
        assert_eq!(
            select.attr("name").await.unwrap().as_deref(),
            Some("status")
        );
        select.select_by_value("drifted").await.unwrap();
        b.client
            .execute("window.bpOldPage = true; return null;", vec![])
            .await
            .unwrap();
        b.client
            .form(Locator::Css("form#filter"))
            .await
            .unwrap()
            .submit_direct()
            .await
            .unwrap();
        b.wait_new_page("submitting form#filter").await;
        b.wait_path(&format!("{image_page}?status=drifted")).await;
        assert_eq!(b.count("table#hosts tr[data-host]").await, 1);
        assert_eq!(b.count(&drifted_row).await, 1);

        // The drifted host.
        let link = b.find(&format!("{drifted_row} a.host")).await;
        b.navigate_by(&link, "a.host").await;
        b.wait_path(&host_page).await;
        assert!(
            b.text("dl#identity").await.contains(&drifted),
            "dl#identity does not name the host"
        );
        assert!(b.text("#status").await.contains("drifted"));
        assert!(b.count("table#history tr").await >= 2, "table#history");
        let findings = b.count("table#findings tr.finding").await;
        assert!(findings >= 3, "{findings} findings");
        assert_eq!(b.count("form.accept-finding button.accept").await, findings);
        for path in [MODIFIED, IMG_TAG_PATH, SCRIPT_PATH] {
            let row = b.row_of("table#findings tr.finding", path).await;
            assert_eq!(cell(&row, "td.accepted").await, "no", "{path}");
        }
        let row = b.row_of("table#findings tr.finding", MODIFIED).await;
        assert_eq!(cell(&row, "td.anomaly").await, "modified");
        assert!(!cell(&row, "td.change").await.is_empty(), "td.change empty");
        b.assert_inert().await;

        // One finding accepted on the host page: marked accepted, the host still
        // drifted by the others.
        let accept = row
            .find(Locator::Css("form.accept-finding button.accept"))
            .await
            .unwrap();
        b.navigate_by(&accept, "the Accept of /etc/hosts").await;
        b.wait_path(&host_page).await;
        let row = b.row_of("table#findings tr.finding", MODIFIED).await;
        assert_eq!(cell(&row, "td.accepted").await, "yes");
        assert!(
            !has(&row, "button.accept").await,
            "accepted, still an Accept"
        );
        assert_eq!(
            b.count("form.accept-finding button.accept").await,
            findings - 1
        );
        assert!(b.text("#status").await.contains("drifted"));
        let accepted = fleet.accepts();
        assert_eq!(accepted.len(), 1, "{accepted:?}");
        assert_eq!(accepted[0]["path"], MODIFIED);
        assert_eq!(accepted[0]["host_id"], drifted.as_str());

        // The rest accepted for every host of the image, group by group.
        b.goto(&image_page).await;
        assert_eq!(b.image_counts().await, counts(2, 1, 0, 0));
        let mut rounds = 0;
        loop {
            let mut next = None;
            for row in b.all("table#drift tr.group").await {
                if cell(&row, "td.accepted").await == "no" {
                    if let Ok(button) = row.find(Locator::Css("button.accept[name=finding]")).await
                    {
                        next = Some((cell(&row, "td.path").await, button));
                        break;
                    }
                }
            }
            let Some((path, button)) = next else { break };
            rounds += 1;
            assert!(rounds <= groups, "accepting groups does not end");
            b.navigate_by(&button, &format!("Accept for all hosts of {path}"))
                .await;
            b.wait_path(&image_page).await;
            let row = b.row_of("table#drift tr.group", &path).await;
            assert_eq!(
                cell(&row, "td.accepted").await,
                "yes",
                "{path} after accepting"
            );
        }
        assert!(rounds >= 2, "only {rounds} groups accepted");
        assert_eq!(b.image_counts().await, counts(3, 0, 0, 0));
        b.goto(&host_page).await;
        assert!(
            b.text("#status").await.contains("clean"),
            "{}",
            b.text("#status").await
        );
        assert_eq!(b.count("form.accept-finding").await, 0);
        for row in b.all("table#findings tr.finding").await {
            assert_eq!(cell(&row, "td.accepted").await, "yes");
        }
        b.goto("/ui/").await;
        assert_eq!(b.overview_counts().await, counts(3, 0, 0, 0));

        // Revoked: the host is drifted again.
        let accepts = fleet.accepts();
        let script = accepts
            .iter()
            .find(|accept| accept["path"] == SCRIPT_PATH)
            .unwrap_or_else(|| panic!("no accept of {SCRIPT_PATH}: {accepts:?}"));
        let id = script["id"].as_str().unwrap().to_owned();
        assert!(
            script["host_id"].is_null(),
            "a group accept names a host: {script}"
        );
        b.goto("/ui/accepts").await;
        assert_eq!(
            b.count("table#accepts tr[data-accept]").await,
            accepts.len()
        );
        let revoke = b
            .find(&format!(
                "table#accepts tr[data-accept=\"{id}\"] form.revoke button.revoke"
            ))
            .await;
        b.navigate_by(&revoke, "button.revoke").await;
        b.wait_path("/ui/accepts").await;
        assert_eq!(
            b.count(&format!("table#accepts tr[data-accept=\"{id}\"]"))
                .await,
            0,
            "the revoked accept is still listed"
        );
        assert_eq!(
            b.count("table#accepts tr[data-accept]").await,
            accepts.len() - 1
        );
        assert_eq!(fleet.accepts().len(), accepts.len() - 1);
        b.goto(&host_page).await;
        assert!(b.text("#status").await.contains("drifted"));
        let row = b.row_of("table#findings tr.finding", SCRIPT_PATH).await;
        assert_eq!(cell(&row, "td.accepted").await, "no");
        assert!(has(&row, "form.accept-finding button.accept").await);
        b.goto(&image_page).await;
        assert_eq!(b.image_counts().await, counts(2, 1, 0, 0));
        b.goto("/ui/").await;
        assert_eq!(b.overview_counts().await, counts(2, 1, 0, 0));

        // Logged out: no cookie, the session is over (also for whoever copied the
        // cookie), the pages send to the login page again.
        let logout = b.find("form#logout button#logout-submit").await;
        b.navigate_by(&logout, "#logout-submit").await;
        b.wait_path("/ui/login").await;
        assert_eq!(b.cookie().await, None, "the cookie outlived the logout");
        b.goto("/ui/").await;
        b.wait_path("/ui/login").await;
        b.find("form#login").await;
        b.goto(&host_page).await;
        b.wait_path("/ui/login").await;
        let copied = get_page(&fleet.url, "/ui/", Some(&session));
        assert_eq!(copied.status, 303, "the ended session still works");
        assert_eq!(copied.location.as_deref(), Some("/ui/login"));
        browser
    });
}

/// A wrong token gets an error and no cookie; a `read` session sees everything and no
/// control that changes anything, and its POSTs are refused.
#[test]
fn a_read_session_sees_the_fleet_but_cannot_change_it() {
    with_browser(|fleet, browser| async move {
        let b = &browser;
        let drifted = fleet.drifted.clone();
        let host_page = format!("/ui/hosts/{drifted}");
        let image_page = format!("/ui/images/{IMG}");
        // Something to revoke, and a finding shown accepted.
        let accept_id = fleet.accept_via_api(MODIFIED, Some(&drifted));

        // Wrong tokens: 401, the login page with the error, no cookie.
        for wrong in ["not-a-token-at-all", REPORT_TOKEN, BASELINE_TOKEN] {
            b.goto("/ui/login").await;
            b.find("input#token").await.send_keys(wrong).await.unwrap();
            let submit = b.find("button#login-submit").await;
            b.navigate_by(&submit, "#login-submit").await;
            assert_eq!(b.status().await, 401, "logging in with {wrong}");
            assert_eq!(b.path().await, "/ui/login");
            let error = b.text("p.error[role=alert]").await;
            assert!(!error.is_empty(), "an empty p.error");
            assert!(!error.contains(wrong), "the error repeats the token");
            b.find("form#login").await;
            assert_eq!(b.cookie().await, None, "a cookie after a refused login");
            b.goto("/ui/").await;
            b.wait_path("/ui/login").await;
        }

        // The read token: everything visible, nothing to change.
        let session = b.login(READ_TOKEN).await;
        assert_eq!(b.text("span#whoami").await, "ops (read)");
        assert_eq!(b.overview_counts().await, counts(2, 1, 0, 0));
        b.assert_no_admin_controls().await;
        b.goto(&image_page).await;
        assert_eq!(b.image_counts().await, counts(2, 1, 0, 0));
        assert!(b.count("table#drift tr.group").await >= 3);
        b.assert_no_admin_controls().await;
        let group_link = b
            .row_of("table#drift tr.group", IMG_TAG_PATH)
            .await
            .find(Locator::Css("a.group"))
            .await
            .unwrap();
        b.navigate_by(&group_link, "a.group").await;
        assert_eq!(
            b.count(&format!("table#group-hosts tr[data-host=\"{drifted}\"]"))
                .await,
            1
        );
        b.assert_no_admin_controls().await;
        b.goto(&host_page).await;
        assert!(b.count("table#findings tr.finding").await >= 3);
        let row = b.row_of("table#findings tr.finding", MODIFIED).await;
        assert_eq!(cell(&row, "td.accepted").await, "yes");
        let row = b.row_of("table#findings tr.finding", IMG_TAG_PATH).await;
        assert_eq!(cell(&row, "td.accepted").await, "no");
        b.assert_no_admin_controls().await;
        b.goto("/ui/accepts").await;
        b.assert_no_admin_controls().await;
        b.goto(&host_page).await;

        // An accept posted from the page with the session (and its valid csrf): 403.
        let csrf = b.csrf().await;
        let fields = with_csrf(
            &fleet.accept_fields(IMG_TAG_PATH, &drifted, &host_page),
            &csrf,
        );
        let script = "
            const form = document.createElement('form');
            form.method = 'post';
            form.action = '/ui/accepts';
            for (const [name, value] of arguments[0]) {
                const input = document.createElement('input');
                input.type = 'hidden';
                input.name = name;
                input.value = value;
                form.appendChild(input);
            }
            document.body.appendChild(form);
            window.bpOldPage = true;
            form.submit();
            return null;";
        b.client.execute(script, vec![json!(fields)]).await.unwrap();
        b.wait_new_page("the read session's accept").await;
        assert_eq!(b.status().await, 403, "a read session's accept");
        assert_eq!(b.path().await, "/ui/accepts");
        assert_eq!(fleet.accepts().len(), 1, "a read session accepted");

        // The same with the cookie copied into a plain client; and a revoke.
        let refused = post_form(&fleet.url, "/ui/accepts", Some(&session), &fields);
        assert_eq!(refused.status, 403, "{}", refused.why());
        let revoke = post_form(
            &fleet.url,
            &format!("/ui/accepts/{accept_id}/revoke"),
            Some(&session),
            &[("csrf".to_owned(), csrf.clone())],
        );
        assert_eq!(revoke.status, 403, "{}", revoke.why());
        let accepts = fleet.accepts();
        assert_eq!(accepts.len(), 1, "{accepts:?}");
        assert_eq!(accepts[0]["id"], accept_id.as_str());
        b.goto(&host_page).await;
        assert!(b.text("#status").await.contains("drifted"));
        browser
    });
}

/// POSTs without the session's CSRF token are refused and change nothing; paths that
/// hold HTML are shown as text on every page, nothing injected, nothing run.
#[test]
fn forged_posts_are_refused_and_paths_holding_html_stay_text() {
    with_browser(|fleet, browser| async move {
        let b = &browser;
        let drifted = fleet.drifted.clone();
        let host_page = format!("/ui/hosts/{drifted}");
        let image_page = format!("/ui/images/{IMG}");
        let session = b.login(ADMIN_TOKEN).await;
        let csrf = b.csrf().await;
        // What the page's Accept of the finding posts, less its csrf: what a forger
        // could copy.
        b.goto(&host_page).await;
        let form = b
            .row_of("table#findings tr.finding", IMG_TAG_PATH)
            .await
            .find(Locator::Css("form.accept-finding"))
            .await
            .unwrap();
        assert_eq!(
            form.attr("action").await.unwrap().as_deref(),
            Some("/ui/accepts")
        );
        let mut fields = form_fields(&form).await;
        let presented = fields
            .iter()
            .position(|(name, _)| name == "csrf")
            .map(|at| fields.remove(at).1);
        assert_eq!(presented.as_deref(), Some(csrf.as_str()), "the form's csrf");

        // Forged: no csrf, a wrong one, an empty one; the right one without the session.
        let forged = post_form(&fleet.url, "/ui/accepts", Some(&session), &fields);
        assert_eq!(forged.status, 403, "no csrf: {}", forged.why());
        let wrong: String = csrf
            .chars()
            .map(|c| if c == '0' { '1' } else { '0' })
            .collect();
        let forged = post_form(
            &fleet.url,
            "/ui/accepts",
            Some(&session),
            &with_csrf(&fields, &wrong),
        );
        assert_eq!(forged.status, 403, "a wrong csrf: {}", forged.why());
        let forged = post_form(
            &fleet.url,
            "/ui/accepts",
            Some(&session),
            &with_csrf(&fields, ""),
        );
        assert_eq!(forged.status, 403, "an empty csrf: {}", forged.why());
        let forged = post_form(&fleet.url, "/ui/accepts", None, &with_csrf(&fields, &csrf));
        assert_eq!(forged.status, 403, "no session: {}", forged.why());
        // The session's csrf in a form posted from another site.
        let cross = answer(
            http()
                .post(format!("{}/ui/accepts", fleet.url))
                .header("Origin", "http://evil.example")
                .header("Cookie", format!("bp_session={session}"))
                .send_form(
                    with_csrf(&fields, &csrf)
                        .iter()
                        .map(|(name, value)| (name.as_str(), value.as_str())),
                )
                .unwrap(),
        );
        assert_eq!(cross.status, 403, "a cross-origin POST: {}", cross.why());
        assert_eq!(
            fleet.accepts(),
            Vec::<Value>::new(),
            "a forged POST accepted"
        );

        // The same POST with the session's csrf is the one that works.
        let genuine = post_form(
            &fleet.url,
            "/ui/accepts",
            Some(&session),
            &with_csrf(&fields, &csrf),
        );
        assert_eq!(genuine.status, 303, "{}", genuine.why());
        assert_eq!(genuine.location.as_deref(), Some(host_page.as_str()));
        let accepts = fleet.accepts();
        assert_eq!(accepts.len(), 1, "{accepts:?}");
        assert_eq!(accepts[0]["path"], IMG_TAG_PATH);
        assert_eq!(accepts[0]["host_id"], drifted.as_str());
        let id = accepts[0]["id"].as_str().unwrap().to_owned();

        // A forged revoke: refused, the accept stays.
        let revoke = format!("/ui/accepts/{id}/revoke");
        let forged = post_form(&fleet.url, &revoke, Some(&session), &[]);
        assert_eq!(
            forged.status,
            403,
            "a revoke without csrf: {}",
            forged.why()
        );
        let forged = post_form(
            &fleet.url,
            &revoke,
            Some(&session),
            &[("csrf".to_owned(), wrong.clone())],
        );
        assert_eq!(
            forged.status,
            403,
            "a revoke with a wrong csrf: {}",
            forged.why()
        );
        assert_eq!(fleet.accepts().len(), 1, "a forged revoke revoked");
        // A forged logout does not end the session either.
        let forged = post_form(&fleet.url, "/ui/logout", Some(&session), &[]);
        assert_eq!(
            forged.status,
            403,
            "a logout without csrf: {}",
            forged.why()
        );
        assert_eq!(get_page(&fleet.url, "/ui/", Some(&session)).status, 200);

        // Paths holding HTML, on the host page: text, nothing injected.
        b.goto(&host_page).await;
        for path in [IMG_TAG_PATH, SCRIPT_PATH] {
            b.row_of("table#findings tr.finding", path).await;
        }
        let row = b.row_of("table#findings tr.finding", IMG_TAG_PATH).await;
        assert_eq!(cell(&row, "td.accepted").await, "yes");
        assert_eq!(b.count("td.path img").await, 0, "an img injected");
        assert_eq!(b.count("td.path script").await, 0, "a script injected");
        assert_eq!(b.count("table#findings img").await, 0, "an img injected");
        b.assert_inert().await;
        let raw = get_page(&fleet.url, &host_page, Some(&session));
        assert_eq!(raw.status, 200);
        for element in ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>"] {
            assert!(
                !raw.body.contains(element),
                "{element} unescaped in the host page"
            );
        }

        // On the image page, the drift group page, the accepts and the audit.
        b.goto(&image_page).await;
        for path in [IMG_TAG_PATH, SCRIPT_PATH] {
            b.row_of("table#drift tr.group", path).await;
        }
        assert_eq!(b.count("table#drift img").await, 0, "an img injected");
        assert_eq!(b.count("table#drift script").await, 0, "a script injected");
        b.assert_inert().await;
        let link = b
            .row_of("table#drift tr.group", SCRIPT_PATH)
            .await
            .find(Locator::Css("a.group"))
            .await
            .unwrap();
        b.navigate_by(&link, "a.group").await;
        assert!(b.path().await.starts_with(&format!("{image_page}/drift/")));
        assert_eq!(
            b.count(&format!("table#group-hosts tr[data-host=\"{drifted}\"]"))
                .await,
            1
        );
        b.assert_inert().await;
        b.goto("/ui/accepts").await;
        assert_eq!(
            b.count(&format!("table#accepts tr[data-accept=\"{id}\"]"))
                .await,
            1
        );
        assert!(
            b.text("table#accepts").await.contains(IMG_TAG_PATH),
            "the accepted path is not shown as text on /ui/accepts"
        );
        assert_eq!(b.count("table#accepts img").await, 0, "an img injected");
        b.assert_inert().await;
        b.goto("/ui/audit").await;
        b.find("table#audit").await;
        b.find("#verification").await;
        assert_eq!(b.count("table#audit img").await, 0, "an img injected");
        b.assert_inert().await;

        // POST /ui/accepts as REFERENCE §8 gives its fields (image_id, host_id, finding,
        // comment, back), with the session's csrf: 303 to `back`.
        let fields = with_csrf(
            &fleet.accept_fields(SCRIPT_PATH, &drifted, &host_page),
            &csrf,
        );
        let contract = post_form(&fleet.url, "/ui/accepts", Some(&session), &fields);
        assert_eq!(
            (contract.status, contract.location.as_deref()),
            (303, Some(host_page.as_str())),
            "POST /ui/accepts with the contract's fields {:?}: {}",
            fields.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            contract.why()
        );
        let accepts = fleet.accepts();
        assert!(
            accepts.iter().any(
                |accept| accept["path"] == SCRIPT_PATH && accept["host_id"] == drifted.as_str()
            ),
            "{accepts:?}"
        );
        browser
    });
}

/// The named fields of a form element and their values, as the browser would send them.
async fn form_fields(form: &Element) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for input in form
        .find_all(Locator::Css("input[name], select[name], textarea[name]"))
        .await
        .unwrap()
    {
        let name = input.attr("name").await.unwrap().unwrap_or_default();
        let value = input.prop("value").await.unwrap().unwrap_or_default();
        fields.push((name, value));
    }
    fields
}
