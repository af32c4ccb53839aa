//! The tamper-evident security logs (REFERENCE §6), end to end with the real binary: a
//! guard log written by `guard --once` heartbeats on an installed root, then, on copies
//! of it and of its signed checkpoint, every kind of tampering `log verify` must name
//! (with the line): an edited, deleted, inserted, duplicated, reordered or forged
//! record, a cut tail, an emptied file, a deleted or forged checkpoint, a stale log;
//! rotation with the real `logrotate` (copytruncate); forward security against a thief
//! of the current key (and its stated limit); keys kept off the host. Runs as root.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

mod common;
use common::{ctl, ok, p, text};
/// Heartbeats written into the log under test.
const RECORDS: usize = 8;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> [u8; 32] {
    let text = text.trim();
    assert_eq!(text.len(), 64, "not a 32-byte hex key: {text}");
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// HMAC-SHA256, computed here independently of the `bulletproof-seclog` crate.
fn hmac_hex(key: &[u8], body: &str) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(body.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// `k_{i+1}` from `k_i`, as REFERENCE §6 / `bulletproof-seclog` define it.
fn evolve(key: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"bulletproof-log-evolve-v1");
    hasher.update(key);
    hasher.finalize().into()
}

/// Re-MACs `lines[from..]` as a thief holding `key` (the key of `lines[from]`'s seq)
/// would: each record chained to the one before, keys evolved forward.
fn remac(lines: &mut [String], from: usize, key: [u8; 32]) {
    let mut key = key;
    for index in from..lines.len() {
        if index > 0 {
            let (_, prev) = split_mac(&lines[index - 1]);
            let prev = prev.to_owned();
            lines[index] = with_prev(&lines[index], &prev);
        }
        let (body, _) = split_mac(&lines[index]);
        let body = body.to_owned();
        lines[index] = with_mac(&body, &hmac_hex(&key, &body));
        key = evolve(&key);
    }
}

const MAC_MARK: &str = ",\"mac\":\"";

/// A record line's MACed body (up to `,"mac":`) and its MAC.
fn split_mac(line: &str) -> (&str, &str) {
    let at = line.rfind(MAC_MARK).expect("a record line");
    let mac = line[at + MAC_MARK.len()..].strip_suffix("\"}").unwrap();
    (&line[..at], mac)
}

fn with_mac(body: &str, mac: &str) -> String {
    format!("{body}{MAC_MARK}{mac}\"}}")
}

fn record(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap()
}

/// The line with one character of its `msg` changed (the MAC left as it was).
fn edit_msg(line: &str) -> String {
    let at = line.find("\"msg\":\"").expect("a msg field") + "\"msg\":\"".len();
    let old = line[at..].chars().next().unwrap();
    let new = if old == 'X' { 'Y' } else { 'X' };
    let edited = format!("{}{new}{}", &line[..at], &line[at + old.len_utf8()..]);
    assert_ne!(edited, line);
    edited
}

/// The line with its `seq` replaced (first occurrence only: the body starts with it).
fn with_seq(line: &str, seq: u64) -> String {
    let old = record(line)["seq"].as_u64().unwrap();
    line.replacen(&format!("\"seq\":{old},"), &format!("\"seq\":{seq},"), 1)
}

/// The line with its `prev` replaced.
fn with_prev(line: &str, prev: &str) -> String {
    let old = record(line)["prev"].as_str().unwrap().to_owned();
    line.replacen(
        &format!("\"prev\":\"{old}\""),
        &format!("\"prev\":\"{prev}\""),
        1,
    )
}

/// An installed root whose guard log holds a few heartbeats, and a scratch directory
/// for tampered copies.
struct Fixture {
    dir: tempfile::TempDir,
}

/// What `log verify` said.
struct Verified {
    code: i32,
    stdout: String,
    all: String,
}

impl Fixture {
    /// Installs a root and runs `guard --once` `records` times.
    fn new(records: usize) -> Self {
        let fixture = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        ok(ctl(&["install", "--root", &fixture.r(), "--mounts", "no"]));
        fixture.guard(records);
        assert_eq!(fixture.lines().len(), records);
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    fn r(&self) -> String {
        p(&self.root()).to_owned()
    }

    /// `guard --once`, `times` times: a heartbeat record each.
    fn guard(&self, times: usize) {
        for _ in 0..times {
            let output = ctl(&["guard", "--once", "--root", &self.r()]);
            assert_eq!(output.status.code(), Some(0), "guard: {}", text(&output));
        }
    }

    /// The live guard log.
    fn log(&self) -> PathBuf {
        self.root().join("logs/security/guard.jsonl")
    }

    fn lines(&self) -> Vec<String> {
        lines_of(&self.log())
    }

    /// Writes `lines` to a copy `<name>.jsonl` of the log, with copies of the live
    /// checkpoint and its signature beside it.
    fn copy(&self, name: &str, lines: &[String]) -> PathBuf {
        let target = self.path(&format!("{name}.jsonl"));
        write_lines(&target, lines);
        for suffix in [".checkpoint", ".checkpoint.minisig"] {
            fs::copy(
                format!("{}{suffix}", self.log().display()),
                format!("{}{suffix}", target.display()),
            )
            .unwrap();
        }
        target
    }

    /// `log verify FILES --root ROOT EXTRA…`
    fn verify(&self, files: &[&Path], extra: &[&str]) -> Verified {
        let mut args = vec!["log", "verify"];
        args.extend(files.iter().map(|f| p(f)));
        let root = self.r();
        args.extend(["--root", &root]);
        args.extend(extra);
        let output = ctl(&args);
        Verified {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            all: text(&output),
        }
    }

    /// The writer's key state (`install/logkeys/guard.state`).
    fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.root().join("install/logkeys/guard.state")).unwrap())
            .unwrap()
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut content = lines.join("\n");
    if !lines.is_empty() {
        content.push('\n');
    }
    fs::write(path, content).unwrap();
}

