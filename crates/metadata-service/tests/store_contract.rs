//! The store contract (issue 20, item 5): one suite of store-level tests, written once
//! against `&dyn Store`, run against both backends: the embedded `SledStore` (a temp
//! dir) and `PgStore` (a fresh database of a throwaway PostgreSQL cluster, see
//! `support/pg.rs`). Whatever the service relies on of a store is here, so that either
//! backend can stand in for the other.

mod support;

use bytes::Bytes;
use metadata_service::ingest::{self, Encoding, Prepared};
use metadata_service::store::{
    Accept, DailyRecord, Expect, FleetWrite, HostRecord, Inserted, PgOptions, PgStore,
    SignaturePut, SledStore, Store, StoredReport,
};
use support::pg;

/// Opens the backend's store again on the same data (after the previous one is dropped).
type Reopen<'a> = &'a dyn Fn() -> Box<dyn Store>;

/// A validated, prepared baseline of `entries` files (compressed forms kept when
/// smaller, as the service does), optionally with a signature.
fn prepared(image_id: &str, entries: usize, signature: Option<&[u8]>) -> Prepared {
    let raw = support::baseline(image_id, entries);
    let meta = ingest::validate(&raw).expect("a valid baseline");
    let mut prepared = ingest::prepare(meta, Bytes::from(raw));
    prepared.signature = signature.map(<[u8]>::to_vec);
    prepared
}

fn signature(text: &str) -> Vec<u8> {
    format!("untrusted comment: {text}\nRWQ{text}\ntrusted comment: {text}\nAAAA{text}\n")
        .into_bytes()
}

/// A host id: 32 hex digits.
fn host_id(n: u32) -> String {
    format!("{n:032x}")
}

fn host(n: u32, last_seq: u64) -> HostRecord {
    HostRecord {
        host_id: host_id(n),
        hostname: format!("web-{n}"),
        image_id: "img-a".into(),
        public_key: Some(format!("RWQkey{n}")),
        enrolled: "2026-12-01T00:00:00Z".into(),
        first_seen: "2026-12-01T00:00:00Z".into(),
        last_seen: "2026-12-02T00:00:00Z".into(),
        last_seq,
        gaps: vec![(2, 3)],
        interval_secs: Some(300),
        spool_dropped: 1,
    }
}

fn report(received: u64, seq: u64) -> StoredReport {
    StoredReport {
        received,
        signature: format!("untrusted comment: {seq}\nRWQ\ntrusted comment: t\nAA\n"),
        bytes: Bytes::from(format!("{{\"seq\":{seq},\"findings\":[]}}")),
    }
}

/// A report of host `n` written on top of its report `seq - 1` (the first: a new host).
fn report_write(n: u32, seq: u64, received: u64, prune_through: Option<u64>) -> FleetWrite {
    FleetWrite::Report {
        host: host(n, seq),
        seq,
        report: report(received, seq),
        prune_through,
        expect: after(n, seq - 1),
    }
}

/// What a write expects of host `n` whose last stored seq is `last_seq` (0: none).
fn after(n: u32, last_seq: u64) -> Expect {
    if last_seq == 0 {
        Expect::Absent
    } else {
        Expect::Record {
            last_seq,
            public_key: host(n, last_seq).public_key,
        }
    }
}

fn accept(id: &str, comment: &str) -> Accept {
    Accept {
        id: id.into(),
        image_id: "img-a".into(),
        host_id: Some(host_id(1)),
        path: "/etc/motd".into(),
        anomaly: "content".into(),
        current: serde_json::json!({"sha256": "ab", "size": 12, "nested": {"z": 1, "a": [1, 2]}}),
        comment: comment.into(),
        created: "2026-12-03T00:00:00Z".into(),
        created_by: "admin".into(),
    }
}

fn daily(image: &str, day: u64, drifted: u64) -> DailyRecord {
    DailyRecord {
        image_id: image.into(),
        day,
        hosts: 10,
        drifted,
        failing: 1,
        stale: 2,
    }
}

fn seqs(store: &dyn Store, n: u32, before: Option<u64>, limit: usize) -> Vec<u64> {
    let rows = store.reports(&host_id(n), before, limit).unwrap();
    rows.into_iter().map(|(seq, _)| seq).collect()
}

// The contract.

