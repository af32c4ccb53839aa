//! [`SledStore`]: sled holds the index (small values), each stored form of a baseline
//! and each signature is a file under `objects/`.

use super::{Inserted, Recovery, SignaturePut, Store, StoreError};
use crate::ingest::{BaselineMeta, Encoding, Prepared};
use bytes::Bytes;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The embedded default: sled holds the index (metadata and signatures, all small
/// values), and each stored form of a baseline is an immutable file named by the
/// SHA-256 of the baseline's bytes under `objects/`; its signature is
/// `objects/<sha256>.minisig`, written before the index entry, so that the objects
/// alone can rebuild a lost index (`recover.rs`).
///
/// Why not the bodies in sled too: sled 0.34 keeps every large value it has written in
/// memory (measured: +37 MB of RSS per 26.6 MB baseline, 2.3 GB after 60 of them, with
/// a 32 MiB cache), never fsyncs the blob files it puts them in, and took more than 5 s
/// to reopen 100 of them. Files written with temp + fsync + rename cost nothing in RAM,
/// are durable when we say so, and an index entry is committed only after its files.
pub struct SledStore {
    pub(super) db: sled::Db,
    pub(super) meta: sled::Tree,
    pub(super) signatures: sled::Tree,
    /// The fleet (`sled_fleet.rs`): host records, reports by host and seq, accepts,
    /// daily counts by image and day.
    pub(super) hosts: sled::Tree,
    pub(super) reports: sled::Tree,
    pub(super) accepts: sled::Tree,
    pub(super) daily: sled::Tree,
    /// The data directory (`index/`, `objects/`, `lost+found/`).
    pub(super) dir: PathBuf,
    pub(super) objects: PathBuf,
    /// Held while a signature file and its index record are written, and around the
    /// commit of every insert: the file and the record never disagree, except after a
    /// crash between the two, where the file is the newer (see `recover.rs`).
    signature_lock: Mutex<()>,
    recovery: Recovery,
    /// `DIR/lock`, `flock`ed exclusively for the life of the store (declared last, so
    /// released after sled is closed): a second service on the same directory is told
    /// whose it is instead of getting sled's own lock error.
    _dir_lock: File,
}

/// Name of the lock file in the data directory; it holds the pid of its holder.
const LOCK_FILE: &str = "lock";

/// Takes `dir/lock` (exclusive, non-blocking `flock`) and writes our pid into it; if
/// another process holds it, the error names that process's pid (read from the file).
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|error| StoreError(format!("cannot open {}: {error}", path.display())))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            // The holder writes its pid right after taking the lock: give it a moment.
            let mut holder = String::new();
            for _ in 0..50 {
                holder.clear();
                let _ = file.rewind();
                let _ = file.read_to_string(&mut holder);
                if holder.trim().parse::<u32>().is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let by = match holder.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "another process".to_owned(),
            };
            return Err(StoreError(format!(
                "data directory {} is already in use by {by}",
                dir.display()
            )));
        }
        Err(error) => {
            return Err(StoreError(format!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::from(error)
            )))
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(file)
}

/// File name suffix of each stored form.
pub(super) fn suffix(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Identity => "json",
        Encoding::Gzip => "json.gz",
        Encoding::Zstd => "json.zst",
    }
}

/// File name suffix of a baseline's signature, beside its bodies.
pub(super) const SIGNATURE_SUFFIX: &str = "minisig";

/// Prefix of the temporary files a write renames into place.
pub(super) const TEMP_PREFIX: &str = ".tmp-";

