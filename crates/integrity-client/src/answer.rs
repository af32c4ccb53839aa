//! Reading the answers of a service that may be hostile. Every body is bounded before
//! it is buffered — a baseline in its compressed *and* its decompressed size — hashed
//! while it is read, and checked against the `ETag` that names its digest. Nothing here
//! touches the network: the client hands in the answer's head and a reader of its raw
//! body, so the fuzz target (`fuzzing`) runs exactly this code.

use integrity_common::digest::Sha256Hasher;
use integrity_common::Sha256Digest;
use std::io::{self, Read};

/// What the body handling needs of an answer's head.
#[derive(Debug, Clone, Default)]
pub(crate) struct Head {
    pub status: u16,
    pub etag: Option<String>,
    /// `Content-Encoding`.
    pub encoding: Option<String>,
    /// `Content-Length`, when the answer has one (the transport stops there).
    pub content_length: Option<u64>,
}

/// Why a body was not had.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection failed while reading: another attempt may do better.
    Transport(String),
    /// The bytes themselves are refused (too large, undecodable, not matching their
    /// `ETag`): asking again would get the same answer.
    Refused(String),
}

/// A body read whole, within its limit, with its SHA-256.
#[derive(Debug)]
pub(crate) struct Body {
    pub bytes: Vec<u8>,
    pub sha256: Sha256Digest,
}

/// The SHA-256 an `ETag` of the metadata service names: `"<sha>"`, or `"<sha>.gzip"` /
/// `"<sha>.zstd"` for its compressed forms (the digest is always that of the stored,
/// uncompressed bytes). `None` for any other tag, weak ones included.
pub fn etag_sha256(tag: &str) -> Option<Sha256Digest> {
    let inner = tag.trim().strip_prefix('"')?.strip_suffix('"')?;
    let (hex, form) = inner.split_at_checked(64)?;
    if !matches!(form, "" | ".gzip" | ".zstd") {
        return None;
    }
    Sha256Digest::from_hex(hex)
}

/// The tag the service gives the uncompressed form of bytes with this digest.
pub fn identity_etag(sha256: &Sha256Digest) -> String {
    format!("\"{}\"", sha256.to_hex())
}

/// Checks `bytes` against the digest `tag` names (see [`etag_sha256`]); the agent runs
/// this on its cached copy before every use. Returns the digest, or why not.
pub fn check_etag(bytes: &[u8], tag: &str) -> Result<Sha256Digest, String> {
    let named = etag_sha256(tag).ok_or_else(|| {
        format!(
            "its ETag {:?} does not name a SHA-256",
            tag.chars().take(100).collect::<String>()
        )
    })?;
    let actual = Sha256Digest::of(bytes);
    if actual != named {
        return Err(format!(
            "its SHA-256 {actual} is not the one its ETag names ({named})"
        ));
    }
    Ok(actual)
}

/// Reads from the raw body, at most `limit` bytes, remembering whether an error came
/// from the transport (retryable) or the limit was passed (refused).
struct Source<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    /// How many bytes were taken from `inner`.
    taken: u64,
    exceeded: bool,
    failed: Option<String>,
}

impl<'a> Source<'a> {
    fn new(inner: &'a mut dyn Read, limit: u64) -> Self {
        Source {
            inner,
            left: limit,
            taken: 0,
            exceeded: false,
            failed: None,
        }
    }

    fn pull(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.taken += n as u64;
                Ok(n)
            }
            Err(error) => {
                if error.kind() != io::ErrorKind::Interrupted {
                    self.failed.get_or_insert_with(|| error.to_string());
                }
                Err(error)
            }
        }
    }
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.exceeded {
            return Err(io::Error::other("the answer is over its limit"));
        }
        if self.left == 0 {
            // Exactly at the limit is fine; one byte more is not.
            let mut probe = [0u8; 1];
            if self.pull(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded = true;
            return Err(io::Error::other("the answer is over its limit"));
        }
        let max = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.pull(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// How a bounded read ended badly.
enum Cut {
    /// More than the limit.
    TooLarge,
    Io(io::Error),
    /// The allocator refused this many bytes.
    Alloc(usize),
}

const CHUNK: usize = 64 * 1024;

/// Reads `reader` to its end into memory, hashing as it goes, and stops with
/// `Cut::TooLarge` as soon as more than `max` bytes arrive. The buffer grows by
/// doubling but never beyond `max`, so a body at the limit costs the limit, not twice.
fn read_bounded(reader: &mut dyn Read, max: u64) -> Result<Body, Cut> {
    let max_len = usize::try_from(max).unwrap_or(usize::MAX);
    let mut out: Vec<u8> = Vec::new();
    let mut hasher = Sha256Hasher::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Cut::Io(error)),
        };
        let total = out.len().saturating_add(n);
        if total > max_len {
            return Err(Cut::TooLarge);
        }
        if out.capacity() - out.len() < n {
            let want = out
                .capacity()
                .saturating_mul(2)
                .max(total)
                .max(CHUNK)
                .min(max_len);
            out.try_reserve_exact(want - out.len())
                .map_err(|_| Cut::Alloc(want))?;
        }
        out.extend_from_slice(&chunk[..n]);
        hasher.update(&chunk[..n]);
    }
    Ok(Body {
        bytes: out,
        sha256: hasher.finish(),
    })
}

