//! The fleet (DESIGN §12) against a real service on loopback with a real sled
//! directory: reports built and signed here as an agent would, and every read checked
//! through HTTP. Enrollment, a second key, replay and retry, staleness, drift groups
//! and accepts, retention, gaps, paging, exact bytes, re-enrollment, durability.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::fleet::*;
use support::*;

const IMG: &str = "img-fleet";

fn fleet_server(dir: &std::path::Path, args: &[&str]) -> Server {
    let server = start_fleet(dir, args);
    upload_image(&server, IMG);
    server
}

fn events(server: &Server, event: &str) -> Vec<Value> {
    audit(server)
        .into_iter()
        .filter(|record| record["event"] == event)
        .collect()
}

/// Polls the audit log for a record of `event` about `host`.
fn audited(server: &Server, event: &str, host: &str) -> Value {
    wait_for(Duration::from_secs(5), event, || {
        events(server, event)
            .into_iter()
            .find(|record| record.to_string().contains(host))
    })
}

#[test]
fn the_first_report_enrolls_its_host_and_pins_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let host_a = host_id(0xa1);
    let key = HostKey::new();

    assert_eq!(read(&server, &format!("/hosts/{host_a}")).status, 404);
    store(&server, &key, &report(&host_a, IMG, 1));

    let host = host_json(&server, &host_a);
    assert_eq!(host["host_id"], host_a.as_str());
    assert_eq!(host["image_id"], IMG);
    assert_eq!(host["hostname"], format!("web-{}", &host_a[28..]));
    assert_eq!(host["status"], "clean");
    assert_eq!(host["last_seq"], 1);
    assert_eq!(host["gaps"], json!([]));
    assert_eq!(host["key_fingerprint"], key.fingerprint());
    for field in ["enrolled", "first_seen", "last_seen"] {
        let text = host[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {host}"));
        integrity_common::validate_timestamp(text).unwrap();
    }
    assert_eq!(host["accepted"], 0);
    assert_eq!(host["latest"]["seq"], 1);
    assert_eq!(host["latest"]["host_id"], host_a.as_str());

    // Enrollment is audited with the key's fingerprint.
    let record = audited(&server, "enroll", &host_a);
    assert!(record.to_string().contains(&key.fingerprint()), "{record}");
    for field in ["seq", "ts", "event", "msg", "data"] {
        assert!(
            record.get(field).is_some(),
            "audit record without {field}: {record}"
        );
    }
    // Newest first.
    store(&server, &HostKey::new(), &report(&host_id(0xa9), IMG, 1));
    let records = wait_for(Duration::from_secs(5), "two enrollments audited", || {
        let records = events(&server, "enroll");
        (records.len() >= 2).then_some(records)
    });
    assert!(
        records[0].to_string().contains(&host_id(0xa9)),
        "newest first: {records:?}"
    );
    let seqs: Vec<u64> = audit(&server)
        .iter()
        .map(|record| record["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|pair| pair[0] > pair[1]), "{seqs:?}");
    let limited = admin_get(&server, "/audit?limit=1").json();
    assert_eq!(limited["records"].as_array().unwrap().len(), 1);

    // Later reports need no key header: the pinned key is used.
    let next = report(&host_a, IMG, 2);
    let bytes = next.to_bytes();
    let signature = key.sign(&bytes, &host_a, 2);
    let answer = post_raw_report(&server, &bytes, Some(REPORT_TOKEN), Some(&signature), None);
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(host_json(&server, &host_a)["last_seq"], 2);
    // One enrollment, not one per report.
    let enrolls = events(&server, "enroll");
    assert_eq!(
        enrolls
            .iter()
            .filter(|record| record.to_string().contains(&host_a))
            .count(),
        1,
        "{enrolls:?}"
    );
    assert_eq!(
        metric(
            &server,
            "metadata_service_reports_total",
            "outcome=\"stored\""
        ),
        3.0,
        "two reports of one host, one of another"
    );
}

#[test]
fn a_second_key_for_a_known_host_is_refused_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let host_a = host_id(0xa2);
    let (key, intruder) = (HostKey::new(), HostKey::new());
    store(&server, &key, &report(&host_a, IMG, 1));

    // The intruder signs a well-formed next report with its own key and offers it.
    let forged = with_findings(
        report(&host_a, IMG, 2),
        vec![modified("/usr/bin/sudo", &"ee".repeat(32))],
    );
    let answer = send(&server, &intruder, &forged);
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.json()["error"], "key_mismatch");

    // Nothing changed, and the refusal is in the audit log.
    let host = host_json(&server, &host_a);
    assert_eq!(host["last_seq"], 1);
    assert_eq!(host["status"], "clean");
    assert_eq!(host["key_fingerprint"], key.fingerprint());
    assert_eq!(
        read(&server, &format!("/hosts/{host_a}/reports/2")).status,
        404
    );
    let record = audited(&server, "report_refused", &host_a);
    assert_eq!(record["data"]["reason"], "key_mismatch", "{record}");
    assert_eq!(
        metric(
            &server,
            "metadata_service_reports_total",
            "outcome=\"key_mismatch\""
        ),
        1.0
    );

    // The real host goes on with seq 2.
    store(&server, &key, &report(&host_a, IMG, 2));
}

