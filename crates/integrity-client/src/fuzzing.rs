//! The checks of the `agent_response` fuzz target (`fuzz/`), here so the corpus replay
//! test (`tests/fuzz_corpus.rs`) runs them without libFuzzer: whatever a hostile service
//! answers to `GET /baselines/{id}`, the agent's handling of it — the bounded read,
//! gzip, the `ETag` check, the check of the cached copy, the one validator — does not
//! panic, keeps within its limit, and never hands on bytes that do not match their tag.
//!
//! An input is an HTTP answer as it travels (`HTTP/1.1 200 OK`, headers, blank line,
//! body; `ETag`, `Content-Encoding` and `Content-Length` are read), or, when it does not
//! start with `HTTP/`, the body of a `200` with no headers.

use crate::answer::{check_etag, etag_sha256, identity_etag, Head};
use crate::{baseline_answer, Fetched, Step, SMALL_BODY_LIMIT};
use integrity_common::Sha256Digest;
use std::io::{self, Read, Write};

/// The baseline limit the checks run with: small, so the fuzzer reaches it.
pub const MAX_BYTES: u64 = 64 * 1024;

/// What the agent makes of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A body that passed every check and is a valid baseline.
    Baseline,
    /// A body that passed the transport checks but is not a valid baseline (the agent
    /// refuses it as invalid).
    NotABaseline,
    /// `304`.
    NotModified,
    /// Refused for good (too large, undecodable, not matching its tag, a `4xx`).
    Refused,
    /// Worth another attempt (a `5xx`, a connection cut short).
    Retry,
}

/// The head and delivered body of an input.
fn split(data: &[u8]) -> (Head, &[u8]) {
    let mut head = Head {
        status: 200,
        ..Head::default()
    };
    if !data.starts_with(b"HTTP/") {
        return (head, data);
    }
    let ends = [&b"\r\n\r\n"[..], &b"\n\n"[..]].map(|end| {
        data.windows(end.len())
            .position(|window| window == end)
            .map(|at| (at, at + end.len()))
    });
    let (head_end, body_start) = ends
        .into_iter()
        .flatten()
        .min()
        .unwrap_or((data.len(), data.len()));
    let text = String::from_utf8_lossy(&data[..head_end]);
    let mut lines = text.lines();
    head.status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "etag" => head.etag = Some(value),
            "content-encoding" => head.encoding = Some(value),
            "content-length" => head.content_length = value.parse().ok(),
            _ => {}
        }
    }
    (head, &data[body_start..])
}

/// The raw body as the transport hands it over: cut at `Content-Length`, and failing
/// like a closed connection when the body is shorter than announced. Counts what is
/// taken.
struct Delivered<'a> {
    body: &'a [u8],
    short: bool,
    taken: u64,
}

impl Read for Delivered<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read(buf)?;
        self.taken += n as u64;
        if n == 0 && self.short && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the announced length",
            ));
        }
        Ok(n)
    }
}

/// `data` gzipped (level 1).
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// For tests: a gzip stream of `len` zero bytes (a "gzip bomb": about 1 KB per MB),
/// made without holding the zeros in memory.
pub fn gzip_of_zeros(len: u64) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        encoder.write_all(&zeros[..n]).expect("writing to memory");
        left -= n as u64;
    }
    encoder.finish().expect("writing to memory")
}

