//! The log on real roots: paths, fail-closed key state, appends that verify, reinit.

use super::*;

#[test]
fn evolution_is_one_way_and_deterministic() {
    let k0 = initial_key(&[7; 32], "guard");
    assert_ne!(k0, initial_key(&[7; 32], "bulletproofctl"));
    assert_eq!(evolve(&k0), evolve(&k0));
    assert_ne!(evolve(&k0), k0);
}

#[test]
fn parse_refuses_garbage() {
    assert!(parse_line("{}").is_err());
    assert!(parse_line("x,\"mac\":\"zz\"}").is_err());
}

#[test]
fn paths_are_those_of_the_root() {
    let log = SecLog::new(Path::new("/opt/x"));
    assert_eq!(log.root(), Path::new("/opt/x"));
    assert_eq!(log.install_dir(), Path::new("/opt/x/install"));
    assert_eq!(log.logkeys_dir(), Path::new("/opt/x/install/logkeys"));
    assert_eq!(
        log.state_path("guard"),
        Path::new("/opt/x/install/logkeys/guard.state")
    );
    assert_eq!(
        log.master_key_path(),
        Path::new("/opt/x/install/logkeys/initial.key")
    );
    assert_eq!(log.host_key(), Path::new("/opt/x/install/host.key"));
    assert_eq!(log.host_public_key(), Path::new("/opt/x/install/host.pub"));
    assert_eq!(
        log.jsonl_path("guard"),
        Path::new("/opt/x/logs/security/guard.jsonl")
    );
    assert_eq!(
        log.human_log_path("guard"),
        Path::new("/opt/x/logs/security/guard.log")
    );
}

/// An installed root in a temporary directory: key states, host key, log dir.
fn installed() -> (tempfile::TempDir, SecLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = SecLog::new(dir.path());
    fs::create_dir(log.install_dir()).unwrap();
    fs::set_permissions(log.install_dir(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(dir.path().join("logs/security")).unwrap();
    assert!(log.init_keys(None, COMPONENTS).unwrap().is_some());
    integrity_trust::keygen(&log.host_key(), &log.host_public_key(), None).unwrap();
    (dir, log)
}

fn verify_chain(log: &SecLog, component: &str) -> Verdict {
    verify_files(log, &[log.jsonl_path(component)])
}

fn verify_files(log: &SecLog, files: &[PathBuf]) -> Verdict {
    verify(
        files,
        &VerifyOptions {
            master: read_master(&log.master_key_path()).unwrap(),
            host_key: integrity_trust::load_public_key(&log.host_public_key())
                .map_err(|e| e.to_string()),
            max_age_secs: None,
            require_checkpoint: true,
        },
    )
    .unwrap()
}

#[test]
fn a_root_not_installed_keeps_no_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = SecLog::new(dir.path());
    log.ensure_ready().unwrap();
    log.event("nothing", "not installed", serde_json::json!({}));
    assert!(!append_failed());
    assert!(!log.jsonl_path("bulletproofctl").exists());
}

#[test]
fn appends_verify_and_the_state_fails_closed() {
    let (_dir, log) = installed();
    log.ensure_ready().unwrap();
    for n in 0..3u64 {
        let seq = log
            .append("guard", "heartbeat", "ok", serde_json::json!({ "n": n }))
            .unwrap();
        assert_eq!(seq, n);
    }
    let verdict = verify_chain(&log, "guard");
    assert!(verdict.problem.is_none(), "{verdict:?}");
    assert_eq!((verdict.first_seq, verdict.last_seq), (Some(0), Some(2)));
    assert_eq!(verdict.component.as_deref(), Some("guard"));
    assert_eq!(
        fs::metadata(log.state_path("guard")).unwrap().mode() & 0o7777,
        0o600
    );
    // A second installation does not start a new chain.
    assert!(log.init_keys(None, COMPONENTS).unwrap().is_none());

    let state = log.state_path("guard");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o666)).unwrap();
    let error = format!("{:#}", log.ensure_ready().unwrap_err());
    assert!(error.contains("key state is missing or damaged"), "{error}");
    assert!(error.contains("untrusted"), "{error}");
    assert!(log
        .append("guard", "x", "x", serde_json::json!({}))
        .is_err());
    fs::set_permissions(&state, fs::Permissions::from_mode(0o600)).unwrap();
    log.check_keys().unwrap();

    // A stale state (one record behind is a crash; two is not) does not continue.
    let old = fs::read(&state).unwrap();
    log.append("guard", "heartbeat", "ok", serde_json::json!({}))
        .unwrap();
    log.append("guard", "heartbeat", "ok", serde_json::json!({}))
        .unwrap();
    write_file(&state, &old, 0o600).unwrap();
    let error = format!("{:#}", log.check_keys().unwrap_err());
    assert!(error.contains("does not continue"), "{error}");

    fs::remove_file(&state).unwrap();
    let error = format!("{:#}", log.check_keys().unwrap_err());
    assert!(error.contains("guard.state is missing"), "{error}");
}

