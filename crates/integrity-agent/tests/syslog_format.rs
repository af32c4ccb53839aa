//! The agent's syslog messages on the wire: on the local socket the format libc's
//! `syslog(3)` writes (compared with util-linux `logger`, and read by a real rsyslogd
//! with its default parser and file format); to a remote collector RFC 5424, one UDP
//! datagram per message or octet-counted over TCP (RFC 6587).

use std::fs;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A tree, its baseline, and drift: `etc/passwd` modified (authpriv.err = 83) and
/// `srv/new` added (authpriv.notice = 85). Returns the agent's arguments for it.
fn drifted(dir: &Path) -> Vec<String> {
    let root = dir.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("srv")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let scanned = integrity_common::scan(
        &integrity_common::ScanOptions {
            root: root.clone(),
            exclusions: integrity_common::Exclusions::defaults(),
            cross_filesystems: false,
            policy: None,
        },
        &integrity_common::ScanProgress::default(),
    )
    .unwrap();
    let baseline = integrity_common::Baseline {
        image_id: "img-fmt".to_owned(),
        timestamp: "2026-11-23T07:31:43Z".to_owned(),
        entries: scanned.entries,
        errors: scanned.errors,
        policy: None,
    };
    let file = dir.join("baseline.json");
    fs::write(&file, baseline.to_json_bytes()).unwrap();
    fs::write(root.join("etc/passwd"), "changed\n").unwrap();
    fs::write(root.join("srv/new"), "x").unwrap();
    vec![
        "--root".into(),
        root.display().to_string(),
        "--baseline".into(),
        file.display().to_string(),
    ]
}

/// Runs the agent to its end; its pid and exit code.
fn run_agent(args: &[String]) -> (u32, Option<i32>) {
    let mut child = Command::new(AGENT)
        .args(args)
        .env_remove("IMAGE_ID")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    (pid, child.wait().unwrap().code())
}

/// `<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG`, strictly: the parts, or why not.
#[derive(Debug)]
struct Local {
    pri: u8,
    timestamp: String,
    tag: String,
    pid: u32,
    msg: String,
}

fn parse_local(line: &str) -> Result<Local, String> {
    let rest = line.strip_prefix('<').ok_or("no <PRI>")?;
    let (pri, rest) = rest.split_once('>').ok_or("no <PRI>")?;
    let pri: u8 = pri.parse().map_err(|_| "PRI not a number")?;
    let timestamp = rest.get(..15).ok_or("short timestamp")?;
    let b = timestamp.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let day_ok = (b[4] == b' ' && (b'1'..=b'9').contains(&b[5]))
        || (digits(4..6) && &timestamp[4..6] >= "10" && &timestamp[4..6] <= "31");
    if !MONTHS.contains(&&timestamp[..3])
        || b[3] != b' '
        || !day_ok
        || b[6] != b' '
        || !digits(7..9)
        || b[9] != b':'
        || !digits(10..12)
        || b[12] != b':'
        || !digits(13..15)
    {
        return Err(format!("timestamp {timestamp:?} is not `Mmm dd hh:mm:ss`"));
    }
    let rest = rest[15..]
        .strip_prefix(' ')
        .ok_or("no space after timestamp")?;
    let (tag, rest) = rest.split_once('[').ok_or("no TAG[")?;
    let (pid, msg) = rest.split_once("]: ").ok_or("no ]: ")?;
    if tag.is_empty() || !tag.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(format!("tag {tag:?}"));
    }
    Ok(Local {
        pri,
        timestamp: timestamp.to_owned(),
        tag: tag.to_owned(),
        pid: pid.parse().map_err(|_| format!("pid {pid:?}"))?,
        msg: msg.to_owned(),
    })
}

fn seconds_of_day(timestamp: &str) -> i64 {
    let part = |at: usize| timestamp[at..at + 2].parse::<i64>().unwrap();
    part(7) * 3600 + part(10) * 60 + part(13)
}

fn receive_all(socket: &UnixDatagram) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut messages = Vec::new();
    let mut buffer = vec![0; 65536];
    while let Ok(n) = socket.recv(&mut buffer) {
        messages.push(String::from_utf8(buffer[..n].to_vec()).unwrap());
    }
    messages
}

