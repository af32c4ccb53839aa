//! The host's identity and reporting state, kept in `--state-dir` (REFERENCE §7):
//!
//! * `host.key` / `host.pub`: a minisign key pair made on first use (no password; the
//!   secret 0600). Made under temporary names and renamed, so a crash never leaves half
//!   a pair; a `host.pub` missing or not matching the secret key is rewritten from it.
//! * `host-id`: `/etc/machine-id` when it is 32 lowercase hex digits, else 32 random
//!   hex digits, written once (`--host-id` overrides it without writing it).
//! * `seq`: the last sequence number used, written atomically (fsync) before the
//!   report that carries it is spooled, so a number is never used twice, even after a
//!   crash (a crash in between costs a gap, never a reuse).
//! * `lock`: held (flock) while a report is numbered, spooled and sent, so two agents
//!   sharing a state directory do not interleave.
//! * `spool/`: see `spool.rs`.
//!
//! The directory is created 0700 and refused when group or others can write it or
//! another user owns it: whoever could write there could sign reports as this host.

use integrity_common::handles::{fstat, open_dir, write_atomic};
use integrity_common::report::validate_host_id;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The state directory when `--state-dir` is not given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bulletproof/agent";

/// Where the machine id comes from.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// A host's identity: its id and key pair, in an opened state directory.
pub struct Identity {
    pub dir: PathBuf,
    pub host_id: String,
    pub secret: integrity_trust::SecretKey,
    /// The text of `host.pub` (sent with every report).
    pub public_text: String,
}

/// The state directory's lock, released when dropped.
pub struct Lock {
    _file: fs::File,
}

impl Identity {
    /// Opens (creating on first use) the state directory `dir`: checks its owner and
    /// mode, makes or loads the key pair, and settles the host id (`host_id` when
    /// given, else the stored one, else `machine_id`'s when valid, else random).
    pub fn open(dir: &Path, host_id: Option<&str>, machine_id: &Path) -> Result<Identity, String> {
        let what =
            |error: &dyn std::fmt::Display| format!("--state-dir {}: {error}", dir.display());
        prepare_dir(dir).map_err(|error| what(&error))?;
        let (secret, public_text) = key_pair(dir).map_err(|error| what(&error))?;
        let host_id = match host_id {
            Some(id) => {
                validate_host_id(id).map_err(|why| format!("--host-id: {why}"))?;
                id.to_owned()
            }
            None => stored_host_id(dir, machine_id).map_err(|error| what(&error))?,
        };
        Ok(Identity {
            dir: dir.to_owned(),
            host_id,
            secret,
            public_text,
        })
    }

    /// Waits for the state directory's lock.
    pub fn lock(&self) -> io::Result<Lock> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc_nofollow())
            .open(self.dir.join("lock"))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(Lock { _file: file })
    }

    /// The spool's directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// The next sequence number: one above the last one used (and above `floor`, the
    /// highest number still spooled), persisted (fsync) before it is returned. Hold
    /// the lock.
    pub fn next_seq(&self, floor: u64) -> io::Result<u64> {
        let next = self
            .last_seq()?
            .max(floor)
            .checked_add(1)
            .ok_or_else(|| io::Error::other("sequence numbers exhausted"))?;
        write_atomic(&self.dir.join("seq"), format!("{next}\n").as_bytes(), 0o600)?;
        Ok(next)
    }

    /// Raises the last sequence number used to `last` (the service's, after a `409`:
    /// this host's state was lost or restored from an older copy), so the next report
    /// goes on above it. Never lowers it. Hold the lock.
    pub fn raise_seq(&self, last: u64) -> io::Result<()> {
        if last > self.last_seq()? {
            write_atomic(&self.dir.join("seq"), format!("{last}\n").as_bytes(), 0o600)?;
        }
        Ok(())
    }

    fn last_seq(&self) -> io::Result<u64> {
        let path = self.dir.join("seq");
        let last = match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} does not hold a sequence number (remove it to start again above the spooled reports)",
                        path.display()
                    ),
                )
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error),
        };
        Ok(last)
    }
}

