//! A real `metadata-service` process on 127.0.0.1 with a free port and a real sled
//! directory, and the HTTP clients the tests talk to it with.
//!
//! One suite, two stores: with `BULLETPROOF_TEST_STORE=postgres` ([`STORE_ENV`]) every
//! service [`start_with`] starts keeps its store in a database of the test binary's
//! throwaway PostgreSQL cluster ([`pg::cluster`], started on first use) instead of sled
//! under `--data` (which still holds the rest: the audit log). `scripts/test` runs the
//! API suites both ways. A test that is about sled itself says so with [`sled_only`]
//! (or is listed in [`SLED_ONLY`]).

#![allow(dead_code)]

pub mod fleet;
pub mod pg;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_metadata-service");

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub data: PathBuf,
    pub scheme: &'static str,
}

/// The environment variable that picks the store of the services the tests start:
/// unset, empty or `sled` the embedded sled store under `--data`; `postgres` a database
/// of the throwaway cluster of [`pg`].
pub const STORE_ENV: &str = "BULLETPROOF_TEST_STORE";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

/// The store this run of the tests starts the services on ([`STORE_ENV`]).
pub fn backend() -> Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    *BACKEND.get_or_init(|| match std::env::var(STORE_ENV).as_deref() {
        Err(_) | Ok("") | Ok("sled") => Backend::Sled,
        Ok("postgres") => {
            note(&format!(
                "{STORE_ENV}=postgres: the services of {} keep their store in PostgreSQL \
                 (a throwaway cluster, one database per data directory)",
                suite()
            ));
            Backend::Postgres
        }
        Ok(other) => panic!("{STORE_ENV}={other:?}: expected `sled` or `postgres`"),
    })
}

pub fn on_postgres() -> bool {
    backend() == Backend::Postgres
}

/// For a test about sled itself (its files under `--data`, its recovery, its lock):
/// `if support::sled_only() { return; }` first thing. True, with a note on stderr
/// (never captured), on the PostgreSQL run; the same binary runs it on the sled run.
pub fn sled_only() -> bool {
    if !on_postgres() {
        return false;
    }
    note(&format!(
        "{}::{}: sled-only test: skipped on the postgres run (it is run on the sled run)",
        suite(),
        test_name()
    ));
    true
}

/// Tests about sled itself that do not call [`sled_only`] (yet): on the PostgreSQL run
/// [`start_with`] starts their services on sled all the same, and says so. `(suite,
/// test)`, `*` for every test of the suite.
pub const SLED_ONLY: &[(&str, &str)] = &[
    // Plants files in sled's `objects/` and expects them cleared or in `lost+found/`.
    (
        "operations",
        "leftovers_of_an_interrupted_write_are_cleared_at_start",
    ),
    // The refusal is sled's lock file `DATA/lock`; on PostgreSQL nothing locks `--data`,
    // so the second service (started without `--store`) would just run, and the test
    // wait for its exit for ever.
    (
        "operations",
        "a_second_service_on_the_same_data_directory_is_refused_with_the_first_ones_pid",
    ),
    // The whole suite is sled's recovery of a damaged store under `--data`.
    ("store_recovery", "*"),
];

/// The test binary's suite: `api` for `target/debug/deps/api-0123abcd`.
pub fn suite() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let name = exe.file_name().and_then(|name| name.to_str()).unwrap_or("");
    match name.rsplit_once('-') {
        Some((suite, _hash)) => suite.to_owned(),
        None => name.to_owned(),
    }
}

/// The running test's name (libtest runs each test on a thread named after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unknown")
        .to_owned()
}

/// A line on the real stderr, past libtest's capture: it shows in every run's log.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Whether the running test is in [`SLED_ONLY`].
fn listed_sled_only() -> bool {
    let (suite, test) = (suite(), test_name());
    let test = test.rsplit("::").next().unwrap_or("");
    SLED_ONLY
        .iter()
        .any(|(s, t)| *s == suite && (*t == "*" || *t == test))
}

/// The PostgreSQL URL of the store of data directory `data`: a new database on the
/// first start on `data`, the same one on every restart on it (so a restart, after
/// kill -9 too, finds the state of the one before as on sled).
pub fn postgres_store(data: &Path) -> String {
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let key = std::path::absolute(data).unwrap_or_else(|_| data.to_owned());
    let mut databases = DATABASES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if let Some(url) = databases.get(&key) {
        return url.clone();
    }
    let test = test_name();
    let url = pg::cluster().database(test.rsplit("::").next().unwrap_or(""));
    databases.insert(key, url.clone());
    url
}

