//! The host report (REFERENCE §7): what an agent sends the service after every check,
//! signed with its host key over the exact bytes. Both sides use this one type: the
//! agent builds and serialises it, the service parses and validates it.
//!
//! Parsing is strict where it matters (every required field present with its type, ids
//! and timestamps well formed, the error names the field) and lenient where the
//! contract allows it (unknown fields are kept out of the type, not refused: additive
//! fields are allowed).

use crate::diff::DriftSummary;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Length of a host id: 32 lowercase hex digits (a machine-id).
pub const HOST_ID_LEN: usize = 32;
/// Longest hostname accepted (a DNS name is at most 253).
pub const MAX_HOSTNAME: usize = 255;
/// Longest free-text field (agent version, error).
pub const MAX_TEXT: usize = 4096;
/// Largest one finding may be, as JSON (a symlink target of 4096 control characters
/// is about 25 KB escaped): the service keeps findings in memory as drift groups.
pub const MAX_FINDING_BYTES: usize = 64 * 1024;
/// Largest report an agent sends (the service's default limit is 4 MiB): findings
/// beyond are counted in `truncated`.
pub const AGENT_MAX_REPORT_BYTES: usize = 3 * 1024 * 1024;

/// Most anomalies a report may carry (the agent's `--report-max-anomalies` default is
/// 1000; the service enforces its own limit at or below this).
pub const MAX_ANOMALIES: usize = 100_000;

/// Checks a host id: exactly 32 lowercase hex digits.
pub fn validate_host_id(host_id: &str) -> Result<(), String> {
    if host_id.len() == HOST_ID_LEN
        && host_id
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    {
        Ok(())
    } else {
        Err(format!(
            "host id must be {HOST_ID_LEN} lowercase hex digits (like /etc/machine-id), got {} characters",
            host_id.chars().count()
        ))
    }
}

/// How a check ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportMode {
    Full,
    Incremental,
    Watch,
}

impl ReportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportMode::Full => "full",
            ReportMode::Incremental => "incremental",
            ReportMode::Watch => "watch",
        }
    }
}

/// Where the baseline of a check came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineSource {
    Server,
    Cache,
    File,
}

/// Whether the baseline's signature was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureState {
    Verified,
    Unchecked,
}

/// The baseline a check compared against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBaseline {
    /// Hex SHA-256 of the baseline's bytes.
    pub sha256: String,
    pub source: BaselineSource,
    pub signature: SignatureState,
}

/// One finding: REFERENCE §3's anomaly line, kept as JSON values (the service groups
/// and shows them; it never needs the entries typed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportAnomaly {
    pub anomaly: String,
    pub path: String,
    #[serde(default)]
    pub changed: Vec<String>,
    #[serde(default)]
    pub baseline: Value,
    #[serde(default)]
    pub current: Value,
}

/// The anomaly kinds of REFERENCE §3.
pub const ANOMALY_KINDS: [&str; 5] = [
    "modified",
    "metadata_changed",
    "added",
    "deleted",
    "type_changed",
];

/// A host report. Field order is the contract's; serialising it gives the bytes the
/// agent signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub host_id: String,
    pub hostname: String,
    pub image_id: String,
    pub seq: u64,
    pub interval_secs: Option<u64>,
    pub started: String,
    pub finished: String,
    pub agent_version: String,
    pub mode: ReportMode,
    /// `None` when the check could not load a baseline (then `error` says why).
    pub baseline: Option<ReportBaseline>,
    pub summary: DriftSummary,
    pub anomalies: Vec<ReportAnomaly>,
    /// Anomalies left out beyond the agent's `--report-max-anomalies`.
    pub truncated: u64,
    /// Why the check could not run; a report with an error is a failing host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Reports the agent's spool dropped (oldest first) since its last acknowledged
    /// report: they will show as a gap, and this says the agent knows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spool_dropped: u64,
    /// When the last full check ran (incremental and watch modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full: Option<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Why a report was refused: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportError {
    pub field: String,
    pub detail: String,
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

impl std::error::Error for ReportError {}

fn bad(field: impl Into<String>, detail: impl Into<String>) -> ReportError {
    ReportError {
        field: field.into(),
        detail: detail.into(),
    }
}

/// The JSON type a required field must have.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    U64,
    OptU64,
    Obj,
    OptObj,
    Arr,
}