#[test]
fn a_replayed_older_report_is_409_and_the_same_report_again_is_200() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let host_a = host_id(0xa3);
    let key = HostKey::new();
    let reports: Vec<_> = (1..=3)
        .map(|seq| {
            let mut report = report(&host_a, IMG, seq);
            report.hostname = format!("web-seq-{seq}");
            report
        })
        .collect();
    for report in &reports {
        store(&server, &key, report);
    }

    // The same bytes again, latest or older: a retry.
    for report in [&reports[2], &reports[1]] {
        let answer = send(&server, &key, report);
        assert_eq!(answer.status, 200, "{}", answer.text());
        let body = answer.json();
        assert_eq!(body["status"], "duplicate");
        assert_eq!(body["seq"], report.seq);
        assert_eq!(body["host_id"], host_a.as_str());
    }

    // An older seq with other bytes (even well signed): a replay.
    let mut older = report(&host_a, IMG, 2);
    older.hostname = "replayed".into();
    let answer = send(&server, &key, &older);
    assert_eq!(answer.status, 409, "{}", answer.text());
    assert_eq!(answer.json()["error"], "replay");
    // The last seq with other bytes: also a replay.
    let mut same_seq = reports[2].clone();
    same_seq.agent_version = "0.2.0".into();
    assert_eq!(send(&server, &key, &same_seq).status, 409);

    let record = audited(&server, "report_refused", &host_a);
    assert_eq!(record["data"]["reason"], "replay", "{record}");
    let host = host_json(&server, &host_a);
    assert_eq!(host["last_seq"], 3);
    assert_eq!(host["hostname"], "web-seq-3");
    let stored = read(&server, &format!("/hosts/{host_a}/reports/2"));
    assert_eq!(
        stored.body,
        reports[1].to_bytes(),
        "the stored report 2 is kept"
    );
    assert_eq!(
        listed_seqs(&server, &host_a),
        vec![3, 2, 1],
        "stored once each"
    );
    assert_eq!(
        metric(
            &server,
            "metadata_service_reports_total",
            "outcome=\"duplicate\""
        ),
        2.0
    );
    assert_eq!(
        metric(
            &server,
            "metadata_service_reports_total",
            "outcome=\"replay\""
        ),
        2.0
    );
}

#[test]
fn a_silent_host_becomes_stale_and_a_report_makes_it_current_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &["--stale-after", "1"]);
    let (quiet, periodic, busy) = (host_id(0xb1), host_id(0xb2), host_id(0xb3));
    let keys = [HostKey::new(), HostKey::new(), HostKey::new()];
    store(&server, &keys[0], &report(&quiet, IMG, 1));
    let mut every_second = report(&periodic, IMG, 1);
    every_second.interval_secs = Some(1);
    store(&server, &keys[1], &every_second);
    // A host with a long interval is not stale after --stale-after.
    let mut hourly = report(&busy, IMG, 1);
    hourly.interval_secs = Some(3600);
    store(&server, &keys[2], &hourly);

    // No interval: stale after --stale-after (1 s).
    wait_for(Duration::from_secs(6), "the quiet host stale", || {
        (host_json(&server, &quiet)["status"] == "stale").then_some(())
    });
    // An interval of 1 s: stale after 3 intervals, not before the quiet one.
    wait_for(Duration::from_secs(8), "the periodic host stale", || {
        (host_json(&server, &periodic)["status"] == "stale").then_some(())
    });
    assert_eq!(host_json(&server, &busy)["status"], "clean");
    let counts = fleet_counts(&server, IMG);
    assert_eq!(counts["stale"], 2, "{counts}");
    assert_eq!(counts["clean"], 1, "{counts}");
    let listed = read_json(&server, &format!("/hosts?image_id={IMG}&status=stale"));
    let mut ids: Vec<&str> = listed["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|host| host["host_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![quiet.as_str(), periodic.as_str()]);

    store(&server, &keys[0], &report(&quiet, IMG, 2));
    assert_eq!(host_json(&server, &quiet)["status"], "clean");
}

