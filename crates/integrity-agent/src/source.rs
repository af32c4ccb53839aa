//! Where the baseline comes from: the service (with an on-disk cache revalidated by
//! `ETag`, used when the service is unreachable) or a file (`--baseline`).
//!
//! Whatever the source, the bytes go through the one validator and must name the image
//! id the agent was asked about; a cached copy that fails either is discarded and
//! fetched again.

use integrity_client::{Client, ClientError, Fetched};
use integrity_common::Baseline;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        source: "file",
        note: None,
    })
}

/// The on-disk copy of the last good baseline of one image id, with its `ETag`.
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Self {
        Cache { dir }
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

    /// The cached baseline and its tag, if present and valid; a corrupt or foreign copy
    /// is removed (and reported through `warn`).
    pub fn load(
        &self,
        image_id: &str,
        verifier: Option<&Verifier>,
        warn: &mut dyn FnMut(String),
    ) -> Option<(Baseline, Option<String>)> {
        let path = self.body_path(image_id);
        let bytes = fs::read(&path).ok()?;
        let what = format!("cached baseline {}", path.display());
        let checked = match verifier {
            Some(verifier) => {
                let signature = fs::read(self.signature_path(image_id)).ok();
                verifier.check(&bytes, signature.as_deref(), image_id, &what)
            }
            None => Ok(()),
        };
        match checked.and_then(|()| parse(&bytes, image_id, &what)) {
            Ok(baseline) => {
                let etag = fs::read_to_string(self.etag_path(image_id))
                    .ok()
                    .map(|tag| tag.trim().to_owned())
                    .filter(|tag| !tag.is_empty() && tag.is_ascii());
                Some((baseline, etag))
            }
            Err(error) => {
                warn(format!("{error}; discarding it and fetching again"));
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(self.etag_path(image_id));
                let _ = fs::remove_file(self.signature_path(image_id));
                None
            }
        }
    }

    /// Stores a fetched baseline atomically (temp file, fsync, rename).
    pub fn store(
        &self,
        image_id: &str,
        bytes: &[u8],
        signature: Option<&[u8]>,
        etag: Option<&str>,
    ) -> std::io::Result<()> {
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
    let cached = cache.load(image_id, verifier, warn);
    let etag = cached.as_ref().and_then(|(_, etag)| etag.clone());
    let mut on_retry = |attempt: u32, why: &str, delay: Duration| {
        warn(format!(
            "fetching the baseline, attempt {attempt} failed ({why}); retrying in {:.1} s",
            delay.as_secs_f64()
        ));
    };
    match client.fetch_baseline(image_id, etag.as_deref(), &mut on_retry) {
        Ok(Fetched::NotModified) => match cached {
            Some((baseline, _)) => Ok(Loaded {
                baseline,
                source: "service",
                note: Some("not modified since the cached copy".into()),
            }),
            // A 304 to a tag we did not send cannot happen; treat it as a bad answer.
            None => Err(SourceError::Invalid(
                "the service answered 304 without a cached copy".into(),
            )),
        },
        Ok(Fetched::Body { bytes, etag }) => {
            let what = "the baseline from the service";
            // Signature first, then parsing: unverified bytes are never parsed.
            let signature = match verifier {
                Some(verifier) => {
                    let signature = match client.fetch_signature(image_id, &mut |_, _, _| {}) {
                        Ok(signature) => Some(signature),
                        Err(ClientError::NotFound { .. }) => None,
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
            if let Err(error) = cache.store(image_id, &bytes, signature.as_deref(), etag.as_deref())
            {
                warn(format!("cannot cache the baseline: {error}"));
            }
            Ok(Loaded {
                baseline,
                source: "service",
                note: None,
            })
        }
        Err(ClientError::NotFound { .. }) => {
            // A 404 is an answer, not an outage: the cache must not hide it.
            Err(SourceError::Unavailable(format!(
                "the service has no baseline for image id {image_id} (404)"
            )))
        }
        Err(error @ ClientError::Unavailable { .. }) => {
            let reason = error.to_string();
            match cached {
                Some((baseline, _)) => Ok(Loaded {
                    baseline,
                    source: "cache",
                    note: Some(format!(
                        "service unreachable, using the cached baseline: {reason}"
                    )),
                }),
                None => Err(SourceError::Unavailable(format!(
                    "cannot fetch the baseline and none is cached: {reason}"
                ))),
            }
        }
        Err(error) => Err(SourceError::Unavailable(format!(
            "the service refused to send the baseline: {error}"
        ))),
    }
}
