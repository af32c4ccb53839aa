//! Both backends on real trees. fanotify runs on a tmpfs of its own, mounted in a
//! private mount namespace of a thread of its own (its filesystem mark then sees
//! only the test's events, and the mount dies with the thread); inotify on a
//! temporary directory. The watched root is a subdirectory, with a sibling outside
//! it whose changes must not be reported.

use super::{Backend, Changes, Watcher};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(20);

/// The tests need root, as `scripts/test` runs them: a private mount namespace and
/// fanotify's filesystem marks.
const NEEDS_ROOT: &str = "the watch tests need root (a private mount namespace, fanotify \
     filesystem marks): run them as scripts/test does";

/// Runs `test(backend, root)` for each backend; `root` exists and is empty, and
/// `root/../outside` exists too. Both run on a private tmpfs (fast, and nobody
/// else's events).
fn each_backend(test: fn(Backend, &Path)) {
    let ran = in_private_tmpfs(move |tmpfs| {
        for backend in [Backend::Inotify, Backend::Fanotify] {
            let dir = tmpfs.join(format!("{backend:?}"));
            fs::create_dir_all(dir.join("root")).unwrap();
            fs::create_dir(dir.join("outside")).unwrap();
            test(backend, &dir.join("root"));
        }
    });
    assert!(ran, "{NEEDS_ROOT}");
}

/// Runs `f` on a thread of its own, in a mount namespace of its own, with a fresh
/// tmpfs mounted on a temporary directory; false when that is refused.
fn in_private_tmpfs(f: impl FnOnce(&Path) + Send + 'static) -> bool {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let thread = std::thread::spawn(move || {
        if unshare(CloneFlags::CLONE_NEWNS).is_err() {
            return false;
        }
        // Nothing mounted here may reach the machine's namespace.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=256m,mode=0755"),
        )
        .unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(dir.path())));
        umount2(dir.path(), MntFlags::MNT_DETACH).unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        true
    });
    match thread.join() {
        Ok(ran) => ran,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn watcher(backend: Backend, root: &Path) -> Watcher {
    watcher_excluding(backend, root, nothing_excluded)
}

fn watcher_excluding(backend: Backend, root: &Path, excluded: fn(&[u8]) -> bool) -> Watcher {
    let watcher = Watcher::with_backend(root, false, Box::new(excluded), Some(backend))
        .unwrap_or_else(|error| panic!("{backend:?} on {}: {error}", root.display()));
    assert_eq!(watcher.backend(), backend);
    watcher
}

fn nothing_excluded(_: &[u8]) -> bool {
    false
}

/// Everything reported until `done` says so (or the patience runs out).
struct Seen {
    paths: BTreeSet<Vec<u8>>,
    overflow: bool,
}

impl Seen {
    fn has(&self, path: &str) -> bool {
        self.paths.contains(path.as_bytes())
    }
}

fn collect(watcher: &mut Watcher, done: impl Fn(&Seen) -> bool) -> Seen {
    let mut seen = Seen {
        paths: BTreeSet::new(),
        overflow: false,
    };
    let give_up = Instant::now() + PATIENCE;
    while !done(&seen) && Instant::now() < give_up {
        let Changes { paths, overflow } = watcher
            .wait(Duration::from_millis(200), Duration::from_millis(20))
            .unwrap();
        let mut sorted = paths.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(paths, sorted, "paths are sorted and deduplicated");
        seen.overflow |= overflow;
        seen.paths.extend(paths);
    }
    seen
}

/// Waits until each of `paths` was reported; fails naming what was not.
fn expect(watcher: &mut Watcher, paths: &[&str]) -> Seen {
    let seen = collect(watcher, |seen| paths.iter().all(|path| seen.has(path)));
    let missing: Vec<&&str> = paths.iter().filter(|path| !seen.has(path)).collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not reported; got {:?} (overflow {})",
        lossy(&seen.paths),
        seen.overflow
    );
    assert!(!seen.overflow, "no overflow expected");
    seen
}

/// What else arrives within a short quiet period.
fn quiet(watcher: &mut Watcher) -> Seen {
    let mut seen = Seen {
        paths: BTreeSet::new(),
        overflow: false,
    };
    let changes = watcher
        .wait(Duration::from_millis(300), Duration::from_millis(20))
        .unwrap();
    seen.overflow = changes.overflow;
    seen.paths.extend(changes.paths);
    seen
}

fn lossy(paths: &BTreeSet<Vec<u8>>) -> Vec<String> {
    paths
        .iter()
        .map(|path| String::from_utf8_lossy(path).into_owned())
        .collect()
}

