//! Start-up accounting of `objects/`: the store never deletes what it cannot explain.
//!
//! A file no index entry names is what a crash between writing it and committing its
//! index entry leaves, or what a damaged or lost index (sled drops what it cannot read
//! back, or `index/` is gone) leaves behind. Such a file may be acknowledged data, so:
//!
//! * temporary files (`.tmp-*`, never renamed into place, never acknowledged) are
//!   removed;
//! * a body `<sha256>.json` that hashes to its name, passes the one validator and whose
//!   image id has no entry gets its index entry back (`posted_by` is unknown; `stored_at`
//!   is the file's mtime), with each compressed form that decompresses to exactly that
//!   body and its signature file: it is served again;
//! * a signature file beside an indexed baseline whose record is missing or differs
//!   (the file is always written first, so it is the newer) goes back into the index;
//!   a signature record without its file (stores written before signatures had files)
//!   gets its file;
//! * anything else unreferenced (digest mismatch, invalid body, an image id indexed with
//!   other bytes or claimed by two bodies, a compressed form without its body or not
//!   decompressing to it, a name this store does not write) is moved to `lost+found/`,
//!   under its own name (a numeric suffix if taken; nothing is overwritten), with a
//!   warning saying why.

use super::lost_found::LostFound;
use super::sled::{suffix, SledStore, SIGNATURE_SUFFIX, TEMP_PREFIX};
use super::{Recovery, Store, StoreError};
use crate::ingest::{self, BaselineMeta, Encoding, Invalid};
use integrity_common::Sha256Digest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The files of one digest found under `objects/`.
#[derive(Default)]
struct Group {
    identity: Option<PathBuf>,
    gzip: Option<PathBuf>,
    zstd: Option<PathBuf>,
    signature: Option<PathBuf>,
}

impl Group {
    fn slot(&mut self, kind: Kind) -> &mut Option<PathBuf> {
        match kind {
            Kind::Form(Encoding::Identity) => &mut self.identity,
            Kind::Form(Encoding::Gzip) => &mut self.gzip,
            Kind::Form(Encoding::Zstd) => &mut self.zstd,
            Kind::Signature => &mut self.signature,
        }
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.identity, &self.gzip, &self.zstd, &self.signature]
            .into_iter()
            .flatten()
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Form(Encoding),
    Signature,
}

/// `<64 lowercase hex>.<suffix>` → the digest and what the file holds.
fn parse_name(name: &str) -> Option<(&str, Kind)> {
    let (sha, rest) = name.split_once('.')?;
    if sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let kind = [Encoding::Identity, Encoding::Gzip, Encoding::Zstd]
        .into_iter()
        .find(|encoding| suffix(*encoding) == rest)
        .map(Kind::Form)
        .or((rest == SIGNATURE_SUFFIX).then_some(Kind::Signature))?;
    Some((sha, kind))
}

/// An unreferenced body that proved itself, with what else of it checked out.
struct Candidate {
    meta: BaselineMeta,
    signature: Option<Vec<u8>>,
    /// Every file of it still in `objects/` (moved together if it cannot be rebuilt).
    files: Vec<PathBuf>,
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Largest body start-up will read to rebuild its index entry (2 GiB; a baseline of a
/// million entries is about 200 MB).
const MAX_REBUILD_BYTES: u64 = 2 << 30;

/// Reads a signature file, bounded; `Err` says why it is not one.
fn read_signature(path: &Path) -> Result<Result<Vec<u8>, String>, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(ingest::MAX_SIGNATURE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(ingest::validate_signature(&bytes)
        .map(|()| bytes)
        .map_err(|Invalid(why)| why))
}

/// Whether the compressed form at `path` decompresses to exactly `body` (reading at
/// most one byte more, so a bomb costs nothing).
fn decompresses_to(path: &Path, encoding: Encoding, body: &[u8]) -> Result<bool, StoreError> {
    let file = File::open(path)?;
    let limit = body.len() as u64 + 1;
    let mut out = Vec::with_capacity(body.len());
    let read = match encoding {
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(file)
            .take(limit)
            .read_to_end(&mut out),
        Encoding::Zstd => match zstd::stream::read::Decoder::new(file) {
            Ok(decoder) => decoder.take(limit).read_to_end(&mut out),
            Err(error) => Err(error),
        },
        Encoding::Identity => return Ok(false),
    };
    Ok(read.is_ok() && out == body)
}

/// `time` as RFC 3339 UTC to the second (`stored_at`'s format), or `None` before 1970.
pub(super) fn rfc3339(time: SystemTime) -> Option<String> {
    let secs = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    ))
}

