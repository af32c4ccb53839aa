//! The agent under a hostile cache or a hostile service (issue 16, item 6), against the
//! real binary on loopback:
//!
//! * a cached baseline edited to bless a backdoored file is caught on the `304` path
//!   (it no longer hashes to its `ETag`), discarded and fetched again, and never used
//!   as a fallback either;
//! * answers built to exhaust memory — a gzip bomb, an endless or oversized plain body,
//!   an endless signature — are refused as soon as `--max-baseline-bytes` (or the
//!   signature's limit) is passed, without a retry, and the agent's peak RSS stays
//!   small;
//! * a body not matching its `ETag`, and a `304` naming another digest than the cache.

mod support;

use metadata_service::config::Config;
use metadata_service::Background;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");

/// Peak RSS allowed to an agent fed a hostile answer (it needs ~10 MB of its own).
const RSS_LIMIT_KB: u64 = 100 * 1024;

/// The `--max-baseline-bytes` of the memory tests: 8 MiB.
const SMALL_LIMIT: u64 = 8 << 20;

/// A small tree; `usr/bin/tool` is the file the attacker backdoors.
fn golden(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["etc", "usr/bin", "srv"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    root
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(AGENT);
    command
        .args(args)
        .env_remove("IMAGE_ID")
        .env("NO_COLOR", "1");
    // No reports: the hostile service counts requests (fleet_agent.rs tests reports).
    if !args.contains(&"--no-report") {
        command.arg("--no-report");
    }
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// (anomaly, path) of every anomaly line of a JSON report.
fn anomalies(output: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line.get("anomaly").is_some())
        .map(|line| {
            (
                line["anomaly"].as_str().unwrap().to_owned(),
                line["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Runs the agent to its end and measures its peak RSS in KiB: by `/usr/bin/time`
/// (`wait4`'s exact figure) when present, else by polling `VmHWM`.
fn run_measured(args: &[&str]) -> (Output, u64) {
    let time = Path::new("/usr/bin/time");
    if time.exists() {
        let report = tempfile::NamedTempFile::new().unwrap();
        let output = Command::new(time)
            .args(["-f", "%M", "-o"])
            .arg(report.path())
            .arg(AGENT)
            .args(args)
            .env_remove("IMAGE_ID")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let text = fs::read_to_string(report.path()).unwrap();
        let kb = text
            .lines()
            .filter_map(|line| line.trim().parse::<u64>().ok())
            .next_back()
            .unwrap_or_else(|| panic!("no RSS in {text:?}"));
        return (output, kb);
    }
    let mut child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).unwrap();
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).unwrap();
        buf
    });
    let mut peak = 0;
    let status = loop {
        if let Ok(text) = fs::read_to_string(&status_file) {
            if let Some(kb) = text
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (output, peak)
}

/// A gzip stream of 1 GiB + 1 MiB of zeros (about 1 MB), made once and kept under the
/// target directory.
fn gzip_bomb() -> Vec<u8> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-gzip-bomb-1GiB.gz");
    if let Ok(bytes) = fs::read(&path) {
        return bytes;
    }
    let bomb = integrity_client::fuzzing::gzip_of_zeros((1 << 30) + (1 << 20));
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&temp, &bomb).unwrap();
    fs::rename(&temp, &path).unwrap();
    bomb
}

// ---------------------------------------------------------------------------------
// A tampered cache against the real service.

/// Replaces `old` (once, exactly) with `new` in `bytes`.
fn replace_once(bytes: &[u8], old: &str, new: &str) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert_eq!(text.matches(old).count(), 1, "{old} not unique");
    text.replace(old, new).into_bytes()
}

#[test]
fn a_tampered_cache_is_caught_on_the_304_path_refetched_and_never_used_offline() {
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let genuine = support::baseline(&root, "img-cache");
    let server = Background::start(Config::new("127.0.0.1:0", dir.path().join("store"))).unwrap();
    let client = integrity_client::Client::new(&integrity_client::ClientConfig::new(
        format!("http://{}", server.addr),
        "test",
    ))
    .unwrap();
    client
        .upload_baseline("img-cache", &genuine, None, &mut |_, _, _| {})
        .unwrap();
    let cache = dir.path().join("cache");
    let (body, tag) = (cache.join("img-cache.json"), cache.join("img-cache.etag"));
    let url = format!("http://{}", server.addr);
    let args = [
        "--root",
        root.to_str().unwrap(),
        "--server",
        &url,
        "--image-id",
        "img-cache",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--format",
        "json",
        "--fetch-attempts",
        "1",
    ];
    let run = || command(&args).output().unwrap();

    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(fs::read(&body).unwrap(), genuine);
    let second = run();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("not modified since the cached copy"),
        "the second run must revalidate (304)"
    );

    // The attack: backdoor the file (same size) and bless it in the cached baseline.
    let tool = root.join("usr/bin/tool");
    let old_sha = integrity_common::Sha256Digest::of(&fs::read(&tool).unwrap()).to_hex();
    let backdoor = "#!/bin/sh\nnc -le sh\n";
    fs::write(&tool, backdoor).unwrap();
    let new_sha = integrity_common::Sha256Digest::of(backdoor.as_bytes()).to_hex();
    let tampered = replace_once(&genuine, &old_sha, &new_sha);
    // Still a valid baseline, and one the backdoored tree matches exactly: used, it
    // would report the machine clean.
    integrity_common::Baseline::from_json_slice(&tampered).unwrap();
    let tampered_file = dir.path().join("tampered.json");
    fs::write(&tampered_file, &tampered).unwrap();
    let blessed = command(&[
        "--root",
        root.to_str().unwrap(),
        "--baseline",
        tampered_file.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(blessed.status.code(), Some(0), "{}", stderr(&blessed));

    // The service answers 304 to the cached tag; the agent must see that the cached
    // body is not the one the tag names, fetch it whole and report the backdoor.
    fs::write(&body, &tampered).unwrap();
    let caught = run();
    assert_eq!(caught.status.code(), Some(4), "{}", stderr(&caught));
    assert_eq!(
        anomalies(&caught),
        [("modified".to_owned(), "/usr/bin/tool".to_owned())]
    );
    let warning = stderr(&caught);
    assert!(
        warning.contains("does not match its ETag") && warning.contains("discarding"),
        "{warning}"
    );
    assert_eq!(fs::read(&body).unwrap(), genuine, "the cache is repaired");

    // The tag forged to match the tampered body: the service does not know that tag,
    // answers 200 with the genuine baseline.
    fs::write(&body, &tampered).unwrap();
    let forged = integrity_client::identity_etag(&integrity_common::Sha256Digest::of(&tampered));
    fs::write(&tag, &forged).unwrap();
    let forged_run = run();
    assert_eq!(forged_run.status.code(), Some(4), "{}", stderr(&forged_run));
    assert_eq!(fs::read(&body).unwrap(), genuine);

    // Offline: an intact cache is used (and finds the backdoor) ...
    server.stop().unwrap();
    let offline = run();
    assert_eq!(offline.status.code(), Some(4), "{}", stderr(&offline));
    assert!(String::from_utf8_lossy(&offline.stdout).contains("\"cache\""));
    // ... a tampered one is not: no baseline, an error, never "clean".
    fs::write(&body, &tampered).unwrap();
    let refused = run();
    assert_eq!(refused.status.code(), Some(15), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("cached copy was discarded"),
        "{}",
        stderr(&refused)
    );
    assert!(!body.exists(), "the tampered copy is deleted");
    // A body whose tag is gone cannot be checked: not used either.
    fs::write(&body, &genuine).unwrap();
    let untagged = run();
    assert_eq!(untagged.status.code(), Some(15), "{}", stderr(&untagged));
    assert!(
        stderr(&untagged).contains("no ETag"),
        "{}",
        stderr(&untagged)
    );
}

// ---------------------------------------------------------------------------------
// A hostile HTTP server.

/// One request as the hostile server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    if_none_match: Option<String>,
}

/// What the hostile server answers: the head (status line and headers, without the
/// blank line) and the body, written in pieces until the agent hangs up.
struct Reply {
    head: String,
    body: Box<dyn FnOnce(&mut TcpStream) + Send>,
}

fn reply(head: &str, body: Vec<u8>) -> Reply {
    let head = format!("{head}\r\nContent-Length: {}", body.len());
    Reply {
        head,
        body: Box::new(move |stream| {
            let _ = stream.write_all(&body);
        }),
    }
}

/// `total` bytes of `byte`, close-delimited (no length), in 64 KiB writes.
fn endless(head: &str, byte: u8, total: u64) -> Reply {
    Reply {
        head: format!("{head}\r\nConnection: close"),
        body: Box::new(move |stream| {
            let chunk = vec![byte; 64 * 1024];
            let mut sent = 0;
            while sent < total {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
                sent += chunk.len() as u64;
            }
        }),
    }
}

type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

struct Hostile {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Hostile {
    /// Serves every connection (one request each) with `script(n, request)`, `n`
    /// counting requests from 0.
    fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let script: Arc<Script> = Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (log, script) = (log.clone(), script.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    let mut seen = Seen {
                        path: request_line
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or("")
                            .to_owned(),
                        if_none_match: None,
                    };
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line.trim().is_empty() => break,
                            Ok(_) => {
                                if let Some((name, value)) = line.split_once(':') {
                                    if name.eq_ignore_ascii_case("if-none-match") {
                                        seen.if_none_match = Some(value.trim().to_owned());
                                    }
                                }
                            }
                        }
                    }
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(seen.clone());
                        log.len() - 1
                    };
                    let answer = script(n, &seen);
                    if stream
                        .write_all(format!("{}\r\n\r\n", answer.head).as_bytes())
                        .is_ok()
                    {
                        (answer.body)(&mut stream);
                    }
                    let _ = stream.flush();
                });
            }
        });
        Hostile { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The agent against `server` with the small limit; three attempts allowed, so a
/// retry would show in the server's log.
fn agent_args<'a>(root: &'a Path, cache: &'a Path, url: &'a str, limit: &'a str) -> Vec<&'a str> {
    vec![
        "--root",
        root.to_str().unwrap(),
        "--server",
        url,
        "--image-id",
        "img-x",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--fetch-attempts",
        "3",
        "--max-baseline-bytes",
        limit,
        // No reports: the server's log must show the fetch alone.
        "--no-report",
    ]
}

fn assert_refused_small(name: &str, output: &Output, rss_kb: u64, server: &Hostile) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(16), "{name}: {text}");
    assert!(
        text.contains("larger than the limit of 8388608 bytes")
            && text.contains("--max-baseline-bytes"),
        "{name}: {text}"
    );
    assert!(
        rss_kb < RSS_LIMIT_KB,
        "{name}: peak RSS {rss_kb} KiB (limit {RSS_LIMIT_KB})"
    );
    assert_eq!(server.seen().len(), 1, "{name}: refused, never retried");
}

