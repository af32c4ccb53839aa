//! Turning a request body into something the store can keep: the shared validator
//! (`integrity_common::Baseline`), the stored document's metadata, and its precompressed
//! forms. No I/O and no async here, so the fuzz target can drive it directly.

use bytes::Bytes;
use integrity_common::{Baseline, Sha256Digest};
use serde::{Deserialize, Serialize};
use std::io::Write;

/// The content codings a baseline is stored in besides its exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The `Content-Encoding` token (none for identity).
    pub fn token(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Zstd => Some("zstd"),
        }
    }
}

/// What the service knows about a stored baseline without reading its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineMeta {
    pub image_id: String,
    /// The manifest's own `timestamp` (when it was collected).
    pub timestamp: String,
    /// Number of entries in the manifest.
    pub entries: u64,
    /// Lowercase hex SHA-256 of the stored bytes (also the `ETag`).
    pub sha256: String,
    /// Size of the stored bytes.
    pub size: u64,
    /// Size of the stored gzip form, when one is kept (only when it is smaller).
    pub gzip_size: Option<u64>,
    /// Size of the stored zstd form, when one is kept (only when it is smaller).
    pub zstd_size: Option<u64>,
    /// When the service acknowledged it (RFC 3339, UTC).
    pub stored_at: String,
    /// Who posted it: a domain-separated digest of the write token (never the token
    /// itself), so that only that token may add its signature later (ARCHITECTURE.md: trust chain; see
    /// `auth::Caller`; `loopback` on a service without tokens). `None` for baselines
    /// stored before this was recorded: only an admin token may sign those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_by: Option<String>,
    /// SHA-256 of the stored gzip form, checked with the identity form's digest on
    /// every read from disk (`None` in metadata stored before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip_sha256: Option<String>,
    /// SHA-256 of the stored zstd form, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zstd_sha256: Option<String>,
    /// The `ETag` header of each form, made once (every GET and 304 sends one).
    #[serde(skip)]
    pub etags: EtagCache,
}

/// The `ETag` header values of a baseline's three forms, made on first use. Not part
/// of the metadata: always equal, cloned empty.
#[derive(Default)]
pub struct EtagCache(std::sync::OnceLock<[http::HeaderValue; 3]>);

impl Clone for EtagCache {
    fn clone(&self) -> Self {
        EtagCache::default()
    }
}

impl PartialEq for EtagCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EtagCache {}

impl std::fmt::Debug for EtagCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtagCache")
    }
}

/// What the API shows of a stored baseline (`GET /baselines`, a `201`): not who posted
/// it, nor the digests of the compressed forms (they are the store's).
#[derive(Debug, Serialize)]
pub struct PublicMeta<'a> {
    pub image_id: &'a str,
    pub timestamp: &'a str,
    pub entries: u64,
    pub sha256: &'a str,
    pub size: u64,
    pub gzip_size: Option<u64>,
    pub zstd_size: Option<u64>,
    pub stored_at: &'a str,
}

impl BaselineMeta {
    /// The fields the API shows.
    pub fn public(&self) -> PublicMeta<'_> {
        PublicMeta {
            image_id: &self.image_id,
            timestamp: &self.timestamp,
            entries: self.entries,
            sha256: &self.sha256,
            size: self.size,
            gzip_size: self.gzip_size,
            zstd_size: self.zstd_size,
            stored_at: &self.stored_at,
        }
    }

    /// [`etag`](Self::etag) as a header value, made once per baseline.
    pub fn etag_header(&self, encoding: Encoding) -> http::HeaderValue {
        let tags = self.etags.0.get_or_init(|| {
            [Encoding::Identity, Encoding::Gzip, Encoding::Zstd].map(|encoding| {
                http::HeaderValue::from_str(&self.etag(encoding))
                    .expect("a hex digest and a coding name are header-safe")
            })
        });
        tags[match encoding {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
            Encoding::Zstd => 2,
        }]
        .clone()
    }

    /// The digest a stored form must have, when known.
    pub fn digest_of(&self, encoding: Encoding) -> Option<&str> {
        match encoding {
            Encoding::Identity => Some(&self.sha256),
            Encoding::Gzip => self.gzip_sha256.as_deref(),
            Encoding::Zstd => self.zstd_sha256.as_deref(),
        }
    }

    /// The strong entity tag of one representation: the digest of the stored bytes,
    /// suffixed for a compressed form (RFC 9110 §8.8.3: different representations
    /// need different strong tags).
    pub fn etag(&self, encoding: Encoding) -> String {
        match encoding.token() {
            None => format!("\"{}\"", self.sha256),
            Some(token) => format!("\"{}.{token}\"", self.sha256),
        }
    }

    /// Whether `tag` (quoted, without `W/`) is the tag of any stored form: no
    /// allocation, as this runs on every revalidation.
    pub fn matches_etag(&self, tag: &str) -> bool {
        let Some(inner) = tag.strip_prefix('"').and_then(|tag| tag.strip_suffix('"')) else {
            return false;
        };
        let Some(rest) = inner.strip_prefix(self.sha256.as_str()) else {
            return false;
        };
        match rest {
            "" => true,
            ".gzip" => self.gzip_size.is_some(),
            ".zstd" => self.zstd_size.is_some(),
            _ => false,
        }
    }

    /// Whether the stored form in `encoding` exists.
    pub fn has(&self, encoding: Encoding) -> bool {
        match encoding {
            Encoding::Identity => true,
            Encoding::Gzip => self.gzip_size.is_some(),
            Encoding::Zstd => self.zstd_size.is_some(),
        }
    }
}

