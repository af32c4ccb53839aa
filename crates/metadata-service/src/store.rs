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
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// The embedded default: one sled database with a tree per kind of value.
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    raw: sled::Tree,
    gzip: sled::Tree,
    zstd: sled::Tree,
    signatures: sled::Tree,
    blobs: PathBuf,
    /// Blob files known to be fsynced (see [`SledStore::sync_blobs`]).
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
    /// Serializes the blob sync + flush of concurrent writers.
    write_lock: Mutex<()>,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|error| StoreError(format!("cannot open store {}: {error}", dir.display())))?;
        let store = SledStore {
            meta: db.open_tree("meta")?,
            raw: db.open_tree("raw")?,
            gzip: db.open_tree("gzip")?,
            zstd: db.open_tree("zstd")?,
            signatures: db.open_tree("signatures")?,
            blobs: dir.join("blobs"),
            synced_blobs: Mutex::new(HashSet::new()),
            write_lock: Mutex::new(()),
            db,
        };
        // Everything present at start-up is taken as synced: recovery already read it.
        let existing = store.blob_names()?;
        *store.synced_blobs.lock().expect("blob set") = existing;
        Ok(store)
    }

    fn blob_names(&self) -> Result<HashSet<std::ffi::OsString>, StoreError> {
        match std::fs::read_dir(&self.blobs) {
            Ok(dir) => Ok(dir
                .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
                .collect()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(error) => Err(error.into()),
        }
    }

    /// Makes the write durable. sled keeps large values in separate blob files that it
    /// writes but never fsyncs (sled 0.34, `pagecache/blob_io.rs`); its `flush` only
    /// syncs the log. So fsync every blob file written since the last call and the blob
    /// directory first, then flush the log that points at them: after a power cut the
    /// log never names a blob that did not reach the disk.
    fn make_durable(&self) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().expect("write lock");
        let names = self.blob_names()?;
        let mut synced = self.synced_blobs.lock().expect("blob set");
        let mut any = false;
        for name in names.difference(&synced) {
            match File::open(self.blobs.join(name)) {
                Ok(file) => file.sync_all()?,
                // sled removes blobs it no longer needs; one may vanish under us.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error.into()),
            }
            any = true;
        }
        if any {
            File::open(&self.blobs)?.sync_all()?;
        }
        *synced = names;
        drop(synced);
        self.db.flush()?;
        Ok(())
    }

    fn tree(&self, encoding: Encoding) -> &sled::Tree {
        match encoding {
            Encoding::Identity => &self.raw,
            Encoding::Gzip => &self.gzip,
            Encoding::Zstd => &self.zstd,
        }
    }
}

fn ivec_bytes(value: sled::IVec) -> Bytes {
    // Zero-copy: the response body borrows sled's buffer.
    Bytes::from_owner(value)
}

impl Store for SledStore {
    fn insert(&self, baseline: &Prepared) -> Result<Inserted, StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        let key = baseline.meta.image_id.as_bytes();
        let meta_json = serde_json::to_vec(&baseline.meta)
            .map_err(|error| StoreError(format!("encoding metadata: {error}")))?;
        let outcome = (&self.meta, &self.raw, &self.gzip, &self.zstd).transaction(
            |(meta, raw, gzip, zstd)| {
                if let Some(existing) = meta.get(key)? {
                    return Err(ConflictableTransactionError::Abort(existing));
                }
                // The metadata goes in with the bodies, in one transaction: a reader
                // never sees metadata without its bytes.
                raw.insert(key, &baseline.raw[..])?;
                if let Some(bytes) = &baseline.gzip {
                    gzip.insert(key, &bytes[..])?;
                }
                if let Some(bytes) = &baseline.zstd {
                    zstd.insert(key, &bytes[..])?;
                }
                meta.insert(key, &meta_json[..])?;
                Ok(())
            },
        );
        match outcome {
            Ok(()) => {
                self.make_durable()?;
                Ok(Inserted::Created)
            }
            Err(TransactionError::Abort(existing)) => {
                let meta = serde_json::from_slice(&existing)
                    .map_err(|error| StoreError(format!("stored metadata unreadable: {error}")))?;
                Ok(Inserted::Exists(Box::new(meta)))
            }
            Err(TransactionError::Storage(error)) => Err(error.into()),
        }
    }

    fn list(&self) -> Result<Vec<BaselineMeta>, StoreError> {
        self.meta
            .iter()
            .values()
            .map(|value| {
                let value = value?;
                serde_json::from_slice(&value)
                    .map_err(|error| StoreError(format!("stored metadata unreadable: {error}")))
            })
            .collect()
    }

    fn body(&self, image_id: &str, encoding: Encoding) -> Result<Option<Bytes>, StoreError> {
        Ok(self.tree(encoding).get(image_id)?.map(ivec_bytes))
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
                self.make_durable()?;
                Ok(SignaturePut::Created)
            }
            Err(cas) if cas.current.as_deref() == Some(signature) => Ok(SignaturePut::Unchanged),
            Err(_) => Ok(SignaturePut::Conflict),
        }
    }

    fn signature(&self, image_id: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.signatures.get(image_id)?.map(ivec_bytes))
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.make_durable()
    }
}
