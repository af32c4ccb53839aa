//! The agent binary end to end: planted drift of every kind on a real tree, the fetch
//! and cache behaviour against a real metadata service (in-process, real sled
//! directory), bad input, and continuous mode.

use metadata_service::config::Config;
use metadata_service::Background;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");

fn require_root() {
    let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").unwrap());
    assert_eq!(
        uid, 0,
        "these tests need root (chown); run scripts/test as root"
    );
}

/// A small golden tree.
fn golden(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["etc/ssh", "usr/bin", "usr/lib", "var/log", "tmp", "srv"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("usr/lib/libx.so"), vec![7u8; 10_000]).unwrap();
    fs::write(root.join("usr/lib/old.conf"), "old\n").unwrap();
    fs::write(root.join("usr/lib/plain"), "plain\n").unwrap();
    symlink("libx.so", root.join("usr/lib/libx.so.1")).unwrap();
    fs::write(root.join("var/log/syslog"), "log\n").unwrap();
    fs::write(root.join("tmp/scratch"), "tmp\n").unwrap();
    root
}

/// The baseline of `root`, made with the engine (the collector's own code path).
fn collect(root: &Path, image_id: &str, out: &Path) {
    let scanned = integrity_common::scan(
        &integrity_common::ScanOptions {
            root: root.to_owned(),
            exclusions: integrity_common::Exclusions::defaults(),
            cross_filesystems: false,
            policy: None,
        },
        &integrity_common::ScanProgress::default(),
    )
    .unwrap();
    let baseline = integrity_common::Baseline {
        image_id: image_id.to_owned(),
        timestamp: "2026-11-23T07:31:43Z".to_owned(),
        entries: scanned.entries,
        errors: scanned.errors,
        policy: None,
    };
    fs::write(out, baseline.to_json_bytes()).unwrap();
}

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(AGENT);
    // Reports to the service are fleet_agent.rs's subject.
    command
        .args(args)
        .arg("--no-report")
        .env_remove("IMAGE_ID")
        .env("NO_COLOR", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

type Found = (String, String, Vec<String>);

/// (anomaly, path, changed) of every anomaly line, sorted.
fn anomalies(output: &Output) -> Vec<Found> {
    let mut found: Vec<Found> = lines(output)
        .into_iter()
        .filter(|line| line.get("anomaly").is_some())
        .map(|line| {
            (
                line["anomaly"].as_str().unwrap().to_owned(),
                line["path"].as_str().unwrap().to_owned(),
                line["changed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|field| field.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    found.sort();
    found
}

fn owned(kind: &str, path: &str, changed: &[&str]) -> Found {
    (
        kind.into(),
        path.into(),
        changed.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn every_kind_of_planted_change_is_reported_exactly() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, "img", &baseline);
    let args = [
        "--root",
        root.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
        "--format",
        "json",
    ];

    let clean = agent(&args, &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert!(
        anomalies(&clean).is_empty(),
        "false positives on an unchanged tree"
    );

    // Content changed, size and mtime kept.
    let passwd = root.join("etc/passwd");
    let mtime = fs::metadata(&passwd).unwrap().modified().unwrap();
    fs::write(&passwd, "toor:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&passwd)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // Setuid added.
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    // Owner changed.
    std::os::unix::fs::chown(root.join("etc/hosts"), Some(1000), None).unwrap();
    // Added, deleted.
    fs::write(root.join("srv/backdoor"), "nc -l\n").unwrap();
    fs::remove_file(root.join("usr/lib/old.conf")).unwrap();
    // File replaced by a symlink.
    fs::remove_file(root.join("usr/lib/plain")).unwrap();
    symlink("/etc/shadow", root.join("usr/lib/plain")).unwrap();
    // Symlink retargeted.
    fs::remove_file(root.join("usr/lib/libx.so.1")).unwrap();
    symlink("/tmp/evil.so", root.join("usr/lib/libx.so.1")).unwrap();
    // Directory mode changed.
    fs::set_permissions(root.join("etc/ssh"), fs::Permissions::from_mode(0o777)).unwrap();
    // Changes under excluded directories are not drift.
    fs::write(root.join("var/log/syslog"), "rotated\n").unwrap();
    fs::write(root.join("tmp/new"), "x\n").unwrap();
    fs::remove_file(root.join("tmp/scratch")).unwrap();

    let drift = agent(&args, &[]);
    let expected = vec![
        owned("added", "/srv/backdoor", &[]),
        owned("deleted", "/usr/lib/old.conf", &[]),
        owned("metadata_changed", "/etc/hosts", &["uid"]),
        owned("metadata_changed", "/etc/ssh", &["mode"]),
        owned("metadata_changed", "/usr/bin/tool", &["mode"]),
        owned("modified", "/etc/passwd", &["sha256"]),
        owned("modified", "/usr/lib/libx.so.1", &["sha256", "target"]),
        owned("type_changed", "/usr/lib/plain", &["kind"]),
    ];
    assert_eq!(
        anomalies(&drift),
        expected,
        "{}",
        String::from_utf8_lossy(&drift.stdout)
    );
    assert_eq!(drift.status.code(), Some(1 | 2 | 4));
    let last = lines(&drift).pop().unwrap();
    let summary = &last["summary"];
    assert_eq!(summary["added"], 1);
    assert_eq!(summary["deleted"], 1);
    assert_eq!(summary["modified"], 2);
    assert_eq!(summary["metadata_changed"], 3);
    assert_eq!(summary["type_changed"], 1);
    assert_eq!(summary["errors"], 0);
    let stdout = String::from_utf8_lossy(&drift.stdout).into_owned();
    assert!(stdout
        .lines()
        .last()
        .unwrap()
        .starts_with("{\"summary\":{\"added\":1,\"deleted\":1,\"modified\":2,"));
    // Old and new values are in each line.
    let setuid = lines(&drift)
        .into_iter()
        .find(|line| line["path"] == "/usr/bin/tool")
        .unwrap();
    assert_eq!(setuid["baseline"]["mode"], 0o755);
    assert_eq!(setuid["current"]["mode"], 0o4755);

    // The text report: grouped, old → new, a summary line, no colour off a terminal.
    let text = agent(&args[..4], &[]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("modified (2)"), "{out}");
    assert!(out.contains("\"/usr/bin/tool\"  mode 0755 → 4755"), "{out}");
    assert!(out.contains("\"/etc/hosts\"  uid 0 → 1000"), "{out}");
    assert!(
        out.contains("target \"libx.so\" → \"/tmp/evil.so\""),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap().starts_with(
            "summary: 1 added, 1 deleted, 2 modified, 3 metadata changed, 1 type changed"
        ),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "colour off a terminal");
    assert_eq!(text.status.code(), Some(1 | 2 | 4));
}

#[test]
fn a_seed_format_baseline_works() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let hash = |path: &str| {
        integrity_common::Sha256Digest::of(&fs::read(root.join(path)).unwrap()).to_hex()
    };
    let doc = format!(
        r#"{{"image_id":"seed","timestamp":"2026-11-23T07:31:43Z","entries":[
{{"path":"/etc/hosts","sha256":"{}","mode":420,"uid":0,"gid":0}},
{{"path":"/etc/passwd","sha256":"{}","mode":420,"uid":0,"gid":0}}
]}}"#,
        hash("etc/hosts"),
        hash("etc/passwd")
    );
    let baseline = dir.path().join("seed.json");
    fs::write(&baseline, doc).unwrap();
    let output = agent(
        &[
            "--root",
            root.to_str().unwrap(),
            "--baseline",
            baseline.to_str().unwrap(),
            "--format",
            "json",
            "--image-id",
            "seed",
        ],
        &[],
    );
    // Every other regular file is new to a baseline that lists two; directories and
    // links are not compared against a files-only baseline.
    let found = anomalies(&output);
    assert!(
        found.iter().all(|(kind, _, _)| kind == "added"),
        "{found:?}"
    );
    assert!(found.iter().any(|(_, path, _)| path == "/usr/bin/tool"));
    assert!(
        !found
            .iter()
            .any(|(_, path, _)| path == "/etc" || path == "/usr/lib/libx.so.1"),
        "{found:?}"
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn bad_baselines_and_roots_get_clear_errors_and_exit_codes() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, "img", &baseline);
    let root_arg = root.to_str().unwrap();
    let base_arg = baseline.to_str().unwrap();

    let other = agent(
        &[
            "--root",
            root_arg,
            "--baseline",
            base_arg,
            "--image-id",
            "other",
        ],
        &[],
    );
    assert_eq!(other.status.code(), Some(16), "{}", stderr(&other));
    assert!(
        stderr(&other).contains("\"img\"") && stderr(&other).contains("\"other\""),
        "{}",
        stderr(&other)
    );

    let truncated = dir.path().join("truncated.json");
    let bytes = fs::read(&baseline).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let output = agent(
        &[
            "--root",
            root_arg,
            "--baseline",
            truncated.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(16), "{}", stderr(&output));

    let missing = agent(
        &["--root", root_arg, "--baseline", "/nonexistent.json"],
        &[],
    );
    assert_eq!(missing.status.code(), Some(15));

    let no_root = agent(
        &["--root", "/nonexistent-root", "--baseline", base_arg],
        &[],
    );
    assert_eq!(no_root.status.code(), Some(18), "{}", stderr(&no_root));
    assert!(stderr(&no_root).contains("nonexistent-root"));

    assert_eq!(agent(&["--root", root_arg], &[]).status.code(), Some(14));
    let no_id = agent(&["--server", "http://127.0.0.1:1"], &[]);
    assert_eq!(
        no_id.status.code(),
        Some(14),
        "--server without an image id"
    );
    let help = agent(&["--help"], &[]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(
        help.contains("IMAGE_ID")
            && help.contains("4  entries changed: content, type, or metadata")
            && !help.contains("   8  "),
        "{help}"
    );
}

fn upload(server: &Background, bytes: &[u8]) {
    let client = integrity_client::Client::new(&integrity_client::ClientConfig::new(
        format!("http://{}", server.addr),
        "test",
    ))
    .unwrap();
    let doc = integrity_common::Baseline::from_json_slice(bytes).unwrap();
    client
        .upload_baseline(&doc.image_id, bytes, None, &mut |_, _, _| {})
        .unwrap();
}

#[test]
fn fetches_caches_revalidates_and_falls_back_to_the_cache() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, "img-net", &baseline);
    let server = Background::start(Config::new("127.0.0.1:0", dir.path().join("store"))).unwrap();
    upload(&server, &fs::read(&baseline).unwrap());
    let cache = dir.path().join("cache");
    let url = format!("http://{}", server.addr);
    let run = |image_id: &str| {
        agent(
            &[
                "--root",
                root.to_str().unwrap(),
                "--server",
                &url,
                "--cache-dir",
                cache.to_str().unwrap(),
                "--format",
                "json",
                "--fetch-attempts",
                "2",
            ],
            &[("IMAGE_ID", image_id)],
        )
    };
    let last = |output: &Output| lines(output).pop().unwrap();

    let first = run("img-net");
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(last(&first)["baseline"]["source"], "service");
    assert_eq!(
        fs::read(cache.join("img-net.json")).unwrap(),
        fs::read(&baseline).unwrap()
    );
    assert!(fs::read_to_string(cache.join("img-net.etag"))
        .unwrap()
        .starts_with('"'));

    // Revalidation: 304, the cached copy is used.
    let second = run("img-net");
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(
        last(&second)["baseline"]["note"],
        "not modified since the cached copy"
    );

    // A corrupt cached copy is discarded and fetched again.
    fs::write(
        cache.join("img-net.json"),
        b"{\"image_id\":\"img-net\",\"entr",
    )
    .unwrap();
    let refetched = run("img-net");
    assert_eq!(refetched.status.code(), Some(0), "{}", stderr(&refetched));
    assert!(
        stderr(&refetched).contains("discarding"),
        "{}",
        stderr(&refetched)
    );
    assert_eq!(
        fs::read(cache.join("img-net.json")).unwrap(),
        fs::read(&baseline).unwrap()
    );

    // A 404 is an error.
    let unknown = run("img-unknown");
    assert_eq!(unknown.status.code(), Some(15));
    assert!(stderr(&unknown).contains("404"), "{}", stderr(&unknown));

    // The service goes away: the cached baseline is used and the report says so.
    server.stop().unwrap();
    fs::write(root.join("srv/new"), "x").unwrap();
    let offline = run("img-net");
    assert_eq!(offline.status.code(), Some(1), "{}", stderr(&offline));
    assert_eq!(last(&offline)["baseline"]["source"], "cache");
    assert!(stderr(&offline).contains("cached"), "{}", stderr(&offline));
    // ... and with nothing cached, a clear error.
    fs::remove_dir_all(&cache).unwrap();
    let nothing = run("img-net");
    assert_eq!(nothing.status.code(), Some(15));
    assert!(
        stderr(&nothing).contains("none is cached"),
        "{}",
        stderr(&nothing)
    );
}

#[test]
fn continuous_mode_survives_failed_checks_and_stops_on_sigterm() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    // Nothing listens here: every check fails, the agent keeps going.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(AGENT)
        .args([
            "--root",
            root.to_str().unwrap(),
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--image-id",
            "img",
            "--interval",
            "1",
            "--fetch-attempts",
            "1",
            "--no-report",
            "--cache-dir",
        ])
        .arg(dir.path().join("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2600));
    let pid = child.id().to_string();
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "died on a failed check"
    );
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(output.status.code(), Some(0));
    let log = stderr(&output);
    assert!(
        log.contains("check 1 failed") && log.contains("check 2 failed"),
        "{log}"
    );
    assert!(log.contains("stopping after"), "{log}");
}

#[test]
fn syslog_messages_reach_a_real_rsyslog_with_facility_and_severity() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, "img-log", &baseline);
    let socket = dir.path().join("log.sock");
    let out = dir.path().join("out.log");
    let conf = dir.path().join("rsyslog.conf");
    fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Name="{socket}")
template(name="t" type="string" string="%syslogfacility-text%.%syslogseverity-text% %programname%%msg:::sp-if-no-1st-sp%%msg%\n")
*.* action(type="omfile" file="{out}" template="t")
"#,
            dir = dir.path().display(),
            socket = socket.display(),
            out = out.display()
        ),
    )
    .unwrap();
    // Killed and reaped when dropped, also when an assertion fails.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let rsyslogd = Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.path().join("rsyslogd.pid"))
        .spawn()
        .expect("rsyslogd (Debian package rsyslog; scripts/test installs it)");
    let rsyslogd = Killed(rsyslogd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::write(root.join("etc/passwd"), "changed\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::write(root.join("srv/new"), "x").unwrap();
    fs::remove_file(root.join("usr/lib/old.conf")).unwrap();
    let output = agent(
        &[
            "--root",
            root.to_str().unwrap(),
            "--baseline",
            baseline.to_str().unwrap(),
            "--syslog",
            "--syslog-socket",
            socket.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1 | 2 | 4), "{}", stderr(&output));
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = fs::read_to_string(&out).unwrap_or_default();
        if log.contains(" summary ") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A refused baseline (a key pinned, no signature) is a critical security message.
    let (sk, pk) = (dir.path().join("c.key"), dir.path().join("c.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    let refused = agent(
        &[
            "--root",
            root.to_str().unwrap(),
            "--baseline",
            baseline.to_str().unwrap(),
            "--public-key",
            pk.to_str().unwrap(),
            "--syslog",
            "--syslog-socket",
            socket.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(17), "{}", stderr(&refused));
    let deadline = Instant::now() + Duration::from_secs(10);
    let security = loop {
        let log = fs::read_to_string(&out).unwrap_or_default();
        if let Some(line) = log.lines().find(|line| line.contains(" security ")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no security message in\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        security.starts_with(
            "authpriv.crit integrity-agent security image=- SECURITY: baseline refused"
        ),
        "{security}"
    );
    drop(rsyslogd);
    let line = |prefix: &str, path: &str| {
        log.lines()
            .find(|line| line.starts_with(prefix) && line.contains(&format!("\"path\":\"{path}\"")))
            .unwrap_or_else(|| panic!("no {prefix:?} line for {path} in\n{log}"))
            .to_owned()
    };
    line(
        "authpriv.err integrity-agent modified image=img-log {",
        "/etc/passwd",
    );
    let setuid = line(
        "authpriv.warning integrity-agent metadata_changed image=img-log {",
        "/usr/bin/tool",
    );
    assert!(setuid.contains("\"mode\":2541"), "{setuid}");
    line(
        "authpriv.warning integrity-agent deleted image=img-log {",
        "/usr/lib/old.conf",
    );
    line(
        "authpriv.notice integrity-agent added image=img-log {",
        "/srv/new",
    );
    assert!(
        log.lines().any(|l| l.starts_with(
            "authpriv.info integrity-agent summary image=img-log {\"summary\":{\"added\":1,"
        )),
        "{log}"
    );
    // Each anomaly is its own message (and the summary).
    assert_eq!(
        log.lines()
            .filter(|line| !line.contains(" security "))
            .count(),
        5,
        "{log}"
    );
}

fn signed(bytes: &[u8], sk: &Path, comment: &str) -> String {
    let key =
        integrity_trust::load_secret_key(sk, integrity_trust::Password::PromptIfTerminal).unwrap();
    integrity_trust::sign(&key, bytes, comment).unwrap()
}

#[test]
fn with_a_pinned_key_only_correctly_signed_baselines_are_used() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let (sk, pk) = (dir.path().join("c.key"), dir.path().join("c.pub"));
    let (other_sk, other_pk) = (dir.path().join("o.key"), dir.path().join("o.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    integrity_trust::keygen(&other_sk, &other_pk, None).unwrap();
    let baseline = dir.path().join("a.json");
    collect(&root, "img-a", &baseline);
    let bytes = fs::read(&baseline).unwrap();
    let sig = dir.path().join("a.json.minisig");
    let run = |file: &Path, image_id: &str| {
        agent(
            &[
                "--root",
                root.to_str().unwrap(),
                "--baseline",
                file.to_str().unwrap(),
                "--image-id",
                image_id,
                "--public-key",
                pk.to_str().unwrap(),
            ],
            &[],
        )
    };

    // Unsigned, with a key pinned.
    let unsigned = run(&baseline, "img-a");
    assert_eq!(unsigned.status.code(), Some(17), "{}", stderr(&unsigned));
    assert!(
        stderr(&unsigned).contains("SECURITY"),
        "{}",
        stderr(&unsigned)
    );

    let comment = "image_id:img-a\ttimestamp:2026-11-23T07:31:43Z";
    fs::write(&sig, signed(&bytes, &sk, comment)).unwrap();
    let good = run(&baseline, "img-a");
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));

    // A flipped byte in the baseline.
    let mut flipped = bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    fs::write(&baseline, &flipped).unwrap();
    assert_eq!(run(&baseline, "img-a").status.code(), Some(17));
    fs::write(&baseline, &bytes).unwrap();

    // Another key's signature.
    fs::write(&sig, signed(&bytes, &other_sk, comment)).unwrap();
    assert_eq!(run(&baseline, "img-a").status.code(), Some(17));

    // An edited trusted comment.
    let genuine = signed(&bytes, &sk, comment);
    fs::write(&sig, genuine.replace("img-a", "img-b")).unwrap();
    assert_eq!(run(&baseline, "img-a").status.code(), Some(17));

    // Truncated and garbage signatures.
    fs::write(&sig, &genuine[..genuine.len() / 2]).unwrap();
    assert_eq!(run(&baseline, "img-a").status.code(), Some(17));
    fs::write(&sig, "garbage").unwrap();
    assert_eq!(run(&baseline, "img-a").status.code(), Some(17));

    // A valid signature of image A presented as image B's baseline: refused on the
    // signature's trusted comment, before the JSON is even read.
    let b = dir.path().join("b.json");
    fs::write(&b, &bytes).unwrap();
    fs::write(dir.path().join("b.json.minisig"), &genuine).unwrap();
    let swapped = run(&b, "img-b");
    assert_eq!(swapped.status.code(), Some(17), "{}", stderr(&swapped));
    assert!(stderr(&swapped).contains("img-a"), "{}", stderr(&swapped));
}

#[test]
fn a_pinned_key_covers_the_service_and_the_cache() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let (sk, pk) = (dir.path().join("c.key"), dir.path().join("c.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    let server = Background::start(Config::new("127.0.0.1:0", dir.path().join("store"))).unwrap();
    let client = integrity_client::Client::new(&integrity_client::ClientConfig::new(
        format!("http://{}", server.addr),
        "test",
    ))
    .unwrap();
    for image_id in ["img-signed", "img-unsigned"] {
        let file = dir.path().join(format!("{image_id}.json"));
        collect(&root, image_id, &file);
        let bytes = fs::read(&file).unwrap();
        client
            .upload_baseline(image_id, &bytes, None, &mut |_, _, _| {})
            .unwrap();
        if image_id == "img-signed" {
            let sig = signed(&bytes, &sk, &format!("image_id:{image_id}\ttimestamp:x"));
            client
                .put_signature(image_id, sig.as_bytes(), &mut |_, _, _| {})
                .unwrap();
        }
    }
    let cache = dir.path().join("cache");
    let url = format!("http://{}", server.addr);
    let run = |image_id: &str| {
        agent(
            &[
                "--root",
                root.to_str().unwrap(),
                "--server",
                &url,
                "--image-id",
                image_id,
                "--public-key",
                pk.to_str().unwrap(),
                "--cache-dir",
                cache.to_str().unwrap(),
                "--fetch-attempts",
                "1",
            ],
            &[],
        )
    };
    let good = run("img-signed");
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    assert!(cache.join("img-signed.json.minisig").exists());
    let unsigned = run("img-unsigned");
    assert_eq!(unsigned.status.code(), Some(17), "{}", stderr(&unsigned));

    // Offline: the cached copy is verified too; a tampered cache is not used.
    server.stop().unwrap();
    assert_eq!(run("img-signed").status.code(), Some(0));
    let cached = cache.join("img-signed.json");
    let mut bytes = fs::read(&cached).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&cached, bytes).unwrap();
    let tampered = run("img-signed");
    assert_ne!(tampered.status.code(), Some(0), "{}", stderr(&tampered));
    assert!(
        stderr(&tampered).contains("does not verify"),
        "{}",
        stderr(&tampered)
    );
}

/// A hostile tree through the agent (running as root, as on a VM): a FIFO and a
/// device swapped in for baseline files, a socket, a directory replaced by a symlink
/// to a directory outside the tree: the agent finishes, reports each as what it is,
/// and records nothing from outside.
#[test]
fn a_hostile_tree_is_reported_without_hanging_or_leaving_the_tree() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let baseline = dir.path().join("baseline.json");
    collect(&root, "img-hostile", &baseline);

    let outside = dir.path().join("outside");
    fs::create_dir_all(outside.join("etc")).unwrap();
    fs::write(outside.join("etc/secret-marker"), "outside\n").unwrap();
    let mkfifo = |path: &Path| {
        assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
    };
    fs::remove_file(root.join("etc/hosts")).unwrap();
    mkfifo(&root.join("etc/hosts"));
    fs::remove_file(root.join("usr/lib/plain")).unwrap();
    let made = Command::new("mknod")
        .args([root.join("usr/lib/plain").to_str().unwrap(), "c", "1", "5"])
        .status()
        .unwrap();
    assert!(made.success());
    let _socket = std::os::unix::net::UnixListener::bind(root.join("srv/sock")).unwrap();
    fs::rename(root.join("etc/ssh"), dir.path().join("ssh-moved")).unwrap();
    symlink(outside.join("etc"), root.join("etc/ssh")).unwrap();

    let mut child = Command::new(AGENT)
        .args(["--root", root.to_str().unwrap(), "--baseline"])
        .arg(&baseline)
        .args(["--image-id", "img-hostile", "--once", "--format", "json"])
        .env_remove("IMAGE_ID")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent hung on a hostile tree");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("secret-marker"), "{stdout}");
    let found = anomalies(&output);
    for (kind, path) in [
        ("type_changed", "/etc/hosts"),
        ("type_changed", "/usr/lib/plain"),
        ("type_changed", "/etc/ssh"),
        ("added", "/srv/sock"),
        ("deleted", "/etc/ssh/sshd_config"),
    ] {
        assert!(
            found.iter().any(|(k, p, _)| k == kind && p == path),
            "{kind} {path} missing: {found:?}"
        );
    }
    // Drift, not an error: the bitmask of added, deleted and changed.
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
}

/// Without `--cache-dir` the agent caches under /var/cache/bulletproof/agent and says so
/// (once, on stderr); with the flag it says nothing. `--help` names the default.
#[test]
fn the_default_cache_directory_is_named_when_first_written() {
    require_root();
    const DEFAULT: &str = "/var/cache/bulletproof/agent";
    let line = format!("caching the baseline under {DEFAULT} (--cache-dir to change)");
    let help = agent(&["--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains(DEFAULT), "{help}");

    let dir = tempfile::tempdir().unwrap();
    let root = golden(dir.path());
    let baseline = dir.path().join("baseline.json");
    // An image id of this test alone: the files it leaves in the real directory.
    let image_id = format!("img-default-cache-{}", std::process::id());
    collect(&root, &image_id, &baseline);
    let server = Background::start(Config::new("127.0.0.1:0", dir.path().join("store"))).unwrap();
    upload(&server, &fs::read(&baseline).unwrap());
    let url = format!("http://{}", server.addr);
    let run = |extra: &[&str]| {
        let mut args = vec!["--root", root.to_str().unwrap(), "--server", &url];
        args.extend_from_slice(extra);
        agent(&args, &[("IMAGE_ID", &image_id)])
    };

    let cache = dir.path().join("cache");
    let given = run(&["--cache-dir", cache.to_str().unwrap()]);
    assert_eq!(given.status.code(), Some(0), "{}", stderr(&given));
    assert!(cache.join(format!("{image_id}.json")).exists());
    assert!(
        !stderr(&given).contains("caching the baseline under"),
        "{}",
        stderr(&given)
    );

    let created: Vec<&Path> = [Path::new("/var/cache/bulletproof"), Path::new(DEFAULT)]
        .into_iter()
        .filter(|dir| !dir.exists())
        .collect();
    let files: Vec<PathBuf> = ["json", "etag"]
        .iter()
        .map(|ext| Path::new(DEFAULT).join(format!("{image_id}.{ext}")))
        .collect();
    let default = run(&[]);
    let revalidated = run(&[]);
    for file in &files {
        let _ = fs::remove_file(file);
    }
    for dir in created.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
    assert_eq!(default.status.code(), Some(0), "{}", stderr(&default));
    assert_eq!(
        stderr(&default).matches(&line).count(),
        1,
        "{}",
        stderr(&default)
    );
    // A 304 writes nothing, so says nothing.
    assert_eq!(
        revalidated.status.code(),
        Some(0),
        "{}",
        stderr(&revalidated)
    );
    assert!(
        !stderr(&revalidated).contains("caching the baseline under"),
        "{}",
        stderr(&revalidated)
    );
}
