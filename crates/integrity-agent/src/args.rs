//! The command line (REFERENCE §5, "integrity-agent"): flags, help, exit codes.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Bad arguments or configuration.
pub const EXIT_USAGE: u8 = 14;
/// No baseline: service unreachable with nothing cached, 404, unreadable file.
pub const EXIT_UNAVAILABLE: u8 = 15;
/// A baseline that is not valid, or is another image's.
pub const EXIT_INVALID: u8 = 16;
/// A public key is pinned and the baseline's signature is missing or wrong.
pub const EXIT_UNTRUSTED: u8 = 17;
/// The root cannot be scanned, or the report cannot be written.
pub const EXIT_IO: u8 = 18;

const AFTER_HELP: &str = "\
Exit status of a one-shot check (AIDE's bitmask; add the bits, so drift is 1-7):
   0  no drift
   1  entries added         2  entries deleted
   4  entries changed: content, type, or metadata (mode, owner, group);
      which fields changed is in the report
  14  bad arguments or configuration
  15  no baseline: service unreachable and none cached, 404, unreadable --baseline
  16  baseline invalid, or the baseline of another image id
  17  --public-key given and the baseline's signature is missing, does not verify,
      was made by another key, or names another image id
  18  root unreadable, or the report could not be written
With --interval the agent runs until SIGTERM/SIGINT and then exits 0; a failed check
is logged and retried at the next interval.

Paths that cannot be read are listed (\"not checked\" / {\"error\":…}) and counted in the
summary; they set no bit. When the service cannot be reached the last fetched baseline
(cached under --cache-dir with its ETag) is used, and the report says so.

A baseline in the seed's format (only path, sha256, mode, uid, gid: no directories or
links) is compared against regular files only.

Policy: the rules inside the baseline (chosen by the image builder, covered by its
signature) decide what is checked where; the first matching rule wins. A local
--policy can only add checks unless --allow-weaker-policy is given (logged on every
check). --explain PATH shows the rule for a path; --verbose names the rule behind
each reported change and lists what the policy let through.

Reports: with --server (unless --no-report), every check, also one that could not
run, is sent to the service as a report signed with this host's key (kept in
--state-dir with the host id, the last sequence number and the spool). A report the
service cannot take now (unreachable, timeout, 5xx, 429) waits in the spool and goes
first next time; one it refuses (another 4xx) is logged with its reason and dropped.
Reporting never changes the exit status.

Environment:
  IMAGE_ID           image id when --image-id is not given
  BULLETPROOF_TOKEN  report token when --token is not given";
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Colour {
    Auto,
    Always,
    Never,
}

/// Check this machine against its golden-image baseline and report every drift.
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["server", "baseline"])))]
pub struct Args {
    /// Root of the tree to check; paths are compared relative to it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Fetch the baseline from the metadata service at URL, and send it a report after
    /// each check. Repeatable: replicas of one service, tried in order, the next on a
    /// connection error, timeout or 5xx.
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,

    /// Use the baseline in FILE (offline).
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Image id of this machine (required with --server).
    #[arg(long, value_name = "ID", env = "IMAGE_ID")]
    pub image_id: Option<String>,

    /// Trust only baselines signed by this minisign public key (the signature comes
    /// from the service, or from FILE.minisig beside --baseline FILE).
    #[arg(long, value_name = "KEY")]
    pub public_key: Option<PathBuf>,

    /// Check once and exit with the drift bitmask (the default).
    #[arg(long, conflicts_with = "interval")]
    pub once: bool,

    /// Check every SECS seconds (plus up to 10 % random delay) until SIGTERM.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Also send each anomaly to the local syslog socket (the format of libc's
    /// syslog(3): tag integrity-agent[PID], facility authpriv).
    #[arg(long)]
    pub syslog: bool,

    /// Syslog socket for --syslog.
    #[arg(long, value_name = "PATH", default_value = "/dev/log")]
    pub syslog_socket: PathBuf,

    /// Also send each anomaly to a remote collector as RFC 5424 (over TCP with
    /// octet-counting framing, RFC 6587).
    #[arg(long, value_name = "udp://HOST:PORT|tcp://HOST:PORT", value_parser = crate::syslog::parse_server)]
    pub syslog_server: Option<crate::syslog::Server>,

