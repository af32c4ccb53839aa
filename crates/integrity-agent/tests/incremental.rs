//! Incremental checks against the verified state (DESIGN §14, issue 21), from the
//! contract and as an attacker would try them: the state in `--state-dir` records, for
//! every regular file, the kernel's (device, inode, size, mtime, ctime) and the digest
//! verified, and a check re-hashes only what changed since. Every way of changing a
//! file's content while keeping what a shortcut would look at must still be reported
//! by an incremental check; a state that is not this check's own (another baseline,
//! root or host; damaged anywhere; torn by a crash) must mean a full check.

#[path = "support/incremental.rs"]
mod inc;
mod support;

use inc::{found, must, require_root, tamper, Check, Found, Namespace, Tree};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// A tree of `n` files after its first (full) and second (incremental) checks. (That
/// the second re-hashes nothing is the first test's: here it would hide the rest.)
fn primed(n: usize) -> Tree {
    let tree = Tree::new(n);
    tree.check(&[]).assert("full", &[]);
    tree.check(&[]).assert("incremental", &[]);
    tree
}

fn modified(path: &str) -> Found {
    found("modified", path, &["sha256"])
}

#[test]
fn first_check_is_full_then_incremental_with_nothing_rehashed() {
    require_root();
    let tree = Tree::new(300);
    let before = SystemTime::now();
    // Under umask 000: the state is private all the same.
    let first = Check::run(&mut inc::with_umask_000(&tree.agent(&[])));
    first.assert("full", &[]);
    first.assert_rehashed(300);
    let last_full = first.last_full();
    let slack = Duration::from_secs(2);
    assert!(last_full + slack >= before && last_full <= SystemTime::now() + slack);
    let summary = first.stdout.lines().last().unwrap();
    assert!(summary.starts_with("{\"summary\":{"), "{summary}");
    tree.assert_private();

    let second = tree.check(&[]);
    second.assert("incremental", &[]);
    second.assert_rehashed(0);
    assert_eq!(second.last_full(), last_full, "incremental keeps last_full");
    tree.assert_private();

    // --full reads everything again, right after a full check.
    let forced = tree.check(&["--full"]);
    forced.assert("full", &[]);
    forced.assert_rehashed(300);
    assert!(forced.last_full() >= last_full);
    tree.assert_private();
}

#[test]
fn the_text_report_says_which_kind_of_check_ran() {
    require_root();
    let tree = Tree::new(40);
    let before = SystemTime::now() - Duration::from_secs(2);
    let first = Check::run(&mut tree.agent_as("text", &[]));
    assert_eq!(first.code, Some(0), "{}", first.context());
    let (mode, count, _) = inc::text_check_line(&first.stdout);
    assert_eq!((mode.as_str(), count), ("full", 40));
    tamper(&tree.path(&tree.files[7]));
    let second = Check::run(&mut tree.agent_as("text", &[]));
    assert_eq!(second.code, Some(4), "{}", second.context());
    assert!(second.stdout.contains("modified (1)"), "{}", second.stdout);
    let (mode, count, last_full) = inc::text_check_line(&second.stdout);
    assert_eq!((mode.as_str(), count), ("incremental", 1));
    let last_full = last_full.expect("an incremental check names the last full one");
    assert!(last_full >= before && last_full <= SystemTime::now());
}

#[test]
fn content_changed_with_size_and_mtime_put_back_is_caught() {
    require_root();
    let tree = primed(300);
    let victim = &tree.files[123];
    let key = |m: fs::Metadata| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
    let before = key(fs::metadata(tree.path(victim)).unwrap());
    tamper(&tree.path(victim));
    assert_eq!(key(fs::metadata(tree.path(victim)).unwrap()), before);
    let check = tree.check(&[]);
    check.assert("incremental", &[modified(victim)]);
    check.assert_rehashed(1);
}

#[test]
fn chmod_is_caught() {
    require_root();
    let tree = primed(300);
    let victim = &tree.files[5];
    fs::set_permissions(tree.path(victim), fs::Permissions::from_mode(0o4755)).unwrap();
    let check = tree.check(&[]);
    check.assert(
        "incremental",
        &[found("metadata_changed", victim, &["mode"])],
    );
    check.assert_rehashed(1);
}