#[test]
fn a_gzip_bomb_is_refused_at_the_limit_with_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let cache = dir.path().join("cache");
    let bomb = Arc::new(gzip_bomb());
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let sent = bomb.clone();
    let server = Hostile::start(move |_, _| {
        let body = (*sent).clone();
        reply(
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: application/json",
            body,
        )
    });
    let url = server.url();
    let limit = SMALL_LIMIT.to_string();
    let started = Instant::now();
    let (output, rss_kb) = run_measured(&agent_args(&root, &cache, &url, &limit));
    assert_refused_small("gzip bomb", &output, rss_kb, &server);
    assert!(
        stderr(&output).contains("once decompressed"),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!cache.join("img-x.json").exists());
    eprintln!("gzip bomb: refused with a peak RSS of {rss_kb} KiB");
}

#[test]
fn a_plain_body_over_the_limit_is_refused_with_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let cache = dir.path().join("cache");
    let limit = SMALL_LIMIT.to_string();

    // No length announced: 1 GiB streamed until the agent hangs up.
    let endless_server = Hostile::start(|_, _| endless("HTTP/1.1 200 OK", b' ', 1 << 30));
    let url = endless_server.url();
    let (output, rss_kb) = run_measured(&agent_args(&root, &cache, &url, &limit));
    assert_refused_small("endless plain body", &output, rss_kb, &endless_server);

    // A length over the limit: refused before the body is read.
    let announced = Hostile::start(|_, _| {
        let mut answer = endless("HTTP/1.1 200 OK", b' ', 1 << 30);
        answer.head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}", 1u64 << 30);
        answer
    });
    let url = announced.url();
    let (output, rss_kb) = run_measured(&agent_args(&root, &cache, &url, &limit));
    assert_refused_small("announced plain body", &output, rss_kb, &announced);
    assert!(
        stderr(&output).contains("Content-Length"),
        "{}",
        stderr(&output)
    );

    // Exactly at the limit is accepted by the reader (and then refused as JSON).
    let exact = Hostile::start(|_, _| reply("HTTP/1.1 200 OK", vec![b' '; 1000]));
    let url = exact.url();
    let output = command(&agent_args(&root, &cache, &url, "1000"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(16), "{}", stderr(&output));
    assert!(
        !stderr(&output).contains("larger than"),
        "{}",
        stderr(&output)
    );
}