impl SledStore {
    /// Opens (or creates) the store in `dir` (`dir/index` for sled, `dir/objects` for
    /// bodies and signatures). `cache_bytes` bounds sled's page cache. Then accounts
    /// for every file the index does not name (see [`SledStore::recovery`]): temporary
    /// files are removed, an object that proves itself gets its index entry back, and
    /// anything else is moved to `dir/lost+found/`. An index sled itself reports as
    /// corrupt is an error: the service does not start. First of all it takes
    /// `dir/lock` for the life of the store: a directory another process has open is
    /// refused with that process's pid.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let objects = dir.join("objects");
        std::fs::create_dir_all(&objects)?;
        // Before sled: a second service on this directory gets a clear refusal.
        let dir_lock = lock_dir(dir)?;
        let index = dir.join("index");
        let db = sled::Config::new()
            .path(&index)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|error| {
                StoreError(format!("cannot open store {}: {error}", index.display()))
            })?;
        let mut store = SledStore {
            meta: db.open_tree("meta")?,
            signatures: db.open_tree("signatures")?,
            hosts: db.open_tree("hosts")?,
            reports: db.open_tree("reports")?,
            accepts: db.open_tree("accepts")?,
            daily: db.open_tree("daily")?,
            dir: dir.to_owned(),
            objects,
            db,
            signature_lock: Mutex::new(()),
            recovery: Recovery::default(),
            _dir_lock: dir_lock,
        };
        store.recovery = store.recover()?;
        Ok(store)
    }

    /// What [`SledStore::open`] rebuilt, restored, moved aside and removed.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub(super) fn object_path(&self, sha256: &str, encoding: Encoding) -> PathBuf {
        self.objects.join(format!("{sha256}.{}", suffix(encoding)))
    }

    pub(super) fn signature_path(&self, sha256: &str) -> PathBuf {
        self.objects.join(format!("{sha256}.{SIGNATURE_SUFFIX}"))
    }

    /// Writes one file under `objects/` durably: temporary file, fsync, rename (over
    /// an older one atomically). The rename is durable after [`Self::sync_objects`].
    pub(super) fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.objects)?;
        temp.write_all(bytes)?;
        temp.as_file().sync_all()?;
        temp.persist(path)
            .map_err(|error| StoreError::from(error.error))?;
        Ok(())
    }

    /// fsync of `objects/`: the renames into it are durable.
    pub(super) fn sync_objects(&self) -> Result<(), StoreError> {
        File::open(&self.objects)?.sync_all()?;
        Ok(())
    }

    fn remove_objects(&self, sha256: &str) {
        for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
            let _ = std::fs::remove_file(self.object_path(sha256, encoding));
        }
    }

    pub(super) fn read_meta(value: &[u8]) -> Result<BaselineMeta, StoreError> {
        serde_json::from_slice(value)
            .map_err(|error| StoreError(format!("stored metadata unreadable: {error}")))
    }

    /// The metadata of `image_id`, if stored.
    fn meta_of(&self, image_id: &str) -> Result<Option<BaselineMeta>, StoreError> {
        self.meta
            .get(image_id)?
            .map(|value| Self::read_meta(&value))
            .transpose()
    }

    fn lock_signatures(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data; a panic while it was held left at worst a file
        // newer than its record, which start-up reconciles.
        self.signature_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `signature` as the file of the baseline `sha256`, then its index record.
    /// Call with the signature lock held; the caller flushes sled.
    fn write_signature(
        &self,
        image_id: &str,
        sha256: &str,
        signature: &[u8],
    ) -> Result<(), StoreError> {
        self.write_file(&self.signature_path(sha256), signature)?;
        self.sync_objects()?;
        self.signatures.insert(image_id, signature)?;
        Ok(())
    }
}

impl Store for SledStore {
    fn insert(&self, baseline: &Prepared) -> Result<Inserted, StoreError> {
        let key = baseline.meta.image_id.as_bytes();
        if let Some(existing) = self.meta.get(key)? {
            return Ok(Inserted::Exists(Box::new(Self::read_meta(&existing)?)));
        }
        let sha = &baseline.meta.sha256;
        // 1. The bodies, durable, before anything names them.
        self.write_file(&self.object_path(sha, Encoding::Identity), &baseline.raw)?;
        if let Some(bytes) = &baseline.gzip {
            self.write_file(&self.object_path(sha, Encoding::Gzip), bytes)?;
        }
        if let Some(bytes) = &baseline.zstd {
            self.write_file(&self.object_path(sha, Encoding::Zstd), bytes)?;
        }
        let meta_json = serde_json::to_vec(&baseline.meta)
            .map_err(|error| StoreError(format!("encoding metadata: {error}")))?;
        let guard = self.lock_signatures();
        // Checked again under the lock: a loser of a race must not overwrite the
        // winner's signature file.
        if let Some(existing) = self.meta.get(key)? {
            drop(guard);
            let existing = Self::read_meta(&existing)?;
            if existing.sha256 != *sha {
                self.remove_objects(sha);
            }
            return Ok(Inserted::Exists(Box::new(existing)));
        }
        // With its signature, if one came along: its file too, before the index.
        if let Some(signature) = &baseline.signature {
            self.write_file(&self.signature_path(sha), signature)?;
        }
        self.sync_objects()?;
        // 2. The index entry, if the id is still free (racing writers: one wins; sled
        // transactions are serializable), with its signature record: both or neither.
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        let outcome = (&self.meta, &self.signatures).transaction(|(meta, signatures)| {
            if let Some(existing) = meta.get(key)? {
                return Err(ConflictableTransactionError::Abort(existing));
            }
            meta.insert(key, &meta_json[..])?;
            if let Some(signature) = &baseline.signature {
                signatures.insert(key, &signature[..])?;
            }
            Ok(())
        });
        drop(guard);
        match outcome {
            Ok(()) => {
                // 3. Durable: sled's log (small values only, no blob files).
                self.db.flush()?;
                Ok(Inserted::Created)
            }
            Err(TransactionError::Abort(existing)) => {
                let existing = Self::read_meta(&existing)?;
                if existing.sha256 != *sha {
                    self.remove_objects(sha);
                }
                Ok(Inserted::Exists(Box::new(existing)))
            }
            Err(TransactionError::Storage(error)) => Err(error.into()),
        }
    }