impl Verified {
    fn intact(&self, records: usize) {
        assert_eq!(self.code, 0, "expected intact: {}", self.all);
        assert!(
            self.stdout
                .starts_with(&format!("intact: {records} records of guard")),
            "{}",
            self.all
        );
    }

    /// Exit 1, and stdout is `FILE:LINE: …` naming one of `words`.
    fn problem(&self, file: &Path, lines: &[usize], words: &[&str]) {
        assert_eq!(self.code, 1, "expected a problem: {}", self.all);
        let first = self.stdout.lines().next().unwrap_or_default();
        let rest = first
            .strip_prefix(&format!("{}:", file.display()))
            .unwrap_or_else(|| panic!("does not name {}: {}", file.display(), self.all));
        let (line, what) = rest.split_once(": ").unwrap();
        let line: usize = line.parse().unwrap();
        assert!(
            lines.contains(&line),
            "line {line}, expected {lines:?}: {}",
            self.all
        );
        assert!(
            words.iter().any(|w| what.contains(w)),
            "expected one of {words:?}: {}",
            self.all
        );
    }
}

// ---------------------------------------------------------------------------------
// The intact log and each kind of tampering.

#[test]
fn intact_log_verifies() {
    let f = Fixture::new(RECORDS);
    let lines = f.lines();
    for (seq, line) in lines.iter().enumerate() {
        let record = record(line);
        assert_eq!(record["seq"], seq as u64);
        assert_eq!(record["component"], "guard");
        assert_eq!(record["event"], "heartbeat");
    }
    let out = f.verify(&[&f.log()], &[]);
    out.intact(RECORDS);
    assert!(out.stdout.contains("seq 0..7"), "{}", out.all);
    // A copy with its checkpoint verifies the same.
    f.verify(&[&f.copy("copy", &lines)], &[]).intact(RECORDS);
    // The checkpoint names the head.
    let checkpoint = fs::read_to_string(format!("{}.checkpoint", f.log().display())).unwrap();
    let (_, last_mac) = split_mac(&lines[RECORDS - 1]);
    assert!(checkpoint.starts_with(&format!("seq:{}\tmac:{last_mac}\t", RECORDS - 1)));
    // install logged itself in bulletproofctl's own chain.
    let own = f.root().join("logs/security/bulletproofctl.jsonl");
    let out = f.verify(&[&own], &[]);
    assert_eq!(out.code, 0, "{}", out.all);
    assert!(out.stdout.contains("of bulletproofctl"), "{}", out.all);
}

