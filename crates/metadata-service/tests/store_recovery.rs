//! The store never deletes what it cannot explain (issue 16, item 3): with its index
//! lost or damaged, the real service rebuilds what the objects prove, moves the rest to
//! `lost+found/`, and removes only temporary files.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// Starts the service on DATA like `support::start`, but a service that exits before
/// listening is an answer too: its exit status and log.
fn try_start(data: &Path) -> Result<Server, (ExitStatus, String)> {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env_remove("METADATA_TOKENS")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start metadata-service");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening") {
                if let Some(addr) = line
                    .split_once("listen=")
                    .and_then(|(_, rest)| rest.split(' ').next())
                    .and_then(|addr| addr.parse().ok())
                {
                    let _ = tx.send(addr);
                }
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
        // End of the log: the sender drops, the receiver sees the exit.
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => Ok(Server {
            child,
            addr,
            log,
            data: data.to_owned(),
            scheme: "http",
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "service neither listens nor exits"
                );
                std::thread::sleep(Duration::from_millis(10));
            };
            let log = log.lock().unwrap().clone();
            Err((status, log))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!(
                "service did not start; log:\n{}",
                log.lock().unwrap().as_str()
            );
        }
    }
}

/// SIGTERM and a clean exit (the store flushed).
fn stop(mut server: Server) {
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(20)).code(), Some(0));
}

/// Every file under DIR (recursively), by path relative to DIR, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_owned(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (path, bytes) in files(from) {
        let target = to.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
}

/// `metadata_service_store_recovered_total{outcome="OUTCOME"}`.
fn recovered(server: &Server, outcome: &str) -> u64 {
    let text = get(server, "/metrics", &[]).text();
    let prefix = format!("metadata_service_store_recovered_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// One answer: status, `ETag`, SHA-256 of the body (short in a failure message).
type Seen = (u16, Option<String>, String);

/// What a client sees of one stored baseline: every form with its ETag, and the
/// signature.
fn served(server: &Server, image_id: &str) -> Vec<Seen> {
    let path = format!("/baselines/{image_id}");
    let mut seen: Vec<_> = ["identity", "gzip", "zstd"]
        .into_iter()
        .map(|coding| {
            let reply = get(server, &path, &[("Accept-Encoding", coding)]);
            let etag = reply.header("etag").map(str::to_owned);
            (reply.status, etag, sha256_hex(&reply.body))
        })
        .collect();
    let signature = get(server, &format!("{path}/signature"), &[]);
    seen.push((signature.status, None, sha256_hex(&signature.body)));
    seen
}

/// A real minisign signature over `bytes` naming `image_id`.
fn signed(dir: &Path, bytes: &[u8], image_id: &str) -> String {
    let (sk, pk) = (dir.join("c.key"), dir.join("c.pub"));
    integrity_trust::keygen(&sk, &pk, None).unwrap();
    let key =
        integrity_trust::load_secret_key(&sk, integrity_trust::Password::PromptIfTerminal).unwrap();
    integrity_trust::sign(&key, bytes, &format!("image_id:{image_id}")).unwrap()
}

/// Two baselines (a large one with gzip and zstd forms and a signature, a small one),
/// stored by the real service, which is then stopped cleanly. Returns what a client saw.
fn two_baselines(keys: &Path, data: &Path) -> BTreeMap<&'static str, Vec<Seen>> {
    let big = baseline("img-big", 400);
    let small = baseline("img-small", 1);
    let server = start(data, &[]);
    assert_eq!(post(&server, "/baselines", &big, &[]).status, 201);
    assert_eq!(post(&server, "/baselines", &small, &[]).status, 201);
    let signature = signed(keys, &big, "img-big");
    assert_eq!(
        put(
            &server,
            "/baselines/img-big/signature",
            signature.as_bytes(),
            &[]
        )
        .status,
        201
    );
    let seen: BTreeMap<_, _> = [
        ("img-big", served(&server, "img-big")),
        ("img-small", served(&server, "img-small")),
    ]
    .into();
    // What the test relies on: compressed forms and a signature are part of it.
    let big_seen = &seen["img-big"];
    assert!(big_seen.iter().all(|(status, _, _)| *status == 200));
    assert_eq!(big_seen[0].2, sha256_hex(&big));
    assert!(big_seen[1].1.as_deref().unwrap().ends_with(".gzip\""));
    assert!(big_seen[2].1.as_deref().unwrap().ends_with(".zstd\""));
    assert_eq!(big_seen[3].2, sha256_hex(signature.as_bytes()));
    assert_eq!(seen["img-small"][0].2, sha256_hex(&small));
    stop(server);
    seen
}

#[test]
fn a_lost_index_is_rebuilt_from_the_objects_and_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seen = two_baselines(dir.path(), &data);
    let objects = files(&data.join("objects"));
    assert!(objects.len() >= 5, "bodies, forms, signature: {objects:?}");

    std::fs::remove_dir_all(data.join("index")).unwrap();
    let server = start(&data, &[]);
    for (image_id, before) in &seen {
        assert_eq!(&served(&server, image_id), before, "{image_id}");
    }
    let listed = get(&server, "/baselines", &[]).json();
    assert_eq!(listed["baselines"].as_array().unwrap().len(), 2);
    assert_eq!(recovered(&server, "rebuilt"), 2);
    assert_eq!(recovered(&server, "signature_restored"), 1);
    assert_eq!(recovered(&server, "lost_found"), 0);
    assert_eq!(files(&data.join("objects")), objects, "objects changed");
    assert!(!data.join("lost+found").exists());
    let log = server.log();
    assert_eq!(log.matches("index entry rebuilt").count(), 2, "{log}");
    assert!(log.contains("WARN"), "{log}");
    stop(server);

    // Rebuilt for good: the next start has nothing to recover.
    let server = start(&data, &[]);
    assert_eq!(recovered(&server, "rebuilt"), 0);
    for (image_id, before) in &seen {
        assert_eq!(&served(&server, image_id), before, "{image_id}");
    }
}