#[test]
fn twenty_hosts_with_the_same_change_are_one_drift_group_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let rollout = modified("/etc/ssh/sshd_config", &"c1".repeat(32));
    let hosts: Vec<(String, HostKey)> = (0..20)
        .map(|n| (host_id(0x1000 + n), HostKey::new()))
        .collect();
    for (host, key) in &hosts {
        store(
            &server,
            key,
            &with_findings(report(host, IMG, 1), vec![rollout.clone()]),
        );
    }
    // One more host with another change of the same file.
    let (odd, odd_key) = (host_id(0x2000), HostKey::new());
    let other = modified("/etc/ssh/sshd_config", &"d2".repeat(32));
    store(
        &server,
        &odd_key,
        &with_findings(report(&odd, IMG, 1), vec![other.clone()]),
    );

    let groups = read_json(&server, &format!("/drift?image_id={IMG}"))["groups"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let big = groups
        .iter()
        .find(|group| group["current"] == rollout.current)
        .expect("the rollout's group");
    assert_eq!(big["hosts"], 20, "{big}");
    assert_eq!(big["path"], "/etc/ssh/sshd_config");
    assert_eq!(big["anomaly"], "modified");
    assert_eq!(big["accepted"], Value::Null);
    let sample = big["sample"].as_array().unwrap();
    assert!(!sample.is_empty() && sample.len() <= 20);
    for id in sample {
        assert!(
            hosts.iter().any(|(host, _)| id == host.as_str()),
            "{id} is not one of the 20"
        );
    }
    let small = groups
        .iter()
        .find(|group| group["current"] == other.current)
        .unwrap();
    assert_eq!(small["hosts"], 1);
    assert_eq!(small["sample"], json!([odd]));
    let counts = fleet_counts(&server, IMG);
    assert_eq!(counts["drifted"], 21, "{counts}");
    assert_eq!(counts["clean"], 0, "{counts}");

    // Accept the rollout for every host of the image: the 20 are clean, their finding
    // still shown, marked accepted and not counted.
    let id = accept(&server, IMG, None, &rollout);
    let counts = fleet_counts(&server, IMG);
    assert_eq!(counts["clean"], 20, "{counts}");
    assert_eq!(counts["drifted"], 1, "{counts}");
    let one = host_json(&server, &hosts[0].0);
    assert_eq!(one["status"], "clean");
    assert_eq!(one["summary"]["modified"], 0, "{one}");
    assert_eq!(one["accepted"], 1);
    assert_eq!(
        one["latest"]["anomalies"][0]["path"],
        "/etc/ssh/sshd_config"
    );
    assert_eq!(one["latest"]["anomalies"][0]["accepted"], id.as_str());
    let odd_host = host_json(&server, &odd);
    assert_eq!(odd_host["status"], "drifted");
    assert_eq!(odd_host["summary"]["modified"], 1);
    assert_eq!(odd_host["latest"]["anomalies"][0]["accepted"], Value::Null);
    let groups = read_json(&server, &format!("/drift?image_id={IMG}"))["groups"].clone();
    let big = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["current"] == rollout.current)
        .unwrap()
        .clone();
    assert_eq!(big["accepted"], id.as_str());
    assert_eq!(big["hosts"], 20);
    let listed = admin_get(&server, &format!("/accepts?image_id={IMG}"));
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(
        listed.json()["accepts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|accept| accept["id"] == id.as_str()),
        "{}",
        listed.text()
    );
    audited(&server, "accept_created", &id);

    // A later, different change of the same file on one host: drift again.
    let (first, first_key) = &hosts[0];
    let later = modified("/etc/ssh/sshd_config", &"e3".repeat(32));
    store(
        &server,
        first_key,
        &with_findings(report(first, IMG, 2), vec![later.clone()]),
    );
    let again = host_json(&server, first);
    assert_eq!(again["status"], "drifted", "{again}");
    assert_eq!(again["summary"]["modified"], 1);
    assert_eq!(again["latest"]["anomalies"][0]["accepted"], Value::Null);
    let counts = fleet_counts(&server, IMG);
    assert_eq!(counts["clean"], 19, "{counts}");
    assert_eq!(counts["drifted"], 2, "{counts}");
    let groups = read_json(&server, &format!("/drift?image_id={IMG}"))["groups"].clone();
    let groups = groups.as_array().unwrap();
    assert_eq!(
        groups
            .iter()
            .find(|group| group["current"] == rollout.current)
            .unwrap()["hosts"],
        19
    );
    assert_eq!(
        groups
            .iter()
            .find(|group| group["current"] == later.current)
            .unwrap()["hosts"],
        1
    );

    // Revoked: the 19 drift again.
    let revoked = admin_delete(&server, &format!("/accepts/{id}"));
    assert_eq!(revoked.status, 204, "{}", revoked.text());
    assert_eq!(fleet_counts(&server, IMG)["drifted"], 21);
    assert_eq!(host_json(&server, &hosts[1].0)["status"], "drifted");
    let listed = admin_get(&server, &format!("/accepts?image_id={IMG}")).json();
    assert_eq!(listed["accepts"], json!([]), "{listed}");
    audited(&server, "accept_deleted", &id);
    assert_eq!(admin_delete(&server, &format!("/accepts/{id}")).status, 404);
}