fn insert_is_insert_if_absent(store: &dyn Store) {
    let first = prepared("img-a", 50, None);
    assert_eq!(store.insert(&first).unwrap(), Inserted::Created);
    // The same id with other bytes: refused, the stored one's metadata returned.
    let second = prepared("img-a", 60, Some(&signature("late")));
    assert_ne!(first.meta.sha256, second.meta.sha256);
    match store.insert(&second).unwrap() {
        Inserted::Exists(existing) => assert_eq!(*existing, first.meta),
        other => panic!("expected Exists, got {other:?}"),
    }
    // The same bytes again: Exists too.
    assert!(matches!(store.insert(&first).unwrap(), Inserted::Exists(_)));
    assert_eq!(store.list().unwrap(), vec![first.meta.clone()]);
    assert_eq!(
        store.body("img-a", Encoding::Identity).unwrap().unwrap(),
        first.raw
    );
    // The loser's signature was not stored.
    assert_eq!(store.signature("img-a").unwrap(), None);
}

fn concurrent_inserts_have_one_winner(store: &dyn Store) {
    let created = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|n| scope.spawn(move || store.insert(&prepared("img-race", 20 + n, None))))
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().unwrap().unwrap())
            .filter(|outcome| *outcome == Inserted::Created)
            .count()
    });
    assert_eq!(created, 1);
    let stored = store.list().unwrap();
    assert_eq!(stored.len(), 1);
    let body = store.body("img-race", Encoding::Identity).unwrap().unwrap();
    assert_eq!(support::sha256_hex(&body), stored[0].sha256);
}

fn list_is_in_image_id_byte_order(store: &dyn Store) {
    for id in ["img-b", "img-a:2", "IMG-c", "img-a", "img_a", "Img-A"] {
        assert_eq!(
            store.insert(&prepared(id, 3, None)).unwrap(),
            Inserted::Created
        );
    }
    let ids: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.image_id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 6);
    assert_eq!(ids[0], "IMG-c");
}

fn bodies_per_encoding(store: &dyn Store) {
    let big = prepared("img-big", 300, None);
    let gzip = big
        .gzip
        .clone()
        .expect("a compressible baseline has a gzip form");
    let zstd = big.zstd.clone().expect("and a zstd form");
    store.insert(&big).unwrap();
    assert_eq!(
        store.body("img-big", Encoding::Identity).unwrap().unwrap(),
        big.raw
    );
    assert_eq!(
        store.body("img-big", Encoding::Gzip).unwrap().unwrap(),
        gzip
    );
    assert_eq!(
        store.body("img-big", Encoding::Zstd).unwrap().unwrap(),
        zstd
    );
    assert_eq!(support::gunzip(&gzip), big.raw);
    // A baseline stored without compressed forms: only identity.
    let mut plain = prepared("img-plain", 300, None);
    plain.gzip = None;
    plain.zstd = None;
    plain.meta.gzip_size = None;
    plain.meta.zstd_size = None;
    plain.meta.gzip_sha256 = None;
    plain.meta.zstd_sha256 = None;
    store.insert(&plain).unwrap();
    assert_eq!(
        store
            .body("img-plain", Encoding::Identity)
            .unwrap()
            .unwrap(),
        plain.raw
    );
    assert_eq!(store.body("img-plain", Encoding::Gzip).unwrap(), None);
    assert_eq!(store.body("img-plain", Encoding::Zstd).unwrap(), None);
    for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
        assert_eq!(store.body("img-none", encoding).unwrap(), None);
    }
    assert!(store.size_on_disk().unwrap() > big.raw.len() as u64 / 10);
    store.flush().unwrap();
}

fn signatures_put_replace_unchanged_no_baseline(store: &dyn Store) {
    let first = signature("first");
    let other = signature("other");
    assert_eq!(
        store.put_signature("img-a", &first).unwrap(),
        SignaturePut::NoBaseline
    );
    assert_eq!(
        store.replace_signature("img-a", &first).unwrap(),
        SignaturePut::NoBaseline
    );
    store.insert(&prepared("img-a", 5, None)).unwrap();
    assert_eq!(store.signature("img-a").unwrap(), None);
    assert_eq!(
        store.put_signature("img-a", &first).unwrap(),
        SignaturePut::Created
    );
    assert_eq!(
        store.put_signature("img-a", &first).unwrap(),
        SignaturePut::Unchanged
    );
    assert_eq!(
        store.put_signature("img-a", &other).unwrap(),
        SignaturePut::Conflict
    );
    assert_eq!(store.signature("img-a").unwrap().unwrap(), first);
    assert_eq!(
        store.replace_signature("img-a", &first).unwrap(),
        SignaturePut::Unchanged
    );
    assert_eq!(
        store.replace_signature("img-a", &other).unwrap(),
        SignaturePut::Created
    );
    assert_eq!(store.signature("img-a").unwrap().unwrap(), other);
    // A replace on a baseline without a signature stores one.
    store.insert(&prepared("img-b", 5, None)).unwrap();
    assert_eq!(
        store.replace_signature("img-b", &first).unwrap(),
        SignaturePut::Created
    );
    assert_eq!(store.signature("img-b").unwrap().unwrap(), first);
    // One that came with its baseline.
    let with = signature("with");
    store.insert(&prepared("img-c", 5, Some(&with))).unwrap();
    assert_eq!(store.signature("img-c").unwrap().unwrap(), with);
    assert_eq!(
        store.put_signature("img-c", &with).unwrap(),
        SignaturePut::Unchanged
    );
    assert_eq!(store.signature("img-none").unwrap(), None);
}