const FIELDS: [(&str, Kind); 13] = [
    ("host_id", Kind::Str),
    ("hostname", Kind::Str),
    ("image_id", Kind::Str),
    ("seq", Kind::U64),
    ("interval_secs", Kind::OptU64),
    ("started", Kind::Str),
    ("finished", Kind::Str),
    ("agent_version", Kind::Str),
    ("mode", Kind::Str),
    ("baseline", Kind::OptObj),
    ("summary", Kind::Obj),
    ("anomalies", Kind::Arr),
    ("truncated", Kind::U64),
];

fn type_ok(value: &Value, kind: Kind) -> bool {
    match kind {
        Kind::Str => value.is_string(),
        Kind::U64 => value.is_u64(),
        Kind::OptU64 => value.is_null() || value.is_u64(),
        Kind::Obj => value.is_object(),
        Kind::OptObj => value.is_null() || value.is_object(),
        Kind::Arr => value.is_array(),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::U64 => "a non-negative integer",
        Kind::OptU64 => "a non-negative integer or null",
        Kind::Obj => "an object",
        Kind::OptObj => "an object or null",
        Kind::Arr => "an array",
    }
}

fn text_ok(field: &str, text: &str, max: usize) -> Result<(), ReportError> {
    if text.len() > max {
        return Err(bad(field, format!("longer than {max} bytes")));
    }
    if text.chars().any(char::is_control) {
        return Err(bad(field, "contains control characters"));
    }
    Ok(())
}

impl HostReport {
    /// Parses and validates a report's bytes. `max_anomalies` is the receiver's limit
    /// (at most [`MAX_ANOMALIES`]). Timestamps are checked for form here; whether they
    /// are in the future is the receiver's call (it knows its clock).
    pub fn parse(bytes: &[u8], max_anomalies: usize) -> Result<HostReport, ReportError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|error| bad("report", format!("not JSON: {error}")))?;
        let Value::Object(object) = &value else {
            return Err(bad("report", "not a JSON object"));
        };
        for (field, kind) in FIELDS {
            match object.get(field) {
                None => return Err(bad(field, "missing")),
                Some(found) if !type_ok(found, kind) => {
                    return Err(bad(field, format!("must be {}", kind_name(kind))))
                }
                Some(_) => {}
            }
        }
        if let Some(Value::Array(anomalies)) = object.get("anomalies") {
            if anomalies.len() > max_anomalies.min(MAX_ANOMALIES) {
                return Err(bad(
                    "anomalies",
                    format!(
                        "{} anomalies; at most {} are accepted (count the rest in `truncated`)",
                        anomalies.len(),
                        max_anomalies.min(MAX_ANOMALIES)
                    ),
                ));
            }
        }
        // Enumerations and nested objects, named precisely before serde sees them.
        let mode = object
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !["full", "incremental", "watch"].contains(&mode) {
            return Err(bad(
                "mode",
                "must be \"full\", \"incremental\" or \"watch\"",
            ));
        }
        if let Some(Value::Object(baseline)) = object.get("baseline") {
            for (field, allowed) in [
                ("sha256", &[][..]),
                ("source", &["server", "cache", "file"][..]),
                ("signature", &["verified", "unchecked"][..]),
            ] {
                match baseline.get(field).and_then(Value::as_str) {
                    Some(text) if allowed.is_empty() || allowed.contains(&text) => {}
                    _ => {
                        return Err(bad(
                            format!("baseline.{field}"),
                            if allowed.is_empty() {
                                "must be a string".to_owned()
                            } else {
                                format!("must be one of {}", allowed.join(", "))
                            },
                        ))
                    }
                }
            }
        }
        check_nested(object)?;
        let report: HostReport = serde_json::from_value(value).map_err(|error| {
            // The types above are right, so this is a nested field or an enum value.
            let text = error.to_string();
            let field = ["mode", "baseline", "summary", "anomalies", "error"]
                .into_iter()
                .find(|name| object_mentions(&text, name))
                .unwrap_or("report");
            bad(field, text)
        })?;
        report.validate()?;
        Ok(report)
    }

    /// Checks the values of a report whose fields have their types.
    pub fn validate(&self) -> Result<(), ReportError> {
        validate_host_id(&self.host_id).map_err(|why| bad("host_id", why))?;
        crate::validate_image_id(&self.image_id).map_err(|why| bad("image_id", why))?;
        text_ok("hostname", &self.hostname, MAX_HOSTNAME)?;
        text_ok("agent_version", &self.agent_version, 64)?;
        for (field, value) in [("started", &self.started), ("finished", &self.finished)] {
            crate::validate_timestamp(value).map_err(|why| bad(field, why))?;
        }
        if timestamp_secs(&self.finished) < timestamp_secs(&self.started) {
            return Err(bad("finished", "is before `started`"));
        }
        if self.seq == 0 {
            return Err(bad("seq", "starts at 1"));
        }
        if let Some(baseline) = &self.baseline {
            if crate::Sha256Digest::from_hex(&baseline.sha256).is_none() {
                return Err(bad("baseline.sha256", "must be 64 hex digits"));
            }
        }
        if let Some(error) = &self.error {
            text_ok("error", error, MAX_TEXT)?;
        }
        if self.error.is_none() && self.baseline.is_none() {
            return Err(bad(
                "baseline",
                "is null, so the report must say why in `error`",
            ));
        }
        if let Some(last_full) = &self.last_full {
            crate::validate_timestamp(last_full).map_err(|why| bad("last_full", why))?;
        }
        for (index, anomaly) in self.anomalies.iter().enumerate() {
            let field = format!("anomalies[{index}]");
            if !ANOMALY_KINDS.contains(&anomaly.anomaly.as_str()) {
                return Err(bad(
                    format!("{field}.anomaly"),
                    format!("unknown kind; one of {}", ANOMALY_KINDS.join(", ")),
                ));
            }
            if anomaly.path.is_empty() || anomaly.path.len() > crate::manifest::MAX_PATH_BYTES {
                return Err(bad(format!("{field}.path"), "empty or too long"));
            }
            if anomaly.changed.len() > 16 || anomaly.changed.iter().any(|name| name.len() > 32) {
                return Err(bad(format!("{field}.changed"), "too many or too long"));
            }
            if finding_bytes(anomaly) > MAX_FINDING_BYTES {
                return Err(bad(
                    field,
                    format!("larger than {MAX_FINDING_BYTES} bytes as JSON"),
                ));
            }
            for (side, value) in [
                ("baseline", &anomaly.baseline),
                ("current", &anomaly.current),
            ] {
                if !(value.is_null() || value.is_object()) {
                    return Err(bad(format!("{field}.{side}"), "must be an object or null"));
                }
            }
        }
        Ok(())
    }

    /// The report's exact bytes as the agent signs them.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report serialises")
    }

    /// Whether the check found drift (not counting errors).
    pub fn has_drift(&self) -> bool {
        let summary = &self.summary;
        summary.added
            + summary.deleted
            + summary.modified
            + summary.metadata_changed
            + summary.type_changed
            > 0
    }
}