/// `O_NOFOLLOW`: the lock file is never a symlink planted elsewhere.
fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Creates `dir` (0700, parents with default modes) if needed, then refuses it unless
/// this user owns it and neither group nor others can write it.
fn prepare_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    let meta = fstat(open_dir(dir)?)?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "owned by uid {}, not by this user (uid {me}); refused: its owner could sign reports as this host",
                meta.uid
            ),
        ));
    }
    if meta.perm() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "mode {:04o}: group or others can write it; refused (chmod 700 it)",
                meta.perm()
            ),
        ));
    }
    Ok(())
}

/// Loads the key pair, making it on first use.
fn key_pair(dir: &Path) -> io::Result<(integrity_trust::SecretKey, String)> {
    let key = dir.join("host.key");
    let public = dir.join("host.pub");
    if fs::symlink_metadata(&key).is_err() {
        let (new_key, new_public) = (dir.join(".host.key.new"), dir.join(".host.pub.new"));
        let _ = fs::remove_file(&new_key);
        let _ = fs::remove_file(&new_public);
        integrity_trust::keygen(&new_key, &new_public, None).map_err(io::Error::other)?;
        fs::rename(&new_public, &public)?;
        fs::rename(&new_key, &key)?;
        rustix::fs::fsync(open_dir(dir)?)?;
    }
    let secret =
        integrity_trust::load_secret_key(&key, integrity_trust::Password::PromptIfTerminal)
            .map_err(|error| io::Error::other(format!("host.key: {error}")))?;
    let pk = integrity_trust::public_key_of(&secret).map_err(io::Error::other)?;
    let matches = fs::read_to_string(&public).ok().filter(|text| {
        integrity_trust::parse_public_key(text)
            .is_ok_and(|on_file| on_file.to_base64() == pk.to_base64())
    });
    let text = match matches {
        Some(text) => text,
        None => {
            let text = pk
                .to_box()
                .map_err(|error| io::Error::other(format!("encoding the public key: {error}")))?
                .to_string();
            write_atomic(&public, text.as_bytes(), 0o644)?;
            text
        }
    };
    Ok((secret, text))
}

/// The stored host id, or (first use) the machine id or a random one, stored.
fn stored_host_id(dir: &Path, machine_id: &Path) -> io::Result<String> {
    let path = dir.join("host-id");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            return validate_host_id(id).map(|()| id.to_owned()).map_err(|why| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {why}", path.display()),
                )
            });
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let from_machine = fs::read_to_string(machine_id)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|id| validate_host_id(id).is_ok());
    let id = match from_machine {
        Some(id) => id,
        None => random_hex()?,
    };
    write_atomic(&path, format!("{id}\n").as_bytes(), 0o644)?;
    Ok(id)
}

