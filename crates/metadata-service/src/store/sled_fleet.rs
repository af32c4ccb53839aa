//! The fleet in the sled store: four trees beside the baseline index.
//!
//! * `hosts`: host id → the host record as JSON.
//! * `reports`: 16 bytes of host id + seq (big-endian, so a host's reports are one
//!   ordered range) → received time (8 bytes), signature length (4 bytes), the
//!   signature, then the report's exact bytes.
//! * `accepts`: accept id → the accept as JSON.
//! * `daily`: image id, a 0 byte, the day (8 bytes, big-endian) → the day's counts as
//!   JSON (one ordered range per image).
//!
//! A batch of writes is one sled batch per tree followed by one flush: that is the
//! service's group commit (one `fsync` for every report that arrived while the
//! previous one ran).

use super::sled::SledStore;
use super::{Accept, DailyRecord, FleetWrite, HostRecord, ReportRow, StoreError, StoredReport};
use bytes::Bytes;

/// The key of a host's report: its id's 16 bytes, then the seq.
fn report_key(host_id: &str, seq: u64) -> Result<[u8; 24], StoreError> {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&host_prefix(host_id)?);
    key[16..].copy_from_slice(&seq.to_be_bytes());
    Ok(key)
}

fn host_prefix(host_id: &str) -> Result<[u8; 16], StoreError> {
    let digits = host_id.as_bytes();
    if digits.len() != 32 {
        return Err(StoreError(format!(
            "host id {host_id:?} is not 32 hex digits"
        )));
    }
    let mut out = [0u8; 16];
    for (index, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| StoreError("host id".into()))?;
        out[index] = u8::from_str_radix(text, 16)
            .map_err(|_| StoreError(format!("host id {host_id:?} is not hex")))?;
    }
    Ok(out)
}

fn encode_report(report: &StoredReport) -> Vec<u8> {
    let mut value = Vec::with_capacity(12 + report.signature.len() + report.bytes.len());
    value.extend_from_slice(&report.received.to_be_bytes());
    value.extend_from_slice(&(report.signature.len() as u32).to_be_bytes());
    value.extend_from_slice(report.signature.as_bytes());
    value.extend_from_slice(&report.bytes);
    value
}

fn decode_report(value: &[u8]) -> Result<StoredReport, StoreError> {
    let corrupt = || StoreError("a stored report is damaged".into());
    let received = u64::from_be_bytes(value.get(..8).ok_or_else(corrupt)?.try_into().unwrap());
    let length = u32::from_be_bytes(value.get(8..12).ok_or_else(corrupt)?.try_into().unwrap());
    let end = 12usize.checked_add(length as usize).ok_or_else(corrupt)?;
    let signature = std::str::from_utf8(value.get(12..end).ok_or_else(corrupt)?)
        .map_err(|_| corrupt())?
        .to_owned();
    Ok(StoredReport {
        received,
        signature,
        bytes: Bytes::copy_from_slice(&value[end..]),
    })
}

/// The key of an image's daily record: the id, a 0 byte (never in an image id), the day.
fn daily_key(image_id: &str, day: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(image_id.len() + 9);
    key.extend_from_slice(image_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&day.to_be_bytes());
    key
}

/// The day of a daily record's key (its last 8 bytes).
fn day_of(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[start..].try_into().ok()?))
}

fn seq_of(key: &[u8]) -> u64 {
    key.get(16..24)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|error| StoreError(format!("encoding: {error}")))
}