#[test]
fn a_damaged_index_refuses_to_start_or_costs_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let seen = two_baselines(dir.path(), &pristine);
    let objects = files(&pristine.join("objects"));
    let db_len = std::fs::metadata(pristine.join("index/db")).unwrap().len();
    // Deterministic damage: a byte of sled's configuration (sled reports it), and bytes
    // at the start, the middle and near the end of its log (sled drops what follows).
    let cases: Vec<(&str, u64)> = vec![
        ("index/conf", 0),
        ("index/db", 0),
        ("index/db", db_len / 2),
        ("index/db", db_len * 3 / 4),
        ("index/db", db_len.saturating_sub(16)),
    ];
    let (mut refused, mut recovered_cases) = (0, 0);
    for (case, (file, at)) in cases.into_iter().enumerate() {
        let data = dir.path().join(format!("case-{case}"));
        copy_dir(&pristine, &data);
        let path = data.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let what = format!("{file} byte {at}");
        match try_start(&data) {
            Err((status, log)) => {
                eprintln!("{what}: sled refused, the service exited with {status}");
                refused += 1;
                assert_eq!(status.code(), Some(2), "{what}: {log}");
                assert!(
                    log.contains("cannot open store") && log.contains("index"),
                    "{what}: no clear error: {log}"
                );
                assert_eq!(files(&data.join("objects")), objects, "{what}");
                assert!(!data.join("lost+found").exists(), "{what}");
                // Nothing lost by refusing: with the damage repaired, all is served.
                std::fs::copy(pristine.join(file), &path).unwrap();
                let server = start(&data, &[]);
                for (image_id, before) in &seen {
                    assert_eq!(&served(&server, image_id), before, "{what}: {image_id}");
                }
            }
            Ok(server) => {
                let rebuilt = recovered(&server, "rebuilt");
                let restored = recovered(&server, "signature_restored");
                eprintln!(
                    "{what}: started, {rebuilt} index entries rebuilt, {restored} signatures \
                     restored"
                );
                if rebuilt > 0 {
                    recovered_cases += 1;
                }
                let lost = files(&data.join("lost+found"));
                let kept = files(&data.join("objects"));
                for (image_id, before) in &seen {
                    let now = served(&server, image_id);
                    if now[0].0 == 404 {
                        // Not served: then its bytes are in lost+found.
                        assert!(
                            lost.values().any(|bytes| sha256_hex(bytes) == before[0].2),
                            "{what}: {image_id} neither served nor in lost+found"
                        );
                    } else {
                        assert_eq!(&now, before, "{what}: {image_id}");
                    }
                }
                // Every object file is still somewhere, byte for byte.
                for (path, bytes) in &objects {
                    let name = path.file_name().unwrap().to_string_lossy();
                    let here = kept.get(path) == Some(bytes);
                    let aside = lost.iter().any(|(lost, lost_bytes)| {
                        lost.to_string_lossy().starts_with(&*name) && lost_bytes == bytes
                    });
                    assert!(here || aside, "{what}: {} was deleted", path.display());
                }
            }
        }
    }
    // The cases cover both behaviours of sled (a refusal, and records dropped
    // silently and rebuilt from the objects).
    assert!(refused >= 1, "no case made sled refuse");
    assert!(recovered_cases >= 1, "no case made sled drop a record");
}