#[test]
fn an_accept_for_one_host_or_other_values_covers_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let (a, b) = (host_id(0xc1), host_id(0xc2));
    let (key_a, key_b) = (HostKey::new(), HostKey::new());
    let change = modified("/etc/motd", &"f0".repeat(32));
    for (host, key) in [(&a, &key_a), (&b, &key_b)] {
        store(
            &server,
            key,
            &with_findings(report(host, IMG, 1), vec![change.clone()]),
        );
    }
    // The same path and kind but other current values: covers nobody.
    accept(&server, IMG, None, &modified("/etc/motd", &"f1".repeat(32)));
    assert_eq!(fleet_counts(&server, IMG)["drifted"], 2);
    // The right values, for host a only.
    let id = accept(&server, IMG, Some(&a), &change);
    assert_eq!(host_json(&server, &a)["status"], "clean");
    assert_eq!(
        host_json(&server, &a)["latest"]["anomalies"][0]["accepted"],
        id.as_str()
    );
    assert_eq!(host_json(&server, &b)["status"], "drifted");
    let counts = fleet_counts(&server, IMG);
    assert_eq!(
        (counts["clean"].clone(), counts["drifted"].clone()),
        (json!(1), json!(1))
    );
}

#[test]
fn retention_removes_old_reports_and_keeps_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &["--report-retention", "2s"]);
    let (a, b) = (host_id(0xd1), host_id(0xd2));
    let (key_a, key_b) = (HostKey::new(), HostKey::new());
    for seq in 1..=3 {
        store(&server, &key_a, &report(&a, IMG, seq));
    }
    store(&server, &key_b, &report(&b, IMG, 1));
    assert_eq!(listed_seqs(&server, &a), vec![3, 2, 1]);

    wait_for(Duration::from_secs(8), "reports 1 and 2 removed", || {
        (listed_seqs(&server, &a) == vec![3]).then_some(())
    });
    assert_eq!(read(&server, &format!("/hosts/{a}/reports/1")).status, 404);
    assert_eq!(read(&server, &format!("/hosts/{a}/reports/2")).status, 404);
    assert_eq!(read(&server, &format!("/hosts/{a}/reports/3")).status, 200);
    // The host, its last seq and its latest report stay; no gap for pruned reports.
    let host_a = host_json(&server, &a);
    assert_eq!(host_a["last_seq"], 3);
    assert_eq!(host_a["gaps"], json!([]));
    assert_eq!(host_a["latest"]["seq"], 3);
    assert_eq!(
        listed_seqs(&server, &b),
        vec![1],
        "a single report is the latest"
    );
    // The next report goes on from there.
    store(&server, &key_a, &report(&a, IMG, 4));
    assert_eq!(listed_seqs(&server, &a)[0], 4);
}

#[test]
fn a_host_keeps_at_most_max_reports_per_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &["--max-reports-per-host", "2"]);
    let a = host_id(0xd3);
    let key = HostKey::new();
    for seq in 1..=5 {
        store(&server, &key, &report(&a, IMG, seq));
    }
    wait_for(
        Duration::from_secs(5),
        "only the last 2 reports kept",
        || (listed_seqs(&server, &a) == vec![5, 4]).then_some(()),
    );
    assert_eq!(host_json(&server, &a)["latest"]["seq"], 5);
}

