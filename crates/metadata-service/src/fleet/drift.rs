//! Drift groups and accepted drift, kept incrementally: when a host's latest report
//! changes, its findings leave their groups and the new ones join theirs. A request
//! for `/drift` reads the index; it never scans reports.
//!
//! A group is the same finding on many hosts of one image: the same path, kind of
//! anomaly and current values (compared as canonical JSON text).

use crate::store::Accept;
use integrity_common::report::{canonical_current, ReportAnomaly};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// What makes two findings the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub path: String,
    pub anomaly: String,
    /// Canonical JSON of the current values (`null` for a deletion).
    pub current: String,
}

impl GroupKey {
    pub fn of(anomaly: &ReportAnomaly) -> GroupKey {
        GroupKey {
            path: anomaly.path.clone(),
            anomaly: anomaly.anomaly.clone(),
            current: canonical_current(&anomaly.current),
        }
    }

    /// A short stable id (16 hex digits of a SHA-256 over the key), for the pages' URLs.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for part in [&self.path, &self.anomaly, &self.current] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize()[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    pub fn of_accept(accept: &Accept) -> GroupKey {
        GroupKey {
            path: accept.path.clone(),
            anomaly: accept.anomaly.clone(),
            current: canonical_current(&accept.current),
        }
    }
}

/// The drift groups of every image: group → the hosts whose latest report has it.
#[derive(Default)]
pub struct DriftIndex {
    images: HashMap<String, HashMap<Arc<GroupKey>, BTreeSet<String>>>,
}

