//! Where the baseline comes from: the service (with an on-disk cache revalidated by
//! `ETag`, used when the service is unreachable) or a file (`--baseline`).
//!
//! Whatever the source, the bytes go through the one validator and must name the image
//! id the agent was asked about; a cached copy that fails either is discarded and
//! fetched again.
//!
//! The cache is not trusted either: the cached body must hash to the digest its `ETag`
//! names each time it is used (for a `304` as for the fallback when the service is
//! down), and with a pinned key its signature must verify; a copy that fails is deleted
//! and the baseline fetched unconditionally, or the check fails (no baseline). What the
//! service sends is bounded (`--max-baseline-bytes`, compressed and decompressed) before
//! it is buffered, and must match its own `ETag` (see `integrity_client`).

use integrity_client::{Client, ClientError, Fetched};
use integrity_common::{Baseline, Sha256Digest};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where the cache is kept when `--cache-dir` is not given.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/bulletproof/agent";

/// Why no baseline could be had: maps to the agent's error exit codes.
#[derive(Debug)]
pub enum SourceError {
    /// Service unreachable (or 404) and nothing usable cached, or an unreadable file.
    Unavailable(String),
    /// Bytes were had but are not a valid baseline of the asked image id.
    Invalid(String),
    /// A public key is pinned and the baseline's signature is missing, does not verify,
    /// is another key's, or names another image id.
    Untrusted(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Unavailable(text)
            | SourceError::Invalid(text)
            | SourceError::Untrusted(text) => f.write_str(text),
        }
    }
}

/// A baseline and how it was obtained.
pub struct Loaded {
    pub baseline: Baseline,
    /// For people and the summary: `service`, `cache` or `file`.
    pub source: &'static str,
    /// SHA-256 of the baseline's bytes (for the report to the service).
    pub sha256: Sha256Digest,
    /// Why a cached copy was used, when it was.
    pub note: Option<String>,
}

/// The pinned public key (`--public-key`): a baseline is used only if its minisign
/// signature verifies over its exact bytes, before they are parsed, and the signed
/// trusted comment names the image id asked for.
pub struct Verifier {
    pub key: integrity_trust::PublicKey,
}

impl Verifier {
    pub fn check(
        &self,
        bytes: &[u8],
        signature: Option<&[u8]>,
        image_id: &str,
        what: &str,
    ) -> Result<(), SourceError> {
        let untrusted = |why: String| SourceError::Untrusted(format!("{what}: {why}"));
        let signature = signature
            .ok_or_else(|| untrusted("no signature, and a public key is pinned".into()))?;
        let text = std::str::from_utf8(signature)
            .map_err(|_| untrusted("the signature is not a minisign signature".into()))?;
        let trusted = integrity_trust::verify(&self.key, bytes, text, false)
            .map_err(|error| untrusted(error.to_string()))?;
        let named = integrity_trust::image_id_of(&trusted);
        if named != Some(image_id) {
            return Err(untrusted(format!(
                "the signature vouches for {}, not for image id {image_id:?} (trusted comment {trusted:?})",
                named.map_or("no image id".to_owned(), |id| format!("image id {id:?}"))
            )));
        }
        Ok(())
    }
}

/// Parses and checks a baseline's bytes.
pub fn parse(bytes: &[u8], image_id: &str, what: &str) -> Result<Baseline, SourceError> {
    let baseline = Baseline::from_json_slice(bytes)
        .map_err(|error| SourceError::Invalid(format!("{what}: {error}")))?;
    if baseline.image_id != image_id {
        return Err(SourceError::Invalid(format!(
            "{what} is the baseline of image {:?}, not of {image_id:?}",
            baseline.image_id
        )));
    }
    Ok(baseline)
}

/// `--baseline FILE` (its signature, when a key is pinned, from `FILE.minisig`).
pub fn from_file(
    path: &Path,
    image_id: &str,
    verifier: Option<&Verifier>,
) -> Result<Loaded, SourceError> {
    let bytes = fs::read(path).map_err(|error| {
        SourceError::Unavailable(format!(
            "cannot read --baseline {}: {error}",
            path.display()
        ))
    })?;
    if let Some(verifier) = verifier {
        let signature = fs::read(integrity_trust::signature_path(path)).ok();
        verifier.check(
            &bytes,
            signature.as_deref(),
            image_id,
            &format!("--baseline {}", path.display()),
        )?;
    }
    Ok(Loaded {
        baseline: parse(&bytes, image_id, &format!("--baseline {}", path.display()))?,
        sha256: Sha256Digest::of(&bytes),
        source: "file",
        note: None,
    })
}