#[test]
fn chown_is_caught() {
    require_root();
    let tree = primed(300);
    let victim = &tree.files[6];
    std::os::unix::fs::chown(tree.path(victim), Some(1000), Some(1000)).unwrap();
    let check = tree.check(&[]);
    let changed = found("metadata_changed", victim, &["uid", "gid"]);
    check.assert("incremental", &[changed]);
    check.assert_rehashed(1);
}

#[test]
fn another_file_renamed_over_it_is_caught() {
    require_root();
    let tree = primed(300);
    // From outside the tree: same size, the victim's mtime.
    let (victim, evil) = (tree.path(&tree.files[100]), tree.dir.path().join("evil"));
    inc::impostor(&victim, &evil, b'E');
    fs::rename(&evil, &victim).unwrap();
    let check = tree.check(&[]);
    check.assert("incremental", &[modified(&tree.files[100])]);
    check.assert_rehashed(1);

    // Two verified files of one size and mtime swapped: each path now has the other's
    // (verified, unchanged) inode.
    let (a, b) = (tree.path(&tree.files[110]), tree.path(&tree.files[207]));
    assert_eq!(fs::read(&a).unwrap().len(), fs::read(&b).unwrap().len());
    let swap = tree.dir.path().join("swap");
    fs::rename(&a, &swap).unwrap();
    fs::rename(&b, &a).unwrap();
    fs::rename(&swap, &b).unwrap();
    let check = tree.check(&[]);
    let expected = [100, 110, 207].map(|i| modified(&tree.files[i]));
    check.assert("incremental", &expected);
    // (The file renamed over just before the last check may be read again.)
    check.assert_rehashed_in(2..=3);
}

#[test]
fn a_hard_link_swap_is_caught() {
    require_root();
    let tree = primed(300);
    // Another inode (outside the tree, same filesystem) of the same size and mtime.
    let (victim, other) = (tree.path(&tree.files[200]), tree.dir.path().join("other"));
    inc::impostor(&victim, &other, b'H');
    fs::remove_file(&victim).unwrap();
    fs::hard_link(&other, &victim).unwrap();
    let check = tree.check(&[]);
    check.assert("incremental", &[modified(&tree.files[200])]);
    check.assert_rehashed(1);
    // Rewritten through the link left outside: still reported, the next time too.
    tamper(&other);
    let check = tree.check(&[]);
    check.assert("incremental", &[modified(&tree.files[200])]);
}

#[test]
fn same_inode_number_on_another_filesystem_is_caught() {
    require_root();
    // Inode numbers are unique only within one filesystem: two fresh tmpfs mounts
    // count from the same small number, so a file on another filesystem can carry the
    // verified file's inode number, size and mtime. Only the device number says it is
    // not the file that was verified (its ctime differs too here, but a ctime is only
    // the clock at the change, and whoever sets the clock chooses it).
    let ns = Namespace::new();
    let dir = tempfile::tempdir().unwrap();
    let (root, stage) = (dir.path().join("root"), dir.path().join("stage"));
    fs::create_dir(&root).unwrap();
    fs::create_dir(&stage).unwrap();
    let (root_s, stage_s) = (root.to_str().unwrap(), stage.to_str().unwrap());
    ns.run("mount", &["-t", "tmpfs", "-o", "mode=755", "bp-a", root_s]);
    let inside = ns.path(&root);
    let files = inc::populate(&inside, 60);
    let baseline = dir.path().join("baseline.json");
    fs::write(&baseline, support::baseline(&inside, "img")).unwrap();
    let state = dir.path().join("state");
    let agent = inc::agent_on(&baseline, &root, &state, "json", &["--cross-filesystems"]);
    let run = || Check::run(ns.command(agent.get_program()).args(agent.get_args()));
    run().assert("full", &[]);
    run().assert("incremental", &[]);

    let target = &files[40];
    let meta = fs::metadata(inside.join(&target[1..])).unwrap();
    ns.run("mount", &["-t", "tmpfs", "-o", "mode=755", "bp-b", stage_s]);
    let name = (0..100_000)
        .map(|i| format!("n{i}"))
        .find(|name| {
            let path = ns.path(&stage.join(name));
            fs::write(&path, b"").unwrap();
            fs::metadata(&path).unwrap().ino() == meta.ino()
        })
        .expect("a file with the target's inode number on the second tmpfs");
    inc::impostor(
        &inside.join(&target[1..]),
        &ns.path(&stage.join(&name)),
        b'T',
    );
    let twin = format!("{stage_s}/{name}");
    ns.run("mount", &["--bind", &twin, &format!("{root_s}{target}")]);
    let now = fs::metadata(inside.join(&target[1..])).unwrap();
    let key = |m: &fs::Metadata| (m.ino(), m.size(), m.mtime(), m.mtime_nsec());
    assert_eq!(key(&now), key(&meta));
    assert_ne!(now.dev(), meta.dev());
    run().assert("incremental", &[modified(target)]);
    drop(ns);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.path().to_str().unwrap()),
        "a mount left"
    );
}

