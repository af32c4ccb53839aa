//! The JSON of the fleet's read routes (REFERENCE §7), from the state in memory. The
//! pages (`/ui/`) render the same values.

use super::drift::GroupKey;
use super::host::{Host, Status};
use super::FleetState;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Most hosts of a drift group listed in its `sample`.
pub const SAMPLE: usize = 10;

/// Counts of one image's hosts by status, and its latest report's time.
#[derive(Debug, Default, Clone)]
pub struct ImageCounts {
    pub by_status: BTreeMap<Status, u64>,
    pub last_report: Option<String>,
}

/// Every image's host counts: images with a baseline (`images`) and images hosts
/// report for.
pub fn image_counts(
    state: &FleetState,
    images: &[String],
    now: u64,
    stale_after: u64,
) -> BTreeMap<String, ImageCounts> {
    // The hot loop of `/fleet`, `/metrics` and the overview (every host, under the fleet
    // lock): no allocation per host, the latest report compared as seconds, and its text
    // copied once per image at the end (the profile showed the string compare and the
    // image id clone per host first).
    let mut counts: BTreeMap<&str, (ImageCounts, Option<&Host>)> = images
        .iter()
        .map(|image| (image.as_str(), Default::default()))
        .collect();
    for host in state.hosts.values() {
        let image = host.record.image_id.as_str();
        let (image_counts, latest) = match counts.get_mut(image) {
            Some(entry) => entry,
            None => counts.entry(image).or_default(),
        };
        *image_counts
            .by_status
            .entry(host.status(now, stale_after, &state.accepts))
            .or_default() += 1;
        if latest.is_none_or(|latest| latest.last_seen_secs < host.last_seen_secs) {
            *latest = Some(host);
        }
    }
    counts
        .into_iter()
        .map(|(image, (mut image_counts, latest))| {
            image_counts.last_report = latest.map(|host| host.record.last_seen.clone());
            (image.to_owned(), image_counts)
        })
        .collect()
}

/// `GET /fleet`.
pub fn fleet(counts: &BTreeMap<String, ImageCounts>) -> Value {
    let images: Vec<Value> = counts
        .iter()
        .map(|(image_id, counts)| {
            let hosts: serde_json::Map<String, Value> = Status::ALL
                .iter()
                .map(|status| {
                    (
                        status.as_str().to_owned(),
                        counts.by_status.get(status).copied().unwrap_or(0).into(),
                    )
                })
                .collect();
            let total: u64 = counts.by_status.values().sum();
            json!({
                "image_id": image_id,
                "hosts": hosts,
                "total": total,
                "status": if total == 0 { "never" } else { "reporting" },
                "last_report": counts.last_report,
            })
        })
        .collect();
    json!({ "images": images })
}

/// One host (`GET /hosts` entries; `/hosts/{id}` adds `latest`).
pub fn host(host: &Host, state: &FleetState, now: u64, stale_after: u64) -> Value {
    let record = &host.record;
    let (summary, accepted) = host.summary(&state.accepts);
    let latest = host.latest.as_ref();
    json!({
        "host_id": record.host_id,
        "hostname": record.hostname,
        "image_id": record.image_id,
        "status": host.status(now, stale_after, &state.accepts).as_str(),
        "first_seen": record.first_seen,
        "last_seen": record.last_seen,
        "last_seq": record.last_seq,
        "gaps": record.gaps,
        "key_fingerprint": host.key.as_ref().map(integrity_trust::key_id),
        "enrolled": record.enrolled,
        "summary": summary,
        "accepted": accepted,
        "interval_secs": record.interval_secs,
        "spool_dropped": record.spool_dropped,
        "agent_version": latest.map(|latest| latest.agent_version.as_str()),
        "mode": latest.map(|latest| latest.mode.as_str()),
        "last_full": latest.and_then(|latest| latest.last_full.as_deref()),
        "error": latest.and_then(|latest| latest.error.as_deref()),
        "truncated": latest.map_or(0, |latest| latest.truncated),
    })
}

/// The latest report, parsed, each finding marked with the accept that covers it.
pub fn latest_report(bytes: &[u8], host: &Host, state: &FleetState) -> Value {
    let mut report: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    if let Some(Value::Array(anomalies)) = report.get_mut("anomalies") {
        for anomaly in anomalies.iter_mut() {
            let accepted =
                serde_json::from_value::<integrity_common::report::ReportAnomaly>(anomaly.clone())
                    .ok()
                    .and_then(|finding| {
                        state
                            .accepts
                            .covering(
                                &host.record.image_id,
                                &host.record.host_id,
                                &GroupKey::of(&finding),
                            )
                            .map(|accept| accept.id.clone())
                    });
            if let Value::Object(fields) = anomaly {
                fields.insert("accepted".into(), accepted.into());
            }
        }
    }
    report
}

/// `GET /drift`: the groups of one image (every image when `None`).
pub fn drift(state: &FleetState, image_id: Option<&str>, limit: usize) -> Value {
    let groups: Vec<Value> = state
        .drift
        .groups(image_id)
        .into_iter()
        .take(limit)
        .map(|(image, key, hosts)| {
            json!({
                "id": key.id(),
                "image_id": image,
                "path": key.path,
                "anomaly": key.anomaly,
                "current": serde_json::from_str::<Value>(&key.current).unwrap_or(Value::Null),
                "hosts": hosts.len(),
                "sample": hosts.iter().take(SAMPLE).collect::<Vec<_>>(),
                "accepted": state.accepts.of_group(image, key).map(|accept| accept.id.as_str()),
            })
        })
        .collect();
    json!({ "groups": groups })
}
