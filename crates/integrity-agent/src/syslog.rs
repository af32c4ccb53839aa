//! `--syslog`: each anomaly as its own RFC 5424 message on the local syslog socket,
//! facility `authpriv`, severity by kind. Written by hand: it is one `sendto` of a
//! formatted line on a Unix datagram socket, and the syslog crates either speak only
//! RFC 3164 or pull in more than the agent should carry.

use integrity_common::{pathenc, Anomaly, AnomalyKind, ScanErrorRecord};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// `authpriv` (RFC 5424 §6.2.1, facility 10): security messages for administrators.
const AUTHPRIV: u8 = 10;
const CRIT: u8 = 2;
const ERR: u8 = 3;
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;

/// Severity of each anomaly: content or type changes are errors, deletions and
/// permission/owner changes warnings, additions notices.
pub fn severity(kind: AnomalyKind) -> u8 {
    match kind {
        AnomalyKind::Modified | AnomalyKind::TypeChanged => ERR,
        AnomalyKind::Deleted | AnomalyKind::MetadataChanged => WARNING,
        AnomalyKind::Added => NOTICE,
    }
}

/// A connected syslog sender.
pub struct Syslog {
    socket: UnixDatagram,
    hostname: String,
    pid: u32,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".into())
}

/// RFC 5424 PARAM-VALUE escaping: `"`, `\` and `]`.
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Syslog {
    pub fn connect(path: &Path) -> std::io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Syslog {
            socket,
            hostname: hostname(),
            pid: std::process::id(),
        })
    }

    fn send(&self, severity: u8, msgid: &str, sd: &str, message: &str) -> std::io::Result<()> {
        let timestamp = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let line = format!(
            "<{}>1 {timestamp} {} integrity-agent {} {msgid} {sd} {message}",
            AUTHPRIV * 8 + severity,
            self.hostname,
            self.pid
        );
        self.socket.send(line.as_bytes()).map(drop)
    }

    /// One anomaly: structured data names kind and path, the message is its JSON line.
    pub fn anomaly(&self, image_id: &str, anomaly: &Anomaly<'_>) -> std::io::Result<()> {
        let path = pathenc::encode(anomaly.path);
        let sd = format!(
            "[integrity@32473 image=\"{}\" anomaly=\"{}\" path=\"{}\"]",
            sd_escape(image_id),
            anomaly.kind,
            sd_escape(&path)
        );
        let json = serde_json::to_string(anomaly).unwrap_or_default();
        self.send(severity(anomaly.kind), anomaly.kind.as_str(), &sd, &json)
    }

    pub fn scan_error(&self, image_id: &str, error: &ScanErrorRecord) -> std::io::Result<()> {
        let path = pathenc::encode(&error.path);
        let sd = format!(
            "[integrity@32473 image=\"{}\" path=\"{}\"]",
            sd_escape(image_id),
            sd_escape(&path)
        );
        let json = serde_json::json!({ "error": error.error, "path": path }).to_string();
        self.send(WARNING, "error", &sd, &json)
    }

    /// A refused baseline (signature missing or wrong): critical.
    pub fn security(&self, image_id: &str, message: &str) -> std::io::Result<()> {
        let sd = format!("[integrity@32473 image=\"{}\"]", sd_escape(image_id));
        self.send(CRIT, "security", &sd, message)
    }

    pub fn summary(&self, image_id: &str, summary_json: &str) -> std::io::Result<()> {
        let sd = format!("[integrity@32473 image=\"{}\"]", sd_escape(image_id));
        self.send(INFO, "summary", &sd, summary_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_structured_data() {
        assert_eq!(sd_escape(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    }

    #[test]
    fn severities() {
        assert_eq!(severity(AnomalyKind::Modified), ERR);
        assert_eq!(severity(AnomalyKind::Added), NOTICE);
        assert_eq!(AUTHPRIV * 8 + severity(AnomalyKind::Modified), 83);
    }
}