impl SledStore {
    /// Accounts for every file under `objects/` (see the module docs). Runs in
    /// [`SledStore::open`], before the first request.
    pub(super) fn recover(&self) -> Result<Recovery, StoreError> {
        let mut recovery = Recovery::default();
        let mut lost = LostFound::new(&self.dir);
        let indexed: HashMap<String, BaselineMeta> = self
            .list()?
            .into_iter()
            .map(|meta| (meta.sha256.clone(), meta))
            .collect();
        let indexed_ids: HashMap<&str, &str> = indexed
            .values()
            .map(|meta| (meta.image_id.as_str(), meta.sha256.as_str()))
            .collect();

        let mut entries: Vec<_> = std::fs::read_dir(&self.objects)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let regular = entry.file_type()?.is_file();
            if regular && name.starts_with(TEMP_PREFIX) {
                tracing::info!(file = %name, "store: removing the temporary file of an interrupted write");
                std::fs::remove_file(&path)?;
                recovery.temp_removed += 1;
                continue;
            }
            match parse_name(&name) {
                _ if !regular => lost.put(&path, "not a regular file")?,
                Some((sha, kind)) => {
                    *groups.entry(sha.to_owned()).or_default().slot(kind) = Some(path)
                }
                None => lost.put(&path, "not a name this store writes")?,
            }
        }

        let mut candidates: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        let mut wrote_signature_files = false;
        for (sha, group) in &groups {
            match indexed.get(sha) {
                Some(meta) => {
                    let outcome = self.check_indexed(meta, group, &mut lost)?;
                    recovery.signatures_restored += u64::from(outcome.restored);
                    wrote_signature_files |= outcome.wrote_file;
                }
                None => {
                    if let Some(candidate) = self.explain(sha, group, &mut lost)? {
                        candidates
                            .entry(candidate.meta.image_id.clone())
                            .or_default()
                            .push(candidate);
                    }
                }
            }
        }
        // Indexed bodies that are missing are not ours to invent; say so loudly.
        let present: HashSet<&str> = groups
            .iter()
            .filter(|(_, group)| group.identity.is_some())
            .map(|(sha, _)| sha.as_str())
            .collect();
        for meta in indexed.values() {
            if !present.contains(meta.sha256.as_str()) {
                tracing::error!(
                    image_id = %meta.image_id,
                    sha256 = %meta.sha256,
                    "store: the index names a body that is not in objects/"
                );
            }
        }

        for (image_id, mut claims) in candidates {
            if let Some(sha) = indexed_ids.get(image_id.as_str()) {
                for claim in &claims {
                    lost.put_all(
                        &claim.files,
                        &format!("image id {image_id} is already stored with other bytes ({sha})"),
                    )?;
                }
                continue;
            }
            if claims.len() > 1 {
                let reason = format!(
                    "image id {image_id} is claimed by {} bodies no index entry names; which one \
                     was acknowledged cannot be told",
                    claims.len()
                );
                for claim in &claims {
                    lost.put_all(&claim.files, &reason)?;
                }
                continue;
            }
            let claim = claims.remove(0);
            self.rebuild(&claim)?;
            recovery.rebuilt += 1;
            recovery.signatures_restored += u64::from(claim.signature.is_some());
        }

