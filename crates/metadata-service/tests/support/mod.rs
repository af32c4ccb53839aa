//! A real `metadata-service` process on 127.0.0.1 with a free port and a real sled
//! directory, and the HTTP clients the tests talk to it with.

#![allow(dead_code)]

pub mod fleet;
pub mod pg;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_metadata-service");

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub data: PathBuf,
    pub scheme: &'static str,
}

/// Starts the service with `--listen 127.0.0.1:0 --data DATA` and `args`, and waits
/// until it says where it listens.
pub fn start(data: &Path, args: &[&str]) -> Server {
    start_with(data, args, &[])
}

pub fn start_with(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(BIN);
    command
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args)
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
                    let _ = tx.send(addr);
                }
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => addr,
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