fn apply_every_write_kind(store: &dyn Store) {
    store
        .apply(&[
            report_write(2, 1, 100, None),
            report_write(1, 1, 100, None),
            report_write(1, 2, 110, None),
            FleetWrite::PutAccept(accept("acc-2", "two")),
            FleetWrite::PutAccept(accept("acc-1", "one")),
            FleetWrite::Daily(daily("img-a", 100, 1)),
        ])
        .unwrap();
    // A host record alone (an admin re-opened enrollment).
    let mut reopened = host(2, 1);
    reopened.public_key = None;
    store
        .apply(&[
            FleetWrite::Host {
                host: reopened.clone(),
                expect: after(2, 1),
            },
            FleetWrite::DeleteAccept("acc-2".into()),
            FleetWrite::DeleteAccept("acc-none".into()),
            FleetWrite::PutAccept(accept("acc-1", "one, edited")),
            FleetWrite::Daily(daily("img-a", 100, 3)),
        ])
        .unwrap();
    store.apply(&[]).unwrap();
    assert_eq!(store.hosts().unwrap(), vec![host(1, 2), reopened]);
    assert_eq!(
        store.accepts().unwrap(),
        vec![accept("acc-1", "one, edited")]
    );
    assert_eq!(store.daily(0).unwrap(), vec![daily("img-a", 100, 3)]);
    assert_eq!(store.report(&host_id(1), 2).unwrap(), Some(report(110, 2)));
    assert_eq!(store.report(&host_id(2), 1).unwrap(), Some(report(100, 1)));
    assert_eq!(store.report(&host_id(2), 2).unwrap(), None);
    assert_eq!(store.report(&host_id(3), 1).unwrap(), None);
    // The same report again (a retry): its expectation no longer holds, so nothing of
    // it is written; stored once, as it was.
    assert_eq!(
        store.apply(&[report_write(1, 2, 110, None)]).unwrap(),
        vec![false]
    );
    assert_eq!(seqs(store, 1, None, 10), vec![2, 1]);
    // A host id that is not one is an error, and nothing of its batch is stored.
    let mut bad = host(4, 1);
    bad.host_id = "not-a-host".into();
    let batch = [
        FleetWrite::PutAccept(accept("acc-3", "three")),
        FleetWrite::Report {
            host: bad,
            seq: 1,
            report: report(1, 1),
            prune_through: None,
            expect: Expect::Absent,
        },
    ];
    assert!(store.apply(&batch).is_err());
    assert_eq!(
        store.accepts().unwrap(),
        vec![accept("acc-1", "one, edited")]
    );
    assert!(store.report("not-a-host", 1).is_err());
}

fn apply_prunes_through_the_per_host_cap(store: &dyn Store) {
    let mut writes: Vec<FleetWrite> = (1..=5)
        .map(|seq| report_write(1, seq, 100 + seq, None))
        .collect();
    writes.extend((1..=2).map(|seq| report_write(2, seq, 100 + seq, None)));
    store.apply(&writes).unwrap();
    store.apply(&[report_write(1, 6, 106, Some(3))]).unwrap();
    assert_eq!(seqs(store, 1, None, 100), vec![6, 5, 4]);
    assert_eq!(seqs(store, 2, None, 100), vec![2, 1]);
    // The cap is applied before the batch's own reports: one of the same batch stays.
    store
        .apply(&[
            report_write(1, 7, 107, None),
            report_write(1, 8, 108, Some(7)),
        ])
        .unwrap();
    assert_eq!(seqs(store, 1, None, 100), vec![8, 7]);
    assert_eq!(store.hosts().unwrap()[0], host(1, 8));
}