        if wrote_signature_files {
            self.sync_objects()?;
        }
        lost.sync(&self.objects)?;
        if recovery.rebuilt + recovery.signatures_restored > 0 {
            self.db.flush()?;
        }
        recovery.lost_found = lost.moved;
        if recovery.rebuilt + recovery.signatures_restored + recovery.lost_found > 0 {
            tracing::warn!(
                rebuilt = recovery.rebuilt,
                signatures_restored = recovery.signatures_restored,
                lost_found = recovery.lost_found,
                lost_found_dir = %lost.dir.display(),
                "store: the index did not name every object; see the warnings above"
            );
        }
        Ok(recovery)
    }

    /// An indexed baseline's files: compressed forms the index does not name go to
    /// lost+found; its signature file and record are reconciled.
    fn check_indexed(
        &self,
        meta: &BaselineMeta,
        group: &Group,
        lost: &mut LostFound,
    ) -> Result<SignatureOutcome, StoreError> {
        for (encoding, path) in [(Encoding::Gzip, &group.gzip), (Encoding::Zstd, &group.zstd)] {
            if let Some(path) = path {
                if !meta.has(encoding) {
                    lost.put(
                        path,
                        &format!(
                            "a compressed form of {} the index does not name",
                            meta.image_id
                        ),
                    )?;
                }
            }
        }
        let mut outcome = SignatureOutcome::default();
        let id = meta.image_id.as_str();
        let record = self.signatures.get(id)?;
        let file = match &group.signature {
            None => None,
            Some(path) => match read_signature(path)? {
                Ok(bytes) => Some(bytes),
                Err(why) => {
                    lost.put(path, &format!("not a minisign signature: {why}"))?;
                    None
                }
            },
        };
        match (record, file) {
            (None, None) => {}
            (Some(record), None) => {
                // A record without its file: a store from before signature files.
                self.write_file(&self.signature_path(&meta.sha256), &record)?;
                outcome.wrote_file = true;
                tracing::info!(
                    image_id = id,
                    "store: signature written beside its baseline"
                );
            }
            (Some(record), Some(file)) if record[..] != file[..] => {
                // The record is what was acknowledged; a file that differs is either a
                // replacement whose record was never committed (a crash before its
                // answer) or planted: kept aside, never trusted over the record.
                if let Some(path) = &group.signature {
                    lost.put(
                        path,
                        &format!("differs from the signature the index holds for {id}"),
                    )?;
                }
                self.write_file(&self.signature_path(&meta.sha256), &record)?;
                outcome.wrote_file = true;
            }
            (None, Some(file)) => {
                // The record was lost with the index; the file was written first.
                self.signatures.insert(id, &file[..])?;
                outcome.restored = true;
                tracing::warn!(
                    image_id = id,
                    "store: signature restored into the index from its file"
                );
            }
            (_, Some(_)) => {}
        }
        Ok(outcome)
    }

    /// An unreferenced digest: a candidate for rebuilding if its body proves itself;
    /// otherwise its files go to lost+found.
    fn explain(
        &self,
        sha: &str,
        group: &Group,
        lost: &mut LostFound,
    ) -> Result<Option<Candidate>, StoreError> {
        let Some(identity) = &group.identity else {
            lost.put_all(
                group.paths(),
                &format!("no index entry and no body {sha}.json it could belong to"),
            )?;
            return Ok(None);
        };
        // Bounded before it is read: a planted sparse file of any size must not take
        // the service's memory at start-up (a baseline is far below this).
        let size = std::fs::symlink_metadata(identity)?.len();
        if size > MAX_REBUILD_BYTES {
            lost.put_all(
                group.paths(),
                &format!("{size} bytes, more than a baseline could be: not read"),
            )?;
            return Ok(None);
        }
        let body = match std::fs::read(identity) {
            Ok(body) => body,
            Err(error) => {
                lost.put_all(group.paths(), &format!("unreadable: {error}"))?;
                return Ok(None);
            }
        };
        let actual = Sha256Digest::of(&body).to_hex();
        if actual != sha {
            lost.put(
                identity,
                &format!("its content does not hash to its name (sha256 {actual})"),
            )?;
            let others: Vec<_> = group.paths().filter(|path| *path != identity).collect();
            lost.put_all(
                others,
                &format!("its body {sha}.json does not hash to its name"),
            )?;
            return Ok(None);
        }
        let mut meta = match ingest::validate(&body) {
            Ok(meta) => meta,
            Err(Invalid(why)) => {
                lost.put_all(group.paths(), &format!("not a valid baseline: {why}"))?;
                return Ok(None);
            }
        };
        let mut files = vec![identity.clone()];
        for (encoding, path) in [(Encoding::Gzip, &group.gzip), (Encoding::Zstd, &group.zstd)] {
            let Some(path) = path else { continue };
            if decompresses_to(path, encoding, &body)? {
                let form = std::fs::read(path)?;
                let size = Some(form.len() as u64);
                let digest = Some(Sha256Digest::of(&form).to_hex());
                match encoding {
                    Encoding::Gzip => (meta.gzip_size, meta.gzip_sha256) = (size, digest),
                    _ => (meta.zstd_size, meta.zstd_sha256) = (size, digest),
                }
                files.push(path.clone());
            } else {
                lost.put(path, &format!("does not decompress to its body {sha}.json"))?;
            }
        }
        let mut signature = None;
        if let Some(path) = &group.signature {
            match read_signature(path)? {
                Ok(bytes) => {
                    signature = Some(bytes);
                    files.push(path.clone());
                }
                Err(why) => lost.put(path, &format!("not a minisign signature: {why}"))?,
            }
        }
        if let Some(stored_at) = std::fs::metadata(identity)
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(rfc3339)
        {
            meta.stored_at = stored_at;
        }
        Ok(Some(Candidate {
            meta,
            signature,
            files,
        }))
    }

    /// Commits a rebuilt index entry (and its signature record) if the id is free.
    fn rebuild(&self, claim: &Candidate) -> Result<(), StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        let meta = &claim.meta;
        let key = meta.image_id.as_bytes();
        let meta_json = serde_json::to_vec(meta)
            .map_err(|error| StoreError(format!("encoding metadata: {error}")))?;
        let outcome = (&self.meta, &self.signatures).transaction(|(tree, signatures)| {
            if tree.get(key)?.is_some() {
                return Err(ConflictableTransactionError::Abort(()));
            }
            tree.insert(key, &meta_json[..])?;
            if let Some(signature) = &claim.signature {
                signatures.insert(key, &signature[..])?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => {}
            // Ids were checked against the index before; nothing else writes now.
            Err(TransactionError::Abort(())) => {
                return Err(StoreError(format!(
                    "rebuilding {}: the id appeared in the index meanwhile",
                    meta.image_id
                )))
            }
            Err(TransactionError::Storage(error)) => return Err(error.into()),
        }
        tracing::warn!(
            image_id = %meta.image_id,
            sha256 = %meta.sha256,
            gzip = meta.gzip_size.is_some(),
            zstd = meta.zstd_size.is_some(),
            signature = claim.signature.is_some(),
            stored_at = %meta.stored_at,
            "store: index entry rebuilt from a body no entry named (it hashes to its name \
             and validates)"
        );
        Ok(())
    }
}

#[derive(Default)]
struct SignatureOutcome {
    restored: bool,
    wrote_file: bool,
}

#[cfg(test)]
#[path = "recover_tests.rs"]
mod tests;