/// What the cache holds for an image id.
pub enum Cached {
    None,
    /// A copy that passed every check, with the tag it was stored under.
    Intact {
        baseline: Box<Baseline>,
        etag: String,
        sha256: Sha256Digest,
    },
    /// A copy that failed a check and was deleted, and why.
    Discarded(String),
}

/// The on-disk copy of the last good baseline of one image id, with its `ETag` (which
/// names the body's SHA-256: the copy is checked against it before every use).
pub struct Cache {
    dir: PathBuf,
    /// No `--cache-dir`: `dir` is [`DEFAULT_CACHE_DIR`], which the agent names on
    /// stderr before it first writes there.
    implicit: bool,
}

/// Whether this process has named the default cache directory already.
static DEFAULT_DIR_ANNOUNCED: AtomicBool = AtomicBool::new(false);

impl Cache {
    /// `--cache-dir DIR`, or [`DEFAULT_CACHE_DIR`] when the flag is absent.
    pub fn new(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(dir) => Cache {
                dir,
                implicit: false,
            },
            None => Cache {
                dir: PathBuf::from(DEFAULT_CACHE_DIR),
                implicit: true,
            },
        }
    }

    /// The line to print before writing a file under the default directory: once per
    /// process, and never when `--cache-dir` was given.
    fn announcement(&self) -> Option<String> {
        (self.implicit && !DEFAULT_DIR_ANNOUNCED.swap(true, Ordering::Relaxed)).then(|| {
            format!(
                "integrity-agent: caching the baseline under {} (--cache-dir to change)",
                self.dir.display()
            )
        })
    }

    fn body_path(&self, image_id: &str) -> PathBuf {
        // Image ids are validated: no `/`, no leading `.`, safe as a file name.
        self.dir.join(format!("{image_id}.json"))
    }

    fn etag_path(&self, image_id: &str) -> PathBuf {
        self.dir.join(format!("{image_id}.etag"))
    }

    fn signature_path(&self, image_id: &str) -> PathBuf {
        self.dir.join(format!("{image_id}.json.minisig"))
    }

    /// The cached baseline, if present and intact: at most `max_bytes`, its signature
    /// verified (with a pinned key), its bytes hashing to the digest its tag names, and
    /// valid. A copy failing any of these is corrupt (or tampered with): it is removed,
    /// reported through `warn`, and `Cached::Discarded` returned.
    pub fn load(
        &self,
        image_id: &str,
        verifier: Option<&Verifier>,
        max_bytes: u64,
        warn: &mut dyn FnMut(String),
    ) -> Cached {
        let path = self.body_path(image_id);
        let Ok(file) = fs::File::open(&path) else {
            return Cached::None;
        };
        let what = format!("cached baseline {}", path.display());
        let mut bytes = Vec::new();
        let read = file
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes);
        // A tag is one short line; a longer file is not one.
        let tag = fs::File::open(self.etag_path(image_id))
            .ok()
            .and_then(|file| {
                let mut tag = String::new();
                file.take(1024).read_to_string(&mut tag).ok()?;
                Some(tag.trim().to_owned())
            });
        let checked = match read {
            Err(error) => Err(SourceError::Invalid(format!(
                "{what}: cannot read it: {error}"
            ))),
            Ok(_) if bytes.len() as u64 > max_bytes => Err(SourceError::Invalid(format!(
                "{what} is larger than {max_bytes} bytes (--max-baseline-bytes)"
            ))),
            Ok(_) => Ok(()),
        }
        .and_then(|()| match verifier {
            // Signature first, then the hash, then parsing (ARCHITECTURE.md: trust chain).
            Some(verifier) => {
                let signature = fs::read(self.signature_path(image_id)).ok();
                verifier.check(&bytes, signature.as_deref(), image_id, &what)
            }
            None => Ok(()),
        })
        .and_then(|()| {
            let tag = tag.ok_or_else(|| {
                SourceError::Invalid(format!("{what} has no ETag to check it against"))
            })?;
            let sha256 = integrity_client::check_etag(&bytes, &tag).map_err(|why| {
                SourceError::Invalid(format!("{what} does not match its ETag: {why}"))
            })?;
            Ok(Cached::Intact {
                baseline: Box::new(parse(&bytes, image_id, &what)?),
                etag: tag,
                sha256,
            })
        });
        checked.unwrap_or_else(|error| {
            warn(format!("{error}; discarding it and fetching again"));
            self.discard(image_id);
            Cached::Discarded(error.to_string())
        })
    }

    /// Removes the cached copy of `image_id` (body, tag, signature).
    pub fn discard(&self, image_id: &str) {
        let _ = fs::remove_file(self.etag_path(image_id));
        let _ = fs::remove_file(self.body_path(image_id));
        let _ = fs::remove_file(self.signature_path(image_id));
    }

    /// Stores a fetched baseline atomically (temp file, fsync, rename).
    pub fn store(
        &self,
        image_id: &str,
        bytes: &[u8],
        signature: Option<&[u8]>,
        etag: Option<&str>,
    ) -> std::io::Result<()> {
        if let Some(line) = self.announcement() {
            eprintln!("{line}");
        }
        fs::create_dir_all(&self.dir)?;
        // The workspace's one atomic write (explicit mode, fsync, rename, dir fsync).
        let write = |path: PathBuf, data: &[u8]| {
            integrity_common::handles::write_atomic(&path, data, 0o600)
        };
        // Old tag out first, new tag in last: a crash in between leaves a body without
        // a tag (the next run fetches it whole), never a body paired with a tag that
        // is not its own (a 304 to that tag would bless the wrong copy).
        let _ = fs::remove_file(self.etag_path(image_id));
        let _ = fs::remove_file(self.signature_path(image_id));
        write(self.body_path(image_id), bytes)?;
        if let Some(signature) = signature {
            write(self.signature_path(image_id), signature)?;
        }
        if let Some(etag) = etag {
            write(self.etag_path(image_id), etag.as_bytes())?;
        }
        Ok(())
    }
}