#[test]
fn edited_record_is_named_at_its_line() {
    let f = Fixture::new(RECORDS);
    let mut lines = f.lines();
    lines[2] = edit_msg(&lines[2]);
    let copy = f.copy("edited", &lines);
    f.verify(&[&copy], &[]).problem(&copy, &[3], &["edited"]);

    // Any field: the data, the timestamp, the MAC itself; and the last record.
    for (index, from, to) in [
        (4, "\"state\":\"idle\"", "\"state\":\"intact\""),
        (5, "\"ts\":\"2", "\"ts\":\"1"),
        (
            RECORDS - 1,
            "\"event\":\"heartbeat\"",
            "\"event\":\"heartbeaT\"",
        ),
    ] {
        let mut lines = f.lines();
        assert!(lines[index].contains(from), "{}", lines[index]);
        lines[index] = lines[index].replacen(from, to, 1);
        let copy = f.copy(&format!("edited-{index}"), &lines);
        f.verify(&[&copy], &[])
            .problem(&copy, &[index + 1], &["edited"]);
    }
    let mut lines = f.lines();
    let (body, mac) = split_mac(&lines[1]);
    let flipped = if mac.starts_with('0') { "1" } else { "0" };
    lines[1] = with_mac(body, &format!("{flipped}{}", &mac[1..]));
    let copy = f.copy("edited-mac", &lines);
    f.verify(&[&copy], &[]).problem(&copy, &[2], &["edited"]);
}

#[test]
fn deleted_record_is_named_missing() {
    let f = Fixture::new(RECORDS);
    let mut lines = f.lines();
    lines.remove(3);
    let copy = f.copy("deleted", &lines);
    f.verify(&[&copy], &[])
        .problem(&copy, &[4], &["missing", "deleted"]);

    // Several in a row.
    let mut lines = f.lines();
    lines.drain(2..5);
    let copy = f.copy("deleted-3", &lines);
    let out = f.verify(&[&copy], &[]);
    out.problem(&copy, &[3], &["missing", "deleted"]);
    assert!(out.stdout.contains("2..4"), "{}", out.all);
}

/// A stated limit: a file may start at any seq (rotation), so deleting the first
/// records of a log given alone is only a note, not a failure. Given with the file
/// before it (or when it should start at 0, as the note says) the gap shows.
#[test]
fn deleted_head_reads_as_rotation_the_stated_limit() {
    let f = Fixture::new(RECORDS);
    let mut lines = f.lines();
    let first = lines.remove(0);
    let copy = f.copy("deleted-head", &lines);
    let out = f.verify(&[&copy], &[]);
    out.intact(RECORDS - 1);
    assert!(out.all.contains("note: starts at seq 1"), "{}", out.all);
    // With the record before it in an "older file", the chain is whole again.
    let older = f.path("older.jsonl");
    write_lines(&older, &[first]);
    f.verify(&[&older, &copy], &[]).intact(RECORDS);
}

#[test]
fn inserted_record_is_named_inserted() {
    let f = Fixture::new(RECORDS);
    // A second record with seq 2 (its own made-up MAC) right after record 2.
    let mut lines = f.lines();
    let (body, _) = split_mac(&lines[2]);
    let forged = with_mac(&edit_msg(body), &"cd".repeat(32));
    lines.insert(3, forged);
    let copy = f.copy("inserted", &lines);
    f.verify(&[&copy], &[]).problem(&copy, &[4], &["inserted"]);

    // A record of another component's chain (valid under its own key) in the middle.
    let own = lines_of(&f.root().join("logs/security/bulletproofctl.jsonl"));
    let mut lines = f.lines();
    lines.insert(3, own[0].clone());
    let copy = f.copy("inserted-foreign", &lines);
    f.verify(&[&copy], &[]).problem(&copy, &[4], &["inserted"]);
}