/// Starts the service with `--listen 127.0.0.1:0 --data DATA` and `args`, and waits
/// until it says where it listens.
pub fn start(data: &Path, args: &[&str]) -> Server {
    start_with(data, args, &[])
}

/// [`start`] with `env` added to its environment. On the PostgreSQL run
/// ([`STORE_ENV`]) also `--store URL` ([`postgres_store`]), unless `args` or `env`
/// name a store already or the test is in [`SLED_ONLY`].
pub fn start_with(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(BIN);
    command
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args);
    let own_store = args
        .iter()
        .any(|arg| *arg == "--store" || arg.starts_with("--store="))
        || env.iter().any(|(key, _)| *key == "METADATA_STORE");
    let mut on_pg = false;
    if on_postgres() && !own_store {
        if listed_sled_only() {
            // Once per test (a test may start and restart its service).
            static NOTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
            let test = test_name();
            let mut noted = NOTED.lock().unwrap_or_else(|poison| poison.into_inner());
            if !noted.contains(&test) {
                note(&format!(
                    "{}::{test}: sled-only test: its service runs on sled on the postgres run \
                     too (see support::SLED_ONLY)",
                    suite()
                ));
                noted.push(test);
            }
        } else {
            command.arg("--store").arg(postgres_store(data));
            on_pg = true;
        }
    }
    command
        .env_remove("METADATA_STORE")
        .env_remove("METADATA_TOKENS")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start metadata-service");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = listen_addr(&line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send((addr, line.clone()));
                }
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok((addr, line)) => {
            // Text logs say `store="postgres"`, JSON logs `"store":"postgres"`.
            if on_pg
                && !line.contains("store=\"postgres\"")
                && !line.contains("\"store\":\"postgres\"")
            {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{STORE_ENV}=postgres, but the service does not say it runs on \
                     PostgreSQL: {line}"
                );
            }
            addr
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "service did not start; log:\n{}",
                log.lock().unwrap().as_str()
            );
        }
    };
    let scheme = if args.contains(&"--tls-cert") {
        "https"
    } else {
        "http"
    };
    Server {
        child,
        addr,
        log,
        data: data.to_owned(),
        scheme,
    }
}

fn listen_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    // Text logs say `listen=ADDR`, JSON logs `"listen":"ADDR"`.
    let start = line
        .find("listen=")
        .map(|at| at + "listen=".len())
        .or_else(|| {
            line.find("\"listen\":\"")
                .map(|at| at + "\"listen\":\"".len())
        })?;
    let rest = &line[start..];
    let end = rest.find([' ', '"', ',']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "service did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that reports every status instead of failing on 4xx/5xx, and does
/// not decompress (the tests check the stored forms byte for byte).
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // No automatic Accept-Encoding (nor decoding): the tests check stored forms.
        .accept_encoding(ureq::config::AutoHeaderValue::None)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn reply(mut response: ureq::http::Response<ureq::Body>) -> Reply {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(key, value)| {
            (
                key.as_str().to_owned(),
                value.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().get(server.url(path));
    for (key, value) in headers {
        request = request.header(*key, *value);
    }
    reply(request.call().expect("GET"))
}

pub fn post(server: &Server, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut request = client().post(server.url(path));
    for (key, value) in headers {
        request = request.header(*key, *value);
    }
    reply(request.send(body).expect("POST"))
}

pub fn put(server: &Server, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut request = client().put(server.url(path));
    for (key, value) in headers {
        request = request.header(*key, *value);
    }
    reply(request.send(body).expect("PUT"))
}

/// Sends raw bytes and returns the status code of the answer (0 if the connection was
/// closed without one).
pub fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A valid baseline of `entries` regular files.
pub fn baseline(image_id: &str, entries: usize) -> Vec<u8> {
    let mut doc = format!(
        "{{\"image_id\":\"{image_id}\",\"timestamp\":\"2026-11-23T07:31:43Z\",\"entries\":[\n"
    );
    for i in 0..entries {
        if i > 0 {
            doc.push_str(",\n");
        }
        doc.push_str(&format!(
            "{{\"path\":\"/usr/lib/file-{i:08}\",\"sha256\":\"{:064x}\",\"mode\":420,\"uid\":0,\"gid\":0,\"kind\":\"file\",\"size\":{i}}}",
            i
        ));
    }
    doc.push_str("\n]}\n");
    doc.into_bytes()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    integrity_common::Sha256Digest::of(bytes).to_hex()
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}