#[test]
fn unexplained_objects_go_to_lost_and_found_and_temp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kept = baseline("img-kept", 10);
    let server = start(&data, &[]);
    assert_eq!(post(&server, "/baselines", &kept, &[]).status, 201);
    stop(server);

    let objects = data.join("objects");
    // A body whose content does not hash to its name (a valid baseline, all the same).
    let named = baseline("img-named", 5);
    let liar = format!("{}.json", sha256_hex(&named));
    let liar_bytes = baseline("img-other", 5);
    std::fs::write(objects.join(&liar), &liar_bytes).unwrap();
    // A compressed form without its identity body.
    let lone = baseline("img-lone", 50);
    let orphan = format!("{}.json.gz", sha256_hex(&lone));
    let orphan_bytes = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&lone).unwrap();
        encoder.finish().unwrap()
    };
    std::fs::write(objects.join(&orphan), &orphan_bytes).unwrap();
    // What an interrupted write leaves.
    let temp = objects.join(".tmp-interrupted");
    std::fs::write(&temp, b"{\"image_id\":").unwrap();

    let server = start(&data, &[]);
    assert!(!temp.exists(), "the temp file stays");
    let lost = data.join("lost+found");
    for (name, bytes) in [(&liar, &liar_bytes), (&orphan, &orphan_bytes)] {
        let moved = std::fs::read(lost.join(name));
        assert_eq!(
            moved.ok().as_ref(),
            Some(bytes),
            "{name} is not in lost+found"
        );
    }
    assert!(!objects.join(&liar).exists() && !objects.join(&orphan).exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&lost).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(recovered(&server, "lost_found"), 2);
    assert_eq!(recovered(&server, "rebuilt"), 0);
    let log = server.log();
    for (name, reason) in [(&liar, "does not hash to its name"), (&orphan, "no body")] {
        let line = log
            .lines()
            .find(|line| line.contains(name.as_str()))
            .unwrap_or_else(|| panic!("no log line names {name}: {log}"));
        assert!(line.contains("WARN") && line.contains(reason), "{line}");
    }
    // Served as before; and the name that was taken by other bytes is free again.
    assert_eq!(get(&server, "/baselines/img-kept", &[]).body, kept);
    assert_eq!(get(&server, "/baselines/img-named", &[]).status, 404);
    assert_eq!(post(&server, "/baselines", &named, &[]).status, 201);
    assert_eq!(get(&server, "/baselines/img-named", &[]).body, named);
    stop(server);

    // The same name again: kept beside the first, which is not overwritten.
    let again = objects.join(format!("{}.json", sha256_hex(b"again")));
    std::fs::write(&again, b"again?").unwrap();
    let target = lost.join(again.file_name().unwrap());
    std::fs::write(&target, b"an earlier one").unwrap();
    let server = start(&data, &[]);
    assert_eq!(std::fs::read(&target).unwrap(), b"an earlier one");
    let mut beside = target.into_os_string();
    beside.push(".1");
    assert_eq!(std::fs::read(beside).unwrap(), b"again?");
    assert_eq!(recovered(&server, "lost_found"), 1);
    assert_eq!(get(&server, "/baselines/img-named", &[]).body, named);
}

#[test]
fn an_object_changed_in_place_is_never_served_and_the_poster_is_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let token = "store-recovery-token-0123456789";
    let server = start(dir.path(), &["--token", token]);
    let doc = baseline("img-same-size", 2000);
    let auth = format!("Bearer {token}");
    let posted = post(&server, "/baselines", &doc, &[("Authorization", &auth)]);
    assert_eq!(posted.status, 201);
    let listing = get(&server, "/baselines", &[]).text();
    for shown in [posted.text(), listing] {
        assert!(
            !shown.contains("posted_by") && !shown.contains("token:"),
            "{shown}"
        );
    }
    drop(server);
    // Every stored form, changed in place to the same size (one byte flipped).
    let sha = sha256_hex(&doc);
    let mut forms = 0;
    for suffix in ["json", "json.gz", "json.zst"] {
        let path = dir.path().join(format!("objects/{sha}.{suffix}"));
        let Ok(mut bytes) = std::fs::read(&path) else {
            continue;
        };
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        forms += 1;
    }
    assert!(forms >= 2, "expected the identity and a compressed form");
    let server = start(dir.path(), &["--token", token]);
    for encoding in ["identity", "gzip", "zstd"] {
        let answer = get(
            &server,
            "/baselines/img-same-size",
            &[("Accept-Encoding", encoding)],
        );
        assert_eq!(answer.status, 500, "{encoding}: tampered bytes served");
    }
    assert!(server.log().contains("does not hash"), "{}", server.log());
}