#[test]
fn unprivileged_best_effort_at_an_identical_state_is_caught() {
    require_root();
    // The file belongs to uid 1000, who rewrites it in place (same size, same inode)
    // and puts atime and mtime back: all an unprivileged user can do. Only the ctime
    // (which no one but the clock's owner chooses) moves.
    let victim = "/d01/s1/f00001";
    let tree = Tree::with(100, |root| {
        std::os::unix::fs::chown(root.join(&victim[1..]), Some(1000), Some(1000)).unwrap();
    });
    tree.check(&[]).assert("full", &[]);
    tree.check(&[]).assert("incremental", &[]);
    let path = tree.path(victim);
    let before = fs::metadata(&path).unwrap();
    let stamp = |s: i64, ns: i64| format!("@{s}.{ns:09}");
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] = b'U';
    let script = "printf %s \"$2\" | dd of=\"$1\" conv=notrunc status=none \
                  && touch -m -d \"$3\" \"$1\" && touch -a -d \"$4\" \"$1\"";
    must(
        Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"])
            .args(["sh", "-c", script, "sh", path.to_str().unwrap()])
            .arg(String::from_utf8(bytes).unwrap())
            .arg(stamp(before.mtime(), before.mtime_nsec()))
            .arg(stamp(before.atime(), before.atime_nsec())),
    );
    let after = fs::metadata(&path).unwrap();
    let key = |m: &fs::Metadata| {
        let times = (m.mtime(), m.mtime_nsec(), m.atime(), m.atime_nsec());
        (m.dev(), m.ino(), m.size(), m.uid(), m.mode(), times)
    };
    assert_eq!(key(&after), key(&before), "the attack kept all it can");
    assert_ne!(fs::read(&path).unwrap(), inc::content(1));
    tree.check(&[]).assert("incremental", &[modified(victim)]);
}

#[test]
fn a_change_reverted_before_the_next_check_is_no_finding() {
    require_root();
    let tree = primed(200);
    let (x, y) = (&tree.files[20], &tree.files[21]);
    let old = tamper(&tree.path(x));
    tree.check(&[]).assert("incremental", &[modified(x)]);
    inc::rewrite_keeping_times(&tree.path(x), &old);
    let check = tree.check(&[]);
    check.assert("incremental", &[]);
    check.assert_rehashed(1);
    // Changed and reverted with no check in between.
    let old = tamper(&tree.path(y));
    inc::rewrite_keeping_times(&tree.path(y), &old);
    let check = tree.check(&[]);
    check.assert("incremental", &[]);
    // (x, changed just before the last check, may be read again.)
    check.assert_rehashed_in(1..=2);
}

#[test]
fn added_deleted_and_type_changed_in_an_incremental_check() {
    require_root();
    let tree = primed(200);
    fs::write(tree.path("/d00/s0/new"), "new\n").unwrap();
    fs::remove_file(tree.path(&tree.files[5])).unwrap();
    fs::remove_file(tree.path(&tree.files[6])).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", tree.path(&tree.files[6])).unwrap();
    let check = tree.check(&[]);
    let expected = [
        found("added", "/d00/s0/new", &[]),
        found("deleted", &tree.files[5], &[]),
        found("type_changed", &tree.files[6], &["kind"]),
    ];
    check.assert("incremental", &expected);
    check.assert_rehashed(1); // the new file
}