    fn list(&self) -> Result<Vec<BaselineMeta>, StoreError> {
        self.meta
            .iter()
            .values()
            .map(|value| Self::read_meta(&value?))
            .collect()
    }

    fn body(&self, image_id: &str, encoding: Encoding) -> Result<Option<Bytes>, StoreError> {
        let Some(meta) = self.meta_of(image_id)? else {
            return Ok(None);
        };
        if !meta.has(encoding) {
            return Ok(None);
        }
        let path = self.object_path(&meta.sha256, encoding);
        let bytes = std::fs::read(&path).map_err(|error| {
            StoreError(format!("body of {image_id} ({}): {error}", path.display()))
        })?;
        let expected = match encoding {
            Encoding::Identity => Some(meta.size),
            Encoding::Gzip => meta.gzip_size,
            Encoding::Zstd => meta.zstd_size,
        };
        if expected != Some(bytes.len() as u64) {
            return Err(StoreError(format!(
                "body of {image_id} ({}) has {} bytes, the index says {expected:?}",
                path.display(),
                bytes.len()
            )));
        }
        // Hashed on every read from disk (a cache miss; cheap next to the read): a
        // file changed in place, even to the same size, is never served.
        if let Some(digest) = meta.digest_of(encoding) {
            let actual = integrity_common::Sha256Digest::of(&bytes).to_hex();
            if actual != digest {
                return Err(StoreError(format!(
                    "body of {image_id} ({}) does not hash to the digest the index holds \
                     (sha256 {actual}, expected {digest}): not served",
                    path.display()
                )));
            }
        }
        Ok(Some(Bytes::from(bytes)))
    }

    fn put_signature(&self, image_id: &str, signature: &[u8]) -> Result<SignaturePut, StoreError> {
        let guard = self.lock_signatures();
        let Some(meta) = self.meta_of(image_id)? else {
            return Ok(SignaturePut::NoBaseline);
        };
        match self.signatures.get(image_id)? {
            Some(current) if current.as_ref() == signature => return Ok(SignaturePut::Unchanged),
            Some(_) => return Ok(SignaturePut::Conflict),
            None => {}
        }
        self.write_signature(image_id, &meta.sha256, signature)?;
        drop(guard);
        self.db.flush()?;
        Ok(SignaturePut::Created)
    }

    fn replace_signature(
        &self,
        image_id: &str,
        signature: &[u8],
    ) -> Result<SignaturePut, StoreError> {
        let guard = self.lock_signatures();
        let Some(meta) = self.meta_of(image_id)? else {
            return Ok(SignaturePut::NoBaseline);
        };
        let previous = self.signatures.get(image_id)?;
        let outcome = match previous {
            Some(previous) if previous.as_ref() == signature => SignaturePut::Unchanged,
            _ => {
                self.write_signature(image_id, &meta.sha256, signature)?;
                SignaturePut::Created
            }
        };
        drop(guard);
        self.db.flush()?;
        Ok(outcome)
    }

    fn signature(&self, image_id: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .signatures
            .get(image_id)?
            .map(|value| Bytes::copy_from_slice(&value)))
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let mut total = self.db.size_on_disk()?;
        for entry in std::fs::read_dir(&self.objects)? {
            total += entry?.metadata()?.len();
        }
        Ok(total)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn apply(&self, writes: &[super::FleetWrite]) -> Result<Vec<bool>, StoreError> {
        self.fleet_apply(writes)
    }

    fn host(&self, host_id: &str) -> Result<Option<super::HostRecord>, StoreError> {
        self.fleet_host(host_id)
    }

    fn meta(&self, image_id: &str) -> Result<Option<BaselineMeta>, StoreError> {
        self.meta_of(image_id)
    }

    fn hosts(&self) -> Result<Vec<super::HostRecord>, StoreError> {
        self.fleet_hosts()
    }

    fn report(&self, host_id: &str, seq: u64) -> Result<Option<super::StoredReport>, StoreError> {
        self.fleet_report(host_id, seq)
    }

    fn reports(
        &self,
        host_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<super::ReportRow>, StoreError> {
        self.fleet_reports(host_id, before, limit)
    }

    fn prune_reports(
        &self,
        host_id: &str,
        received_before: u64,
        keep: u64,
    ) -> Result<u64, StoreError> {
        self.fleet_prune(host_id, received_before, keep)
    }

    fn accepts(&self) -> Result<Vec<super::Accept>, StoreError> {
        self.fleet_accepts()
    }

    fn daily(&self, since_day: u64) -> Result<Vec<super::DailyRecord>, StoreError> {
        self.fleet_daily(since_day)
    }
}
