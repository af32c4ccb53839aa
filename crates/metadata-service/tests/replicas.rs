//! Replicas (DESIGN §13): service processes sharing one PostgreSQL database are
//! interchangeable. Baselines and reports taken by one are served by the other at
//! once; two replicas taking reports of one host at the same time never store one out
//! of order nor lose an acknowledged one; fleet views follow within a second or two;
//! without the database the answers are 503 with Retry-After and the service recovers
//! by itself; replicas started together migrate once; start-up errors are clear and
//! show no password; agents listing both replicas keep reporting through a replica's
//! kill -9 and a PostgreSQL restart, every acknowledged report stored exactly once.

#[path = "support/replicas/mod.rs"]
mod replicas_support;
mod support;

use replicas_support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};
use support::fleet::{self, HostKey};
use support::pg;

#[test]
fn a_baseline_posted_to_one_replica_is_served_by_the_other_at_once() {
    let (_url, a, b) = two("baseline");
    let body = support::baseline("img-shared", 300);
    let (k, v) = baseline_auth();
    // Not there yet, asked of B: a 404 is not an immutable answer to keep.
    assert_eq!(status_of(&b.server, "/baselines/img-shared"), 404);
    let posted = support::post(&a.server, "/baselines", &body, &[(k, &v)]);
    assert_eq!(posted.status, 201, "{}", posted.text());
    let etag = format!("\"{}\"", support::sha256_hex(&body));
    for replica in [&b, &a] {
        let got = support::get(&replica.server, "/baselines/img-shared", &[]);
        assert_eq!(got.status, 200, "{}", got.text());
        assert!(got.body == body, "other bytes from {}", replica.base());
        assert_eq!(got.header("etag"), Some(etag.as_str()));
        let cached = support::get(
            &replica.server,
            "/baselines/img-shared",
            &[("If-None-Match", &etag)],
        );
        assert_eq!(cached.status, 304);
    }
    for encoding in ["gzip", "zstd"] {
        let ask = [("Accept-Encoding", encoding)];
        let from_b = support::get(&b.server, "/baselines/img-shared", &ask);
        let from_a = support::get(&a.server, "/baselines/img-shared", &ask);
        assert_eq!((from_a.status, from_b.status), (200, 200));
        assert!(from_a.body == from_b.body, "{encoding}: replicas differ");
        assert_eq!(from_a.header("etag"), from_b.header("etag"), "{encoding}");
        let tag = from_a.header("etag").unwrap();
        assert_eq!(
            support::get(
                &b.server,
                "/baselines/img-shared",
                &[ask[0], ("If-None-Match", tag)]
            )
            .status,
            304
        );
        if encoding == "gzip" && from_b.header("content-encoding") == Some("gzip") {
            assert!(support::gunzip(&from_b.body) == body);
        }
    }
    // The listing is a view: it may follow a moment later.
    let sha = etag.trim_matches('"').to_owned();
    poll_json(&b.base(), "/baselines", "B listing it", |j| {
        j["baselines"].as_array().is_some_and(|all| {
            all.iter()
                .any(|e| e["image_id"] == "img-shared" && e["sha256"] == sha.as_str())
        })
    });
    let again = support::post(
        &b.server,
        "/baselines",
        &support::baseline("img-shared", 3),
        &[(k, &v)],
    );
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(
        again.text().contains(etag.trim_matches('"')),
        "{}",
        again.text()
    );
    for replica in [&a, &b] {
        assert_eq!(status_of(&replica.server, "/baselines/img-none"), 404);
    }
}