fn reports_page_newest_first(store: &dyn Store) {
    let writes: Vec<FleetWrite> = (1..=10)
        .map(|seq| report_write(1, seq, 1000 + seq, None))
        .collect();
    store.apply(&writes).unwrap();
    assert_eq!(seqs(store, 1, None, 3), vec![10, 9, 8]);
    assert_eq!(seqs(store, 1, Some(8), 3), vec![7, 6, 5]);
    assert_eq!(seqs(store, 1, Some(3), 3), vec![2, 1]);
    assert_eq!(seqs(store, 1, Some(1), 3), Vec::<u64>::new());
    assert_eq!(seqs(store, 1, Some(u64::MAX), 2), vec![10, 9]);
    assert_eq!(seqs(store, 1, None, 0), Vec::<u64>::new());
    assert_eq!(seqs(store, 1, None, usize::MAX).len(), 10);
    assert_eq!(seqs(store, 2, None, 3), Vec::<u64>::new());
    let rows = store.reports(&host_id(1), Some(6), 1).unwrap();
    assert_eq!(rows, vec![(5, report(1005, 5))]);
    assert_eq!(store.report(&host_id(1), 11).unwrap(), None);
    assert_eq!(store.report(&host_id(1), u64::MAX).unwrap(), None);
}

fn prune_reports_keeps_keep(store: &dyn Store) {
    // Received 100, 110, … 150; then seq 7 received before seq 6 (a clock step back).
    let mut writes: Vec<FleetWrite> = (1..=6)
        .map(|seq| report_write(1, seq, 90 + 10 * seq, None))
        .collect();
    writes.push(report_write(1, 7, 50, None));
    writes.push(report_write(2, 1, 10, None));
    store.apply(&writes).unwrap();
    // Before 130, keeping seq 2: seqs 1 and 3 go.
    assert_eq!(store.prune_reports(&host_id(1), 130, 2).unwrap(), 2);
    assert_eq!(seqs(store, 1, None, 100), vec![7, 6, 5, 4, 2]);
    // Nothing older: nothing goes.
    assert_eq!(store.prune_reports(&host_id(1), 130, 2).unwrap(), 0);
    // The oldest in seq order up to the first one received at or after the limit:
    // seq 7 (received 50) is after seq 6 (received 150), so it stays.
    assert_eq!(store.prune_reports(&host_id(1), 145, 0).unwrap(), 3);
    assert_eq!(seqs(store, 1, None, 100), vec![7, 6]);
    // Everything but `keep`.
    assert_eq!(store.prune_reports(&host_id(1), u64::MAX, 7).unwrap(), 1);
    assert_eq!(seqs(store, 1, None, 100), vec![7]);
    // Other hosts untouched.
    assert_eq!(seqs(store, 2, None, 100), vec![1]);
    assert_eq!(store.prune_reports(&host_id(3), u64::MAX, 0).unwrap(), 0);
}

/// Replicas sharing a store decide on what they last saw of a host: a write applies
/// only if the host is still so, and one that does not writes nothing of itself, while
/// the rest of its batch is written.
fn writes_apply_only_as_expected(store: &dyn Store) {
    assert_eq!(
        store.apply(&[report_write(1, 1, 100, None)]).unwrap(),
        vec![true]
    );
    assert_eq!(store.host(&host_id(1)).unwrap(), Some(host(1, 1)));
    assert_eq!(store.host(&host_id(9)).unwrap(), None);
    // Another "first" report of host 1, a stale last seq, the wrong pinned key.
    let mut other_key = report_write(1, 2, 101, None);
    if let FleetWrite::Report { expect, .. } = &mut other_key {
        *expect = Expect::Record {
            last_seq: 1,
            public_key: Some("RWQsomeone-else".into()),
        };
    }
    let outcome = store
        .apply(&[
            report_write(1, 1, 999, None),
            report_write(1, 3, 102, Some(1)),
            other_key,
            FleetWrite::PutAccept(accept("acc-1", "kept")),
            report_write(2, 1, 103, None),
            FleetWrite::Host {
                host: host(1, 7),
                expect: after(1, 6),
            },
        ])
        .unwrap();
    assert_eq!(outcome, vec![false, false, false, true, true, false]);
    assert_eq!(store.host(&host_id(1)).unwrap(), Some(host(1, 1)));
    assert_eq!(store.report(&host_id(1), 1).unwrap(), Some(report(100, 1)));
    assert_eq!(seqs(store, 1, None, 10), vec![1]);
    assert_eq!(seqs(store, 2, None, 10), vec![1]);
    assert_eq!(store.accepts().unwrap(), vec![accept("acc-1", "kept")]);
    // On top of what is stored: applied, and a later write of the same batch sees it.
    assert_eq!(
        store
            .apply(&[report_write(1, 2, 104, None), report_write(1, 3, 105, None)])
            .unwrap(),
        vec![true, true]
    );
    assert_eq!(seqs(store, 1, None, 10), vec![3, 2, 1]);
    // A key removed by an admin: the next write expects no key.
    let mut reopened = host(1, 3);
    reopened.public_key = None;
    assert_eq!(
        store
            .apply(&[FleetWrite::Host {
                host: reopened.clone(),
                expect: after(1, 3),
            }])
            .unwrap(),
        vec![true]
    );
    assert_eq!(
        store.apply(&[report_write(1, 4, 106, None)]).unwrap(),
        vec![false]
    );
    let mut enrolled = report_write(1, 4, 106, None);
    if let FleetWrite::Report { expect, .. } = &mut enrolled {
        *expect = Expect::Record {
            last_seq: 3,
            public_key: None,
        };
    }
    assert_eq!(store.apply(&[enrolled]).unwrap(), vec![true]);
    assert_eq!(store.host(&host_id(1)).unwrap(), Some(host(1, 4)));
}

