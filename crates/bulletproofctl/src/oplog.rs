//! The operations log of a root: `logs/ops/bulletproofctl.log` for people and
//! `logs/ops/bulletproofctl.jsonl` for machines, one record per decision (update,
//! refusal, rollback, recover, key pinning). Best effort: a full disk must not turn a
//! finished update into a failed one. Every record also goes to the tamper-evident
//! security chain (`seclog`, `logs/security/bulletproofctl.jsonl`).

use crate::layout::Layout;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

pub fn record(layout: &Layout, op: &str, message: &str) {
    crate::seclog::event(layout, op, message, serde_json::json!({}));
    let dir = layout.ops_log_dir();
    if !dir.is_dir() {
        return;
    }
    let at = integrity_common::manifest::now_timestamp();
    let append = |name: &str, line: &str| {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(dir.join(name))
        {
            let _ = file.write_all(line.as_bytes());
        }
    };
    append(
        "bulletproofctl.log",
        &format!("[{at}] {op}: {}\n", message.replace('\n', " ")),
    );
    let json = serde_json::json!({ "ts": at, "component": "bulletproofctl", "op": op, "message": message });
    append("bulletproofctl.jsonl", &format!("{json}\n"));
}
