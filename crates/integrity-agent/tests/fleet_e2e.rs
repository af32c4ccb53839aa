//! Real agents against a real service (DESIGN §12), end to end: the agent binary with
//! its own state directories, the service in a process of its own on a fixed loopback
//! port with a real sled directory, so that it can be killed with SIGKILL and started
//! again where the agents expect it. Enrollment, reports made while the service is
//! dead arriving afterwards in order and once each, a report deleted from a spool
//! showing as a gap, a second key refused, and `--no-report` sending nothing.
//!
//! The service process is this test binary run again with `FLEET_E2E_SERVICE` set:
//! its `service_process` test then runs `metadata_service` (the library the service
//! binary is made of) until it is killed; the binary's path is not known from here.

mod support;

use metadata_service::config::Config;
use metadata_service::Background;
use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");
const REPORT_TOKEN: &str = "rrrrrrrr-e2e-report-token-012345";
const READ_TOKEN: &str = "oooooooo-e2e-read-token-01234567";
const ADMIN_TOKEN: &str = "aaaaaaaa-e2e-admin-token-0123456";
const BASELINE_TOKEN: &str = "bbbbbbbb-e2e-baseline-token-0123";
const IMG: &str = "img-e2e";
const SERVICE_ENV: &str = "FLEET_E2E_SERVICE";

/// Runs only in the child process: the service on `FLEET_E2E_SERVICE`'s address and
/// data directory, until killed (or until the parent closes our stdin).
#[test]
fn service_process() {
    let Ok(spec) = std::env::var(SERVICE_ENV) else {
        return;
    };
    let (listen, data) = spec.split_once('|').expect("ADDR|DIR");
    let mut config = Config::new(listen, data);
    config.tokens = vec![
        format!("report:agents:{REPORT_TOKEN}"),
        format!("read:ops:{READ_TOKEN}"),
        format!("admin:root:{ADMIN_TOKEN}"),
        format!("baseline:ci:{BASELINE_TOKEN}"),
    ];
    let server = Background::start(config).expect("service start");
    println!("FLEET-E2E-LISTENING {}", server.addr);
    // Until the parent goes away (stdin closed) or kills us.
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
        line.clear();
    }
    std::process::exit(0);
}

/// The service in its own process.
struct Service {
    child: Child,
    addr: String,
    data: PathBuf,
}

