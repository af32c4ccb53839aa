//! The agent's reports to a real metadata service (in-process, real sled directory,
//! scoped tokens): signed with the host key from `--state-dir`, spooled while the
//! service cannot take them and sent oldest first, bounded by `--spool-max` with the
//! drop reported, refusals logged with the service's reason and dropped, a failing
//! check reported too, several `--server`s tried in order, and none of it changing the
//! agent's exit codes.

mod support;

use metadata_service::config::Config;
use metadata_service::Background;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");
const REPORT_TOKEN: &str = "report-token-0123456789abcdef";
const BASELINE_TOKEN: &str = "baseline-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const HOST: &str = "0123456789abcdef0123456789abcdef";

/// A small tree and its baseline on a service with scoped tokens.
struct Fleet {
    dir: tempfile::TempDir,
    root: PathBuf,
    /// Kept running for the test's length.
    _server: Background,
    url: String,
    token_file: PathBuf,
}

fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["etc", "usr/bin"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    root
}

fn start_service(store: &Path) -> Background {
    let mut config = Config::new("127.0.0.1:0", store);
    config.tokens = vec![
        format!("report:agents:{REPORT_TOKEN}"),
        format!("baseline:ci:{BASELINE_TOKEN}"),
        format!("admin:ops:{ADMIN_TOKEN}"),
    ];
    Background::start(config).unwrap()
}

