//! Storage behind the API: a small trait that says what the service needs from a store
//! (and promises: an insert returns only once it is durable), and its default
//! implementation on an embedded sled database.
//!
//! The trait speaks in whole immutable documents and "insert if absent", which any
//! server-grade backend (PostgreSQL, an object store with conditional puts) offers, so a
//! second backend does not need sled's shape.

use crate::ingest::{BaselineMeta, Encoding, Prepared};
use bytes::Bytes;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A store failure (I/O, corruption): the request gets a 500 and nothing is
/// acknowledged.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError(format!("sled: {error}"))
    }
}

impl From<std::io::Error> for StoreError {
    fn from(error: std::io::Error) -> Self {
        StoreError(format!("I/O: {error}"))
    }
}

/// Outcome of [`Store::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored and durable.
    Created,
    /// A baseline with this image id was already stored (baselines are immutable);
    /// carries the stored one's metadata.
    Exists(Box<BaselineMeta>),
}

/// Outcome of [`Store::put_signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignaturePut {
    /// Stored and durable.
    Created,
    /// The same bytes were already stored.
    Unchanged,
    /// A different signature is already stored; signatures are immutable like
    /// baselines.
    Conflict,
    /// No baseline with this image id.
    NoBaseline,
}

/// What the service needs from a store. Every method may block (call from a blocking
/// thread); every write returns only after it is durable.
pub trait Store: Send + Sync + 'static {
    /// Stores a baseline unless one with the same image id exists. Atomic: after a crash
    /// either all of it is readable or none of it.
    fn insert(&self, baseline: &Prepared) -> Result<Inserted, StoreError>;
    /// Metadata of every stored baseline, in image id order.
    fn list(&self) -> Result<Vec<BaselineMeta>, StoreError>;
    /// One stored form of a baseline; `None` if the baseline or that form is absent.
    fn body(&self, image_id: &str, encoding: Encoding) -> Result<Option<Bytes>, StoreError>;
    /// Stores the signature of a stored baseline.
    fn put_signature(&self, image_id: &str, signature: &[u8]) -> Result<SignaturePut, StoreError>;
    /// The stored signature of a baseline.
    fn signature(&self, image_id: &str) -> Result<Option<Bytes>, StoreError>;
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// Flushes anything buffered (called at shutdown; writes are already durable).
    fn flush(&self) -> Result<(), StoreError>;
}

/// The embedded default: sled holds the index (metadata and signatures, all small
/// values), and each stored form of a baseline is an immutable file named by the
/// SHA-256 of the baseline's bytes under `objects/`.
///
/// Why not the bodies in sled too: sled 0.34 keeps every large value it has written in
/// memory (measured: +37 MB of RSS per 26.6 MB baseline, 2.3 GB after 60 of them, with
/// a 32 MiB cache), never fsyncs the blob files it puts them in, and took more than 5 s
/// to reopen 100 of them. Files written with temp + fsync + rename cost nothing in RAM,
/// are durable when we say so, and an index entry is committed only after its files.
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    signatures: sled::Tree,
    objects: PathBuf,
}

/// File name suffix of each stored form.
fn suffix(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Identity => "json",
        Encoding::Gzip => "json.gz",
        Encoding::Zstd => "json.zst",
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir` (`dir/index` for sled, `dir/objects` for
    /// bodies). `cache_bytes` bounds sled's page cache. Removes what an interrupted
    /// write left behind: temporary files, and bodies no index entry names.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let objects = dir.join("objects");
        std::fs::create_dir_all(&objects)?;
        let index = dir.join("index");
        let db = sled::Config::new()
            .path(&index)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|error| {
                StoreError(format!("cannot open store {}: {error}", index.display()))
            })?;
        let store = SledStore {
            meta: db.open_tree("meta")?,
            signatures: db.open_tree("signatures")?,
            objects,
            db,
        };
        store.collect_garbage()?;
        Ok(store)
    }

    fn object_path(&self, sha256: &str, encoding: Encoding) -> PathBuf {
        self.objects.join(format!("{sha256}.{}", suffix(encoding)))
    }

    /// Deletes temporary files and bodies without an index entry (a crash between
    /// writing the files and committing the index). Runs before the first request.
    fn collect_garbage(&self) -> Result<(), StoreError> {
        let referenced: HashSet<String> =
            self.list()?.into_iter().map(|meta| meta.sha256).collect();
        for entry in std::fs::read_dir(&self.objects)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let sha = name.split('.').next().unwrap_or("");
            if name.starts_with(".tmp") || !referenced.contains(sha) {
                tracing::info!(file = %name, "removing an unreferenced object");
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Writes one immutable object durably: temporary file, fsync, rename.
    fn write_object(
        &self,
        sha256: &str,
        encoding: Encoding,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.objects)?;
        temp.write_all(bytes)?;
        temp.as_file().sync_all()?;
        temp.persist(self.object_path(sha256, encoding))
            .map_err(|error| StoreError::from(error.error))?;
        Ok(())
    }

    fn remove_objects(&self, sha256: &str) {
        for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
            let _ = std::fs::remove_file(self.object_path(sha256, encoding));
        }
    }

    fn read_meta(value: &[u8]) -> Result<BaselineMeta, StoreError> {
        serde_json::from_slice(value)
            .map_err(|error| StoreError(format!("stored metadata unreadable: {error}")))
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
        self.write_object(sha, Encoding::Identity, &baseline.raw)?;
        if let Some(bytes) = &baseline.gzip {
            self.write_object(sha, Encoding::Gzip, bytes)?;
        }
        if let Some(bytes) = &baseline.zstd {
            self.write_object(sha, Encoding::Zstd, bytes)?;
        }
        File::open(&self.objects)?.sync_all()?;
        // 2. The index entry, if the id is still free (racing writers: one wins; sled
        // transactions are serializable).
        let meta_json = serde_json::to_vec(&baseline.meta)
            .map_err(|error| StoreError(format!("encoding metadata: {error}")))?;
        // With its signature, if one came along: both or neither.
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
        let Some(meta) = self.meta.get(image_id)? else {
            return Ok(None);
        };
        let meta = Self::read_meta(&meta)?;
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
        Ok(Some(Bytes::from(bytes)))
    }

    fn put_signature(&self, image_id: &str, signature: &[u8]) -> Result<SignaturePut, StoreError> {
        if !self.meta.contains_key(image_id)? {
            return Ok(SignaturePut::NoBaseline);
        }
        match self
            .signatures
            .compare_and_swap(image_id, None as Option<&[u8]>, Some(signature))?
        {
            Ok(()) => {
                self.db.flush()?;
                Ok(SignaturePut::Created)
            }
            Err(cas) if cas.current.as_deref() == Some(signature) => Ok(SignaturePut::Unchanged),
            Err(_) => Ok(SignaturePut::Conflict),
        }
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
}