/// What the service loads at start: every host with its latest report, or none when
/// that report is not stored.
fn hosts_come_with_their_latest_report(store: &dyn Store) {
    assert!(store.hosts_with_latest().unwrap().is_empty());
    let writes: Vec<FleetWrite> = (1..=3)
        .map(|seq| report_write(1, seq, 100 + seq, None))
        .chain([report_write(2, 1, 200, None)])
        .collect();
    store.apply(&writes).unwrap();
    // Host 2's record moved on to seq 9 without its report (as after a lost write).
    let mut ahead = host(2, 9);
    ahead.hostname = "ahead".into();
    store
        .apply(&[FleetWrite::Host {
            host: ahead.clone(),
            expect: after(2, 1),
        }])
        .unwrap();
    assert_eq!(
        store.hosts_with_latest().unwrap(),
        vec![(host(1, 3), Some(report(103, 3))), (ahead, None)]
    );
}

fn accepts_put_and_delete(store: &dyn Store) {
    assert!(store.accepts().unwrap().is_empty());
    let mut every_host = accept("b-acc", "fleet-wide");
    every_host.host_id = None;
    store
        .apply(&[
            FleetWrite::PutAccept(every_host.clone()),
            FleetWrite::PutAccept(accept("a-acc", "first")),
            FleetWrite::PutAccept(accept("c-acc", "third")),
        ])
        .unwrap();
    assert_eq!(
        store.accepts().unwrap(),
        vec![
            accept("a-acc", "first"),
            every_host.clone(),
            accept("c-acc", "third")
        ]
    );
    // Put and delete of the same id in one batch: in order.
    store
        .apply(&[
            FleetWrite::DeleteAccept("a-acc".into()),
            FleetWrite::PutAccept(accept("c-acc", "replaced")),
            FleetWrite::PutAccept(accept("d-acc", "short-lived")),
            FleetWrite::DeleteAccept("d-acc".into()),
        ])
        .unwrap();
    assert_eq!(
        store.accepts().unwrap(),
        vec![every_host, accept("c-acc", "replaced")]
    );
}

fn daily_is_upserted_by_image_and_day(store: &dyn Store) {
    store
        .apply(&[
            FleetWrite::Daily(daily("img-a", 100, 1)),
            FleetWrite::Daily(daily("img-b", 101, 4)),
            FleetWrite::Daily(daily("img-a", 101, 2)),
        ])
        .unwrap();
    // The same image and day twice in one batch: the last one stays.
    store
        .apply(&[
            FleetWrite::Daily(daily("img-a", 101, 3)),
            FleetWrite::Daily(daily("img-a", 101, 5)),
        ])
        .unwrap();
    let mut all = store.daily(0).unwrap();
    all.sort_by(|a, b| (a.day, &a.image_id).cmp(&(b.day, &b.image_id)));
    assert_eq!(
        all,
        vec![
            daily("img-a", 100, 1),
            daily("img-a", 101, 5),
            daily("img-b", 101, 4)
        ]
    );
    let mut recent = store.daily(101).unwrap();
    recent.sort_by(|a, b| a.image_id.cmp(&b.image_id));
    assert_eq!(recent, vec![daily("img-a", 101, 5), daily("img-b", 101, 4)]);
    assert!(store.daily(102).unwrap().is_empty());
    assert!(store.daily(u64::MAX).unwrap().is_empty());
}