impl SledStore {
    pub(super) fn fleet_apply(&self, writes: &[FleetWrite]) -> Result<Vec<bool>, StoreError> {
        // Keys of reports the per-host cap removes, found before the batches are
        // built (a batch does not scan).
        let mut pruned = Vec::new();
        let mut encoded = Vec::with_capacity(writes.len());
        let mut days = Vec::new();
        let mut applied = Vec::with_capacity(writes.len());
        // Host records as this batch leaves them, for the expectations of its later
        // writes (only this process writes a sled store: they hold but for a bug).
        let mut written: std::collections::HashMap<&str, &HostRecord> = Default::default();
        for write in writes {
            let holds = |expect: &super::Expect, host_id: &str| -> Result<bool, StoreError> {
                Ok(match written.get(host_id) {
                    Some(record) => expect.holds(Some(record)),
                    None => expect.holds(self.fleet_host(host_id)?.as_ref()),
                })
            };
            match write {
                FleetWrite::Report { host, expect, .. } | FleetWrite::Host { host, expect }
                    if !holds(expect, &host.host_id)? =>
                {
                    applied.push(false);
                    continue;
                }
                _ => applied.push(true),
            }
            match write {
                FleetWrite::Report {
                    host,
                    seq,
                    report,
                    prune_through,
                    ..
                } => {
                    written.insert(&host.host_id, host);
                    if let Some(through) = prune_through {
                        let start = report_key(&host.host_id, 0)?;
                        let end = report_key(&host.host_id, *through)?;
                        for entry in self.reports.range(start..=end) {
                            pruned.push(entry?.0);
                        }
                    }
                    encoded.push((
                        Some((report_key(&host.host_id, *seq)?, encode_report(report))),
                        Some((host.host_id.clone(), json(host)?)),
                        None,
                    ));
                }
                FleetWrite::Host { host, .. } => {
                    written.insert(&host.host_id, host);
                    encoded.push((None, Some((host.host_id.clone(), json(host)?)), None))
                }
                FleetWrite::PutAccept(accept) => {
                    encoded.push((None, None, Some((accept.id.clone(), Some(json(accept)?)))))
                }
                FleetWrite::DeleteAccept(id) => {
                    encoded.push((None, None, Some((id.clone(), None))))
                }
                FleetWrite::Daily(record) => {
                    days.push((daily_key(&record.image_id, record.day), json(record)?))
                }
            }
        }
        // One batch per tree, reports first: sled applies each batch atomically and
        // recovers its log in order, so after a crash before the flush a host record
        // never names a report that is not there (a report without its record is
        // harmless: nothing was acknowledged, and the retry writes the same bytes).
        // (A transaction over the three trees was the first version: the writer thread,
        // which is serial, was the busiest thread in the profile of the peak ingest.)
        let mut reports = sled::Batch::default();
        let mut hosts = sled::Batch::default();
        let mut accepts = sled::Batch::default();
        let mut daily = sled::Batch::default();
        for key in &pruned {
            reports.remove(key.as_ref());
        }
        for (report, host, accept) in encoded {
            if let Some((key, value)) = report {
                reports.insert(&key[..], value);
            }
            if let Some((id, value)) = host {
                hosts.insert(id.as_bytes(), value);
            }
            match accept {
                Some((id, Some(value))) => accepts.insert(id.as_bytes(), value),
                Some((id, None)) => accepts.remove(id.as_bytes()),
                None => {}
            }
        }
        for (key, value) in days {
            daily.insert(key, value);
        }
        self.reports.apply_batch(reports)?;
        self.hosts.apply_batch(hosts)?;
        self.accepts.apply_batch(accepts)?;
        self.daily.apply_batch(daily)?;
        self.db.flush()?;
        Ok(applied)
    }

    pub(super) fn fleet_host(&self, host_id: &str) -> Result<Option<HostRecord>, StoreError> {
        match self.hosts.get(host_id.as_bytes())? {
            Some(value) => serde_json::from_slice(&value)
                .map(Some)
                .map_err(|error| StoreError(format!("a stored host is damaged: {error}"))),
            None => Ok(None),
        }
    }