#[test]
fn racing_posts_of_one_image_id_have_one_winner_on_every_replica() {
    let (_url, a, b) = two("baseline_race");
    let (k, v) = baseline_auth();
    for i in 0..6 {
        let id = format!("img-race-{i}");
        let bodies = [
            support::baseline(&id, 5 + i),
            support::baseline(&id, 50 + i),
        ];
        let barrier = Barrier::new(2);
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let threads: Vec<_> = [&a, &b]
                .into_iter()
                .zip(&bodies)
                .map(|(replica, body)| {
                    let (barrier, v) = (&barrier, &v);
                    s.spawn(move || {
                        barrier.wait();
                        support::post(&replica.server, "/baselines", body, &[(k, v)]).status
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, vec![201, 409], "{id}: A, B answered {statuses:?}");
        let winner = &bodies[if statuses[0] == 201 { 0 } else { 1 }];
        for replica in [&a, &b] {
            let got = support::get(&replica.server, &format!("/baselines/{id}"), &[]);
            assert!(
                got.body == *winner,
                "{id}: {} serves the loser",
                replica.base()
            );
        }
    }
}

#[test]
fn a_signature_put_through_either_replica_and_replaced_by_an_admin_is_the_same_on_both() {
    let (_url, a, b) = two("signature");
    let sig = SIG;
    let mut other = sig.to_vec();
    other[30] = b'X';
    let (k, v) = baseline_auth();
    let (ak, av) = fleet::bearer(fleet::ADMIN_TOKEN);
    let path = "/baselines/img-sig/signature";
    let posted = support::post(
        &a.server,
        "/baselines",
        &support::baseline("img-sig", 4),
        &[(k, &v)],
    );
    assert_eq!(posted.status, 201);
    assert_eq!(status_of(&b.server, path), 404);
    assert_eq!(status_of(&a.server, path), 404);
    // The poster, through the other replica.
    let put = support::put(&b.server, path, sig, &[(k, &v)]);
    assert_eq!(put.status, 201, "poster's PUT on B: {}", put.text());
    assert!(support::get(&a.server, path, &[]).body == sig);
    assert_eq!(support::put(&a.server, path, sig, &[(k, &v)]).status, 200);
    assert_eq!(
        support::put(&a.server, path, &other, &[(k, &v)]).status,
        409
    );
    let replaced = support::put(&b.server, path, &other, &[(ak, &av)]);
    assert!(
        matches!(replaced.status, 200 | 201),
        "admin replace: {}",
        replaced.text()
    );
    for replica in [&a, &b] {
        let got = support::get(&replica.server, path, &[]);
        assert!(
            got.body == other,
            "{} still serves the replaced signature",
            replica.base()
        );
    }
}

#[test]
fn a_report_taken_by_one_replica_binds_the_other_at_once() {
    let (url, a, b) = two("binding");
    fleet::upload_image(&a.server, IMG);
    let host = fleet::host_id(0xb1);
    let (key, intruder) = (HostKey::new(), HostKey::new());
    let send = |replica: &Replica, key: &HostKey, seq: u64, variant: &str| {
        send_seq(replica, key, &host, seq, variant).status
    };
    let replay = |replica: &Replica, seq: u64, variant: &str, last: u64| {
        assert_replay(replica, &key, &host, (seq, variant), last)
    };
    // B knows A's baseline at once; A knows B's report at once.
    assert_eq!(send(&b, &key, 1, ""), 201);
    assert_eq!(send(&a, &key, 1, ""), 200, "the same report again");
    replay(&a, 1, "other", 1);
    assert_eq!(
        send(&a, &intruder, 2, ""),
        403,
        "a key other than the pinned one"
    );
    assert_eq!(send(&a, &key, 2, ""), 201);
    assert_eq!(send(&b, &key, 2, ""), 200);
    assert_eq!(send(&b, &key, 1, ""), 200);
    replay(&b, 2, "other", 2);
    assert_eq!(send(&b, &key, 5, ""), 201);
    replay(&a, 4, "", 5);
    replay(&b, 3, "", 5);
    let stored = stored_of(&url, &[&host]);
    assert_eq!(seqs_of(&stored, &host), BTreeSet::from([1, 2, 5]));
    for (seq, d) in [(1, ""), (2, ""), (5, "")] {
        assert_eq!(
            stored[&(host.clone(), seq)],
            digest(&report_bytes(&host, seq, d))
        );
    }
    for replica in [&a, &b] {
        assert_host_view(&replica.base(), &host, &seqs_of(&stored, &host), VIEW_LAG);
    }
    // Re-keyed on A: B enrolls the new key, and then A refuses the old one at once.
    let deleted = fleet::admin_delete(&a.server, &format!("/hosts/{host}/key"));
    assert!(matches!(deleted.status, 200 | 204), "{}", deleted.text());
    poll(VIEW_LAG, "B enrolling the new key", || {
        match send(&b, &intruder, 6, "") {
            201 => Ok(()),
            other => Err(other.to_string()),
        }
    });
    assert_eq!(send(&a, &key, 7, ""), 403, "the old key after a re-key");
}

#[test]
fn fleet_views_of_one_replica_follow_reports_taken_by_the_other() {
    let (_url, a, b) = two("views");
    let (ab, bb) = (a.base(), b.base());
    fleet::upload_image(&a.server, IMG);
    let host = fleet::host_id(0xf1);
    let key = HostKey::new();
    let finding = fleet::modified("/etc/motd", &"cd".repeat(32));
    let drifted = fleet::with_findings(fleet::report(&host, IMG, 1), vec![finding.clone()]);
    fleet::store(&a.server, &key, &drifted);
    let start = Instant::now();
    poll_json(&bb, &format!("/hosts/{host}"), "B: the host drifted", |j| {
        j["last_seq"] == 1 && j["status"] == "drifted"
    });
    let lag = start.elapsed();
    poll_json(&bb, "/fleet", "B: /fleet counting the drift", |j| {
        fleet_has(j, "drifted", 1)
    });
    let drift = format!("/drift?image_id={IMG}");
    poll_json(&bb, &drift, "B: the drift group", |j| {
        has_group(j, &Value::Null)
    });
    let id = fleet::accept(&a.server, IMG, None, &finding);
    let accepted = Value::from(id.clone());
    poll_json(&bb, &drift, "B: the group accepted", |j| {
        has_group(j, &accepted)
    });
    poll_json(&bb, &format!("/hosts/{host}"), "B: the host clean", |j| {
        j["status"] == "clean"
    });
    poll_json(&bb, "/fleet", "B: /fleet counting it clean", |j| {
        fleet_has(j, "clean", 1) && fleet_has(j, "drifted", 0)
    });
    let removed = fleet::admin_delete(&b.server, &format!("/accepts/{id}"));
    assert!(matches!(removed.status, 200 | 204), "{}", removed.text());
    poll_json(&ab, &drift, "A: the accept removed", |j| {
        has_group(j, &Value::Null)
    });
    poll_json(
        &ab,
        &format!("/hosts/{host}"),
        "A: the host drifted again",
        |j| j["status"] == "drifted",
    );
    let other = fleet::host_id(0xf2);
    fleet::store(&b.server, &HostKey::new(), &fleet::report(&other, IMG, 1));
    poll_json(
        &ab,
        &format!("/hosts?image_id={IMG}"),
        "A: listing B's new host",
        |j| j["hosts"].as_array().is_some_and(|h| h.len() == 2),
    );
    let bytes = poll(VIEW_LAG, "B: the signed bytes A stored", || {
        read_at(&bb, &format!("/hosts/{host}/reports/1")).and_then(|r| match r.status {
            200 => Ok(r.body),
            s => Err(format!("{s} {}", r.text())),
        })
    });
    assert!(bytes.0 == drifted.to_bytes());
    eprintln!("B showed A's report after {lag:?}");
}

/// Two replicas take reports of one host at the same moment, round after round: the
/// same report on both (one 201, one 200), two reports of one seq (one 201, one 409),
/// two consecutive seqs (the higher 201, the lower 201 or 409).
#[test]
fn replicas_racing_reports_of_one_host_neither_reorder_nor_lose_them() {
    let (url, a, b) = two("race_pairs");
    fleet::upload_image(&a.server, IMG);
    let (host, key) = (fleet::host_id(0x7ace), HostKey::new());
    let (ab, bb) = (a.base(), b.base());
    let log = Mutex::new(Vec::new());
    let (mut seq, mut wrong) = (0, Vec::new());
    for round in 0..40 {
        let (sa, va, sb, vb) = match round % 4 {
            0 => (seq + 1, "", seq + 1, ""),
            1 => (seq + 1, "a", seq + 1, "b"),
            2 => (seq + 1, "", seq + 2, ""),
            _ => (seq + 2, "", seq + 1, ""),
        };
        seq = sa.max(sb);
        let (x, y) = race_pair([&ab, &bb], &host, &key, [(sa, va), (sb, vb)], &log);
        let mut pair = [x, y];
        pair.sort();
        let (high, low) = if sa > sb { (x, y) } else { (y, x) };
        let fine = match round % 4 {
            0 => pair == [Some(200), Some(201)],
            1 => pair == [Some(201), Some(409)],
            _ => high == Some(201) && matches!(low, Some(201 | 409)),
        };
        if !fine {
            wrong.push(format!(
                "seq {sa}{va} on A: {x:?}, seq {sb}{vb} on B: {y:?}"
            ));
        }
    }
    let log = log.into_inner().unwrap();
    eprintln!("racing pairs: {}", summary(&log));
    let stored = stored_of(&url, &[&host]);
    let found = violations(&log, &stored, false);
    assert!(
        found.is_empty() && wrong.is_empty(),
        "{found:#?}\n{wrong:#?}"
    );
    for base in [&ab, &bb] {
        assert_host_view(base, &host, &seqs_of(&stored, &host), VIEW_LAG);
    }
}

/// Four clients, two on each replica, send one host's reports as fast as they can,
/// seqs taken from one counter: whatever the interleaving, the contract holds.
#[test]
fn a_flood_of_one_hosts_reports_through_both_replicas_keeps_the_contract() {
    let (url, a, b) = two("flood");
    fleet::upload_image(&a.server, IMG);
    let (host, key) = (fleet::host_id(0xf100d), HostKey::new());
    let bases = [a.base(), b.base()];
    let log = flood(&bases, &host, &key, 160);
    eprintln!("flood: {}", summary(&log));
    let stored = stored_of(&url, &[&host]);
    let found = violations(&log, &stored, false);
    assert!(found.is_empty(), "{found:#?}");
    let created = log.iter().filter(|a| a.status() == Some(201)).count();
    assert!(
        created > 0 && stored.contains_key(&(host.clone(), 160)),
        "{created} stored"
    );
    for base in &bases {
        assert_host_view(base, &host, &seqs_of(&stored, &host), VIEW_LAG);
    }
}

#[test]
fn replicas_started_together_on_an_empty_database_migrate_once() {
    for round in 0..2 {
        let url = pg::cluster().database("migrate_together");
        let replicas = start_together(&url, 3);
        let counts = schema_versions(&url);
        assert!(!counts.is_empty(), "round {round}: no version recorded");
        for (at, (version, count)) in counts.iter().enumerate() {
            assert_eq!(
                (*version, *count),
                (at as i64 + 1, 1),
                "round {round}: {counts:?}"
            );
        }
        fleet::upload_image(&replicas[0].server, IMG);
        for replica in &replicas {
            assert_eq!(status_of(&replica.server, "/healthz"), 200);
            assert_eq!(
                status_of(&replica.server, &format!("/baselines/{IMG}")),
                200
            );
        }
    }
}

#[test]
fn a_database_newer_than_the_service_is_refused() {
    let url = pg::cluster().database("newer");
    drop(Replica::start(&url));
    pg::cluster().psql(
        db_name(&url),
        "INSERT INTO bulletproof_schema_version (version) VALUES (9999)",
    );
    let (code, stderr, _) = start_fails(&url, &[], &[], Duration::from_secs(20));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("9999") && stderr.contains("newer"),
        "{stderr}"
    );
}

#[test]
fn without_the_database_answers_are_503_with_retry_after_and_the_service_recovers() {
    let cluster = OwnCluster::new();
    let url = cluster.database("down");
    let mut a = Replica::start(&url);
    let base = a.base();
    fleet::upload_image(&a.server, IMG);
    let (host, key) = (fleet::host_id(0xd0), HostKey::new());
    fleet::store(&a.server, &key, &fleet::report(&host, IMG, 1));
    let two = report_bytes(&host, 2, "");
    cluster.stop();
    let (health, _) = poll(Duration::from_secs(5), "/healthz failing", || {
        let reply = healthz(&base)?;
        if reply.status == 200 {
            Err(reply.text())
        } else {
            Ok(reply)
        }
    });
    let why: Value = serde_json::from_slice(&health.body)
        .unwrap_or_else(|_| panic!("/healthz: {}", health.text()));
    let text = why.to_string().to_lowercase();
    assert!(
        text.contains("database") || text.contains("postgres"),
        "/healthz does not say why: {why}"
    );
    assert_outage_answers(&base, &key, &host, &two);
    assert!(a.alive(), "the service exited without its database");
    cluster.start();
    poll(
        Duration::from_secs(15),
        "/healthz ok again",
        || match healthz(&base) {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!("{:?}", other.map(|r| (r.status, r.text())))),
        },
    );
    let (status, _) = poll(
        Duration::from_secs(10),
        "the report taken again",
        || match post_report(&base, &key, &two, &host, 2, VIEW_LAG)
            .0
            .status()
        {
            Some(429 | 503) | None => Err("not yet".into()),
            Some(status) => Ok(status),
        },
    );
    assert_eq!(
        status, 201,
        "the report refused with 503 was stored after all"
    );
    assert_eq!(status_of(&a.server, "/baselines/img-nowhere"), 404);
    assert!(a.alive());
}

#[test]
fn a_wrong_password_is_a_clear_start_up_error_that_does_not_show_it() {
    let (name, cluster) = password_db("wrong_password");
    cluster.psql(
        &name,
        &format!("GRANT CREATE ON SCHEMA public TO {}", pg::PASSWORD_ROLE),
    );
    let bare = cluster.password_url(&name, None);
    let (_dir, file) = password_file(WRONG);
    let limit = Duration::from_secs(20);
    for (how, (code, stderr, _)) in [
        (
            "PGPASSWORD",
            start_fails(&bare, &[], &[("PGPASSWORD", WRONG)], limit),
        ),
        (
            "--store-password-file",
            start_fails(&bare, &["--store-password-file", &file], &[], limit),
        ),
        (
            "the URL",
            start_fails(&cluster.password_url(&name, Some(WRONG)), &[], &[], limit),
        ),
    ] {
        assert_ne!(code, 0, "{how}");
        assert!(
            stderr.contains("password authentication failed"),
            "{how}: {stderr}"
        );
        assert!(
            !stderr.contains(WRONG),
            "{how}: the password in stderr:\n{stderr}"
        );
    }
}

#[test]
fn the_password_from_a_file_or_pgpassword_works_and_is_never_logged() {
    let (name, cluster) = password_db("password_file");
    cluster.psql(
        &name,
        &format!("GRANT CREATE ON SCHEMA public TO {}", pg::PASSWORD_ROLE),
    );
    let bare = cluster.password_url(&name, None);
    let (_dir, file) = password_file(PASSWORD);
    let tokens = fleet::tokens();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let args = ["--store", &bare, "--store-password-file", &file];
    let a = support::start_with(dirs[0].path(), &args, &[("METADATA_TOKENS", &tokens)]);
    // The store from METADATA_STORE, the password from PGPASSWORD.
    let env = [("METADATA_STORE", bare.as_str()), ("PGPASSWORD", PASSWORD)];
    let b = support::start_with(dirs[1].path(), &[], &env);
    // In the URL: it works, with a warning that does not repeat it.
    let in_url = cluster.password_url(&name, Some(PASSWORD));
    let c = support::start_with(dirs[2].path(), &["--store", &in_url], &[]);
    assert!(
        c.log().contains("holds a password"),
        "no warning:\n{}",
        c.log()
    );
    fleet::upload_image(&a, IMG);
    for server in [&b, &c] {
        assert_eq!(status_of(server, &format!("/baselines/{IMG}")), 200);
    }
    for server in [&a, &b, &c] {
        assert!(
            !server.log().contains(PASSWORD),
            "the password in the log:\n{}",
            server.log()
        );
    }
}

#[test]
fn an_unreachable_database_is_a_fast_clear_start_up_error() {
    let (code, stderr, took) = start_fails(
        "postgres://bp@127.0.0.1:1/x",
        &[],
        &[],
        Duration::from_secs(20),
    );
    assert_ne!(code, 0);
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to give up:\n{stderr}"
    );
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("refused") && lower.contains("postgres"),
        "{stderr}"
    );
}