impl Fleet {
    /// A service holding the baseline of image `img` (unless `upload` is false).
    fn new(upload: bool) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let root = tree(dir.path());
        let server = start_service(&dir.path().join("store"));
        let url = format!("http://{}", server.addr);
        if upload {
            let mut config = integrity_client::ClientConfig::new(url.clone(), "test");
            config.token = Some(BASELINE_TOKEN.into());
            integrity_client::Client::new(&config)
                .unwrap()
                .upload_baseline(
                    "img",
                    &support::baseline(&root, "img"),
                    None,
                    &mut |_, _, _| {},
                )
                .unwrap();
        }
        let token_file = dir.path().join("token");
        fs::write(&token_file, format!("{REPORT_TOKEN}\n")).unwrap();
        fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
        Fleet {
            dir,
            root,
            _server: server,
            url,
            token_file,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The agent once against `servers`, reporting with the token file and `extra`.
    fn agent(&self, servers: &[&str], extra: &[&str]) -> Output {
        let mut command = Command::new(AGENT);
        command
            .args(["--root", self.root.to_str().unwrap(), "--image-id", "img"])
            .args(["--format", "json", "--fetch-attempts", "1"])
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--state-dir")
            .arg(self.state())
            .arg("--token-file")
            .arg(&self.token_file)
            .args(extra)
            .env_remove("IMAGE_ID")
            // --token-file takes precedence over the environment (a wrong token here
            // would have every report refused).
            .env("BULLETPROOF_TOKEN", "env-token-not-used-0123456789");
        for server in servers {
            command.args(["--server", server]);
        }
        command.output().unwrap()
    }

    /// `GET path` with the admin token: status, signature header, body.
    fn get(&self, path: &str) -> (u16, Option<String>, Vec<u8>) {
        let mut response = ureq::get(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        let signature = response
            .headers()
            .get("x-bulletproof-signature")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.body_mut().read_to_vec().unwrap();
        (response.status().as_u16(), signature, body)
    }

    /// The stored report `seq` of `host`, parsed, after checking that its signature
    /// verifies with the host key in the state directory.
    fn stored(&self, host: &str, seq: u64) -> Option<serde_json::Value> {
        let (status, signature, bytes) = self.get(&format!("/hosts/{host}/reports/{seq}"));
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        let signature = integrity_trust::from_header(&signature.expect("a signature")).unwrap();
        let key = integrity_trust::load_public_key(&self.state().join("host.pub")).unwrap();
        let trusted = integrity_trust::verify(&key, &bytes, &signature, false).unwrap();
        assert_eq!(
            trusted,
            format!("bulletproof-report host_id:{host} seq:{seq}")
        );
        integrity_common::report::HostReport::parse(&bytes, 100_000).unwrap();
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    fn spooled(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.state().join("spool"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".json"))
            .collect();
        names.sort();
        names
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An address nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn spool_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

#[test]
fn every_check_is_reported_signed_with_the_host_key_and_the_spool_emptied() {
    let fleet = Fleet::new(true);
    fs::write(fleet.root.join("usr/bin/backdoor"), "#!/bin/sh\n").unwrap();
    let output = fleet.agent(&[&fleet.url], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let state = fleet.state();
    let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let host = fs::read_to_string(state.join("host-id")).unwrap();
    let host = host.trim();
    integrity_common::report::validate_host_id(host).unwrap();
    assert_eq!(fs::read_to_string(state.join("seq")).unwrap(), "1\n");
    assert!(
        fleet.spooled().is_empty(),
        "acknowledged reports leave the spool"
    );

    let report = fleet.stored(host, 1).expect("report 1 stored");
    assert_eq!(report["host_id"], host);
    assert_eq!(report["image_id"], "img");
    assert_eq!(report["mode"], "full");
    assert_eq!(report["interval_secs"], serde_json::Value::Null);
    assert_eq!(report["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["baseline"]["source"], "server");
    assert_eq!(report["baseline"]["signature"], "unchecked");
    let sha = integrity_common::Sha256Digest::of(&baseline_bytes(&fleet)).to_hex();
    assert_eq!(report["baseline"]["sha256"], sha);
    assert_eq!(report["summary"]["added"], 1);
    assert_eq!(report["anomalies"][0]["anomaly"], "added");
    assert_eq!(report["anomalies"][0]["path"], "/usr/bin/backdoor");
    assert_eq!(report["truncated"], 0);
    assert!(report.get("error").is_none());

    // The same identity next time: seq 2, same key, same host.
    let again = fleet.agent(&[&fleet.url], &["--report-max-anomalies", "0"]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let report = fleet.stored(host, 2).expect("report 2 stored");
    assert_eq!(report["anomalies"], serde_json::json!([]));
    assert_eq!(
        report["truncated"], 1,
        "--report-max-anomalies 0 counts them"
    );
}

fn baseline_bytes(fleet: &Fleet) -> Vec<u8> {
    let (status, _, bytes) = fleet.get("/baselines/img");
    assert_eq!(status, 200);
    bytes
}

#[test]
fn unsent_reports_wait_in_the_spool_and_go_oldest_first() {
    let fleet = Fleet::new(true);
    let dead = dead_url();
    for (run, expected) in [(1, vec![1]), (2, vec![1, 2])] {
        let output = fleet.agent(&[&dead], &["--host-id", HOST]);
        // No baseline: the check's own exit code, unchanged by reporting.
        assert_eq!(
            output.status.code(),
            Some(15),
            "run {run}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("kept in the spool"),
            "{}",
            stderr(&output)
        );
        let names: Vec<String> = expected.into_iter().map(spool_name).collect();
        assert_eq!(fleet.spooled(), names);
    }
    // A failing check is reported with its error and no baseline.
    let spooled: serde_json::Value =
        serde_json::from_slice(&fs::read(fleet.state().join("spool").join(spool_name(1))).unwrap())
            .unwrap();
    assert_eq!(spooled["baseline"], serde_json::Value::Null);
    assert!(
        spooled["error"]
            .as_str()
            .unwrap()
            .contains("none is cached"),
        "{spooled}"
    );

    // The service is reachable: 1 and 2 go before 3, in order (a service takes a seq
    // only above the last one it stored, so newest-first would lose 1 and 2).
    let output = fleet.agent(&[&fleet.url], &["--host-id", HOST]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(fleet.spooled().is_empty(), "{}", stderr(&output));
    for seq in 1..=3 {
        let report = fleet.stored(HOST, seq).expect("stored");
        assert_eq!(report["seq"], seq);
        assert_eq!(report["error"].is_string(), seq < 3, "{report}");
    }
}

#[test]
fn the_spool_is_bounded_and_the_drop_is_reported() {
    let fleet = Fleet::new(true);
    let dead = dead_url();
    let bound = ["--host-id", HOST, "--spool-max", "2"];
    for _ in 0..4 {
        let output = fleet.agent(&[&dead], &bound);
        assert_eq!(output.status.code(), Some(15), "{}", stderr(&output));
    }
    assert_eq!(fleet.spooled(), [spool_name(3), spool_name(4)]);
    let fourth: serde_json::Value =
        serde_json::from_slice(&fs::read(fleet.state().join("spool").join(spool_name(4))).unwrap())
            .unwrap();
    assert_eq!(fourth["spool_dropped"], 1, "report 2 was dropped for it");
    let output = fleet.agent(&[&fleet.url], &bound);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(fleet.spooled().is_empty());
    assert!(fleet.stored(HOST, 3).is_none(), "3 was dropped for 5");
    assert_eq!(fleet.stored(HOST, 4).unwrap()["spool_dropped"], 1);
    // 3 went, and it carried the drop of 1: 5 reports both.
    assert_eq!(fleet.stored(HOST, 5).unwrap()["spool_dropped"], 2);
}

#[test]
fn refused_reports_are_logged_with_the_reason_and_dropped() {
    // 422: the service knows no such image (the check fails too: 404, exit 15).
    let fleet = Fleet::new(false);
    let output = fleet.agent(&[&fleet.url], &["--host-id", HOST]);
    assert_eq!(output.status.code(), Some(15), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains("refused report 1 (HTTP 422)"), "{log}");
    assert!(fleet.spooled().is_empty(), "a 4xx is not retried");

    // 401: a wrong token, never printed.
    let fleet = Fleet::new(true);
    let wrong = "wrong-token-0123456789abcdef";
    fs::write(&fleet.token_file, wrong).unwrap();
    let output = fleet.agent(&[&fleet.url], &["--host-id", HOST]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("(HTTP 401)") && log.contains("--token"),
        "{log}"
    );
    assert!(!log.contains(wrong) && !log.contains(REPORT_TOKEN), "{log}");
    assert!(fleet.spooled().is_empty());

    // 403: the host key changed after the service pinned the first one.
    fs::write(&fleet.token_file, REPORT_TOKEN).unwrap();
    let output = fleet.agent(&[&fleet.url], &["--host-id", HOST]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(fleet.stored(HOST, 2).is_some(), "{}", stderr(&output));
    fs::remove_file(fleet.state().join("host.key")).unwrap();
    fs::remove_file(fleet.state().join("host.pub")).unwrap();
    let output = fleet.agent(&[&fleet.url], &["--host-id", HOST]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("(HTTP 403)") && log.contains(&format!("DELETE /hosts/{HOST}/key")),
        "{log}"
    );
    assert!(fleet.spooled().is_empty());
}

#[test]
fn several_servers_are_tried_in_order() {
    let fleet = Fleet::new(true);
    let dead = dead_url();
    let output = fleet.agent(&[&dead, &fleet.url], &["--host-id", HOST]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(fleet.stored(HOST, 1).is_some(), "{}", stderr(&output));
    assert!(fleet.spooled().is_empty());
}

#[test]
fn no_report_and_bad_reporting_configuration() {
    let fleet = Fleet::new(true);
    let output = fleet.agent(&[&fleet.url], &["--no-report"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!fleet.state().exists(), "--no-report leaves no state");

    let output = fleet.agent(&[&fleet.url], &["--host-id", "NOT-HEX"]);
    assert_eq!(output.status.code(), Some(14), "{}", stderr(&output));
    assert!(stderr(&output).contains("--host-id"), "{}", stderr(&output));

    fs::create_dir(fleet.state()).unwrap();
    fs::set_permissions(fleet.state(), fs::Permissions::from_mode(0o777)).unwrap();
    let output = fleet.agent(&[&fleet.url], &[]);
    assert_eq!(output.status.code(), Some(14), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--state-dir") && stderr(&output).contains("mode 0777"),
        "{}",
        stderr(&output)
    );
    assert!(!fleet.state().join("host.key").exists());
}

#[test]
fn continuous_mode_reports_every_round_with_its_interval() {
    let fleet = Fleet::new(true);
    let mut child = Command::new(AGENT)
        .args(["--root", fleet.root.to_str().unwrap(), "--image-id", "img"])
        .args(["--server", &fleet.url, "--interval", "1", "--host-id", HOST])
        .arg("--state-dir")
        .arg(fleet.state())
        .arg("--cache-dir")
        .arg(fleet.dir.path().join("cache"))
        .env("BULLETPROOF_TOKEN", REPORT_TOKEN)
        .env_remove("IMAGE_ID")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        if let Some(report) = fleet.stored(HOST, 2) {
            break report;
        }
        assert!(Instant::now() < deadline, "no second report within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "the agent stopped");
        std::thread::sleep(Duration::from_millis(100));
    };
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(second["interval_secs"], 1);
    assert_eq!(fleet.stored(HOST, 1).unwrap()["interval_secs"], 1);
}

/// An unprivileged run without `--state-dir` cannot use the default state directory:
/// the check still runs and keeps its exit code, and the agent says no report was sent
/// (an explicit `--state-dir` it cannot use is an error, above).
#[test]
fn an_unusable_default_state_dir_still_checks_and_says_so() {
    let fleet = Fleet::new(true);
    // The tree, a cache directory and the token readable by uid 65534.
    for path in [fleet.dir.path(), &fleet.root] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cache = fleet.dir.path().join("nobody-cache");
    fs::create_dir(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(fleet.root.join("etc/hosts"), "changed\n").unwrap();
    fs::set_permissions(
        fleet.root.join("etc/hosts"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", AGENT])
        .args(["--root", fleet.root.to_str().unwrap(), "--image-id", "img"])
        .args(["--fetch-attempts", "1", "--server", &fleet.url])
        .arg("--cache-dir")
        .arg(&cache)
        .env("BULLETPROOF_TOKEN", REPORT_TOKEN)
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no report will be sent"),
        "{}",
        stderr(&output)
    );
    assert_eq!(fleet.get(&format!("/hosts/{HOST}")).0, 404);
}

/// A host whose last sequence number went back (its `seq` file lost, or the state
/// restored from an older copy) is told the service's last one by the `409`: that
/// report is dropped, and the next goes on above it.
#[test]
fn a_host_whose_seq_went_back_goes_on_above_the_services_last() {
    let fleet = Fleet::new(true);
    for _ in 0..3 {
        let output = fleet.agent(&[&fleet.url], &[]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    let host = fs::read_to_string(fleet.state().join("host-id")).unwrap();
    let host = host.trim().to_owned();
    fs::remove_file(fleet.state().join("seq")).unwrap();
    // Other bytes than the stored report 1 (a file changed): a replay.
    fs::write(fleet.root.join("etc/hosts"), "changed\n").unwrap();
    let output = fleet.agent(&[&fleet.url], &[]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("409"), "{}", stderr(&output));
    assert_eq!(
        fs::read_to_string(fleet.state().join("seq")).unwrap(),
        "3\n"
    );
    let output = fleet.agent(&[&fleet.url], &[]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let report = fleet.stored(&host, 4).expect("report 4 stored");
    assert_eq!(report["summary"]["modified"], 1);
    let (_, _, body) = fleet.get(&format!("/hosts/{host}"));
    let host_json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(host_json["last_seq"], 4);
    assert_eq!(host_json["gaps"], serde_json::json!([]));
}