#[test]
fn a_file_changed_while_it_is_being_read_is_not_recorded_as_verified() {
    require_root();
    // The part already read is changed mid-read: that read's digest is of the old
    // content. A state that took the kernel state from after the read (with the old
    // digest) would vouch for the new content from then on.
    let tree = Tree::with(20, |root| {
        let big = fs::File::create(root.join("big")).unwrap();
        big.set_len(768 << 20).unwrap();
    });
    let big = tree.path("/big").canonicalize().unwrap();
    tree.check(&[]).assert("full", &[]);
    for round in 0..4 {
        let extra: &[&str] = if round % 2 == 0 { &["--full"] } else { &[] };
        if round % 2 == 1 {
            // A chmod to the same mode moves the ctime: the incremental check reads it.
            fs::set_permissions(&big, fs::Permissions::from_mode(0o644)).unwrap();
        }
        let mut agent = tree.spawn(extra);
        let seen = inc::wait_mid_read(agent.0.id(), &big);
        inc::rewrite_keeping_times(&big, &[round as u8 + 1]);
        eprintln!("round {round}: changed mid-read: {seen}");
        agent.0.wait().unwrap();
        tree.check(&[]).assert("incremental", &[modified("/big")]);
        inc::rewrite_keeping_times(&big, &[0]);
        tree.check(&[]).assert("incremental", &[]);
    }
}

#[test]
fn a_damaged_state_means_a_full_check_with_the_true_result() {
    require_root();
    let tree = primed(200);
    let (x, y) = (&tree.files[3], &tree.files[150]);
    tamper(&tree.path(x));
    tree.check(&[]).assert("incremental", &[modified(x)]);
    let good = fs::read(tree.verified()).unwrap();
    let len = good.len();
    assert!(len > 64, "a state of 200 files is {len} bytes");
    // A change after the state was saved: the true result has both.
    tamper(&tree.path(y));
    let expected = [modified(x), modified(y)];
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("one byte".into(), good[..1].to_vec()),
        ("half".into(), good[..len / 2].to_vec()),
        ("all but the last byte".into(), good[..len - 1].to_vec()),
        ("a byte appended".into(), [&good[..], b"x"].concat()),
    ];
    let mut rng = fastrand::Rng::with_seed(21);
    let mut offsets: Vec<usize> = (0..16).chain(len - 16..len).collect();
    offsets.extend((0..32).map(|_| rng.usize(..len)));
    for offset in offsets {
        for mask in [0x01u8, 0x80] {
            let mut bytes = good.clone();
            bytes[offset] ^= mask;
            cases.push((format!("byte {offset}/{len} ^ {mask:#04x}"), bytes));
        }
    }
    for (case, bytes) in cases {
        fs::write(tree.verified(), &bytes).unwrap();
        let check = tree.check(&[]);
        check.assert_in(&format!("state damaged: {case}"), "full", &expected);
    }
}

#[test]
fn a_tampered_digest_in_the_state_means_a_full_check() {
    require_root();
    let tree = primed(100);
    let bytes = fs::read(tree.path(&tree.files[42])).unwrap();
    let digest = integrity_common::Sha256Digest::of(&bytes).0;
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut state = fs::read(tree.verified()).unwrap();
    let find = |needle: &[u8]| state.windows(needle.len()).position(|w| w == needle);
    let at = find(hex.as_bytes()).or_else(|| find(hex.to_uppercase().as_bytes()));
    match (at, find(&digest)) {
        (Some(at), _) => state[at] = if state[at] == b'0' { b'1' } else { b'0' },
        (None, Some(at)) => state[at] ^= 0x01,
        (None, None) => {
            eprintln!("the digest is not stored in clear: the byte sweep covers this");
            return;
        }
    }
    fs::write(tree.verified(), &state).unwrap();
    // Unchanged on disk: neither reported nor trusted from the damaged entry.
    tree.check(&[]).assert("full", &[]);
    tree.check(&[]).assert("incremental", &[]);
}

#[test]
fn another_baselines_state_means_a_full_check() {
    require_root();
    let tree = primed(100);
    // A newer baseline of the same image id, with one more file.
    fs::write(tree.path("/d00/s0/extra"), "extra\n").unwrap();
    let newer = tree.dir.path().join("newer.json");
    fs::write(&newer, support::baseline(&tree.root, "img")).unwrap();
    fs::remove_file(tree.path("/d00/s0/extra")).unwrap();
    let with = |baseline: &Path| inc::check_on(baseline, &tree.root, &tree.state);
    let deleted = [found("deleted", "/d00/s0/extra", &[])];
    with(&newer).assert("full", &deleted);
    with(&newer).assert("incremental", &deleted);
    with(&tree.baseline).assert("full", &[]);
}

