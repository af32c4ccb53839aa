//! The operations log of a root: `logs/ops/bulletproofctl.log` for people and
//! `logs/ops/bulletproofctl.jsonl` for machines, one record per decision (update,
//! refusal, rollback, recover, key pinning). Best effort: a full disk must not turn a
//! finished update into a failed one. (The tamper-evident chain of DESIGN §9 is the
//! guard issue's; it will take over `record`.)

use crate::layout::Layout;
use std::io::Write;

pub fn record(layout: &Layout, op: &str, message: &str) {
    let dir = layout.ops_log_dir();
    if !dir.is_dir() {
        return;
    }
    let at = integrity_common::manifest::now_timestamp();
    let append = |name: &str, line: &str| {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
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