impl Service {
    /// Starts on `addr` (`127.0.0.1:PORT`), retrying while the port is not free yet.
    fn start(addr: &str, data: &Path) -> Service {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "service_process",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(SERVICE_ENV, format!("{addr}|{}", data.display()))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // libtest may have written "test service_process ... " first.
                    const MARK: &str = "FLEET-E2E-LISTENING ";
                    if let Some(at) = line.find(MARK) {
                        let _ = tx.send(line[at + MARK.len()..].trim().to_owned());
                    }
                }
            });
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(listening) => {
                    assert_eq!(listening, addr);
                    return Service {
                        child,
                        addr: addr.to_owned(),
                        data: data.to_owned(),
                    };
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    assert!(
                        Instant::now() < deadline,
                        "the service did not start on {addr}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) -> (String, PathBuf) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        (self.addr.clone(), self.data.clone())
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn get(&self, path: &str, token: &str) -> (u16, Vec<u8>, Option<String>) {
        get(&self.url(), path, token)
    }

    fn json(&self, path: &str) -> Value {
        let (status, body, _) = self.get(path, READ_TOKEN);
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    /// GET /hosts/{id}, `None` for 404.
    fn host(&self, host: &str) -> Option<Value> {
        let (status, body, _) = self.get(&format!("/hosts/{host}"), READ_TOKEN);
        match status {
            404 => None,
            200 => Some(serde_json::from_slice(&body).unwrap()),
            _ => panic!(
                "GET /hosts/{host}: {status} {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Every seq GET /hosts/{id}/reports lists, newest first.
    fn seqs(&self, host: &str) -> Vec<u64> {
        let listed = self.json(&format!("/hosts/{host}/reports?limit=1000"));
        listed["reports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["seq"].as_u64().unwrap())
            .collect()
    }

    fn audit(&self) -> Vec<Value> {
        let (status, body, _) = self.get("/audit?limit=1000", ADMIN_TOKEN);
        assert_eq!(status, 200);
        serde_json::from_slice::<Value>(&body).unwrap()["records"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn metric(&self, name_and_labels: &str) -> f64 {
        let (_, body, _) = self.get("/metrics", READ_TOKEN);
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                (key == name_and_labels).then(|| value.parse().unwrap_or(0.0))
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(base: &str, path: &str, token: &str) -> (u16, Vec<u8>, Option<String>) {
    let mut response = ureq::get(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .call()
        .unwrap();
    let signature = response
        .headers()
        .get("x-bulletproof-signature")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.body_mut().read_to_vec().unwrap();
    (response.status().as_u16(), body, signature)
}

/// A loopback address with a port free now.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// A service holding the baseline of a small tree, and a report token file.
struct Fleet {
    dir: tempfile::TempDir,
    root: PathBuf,
    token_file: PathBuf,
    service: Option<Service>,
    addr: String,
}

/// One simulated host: its id and state directory.
struct Agent {
    host: String,
    state: PathBuf,
    cache: PathBuf,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let root = tree(dir.path());
        let addr = free_addr();
        let service = Service::start(&addr, &dir.path().join("store"));
        let mut config = integrity_client::ClientConfig::new(service.url(), "fleet-e2e");
        config.token = Some(BASELINE_TOKEN.into());
        integrity_client::Client::new(&config)
            .unwrap()
            .upload_baseline(IMG, &support::baseline(&root, IMG), None, &mut |_, _, _| {})
            .unwrap();
        let token_file = dir.path().join("token");
        fs::write(&token_file, format!("{REPORT_TOKEN}\n")).unwrap();
        fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
        Fleet {
            dir,
            root,
            token_file,
            service: Some(service),
            addr,
        }
    }

    fn service(&self) -> &Service {
        self.service.as_ref().expect("the service is running")
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill9(&mut self) {
        self.service.take().expect("running").kill9();
    }

    fn restart(&mut self) {
        assert!(self.service.is_none());
        self.service = Some(Service::start(&self.addr, &self.dir.path().join("store")));
    }

    fn agent(&self, n: u32) -> Agent {
        Agent {
            host: format!("{:032x}", 0xe2e0_0000u64 + u64::from(n)),
            state: self.dir.path().join(format!("state-{n}")),
            cache: self.dir.path().join(format!("cache-{n}")),
        }
    }

    fn command(&self, agent: &Agent, extra: &[&str]) -> Command {
        let mut command = Command::new(AGENT);
        command
            .args(["--root", self.root.to_str().unwrap(), "--image-id", IMG])
            .args(["--format", "json", "--fetch-attempts", "1"])
            .arg("--server")
            .arg(self.url())
            .arg("--cache-dir")
            .arg(&agent.cache)
            .arg("--state-dir")
            .arg(&agent.state)
            .args(["--host-id", &agent.host])
            .arg("--token-file")
            .arg(&self.token_file)
            .args(extra)
            .env_remove("IMAGE_ID")
            .env_remove("BULLETPROOF_TOKEN")
            .env("NO_COLOR", "1");
        command
    }

    /// One check (`--once`), asserting it ran (0 clean, 1-7 drift).
    fn once(&self, agent: &Agent) -> Output {
        let output = self.command(agent, &["--once"]).output().unwrap();
        assert!(
            matches!(output.status.code(), Some(0..=7)),
            "agent {}: {:?}\n{}",
            agent.host,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Agent {
    /// The last seq the agent numbered.
    fn seq(&self) -> u64 {
        fs::read_to_string(self.state.join("seq"))
            .map(|text| text.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// The seqs of the reports in its spool.
    fn spooled(&self) -> Vec<u64> {
        let Ok(entries) = fs::read_dir(self.state.join("spool")) else {
            return Vec::new();
        };
        let mut seqs: Vec<u64> = entries
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        seqs.sort();
        seqs
    }

    fn public_key(&self) -> integrity_trust::PublicKey {
        integrity_trust::load_public_key(&self.state.join("host.pub")).unwrap()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every report 1..=n of `agent` is stored once, in order, signed by its key, with no
/// gap; returns the parsed reports.
fn assert_complete(service: &Service, agent: &Agent, n: u64) -> Vec<Value> {
    let host = service.host(&agent.host).expect("the host is known");
    assert_eq!(host["last_seq"], n, "{host}");
    assert_eq!(host["gaps"], json!([]), "{host}");
    let expected: Vec<u64> = (1..=n).rev().collect();
    assert_eq!(service.seqs(&agent.host), expected, "host {}", agent.host);
    let key = agent.public_key();
    let mut reports = Vec::new();
    for seq in 1..=n {
        let (status, bytes, signature) =
            service.get(&format!("/hosts/{}/reports/{seq}", agent.host), READ_TOKEN);
        assert_eq!(status, 200);
        let signature = integrity_trust::from_header(&signature.expect("a signature")).unwrap();
        let trusted = integrity_trust::verify(&key, &bytes, &signature, false)
            .expect("a stored report verifies with the agent's key");
        assert_eq!(
            trusted,
            format!("bulletproof-report host_id:{} seq:{seq}", agent.host)
        );
        let report: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(report["seq"], seq);
        assert_eq!(report["host_id"], agent.host.as_str());
        reports.push(report);
    }
    // In order: each was finished no earlier than the one before.
    for pair in reports.windows(2) {
        let (a, b) = (
            pair[0]["finished"].as_str().unwrap(),
            pair[1]["finished"].as_str().unwrap(),
        );
        assert!(
            a <= b,
            "report {} finished after {}",
            pair[0]["seq"],
            pair[1]["seq"]
        );
    }
    reports
}

#[test]
fn an_agent_enrolls_its_host_with_its_first_report() {
    let fleet = Fleet::new();
    let agent = fleet.agent(1);
    let service = fleet.service();
    assert!(service.host(&agent.host).is_none());

    let output = fleet.once(&agent);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let host = service.host(&agent.host).expect("enrolled");
    assert_eq!(host["status"], "clean", "{host}");
    assert_eq!(host["image_id"], IMG);
    assert_eq!(host["last_seq"], 1);
    // The first check is full; the service shows the kind and the last full check.
    assert_eq!(host["mode"], "full", "{host}");
    let last_full = host["last_full"].as_str().expect("last_full").to_owned();
    integrity_common::validate_timestamp(&last_full).unwrap();
    assert_eq!(
        host["key_fingerprint"],
        integrity_trust::key_id(&agent.public_key())
    );
    assert!(
        agent.spooled().is_empty(),
        "acknowledged reports leave the spool"
    );
    let enroll = service
        .audit()
        .into_iter()
        .find(|record| record["event"] == "enroll" && record.to_string().contains(&agent.host));
    assert!(enroll.is_some(), "enrollment audited");

    // Drift planted: the next report shows it.
    fs::write(fleet.root.join("usr/bin/backdoor"), "#!/bin/sh\nnc -l\n").unwrap();
    let output = fleet.once(&agent);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let host = service.host(&agent.host).unwrap();
    assert_eq!(host["status"], "drifted", "{host}");
    assert_eq!(host["last_seq"], 2);
    assert_eq!(host["summary"]["added"], 1);
    // The next one is incremental (the verified state in --state-dir), and says when
    // the last full check ran.
    assert_eq!(host["mode"], "incremental", "{host}");
    assert_eq!(host["last_full"], last_full.as_str(), "{host}");
    assert_eq!(host["latest"]["anomalies"][0]["path"], "/usr/bin/backdoor");
    let drift = service.json(&format!("/drift?image_id={IMG}"));
    assert_eq!(drift["groups"][0]["path"], "/usr/bin/backdoor", "{drift}");
    assert_eq!(drift["groups"][0]["hosts"], 1);
    assert_complete(service, &agent, 2);
}

#[test]
fn reports_made_while_the_service_is_killed_arrive_afterwards_in_order_once_each() {
    let mut fleet = Fleet::new();
    let agents: Vec<Agent> = (1..=3).map(|n| fleet.agent(n)).collect();
    // Agents checking every second, as in production.
    let mut running: Vec<Child> = agents
        .iter()
        .map(|agent| {
            fleet
                .command(agent, &["--interval", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_for(
        Duration::from_secs(15),
        "two reports of every agent",
        || {
            agents
                .iter()
                .all(|agent| {
                    fleet
                        .service()
                        .host(&agent.host)
                        .is_some_and(|host| host["last_seq"].as_u64() >= Some(2))
                })
                .then_some(())
        },
    );

    // Killed while they check; they go on checking and spool.
    fleet.kill9();
    wait_for(
        Duration::from_secs(15),
        "two spooled reports per agent",
        || {
            agents
                .iter()
                .all(|agent| agent.spooled().len() >= 2)
                .then_some(())
        },
    );
    let spooled_max: Vec<u64> = agents
        .iter()
        .map(|agent| *agent.spooled().last().unwrap())
        .collect();

    // Back: the spools drain into the service while the agents keep checking.
    fleet.restart();
    wait_for(Duration::from_secs(15), "the spools sent", || {
        agents
            .iter()
            .zip(&spooled_max)
            .all(|(agent, max)| {
                fleet
                    .service()
                    .host(&agent.host)
                    .is_some_and(|host| host["last_seq"].as_u64() > Some(*max))
            })
            .then_some(())
    });
    for child in &mut running {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
    }
    for child in &mut running {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "an --interval agent exits 0 on SIGTERM: {status:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // One last check each sends whatever the stop left in the spool.
    let service = fleet.service();
    for agent in &agents {
        fleet.once(agent);
        assert!(
            agent.spooled().is_empty(),
            "spool of {} not drained",
            agent.host
        );
        let n = agent.seq();
        let reports = assert_complete(service, agent, n);
        // The reports made while the service was dead used the cached baseline.
        assert!(
            reports
                .iter()
                .any(|report| report["baseline"]["source"] == "cache"),
            "no report of {} made from the cache while the service was dead",
            agent.host
        );
    }
    assert_eq!(service.metric("metadata_service_report_gaps_total"), 0.0);
}

#[test]
fn a_report_deleted_from_a_spool_is_a_gap_the_service_shows() {
    let mut fleet = Fleet::new();
    let agent = fleet.agent(7);
    fleet.once(&agent);
    fleet.kill9();
    for _ in 0..3 {
        let output = fleet.once(&agent);
        assert!(
            stderr(&output).contains("spool"),
            "the agent says it keeps the report: {}",
            stderr(&output)
        );
    }
    assert_eq!(agent.spooled(), vec![2, 3, 4]);
    // Someone removes report 3 from the spool (both its files).
    let spool = agent.state.join("spool");
    fs::remove_file(spool.join(format!("{:020}.json", 3))).unwrap();
    let _ = fs::remove_file(spool.join(format!("{:020}.minisig", 3)));

    fleet.restart();
    fleet.once(&agent);
    assert!(agent.spooled().is_empty());
    let service = fleet.service();
    let host = service.host(&agent.host).unwrap();
    assert_eq!(host["last_seq"], 5, "{host}");
    assert_eq!(host["gaps"], json!([[3, 3]]), "{host}");
    assert_eq!(service.seqs(&agent.host), vec![5, 4, 2, 1]);
    assert_eq!(service.metric("metadata_service_report_gaps_total"), 1.0);
}

#[test]
fn a_full_spool_drops_the_oldest_and_the_service_shows_the_gap_and_the_drop() {
    let mut fleet = Fleet::new();
    let agent = fleet.agent(8);
    fleet.once(&agent);
    fleet.kill9();
    for _ in 0..4 {
        let output = fleet
            .command(&agent, &["--once", "--spool-max", "2"])
            .output()
            .unwrap();
        assert!(
            matches!(output.status.code(), Some(0..=7)),
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(agent.spooled(), vec![4, 5]);
    fleet.restart();
    let output = fleet.once(&agent);
    assert!(agent.spooled().is_empty(), "{}", stderr(&output));
    let service = fleet.service();
    let host = service.host(&agent.host).unwrap();
    assert_eq!(host["last_seq"], 6, "{host}");
    assert_eq!(host["gaps"], json!([[2, 3]]), "{host}");
    assert_eq!(service.seqs(&agent.host), vec![6, 5, 4, 1]);
    assert_eq!(service.metric("metadata_service_spool_dropped_total"), 2.0);
}

#[test]
fn a_second_key_for_a_known_host_is_refused_audited_and_not_retried() {
    let fleet = Fleet::new();
    let genuine = fleet.agent(3);
    fleet.once(&genuine);
    // Another machine claiming the same host id, with a state (and key) of its own.
    let impostor = Agent {
        host: genuine.host.clone(),
        state: fleet.dir.path().join("state-impostor"),
        cache: fleet.dir.path().join("cache-impostor"),
    };
    let output = fleet.once(&impostor);
    let text = stderr(&output);
    assert!(
        text.contains("403"),
        "the refusal is logged with its status: {text}"
    );
    assert!(
        impostor.spooled().is_empty(),
        "a 403 is not retried: the report leaves the spool"
    );
    let service = fleet.service();
    let host = service.host(&genuine.host).unwrap();
    assert_eq!(host["last_seq"], 1);
    // The first check is full; the service shows the kind and the last full check.
    assert_eq!(host["mode"], "full", "{host}");
    let last_full = host["last_full"].as_str().expect("last_full").to_owned();
    integrity_common::validate_timestamp(&last_full).unwrap();
    assert_eq!(
        host["key_fingerprint"],
        integrity_trust::key_id(&genuine.public_key())
    );
    let refused = wait_for(Duration::from_secs(5), "the refusal audited", || {
        service.audit().into_iter().find(|record| {
            record["event"] == "report_refused" && record.to_string().contains(&genuine.host)
        })
    });
    assert_eq!(refused["data"]["reason"], "key_mismatch", "{refused}");
    // The genuine agent goes on.
    fleet.once(&genuine);
    assert_complete(service, &genuine, 2);
}

#[test]
fn no_report_sends_nothing() {
    let fleet = Fleet::new();
    let agent = fleet.agent(9);
    fs::write(fleet.root.join("etc/hosts"), "10.0.0.66 evil\n").unwrap();
    let output = fleet
        .command(&agent, &["--once", "--no-report"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let service = fleet.service();
    assert!(service.host(&agent.host).is_none(), "a report arrived");
    assert_eq!(service.json("/hosts")["hosts"], json!([]));
    assert_eq!(
        service.metric("metadata_service_reports_total{outcome=\"stored\"}"),
        0.0
    );
    assert!(
        !agent.state.join("spool").exists() || agent.spooled().is_empty(),
        "nothing spooled"
    );
}

fn admin_json(base: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let url = format!("{base}{path}");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut response = match (method, body) {
        ("POST", Some(body)) => agent
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap(),
        ("DELETE", _) => agent
            .delete(&url)
            .header("Authorization", &auth)
            .call()
            .unwrap(),
        _ => agent
            .get(&url)
            .header("Authorization", &auth)
            .call()
            .unwrap(),
    };
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn twenty_agents_with_the_same_change_are_one_drift_group_until_accepted() {
    let fleet = Fleet::new();
    let agents: Vec<Agent> = (100..120).map(|n| fleet.agent(n)).collect();
    // One rollout changed one file on every host.
    fs::write(
        fleet.root.join("etc/hosts"),
        "127.0.0.1 localhost rollout\n",
    )
    .unwrap();
    for agent in &agents {
        let output = fleet.once(agent);
        assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    }
    let service = fleet.service();
    let drift = service.json(&format!("/drift?image_id={IMG}"));
    let groups = drift["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{drift}");
    let group = &groups[0];
    assert_eq!(group["path"], "/etc/hosts");
    assert_eq!(group["anomaly"], "modified");
    assert_eq!(group["hosts"], 20, "{group}");
    let fleet_view = service.json("/fleet");
    let counts = &fleet_view["images"][0]["hosts"];
    assert_eq!(counts["drifted"], 20, "{fleet_view}");

    // Accepted for the image: every host is clean at once.
    let (status, accept) = admin_json(
        &fleet.url(),
        "POST",
        "/accepts",
        Some(&json!({
            "image_id": IMG,
            "host_id": null,
            "path": group["path"],
            "anomaly": group["anomaly"],
            "current": group["current"],
            "comment": "the hosts rollout",
        })),
    );
    assert_eq!(status, 201, "{accept}");
    let counts = &service.json("/fleet")["images"][0]["hosts"];
    assert_eq!(counts["clean"], 20, "{counts}");
    assert_eq!(counts["drifted"], 0, "{counts}");
    // The hosts' next reports are clean too (the same change, still accepted).
    for agent in &agents[..3] {
        fleet.once(agent);
        assert_eq!(service.host(&agent.host).unwrap()["status"], "clean");
    }

    // A different change of the same file: drift again, wherever it is reported.
    fs::write(fleet.root.join("etc/hosts"), "127.0.0.1 localhost worm\n").unwrap();
    for agent in &agents[..5] {
        fleet.once(agent);
        let host = service.host(&agent.host).unwrap();
        assert_eq!(host["status"], "drifted", "{host}");
        assert_eq!(host["latest"]["anomalies"][0]["accepted"], Value::Null);
    }
    let counts = &service.json("/fleet")["images"][0]["hosts"];
    assert_eq!(counts["drifted"], 5, "{counts}");
    assert_eq!(counts["clean"], 15, "{counts}");
    let drift = service.json(&format!("/drift?image_id={IMG}"));
    let hosts: Vec<u64> = drift["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["hosts"].as_u64().unwrap())
        .collect();
    assert_eq!(hosts.iter().sum::<u64>(), 20, "{drift}");
    assert!(hosts.contains(&5) && hosts.contains(&15), "{drift}");
}

#[test]
fn a_report_tampered_with_in_a_spool_is_refused_and_never_stored() {
    let mut fleet = Fleet::new();
    let agent = fleet.agent(11);
    fleet.once(&agent);
    fleet.kill9();
    for _ in 0..3 {
        fleet.once(&agent);
    }
    assert_eq!(agent.spooled(), vec![2, 3, 4]);
    // Report 3 edited in the spool: it claims drift was clean (and its hostname).
    let path = agent.state.join("spool").join(format!("{:020}.json", 3));
    let text = fs::read_to_string(&path).unwrap();
    let mut value: Value = serde_json::from_str(&text).unwrap();
    value["hostname"] = json!("tampered");
    fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();

    fleet.restart();
    // Sent until refused, the refusal logged with the service's reason; the rest goes
    // with the next check at the latest.
    let output = fleet.once(&agent);
    assert!(stderr(&output).contains("403"), "{}", stderr(&output));
    fleet.once(&agent);
    assert!(agent.spooled().is_empty(), "{:?}", agent.spooled());
    let service = fleet.service();
    let host = service.host(&agent.host).unwrap();
    assert_eq!(host["last_seq"], 6, "{host}");
    assert_eq!(host["gaps"], json!([[3, 3]]), "{host}");
    assert_eq!(service.seqs(&agent.host), vec![6, 5, 4, 2, 1]);
    let (status, _, _) = service.get(&format!("/hosts/{}/reports/3", agent.host), READ_TOKEN);
    assert_eq!(status, 404, "the tampered report is not stored");
    let refused = wait_for(Duration::from_secs(5), "the refusal audited", || {
        service.audit().into_iter().find(|record| {
            record["event"] == "report_refused" && record.to_string().contains(&agent.host)
        })
    });
    assert_eq!(refused["data"]["seq"], 3, "{refused}");
    assert_eq!(refused["data"]["reason"], "bad_signature", "{refused}");
}