fn reopen_keeps_everything(reopen: Reopen<'_>) {
    let big = prepared("img-big", 200, Some(&signature("big")));
    let small = prepared("img-small", 3, None);
    {
        let store = reopen();
        store.insert(&big).unwrap();
        store.insert(&small).unwrap();
        store
            .put_signature("img-small", &signature("small"))
            .unwrap();
        store
            .apply(&[
                report_write(1, 1, 100, None),
                report_write(1, 2, 200, None),
                FleetWrite::PutAccept(accept("acc-1", "kept")),
                FleetWrite::Daily(daily("img-big", 7, 2)),
            ])
            .unwrap();
        store.flush().unwrap();
    }
    let store = reopen();
    assert_eq!(
        store.list().unwrap(),
        vec![big.meta.clone(), small.meta.clone()]
    );
    assert_eq!(
        store.body("img-big", Encoding::Identity).unwrap().unwrap(),
        big.raw
    );
    assert_eq!(
        store.body("img-big", Encoding::Zstd).unwrap().unwrap(),
        big.zstd.clone().unwrap()
    );
    assert_eq!(
        store.signature("img-big").unwrap().unwrap(),
        signature("big")
    );
    assert_eq!(
        store.signature("img-small").unwrap().unwrap(),
        signature("small")
    );
    assert_eq!(store.hosts().unwrap(), vec![host(1, 2)]);
    assert_eq!(
        store.reports(&host_id(1), None, 10).unwrap(),
        vec![(2, report(200, 2)), (1, report(100, 1))]
    );
    assert_eq!(store.accepts().unwrap(), vec![accept("acc-1", "kept")]);
    assert_eq!(store.daily(0).unwrap(), vec![daily("img-big", 7, 2)]);
    // And it goes on taking writes.
    store.apply(&[report_write(1, 3, 300, Some(1))]).unwrap();
    assert_eq!(seqs(&*store, 1, None, 10), vec![3, 2]);
}

fn any_text_round_trips(store: &dyn Store) {
    // What validation lets through is stored as it came: a NUL in a signature's
    // untrusted comment, in an admin's comment, in a finding's value.
    let mut odd = report(100, 1);
    odd.signature = "untrusted comment: a\0b \u{7f} é\nRWQ\ntrusted comment: t\nAA\n".into();
    let mut odd_accept = accept("acc-odd", "nul \0 here");
    odd_accept.current = serde_json::json!({"value": "x\0y", "n": 1.5});
    store
        .apply(&[
            FleetWrite::Report {
                host: host(1, 1),
                seq: 1,
                report: odd.clone(),
                prune_through: None,
                expect: Expect::Absent,
            },
            FleetWrite::PutAccept(odd_accept.clone()),
        ])
        .unwrap();
    assert_eq!(store.report(&host_id(1), 1).unwrap(), Some(odd));
    assert_eq!(store.accepts().unwrap(), vec![odd_accept]);
}

// The backends.

/// A fresh store of one backend, and how to open it again.
struct Backend {
    reopen: Box<dyn Fn() -> Box<dyn Store>>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn sled() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        Backend {
            reopen: Box::new(move || Box::new(SledStore::open(&path, 1 << 20).unwrap())),
            _dir: Some(dir),
        }
    }

    fn postgres(test: &str) -> Backend {
        let url = pg::cluster().database(test);
        Backend {
            reopen: Box::new(move || Box::new(PgStore::open(&url, &pg_options()).unwrap())),
            _dir: None,
        }
    }
}

fn pg_options() -> PgOptions {
    PgOptions {
        pool_size: 4,
        ..PgOptions::default()
    }
}

/// Each contract test, once per backend: `sled::NAME` and `postgres::NAME`.
macro_rules! contract {
    (stores: [$($name:ident),* $(,)?], reopens: [$($reopen:ident),* $(,)?] $(,)?) => {
        mod sled {
            $(#[test] fn $name() { let backend = super::Backend::sled(); super::$name(&*(backend.reopen)()); })*
            $(#[test] fn $reopen() { let backend = super::Backend::sled(); super::$reopen(&*backend.reopen); })*
        }
        mod postgres {
            $(#[test] fn $name() {
                let backend = super::Backend::postgres(stringify!($name));
                super::$name(&*(backend.reopen)());
            })*
            $(#[test] fn $reopen() {
                let backend = super::Backend::postgres(stringify!($reopen));
                super::$reopen(&*backend.reopen);
            })*
        }
    };
}

