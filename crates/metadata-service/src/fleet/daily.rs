//! The fleet's daily history: per image and day, the day's maximum of each host count
//! (hosts, drifted, failing, stale), as sampled every [`SAMPLE_EVERY`] by [`sampler`].
//! The last [`DAYS`] days are kept in memory ([`Daily`], in [`super::FleetState`]) for
//! the overview's chart; each record that changes is committed through the fleet
//! writer (`FleetWrite::Daily`), so the history survives a restart ([`super::Fleet::load`]
//! reads it back). The store keeps older days; memory drops them.

use super::host::Status;
use super::views::ImageCounts;
use super::Fleet;
use crate::store::{DailyRecord, FleetWrite, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Days of history kept in memory and shown (today included).
pub const DAYS: u64 = 14;
/// How often the counts are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(60);
const SECS_PER_DAY: u64 = 86_400;

/// The day (since the Unix epoch, UTC) of a time in Unix seconds.
pub fn day_of(secs: u64) -> u64 {
    secs / SECS_PER_DAY
}

/// The first day of the window that ends `today`.
pub fn first_day(today: u64) -> u64 {
    today.saturating_sub(DAYS - 1)
}

/// The last [`DAYS`] days of every image, by image and day.
#[derive(Debug, Default, Clone)]
pub struct Daily {
    records: BTreeMap<(String, u64), DailyRecord>,
}

impl Daily {
    /// The history from stored records (those older than the window are ignored).
    pub fn new(records: impl IntoIterator<Item = DailyRecord>, today: u64) -> Daily {
        let first = first_day(today);
        Daily {
            records: records
                .into_iter()
                .filter(|record| record.day >= first)
                .map(|record| ((record.image_id.clone(), record.day), record))
                .collect(),
        }
    }

    /// Merges today's counts (each field the maximum of the day so far) and returns
    /// the records that changed, to be committed. Days before the window are dropped.
    /// An image without hosts and without a record today gets none (a missing day
    /// reads as zero).
    pub fn sample(
        &mut self,
        counts: &BTreeMap<String, ImageCounts>,
        today: u64,
    ) -> Vec<DailyRecord> {
        let first = first_day(today);
        self.records.retain(|(_, day), _| *day >= first);
        let mut changed = Vec::new();
        for (image_id, counts) in counts {
            let of = |status| counts.by_status.get(&status).copied().unwrap_or(0);
            let sampled = DailyRecord {
                image_id: image_id.clone(),
                day: today,
                hosts: counts.by_status.values().sum(),
                drifted: of(Status::Drifted),
                failing: of(Status::Failing),
                stale: of(Status::Stale),
            };
            let key = (image_id.clone(), today);
            let merged = match self.records.get(&key) {
                Some(known) => DailyRecord {
                    hosts: known.hosts.max(sampled.hosts),
                    drifted: known.drifted.max(sampled.drifted),
                    failing: known.failing.max(sampled.failing),
                    stale: known.stale.max(sampled.stale),
                    ..sampled
                },
                None if sampled == empty(image_id, today) => continue,
                None => sampled,
            };
            if self.records.get(&key) != Some(&merged) {
                self.records.insert(key, merged.clone());
                changed.push(merged);
            }
        }
        changed
    }

    /// The [`DAYS`] days of `image_id` ending `today`, oldest first, a zero record for
    /// a day without one.
    pub fn series(&self, image_id: &str, today: u64) -> Vec<DailyRecord> {
        (0..DAYS)
            .map(|back| today.saturating_sub(DAYS - 1 - back))
            .map(|day| {
                self.records
                    .get(&(image_id.to_owned(), day))
                    .cloned()
                    .unwrap_or_else(|| empty(image_id, day))
            })
            .collect()
    }

    /// The record of one image and day, if any.
    pub fn get(&self, image_id: &str, day: u64) -> Option<&DailyRecord> {
        self.records.get(&(image_id.to_owned(), day))
    }
}

fn empty(image_id: &str, day: u64) -> DailyRecord {
    DailyRecord {
        image_id: image_id.to_owned(),
        day,
        hosts: 0,
        drifted: 0,
        failing: 0,
        stale: 0,
    }
}

impl Fleet {
    /// One sample: merges `counts` into the history and commits the records that
    /// changed, with those a failed commit left unsaved (`unsaved`: their keys, as
    /// they are now in memory). Returns how many records were committed.
    pub async fn sample_daily(
        &self,
        counts: &BTreeMap<String, ImageCounts>,
        today: u64,
        unsaved: &mut BTreeSet<(String, u64)>,
    ) -> Result<usize, StoreError> {
        let records: Vec<DailyRecord> = {
            let mut state = self.state();
            for record in state.daily.sample(counts, today) {
                unsaved.insert((record.image_id, record.day));
            }
            // A day that left the window meanwhile is not written any more.
            unsaved.retain(|(image_id, day)| state.daily.get(image_id, *day).is_some());
            unsaved
                .iter()
                .filter_map(|(image_id, day)| state.daily.get(image_id, *day).cloned())
                .collect()
        };
        if records.is_empty() {
            return Ok(0);
        }
        let writes = records.into_iter().map(FleetWrite::Daily).collect();
        self.writer.commit(writes, Vec::new()).await?;
        let committed = unsaved.len();
        unsaved.clear();
        Ok(committed)
    }
}

/// Samples the fleet's counts at start and then every [`SAMPLE_EVERY`], forever
/// (spawned by [`crate::run`]). A failed commit is logged and retried with the next
/// sample.
pub async fn sampler(state: Arc<crate::app::AppState>) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unsaved = BTreeSet::new();
    loop {
        ticks.tick().await;
        let counts = state.image_counts();
        let today = day_of(super::now_secs());
        if let Err(error) = state.fleet.sample_daily(&counts, today, &mut unsaved).await {
            tracing::error!("recording the daily counts: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetConfig;
    use crate::store::{SledStore, Store};

    const TODAY: u64 = 20_000;

    fn counts(images: &[(&str, [u64; 4])]) -> BTreeMap<String, ImageCounts> {
        images
            .iter()
            .map(|(image, numbers)| {
                let by_status = Status::ALL
                    .into_iter()
                    .zip(numbers.iter().copied())
                    .filter(|(_, n)| *n > 0)
                    .collect();
                (
                    (*image).to_owned(),
                    ImageCounts {
                        by_status,
                        last_report: None,
                    },
                )
            })
            .collect()
    }

    fn record(image: &str, day: u64, [hosts, drifted, failing, stale]: [u64; 4]) -> DailyRecord {
        DailyRecord {
            image_id: image.to_owned(),
            day,
            hosts,
            drifted,
            failing,
            stale,
        }
    }

    #[test]
    fn a_sample_records_the_counts_and_hosts_is_their_sum() {
        let mut daily = Daily::default();
        // clean, drifted, failing, stale
        let changed = daily.sample(&counts(&[("img-a", [5, 2, 1, 0])]), TODAY);
        assert_eq!(changed, vec![record("img-a", TODAY, [8, 2, 1, 0])]);
        assert_eq!(daily.get("img-a", TODAY), Some(&changed[0]));
    }

    #[test]
    fn each_count_keeps_the_maximum_of_the_day_and_only_changes_are_returned() {
        let mut daily = Daily::default();
        daily.sample(&counts(&[("img-a", [5, 2, 1, 0])]), TODAY);
        // Fewer drifted, more stale: only stale (and nothing else) rises.
        let changed = daily.sample(&counts(&[("img-a", [6, 1, 0, 3])]), TODAY);
        assert_eq!(changed, vec![record("img-a", TODAY, [10, 2, 1, 3])]);
        // Nothing above the maxima: nothing to commit.
        assert!(daily
            .sample(&counts(&[("img-a", [1, 1, 1, 1])]), TODAY)
            .is_empty());
        assert_eq!(
            daily.get("img-a", TODAY),
            Some(&record("img-a", TODAY, [10, 2, 1, 3]))
        );
    }

    #[test]
    fn an_image_without_hosts_gets_no_record() {
        let mut daily = Daily::default();
        assert!(daily
            .sample(&counts(&[("img-empty", [0, 0, 0, 0])]), TODAY)
            .is_empty());
        assert_eq!(daily.get("img-empty", TODAY), None);
        assert_eq!(daily.series("img-empty", TODAY).len(), DAYS as usize);
    }

    #[test]
    fn a_new_day_starts_from_its_own_counts() {
        let mut daily = Daily::default();
        daily.sample(&counts(&[("img-a", [0, 9, 0, 0])]), TODAY);
        let changed = daily.sample(&counts(&[("img-a", [8, 1, 0, 0])]), TODAY + 1);
        assert_eq!(changed, vec![record("img-a", TODAY + 1, [9, 1, 0, 0])]);
        let series = daily.series("img-a", TODAY + 1);
        assert_eq!(
            series[DAYS as usize - 2],
            record("img-a", TODAY, [9, 9, 0, 0])
        );
        assert_eq!(
            series[DAYS as usize - 1],
            record("img-a", TODAY + 1, [9, 1, 0, 0])
        );
    }

    #[test]
    fn series_is_fourteen_days_oldest_first_zero_filled() {
        let daily = Daily::new(
            [
                record("img-a", TODAY, [3, 3, 0, 0]),
                record("img-a", TODAY - 5, [2, 1, 0, 0]),
                record("img-b", TODAY - 1, [7, 7, 0, 0]),
            ],
            TODAY,
        );
        let series = daily.series("img-a", TODAY);
        assert_eq!(series.len(), 14);
        let days: Vec<u64> = series.iter().map(|record| record.day).collect();
        assert_eq!(days, (TODAY - 13..=TODAY).collect::<Vec<_>>());
        assert!(series.iter().all(|record| record.image_id == "img-a"));
        assert_eq!(series[13], record("img-a", TODAY, [3, 3, 0, 0]));
        assert_eq!(series[8], record("img-a", TODAY - 5, [2, 1, 0, 0]));
        let zeros = series.iter().filter(|record| record.hosts == 0).count();
        assert_eq!(zeros, 12);
        // An image never seen: fourteen zero days.
        let unknown = daily.series("img-c", TODAY);
        assert_eq!(unknown.len(), 14);
        assert!(unknown
            .iter()
            .all(|record| *record == empty("img-c", record.day)));
    }

    #[test]
    fn days_older_than_the_window_are_dropped() {
        // Loading ignores them.
        let daily = Daily::new(
            [
                record("img-a", TODAY - 13, [1, 1, 0, 0]),
                record("img-a", TODAY - 14, [2, 2, 0, 0]),
            ],
            TODAY,
        );
        assert!(daily.get("img-a", TODAY - 13).is_some());
        assert!(daily.get("img-a", TODAY - 14).is_none());
        // Sampling a later day drops what left the window.
        let mut daily = daily;
        daily.sample(&counts(&[("img-a", [1, 0, 0, 0])]), TODAY + 1);
        assert!(daily.get("img-a", TODAY - 13).is_none());
        assert_eq!(daily.series("img-a", TODAY + 1)[0].hosts, 0);
        assert_eq!(daily.records.len(), 1);
        // The window's first day is kept.
        let mut daily = Daily::default();
        daily.sample(&counts(&[("img-a", [1, 0, 0, 0])]), TODAY);
        daily.sample(&counts(&[("img-a", [1, 0, 0, 0])]), TODAY + 13);
        assert_eq!(daily.series("img-a", TODAY + 13)[0].hosts, 1);
        daily.sample(&counts(&[("img-a", [1, 0, 0, 0])]), TODAY + 14);
        assert!(daily.get("img-a", TODAY).is_none());
    }

    fn open(dir: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(SledStore::open(dir, 1 << 20).unwrap())
    }

    #[tokio::test]
    async fn the_sampler_commits_changed_records_through_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let fleet = Fleet::load(store.clone(), None, FleetConfig::default()).unwrap();
        let mut unsaved = BTreeSet::new();
        let sample = counts(&[("img-a", [1, 2, 0, 0]), ("img-b", [0, 0, 0, 0])]);
        let committed = fleet.sample_daily(&sample, TODAY, &mut unsaved).await;
        assert_eq!(committed.unwrap(), 1);
        assert!(unsaved.is_empty());
        assert_eq!(
            store.daily(TODAY).unwrap(),
            vec![record("img-a", TODAY, [3, 2, 0, 0])]
        );
        // Unchanged: nothing is written.
        let committed = fleet.sample_daily(&sample, TODAY, &mut unsaved).await;
        assert_eq!(committed.unwrap(), 0);
        // A key a failed commit left behind is written again, as it is in memory.
        unsaved.insert(("img-a".to_owned(), TODAY));
        let committed = fleet.sample_daily(&sample, TODAY, &mut unsaved).await;
        assert_eq!(committed.unwrap(), 1);
        assert_eq!(fleet.state().daily.series("img-a", TODAY)[13].hosts, 3);
    }

    #[test]
    fn the_history_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let today = day_of(crate::fleet::now_secs());
        let mut daily = Daily::default();
        let mut writes = Vec::new();
        for (day, sample) in [
            (today - 20, [1, 1, 0, 0]), // outside the window: stored, not loaded
            (today - 1, [4, 2, 0, 0]),
            (today - 1, [1, 5, 0, 1]),
            (today, [0, 3, 1, 0]),
        ] {
            writes.extend(
                daily
                    .sample(&counts(&[("img-a", sample)]), day)
                    .into_iter()
                    .map(FleetWrite::Daily),
            );
        }
        {
            let store = open(dir.path());
            store.apply(&writes).unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.daily(0).unwrap().len(), 3);
        let fleet = Fleet::load(store, None, FleetConfig::default()).unwrap();
        let series = fleet.state().daily.series("img-a", today);
        assert_eq!(series[12], record("img-a", today - 1, [7, 5, 0, 1]));
        assert_eq!(series[13], record("img-a", today, [4, 3, 1, 0]));
        assert!(series[..12].iter().all(|record| record.hosts == 0));
        assert!(fleet.state().daily.get("img-a", today - 20).is_none());
    }
}