#[test]
fn missing_seqs_are_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let a = host_id(0xe1);
    let key = HostKey::new();
    for seq in [1, 2, 5, 6, 8] {
        store(&server, &key, &report(&a, IMG, seq));
    }
    let host = host_json(&server, &a);
    assert_eq!(host["gaps"], json!([[3, 4], [7, 7]]), "{host}");
    assert_eq!(host["last_seq"], 8);
    assert_eq!(listed_seqs(&server, &a), vec![8, 6, 5, 2, 1]);
    assert_eq!(
        metric(&server, "metadata_service_report_gaps_total", ""),
        3.0
    );
    // A report the agent says its spool dropped is counted too.
    let mut told = report(&a, IMG, 10);
    told.spool_dropped = 1;
    store(&server, &key, &told);
    assert_eq!(
        metric(&server, "metadata_service_spool_dropped_total", ""),
        1.0
    );
}

#[test]
fn the_fleet_counts_every_status_of_every_image() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    upload_image(&server, "img-empty");
    let (clean, drifted, failing) = (host_id(0xf1), host_id(0xf2), host_id(0xf3));
    let keys = [HostKey::new(), HostKey::new(), HostKey::new()];
    store(&server, &keys[0], &report(&clean, IMG, 1));
    store(
        &server,
        &keys[1],
        &with_findings(
            report(&drifted, IMG, 1),
            vec![modified("/bin/ls", &"aa".repeat(32))],
        ),
    );
    let mut broken = report(&failing, IMG, 1);
    broken.baseline = None;
    broken.error = Some("no baseline: the service is unreachable and nothing is cached".into());
    store(&server, &keys[2], &broken);

    let fleet = read_json(&server, "/fleet");
    let images = fleet["images"].as_array().unwrap();
    let ours = images
        .iter()
        .find(|image| image["image_id"] == IMG)
        .unwrap();
    assert_eq!(
        ours["hosts"],
        json!({"clean": 1, "drifted": 1, "failing": 1, "stale": 0}),
        "{fleet}"
    );
    integrity_common::validate_timestamp(ours["last_report"].as_str().unwrap()).unwrap();
    let empty = images
        .iter()
        .find(|image| image["image_id"] == "img-empty")
        .expect("an image with no host yet is listed");
    assert_eq!(
        empty["hosts"],
        json!({"clean": 0, "drifted": 0, "failing": 0, "stale": 0})
    );
    assert_eq!(empty["last_report"], Value::Null);

    let failing_host = host_json(&server, &failing);
    assert_eq!(failing_host["status"], "failing");
    assert!(failing_host["latest"]["error"]
        .as_str()
        .unwrap()
        .contains("no baseline"));
    assert_eq!(host_json(&server, &drifted)["summary"]["modified"], 1);
    assert_eq!(
        metric(
            &server,
            "metadata_service_hosts",
            &format!("image_id=\"{IMG}\",status=\"failing\"")
        ),
        1.0
    );
}