/// The types inside the nested and optional fields, each named in the error.
fn check_nested(object: &serde_json::Map<String, Value>) -> Result<(), ReportError> {
    if let Some(Value::Object(summary)) = object.get("summary") {
        for field in [
            "added",
            "deleted",
            "modified",
            "metadata_changed",
            "type_changed",
            "errors",
            "scanned",
        ] {
            if !summary.get(field).is_some_and(Value::is_u64) {
                return Err(bad(
                    format!("summary.{field}"),
                    "missing or not a non-negative integer",
                ));
            }
        }
    }
    if let Some(Value::Array(anomalies)) = object.get("anomalies") {
        for (index, anomaly) in anomalies.iter().enumerate() {
            let field = format!("anomalies[{index}]");
            let Value::Object(anomaly) = anomaly else {
                return Err(bad(field, "must be an object"));
            };
            for name in ["anomaly", "path"] {
                if !anomaly.get(name).is_some_and(Value::is_string) {
                    return Err(bad(format!("{field}.{name}"), "missing or not a string"));
                }
            }
            match anomaly.get("changed") {
                None => {}
                Some(Value::Array(names)) if names.iter().all(Value::is_string) => {}
                Some(_) => {
                    return Err(bad(
                        format!("{field}.changed"),
                        "must be an array of strings",
                    ))
                }
            }
        }
    }
    for (field, ok) in [
        (
            "error",
            object
                .get("error")
                .is_none_or(|v| v.is_null() || v.is_string()),
        ),
        (
            "spool_dropped",
            object
                .get("spool_dropped")
                .is_none_or(|v| v.is_null() || v.is_u64()),
        ),
        (
            "last_full",
            object
                .get("last_full")
                .is_none_or(|v| v.is_null() || v.is_string()),
        ),
    ] {
        if !ok {
            return Err(bad(field, "has the wrong type"));
        }
    }
    Ok(())
}

/// The size of a finding as JSON.
pub fn finding_bytes(anomaly: &ReportAnomaly) -> usize {
    serde_json::to_vec(anomaly).map_or(usize::MAX, |bytes| bytes.len())
}

