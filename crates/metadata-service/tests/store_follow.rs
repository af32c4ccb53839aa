//! Replicas sharing one PostgreSQL database, at the store level (issue 20): each
//! `PgStore` here stands for one service process. What one writes the other learns
//! from `changes` (and never its own writes back), nothing committed out of order is
//! missed, and of two racing writes that expect the same host only one applies.

mod support;

use bytes::Bytes;
use metadata_service::ingest;
use metadata_service::store::{
    Accept, Expect, FleetWrite, HostRecord, PgOptions, PgStore, Store, StoredReport,
};
use support::pg;

fn open(url: &str) -> PgStore {
    PgStore::open(
        url,
        &PgOptions {
            pool_size: 4,
            ..PgOptions::default()
        },
    )
    .unwrap()
}

fn host(n: u32, last_seq: u64) -> HostRecord {
    HostRecord {
        host_id: format!("{n:032x}"),
        hostname: format!("web-{n}"),
        image_id: "img-a".into(),
        public_key: Some(format!("RWQkey{n}")),
        enrolled: "2026-12-01T00:00:00Z".into(),
        first_seen: "2026-12-01T00:00:00Z".into(),
        last_seen: "2026-12-02T00:00:00Z".into(),
        last_seq,
        gaps: Vec::new(),
        interval_secs: Some(300),
        spool_dropped: 0,
    }
}

fn write(n: u32, seq: u64, expect: Expect) -> FleetWrite {
    FleetWrite::Report {
        host: host(n, seq),
        seq,
        report: StoredReport {
            received: 100 + seq,
            signature: "untrusted comment: t\nRWQ\ntrusted comment: t\nAA\n".into(),
            bytes: Bytes::from(format!("{{\"seq\":{seq}}}")),
        },
        prune_through: None,
        expect,
    }
}

fn on_top(n: u32, last_seq: u64) -> Expect {
    Expect::Record {
        last_seq,
        public_key: host(n, last_seq).public_key,
    }
}

fn accept(id: &str) -> Accept {
    Accept {
        id: id.into(),
        image_id: "img-a".into(),
        host_id: None,
        path: "/etc/motd".into(),
        anomaly: "modified".into(),
        current: serde_json::json!({"sha256": "ab"}),
        comment: String::new(),
        created: "2026-12-01T00:00:00Z".into(),
        created_by: "admin".into(),
    }
}

fn ids(records: &[HostRecord]) -> Vec<(String, u64)> {
    records
        .iter()
        .map(|record| (record.host_id.clone(), record.last_seq))
        .collect()
}

#[test]
fn a_replica_learns_the_others_writes_and_not_its_own() {
    let url = pg::cluster().database("follow");
    let (a, b) = (open(&url), open(&url));
    let cursor = b
        .change_cursor()
        .unwrap()
        .expect("a shared store has a cursor");
    // Nothing yet.
    let nothing = b.changes(cursor).unwrap();
    assert!(nothing.hosts.is_empty() && nothing.baselines.is_empty());
    // (A transaction still open elsewhere in the cluster may hold the cursor back to
    // before the migration: then the empty accepts come, which is no change.)
    assert!(matches!(nothing.accepts.as_deref(), None | Some([])));

    assert_eq!(
        a.apply(&[
            write(1, 1, Expect::Absent),
            FleetWrite::PutAccept(accept("x"))
        ])
        .unwrap(),
        vec![true, true]
    );
    let baseline = br#"{"image_id":"img-a","timestamp":"2026-11-23T07:31:43Z","entries":[]}"#;
    let meta = ingest::validate(baseline).unwrap();
    a.insert(&ingest::prepare(meta, Bytes::from_static(baseline)))
        .unwrap();
    b.apply(&[write(2, 1, Expect::Absent)]).unwrap();

    let seen = b.changes(cursor).unwrap();
    assert_eq!(
        ids(&seen.hosts),
        ids(&[host(1, 1)]),
        "b's own write is not returned"
    );
    assert_eq!(seen.baselines.len(), 1);
    assert_eq!(seen.baselines[0].image_id, "img-a");
    assert_eq!(seen.accepts, Some(vec![accept("x")]));
    // From the new cursor: nothing new until a's next write. (What a transaction still
    // open anywhere in the cluster — another test's — holds back may come again.)
    let quiet = b.changes(seen.cursor).unwrap();
    assert!(ids(&quiet.hosts)
        .iter()
        .all(|id| ids(&[host(1, 1)]).contains(id)));
    assert!(quiet.baselines.iter().all(|meta| meta.image_id == "img-a"));
    assert!(quiet.accepts.is_none() || quiet.accepts == Some(vec![accept("x")]));
    a.apply(&[
        write(1, 2, on_top(1, 1)),
        FleetWrite::DeleteAccept("x".into()),
    ])
    .unwrap();
    let next = b.changes(seen.cursor).unwrap();
    assert!(ids(&next.hosts).contains(&ids(&[host(1, 2)])[0]));
    assert_eq!(
        next.accepts,
        Some(Vec::new()),
        "a removed accept is seen too"
    );
    // And a sees b's host.
    let from_a = a.changes(cursor).unwrap();
    assert_eq!(
        ids(&from_a.hosts),
        ids(&[host(2, 1)]),
        "a's own writes are not returned"
    );
}