contract! {
    stores: [
        insert_is_insert_if_absent,
        concurrent_inserts_have_one_winner,
        list_is_in_image_id_byte_order,
        bodies_per_encoding,
        signatures_put_replace_unchanged_no_baseline,
        apply_every_write_kind,
        apply_prunes_through_the_per_host_cap,
        reports_page_newest_first,
        prune_reports_keeps_keep,
        accepts_put_and_delete,
        daily_is_upserted_by_image_and_day,
        any_text_round_trips,
        writes_apply_only_as_expected,
        hosts_come_with_their_latest_report,
    ],
    reopens: [reopen_keeps_everything],
}

// PostgreSQL only: the schema and the URL.

#[test]
fn postgres_refuses_a_schema_newer_than_it_knows() {
    let cluster = pg::cluster();
    let url = cluster.database("newer_schema");
    drop(PgStore::open(&url, &pg_options()).unwrap());
    // Opening again finds the schema done.
    drop(PgStore::open(&url, &pg_options()).unwrap());
    let name = database_of(&url);
    let version = metadata_service::store::PG_SCHEMA_VERSION + 1;
    cluster.psql(
        name,
        &format!("INSERT INTO bulletproof_schema_version (version) VALUES ({version})"),
    );
    let error = PgStore::open(&url, &pg_options()).err().expect("refused");
    assert!(
        error
            .0
            .contains(&format!("schema is version {version}, newer")),
        "{error}"
    );
}

#[test]
fn postgres_migrations_run_once_when_stores_open_together() {
    let cluster = pg::cluster();
    let url = cluster.database("together");
    std::thread::scope(|scope| {
        let opened: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| PgStore::open(&url, &pg_options()).map(drop)))
            .collect();
        for open in opened {
            open.join().unwrap().unwrap();
        }
    });
    let name = database_of(&url);
    let rows = cluster.psql(name, "SELECT count(*) FROM bulletproof_schema_version");
    assert_eq!(
        rows.trim(),
        metadata_service::store::PG_SCHEMA_VERSION.to_string()
    );
}

#[test]
fn postgres_bad_locations_are_clear_errors() {
    let error = PgStore::open("/var/lib/bulletproof", &pg_options())
        .err()
        .unwrap();
    assert!(error.0.contains("not a PostgreSQL URL"), "{error}");
    // A database that does not exist.
    let url = pg::cluster().url("no_such_database");
    let error = PgStore::open(&url, &pg_options()).err().unwrap();
    assert!(error.0.contains("cannot connect to PostgreSQL"), "{error}");
    assert!(error.0.contains("no_such_database"), "{error}");
}

/// The service calls its store from async code too (loading the fleet at start-up,
/// dropping it at shutdown): the PostgreSQL store must work there as on a blocking
/// thread, on either kind of runtime.
fn store_calls_from_async_code(flavor: tokio::runtime::Builder) {
    let mut flavor = flavor;
    let runtime = flavor.enable_all().build().unwrap();
    let url = pg::cluster().database("async_context");
    runtime.block_on(async move {
        let store = PgStore::open(&url, &pg_options()).unwrap();
        store.insert(&prepared("img-a", 3, None)).unwrap();
        store.apply(&[report_write(1, 1, 100, None)]).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(store.hosts().unwrap(), vec![host(1, 1)]);
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
        let blocking = store.clone();
        tokio::task::spawn_blocking(move || blocking.list().unwrap())
            .await
            .unwrap();
        drop(store);
    });
}

#[test]
fn postgres_store_calls_from_a_current_thread_runtime() {
    store_calls_from_async_code(tokio::runtime::Builder::new_current_thread());
}

#[test]
fn postgres_store_calls_from_a_multi_thread_runtime() {
    store_calls_from_async_code(tokio::runtime::Builder::new_multi_thread());
}

/// `--store postgres://…`: the service keeps its baselines in the database (its
/// audit log stays under `--data`), and serves them again after a restart on an empty
/// `--data`.
#[test]
fn postgres_service_serves_from_the_database() {
    let url = pg::cluster().database("service");
    let body = support::baseline("img-svc", 40);
    let etag = format!("\"{}\"", support::sha256_hex(&body));
    {
        let data = tempfile::tempdir().unwrap();
        let server = support::start(data.path(), &["--store", &url]);
        let posted = support::post(&server, "/baselines", &body, &[]);
        assert_eq!(posted.status, 201, "{}", posted.text());
        assert!(
            server.log().contains("store=\"postgres\""),
            "{}",
            server.log()
        );
    }
    let data = tempfile::tempdir().unwrap();
    let server = support::start(data.path(), &["--store", &url]);
    let got = support::get(&server, "/baselines/img-svc", &[]);
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, body);
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    // Nothing of the store under --data.
    assert!(!data.path().join("index").exists());
}