#[test]
fn another_roots_state_means_a_full_check() {
    require_root();
    let tree = primed(100);
    let copy = tree.dir.path().join("copy");
    must(Command::new("cp").arg("-a").arg(&tree.root).arg(&copy));
    tamper(&copy.join(&tree.files[9][1..]));
    let on = |root: &Path| inc::check_on(&tree.baseline, root, &tree.state);
    on(&copy).assert("full", &[modified(&tree.files[9])]);
    on(&copy).assert("incremental", &[modified(&tree.files[9])]);
    on(&tree.root).assert("full", &[]);
}

#[test]
fn another_hosts_state_means_a_full_check() {
    require_root();
    let tree = primed(100);
    // The state file carried to another host: another host id in its state directory,
    // another /etc/machine-id and hostname (whichever the binding uses).
    let other_id = "0123456789abcdef0123456789abcdef\n";
    let state = tree.dir.path().join("other-state");
    fs::DirBuilder::new().mode(0o700).create(&state).unwrap();
    fs::write(state.join("host-id"), other_id).unwrap();
    fs::copy(tree.verified(), state.join("verified")).unwrap();
    let machine_id = tree.dir.path().join("machine-id");
    fs::write(&machine_id, other_id).unwrap();
    let mut command = Command::new("unshare");
    command.args(["--mount", "--uts", "--propagation", "private", "sh", "-c"]);
    command.arg("mount --bind \"$0\" /etc/machine-id && hostname other && exec \"$@\"");
    let agent = inc::agent_on(&tree.baseline, &tree.root, &state, "json", &[]);
    command.arg(&machine_id).arg(agent.get_program());
    Check::run(command.args(agent.get_args())).assert("full", &[]);
}

#[test]
fn full_every_two_seconds() {
    require_root();
    let tree = Tree::new(50);
    let every = ["--full-every", "2s"];
    let first = tree.check(&every);
    first.assert("full", &[]);
    let second = tree.check(&every);
    second.assert("incremental", &[]);
    assert_eq!(second.last_full(), first.last_full());
    // Wall-clock time must pass for this one.
    let due = first.last_full() + Duration::from_millis(2200);
    inc::poll(Duration::from_secs(10), "2 s to pass", || {
        (SystemTime::now() > due).then_some(())
    });
    let third = tree.check(&every);
    third.assert("full", &[]);
    third.assert_rehashed(50);
    assert!(third.last_full() > first.last_full());
    let fourth = tree.check(&every);
    fourth.assert("incremental", &[]);
    assert_eq!(fourth.last_full(), third.last_full());
    // --full wins over any period; other humantime periods are accepted.
    tree.check(&["--full", "--full-every", "2h"])
        .assert("full", &[]);
    tree.check(&["--full-every", "2h"])
        .assert("incremental", &[]);
    tree.check(&["--full-every", "30s"])
        .assert("incremental", &[]);
}

#[test]
fn full_every_zero_and_nonsense_are_handled_cleanly() {
    require_root();
    let tree = primed(30);
    for zero in ["0", "0s"] {
        // Either refused clearly or every check full (a state is there already).
        let check = tree.check(&["--full-every", zero]);
        if check.code == Some(14) {
            check.assert_usage_error("full-every");
        } else {
            check.assert("full", &[]);
            tree.check(&["--full-every", zero]).assert("full", &[]);
        }
    }
    for bad in ["banana", "-1s", "", "1x", "99999999999999999999y"] {
        let flag = format!("--full-every={bad}");
        tree.check(&[&flag]).assert_usage_error("full-every");
    }
}