#[test]
fn local_messages_have_the_structure_logger_and_libc_write() {
    let dir = tempfile::tempdir().unwrap();
    let args = drifted(dir.path());
    let socket_path = dir.path().join("log");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    // util-linux logger on a Unix socket, without --rfc3164/--rfc5424, writes libc's
    // local format (with --rfc3164 it adds a hostname, which syslog(3) does not).
    let logger = Command::new("logger")
        .args(["--socket-errors=on", "-u"])
        .arg(&socket_path)
        .args(["-t", "integrity-agent", "--id=4242", "-p", "authpriv.err"])
        .arg("modified image=img-fmt {}")
        .env("TZ", "UTC")
        .status()
        .expect("logger (Debian package bsdutils; scripts/test installs it)");
    assert!(logger.success());
    let reference = receive_all(&socket);
    assert_eq!(reference.len(), 1, "{reference:?}");
    let reference = parse_local(&reference[0]).unwrap_or_else(|e| panic!("logger: {e}"));
    assert_eq!(
        (reference.pri, reference.tag.as_str(), reference.pid),
        (83, "integrity-agent", 4242)
    );
    assert_eq!(reference.msg, "modified image=img-fmt {}");

    let mut with_syslog = args.clone();
    with_syslog.extend(["--syslog".into(), "--syslog-socket".into()]);
    with_syslog.push(socket_path.display().to_string());
    let (pid, code) = run_agent(&with_syslog);
    assert_eq!(code, Some(1 | 4));
    let ours = receive_all(&socket);
    assert_eq!(ours.len(), 3, "modified, added, summary: {ours:?}");
    let ours: Vec<Local> = ours
        .iter()
        .map(|line| parse_local(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for message in &ours {
        assert_eq!(message.tag, "integrity-agent", "{message:?}");
        assert_eq!(message.pid, pid, "{message:?}");
        // UTC, in the shape logger wrote (TZ=UTC) a moment ago.
        let apart = (seconds_of_day(&message.timestamp) - seconds_of_day(&reference.timestamp))
            .rem_euclid(86400);
        assert!(apart <= 60, "{message:?} vs {reference:?}");
        assert!(!message.msg.contains("integrity-agent"), "{message:?}");
    }
    let find = |kind: &str| {
        ours.iter()
            .find(|m| m.msg.starts_with(&format!("{kind} image=img-fmt {{")))
            .unwrap_or_else(|| panic!("no {kind} in {ours:?}"))
    };
    let modified = find("modified");
    assert_eq!(modified.pri, 10 * 8 + 3);
    let json: serde_json::Value = serde_json::from_str(
        modified
            .msg
            .split_once(' ')
            .unwrap()
            .1
            .split_once(' ')
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(json["path"], "/etc/passwd");
    assert_eq!(find("added").pri, 10 * 8 + 5);
    assert_eq!(find("summary").pri, 10 * 8 + 6);
}

/// rsyslogd with its defaults, only the socket and the output files moved; killed
/// (and reaped) when dropped.
struct Rsyslogd {
    child: std::process::Child,
    socket: PathBuf,
    all: PathBuf,
    auth: PathBuf,
}

impl Rsyslogd {
    fn start(dir: &Path) -> Rsyslogd {
        let socket = dir.join("log");
        let all = dir.join("all.log");
        let auth = dir.join("auth.log");
        let conf = dir.join("rsyslog.conf");
        // As Debian's /etc/rsyslog.conf: the default file format, auth,authpriv.* apart.
        fs::write(
            &conf,
            format!(
                "module(load=\"imuxsock\" SysSock.Name=\"{}\")\n*.* {}\nauth,authpriv.* {}\n",
                socket.display(),
                all.display(),
                auth.display()
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .spawn()
            .expect("rsyslogd (Debian package rsyslog; scripts/test installs it)");
        let rsyslogd = Rsyslogd {
            child,
            socket,
            all,
            auth,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rsyslogd.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        rsyslogd
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `file` has `count` lines containing `needle`.
fn lines_with(file: &Path, needle: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not {count} lines with {needle:?} in\n{text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_default_rsyslog_logs_program_name_pid_and_facility() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = drifted(dir.path());
    let rsyslogd = Rsyslogd::start(dir.path());
    args.extend(["--syslog".into(), "--syslog-socket".into()]);
    args.push(rsyslogd.socket.display().to_string());
    let (pid, code) = run_agent(&args);
    assert_eq!(code, Some(1 | 4));
    let tag = format!(" integrity-agent[{pid}]: ");
    let lines = lines_with(&rsyslogd.all, &tag, 3);
    // The default file format (RSYSLOG_FileFormat: `TIMESTAMP HOST TAG[PID]: MSG`, or
    // the traditional `Mmm dd hh:mm:ss HOST TAG[PID]: MSG` where configured), once.
    for line in &lines {
        let (head, msg) = line.split_once(&tag).unwrap();
        let words: Vec<&str> = head.split(' ').filter(|w| !w.is_empty()).collect();
        assert!(
            (words.len() == 2 && words[0].len() >= 20 && words[0].as_bytes()[10] == b'T')
                || (words.len() == 4 && MONTHS.contains(&words[0])),
            "{line}"
        );
        assert!(
            msg.starts_with("modified image=img-fmt {")
                || msg.starts_with("added image=img-fmt {")
                || msg.starts_with("summary image=img-fmt {"),
            "{line}"
        );
        assert!(
            !msg.contains("integrity-agent") && !msg.contains('<') && !msg.contains(" 1 "),
            "doubled header: {line}"
        );
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    // Facility authpriv: the same three in the auth,authpriv.* file.
    assert_eq!(lines_with(&rsyslogd.auth, &tag, 3).len(), 3);
    drop(rsyslogd);
}

/// RFC 5424 with our fields: `<PRI>1 TIMESTAMP HOST integrity-agent PID MSGID [SD] MSG`.
fn check_rfc5424(message: &str, pid: u32) -> (u8, String) {
    let (pri, rest) = message[1..].split_once('>').unwrap();
    let fields: Vec<&str> = rest.splitn(7, ' ').collect();
    assert_eq!(fields[0], "1", "{message}");
    assert!(
        fields[1].len() == 27 && fields[1].ends_with('Z') && fields[1].as_bytes()[10] == b'T',
        "{message}"
    );
    assert!(!fields[2].is_empty(), "{message}");
    assert_eq!(fields[3], "integrity-agent", "{message}");
    assert_eq!(fields[4], pid.to_string(), "{message}");
    assert!(
        fields[6].starts_with("[integrity@32473 image=\"img-fmt\""),
        "{message}"
    );
    (pri.parse().unwrap(), fields[5].to_owned())
}

#[test]
fn remote_collectors_get_rfc5424_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = drifted(dir.path());
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    args.push("--syslog-server".into());
    args.push(format!("udp://{}", socket.local_addr().unwrap()));
    let (pid, code) = run_agent(&args);
    assert_eq!(code, Some(1 | 4));
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut got = Vec::new();
    let mut buffer = vec![0; 65536];
    while let Ok(n) = socket.recv(&mut buffer) {
        got.push(check_rfc5424(
            std::str::from_utf8(&buffer[..n]).unwrap(),
            pid,
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [
            (83, "modified".to_owned()),
            (85, "added".to_owned()),
            (86, "summary".to_owned())
        ]
    );
}

#[test]
fn remote_collectors_get_octet_counted_rfc5424_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = drifted(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    args.push("--syslog-server".into());
    args.push(format!("tcp://{}", listener.local_addr().unwrap()));
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let (pid, code) = run_agent(&args);
    assert_eq!(code, Some(1 | 4));
    let bytes = reader.join().unwrap();
    let mut rest = std::str::from_utf8(&bytes).unwrap();
    let mut got = Vec::new();
    while !rest.is_empty() {
        let (length, after) = rest.split_once(' ').unwrap();
        let length: usize = length.parse().unwrap();
        let (message, after) = after.split_at(length);
        assert!(!message.ends_with('\n'), "{message:?}");
        got.push(check_rfc5424(message, pid));
        rest = after;
    }
    assert_eq!(
        got,
        [
            (83, "modified".to_owned()),
            (85, "added".to_owned()),
            (86, "summary".to_owned())
        ]
    );
}

#[test]
fn bad_syslog_servers_are_refused() {
    for bad in ["logs:514", "udp://logs", "http://logs:514"] {
        let output = Command::new(AGENT)
            .args(["--baseline", "/nonexistent", "--syslog-server", bad])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(14), "{bad}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("udp://HOST:PORT"),
            "{bad}"
        );
    }
}