/// `--store sled:DIR` is the embedded store in DIR (DESIGN §13), as `--data DIR`.
#[test]
fn service_takes_sled_dir_as_its_store() {
    let (data, sled) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = format!("sled:{}", sled.path().display());
    let server = support::start(data.path(), &["--store", &url]);
    let posted = support::post(
        &server,
        "/baselines",
        &support::baseline("img-sled", 3),
        &[],
    );
    assert_eq!(posted.status, 201, "{}", posted.text());
    assert!(sled.path().join("index").exists(), "the store is in DIR");
    assert!(server.log().contains("store=\"sled\""), "{}", server.log());
}

#[test]
fn service_refuses_a_store_that_is_not_a_postgres_url() {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(support::BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store",
            "/var/lib/elsewhere",
            "--data",
        ])
        .arg(data.path())
        .env_remove("METADATA_TOKENS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--store takes sled:DIR or a PostgreSQL URL"),
        "{stderr}"
    );
}

/// The fleet on `--store postgres://…`: reports go through the writer's group commit
/// into the database, and a restarted service (on an empty `--data`) loads the hosts
/// back from it.
#[test]
fn postgres_service_keeps_the_fleet() {
    use support::fleet;
    let url = pg::cluster().database("service_fleet");
    let host = fleet::host_id(0x77);
    let key = fleet::HostKey::new();
    {
        let data = tempfile::tempdir().unwrap();
        let server = fleet::start_fleet(data.path(), &["--store", &url]);
        fleet::upload_image(&server, "img-fleet");
        for seq in 1..=3 {
            fleet::store(&server, &key, &fleet::report(&host, "img-fleet", seq));
        }
        assert_eq!(fleet::listed_seqs(&server, &host), vec![3, 2, 1]);
    }
    let data = tempfile::tempdir().unwrap();
    let server = fleet::start_fleet(data.path(), &["--store", &url]);
    assert_eq!(fleet::listed_seqs(&server, &host), vec![3, 2, 1]);
    let json = fleet::host_json(&server, &host);
    assert_eq!(json["last_seq"], 3, "{json}");
    // The next report goes on from there.
    fleet::store(&server, &key, &fleet::report(&host, "img-fleet", 4));
    assert_eq!(fleet::listed_seqs(&server, &host), vec![4, 3, 2, 1]);
}

/// The database name in a URL of `pg::Cluster`.
fn database_of(url: &str) -> &str {
    url.split('?').next().unwrap().rsplit('/').next().unwrap()
}

#[test]
fn postgres_wrong_password_unreachable_server_and_no_privilege_are_clear_errors() {
    let cluster = pg::cluster();
    cluster.password_role("right-password");
    let url = cluster.database("errors");
    let name = database_of(&url);
    let error = PgStore::open(&cluster.password_url(name, Some("wrong")), &pg_options())
        .err()
        .unwrap();
    assert!(
        error.0.contains("password authentication failed"),
        "{error}"
    );
    let error = PgStore::open(&cluster.password_url(name, None), &pg_options())
        .err()
        .unwrap();
    assert!(error.0.contains("password"), "{error}");
    // Nothing listens on port 1.
    let error = PgStore::open("postgres://bp@127.0.0.1:1/fleet", &pg_options())
        .err()
        .unwrap();
    assert!(error.0.contains("cannot connect to PostgreSQL"), "{error}");
    assert!(error.0.contains("refused"), "{error}");
    // The right password, but no right to create the schema (PostgreSQL 15 and later
    // grant none on `public`): opening says so.
    let error = PgStore::open(
        &cluster.password_url(name, Some("right-password")),
        &pg_options(),
    )
    .err()
    .unwrap();
    assert!(error.0.contains("cannot create the schema"), "{error}");
    assert!(error.0.contains("permission denied"), "{error}");
}

/// The service takes the password from `PGPASSWORD` (a URL without one).
#[test]
fn postgres_service_takes_the_password_from_pgpassword() {
    let cluster = pg::cluster();
    cluster.password_role("right-password");
    let url = cluster.database("pgpassword");
    let name = database_of(&url);
    cluster.psql(
        name,
        &format!("GRANT CREATE ON SCHEMA public TO {}", pg::PASSWORD_ROLE),
    );
    let data = tempfile::tempdir().unwrap();
    let server = support::start_with(
        data.path(),
        &["--store", &cluster.password_url(name, None)],
        &[("PGPASSWORD", "right-password")],
    );
    let body = support::baseline("img-pw", 3);
    assert_eq!(support::post(&server, "/baselines", &body, &[]).status, 201);
    assert!(
        !server.log().contains("holds a password"),
        "{}",
        server.log()
    );
}