#[test]
fn changes_are_reported_with_manifest_paths() {
    each_backend(|backend, root| {
        fs::create_dir(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "root:x:0:0\n").unwrap();
        let mut watcher = watcher(backend, root);

        fs::write(root.join("etc/passwd"), "root:x:0:0:changed\n").unwrap();
        expect(&mut watcher, &["/etc/passwd"]);

        fs::set_permissions(root.join("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
        expect(&mut watcher, &["/etc/passwd"]);

        std::os::unix::fs::chown(root.join("etc/passwd"), Some(1), Some(1)).unwrap();
        expect(&mut watcher, &["/etc/passwd"]);

        let file = fs::File::options()
            .write(true)
            .open(root.join("etc/passwd"))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        drop(file);
        expect(&mut watcher, &["/etc/passwd"]);

        fs::hard_link(root.join("etc/passwd"), root.join("etc/link")).unwrap();
        expect(&mut watcher, &["/etc/link"]);

        fs::remove_file(root.join("etc/passwd")).unwrap();
        expect(&mut watcher, &["/etc/passwd"]);

        fs::set_permissions(root, fs::Permissions::from_mode(0o711)).unwrap();
        expect(&mut watcher, &["/"]);

        // Outside the root: nothing.
        fs::write(root.join("../outside/x"), "x").unwrap();
        let seen = quiet(&mut watcher);
        assert!(seen.paths.is_empty(), "{:?}", lossy(&seen.paths));
    });
}

#[test]
fn a_file_in_a_new_nested_directory_is_reported() {
    each_backend(|backend, root| {
        let mut watcher = watcher(backend, root);
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::write(root.join("a/b/c/f"), "f").unwrap();
        expect(&mut watcher, &["/a", "/a/b", "/a/b/c", "/a/b/c/f"]);
        // And the new directories are watched from now on.
        fs::write(root.join("a/b/c/g"), "g").unwrap();
        expect(&mut watcher, &["/a/b/c/g"]);
    });
}

#[test]
fn a_rename_reports_both_names() {
    each_backend(|backend, root| {
        fs::write(root.join("old"), "x").unwrap();
        fs::create_dir_all(root.join("d/sub")).unwrap();
        fs::write(root.join("d/sub/x"), "x").unwrap();
        let mut watcher = watcher(backend, root);

        fs::rename(root.join("old"), root.join("new")).unwrap();
        expect(&mut watcher, &["/old", "/new"]);

        // A directory: both names, and what it brought along.
        fs::rename(root.join("d"), root.join("e")).unwrap();
        expect(&mut watcher, &["/d", "/e", "/e/sub", "/e/sub/x"]);
        // Changes below it come under the new name.
        fs::write(root.join("e/sub/x"), "y").unwrap();
        let seen = expect(&mut watcher, &["/e/sub/x"]);
        assert!(!seen.has("/d/sub/x"), "{:?}", lossy(&seen.paths));

        // Moved in from outside the root: its contents are new.
        fs::create_dir(root.join("../outside/in")).unwrap();
        fs::write(root.join("../outside/in/y"), "y").unwrap();
        quiet(&mut watcher);
        fs::rename(root.join("../outside/in"), root.join("in")).unwrap();
        expect(&mut watcher, &["/in", "/in/y"]);
    });
}

#[test]
fn a_deleted_tree_is_reported() {
    each_backend(|backend, root| {
        fs::create_dir_all(root.join("t/u/v")).unwrap();
        fs::write(root.join("t/u/v/w"), "w").unwrap();
        fs::write(root.join("t/x"), "x").unwrap();
        let mut watcher = watcher(backend, root);
        fs::remove_dir_all(root.join("t")).unwrap();
        expect(&mut watcher, &["/t", "/t/u", "/t/u/v", "/t/u/v/w", "/t/x"]);
    });
}

#[test]
fn a_burst_is_reported_whole_or_as_an_overflow() {
    each_backend(|backend, root| {
        fs::create_dir(root.join("burst")).unwrap();
        fs::create_dir(root.join("concurrent")).unwrap();
        let mut watcher = watcher(backend, root);
        // Written before anything is read: more than the kernel queues.
        create_files(&root.join("burst"));
        check_burst(backend, &mut watcher, "burst");
        // Written while being read.
        let dir = root.join("concurrent");
        let writer = std::thread::spawn(move || create_files(&dir));
        check_burst(backend, &mut watcher, "concurrent");
        writer.join().unwrap();
        // After an overflow, the watcher goes on reporting.
        fs::write(root.join("after"), "").unwrap();
        let seen = collect(&mut watcher, |seen| seen.has("/after"));
        assert!(seen.has("/after"));
    });
}

const BURST: usize = 20_000;

fn create_files(dir: &Path) {
    for i in 0..BURST {
        fs::write(dir.join(i.to_string()), "").unwrap();
    }
}

/// Every file of the burst in `dir` reported, or an overflow: never a silent part.
fn check_burst(backend: Backend, watcher: &mut Watcher, dir: &str) {
    let names: Vec<String> = (0..BURST).map(|i| format!("/{dir}/{i}")).collect();
    let start = Instant::now();
    let seen = collect(watcher, |seen| {
        seen.overflow || names.iter().all(|name| seen.has(name))
    });
    let reported = names.iter().filter(|name| seen.has(name)).count();
    eprintln!(
        "{backend:?}: burst of {BURST} in /{dir}: {reported} reported, overflow {} ({:?})",
        seen.overflow,
        start.elapsed()
    );
    assert!(
        seen.overflow || reported == BURST,
        "{backend:?}: {reported} of {BURST} reported without an overflow"
    );
    let expected: std::collections::HashSet<&[u8]> =
        names.iter().map(|name| name.as_bytes()).collect();
    let strays: Vec<String> = seen
        .paths
        .iter()
        .filter(|path| !expected.contains(path.as_slice()) && *path != format!("/{dir}").as_bytes())
        .map(|path| String::from_utf8_lossy(path).into_owned())
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
}

#[test]
fn excluded_paths_are_dropped() {
    each_backend(|backend, root| {
        fs::create_dir(root.join("skip")).unwrap();
        let mut watcher = watcher_excluding(backend, root, |path| path == b"/skip");
        fs::write(root.join("skip/x"), "x").unwrap();
        fs::create_dir_all(root.join("skip/sub/deeper")).unwrap();
        fs::write(root.join("skip/sub/deeper/y"), "y").unwrap();
        fs::set_permissions(root.join("skip"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("keep"), "k").unwrap();
        let seen = expect(&mut watcher, &["/keep"]);
        let seen_later = quiet(&mut watcher);
        let all: BTreeSet<Vec<u8>> = seen.paths.union(&seen_later.paths).cloned().collect();
        assert_eq!(lossy(&all), ["/keep"]);
    });
}

#[test]
fn non_utf8_names_round_trip() {
    each_backend(|backend, root| {
        let mut watcher = watcher(backend, root);
        let dir = root.join(OsStr::from_bytes(b"d\xff\n"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(OsStr::from_bytes(b"caf\xe9 \x01")), "x").unwrap();
        let want: Vec<u8> = b"/d\xff\n/caf\xe9 \x01".to_vec();
        let seen = collect(&mut watcher, |seen| seen.paths.contains(&want));
        assert!(seen.paths.contains(&want), "{:?}", seen.paths);
        assert!(seen.paths.contains(&b"/d\xff\n"[..]));
    });
}

#[test]
fn wait_returns_on_timeout() {
    each_backend(|backend, root| {
        let mut watcher = watcher(backend, root);
        for timeout in [Duration::ZERO, Duration::from_millis(250)] {
            let start = Instant::now();
            let changes = watcher.wait(timeout, Duration::from_millis(50)).unwrap();
            let took = start.elapsed();
            assert_eq!(changes, Changes::default());
            assert!(took >= timeout, "{took:?}");
            assert!(took < timeout + Duration::from_millis(200), "{took:?}");
        }
        // Changes that are all dropped do not end the wait early either.
        fs::write(root.join("../outside/noise"), "x").unwrap();
        let start = Instant::now();
        let changes = watcher
            .wait(Duration::from_millis(250), Duration::from_millis(10))
            .unwrap();
        assert_eq!(changes, Changes::default());
        assert!(start.elapsed() >= Duration::from_millis(250));
    });
}

#[test]
fn other_filesystems_are_watched_only_when_asked() {
    each_backend(|backend, root| {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        // ramfs has no file handles: fanotify watches it with inotify.
        fs::create_dir(root.join("ram")).unwrap();
        mount(
            Some("ramfs"),
            &root.join("ram"),
            Some("ramfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        fs::create_dir(root.join("ram/sub")).unwrap();
        for cross in [false, true] {
            let mut watcher =
                Watcher::with_backend(root, cross, Box::new(nothing_excluded), Some(backend))
                    .unwrap();
            assert_eq!(watcher.backend(), backend);
            fs::write(root.join("ram/sub/x"), format!("{cross}")).unwrap();
            fs::create_dir(root.join(format!("ram/new-{cross}"))).unwrap();
            fs::write(root.join(format!("ram/new-{cross}/y")), "y").unwrap();
            fs::write(root.join("y"), format!("{cross}")).unwrap();
            if cross {
                expect(&mut watcher, &["/ram/sub/x", "/ram/new-true/y", "/y"]);
            } else {
                let mut seen = expect(&mut watcher, &["/y"]);
                seen.paths.extend(quiet(&mut watcher).paths);
                assert_eq!(lossy(&seen.paths), ["/y"]);
            }
        }
        umount2(&root.join("ram"), MntFlags::MNT_DETACH).unwrap();
    });
}

#[test]
fn the_default_backend_is_fanotify_where_the_kernel_allows_it() {
    fn send<T: Send>() {}
    send::<Watcher>();
    let ran = in_private_tmpfs(|tmpfs| {
        let watcher = Watcher::new(tmpfs, true, Box::new(nothing_excluded)).unwrap();
        assert_eq!(watcher.backend(), Backend::Fanotify);
    });
    assert!(ran, "{NEEDS_ROOT}");
    // A root that is not a directory is refused.
    let file = tempfile::NamedTempFile::new().unwrap();
    assert!(Watcher::new(file.path(), false, Box::new(nothing_excluded)).is_err());
}