impl DriftIndex {
    /// Interns a report's findings (one key per distinct finding).
    pub fn keys_of(&self, image_id: &str, anomalies: &[ReportAnomaly]) -> Vec<Arc<GroupKey>> {
        let groups = self.images.get(image_id);
        let mut keys: Vec<Arc<GroupKey>> = anomalies
            .iter()
            .map(|anomaly| {
                let key = GroupKey::of(anomaly);
                groups
                    .and_then(|groups| groups.get_key_value(&key))
                    .map(|(shared, _)| shared.clone())
                    .unwrap_or_else(|| Arc::new(key))
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    pub fn add(&mut self, image_id: &str, host_id: &str, keys: &[Arc<GroupKey>]) {
        if keys.is_empty() {
            return;
        }
        let groups = self.images.entry(image_id.to_owned()).or_default();
        for key in keys {
            groups
                .entry(key.clone())
                .or_default()
                .insert(host_id.to_owned());
        }
    }

    pub fn remove(&mut self, image_id: &str, host_id: &str, keys: &[Arc<GroupKey>]) {
        let Some(groups) = self.images.get_mut(image_id) else {
            return;
        };
        for key in keys {
            if let Some(hosts) = groups.get_mut(key) {
                hosts.remove(host_id);
                if hosts.is_empty() {
                    groups.remove(key);
                }
            }
        }
        if groups.is_empty() {
            self.images.remove(image_id);
        }
    }

    /// The groups of one image (every image when `None`), most hosts first.
    pub fn groups(&self, image_id: Option<&str>) -> Vec<(&str, &GroupKey, &BTreeSet<String>)> {
        let mut out: Vec<_> = self
            .images
            .iter()
            .filter(|(image, _)| image_id.is_none_or(|wanted| wanted == image.as_str()))
            .flat_map(|(image, groups)| {
                groups
                    .iter()
                    .map(move |(key, hosts)| (image.as_str(), &**key, hosts))
            })
            .collect();
        out.sort_by(|a, b| b.2.len().cmp(&a.2.len()).then((a.0, a.1).cmp(&(b.0, b.1))));
        out
    }

    /// The hosts sharing one group.
    pub fn hosts_of(&self, image_id: &str, key: &GroupKey) -> Option<&BTreeSet<String>> {
        self.images.get(image_id)?.get(key)
    }
}

/// Accepted drift, indexed by finding.
#[derive(Default)]
pub struct Accepts {
    by_id: HashMap<String, Accept>,
    by_key: HashMap<GroupKey, Vec<String>>,
}

impl Accepts {
    pub fn insert(&mut self, accept: Accept) {
        self.by_key
            .entry(GroupKey::of_accept(&accept))
            .or_default()
            .push(accept.id.clone());
        self.by_id.insert(accept.id.clone(), accept);
    }

    pub fn remove(&mut self, id: &str) -> Option<Accept> {
        let accept = self.by_id.remove(id)?;
        let key = GroupKey::of_accept(&accept);
        if let Some(ids) = self.by_key.get_mut(&key) {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.by_key.remove(&key);
            }
        }
        Some(accept)
    }

    pub fn get(&self, id: &str) -> Option<&Accept> {
        self.by_id.get(id)
    }

    /// The accept that covers this finding on this host, if any (an image-wide one
    /// first).
    pub fn covering(&self, image_id: &str, host_id: &str, key: &GroupKey) -> Option<&Accept> {
        let ids = self.by_key.get(key)?;
        let mut matching = ids
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .filter(|accept| accept.image_id == image_id);
        let mut host_specific = None;
        for accept in matching.by_ref() {
            match &accept.host_id {
                None => return Some(accept),
                Some(host) if host == host_id && host_specific.is_none() => {
                    host_specific = Some(accept)
                }
                Some(_) => {}
            }
        }
        host_specific
    }

    /// The image-wide accept of a group, if any.
    pub fn of_group(&self, image_id: &str, key: &GroupKey) -> Option<&Accept> {
        self.by_key
            .get(key)?
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .find(|accept| accept.image_id == image_id && accept.host_id.is_none())
    }

    /// Every accept of an image (all when `None`), oldest first.
    pub fn list(&self, image_id: Option<&str>) -> Vec<&Accept> {
        let mut out: Vec<&Accept> = self
            .by_id
            .values()
            .filter(|accept| image_id.is_none_or(|wanted| wanted == accept.image_id))
            .collect();
        out.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(path: &str, current: serde_json::Value) -> ReportAnomaly {
        ReportAnomaly {
            anomaly: "modified".into(),
            path: path.into(),
            changed: vec!["sha256".into()],
            baseline: serde_json::Value::Null,
            current,
        }
    }

    #[test]
    fn the_same_finding_on_many_hosts_is_one_group_and_leaves_it() {
        let mut index = DriftIndex::default();
        let change = finding(
            "/usr/bin/x",
            serde_json::json!({"sha256": "aa", "mode": 493}),
        );
        for host in 0..20 {
            let keys = index.keys_of("img", std::slice::from_ref(&change));
            index.add("img", &format!("h{host}"), &keys);
        }
        let groups = index.groups(Some("img"));
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].2.len(), 20);
        let keys = index.keys_of("img", std::slice::from_ref(&change));
        index.remove("img", "h0", &keys);
        assert_eq!(index.groups(None)[0].2.len(), 19);
        let other = finding(
            "/usr/bin/x",
            serde_json::json!({"mode": 493, "sha256": "bb"}),
        );
        let keys = index.keys_of("img", &[other]);
        index.add("img", "h0", &keys);
        assert_eq!(index.groups(Some("img")).len(), 2);
        assert!(index.groups(Some("other")).is_empty());
    }

    #[test]
    fn accepts_match_exactly_and_by_host() {
        let mut accepts = Accepts::default();
        let change = finding("/etc/motd", serde_json::json!({"sha256": "aa"}));
        let key = GroupKey::of(&change);
        accepts.insert(Accept {
            id: "a1".into(),
            image_id: "img".into(),
            host_id: Some("h1".into()),
            path: "/etc/motd".into(),
            anomaly: "modified".into(),
            current: serde_json::json!({"sha256": "aa"}),
            comment: String::new(),
            created: "2026-12-01T00:00:00Z".into(),
            created_by: "name:root".into(),
        });
        assert_eq!(accepts.covering("img", "h1", &key).unwrap().id, "a1");
        assert!(accepts.covering("img", "h2", &key).is_none());
        assert!(accepts.covering("other", "h1", &key).is_none());
        assert!(accepts.of_group("img", &key).is_none());
        let different = GroupKey::of(&finding("/etc/motd", serde_json::json!({"sha256": "ab"})));
        assert!(accepts.covering("img", "h1", &different).is_none());
        assert!(accepts.remove("a1").is_some());
        assert!(accepts.covering("img", "h1", &key).is_none());
    }
}