/// A duplicate of record 2 with one character of its msg changed (its MAC copied
/// as it is), inserted after it: not the same record twice, an inserted one.
#[test]
fn inserted_modified_copy_is_named_inserted() {
    let f = Fixture::new(RECORDS);
    let mut lines = f.lines();
    let forged = edit_msg(&lines[2]);
    lines.insert(3, forged);
    let copy = f.copy("inserted-copy", &lines);
    let out = f.verify(&[&copy], &[]);
    out.problem(&copy, &[4], &["inserted"]);
    assert!(!out.stdout.contains("duplicated"), "{}", out.all);
}

/// The foreign record is the first line: it is the inserted one, not the guard's
/// record after it.
#[test]
fn foreign_record_at_the_top_is_named_at_line_1() {
    let f = Fixture::new(RECORDS);
    let own = lines_of(&f.root().join("logs/security/bulletproofctl.jsonl"));
    let mut lines = f.lines();
    lines.insert(0, own[0].clone());
    let copy = f.copy("inserted-top", &lines);
    f.verify(&[&copy], &[]).problem(&copy, &[1], &["inserted"]);
}

/// Two components' logs given as one rotated chain (`log verify bulletproofctl.jsonl
/// guard.jsonl`): named as such, both files with their components, not "inserted".
#[test]
fn logs_of_two_components_are_named_as_such() {
    let f = Fixture::new(RECORDS);
    let ctl_log = f.root().join("logs/security/bulletproofctl.jsonl");
    let out = f.verify(&[&ctl_log, &f.log()], &[]);
    out.problem(
        &f.log(),
        &[0],
        &["guard.jsonl is the log of component guard, bulletproofctl.jsonl of bulletproofctl"],
    );
    assert!(
        out.stdout
            .contains("give the files of one component, oldest first"),
        "{}",
        out.all
    );
    assert!(!out.stdout.contains("inserted"), "{}", out.all);
    f.verify(&[&f.log(), &ctl_log], &[]).problem(
        &ctl_log,
        &[0],
        &["bulletproofctl.jsonl is the log of component bulletproofctl, guard.jsonl of guard"],
    );
}

#[test]
fn duplicated_record_is_named_duplicated() {
    let f = Fixture::new(RECORDS);
    let mut lines = f.lines();
    let again = lines[2].clone();
    lines.insert(3, again);
    let copy = f.copy("duplicated", &lines);
    f.verify(&[&copy], &[])
        .problem(&copy, &[4], &["duplicated"]);
}

#[test]
fn reordered_records_are_named_reordered() {
    let f = Fixture::new(RECORDS);
    let mut lines = f.lines();
    lines.swap(2, 3);
    let copy = f.copy("reordered", &lines);
    // Line 3 is the first out of place (seq 3 before seq 2), line 4 where the seq goes
    // back: either is right, "missing" is not (nothing is).
    let out = f.verify(&[&copy], &[]);
    out.problem(&copy, &[3, 4], &["reordered"]);
    assert!(!out.stdout.contains("missing"), "{}", out.all);
}

#[test]
fn reordered_far_apart_are_named_reordered() {
    let f = Fixture::new(RECORDS);
    let mut lines = f.lines();
    lines.swap(1, 5);
    let copy = f.copy("reordered-far", &lines);
    let out = f.verify(&[&copy], &[]);
    out.problem(&copy, &[2, 3, 6], &["reordered"]);
}

#[test]
fn forged_appended_record_does_not_verify() {
    let f = Fixture::new(RECORDS);
    let lines = f.lines();
    let last = &lines[RECORDS - 1];
    let (_, last_mac) = split_mac(last);
    let next = with_prev(&with_seq(last, RECORDS as u64), last_mac);
    let (body, _) = split_mac(&next);
    let body = body.to_owned();

    // A made-up MAC.
    let mut forged = lines.clone();
    forged.push(with_mac(&body, &"ab".repeat(32)));
    let copy = f.copy("forged-made-up", &forged);
    f.verify(&[&copy], &[])
        .problem(&copy, &[RECORDS + 1], &["MAC does not verify"]);

    // A real HMAC under guessed keys: zeros, the initial key's hash, the last MAC.
    let guesses: Vec<Vec<u8>> = vec![
        vec![0u8; 32],
        Sha256::digest(b"guard").to_vec(),
        unhex(last_mac).to_vec(),
        b"bulletproof-log-v1:guard".to_vec(),
    ];
    for (i, key) in guesses.iter().enumerate() {
        let mut forged = lines.clone();
        forged.push(with_mac(&body, &hmac_hex(key, &body)));
        let copy = f.copy(&format!("forged-guess-{i}"), &forged);
        f.verify(&[&copy], &[])
            .problem(&copy, &[RECORDS + 1], &["MAC does not verify"]);
    }
}

