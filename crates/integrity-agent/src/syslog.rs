//! `--syslog` and `--syslog-server`: each anomaly as its own message, facility
//! `authpriv`, severity by kind. Written by hand: a message is one formatted `send`,
//! and the syslog crates either speak one of the two formats or pull in more than the
//! agent should carry.
//!
//! * The local socket (`--syslog`, `/dev/log`) gets what libc's `syslog(3)` writes:
//!   `<PRI>Mmm dd hh:mm:ss integrity-agent[PID]: MSG` (no hostname), which a default
//!   rsyslog and journald parse into program name, pid and facility. The timestamp is
//!   UTC in that shape (both receivers stamp local messages with their own time).
//! * A remote collector (`--syslog-server udp://HOST:PORT|tcp://HOST:PORT`) gets
//!   RFC 5424 with structured data; one datagram per message over UDP (RFC 5426),
//!   octet-counting framing over TCP (RFC 6587 §3.4.1).

use integrity_common::{pathenc, Anomaly, AnomalyKind, ScanErrorRecord};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// `authpriv` (RFC 5424 §6.2.1, facility 10): security messages for administrators.
const AUTHPRIV: u8 = 10;
const CRIT: u8 = 2;
const ERR: u8 = 3;
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;
const TAG: &str = "integrity-agent";
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// Severity of each anomaly: content or type changes are errors, deletions and
/// permission/owner changes warnings, additions notices.
pub fn severity(kind: AnomalyKind) -> u8 {
    match kind {
        AnomalyKind::Modified | AnomalyKind::TypeChanged => ERR,
        AnomalyKind::Deleted | AnomalyKind::MetadataChanged => WARNING,
        AnomalyKind::Added => NOTICE,
    }
}

/// Where `--syslog-server` sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    Udp(String),
    Tcp(String),
}

/// `udp://HOST:PORT` or `tcp://HOST:PORT` (an IPv6 host in brackets).
pub fn parse_server(value: &str) -> Result<Server, String> {
    let (make, address): (fn(String) -> Server, &str) =
        if let Some(rest) = value.strip_prefix("udp://") {
            (Server::Udp, rest)
        } else if let Some(rest) = value.strip_prefix("tcp://") {
            (Server::Tcp, rest)
        } else {
            return Err("expected udp://HOST:PORT or tcp://HOST:PORT".into());
        };
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(make(address.to_owned()))
        }
        _ => Err("expected udp://HOST:PORT or tcp://HOST:PORT".into()),
    }
}

enum Remote {
    Udp(UdpSocket),
    /// Reconnected once when a send fails (the collector restarted).
    Tcp(Vec<SocketAddr>, Mutex<Option<TcpStream>>),
}

