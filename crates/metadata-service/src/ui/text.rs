//! How values agents sent are shown: cut to a bounded length, modes in octal, digests
//! shortened, a change as old → new. Everything returned is plain text (maud escapes
//! it when rendered).

use super::layout::text;
use serde_json::Value;

/// Characters of one value shown (the JSON API has the whole text).
pub const CLIP: usize = 300;

/// `text` cut to [`CLIP`] characters, marked when cut.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(CLIP) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A finding's current values, short: `mode=0o666, uid=0`.
pub fn current_text(current: &Value) -> String {
    match current {
        Value::Object(fields) => fields
            .iter()
            .filter(|(name, _)| name.as_str() != "path")
            .map(|(name, value)| format!("{name}={}", field_text(name, value)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Null => "(gone)".to_owned(),
        other => other.to_string(),
    }
}

/// A field's value as people read it: modes in octal, digests shortened.
fn field_text(name: &str, value: &Value) -> String {
    match (name, value.as_u64()) {
        ("mode", Some(mode)) => format!("{mode:04o}"),
        _ => short(value),
    }
}

fn short(value: &Value) -> String {
    let text = text(value);
    if text.chars().count() > 16 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        format!("{}…", &text[..12])
    } else {
        text
    }
}

/// "mode 0o644 → 0o666" for each changed field of a finding.
pub fn change_text(finding: &Value) -> String {
    let fields: Vec<String> = match finding["changed"].as_array() {
        Some(changed) if !changed.is_empty() => changed
            .iter()
            .filter_map(|field| field.as_str())
            .map(str::to_owned)
            .collect(),
        _ => {
            let mut names: Vec<String> = finding["current"]
                .as_object()
                .into_iter()
                .chain(finding["baseline"].as_object())
                .flat_map(|fields| fields.keys().cloned())
                .collect();
            names.sort();
            names.dedup();
            names
        }
    };
    fields
        .iter()
        .map(|field| {
            format!(
                "{field} {} → {}",
                field_text(field, &finding["baseline"][field.as_str()]),
                field_text(field, &finding["current"][field.as_str()])
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_read_old_to_new() {
        let finding = json!({"path": "/etc/x", "anomaly": "metadata_changed", "changed": ["mode"],
            "baseline": {"mode": 420}, "current": {"mode": 438}});
        assert_eq!(change_text(&finding), "mode 0644 → 0666");
        assert_eq!(
            current_text(&json!({"path": "/etc/x", "mode": 493, "uid": 0})),
            "mode=0755, uid=0"
        );
        assert_eq!(
            clip(&"é".repeat(CLIP + 5)),
            format!("{}…", "é".repeat(CLIP))
        );
        assert_eq!(clip("short"), "short");
        let digest = "ab".repeat(32);
        assert_eq!(short(&json!(digest)), format!("{}…", &digest[..12]));
        assert_eq!(current_text(&Value::Null), "(gone)");
    }
}