#[test]
fn hosts_are_listed_a_page_at_a_time_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    upload_image(&server, "img-other");
    let mut ids = Vec::new();
    for n in 0..7u32 {
        let id = host_id(0x300 + n * 7);
        let key = HostKey::new();
        let mut r = report(&id, IMG, 1);
        if n % 3 == 0 {
            r = with_findings(r, vec![modified("/etc/issue", &"bb".repeat(32))]);
        }
        store(&server, &key, &r);
        ids.push(id);
    }
    let other = host_id(0x301);
    store(&server, &HostKey::new(), &report(&other, "img-other", 1));
    ids.sort();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(after) => format!("/hosts?image_id={IMG}&limit=3&after={after}"),
            None => format!("/hosts?image_id={IMG}&limit=3"),
        };
        let page = read_json(&server, &path);
        let hosts = page["hosts"].as_array().unwrap();
        assert!(hosts.len() <= 3, "{page}");
        for host in hosts {
            assert_eq!(host["image_id"], IMG);
            for field in [
                "host_id",
                "hostname",
                "status",
                "first_seen",
                "last_seen",
                "last_seq",
                "gaps",
                "key_fingerprint",
                "summary",
            ] {
                assert!(host.get(field).is_some(), "no {field}: {host}");
            }
            seen.push(host["host_id"].as_str().unwrap().to_owned());
        }
        pages += 1;
        assert!(pages <= 5, "paging does not end: {page}");
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every host once, in order");
    assert!(pages >= 3);

    let drifted = read_json(&server, &format!("/hosts?image_id={IMG}&status=drifted"));
    assert_eq!(drifted["hosts"].as_array().unwrap().len(), 3, "{drifted}");
    assert!(drifted["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|host| host["status"] == "drifted"));
    let all = read_json(&server, "/hosts?limit=1000");
    assert_eq!(all["hosts"].as_array().unwrap().len(), 8);
    assert_eq!(all["next"], Value::Null);
    assert_eq!(read(&server, "/hosts?status=sideways").status, 400);
}

#[test]
fn a_hosts_reports_are_listed_newest_first_with_before() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let a = host_id(0x400);
    let key = HostKey::new();
    for seq in 1..=5 {
        let mut r = report(&a, IMG, seq);
        if seq == 4 {
            r = with_findings(r, vec![modified("/etc/fstab", &"44".repeat(32))]);
            r.mode = integrity_common::report::ReportMode::Incremental;
        }
        store(&server, &key, &r);
    }
    let all = read_json(&server, &format!("/hosts/{a}/reports"));
    let rows = all["reports"].as_array().unwrap();
    let seqs: Vec<u64> = rows
        .iter()
        .map(|row| row["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![5, 4, 3, 2, 1]);
    let four = &rows[1];
    assert_eq!(four["mode"], "incremental");
    assert_eq!(four["summary"]["modified"], 1);
    integrity_common::validate_timestamp(four["finished"].as_str().unwrap()).unwrap();

    let page = read_json(&server, &format!("/hosts/{a}/reports?limit=2"));
    let seqs: Vec<u64> = page["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![5, 4]);
    let page = read_json(&server, &format!("/hosts/{a}/reports?limit=2&before=4"));
    let seqs: Vec<u64> = page["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 2]);
    assert_eq!(listed_seqs(&server, &a), vec![5, 4, 3, 2, 1]);
    assert_eq!(
        read(&server, &format!("/hosts/{}/reports", host_id(0x401))).status,
        404
    );
}

#[test]
fn one_report_is_served_as_the_exact_signed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let a = host_id(0x500);
    let key = HostKey::new();
    // Bytes no serialiser of ours would make: extra spaces, an additive field, keys
    // in another order. They are what was signed, so they are what is served.
    let mut value = serde_json::to_value(with_findings(
        report(&a, IMG, 1),
        vec![modified("/etc/passwd", &"99".repeat(32))],
    ))
    .unwrap();
    value["future_field"] = json!({"nested": [1, 2, 3]});
    let text = serde_json::to_string_pretty(&value).unwrap();
    let bytes = format!("  {text}\n\n").into_bytes();
    let signature = key.sign(&bytes, &a, 1);
    let answer = post_raw_report(
        &server,
        &bytes,
        Some(REPORT_TOKEN),
        Some(&signature),
        Some(&key.key_header()),
    );
    assert_eq!(answer.status, 201, "{}", answer.text());

    let served = read(&server, &format!("/hosts/{a}/reports/1"));
    assert_eq!(served.status, 200);
    assert_eq!(served.body, bytes, "the exact bytes");
    let header = served
        .header("x-bulletproof-signature")
        .expect("the signature header");
    let served_signature = integrity_trust::from_header(header).unwrap();
    assert_eq!(served_signature, signature);
    let trusted = integrity_trust::verify(&key.public, &served.body, &served_signature, false)
        .expect("the served signature verifies over the served bytes");
    assert_eq!(trusted, format!("bulletproof-report host_id:{a} seq:1"));
    // The retry of those exact bytes is a duplicate.
    let again = post_raw_report(&server, &bytes, Some(REPORT_TOKEN), Some(&signature), None);
    assert_eq!(again.status, 200, "{}", again.text());
    // The host view shows the same report parsed.
    let host = host_json(&server, &a);
    assert_eq!(host["latest"]["future_field"]["nested"], json!([1, 2, 3]));
    assert_eq!(host["latest"]["anomalies"][0]["path"], "/etc/passwd");
    assert_eq!(read(&server, &format!("/hosts/{a}/reports/2")).status, 404);
}

#[test]
fn deleting_a_hosts_key_reopens_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let a = host_id(0x600);
    let (old, new) = (HostKey::new(), HostKey::new());
    store(&server, &old, &report(&a, IMG, 1));
    store(&server, &old, &report(&a, IMG, 2));
    // The new key is refused while the old one is pinned.
    assert_eq!(send(&server, &new, &report(&a, IMG, 3)).status, 403);

    // Only an admin re-opens enrollment.
    let (key, value) = bearer(READ_TOKEN);
    assert_eq!(
        delete(&server, &format!("/hosts/{a}/key"), &[(key, &value)]).status,
        403
    );
    assert_eq!(host_json(&server, &a)["key_fingerprint"], old.fingerprint());
    let deleted = admin_delete(&server, &format!("/hosts/{a}/key"));
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    audited(&server, "key_deleted", &a);
    assert_eq!(
        admin_delete(&server, &format!("/hosts/{}/key", host_id(0x601))).status,
        404
    );

    // The next report's key is pinned; its history is kept.
    store(&server, &new, &report(&a, IMG, 3));
    let host = host_json(&server, &a);
    assert_eq!(host["key_fingerprint"], new.fingerprint());
    assert_eq!(host["last_seq"], 3);
    assert_eq!(host["gaps"], json!([]));
    assert_eq!(listed_seqs(&server, &a), vec![3, 2, 1]);
    let enrolls: Vec<Value> = events(&server, "enroll")
        .into_iter()
        .filter(|record| record.to_string().contains(&a))
        .collect();
    assert_eq!(enrolls.len(), 2, "{enrolls:?}");
    // And the old key is now the stranger.
    let refused = send(&server, &old, &report(&a, IMG, 4));
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["error"], "key_mismatch");
}

#[test]
fn a_re_enrolled_host_goes_on_above_its_last_seq_and_keeps_its_history() {
    // A reinstalled machine: same host id, a new key, its seqs from 1 again. A host's
    // seqs rise for its whole life: the 409 names the last one, the agent goes on
    // above it, and the previous life's reports stay as they were signed.
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let a = host_id(0x700);
    let (old, new) = (HostKey::new(), HostKey::new());
    let mut previous = Vec::new();
    for seq in 1..=3 {
        let sent = report(&a, IMG, seq);
        store(&server, &old, &sent);
        previous.push(sent.to_bytes());
    }
    assert_eq!(
        admin_delete(&server, &format!("/hosts/{a}/key")).status,
        204
    );
    let restarted = with_findings(
        report(&a, IMG, 1),
        vec![modified("/etc/hostname", &"77".repeat(32))],
    );
    let refused = send(&server, &new, &restarted);
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(refused.json()["last_seq"], 3);
    assert_eq!(
        host_json(&server, &a)["key_fingerprint"],
        serde_json::Value::Null,
        "a refused report pins nothing"
    );
    let next = with_findings(
        report(&a, IMG, 4),
        vec![modified("/etc/hostname", &"77".repeat(32))],
    );
    store(&server, &new, &next);

    let host = host_json(&server, &a);
    assert_eq!(host["last_seq"], 4);
    assert_eq!(host["key_fingerprint"], new.fingerprint());
    assert_eq!(host["status"], "drifted");
    assert_eq!(host["latest"]["seq"], 4);
    assert_eq!(host["gaps"], serde_json::json!([]));
    assert_eq!(listed_seqs(&server, &a), vec![4, 3, 2, 1]);
    for (index, bytes) in previous.iter().enumerate() {
        let served = read(&server, &format!("/hosts/{a}/reports/{}", index + 1));
        assert_eq!(
            &served.body,
            bytes,
            "the previous life's report {}",
            index + 1
        );
        let signature =
            integrity_trust::from_header(served.header("x-bulletproof-signature").unwrap())
                .unwrap();
        integrity_trust::verify(&old.public, &served.body, &signature, false).unwrap();
    }
}

#[test]
fn everything_acknowledged_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let (a, b) = (host_id(0x800), host_id(0x801));
    let (key_a, key_b) = (HostKey::new(), HostKey::new());
    let change = modified("/etc/sudoers", &"5a".repeat(32));
    for seq in [1, 2, 4] {
        store(
            &server,
            &key_a,
            &with_findings(report(&a, IMG, seq), vec![change.clone()]),
        );
    }
    store(
        &server,
        &key_b,
        &with_findings(report(&b, IMG, 1), vec![change.clone()]),
    );
    let id = accept(&server, IMG, Some(&b), &change);
    server.kill9();

    let server = start_fleet(dir.path(), &[]);
    let host_a = host_json(&server, &a);
    assert_eq!(host_a["last_seq"], 4);
    assert_eq!(host_a["gaps"], json!([[3, 3]]));
    assert_eq!(host_a["status"], "drifted");
    assert_eq!(host_a["key_fingerprint"], key_a.fingerprint());
    assert_eq!(listed_seqs(&server, &a), vec![4, 2, 1]);
    let host_b = host_json(&server, &b);
    assert_eq!(host_b["status"], "clean", "the accept survived: {host_b}");
    assert_eq!(host_b["latest"]["anomalies"][0]["accepted"], id.as_str());
    let group = &read_json(&server, &format!("/drift?image_id={IMG}"))["groups"][0];
    assert_eq!(group["hosts"], 2, "{group}");
    // The pinned key and the last seq survived too.
    assert_eq!(send(&server, &key_b, &report(&a, IMG, 5)).status, 403);
    assert_eq!(
        send(&server, &key_a, &report(&a, IMG, 2)).status,
        409,
        "a replay after the restart"
    );
    store(&server, &key_a, &report(&a, IMG, 5));
    // The audit log is still one chain: enrollments before, refusals after.
    let records = wait_for(Duration::from_secs(5), "the refusals audited", || {
        let records = audit(&server);
        (records
            .iter()
            .filter(|r| r["event"] == "report_refused")
            .count()
            >= 2)
            .then_some(records)
    });
    assert!(records.iter().any(|record| record["event"] == "enroll"));
    assert!(records
        .iter()
        .any(|record| record["event"] == "accept_created"));
    // ... and checks as `bulletproofctl log verify` checks it.
    let log = bulletproof_seclog::SecLog::new(&dir.path().join("audit"));
    let file = dir
        .path()
        .join("audit/logs/security/metadata-service.jsonl");
    assert!(file.exists(), "the audit log is where REFERENCE says");
    let verdict = bulletproof_seclog::verify(
        &[file],
        &bulletproof_seclog::VerifyOptions {
            master: bulletproof_seclog::read_master(&log.master_key_path()).unwrap(),
            host_key: integrity_trust::load_public_key(&log.host_public_key())
                .map_err(|error| error.to_string()),
            max_age_secs: None,
            require_checkpoint: false,
        },
    )
    .unwrap();
    assert!(verdict.problem.is_none(), "{verdict:?}");
    assert!(verdict.records >= 5, "{verdict:?}");
}