#[test]
fn truncated_tail_is_named_truncated() {
    let f = Fixture::new(RECORDS);
    let mut lines = f.lines();
    lines.truncate(RECORDS - 2);
    let copy = f.copy("truncated", &lines);
    // The first missing line is the one to name.
    f.verify(&[&copy], &[])
        .problem(&copy, &[RECORDS - 1], &["truncated"]);

    // Cut in the middle of the last line.
    let full = fs::read(f.log()).unwrap();
    let copy = f.copy("truncated-mid-line", &[]);
    fs::write(&copy, &full[..full.len() - 30]).unwrap();
    f.verify(&[&copy], &[])
        .problem(&copy, &[RECORDS], &["truncated"]);
}

#[test]
fn emptied_file_is_named_emptied() {
    let f = Fixture::new(RECORDS);
    let copy = f.copy("emptied", &[]);
    assert_eq!(fs::metadata(&copy).unwrap().len(), 0);
    f.verify(&[&copy], &[])
        .problem(&copy, &[0, 1], &["emptied"]);
    // Without the checkpoint too.
    let out = f.verify(&[&copy], &["--no-checkpoint"]);
    out.problem(&copy, &[0, 1], &["emptied"]);
}

#[test]
fn deleted_checkpoint_is_reported_unless_not_required() {
    let f = Fixture::new(RECORDS);
    let copy = f.copy("no-checkpoint", &f.lines());
    fs::remove_file(format!("{}.checkpoint", copy.display())).unwrap();
    let out = f.verify(&[&copy], &[]);
    assert_eq!(out.code, 1, "{}", out.all);
    assert!(out.stdout.starts_with(&format!("{}:", copy.display())));
    assert!(out.stdout.contains("checkpoint"), "{}", out.all);
    f.verify(&[&copy], &["--no-checkpoint"]).intact(RECORDS);

    // The signature alone deleted.
    let copy = f.copy("no-signature", &f.lines());
    fs::remove_file(format!("{}.checkpoint.minisig", copy.display())).unwrap();
    let out = f.verify(&[&copy], &[]);
    assert_eq!(out.code, 1, "{}", out.all);
    assert!(out.stdout.contains("checkpoint"), "{}", out.all);
}

#[test]
fn forged_checkpoint_does_not_verify() {
    let f = Fixture::new(RECORDS);
    // Truncate the tail and make the checkpoint say so, without the host key.
    let mut lines = f.lines();
    lines.truncate(5);
    let copy = f.copy("forged-checkpoint", &lines);
    let checkpoint = format!("{}.checkpoint", copy.display());
    let (_, mac) = split_mac(&lines[4]);
    fs::write(
        &checkpoint,
        format!("seq:4\tmac:{mac}\tts:2026-01-01T00:00:00Z\tfile:guard.jsonl\n"),
    )
    .unwrap();
    let out = f.verify(&[&copy], &[]);
    assert_eq!(out.code, 1, "{}", out.all);
    assert!(out.stdout.contains("checkpoint"), "{}", out.all);
    assert!(out.stdout.contains("signature"), "{}", out.all);

    // A wrong host key: the genuine checkpoint does not verify under it.
    let other = f.path("other.key");
    let other_pub = f.path("other.pub");
    ok(ctl(&[
        "keygen",
        "--secret-key",
        p(&other),
        "--public-key",
        p(&other_pub),
    ]));
    let copy = f.copy("wrong-host-key", &f.lines());
    let out = f.verify(&[&copy], &["--host-key", p(&other_pub)]);
    assert_eq!(out.code, 1, "{}", out.all);
    assert!(out.stdout.contains("checkpoint"), "{}", out.all);
}

