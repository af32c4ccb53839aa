//! The verified state (DESIGN §14): for every regular file of a check, what the kernel
//! said of it — device, inode, size, mtime, ctime — and the digest that was verified.
//! A later check that finds a file in exactly that kernel state takes the digest
//! instead of reading the file again ([`crate::ScanOptions::known`]).
//!
//! Why that is sound, and where it stops (ARCHITECTURE, "Verified state"): a write
//! changes mtime *and* ctime; `utimensat` can set mtime back but sets ctime to now; a
//! rename or a link swap changes the inode; a file from another filesystem changes
//! the device. `ctime` is set only by the kernel, from its clock: only root can bring
//! it back (by setting the clock, or by editing the inode on the block device) — and
//! root can as well rewrite this file, which lies in root's state directory. A full
//! check every `--full-every` reads every byte again and bounds what such an attacker
//! can hide.
//!
//! Racy entries: the kernel stamps ctime from a coarse clock (one tick: 1–10 ms), so a
//! file changed twice within one tick, with our `fstat` between, would look unchanged.
//! Files whose ctime is not at least [`SETTLE`] older than the check's start are not
//! recorded (the next check reads them again), as git does with its index: any write
//! after the start then gets a ctime at least a tick later than the recorded one.
//!
//! The file: a header binding it (format version, host id, the baseline's digest, the
//! root), the time of the last full check, the entries sorted by path with each path
//! stored as the length it shares with the previous one plus the rest, and a SHA-256
//! of everything before it. Anything that does not parse, does not hash or is bound
//! to something else is refused: the caller runs a full check.

use crate::digest::Sha256Digest;
use crate::handles::Meta;

/// The file's first bytes.
const MAGIC: &[u8; 8] = b"BPVERIFY";
/// The format this code writes and reads.
pub const FORMAT: u32 = 1;
/// How long before a check's start a file's ctime must lie for it to be recorded
/// (well above the kernel's coarse clock tick).
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// Nanoseconds since the epoch of a `(seconds, nanoseconds)` time.
pub fn nanos((secs, nanos): (i64, u32)) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nanos)
}
/// Longest path (the manifest's limit).
const MAX_PATH: usize = 4096;

/// What the kernel says of a regular file: enough to tell whether its content may
/// have changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelState {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

impl KernelState {
    pub fn of(meta: &Meta) -> KernelState {
        KernelState {
            dev: meta.dev,
            ino: meta.ino,
            size: meta.size,
            mtime: meta.mtime,
            ctime: meta.ctime,
        }
    }
}

/// One regular file as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntry {
    pub path: Box<[u8]>,
    pub state: KernelState,
    pub sha256: Sha256Digest,
}

/// What a verified state belongs to: another host's, another baseline's or another
/// root's state is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub host_id: String,
    pub baseline: Sha256Digest,
    pub root: Vec<u8>,
}

/// A verified state: its binding, when the last full check ran (Unix seconds), and its
/// entries sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedState {
    pub binding: Binding,
    pub last_full: u64,
    pub entries: Vec<VerifiedEntry>,
}

/// Why a stored state is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a verified state, truncated, altered, or of another format version.
    Damaged(String),
    /// A sound state of another host, baseline or root.
    Foreign(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Damaged(why) => write!(f, "verified state damaged: {why}"),
            Refused::Foreign(why) => write!(f, "verified state of {why}"),
        }
    }
}