/// The syslog senders asked for: the local socket, a remote collector, or both.
pub struct Syslog {
    local: Option<UnixDatagram>,
    remote: Option<Remote>,
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

/// `Mmm dd hh:mm:ss` (day padded with a space), as libc's `syslog(3)` writes it; UTC.
fn bsd_timestamp(now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // `YYYY-MM-DDThh:mm:ssZ`
    let rfc3339 = humantime::format_rfc3339_seconds(now).to_string();
    let month: usize = rfc3339[5..7].parse().unwrap_or(1);
    let day: u8 = rfc3339[8..10].parse().unwrap_or(1);
    format!("{} {day:>2} {}", MONTHS[month - 1], &rfc3339[11..19])
}

fn tcp_connect(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, TCP_TIMEOUT) {
            Ok(stream) => {
                stream.set_write_timeout(Some(TCP_TIMEOUT))?;
                return Ok(stream);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

impl Syslog {
    /// `local`: the Unix datagram socket (`--syslog`); `server`: `--syslog-server`.
    pub fn connect(local: Option<&Path>, server: Option<&Server>) -> Result<Syslog, String> {
        let local = match local {
            Some(path) => Some(
                UnixDatagram::unbound()
                    .and_then(|socket| socket.connect(path).map(|()| socket))
                    .map_err(|error| {
                        format!("--syslog: cannot reach {}: {error}", path.display())
                    })?,
            ),
            None => None,
        };
        let remote = match server {
            Some(server) => {
                let address = match server {
                    Server::Udp(address) | Server::Tcp(address) => address,
                };
                let fail = |error: std::io::Error| format!("--syslog-server {address}: {error}");
                let addrs: Vec<SocketAddr> = address.to_socket_addrs().map_err(fail)?.collect();
                Some(match server {
                    Server::Udp(_) => {
                        let socket = addrs
                            .iter()
                            .find_map(|addr| {
                                let any: SocketAddr = if addr.is_ipv4() {
                                    "0.0.0.0:0".parse().ok()?
                                } else {
                                    "[::]:0".parse().ok()?
                                };
                                let socket = UdpSocket::bind(any).ok()?;
                                socket.connect(addr).ok()?;
                                Some(socket)
                            })
                            .ok_or_else(|| fail(std::io::Error::other("cannot connect")))?;
                        Remote::Udp(socket)
                    }
                    Server::Tcp(_) => {
                        let stream = tcp_connect(&addrs).map_err(fail)?;
                        Remote::Tcp(addrs, Mutex::new(Some(stream)))
                    }
                })
            }
            None => None,
        };
        Ok(Syslog {
            local,
            remote,
            hostname: hostname(),
            pid: std::process::id(),
        })
    }

    /// One message to each sender; the first error is returned after all were tried.
    /// `image` and `msgid` lead the local message, which has no structured data.
    fn send(
        &self,
        severity: u8,
        image: &str,
        msgid: &str,
        sd: &str,
        message: &str,
    ) -> std::io::Result<()> {
        let now = SystemTime::now();
        let pri = AUTHPRIV * 8 + severity;
        let mut result = Ok(());
        if let Some(socket) = &self.local {
            let line = format!(
                "<{pri}>{} {TAG}[{}]: {msgid} image={image} {message}",
                bsd_timestamp(now),
                self.pid
            );
            result = socket.send(line.as_bytes()).map(drop);
        }
        if let Some(remote) = &self.remote {
            let line = format!(
                "<{pri}>1 {} {} {TAG} {} {msgid} {sd} {message}",
                humantime::format_rfc3339_micros(now),
                self.hostname,
                self.pid
            );
            let sent = match remote {
                Remote::Udp(socket) => socket.send(line.as_bytes()).map(drop),
                Remote::Tcp(addrs, stream) => {
                    let frame = format!("{} {line}", line.len());
                    let mut stream = stream.lock().unwrap_or_else(|poison| poison.into_inner());
                    let first = match stream.as_mut() {
                        Some(tcp) => tcp.write_all(frame.as_bytes()),
                        None => Err(std::io::Error::other("not connected")),
                    };
                    first.or_else(|_| {
                        *stream = None;
                        let mut tcp = tcp_connect(addrs)?;
                        tcp.write_all(frame.as_bytes())?;
                        *stream = Some(tcp);
                        Ok(())
                    })
                }
            };
            result = result.and(sent);
        }
        result
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
        let kind = anomaly.kind.as_str();
        self.send(severity(anomaly.kind), image_id, kind, &sd, &json)
    }

    pub fn scan_error(&self, image_id: &str, error: &ScanErrorRecord) -> std::io::Result<()> {
        let path = pathenc::encode(&error.path);
        let sd = format!(
            "[integrity@32473 image=\"{}\" path=\"{}\"]",
            sd_escape(image_id),
            sd_escape(&path)
        );
        let json = serde_json::json!({ "error": error.error, "path": path }).to_string();
        self.send(WARNING, image_id, "error", &sd, &json)
    }

    /// A refused baseline (signature missing or wrong): critical.
    pub fn security(&self, image_id: &str, message: &str) -> std::io::Result<()> {
        let sd = format!("[integrity@32473 image=\"{}\"]", sd_escape(image_id));
        self.send(CRIT, image_id, "security", &sd, message)
    }

    pub fn summary(&self, image_id: &str, summary_json: &str) -> std::io::Result<()> {
        let sd = format!("[integrity@32473 image=\"{}\"]", sd_escape(image_id));
        self.send(INFO, image_id, "summary", &sd, summary_json)
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

    #[test]
    fn timestamps_like_libc() {
        let at = |secs: u64| bsd_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        // 2026-12-01T06:55:00Z and 2026-11-23T17:31:43Z
        assert_eq!(at(1_796_108_100), "Dec  1 06:55:00");
        assert_eq!(at(1_795_455_103), "Nov 23 17:31:43");
    }

    #[test]
    fn servers() {
        assert_eq!(
            parse_server("udp://logs.example:514"),
            Ok(Server::Udp("logs.example:514".into()))
        );
        assert_eq!(
            parse_server("tcp://[::1]:6514"),
            Ok(Server::Tcp("[::1]:6514".into()))
        );
        for bad in [
            "logs:514",
            "udp://logs",
            "tcp://:514",
            "udp://h:0",
            "udp://h:x",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }
}