    /// Colour in the text report.
    #[arg(long, value_enum, default_value_t = Colour::Auto)]
    pub color: Colour,

    /// Where the last fetched baseline is kept (with its ETag). Without this flag:
    /// /var/cache/bulletproof/agent, which the agent names on stderr the first time it
    /// writes there.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Trust this PEM CA certificate for an https --server.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Attempts to fetch before falling back to the cache.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub fetch_attempts: u32,

    /// Refuse a baseline from the service (or the cache) larger than BYTES, counted
    /// once decompressed; the compressed answer is bounded by the same number, and
    /// the read stops as soon as it is passed. The default, 536870912 (512 MiB), is
    /// the service's default max_body_bytes.
    #[arg(long, value_name = "BYTES", default_value_t = integrity_client::DEFAULT_MAX_BASELINE_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_baseline_bytes: u64,

    /// Also exclude PATH (relative to --root) and everything below it. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub exclude: Vec<PathBuf>,

    /// Do not apply the default exclusions.
    #[arg(long)]
    pub no_default_excludes: bool,

    /// Descend into other filesystems mounted below the root.
    #[arg(long)]
    pub cross_filesystems: bool,

    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// A local TOML policy on top of the baseline's signed one. It may only add checks;
    /// a rule that would remove one (`ignore`, `added_ok`, `growing`) is refused.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Let the local --policy take precedence over the baseline's, weakening it where it
    /// says so. Every check then logs a warning (stderr, and syslog with --syslog).
    #[arg(long, requires = "policy")]
    pub allow_weaker_policy: bool,

    /// Say which rule applies to PATH (relative to --root, e.g. /etc/hostname) and what
    /// is checked there, then exit. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub explain: Vec<String>,

    /// Name the rule behind every reported change, and list the changes the policy let
    /// through with the rule that did.
    #[arg(long, short)]
    pub verbose: bool,

    /// This host's reporting state: key pair (host.key, host.pub), host-id, last
    /// sequence number (seq) and spool/. Created 0700; refused when group or others can
    /// write it or another user owns it (exit 14). When the default cannot be used (an
    /// unprivileged run), the check still runs and says that no report was sent
    /// [default: /var/lib/bulletproof/agent]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Report as this host id (32 lowercase hex digits) instead of the one in
    /// --state-dir (made from /etc/machine-id, or at random, on first use).
    #[arg(long, value_name = "ID", value_parser = parse_host_id)]
    pub host_id: Option<String>,

    /// Do not send reports to --server, and keep no state (--state-dir is not used, so
    /// every check is full).
    #[arg(long)]
    pub no_report: bool,

    /// Read every file again (a full check), whatever the verified state says.
    #[arg(long)]
    pub full: bool,

    /// Make a check full when the last full one is older than DUR (30m, 24h, 7d): in
    /// between, a check reads only the files whose kernel state (inode, size, mtime,
    /// ctime) changed since they were verified. 0: every check is full.
    #[arg(long, value_name = "DUR", default_value = "24h", allow_hyphen_values = true, value_parser = humantime::parse_duration)]
    pub full_every: std::time::Duration,

    /// Stay running and report changes as they happen (fanotify, else inotify): each
    /// changed path is checked against the baseline within a second; an incremental
    /// check runs every --interval (default 3600) as a safety net, and at once when the
    /// kernel's event queue overflows.
    #[arg(long, conflicts_with = "once")]
    pub watch: bool,

    /// Bearer token (scope report) for sending reports to --server.
    #[arg(
        long,
        value_name = "T",
        env = "BULLETPROOF_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Read the report token from F (keeps it out of `ps`; takes precedence over
    /// --token and BULLETPROOF_TOKEN). Refused when group or others can write it (or
    /// its directory), or another user owns it; a warning when they can read it.
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,

    /// Keep at most N unsent reports; beyond, the oldest are dropped (and the next
    /// report says how many).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub spool_max: u64,

    /// Put at most N anomaly lines in a report; the rest are counted in its
    /// `truncated`.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub report_max_anomalies: u64,
}

fn parse_host_id(text: &str) -> Result<String, String> {
    integrity_common::report::validate_host_id(text).map(|()| text.to_owned())
}