impl VerifiedState {
    /// The digest recorded for `path` if the file is still in `state`.
    pub fn lookup(&self, path: &[u8], state: &KernelState) -> Option<Sha256Digest> {
        let index = self
            .entries
            .binary_search_by(|entry| (*entry.path).cmp(path))
            .ok()?;
        let entry = &self.entries[index];
        (entry.state == *state).then_some(entry.sha256)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 100);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        put_bytes(&mut out, self.binding.host_id.as_bytes());
        out.extend_from_slice(&self.binding.baseline.0);
        put_bytes(&mut out, &self.binding.root);
        out.extend_from_slice(&self.last_full.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        let mut previous: &[u8] = &[];
        for entry in &self.entries {
            let shared = previous
                .iter()
                .zip(entry.path.iter())
                .take_while(|(a, b)| a == b)
                .count();
            out.extend_from_slice(&(shared as u16).to_le_bytes());
            let rest = &entry.path[shared..];
            out.extend_from_slice(&(rest.len() as u16).to_le_bytes());
            out.extend_from_slice(rest);
            let state = &entry.state;
            for value in [state.dev, state.ino, state.size] {
                out.extend_from_slice(&value.to_le_bytes());
            }
            for (secs, nanos) in [state.mtime, state.ctime] {
                out.extend_from_slice(&secs.to_le_bytes());
                out.extend_from_slice(&nanos.to_le_bytes());
            }
            out.extend_from_slice(&entry.sha256.0);
            previous = &entry.path;
        }
        let digest = Sha256Digest::of(&out);
        out.extend_from_slice(&digest.0);
        out
    }