/// A small answer (errors, signatures, upload answers): at most `limit` bytes.
/// `Refused` when it is longer.
pub(crate) fn read_small(raw: &mut dyn Read, limit: u64) -> Result<Vec<u8>, Failure> {
    let mut source = Source::new(raw, limit);
    match read_bounded(&mut source, limit) {
        Ok(body) => Ok(body.bytes),
        Err(_) if source.failed.is_some() => Err(Failure::Transport(format!(
            "reading the answer: {}",
            source.failed.unwrap_or_default()
        ))),
        Err(Cut::Alloc(n)) => Err(Failure::Refused(format!("cannot allocate {n} bytes"))),
        Err(_) => Err(Failure::Refused(format!(
            "the answer is longer than {limit} bytes"
        ))),
    }
}

/// The `200` answer to `GET /baselines/{id}`: undoes its `Content-Encoding` (gzip or
/// none), refusing more than `max` bytes before *and* after decompression, and checks
/// the result against the digest its `ETag` names (when it names one).
pub(crate) fn read_baseline(head: &Head, raw: &mut dyn Read, max: u64) -> Result<Body, Failure> {
    let gzip = match head.encoding.as_deref().map(str::trim) {
        None => false,
        Some(value) if value.is_empty() || value.eq_ignore_ascii_case("identity") => false,
        Some(value)
            if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") =>
        {
            true
        }
        Some(other) => {
            return Err(Failure::Refused(format!(
                "unsupported Content-Encoding {:?}",
                other.chars().take(100).collect::<String>()
            )))
        }
    };
    let over = |what: &str| {
        Failure::Refused(format!(
            "the baseline is larger than the limit of {max} bytes {what} (--max-baseline-bytes)"
        ))
    };
    if head.content_length.is_some_and(|length| length > max) {
        return Err(over(if gzip {
            "even compressed"
        } else {
            "(Content-Length)"
        }));
    }
    // The compressed bytes are bounded by the same limit: the service keeps a compressed
    // form only when it is smaller than the baseline.
    let mut source = Source::new(raw, max);
    let read = if gzip {
        read_bounded(&mut flate2::read::GzDecoder::new(&mut source), max)
    } else {
        read_bounded(&mut source, max)
    };
    let body = match read {
        Ok(body) => body,
        Err(_) if source.failed.is_some() => {
            return Err(Failure::Transport(format!(
                "reading the answer: {}",
                source.failed.unwrap_or_default()
            )))
        }
        Err(_) if source.exceeded => return Err(over(if gzip { "even compressed" } else { "" })),
        Err(Cut::TooLarge) => return Err(over(if gzip { "once decompressed" } else { "" })),
        Err(Cut::Alloc(n)) => {
            return Err(Failure::Refused(format!(
                "cannot allocate {n} bytes for the baseline"
            )))
        }
        Err(Cut::Io(error)) => {
            return Err(Failure::Refused(format!(
                "the gzip answer does not decompress: {error}"
            )))
        }
    };
    debug_assert!(source.taken <= max.saturating_add(1));
    if let Some(tag) = head.etag.as_deref() {
        if let Some(named) = etag_sha256(tag) {
            if named != body.sha256 {
                return Err(Failure::Refused(format!(
                    "the baseline does not match its ETag: its SHA-256 is {}, the ETag names {named}",
                    body.sha256
                )));
            }
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn head(encoding: Option<&str>, etag: Option<String>) -> Head {
        Head {
            status: 200,
            etag,
            encoding: encoding.map(str::to_owned),
            content_length: None,
        }
    }

    #[test]
    fn etags_name_the_digest_of_the_stored_bytes() {
        let sha = Sha256Digest::of(b"x");
        let hex = sha.to_hex();
        for tag in [
            format!("\"{hex}\""),
            format!("\"{hex}.gzip\""),
            format!("\"{hex}.zstd\""),
            format!(" \"{hex}\" "),
        ] {
            assert_eq!(etag_sha256(&tag), Some(sha), "{tag}");
        }
        for tag in [
            hex.clone(),
            format!("W/\"{hex}\""),
            format!("\"{hex}.br\""),
            format!("\"{}\"", hex.to_uppercase()),
            format!("\"{}\"", &hex[1..]),
            "\"é\"".repeat(40),
            "\"".into(),
            String::new(),
        ] {
            assert_eq!(etag_sha256(&tag), None, "{tag}");
        }
        assert_eq!(etag_sha256(&identity_etag(&sha)), Some(sha));
        assert!(check_etag(b"x", &identity_etag(&sha)).is_ok());
        assert!(check_etag(b"y", &identity_etag(&sha)).is_err());
        assert!(check_etag(b"x", "\"other\"").is_err());
    }

    #[test]
    fn gzip_and_identity_bodies_are_decoded_bounded_and_checked() {
        let data = b"{\"hello\":1}".repeat(100);
        let tag = identity_etag(&Sha256Digest::of(&data));
        let gz = gzip(&data);
        let got =
            read_baseline(&head(Some("gzip"), Some(tag.clone())), &mut &gz[..], 10_000).unwrap();
        assert_eq!(got.bytes, data);
        assert_eq!(got.sha256, Sha256Digest::of(&data));
        let got = read_baseline(&head(None, Some(tag.clone())), &mut &data[..], 10_000).unwrap();
        assert_eq!(got.bytes, data);
        // Exactly at the limit is fine, one byte over is not.
        let limit = data.len() as u64;
        assert!(read_baseline(&head(None, None), &mut &data[..], limit).is_ok());
        assert!(read_baseline(&head(Some("gzip"), None), &mut &gz[..], limit).is_ok());
        for encoding in [None, Some("gzip")] {
            let body = if encoding.is_some() { &gz } else { &data };
            match read_baseline(&head(encoding, None), &mut &body[..], limit - 1) {
                Err(Failure::Refused(why)) => {
                    assert!(why.contains("--max-baseline-bytes"), "{why}")
                }
                other => panic!("{other:?}"),
            }
        }
        // A body not matching its tag.
        let wrong = identity_etag(&Sha256Digest::of(b"other"));
        assert!(matches!(
            read_baseline(&head(Some("gzip"), Some(wrong)), &mut &gz[..], 10_000),
            Err(Failure::Refused(why)) if why.contains("ETag")
        ));
        // A tag that names no digest is not a check (the agent then records its own).
        assert!(read_baseline(&head(None, Some("\"v1\"".into())), &mut &data[..], 10_000).is_ok());
        assert!(matches!(
            read_baseline(&head(Some("gzip"), None), &mut &b"not gzip"[..], 10_000),
            Err(Failure::Refused(_))
        ));
        assert!(matches!(
            read_baseline(&head(Some("br"), None), &mut &b"x"[..], 10_000),
            Err(Failure::Refused(_))
        ));
        let mut long = head(None, None);
        long.content_length = Some(10_001);
        assert!(matches!(
            read_baseline(&long, &mut &b"x"[..], 10_000),
            Err(Failure::Refused(_))
        ));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit_without_reading_on() {
        let bomb = crate::fuzzing::gzip_of_zeros(128 << 20);
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let mut raw = &bomb[..];
        match read_baseline(&head(Some("gzip"), None), &mut raw, 1 << 20) {
            Err(Failure::Refused(why)) => assert!(why.contains("decompressed"), "{why}"),
            other => panic!("{other:?}"),
        }
        // 1 MiB of output is ~1 KB of input; the decoder reads ahead 32 KiB at most.
        let consumed = bomb.len() - raw.len();
        assert!(
            consumed < 48 * 1024,
            "{consumed} of {} bytes read",
            bomb.len()
        );
    }

    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
        }
    }

    #[test]
    fn transport_errors_are_told_apart_from_refusals() {
        for encoding in [None, Some("gzip")] {
            assert!(matches!(
                read_baseline(&head(encoding, None), &mut Broken, 100),
                Err(Failure::Transport(_))
            ));
        }
        assert!(matches!(
            read_small(&mut Broken, 10),
            Err(Failure::Transport(_))
        ));
        assert!(matches!(
            read_small(&mut &[1u8; 11][..], 10),
            Err(Failure::Refused(_))
        ));
        assert_eq!(read_small(&mut &[1u8; 10][..], 10).unwrap(), [1u8; 10]);
    }
}