/// `--server URL`: revalidates the cached copy, fetches when there is none or it
/// changed, falls back to the cache when the service cannot be reached.
pub fn from_server(
    client: &Client,
    cache: &Cache,
    image_id: &str,
    verifier: Option<&Verifier>,
    warn: &mut dyn FnMut(String),
) -> Result<Loaded, SourceError> {
    let mut cached = cache.load(image_id, verifier, client.max_baseline_bytes(), warn);
    loop {
        let etag = match &cached {
            Cached::Intact { etag, .. } => Some(etag.clone()),
            _ => None,
        };
        let fetched = {
            let mut on_retry = |attempt: u32, why: &str, delay: Duration| {
                warn(format!(
                    "fetching the baseline, attempt {attempt} failed ({why}); retrying in {:.1} s",
                    delay.as_secs_f64()
                ));
            };
            client.fetch_baseline(image_id, etag.as_deref(), &mut on_retry)
        };
        match fetched {
            Ok(Fetched::NotModified { etag: answered }) => {
                let Cached::Intact {
                    baseline, sha256, ..
                } = cached
                else {
                    // A 304 to a tag we did not send cannot happen; a bad answer.
                    return Err(SourceError::Invalid(
                        "the service answered 304 without a cached copy".into(),
                    ));
                };
                // The service vouches for the digest it names; a 304 naming another
                // one means it and the cache disagree: believe neither, fetch whole.
                if let Some(named) = answered.as_deref().and_then(integrity_client::etag_sha256) {
                    if named != sha256 {
                        let why = format!(
                            "the service answered 304 with an ETag naming SHA-256 {named}, the cached copy is {sha256}"
                        );
                        warn(format!("{why}; discarding it and fetching again"));
                        cache.discard(image_id);
                        cached = Cached::Discarded(why);
                        continue;
                    }
                }
                return Ok(Loaded {
                    baseline: *baseline,
                    sha256,
                    source: "service",
                    note: Some("not modified since the cached copy".into()),
                });
            }
            Ok(Fetched::Body {
                bytes,
                etag,
                sha256,
            }) => {
                return fetched_body(client, cache, image_id, verifier, bytes, etag, sha256, warn)
            }
            Err(ClientError::NotFound { .. }) => {
                // A 404 is an answer, not an outage: the cache must not hide it.
                return Err(SourceError::Unavailable(format!(
                    "the service has no baseline for image id {image_id} (404)"
                )));
            }
            Err(ClientError::Invalid { detail }) => {
                return Err(SourceError::Invalid(format!(
                    "the baseline from the service is refused: {detail}"
                )));
            }
            Err(error @ ClientError::Unavailable { .. }) => {
                let reason = error.to_string();
                return match cached {
                    Cached::Intact {
                        baseline, sha256, ..
                    } => Ok(Loaded {
                        baseline: *baseline,
                        sha256,
                        source: "cache",
                        note: Some(format!(
                            "service unreachable, using the cached baseline: {reason}"
                        )),
                    }),
                    Cached::None => Err(SourceError::Unavailable(format!(
                        "cannot fetch the baseline and none is cached: {reason}"
                    ))),
                    Cached::Discarded(why) => Err(SourceError::Unavailable(format!(
                        "cannot fetch the baseline, and the cached copy was discarded ({why}): {reason}"
                    ))),
                };
            }
            Err(error) => {
                return Err(SourceError::Unavailable(format!(
                    "the service refused to send the baseline: {error}"
                )))
            }
        }
    }
}