#[test]
fn a_write_committed_after_a_later_one_is_not_missed() {
    // Transaction T1 takes its id, T2 commits, the follower reads (sees T2), then T1
    // commits: a cursor made of "the highest id seen" would skip T1 for ever.
    let url = pg::cluster().database("order");
    let (a, b) = (open(&url), open(&url));
    let cursor = b.change_cursor().unwrap().unwrap();
    let mut slow = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut t1 = slow.transaction().unwrap();
    t1.execute(
        "INSERT INTO hosts (host_id, record, replica) VALUES ($1, $2, 'slow')",
        &[&format!("{:032x}", 7), &postgres::types::Json(host(7, 1))],
    )
    .unwrap();
    a.apply(&[write(2, 1, Expect::Absent)]).unwrap();
    let first = b.changes(cursor).unwrap();
    assert_eq!(ids(&first.hosts), ids(&[host(2, 1)]));
    t1.commit().unwrap();
    let second = b.changes(first.cursor).unwrap();
    assert!(
        ids(&second.hosts).contains(&(format!("{:032x}", 7), 1)),
        "the write that committed late is returned: {:?}",
        ids(&second.hosts)
    );
}

#[test]
fn of_two_replicas_racing_on_one_host_exactly_one_write_applies() {
    let url = pg::cluster().database("race");
    let (a, b) = (open(&url), open(&url));
    for round in 0..20u64 {
        let expect = if round == 0 {
            Expect::Absent
        } else {
            on_top(1, round)
        };
        let (wa, wb) = (
            write(1, round + 1, expect.clone()),
            write(1, round + 1, expect),
        );
        let (ra, rb) = std::thread::scope(|scope| {
            let ta = scope.spawn(|| a.apply(&[wa]).unwrap());
            let tb = scope.spawn(|| b.apply(&[wb]).unwrap());
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert_eq!(
            u32::from(ra[0]) + u32::from(rb[0]),
            1,
            "round {round}: {ra:?} {rb:?}"
        );
    }
    assert_eq!(
        a.host(&format!("{:032x}", 1)).unwrap().unwrap().last_seq,
        20
    );
    let seqs: Vec<u64> = a
        .reports(&format!("{:032x}", 1), None, 100)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(seqs, (1..=20).rev().collect::<Vec<_>>());
}

#[test]
fn health_says_why_when_the_database_is_gone() {
    let store = open(&pg::cluster().database("health"));
    store.health().unwrap();
    // A store whose server is not there: its errors are "unreachable" ones (503s).
    let gone = PgStore::open("postgres://bp@127.0.0.1:1/x", &PgOptions::default());
    let error = gone.err().expect("nothing listens on port 1");
    assert!(error.is_unavailable(), "{error}");
    assert!(error.to_string().contains("connect"), "{error}");
}

#[test]
fn sessions_are_shared_bounded_per_caller_and_expire() {
    let url = pg::cluster().database("sessions");
    let (a, b) = (open(&url), open(&url));
    let session = |n: u32, caller: &str, created: u64| metadata_service::store::SessionRecord {
        digest: format!("{n:064x}"),
        caller: caller.into(),
        scope: "admin".into(),
        csrf: format!("csrf-{n}"),
        created,
        expires: created + 100,
    };
    a.put_session(&session(1, "name:ops", 1000), 2, 1000)
        .unwrap();
    assert_eq!(
        b.session(&format!("{:064x}", 1), 1050).unwrap(),
        Some(session(1, "name:ops", 1000)),
        "a session started on one replica is found on the other"
    );
    assert_eq!(
        b.session(&format!("{:064x}", 1), 1100).unwrap(),
        None,
        "expired"
    );
    // Two more of the same caller with a cap of 2: the oldest ends; another caller's stays.
    a.put_session(&session(2, "name:other", 1001), 2, 1001)
        .unwrap();
    a.put_session(&session(3, "name:ops", 1002), 2, 1002)
        .unwrap();
    a.put_session(&session(4, "name:ops", 1003), 2, 1003)
        .unwrap();
    assert_eq!(b.session(&format!("{:064x}", 1), 1050).unwrap(), None);
    assert!(b.session(&format!("{:064x}", 2), 1050).unwrap().is_some());
    assert!(b.session(&format!("{:064x}", 3), 1050).unwrap().is_some());
    // A logout on one replica ends it on the other.
    b.end_session(&format!("{:064x}", 3)).unwrap();
    assert_eq!(a.session(&format!("{:064x}", 3), 1050).unwrap(), None);
    // A login after the others expired removes them.
    a.put_session(&session(5, "name:late", 5000), 2, 5000)
        .unwrap();
    let left = pg::cluster().psql(
        url.split("///")
            .nth(1)
            .and_then(|rest| rest.split('?').next())
            .unwrap(),
        "SELECT count(*) FROM sessions",
    );
    assert_eq!(left.trim(), "1", "{left}");
}

#[test]
fn every_replicas_audit_records_are_listed_newest_first() {
    let url = pg::cluster().database("audit");
    let (a, b) = (open(&url), open(&url));
    let record = |seq: u64, event: &str| (seq, serde_json::json!({"seq": seq, "event": event}));
    a.append_audit(&[record(1, "enroll"), record(2, "accept")])
        .unwrap();
    b.append_audit(&[record(1, "key_deleted")]).unwrap();
    // The same record again (a retry) is listed once.
    a.append_audit(&[record(2, "accept")]).unwrap();
    let listed = b.audit_tail(10).unwrap();
    let events: Vec<&str> = listed
        .iter()
        .map(|record| record["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["key_deleted", "accept", "enroll"]);
    assert_ne!(listed[0]["replica"], listed[1]["replica"]);
    assert_eq!(listed[1]["replica"], listed[2]["replica"]);
    assert_eq!(a.audit_tail(1).unwrap().len(), 1);
}