#[test]
fn a_host_moved_to_another_image_leaves_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    upload_image(&server, "img-next");
    let a = host_id(0x900);
    let key = HostKey::new();
    let change = modified("/etc/os-release", &"31".repeat(32));
    store(
        &server,
        &key,
        &with_findings(report(&a, IMG, 1), vec![change.clone()]),
    );
    assert_eq!(fleet_counts(&server, IMG)["drifted"], 1);
    store(
        &server,
        &key,
        &with_findings(report(&a, "img-next", 2), vec![change.clone()]),
    );
    assert_eq!(
        fleet_counts(&server, IMG),
        json!({"clean": 0, "drifted": 0, "failing": 0, "stale": 0})
    );
    assert_eq!(fleet_counts(&server, "img-next")["drifted"], 1);
    let old = read_json(&server, &format!("/drift?image_id={IMG}"));
    assert_eq!(old["groups"], json!([]), "{old}");
    let new = read_json(&server, "/drift?image_id=img-next");
    assert_eq!(new["groups"][0]["hosts"], 1, "{new}");
    assert_eq!(host_json(&server, &a)["image_id"], "img-next");
    // An accept of the old image covers nothing on the new one.
    accept(&server, IMG, None, &change);
    assert_eq!(host_json(&server, &a)["status"], "drifted");
    let listed = read_json(&server, &format!("/hosts?image_id={IMG}"));
    assert_eq!(listed["hosts"], json!([]));
}