#[test]
fn a_state_of_the_wrong_kind_or_that_others_could_write_is_not_trusted() {
    require_root();
    let tree = primed(50);
    let (verified, good) = (tree.verified(), fs::read(tree.verified()).unwrap());
    let victim = tree.dir.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let chmod = |path: &Path, mode| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    };
    // (case, whether a refusal naming the state directory will do, how)
    let cases: [(&str, bool, &dyn Fn()); 6] = [
        ("a symlink", false, &|| {
            std::os::unix::fs::symlink(&victim, &verified).unwrap()
        }),
        ("a directory", false, &|| fs::create_dir(&verified).unwrap()),
        ("mode 0666", true, &|| chmod(&verified, 0o666)),
        ("owned by uid 1000", true, &|| {
            std::os::unix::fs::chown(&verified, Some(1000), Some(1000)).unwrap();
        }),
        ("in a directory others can write", true, &|| {
            chmod(&tree.state, 0o777)
        }),
        // (Opened for reading, a FIFO blocks until someone writes.)
        ("a FIFO", false, &|| {
            must(Command::new("mkfifo").arg(&verified))
        }),
    ];
    let mut failures = Vec::new();
    for (case, may_refuse, plant) in cases {
        chmod(&tree.state, 0o700);
        let _ = fs::remove_file(&verified).or_else(|_| fs::remove_dir(&verified));
        if may_refuse {
            fs::write(&verified, &good).unwrap();
        }
        plant();
        let within = Duration::from_secs(30);
        let check = Check::run_within(&mut tree.agent(&[]), tree.dir.path(), within);
        let brief = check
            .as_ref()
            .map_or((None, "hung".into(), 0), Check::brief);
        let state = tree.state.to_str().unwrap();
        let refused =
            may_refuse && check.is_some_and(|c| c.code == Some(14) && c.stderr.contains(state));
        if !refused && (brief.0, brief.1.as_str(), brief.2) != (Some(0), "full", 0) {
            failures.push(format!("state file {case}: (exit, mode, found) {brief:?}"));
        }
        if fs::read_to_string(&victim).unwrap() != "precious\n" {
            failures.push(format!("state file {case}: wrote through the symlink"));
        }
    }
    let want = "a full check, clean (or a refusal naming the state directory)";
    assert!(failures.is_empty(), "want {want}: {failures:#?}");
}

#[test]
fn a_state_that_cannot_be_saved_changes_no_result() {
    require_root();
    let tree = primed(50);
    let verified = tree.verified();
    let guard = inc::Immutable(&verified);
    must(Command::new("chattr").arg("+i").arg(&verified));
    let expected = [modified(&tree.files[4]), modified(&tree.files[5])];
    tamper(&tree.path(&tree.files[4]));
    let check = tree.check(&[]);
    let said = check.stderr.contains("verified") || check.stderr.contains("state");
    assert!(said, "say it was not saved: {}", check.context());
    assert_eq!(check.anomalies(), expected[..1], "{}", check.context());
    assert_eq!(check.code, Some(4), "{}", check.context());
    tamper(&tree.path(&tree.files[5]));
    let check = tree.check(&[]);
    assert_eq!(check.anomalies(), expected, "{}", check.context());
    drop(guard);
    tree.check(&[]).assert("incremental", &expected);
}

#[test]
fn kill_9_mid_check_never_leaves_a_state_that_is_trusted_wrongly() {
    require_root();
    let tree = Tree::new(20_000);
    let started = Instant::now();
    tree.check(&[]).assert("full", &[]);
    let full = started.elapsed();
    let started = Instant::now();
    tree.check(&[]).assert("incremental", &[]);
    let incremental = started.elapsed();
    eprintln!("20000 files: full check {full:?}, incremental {incremental:?}");
    let mut rng = fastrand::Rng::with_seed(9);
    let (mut expected, mut finished) = (Vec::new(), 0);
    for round in 0..16 {
        let victim = &tree.files[round * 1000 + 7];
        tamper(&tree.path(victim));
        expected.push(modified(victim));
        let (extra, span): (&[&str], _) = match round % 3 {
            0 => (&["--full"], full),
            _ => (&[], incremental),
        };
        let mut agent = tree.spawn(extra);
        // Fault injection at a random point of the check (not a synchronisation).
        std::thread::sleep(span.mul_f64(rng.f64() * 1.2));
        finished += agent.0.try_wait().unwrap().is_some() as u32;
        drop(agent); // SIGKILL
        let check = tree.check(&[]);
        let mode = check.mode();
        let context = check.context();
        assert!(
            ["full", "incremental"].contains(&mode.as_str()),
            "{context}"
        );
        check.assert_in(&format!("after kill {round}"), &mode, &expected);
        tree.assert_private();
    }
    let left: Vec<_> = fs::read_dir(&tree.state).unwrap().flatten().collect();
    let left: Vec<_> = left.iter().map(|entry| entry.file_name()).collect();
    eprintln!("16 kills ({finished} after the check ended); state dir: {left:?}");
}