fn object_mentions(text: &str, name: &str) -> bool {
    text.contains(&format!("`{name}`")) || text.contains(name)
}

/// Seconds since the epoch of a timestamp that passed `validate_timestamp` (0 otherwise).
pub fn timestamp_secs(timestamp: &str) -> u64 {
    humantime::parse_rfc3339(timestamp)
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |duration| duration.as_secs())
}

/// The canonical text of a finding's current values, the key of a drift group: the
/// same change on two hosts gives the same text (object keys sorted, no spaces).
pub fn canonical_current(current: &Value) -> String {
    // serde_json's map is ordered by key (no `preserve_order`), so this is canonical.
    serde_json::to_string(current).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HostReport {
        HostReport {
            host_id: "0123456789abcdef0123456789abcdef".into(),
            hostname: "web-1".into(),
            image_id: "img-1".into(),
            seq: 1,
            interval_secs: Some(300),
            started: "2026-12-01T10:00:00Z".into(),
            finished: "2026-12-01T10:00:01Z".into(),
            agent_version: "0.1.0".into(),
            mode: ReportMode::Full,
            baseline: Some(ReportBaseline {
                sha256: "ab".repeat(32),
                source: BaselineSource::Server,
                signature: SignatureState::Verified,
            }),
            summary: DriftSummary::default(),
            anomalies: vec![],
            truncated: 0,
            error: None,
            spool_dropped: 0,
            last_full: None,
        }
    }

    #[test]
    fn round_trip_and_field_order() {
        let report = sample();
        let bytes = report.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("{\"host_id\":"), "{text}");
        assert!(!text.contains("spool_dropped") && !text.contains("\"error\""));
        assert_eq!(HostReport::parse(&bytes, 1000).unwrap(), report);
    }

    #[test]
    fn errors_name_the_field() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["seq"] = "7".into();
        let error = HostReport::parse(&serde_json::to_vec(&value).unwrap(), 10).unwrap_err();
        assert_eq!(error.field, "seq");
        value["seq"] = 1.into();
        value["host_id"] = "XYZ".into();
        let error = HostReport::parse(&serde_json::to_vec(&value).unwrap(), 10).unwrap_err();
        assert_eq!(error.field, "host_id");
        value["host_id"] = "0123456789abcdef0123456789abcdef".into();
        value["mode"] = "sometimes".into();
        let error = HostReport::parse(&serde_json::to_vec(&value).unwrap(), 10).unwrap_err();
        assert_eq!(error.field, "mode");
        value["mode"] = "full".into();
        value.as_object_mut().unwrap().remove("summary");
        let error = HostReport::parse(&serde_json::to_vec(&value).unwrap(), 10).unwrap_err();
        assert_eq!(error.field, "summary");
        for (field, value, named) in [
            (
                "summary",
                serde_json::json!({"added": "x"}),
                "summary.added",
            ),
            (
                "anomalies",
                serde_json::json!([{"anomaly": "added", "path": 7}]),
                "anomalies[0].path",
            ),
            (
                "anomalies",
                serde_json::json!([{"anomaly": "added", "path": "/x", "changed": [1]}]),
                "anomalies[0].changed",
            ),
            ("anomalies", serde_json::json!(["x"]), "anomalies[0]"),
            ("error", serde_json::json!(5), "error"),
            ("spool_dropped", serde_json::json!(-1), "spool_dropped"),
        ] {
            let mut case = serde_json::to_value(sample()).unwrap();
            case[field] = value;
            let error = HostReport::parse(&serde_json::to_vec(&case).unwrap(), 10).unwrap_err();
            assert_eq!(error.field, named, "{error}");
        }
        assert!(HostReport::parse(b"[1]", 10).is_err());
        assert!(HostReport::parse(b"\xff", 10).is_err());
    }

    #[test]
    fn additive_fields_are_accepted() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["future_field"] = serde_json::json!({"x": 1});
        assert!(HostReport::parse(&serde_json::to_vec(&value).unwrap(), 10).is_ok());
    }

    #[test]
    fn a_failing_check_needs_an_error() {
        let mut report = sample();
        report.baseline = None;
        assert_eq!(report.validate().unwrap_err().field, "baseline");
        report.error = Some("no baseline: service unreachable".into());
        assert!(report.validate().is_ok());
    }

    #[test]
    fn canonical_current_sorts_keys() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":2, "b":1}"#).unwrap();
        assert_eq!(canonical_current(&a), canonical_current(&b));
    }
}