#[test]
fn a_partly_accepted_report_counts_only_the_rest_and_a_repeated_finding_is_one_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = fleet_server(dir.path(), &[]);
    let a = host_id(0xa00);
    let key = HostKey::new();
    let (first, second) = (
        modified("/etc/resolv.conf", &"01".repeat(32)),
        modified("/etc/crontab", &"02".repeat(32)),
    );
    // The same finding listed twice (a hostile or buggy agent) and another one.
    store(
        &server,
        &key,
        &with_findings(
            report(&a, IMG, 1),
            vec![first.clone(), first.clone(), second.clone()],
        ),
    );
    let drift = read_json(&server, &format!("/drift?image_id={IMG}"));
    for group in drift["groups"].as_array().unwrap() {
        assert_eq!(
            group["hosts"], 1,
            "one host, however often it lists a finding: {drift}"
        );
    }
    let id = accept(&server, IMG, Some(&a), &second);
    let view = host_json(&server, &a);
    assert_eq!(view["status"], "drifted", "{view}");
    assert_eq!(view["accepted"], 1, "{view}");
    assert_eq!(view["summary"]["modified"], 2, "{view}");
    let marks: Vec<Value> = view["latest"]["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["accepted"].clone())
        .collect();
    assert_eq!(marks, vec![Value::Null, Value::Null, json!(id)]);
}