/// A validated baseline, ready to store.
#[derive(Debug)]
pub struct Prepared {
    pub meta: BaselineMeta,
    pub raw: Bytes,
    pub gzip: Option<Vec<u8>>,
    pub zstd: Option<Vec<u8>>,
    /// The signature that came with the upload, stored in the same transaction.
    pub signature: Option<Vec<u8>>,
}

/// A body that is not a valid baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Validates a `POST /baselines` body with the shared validator and returns its
/// metadata. Nothing is compressed yet, so a duplicate can be refused cheaply.
pub fn validate(body: &[u8]) -> Result<BaselineMeta, Invalid> {
    let baseline = Baseline::from_json_slice(body).map_err(|error| Invalid(error.to_string()))?;
    Ok(BaselineMeta {
        image_id: baseline.image_id,
        timestamp: baseline.timestamp,
        entries: baseline.entries.len() as u64,
        sha256: Sha256Digest::of(body).to_hex(),
        size: body.len() as u64,
        gzip_size: None,
        zstd_size: None,
        stored_at: integrity_common::manifest::now_timestamp(),
        posted_by: None,
        gzip_sha256: None,
        zstd_sha256: None,
        etags: EtagCache::default(),
    })
}

/// gzip level: 6 is zlib's default; a GET is served from these bytes many times, the
/// compression runs once per baseline.
const GZIP_LEVEL: u32 = 6;
/// zstd level: on a `/usr` baseline (26.6 MB, mostly incompressible hex digests) level
/// 1 gave the smallest output of levels 1, 3, 6 and 9 (5.16 MB vs 5.43 MB at 9) in a
/// tenth of the time (docs/BENCHMARKS.md).
const ZSTD_LEVEL: i32 = 1;

/// Compresses a validated body into its stored forms, both codecs at once on two
/// threads. A form is kept only when it is smaller than the original.
pub fn prepare(mut meta: BaselineMeta, raw: Bytes) -> Prepared {
    let (gzip, zstd) = std::thread::scope(|scope| {
        let zstd = scope.spawn(|| zstd::bulk::compress(&raw, ZSTD_LEVEL).ok());
        let gzip = gzip(&raw);
        (gzip, zstd.join().ok().flatten())
    });
    let smaller = |form: Option<Vec<u8>>| form.filter(|bytes| bytes.len() < raw.len());
    let (gzip, zstd) = (smaller(gzip), smaller(zstd));
    meta.gzip_size = gzip.as_ref().map(|bytes| bytes.len() as u64);
    meta.zstd_size = zstd.as_ref().map(|bytes| bytes.len() as u64);
    meta.gzip_sha256 = gzip.as_ref().map(|bytes| Sha256Digest::of(bytes).to_hex());
    meta.zstd_sha256 = zstd.as_ref().map(|bytes| Sha256Digest::of(bytes).to_hex());
    Prepared {
        meta,
        raw,
        gzip,
        zstd,
        signature: None,
    }
}

fn gzip(raw: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::new(GZIP_LEVEL),
    );
    encoder.write_all(raw).ok()?;
    encoder.finish().ok()
}

/// Largest accepted signature body. A minisign signature is about 300 bytes; the
/// trusted comment may be long, but not this long.
pub const MAX_SIGNATURE_BYTES: usize = 8192;