#[test]
fn reinit_starts_a_new_verifiable_epoch() {
    let (_dir, log) = installed();
    log.append("bulletproofctl", "install", "done", serde_json::json!({}))
        .unwrap();
    fs::remove_file(log.state_path("bulletproofctl")).unwrap();
    let done = log.reinit(None).unwrap();
    assert!(
        done.reason.as_deref().unwrap().contains("missing"),
        "{done:?}"
    );
    assert!(done
        .closed
        .iter()
        .any(|c| c.ends_with(format!("bulletproofctl.jsonl.closed-{}", done.epoch))));
    for component in COMPONENTS {
        let verdict = verify_chain(&log, component);
        assert!(verdict.problem.is_none(), "{component}: {verdict:?}");
        assert_eq!(verdict.records, 1);
        let first = fs::read_to_string(log.jsonl_path(component)).unwrap();
        assert_eq!(parse_line(first.trim_end()).unwrap().event, "log-reinit");
    }
    log.ensure_ready().unwrap();
}

/// Two components' logs given as one rotated chain: said as such, naming both, not
/// "inserted" (the first record of the second file is not an insertion).
#[test]
fn logs_of_two_components_are_named_as_such() {
    let (_dir, log) = installed();
    for component in ["bulletproofctl", "guard"] {
        for _ in 0..3 {
            log.append(component, "heartbeat", "ok", serde_json::json!({}))
                .unwrap();
        }
    }
    let ctl = log.jsonl_path("bulletproofctl");
    let guard = log.jsonl_path("guard");
    for (files, odd, what) in [
        (
            [ctl.clone(), guard.clone()],
            &guard,
            "guard.jsonl is the log of component guard, bulletproofctl.jsonl of bulletproofctl",
        ),
        (
            [guard.clone(), ctl.clone()],
            &ctl,
            "bulletproofctl.jsonl is the log of component bulletproofctl, guard.jsonl of guard",
        ),
    ] {
        let verdict = verify_files(&log, &files);
        let (file, line, why) = verdict.problem.expect("a problem");
        assert_eq!((&file, line), (odd, 0), "{why}");
        assert!(why.starts_with(what), "{why}");
        assert!(
            why.contains("give the files of one component, oldest first"),
            "{why}"
        );
        assert!(!why.contains("inserted"), "{why}");
    }
    // A foreign record inside a file is still an insertion.
    let mut lines = fs::read_to_string(&guard).unwrap();
    lines.push_str(fs::read_to_string(&ctl).unwrap().lines().next().unwrap());
    lines.push('\n');
    fs::write(&guard, lines).unwrap();
    let verdict = verify_files(&log, std::slice::from_ref(&guard));
    let (file, line, why) = verdict.problem.expect("a problem");
    assert_eq!((&file, line), (&guard, 4), "{why}");
    assert!(why.contains("inserted"), "{why}");
}

#[test]
fn a_batch_verifies_and_a_crash_before_its_state_update_is_caught_up() {
    let (_dir, log) = installed();
    log.append("guard", "start", "one", serde_json::json!({}))
        .unwrap();
    let batch: Vec<(&str, &str, serde_json::Value)> = (0..5)
        .map(|i| ("enroll", "a host enrolled", serde_json::json!({ "i": i })))
        .collect();
    assert_eq!(log.append_many("guard", &batch).unwrap(), Some(5));
    assert_eq!(log.append_many("guard", &[]).unwrap(), None);
    let verdict = verify_chain(&log, "guard");
    assert!(verdict.problem.is_none(), "{:?}", verdict.problem);
    assert_eq!(verdict.records, 6);

    // A batch written whose key state update did not land: the state is what the
    // batch announced (the state before it, with `pending`); the next append
    // continues after the batch. Without the announcement it does not continue.
    let before = fs::read(log.state_path("guard")).unwrap();
    log.append_many("guard", &batch).unwrap();
    fs::write(log.state_path("guard"), &before).unwrap();
    let error = format!("{:#}", log.check_keys().unwrap_err());
    assert!(error.contains("does not continue"), "{error}");
    let mut announced: serde_json::Value = serde_json::from_slice(&before).unwrap();
    announced["pending"] = 4.into();
    fs::write(
        log.state_path("guard"),
        serde_json::to_vec(&announced).unwrap(),
    )
    .unwrap();
    log.check_keys().unwrap();
    assert_eq!(
        log.append("guard", "next", "after the crash", serde_json::json!({}))
            .unwrap(),
        11
    );
    let verdict = verify_chain(&log, "guard");
    assert!(verdict.problem.is_none(), "{:?}", verdict.problem);
    assert_eq!(verdict.records, 12);
}