    /// Reads a stored state, which must be sound and bound to `expected`.
    pub fn decode(bytes: &[u8], expected: &Binding) -> Result<VerifiedState, Refused> {
        let damaged = |why: &str| Refused::Damaged(why.to_owned());
        let body_len = bytes
            .len()
            .checked_sub(32)
            .ok_or_else(|| damaged("too short"))?;
        let (body, trailer) = bytes.split_at(body_len);
        if Sha256Digest::of(body).0 != trailer {
            return Err(damaged("its digest does not match its contents"));
        }
        let mut reader = Reader { bytes: body };
        if reader.take(8)? != MAGIC {
            return Err(damaged("not a verified state"));
        }
        let format = u32::from_le_bytes(reader.array()?);
        if format != FORMAT {
            return Err(Refused::Damaged(format!(
                "format {format}, this agent reads format {FORMAT}"
            )));
        }
        let host_id = String::from_utf8(reader.sized()?.to_vec())
            .map_err(|_| damaged("host id is not text"))?;
        let baseline = Sha256Digest(reader.array()?);
        let root = reader.sized()?.to_vec();
        let binding = Binding {
            host_id,
            baseline,
            root,
        };
        if binding.host_id != expected.host_id {
            return Err(Refused::Foreign(format!(
                "another host ({})",
                binding.host_id
            )));
        }
        if binding.baseline != expected.baseline {
            return Err(Refused::Foreign(format!(
                "another baseline (sha256 {})",
                binding.baseline.to_hex()
            )));
        }
        if binding.root != expected.root {
            return Err(Refused::Foreign(format!(
                "another root ({})",
                String::from_utf8_lossy(&binding.root)
            )));
        }
        let last_full = u64::from_le_bytes(reader.array()?);
        let count = u64::from_le_bytes(reader.array()?);
        // Each entry takes at least 80 bytes: a count the file cannot hold is damage,
        // not an allocation.
        if count > (reader.bytes.len() / 80) as u64 {
            return Err(damaged("more entries than bytes"));
        }
        let mut entries: Vec<VerifiedEntry> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let shared = u16::from_le_bytes(reader.array()?) as usize;
            let rest_len = u16::from_le_bytes(reader.array()?) as usize;
            let previous: &[u8] = entries.last().map_or(&[], |entry| &entry.path);
            if shared > previous.len() || shared + rest_len > MAX_PATH {
                return Err(damaged("a path does not fit"));
            }
            let mut path = Vec::with_capacity(shared + rest_len);
            path.extend_from_slice(&previous[..shared]);
            path.extend_from_slice(reader.take(rest_len)?);
            if path.as_slice() <= previous {
                return Err(damaged("paths out of order"));
            }
            let mut number = || -> Result<u64, Refused> { Ok(u64::from_le_bytes(reader.array()?)) };
            let (dev, ino, size) = (number()?, number()?, number()?);
            let mut time = || -> Result<(i64, u32), Refused> {
                Ok((
                    i64::from_le_bytes(reader.array()?),
                    u32::from_le_bytes(reader.array()?),
                ))
            };
            let (mtime, ctime) = (time()?, time()?);
            let sha256 = Sha256Digest(reader.array()?);
            entries.push(VerifiedEntry {
                path: path.into_boxed_slice(),
                state: KernelState {
                    dev,
                    ino,
                    size,
                    mtime,
                    ctime,
                },
                sha256,
            });
        }
        if !reader.bytes.is_empty() {
            return Err(damaged("bytes after the last entry"));
        }
        Ok(VerifiedState {
            binding,
            last_full,
            entries,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        if self.bytes.len() < n {
            return Err(Refused::Damaged("truncated".into()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Refused> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn sized(&mut self) -> Result<&'a [u8], Refused> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        if len > MAX_PATH {
            return Err(Refused::Damaged("a field is too long".into()));
        }
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            host_id: "ab".repeat(16),
            baseline: Sha256Digest::of(b"baseline"),
            root: b"/".to_vec(),
        }
    }

    fn entry(path: &str, ino: u64) -> VerifiedEntry {
        VerifiedEntry {
            path: path.as_bytes().into(),
            state: KernelState {
                dev: 2049,
                ino,
                size: 10,
                mtime: (1_700_000_000, 5),
                ctime: (1_700_000_001, 999_999_999),
            },
            sha256: Sha256Digest::of(path.as_bytes()),
        }
    }

    fn state() -> VerifiedState {
        VerifiedState {
            binding: binding(),
            last_full: 1_765_000_000,
            entries: vec![
                entry("/etc/hosts", 1),
                entry("/etc/hostname", 2),
                entry("/usr/bin/\u{e9}", 3),
                entry("/usr/bin/ls", 4),
            ]
            .into_iter()
            .collect::<Vec<_>>(),
        }
    }

    fn sorted(mut state: VerifiedState) -> VerifiedState {
        state.entries.sort_by(|a, b| a.path.cmp(&b.path));
        state
    }

    #[test]
    fn a_state_round_trips_and_finds_unchanged_files_only() {
        let state = sorted(state());
        let bytes = state.encode();
        let back = VerifiedState::decode(&bytes, &binding()).unwrap();
        assert_eq!(back, state);
        let hosts = &state.entries[1];
        assert_eq!(back.lookup(&hosts.path, &hosts.state), Some(hosts.sha256));
        let mut touched = hosts.state;
        touched.ctime.1 += 1;
        assert_eq!(back.lookup(&hosts.path, &touched), None);
        assert_eq!(back.lookup(b"/nope", &hosts.state), None);
    }

    #[test]
    fn every_damage_and_every_other_binding_is_refused() {
        let bytes = sorted(state()).encode();
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x01;
            assert!(
                matches!(
                    VerifiedState::decode(&flipped, &binding()),
                    Err(Refused::Damaged(_))
                ),
                "byte {at}"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                VerifiedState::decode(&bytes[..len], &binding()).is_err(),
                "{len}"
            );
        }
        let mut other = binding();
        other.host_id = "cd".repeat(16);
        assert!(matches!(
            VerifiedState::decode(&bytes, &other),
            Err(Refused::Foreign(_))
        ));
        let mut other = binding();
        other.baseline = Sha256Digest::of(b"another");
        assert!(matches!(
            VerifiedState::decode(&bytes, &other),
            Err(Refused::Foreign(_))
        ));
        let mut other = binding();
        other.root = b"/srv".to_vec();
        assert!(matches!(
            VerifiedState::decode(&bytes, &other),
            Err(Refused::Foreign(_))
        ));
    }

    #[test]
    fn hostile_bytes_with_a_valid_digest_are_refused_without_panic() {
        // A forged body re-hashed: huge counts, paths out of order, overlong fields.
        let forge = |body: Vec<u8>| {
            let mut bytes = body.clone();
            bytes.extend_from_slice(&Sha256Digest::of(&body).0);
            VerifiedState::decode(&bytes, &binding())
        };
        let mut head = sorted(state()).encode();
        head.truncate(head.len() - 32);
        // After the magic, format, host id, baseline, root ("/") and last full check.
        let count_at = 8 + 4 + (4 + 32) + 32 + (4 + 1) + 8;
        let mut huge = head.clone();
        huge[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(forge(huge).is_err());
        let mut reversed = sorted(state());
        reversed.entries.reverse();
        let mut body = reversed.encode();
        body.truncate(body.len() - 32);
        assert!(forge(body).is_err());
        assert!(forge(vec![0xff; 200]).is_err());
    }
}