#[test]
fn stale_log_fails_max_age() {
    let f = Fixture::new(3);
    f.verify(&[&f.log()], &["--max-age", "60"]).intact(3);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = f.verify(&[&f.log()], &["--max-age", "1"]);
    out.problem(&f.log(), &[4], &["old", "cut off"]);
    // A fresh heartbeat makes it current again.
    f.guard(1);
    f.verify(&[&f.log()], &["--max-age", "60"]).intact(4);
}

// ---------------------------------------------------------------------------------
// Rotation with the real logrotate.

/// `logrotate` on PATH (or in the sbin directories), installed with apt-get when it is
/// missing. Never skipped: rotation is part of the requirement.
fn logrotate() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let find = || {
                let path = std::env::var("PATH").unwrap_or_default();
                let found = path
                    .split(':')
                    .chain(["/usr/sbin", "/sbin", "/usr/bin"])
                    .map(|dir| Path::new(dir).join("logrotate"))
                    .find(|candidate| candidate.is_file());
                found
            };
            if let Some(found) = find() {
                return found;
            }
            let apt = |args: &[&str]| {
                Command::new("apt-get")
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdin(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            };
            if !apt(&["install", "-y", "logrotate"]) {
                assert!(apt(&["update"]), "apt-get update failed");
                assert!(
                    apt(&["install", "-y", "logrotate"]),
                    "apt-get install logrotate failed"
                );
            }
            find().expect("logrotate is still not on PATH after apt-get install")
        })
        .clone()
}