/// 32 random lowercase hex digits (16 bytes of the kernel's randomness).
fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const MACHINE: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn created_once_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/state");
        let none = tmp.path().join("no-machine-id");
        let first = Identity::open(&dir, None, &none).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("host.key")), 0o600);
        validate_host_id(&first.host_id).unwrap();
        let second = Identity::open(&dir, None, &none).unwrap();
        assert_eq!(second.host_id, first.host_id, "made once");
        assert_eq!(second.public_text, first.public_text, "one key pair");
        assert_eq!(
            fs::read_to_string(dir.join("host.pub")).unwrap(),
            first.public_text
        );
        // A signature by the loaded key verifies with the stored public key.
        let signature = integrity_trust::sign(&second.secret, b"x", "c").unwrap();
        let pk = integrity_trust::parse_public_key(&first.public_text).unwrap();
        integrity_trust::verify(&pk, b"x", &signature, false).unwrap();
        // Another state dir: another random id.
        let other = Identity::open(&tmp.path().join("b"), None, &none).unwrap();
        assert_ne!(other.host_id, first.host_id);
    }

    #[test]
    fn the_machine_id_is_used_when_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let machine = tmp.path().join("machine-id");
        fs::write(&machine, format!("{MACHINE}\n")).unwrap();
        let identity = Identity::open(&tmp.path().join("s1"), None, &machine).unwrap();
        assert_eq!(identity.host_id, MACHINE);
        // Upper case, short, or empty (a golden image's) is not a valid machine id.
        for bad in [MACHINE.to_uppercase(), "0123".into(), String::new()] {
            fs::write(&machine, &bad).unwrap();
            let dir = tmp.path().join(format!("s-{}", bad.len()));
            let identity = Identity::open(&dir, None, &machine).unwrap();
            assert_ne!(identity.host_id, MACHINE);
            validate_host_id(&identity.host_id).unwrap();
        }
    }

    #[test]
    fn host_id_override_and_bad_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let none = tmp.path().join("none");
        let given = "fedcba9876543210fedcba9876543210";
        assert_eq!(
            Identity::open(&dir, Some(given), &none).unwrap().host_id,
            given
        );
        for bad in [
            "FEDCBA9876543210FEDCBA9876543210",
            "xyz",
            "",
            "../../etc/passwd",
        ] {
            let error = Identity::open(&dir, Some(bad), &none).err().unwrap();
            assert!(error.contains("--host-id"), "{error}");
        }
        // A corrupt stored id is refused, not silently replaced.
        Identity::open(&dir, None, &none).unwrap();
        fs::write(dir.join("host-id"), "not an id\n").unwrap();
        let error = Identity::open(&dir, None, &none).err().unwrap();
        assert!(error.contains("host-id"), "{error}");
    }

    #[test]
    fn unsafe_state_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let none = tmp.path().join("none");
        Identity::open(&dir, None, &none).unwrap();
        for mode in [0o777, 0o720, 0o702] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            let error = Identity::open(&dir, None, &none).err().unwrap();
            assert!(error.contains(&format!("mode {mode:04o}")), "{error}");
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        Identity::open(&dir, None, &none).unwrap();
        if rustix::process::geteuid().is_root() {
            rustix::fs::chown(&dir, Some(rustix::process::Uid::from_raw(1)), None).unwrap();
            let error = Identity::open(&dir, None, &none).err().unwrap();
            assert!(error.contains("owned by uid 1"), "{error}");
        }
    }

    #[test]
    fn a_lost_public_key_is_rewritten_and_a_half_made_pair_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let none = tmp.path().join("none");
        let first = Identity::open(&dir, None, &none).unwrap();
        fs::remove_file(dir.join("host.pub")).unwrap();
        assert_eq!(
            Identity::open(&dir, None, &none).unwrap().public_text,
            first.public_text
        );
        // Leftovers of a crash during the first keygen do not block the next.
        let fresh = tmp.path().join("t");
        fs::create_dir(&fresh).unwrap();
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(fresh.join(".host.key.new"), "half").unwrap();
        fs::write(fresh.join("host.pub"), "stale").unwrap();
        let made = Identity::open(&fresh, None, &none).unwrap();
        assert_eq!(
            fs::read_to_string(fresh.join("host.pub")).unwrap(),
            made.public_text
        );
    }

    #[test]
    fn sequence_numbers_rise_are_persisted_and_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let identity = Identity::open(&dir, None, &tmp.path().join("none")).unwrap();
        let _lock = identity.lock().unwrap();
        assert_eq!(identity.next_seq(0).unwrap(), 1);
        assert_eq!(identity.next_seq(0).unwrap(), 2);
        assert_eq!(fs::read_to_string(dir.join("seq")).unwrap(), "2\n");
        // A spooled report above the stored number (a restored older seq file) wins.
        assert_eq!(identity.next_seq(9).unwrap(), 10);
        // The service's last seq after a 409 raises it, never lowers it.
        identity.raise_seq(40).unwrap();
        identity.raise_seq(7).unwrap();
        assert_eq!(identity.next_seq(0).unwrap(), 41);
        fs::write(dir.join("seq"), "garbage").unwrap();
        assert!(
            identity.next_seq(0).is_err(),
            "a corrupt seq is not guessed at"
        );
    }
}