/// A valid baseline of `root` for image `img-x` and its identity `ETag`.
fn valid_answer(root: &Path) -> (Vec<u8>, String) {
    let bytes = support::baseline(root, "img-x");
    let tag = integrity_client::identity_etag(&integrity_common::Sha256Digest::of(&bytes));
    (bytes, tag)
}

#[test]
fn an_endless_signature_is_refused_with_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let cache = dir.path().join("cache");
    let (sk, pk) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    let (bytes, tag) = valid_answer(&root);
    let server = Hostile::start(move |_, seen| {
        if seen.path.ends_with("/signature") {
            endless("HTTP/1.1 200 OK", b'A', 1 << 30)
        } else {
            reply(&format!("HTTP/1.1 200 OK\r\nETag: {tag}"), bytes.clone())
        }
    });
    let url = server.url();
    let limit = SMALL_LIMIT.to_string();
    let mut args = agent_args(&root, &cache, &url, &limit);
    args.extend(["--public-key", pk.to_str().unwrap()]);
    let (output, rss_kb) = run_measured(&args);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(17), "{text}");
    assert!(
        text.contains("signature") && text.contains("8192 bytes"),
        "{text}"
    );
    assert!(rss_kb < RSS_LIMIT_KB, "peak RSS {rss_kb} KiB");
    let paths: Vec<_> = server.seen().into_iter().map(|seen| seen.path).collect();
    assert_eq!(paths, ["/baselines/img-x", "/baselines/img-x/signature"]);
    assert!(!cache.join("img-x.json").exists());
}