#[test]
fn a_role_that_cannot_create_the_schema_is_a_clear_start_up_error() {
    let (name, cluster) = password_db("no_create");
    cluster.psql(&name, "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    let (code, stderr, _) = start_fails(
        &cluster.password_url(&name, None),
        &[],
        &[("PGPASSWORD", PASSWORD)],
        Duration::from_secs(20),
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("permission denied") && stderr.contains("schema"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(PASSWORD),
        "the password in stderr:\n{stderr}"
    );
}

#[test]
fn agents_keep_reporting_when_a_replica_is_killed() {
    let (url, a, b) = two("kill");
    fleet::upload_image(&a.server, IMG);
    let hosts: Vec<String> = (0..6).map(|n| fleet::host_id(0xa000 + n)).collect();
    let mut a = Some(a);
    let log = agents_through(
        &hosts,
        [a.as_ref().unwrap().base(), b.base()],
        Duration::from_millis(5),
        |_| {
            a.take().unwrap().server.kill9();
            Instant::now()
        },
    );
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let stored = stored_of(&url, &names);
    eprintln!("kill -9: {}", summary(&log));
    let found = violations(&log, &stored, true);
    assert!(found.is_empty(), "{found:#?}");
    assert!(
        log.iter().all(|a| a.status() != Some(409)),
        "an agent's report refused"
    );
    let cut = log.iter().filter(|a| a.outcome.is_err()).count();
    assert!(cut > 0, "no request went to the killed replica");
    let fresh = Replica::start(&url);
    for host in &hosts {
        for base in [b.base(), fresh.base()] {
            assert_host_view(&base, host, &seqs_of(&stored, host), VIEW_LAG);
        }
    }
}

#[test]
fn agents_keep_reporting_through_a_postgres_restart() {
    let cluster = OwnCluster::new();
    let url = cluster.database("restart");
    let mut replicas = start_together(&url, 2);
    fleet::upload_image(&replicas[0].server, IMG);
    let hosts: Vec<String> = (0..4).map(|n| fleet::host_id(0xc000 + n)).collect();
    let urls = [replicas[0].base(), replicas[1].base()];
    let log = agents_through(&hosts, urls.clone(), Duration::from_millis(30), |log| {
        cluster.stop();
        let down = Instant::now();
        // Down long enough for both replicas to turn agents away, a dozen times.
        wait_for_503s(log, down, &urls, 12);
        cluster.start();
        Instant::now()
    });
    let stored: std::collections::BTreeMap<_, _> =
        stored_reports(|sql| cluster.psql("restart", sql));
    eprintln!("postgres restart: {}", summary(&log));
    let found = violations(&log, &stored, false);
    assert!(found.is_empty(), "{found:#?}");
    assert!(
        log.iter().all(|a| a.status() != Some(409)),
        "an agent's report refused"
    );
    for replica in &mut replicas {
        assert!(replica.alive(), "a replica exited with the database");
    }
    for host in &hosts {
        for base in &urls {
            assert_host_view(base, host, &seqs_of(&stored, host), VIEW_LAG);
        }
    }
}