    pub(super) fn fleet_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        self.hosts
            .iter()
            .map(|entry| {
                let (_, value) = entry?;
                serde_json::from_slice(&value)
                    .map_err(|error| StoreError(format!("a stored host is damaged: {error}")))
            })
            .collect()
    }

    pub(super) fn fleet_report(
        &self,
        host_id: &str,
        seq: u64,
    ) -> Result<Option<StoredReport>, StoreError> {
        match self.reports.get(report_key(host_id, seq)?)? {
            Some(value) => Ok(Some(decode_report(&value)?)),
            None => Ok(None),
        }
    }

    pub(super) fn fleet_reports(
        &self,
        host_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ReportRow>, StoreError> {
        let start = report_key(host_id, 0)?;
        let end = report_key(host_id, before.unwrap_or(u64::MAX))?;
        let mut rows = Vec::new();
        for entry in self.reports.range(start..end).rev().take(limit) {
            let (key, value) = entry?;
            rows.push((seq_of(&key), decode_report(&value)?));
        }
        Ok(rows)
    }

    pub(super) fn fleet_prune(
        &self,
        host_id: &str,
        received_before: u64,
        keep: u64,
    ) -> Result<u64, StoreError> {
        let start = report_key(host_id, 0)?;
        let end = report_key(host_id, u64::MAX)?;
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for entry in self.reports.range(start..=end) {
            let (key, value) = entry?;
            let received = value
                .get(..8)
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            if received >= received_before {
                // Reports arrive in seq order, so the rest are newer.
                break;
            }
            if seq_of(&key) != keep {
                batch.remove(key);
                removed += 1;
            }
        }
        if removed > 0 {
            self.reports.apply_batch(batch)?;
            self.db.flush()?;
        }
        Ok(removed)
    }

    pub(super) fn fleet_accepts(&self) -> Result<Vec<Accept>, StoreError> {
        self.accepts
            .iter()
            .map(|entry| {
                let (_, value) = entry?;
                serde_json::from_slice(&value)
                    .map_err(|error| StoreError(format!("a stored accept is damaged: {error}")))
            })
            .collect()
    }

    pub(super) fn fleet_daily(&self, since_day: u64) -> Result<Vec<DailyRecord>, StoreError> {
        // A few records per image and day kept: the whole tree is small, a scan is fine.
        let mut records = Vec::new();
        for entry in self.daily.iter() {
            let (key, value) = entry?;
            if day_of(&key).is_some_and(|day| day >= since_day) {
                records.push(serde_json::from_slice(&value).map_err(|error| {
                    StoreError(format!("a stored daily record is damaged: {error}"))
                })?);
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_values_round_trip_and_damage_is_an_error() {
        let report = StoredReport {
            received: 1_700_000_000,
            signature: "untrusted comment: x\nRUQ…\n".into(),
            bytes: Bytes::from_static(b"{\"host_id\":\"x\"}"),
        };
        assert_eq!(decode_report(&encode_report(&report)).unwrap(), report);
        let mut damaged = encode_report(&report);
        damaged[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_report(&damaged).is_err());
        assert!(decode_report(&[1, 2]).is_err());
    }

    #[test]
    fn report_keys_order_by_host_then_seq() {
        let host = "00112233445566778899aabbccddeeff";
        assert!(report_key(host, 2).unwrap() < report_key(host, 10).unwrap());
        assert_eq!(seq_of(&report_key(host, 77).unwrap()), 77);
        assert!(report_key("xyz", 1).is_err());
    }

    #[test]
    fn daily_keys_end_with_their_day() {
        let key = daily_key("img:1", 19_000);
        assert_eq!(&key[..6], b"img:1\0");
        assert_eq!(day_of(&key), Some(19_000));
        assert!(daily_key("img", 2) < daily_key("img", 10));
        assert_eq!(day_of(&[1, 2]), None);
    }

    #[test]
    fn daily_records_are_replaced_by_day_and_survive_a_reopen() {
        use super::super::Store;
        let record = |image: &str, day, drifted| DailyRecord {
            image_id: image.to_owned(),
            day,
            hosts: 10,
            drifted,
            failing: 1,
            stale: 2,
        };
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            store
                .apply(&[
                    FleetWrite::Daily(record("img-a", 100, 1)),
                    FleetWrite::Daily(record("img-b", 101, 4)),
                    FleetWrite::Daily(record("img-a", 101, 2)),
                ])
                .unwrap();
            // The same image and day again, in one batch: the last one stays.
            store
                .apply(&[
                    FleetWrite::Daily(record("img-a", 101, 3)),
                    FleetWrite::Daily(record("img-a", 101, 5)),
                ])
                .unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let mut all = store.daily(0).unwrap();
        all.sort_by(|a, b| (a.day, &a.image_id).cmp(&(b.day, &b.image_id)));
        assert_eq!(
            all,
            vec![
                record("img-a", 100, 1),
                record("img-a", 101, 5),
                record("img-b", 101, 4)
            ]
        );
        let mut recent = store.daily(101).unwrap();
        recent.sort_by(|a, b| a.image_id.cmp(&b.image_id));
        assert_eq!(
            recent,
            vec![record("img-a", 101, 5), record("img-b", 101, 4)]
        );
        assert!(store.daily(102).unwrap().is_empty());
    }
}