/// A `200`: signature (with a pinned key), then parsing, then the cache.
#[allow(clippy::too_many_arguments)]
fn fetched_body(
    client: &Client,
    cache: &Cache,
    image_id: &str,
    verifier: Option<&Verifier>,
    bytes: Vec<u8>,
    etag: Option<String>,
    sha256: Sha256Digest,
    warn: &mut dyn FnMut(String),
) -> Result<Loaded, SourceError> {
    let what = "the baseline from the service";
    // Signature first, then parsing: unverified bytes are never parsed.
    let signature = match verifier {
        Some(verifier) => {
            let signature = match client.fetch_signature(image_id, &mut |_, _, _| {}) {
                Ok(signature) => Some(signature),
                Err(ClientError::NotFound { .. }) => None,
                Err(ClientError::Invalid { detail }) => {
                    return Err(SourceError::Untrusted(format!(
                        "{what}: its signature is refused: {detail}"
                    )))
                }
                Err(error) => {
                    return Err(SourceError::Unavailable(format!(
                        "cannot fetch the baseline's signature: {error}"
                    )))
                }
            };
            verifier.check(&bytes, signature.as_deref(), image_id, what)?;
            signature
        }
        None => None,
    };
    let baseline = parse(&bytes, image_id, what)?;
    // The tag the copy is cached under names its digest (the client has checked that
    // it is this body's); a service that sent no such tag gets one of ours, which it
    // matches too if it is the metadata service.
    let etag = etag
        .filter(|tag| integrity_client::etag_sha256(tag).is_some())
        .unwrap_or_else(|| integrity_client::identity_etag(&sha256));
    if let Err(error) = cache.store(image_id, &bytes, signature.as_deref(), Some(&etag)) {
        warn(format!("cannot cache the baseline: {error}"));
    }
    Ok(Loaded {
        baseline,
        sha256,
        source: "service",
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_default_directory_is_announced_and_only_once() {
        let given = Cache::new(Some(PathBuf::from("/tmp/somewhere")));
        assert_eq!(given.dir, Path::new("/tmp/somewhere"));
        assert_eq!(given.announcement(), None);
        let default = Cache::new(None);
        assert_eq!(default.dir, Path::new(DEFAULT_CACHE_DIR));
        assert_eq!(
            default.announcement().as_deref(),
            Some(
                "integrity-agent: caching the baseline under /var/cache/bulletproof/agent \
                 (--cache-dir to change)"
            )
        );
        assert_eq!(default.announcement(), None, "said once per process");
        assert_eq!(Cache::new(None).announcement(), None);
    }
}