#[test]
fn a_body_not_matching_its_etag_is_refused_without_retry() {
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let cache = dir.path().join("cache");
    let (bytes, _) = valid_answer(&root);
    let other = integrity_client::identity_etag(&integrity_common::Sha256Digest::of(b"other"));
    let server = Hostile::start(move |_, _| {
        reply(&format!("HTTP/1.1 200 OK\r\nETag: {other}"), bytes.clone())
    });
    let url = server.url();
    let output = command(&agent_args(&root, &cache, &url, "1000000"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(16), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("does not match its ETag"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.seen().len(), 1);
    assert!(!cache.join("img-x.json").exists());
}

#[test]
fn a_304_naming_another_digest_than_the_cache_means_a_fetch_without_tag() {
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let cache = dir.path().join("cache");
    let (bytes, tag) = valid_answer(&root);
    let other = integrity_client::identity_etag(&integrity_common::Sha256Digest::of(b"other"));
    let server = Hostile::start(move |n, _| match n {
        // First run: fetched and cached. Second run: a 304 naming another digest,
        // then (fetched again without a tag) the body.
        1 => reply(
            &format!("HTTP/1.1 304 Not Modified\r\nETag: {other}"),
            Vec::new(),
        ),
        _ => reply(&format!("HTTP/1.1 200 OK\r\nETag: {tag}"), bytes.clone()),
    });
    let url = server.url();
    let args = agent_args(&root, &cache, &url, "1000000");
    let first = command(&args).output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let second = command(&args).output().unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("discarding"),
        "{}",
        stderr(&second)
    );
    let tags: Vec<_> = server
        .seen()
        .into_iter()
        .map(|seen| seen.if_none_match)
        .collect();
    let cached_tag = fs::read_to_string(cache.join("img-x.etag")).unwrap();
    assert_eq!(tags, [None, Some(cached_tag), None]);
}

#[test]
fn help_names_the_limit_and_its_default() {
    let help = command(&["--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--max-baseline-bytes") && text.contains("536870912"),
        "{text}"
    );
}