/// Checks that a `PUT /baselines/{id}/signature` body has the shape of a minisign
/// signature file (what it proves is the agent's business, not the store's): UTF-8,
/// an `untrusted comment:` line, a signature line, a `trusted comment:` line and a
/// global signature line.
pub fn validate_signature(body: &[u8]) -> Result<(), Invalid> {
    if body.is_empty() {
        return Err(Invalid("empty signature".into()));
    }
    if body.len() > MAX_SIGNATURE_BYTES {
        return Err(Invalid(format!(
            "signature is {} bytes, more than {MAX_SIGNATURE_BYTES}",
            body.len()
        )));
    }
    let text =
        std::str::from_utf8(body).map_err(|_| Invalid("signature is not UTF-8 text".into()))?;
    let lines: Vec<&str> = text.lines().collect();
    let base64_line = |line: &str| {
        !line.is_empty()
            && line
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    let shaped = lines.len() == 4
        && lines[0].starts_with("untrusted comment:")
        && base64_line(lines[1])
        && lines[2].starts_with("trusted comment:")
        && base64_line(lines[3]);
    if !shaped {
        return Err(Invalid(
            "not a minisign signature (expected four lines: untrusted comment, signature, \
             trusted comment, global signature)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = br#"{"image_id":"img-1","timestamp":"2026-11-23T07:31:43Z","entries":[
{"path":"/etc/passwd","sha256":"0000000000000000000000000000000000000000000000000000000000000000","mode":420,"uid":0,"gid":0}
]}"#;

    #[test]
    fn validate_reads_meta_and_digest() {
        let meta = validate(DOC).unwrap();
        assert_eq!(meta.image_id, "img-1");
        assert_eq!(meta.entries, 1);
        assert_eq!(meta.size, DOC.len() as u64);
        assert_eq!(meta.sha256, Sha256Digest::of(DOC).to_hex());
        assert_eq!(
            meta.etag(Encoding::Identity),
            format!("\"{}\"", meta.sha256)
        );
        assert_eq!(
            meta.etag(Encoding::Gzip),
            format!("\"{}.gzip\"", meta.sha256)
        );
    }

    #[test]
    fn compressed_forms_decompress_to_the_exact_bytes() {
        let mut doc = DOC.to_vec();
        doc.extend(std::iter::repeat_n(b' ', 4096));
        let meta = validate(&doc).unwrap();
        let prepared = prepare(meta, Bytes::from(doc.clone()));
        let gz = prepared.gzip.expect("gzip kept");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
        assert_eq!(out, doc);
        let zst = prepared.zstd.expect("zstd kept");
        assert_eq!(zstd::decode_all(&zst[..]).unwrap(), doc);
        assert_eq!(prepared.meta.gzip_size, Some(gz.len() as u64));
    }

    #[test]
    fn incompressible_forms_are_dropped() {
        let meta = validate(DOC).unwrap();
        let prepared = prepare(meta, Bytes::from_static(b"x"));
        assert!(prepared.gzip.is_none() && prepared.zstd.is_none());
        assert!(!prepared.meta.has(Encoding::Gzip));
    }

    #[test]
    fn invalid_bodies_name_the_problem() {
        assert!(validate(b"").is_err());
        assert!(validate(b"[]").is_err());
        let nested = "[".repeat(100_000);
        assert!(validate(nested.as_bytes()).is_err());
        let bad_hex = String::from_utf8(DOC.to_vec())
            .unwrap()
            .replace("0000\"", "000g\"");
        assert!(validate(bad_hex.as_bytes())
            .unwrap_err()
            .0
            .contains("sha256"));
    }

    #[test]
    fn signature_shape() {
        let good = "untrusted comment: signature from minisign secret key\n\
                    RUQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3r2T2kbgJUCI+PmuzVBwBuAWD3n8tLZ7Fz4uHs0aqugI=\n\
                    trusted comment: timestamp:1556193335\tfile:test\n\
                    y/rUw2y8/hOUYjZU71eHp/Wo1KZ40fGy2VJEDl34XMJM+TX48Ss/17u3IvIfbVR1FkZZSNCisQbuQY+bHwhEBg==\n";
        validate_signature(good.as_bytes()).unwrap();
        assert!(validate_signature(b"").is_err());
        assert!(validate_signature(b"garbage").is_err());
        assert!(validate_signature(&[0xff; 10]).is_err());
        assert!(validate_signature(&vec![b'a'; MAX_SIGNATURE_BYTES + 1]).is_err());
        let truncated: String = good.lines().take(3).collect::<Vec<_>>().join("\n");
        assert!(validate_signature(truncated.as_bytes()).is_err());
    }
}