fn rotate(f: &Fixture) {
    let conf = f.path("logrotate.conf");
    fs::write(
        &conf,
        format!(
            "{} {{\n    copytruncate\n    rotate 5\n    missingok\n    nocompress\n}}\n",
            f.log().display()
        ),
    )
    .unwrap();
    let output = Command::new(logrotate())
        .args(["-f", "-s", p(&f.path("logrotate.state")), p(&conf)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "logrotate: {}", text(&output));
}

#[test]
fn rotation_with_logrotate_copytruncate() {
    let f = Fixture::new(RECORDS);
    let before = f.lines();
    rotate(&f);
    let rotated1 = PathBuf::from(format!("{}.1", f.log().display()));
    assert_eq!(lines_of(&rotated1), before);
    assert_eq!(fs::metadata(f.log()).unwrap().len(), 0);

    // Nothing written since: the current file alone looks emptied (its checkpoint names
    // seq 7), the two together are intact.
    f.verify(&[&f.log()], &[])
        .problem(&f.log(), &[0, 1], &["emptied"]);
    f.verify(&[&rotated1, &f.log()], &[]).intact(RECORDS);

    // The writer goes on in the truncated file.
    f.guard(3);
    let current = f.lines();
    assert_eq!(record(&current[0])["seq"], RECORDS as u64);
    let out = f.verify(&[&f.log()], &[]);
    out.intact(3);
    assert!(out.all.contains("starts at seq 8"), "{}", out.all);
    let out = f.verify(&[&rotated1, &f.log()], &[]);
    out.intact(RECORDS + 3);
    assert!(out.stdout.contains("seq 0..10"), "{}", out.all);

    // A second rotation: .1 becomes .2.
    rotate(&f);
    f.guard(2);
    let rotated2 = PathBuf::from(format!("{}.2", f.log().display()));
    assert_eq!(lines_of(&rotated2), before);
    f.verify(&[&rotated2, &rotated1, &f.log()], &[])
        .intact(RECORDS + 5);
    f.verify(&[&rotated1, &f.log()], &[]).intact(5);

    // Wrong order, or a rotated file left out, shows.
    f.verify(&[&f.log(), &rotated1], &["--no-checkpoint"])
        .problem(&rotated1, &[1], &["reordered"]);
    f.verify(&[&rotated2, &f.log()], &[])
        .problem(&f.log(), &[1], &["missing", "deleted"]);

    // A middle line removed from a rotated file.
    let mut lines = lines_of(&rotated2);
    lines.remove(4);
    write_lines(&rotated2, &lines);
    f.verify(&[&rotated2, &rotated1, &f.log()], &[]).problem(
        &rotated2,
        &[5],
        &["missing", "deleted"],
    );
    // The first line of the newer file removed: continuity across files shows it.
    let mut lines = lines_of(&rotated1);
    lines.remove(0);
    write_lines(&rotated1, &lines);
    f.verify(&[&rotated1, &f.log()], &[])
        .intact(2 + f.lines().len());
    let rotated2_ok = f.path("rotated2-ok");
    write_lines(&rotated2_ok, &before);
    f.verify(&[&rotated2_ok, &rotated1, &f.log()], &[]).problem(
        &rotated1,
        &[1],
        &["missing", "deleted"],
    );
}

// ---------------------------------------------------------------------------------
// Forward security.

#[test]
fn stolen_current_key_cannot_rewrite_the_past() {
    let f = Fixture::new(RECORDS);
    let lines = f.lines();
    // What an intruder steals: the writer's current state.
    let state = f.state();
    assert_eq!(state["next_seq"], RECORDS as u64);
    let (_, last_mac) = split_mac(&lines[RECORDS - 1]);
    assert_eq!(state["prev"], last_mac);
    let stolen = unhex(state["key"].as_str().unwrap());

    // The stolen key is not the key of any earlier record: re-MACing any of them with
    // it, the next record's prev fixed to chain, does not verify.
    for index in 0..RECORDS {
        let mut forged = lines.clone();
        let edited = edit_msg(&forged[index]);
        let (body, _) = split_mac(&edited);
        let mac = hmac_hex(&stolen, body);
        forged[index] = with_mac(body, &mac);
        if index + 1 < RECORDS {
            forged[index + 1] = with_prev(&forged[index + 1], &mac);
        }
        let copy = f.copy(&format!("rewritten-{index}"), &forged);
        f.verify(&[&copy], &[])
            .problem(&copy, &[index + 1], &["MAC does not verify"]);
    }
    // Nor is a key derived forward from it.
    let mut forged = lines.clone();
    let edited = edit_msg(&forged[3]);
    let (body, _) = split_mac(&edited);
    let evolved = evolve(&stolen);
    forged[3] = with_mac(body, &hmac_hex(&evolved, body));
    let copy = f.copy("rewritten-evolved", &forged);
    f.verify(&[&copy], &[])
        .problem(&copy, &[4], &["MAC does not verify"]);
}

/// The stated limit (seclog crate, REFERENCE §6): forward security protects the past, not
/// the future. Whoever holds the current key can write the next record, and it
/// verifies: the checkpoint names an earlier seq and only vouches that nothing up to
/// it was cut. The writer even adopts the forged record (it looks like a record whose
/// state update a crash lost) and chains on from it. What protects against this is
/// keeping the key from being stolen, and the checkpoint copies sent off the host.
#[test]
fn stolen_current_key_can_append_the_stated_limit() {
    let f = Fixture::new(RECORDS);
    let state = f.state();
    let seq = state["next_seq"].as_u64().unwrap();
    let stolen = unhex(state["key"].as_str().unwrap());
    let body = format!(
        "{{\"seq\":{seq},\"ts\":\"{}\",\"component\":\"guard\",\"event\":\"heartbeat\",\"msg\":\"cycle: intact\",\"data\":{{\"active\":\"none\",\"interval\":0,\"state\":\"intact\"}},\"prev\":\"{}\"",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        state["prev"].as_str().unwrap()
    );
    let mut lines = f.lines();
    lines.push(with_mac(&body, &hmac_hex(&stolen, &body)));
    write_lines(&f.log(), &lines);
    let out = f.verify(&[&f.log()], &[]);
    out.intact(RECORDS + 1);
    assert!(out.stdout.contains("seq 0..8"), "{}", out.all);

    // The next genuine heartbeat chains on from the forged record.
    f.guard(1);
    let lines = f.lines();
    assert_eq!(record(&lines[RECORDS + 1])["seq"], RECORDS as u64 + 1);
    let (_, forged_mac) = split_mac(&lines[RECORDS]);
    assert_eq!(record(&lines[RECORDS + 1])["prev"], forged_mac);
    f.verify(&[&f.log()], &[]).intact(RECORDS + 2);

    // But the same key cannot place a record before the head.
    let mut rewritten = lines.clone();
    let edited = edit_msg(&rewritten[RECORDS - 1]);
    let (body, _) = split_mac(&edited);
    rewritten[RECORDS - 1] = with_mac(body, &hmac_hex(&stolen, body));
    let copy = f.copy("rewritten-head", &rewritten);
    f.verify(&[&copy], &[])
        .problem(&copy, &[RECORDS], &["MAC does not verify"]);
}

/// The same limit, further: the stolen key evolves forward, so the records written
/// AFTER the theft can be rewritten too. The signed checkpoint (the head's seq and MAC)
/// is what shows that, when the host key was not stolen as well.
#[test]
fn rewriting_after_the_theft_is_caught_by_the_checkpoint() {
    let f = Fixture::new(RECORDS);
    let stolen = unhex(f.state()["key"].as_str().unwrap());
    f.guard(2); // seq 8 and 9, written after the theft; the checkpoint names seq 9
    let lines = f.lines();
    assert_eq!(lines.len(), RECORDS + 2);

    // Record 8 rewritten, record 9 re-chained: the chain verifies, the head does not
    // match the checkpoint.
    let mut forged = lines.clone();
    forged[RECORDS] = edit_msg(&forged[RECORDS]);
    remac(&mut forged, RECORDS, stolen);
    let copy = f.copy("after-theft", &forged);
    f.verify(&[&copy], &[])
        .problem(&copy, &[RECORDS + 2], &["checkpoint"]);
    // Without the checkpoint (deleted along, and not required) nothing shows: the limit.
    // (`--no-checkpoint` does not ignore a checkpoint that is there.)
    f.verify(&[&copy], &["--no-checkpoint"])
        .problem(&copy, &[RECORDS + 2], &["checkpoint"]);
    fs::remove_file(format!("{}.checkpoint", copy.display())).unwrap();
    f.verify(&[&copy], &["--no-checkpoint"]).intact(RECORDS + 2);
}

/// As above, and the thief appends one more record (seq 10, keyed by evolving the
/// stolen key) so that the log now runs past the checkpoint. The checkpoint still says
/// what seq 9's MAC was; the log's seq 9 has another: the log contradicts its signed
/// checkpoint and must not verify.
#[test]
fn record_contradicting_the_checkpoint_fails_even_when_followed() {
    let f = Fixture::new(RECORDS);
    let stolen = unhex(f.state()["key"].as_str().unwrap());
    f.guard(2);
    let mut forged = f.lines();
    forged[RECORDS] = edit_msg(&forged[RECORDS]);
    let next = with_seq(&forged[RECORDS + 1], RECORDS as u64 + 2);
    forged.push(next);
    remac(&mut forged, RECORDS, stolen);
    let copy = f.copy("after-theft-extended", &forged);
    f.verify(&[&copy], &[])
        .problem(&copy, &[RECORDS + 2], &["checkpoint"]);
}

// ---------------------------------------------------------------------------------
// Keys kept off the host.

#[test]
fn initial_key_kept_off_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let exported = dir.path().join("initial.key");
    ok(ctl(&[
        "install",
        "--root",
        p(&root),
        "--mounts",
        "no",
        "--log-key-out",
        p(&exported),
    ]));
    assert!(exported.is_file());
    assert!(!root.join("install/logkeys/initial.key").exists());
    for _ in 0..3 {
        ok(ctl(&["guard", "--once", "--root", p(&root)]));
    }
    let log = root.join("logs/security/guard.jsonl");
    // Without the key: an error (exit 2), not a verdict.
    let out = ctl(&["log", "verify", p(&log), "--root", p(&root)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // With it, elsewhere: intact, with the host key given explicitly.
    let host_pub = root.join("install/host.pub");
    let out = ctl(&[
        "log",
        "verify",
        p(&log),
        "--root",
        p(&dir.path().join("nowhere")),
        "--initial-key",
        p(&exported),
        "--host-key",
        p(&host_pub),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("intact: 3 records of guard"));
    // Another initial key: the first record does not verify.
    let wrong = dir.path().join("wrong.key");
    fs::write(&wrong, format!("{}\n", "5a".repeat(32))).unwrap();
    let out = ctl(&[
        "log",
        "verify",
        p(&log),
        "--root",
        p(&root),
        "--initial-key",
        p(&wrong),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{}:1: ", log.display())) && stdout.contains("MAC"),
        "{}",
        text(&out)
    );
}