/// Runs the agent's handling of one service answer on `data` and checks its
/// invariants; returns what the agent would make of it.
pub fn check_service_response(data: &[u8]) -> Outcome {
    let (head, mut body) = split(data);
    let mut short = false;
    if let Some(length) = head.content_length {
        match usize::try_from(length) {
            Ok(length) if length <= body.len() => body = &body[..length],
            _ => short = true,
        }
    }
    let mut delivered = Delivered {
        body,
        short,
        taken: 0,
    };
    let step = baseline_answer(&head, &mut delivered, MAX_BYTES);
    // Bounded reading: never more than the limit (plus the one byte that shows it was
    // passed) is taken from the transport.
    let limit = if head.status == 200 {
        MAX_BYTES
    } else {
        SMALL_BODY_LIMIT
    };
    assert!(
        delivered.taken <= limit + 1,
        "{} bytes read past a limit of {limit}",
        delivered.taken
    );
    let identity = head.encoding.as_deref().is_none_or(|value| {
        value.trim().is_empty() || value.trim().eq_ignore_ascii_case("identity")
    });
    match step {
        Step::Retry(_) => {
            assert!(
                head.status >= 500 || short,
                "only a 5xx or a cut connection is retried (status {})",
                head.status
            );
            Outcome::Retry
        }
        Step::Done(Err(_)) => Outcome::Refused,
        Step::Done(Ok(Fetched::NotModified { .. })) => {
            assert_eq!(head.status, 304);
            Outcome::NotModified
        }
        Step::Done(Ok(Fetched::Body {
            bytes,
            etag,
            sha256,
        })) => {
            assert_eq!(head.status, 200);
            assert!(bytes.len() as u64 <= MAX_BYTES);
            assert!(
                bytes.capacity() as u64 <= MAX_BYTES,
                "the buffer grew past the limit"
            );
            assert_eq!(sha256, Sha256Digest::of(&bytes), "hashed while read");
            if let Some(named) = etag.as_deref().and_then(etag_sha256) {
                assert_eq!(named, sha256, "a body that does not match its ETag");
            }
            if identity {
                assert_eq!(bytes, body, "an identity body arrives unchanged");
            }
            // What the agent caches (the service's tag when it names a digest, else one
            // of its own) and the check it runs on the cached copy before every use.
            let tag = etag
                .filter(|tag| etag_sha256(tag).is_some())
                .unwrap_or_else(|| identity_etag(&sha256));
            assert_eq!(check_etag(&bytes, &tag), Ok(sha256));
            if let Some(first) = bytes.first() {
                let mut tampered = bytes.clone();
                tampered[0] = first ^ 1;
                assert!(check_etag(&tampered, &tag).is_err(), "tampering unseen");
            }
            // The same bytes sent gzipped come back the same.
            if identity && bytes.len() <= 4096 {
                let zipped = gzip(&bytes);
                let gzip_head = Head {
                    encoding: Some("gzip".into()),
                    content_length: Some(zipped.len() as u64),
                    ..head.clone()
                };
                match baseline_answer(&gzip_head, &mut &zipped[..], MAX_BYTES) {
                    Step::Done(Ok(Fetched::Body {
                        bytes: unzipped, ..
                    })) => assert_eq!(unzipped, bytes),
                    _ => panic!("the gzip form of an accepted body was refused"),
                }
            }
            // The one validator (the agent's `source::parse`).
            match integrity_common::Baseline::from_json_slice(&bytes) {
                Ok(baseline) => {
                    integrity_common::validate_image_id(&baseline.image_id)
                        .expect("a parsed baseline names a valid image id");
                    Outcome::Baseline
                }
                Err(_) => Outcome::NotABaseline,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_split_into_head_and_body() {
        let (head, body) =
            split(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 3\r\n\r\nabcd");
        assert_eq!(head.status, 304);
        assert_eq!(head.etag.as_deref(), Some("\"x\""));
        assert_eq!(head.content_length, Some(3));
        assert_eq!(body, b"abcd");
        let (head, body) = split(b"{}");
        assert_eq!((head.status, body), (200, &b"{}"[..]));
        assert_eq!(
            check_service_response(b"HTTP/1.1 500 x\n\n"),
            Outcome::Retry
        );
        assert_eq!(
            check_service_response(b"HTTP/1.1 200 OK\nContent-Length: 9\n\n{}"),
            Outcome::Retry
        );
        assert_eq!(
            check_service_response(b"HTTP/1.1 404 x\n\n"),
            Outcome::Refused
        );
        assert_eq!(check_service_response(b"{}"), Outcome::NotABaseline);
        let bomb = gzip_of_zeros(MAX_BYTES + 1);
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n".to_vec();
        answer.extend_from_slice(&bomb);
        assert_eq!(check_service_response(&answer), Outcome::Refused);
    }
}
