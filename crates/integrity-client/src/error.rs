//! The client's errors, with texts meant for operators.

use std::fmt;
use std::path::PathBuf;

/// Why a request to the service failed. The `Display` text is meant for operators.
#[derive(Debug)]
pub enum ClientError {
    /// The client could not be set up (bad URL, unreadable CA file).
    Config(String),
    /// `401`/`403`: the token is missing or not accepted.
    Unauthorized { status: u16, detail: String },
    /// `409`: a different baseline is already stored under this image id.
    Conflict {
        image_id: String,
        stored_sha256: String,
    },
    /// `413`: the baseline is larger than the service accepts.
    TooLarge { size: usize, detail: String },
    /// `404`.
    NotFound { detail: String },
    /// Another `4xx`: the service refused the request as it is.
    Rejected { status: u16, detail: String },
    /// `409` to a report: its seq is not above the host's last, which the service
    /// names (the agent goes on above it).
    Replay {
        last_seq: Option<u64>,
        detail: String,
    },
    /// The service's TLS certificate is not trusted (by `--ca-cert`, or by the public
    /// web roots without it). Never retried.
    Untrusted {
        ca_cert: Option<PathBuf>,
        detail: String,
    },
    /// No usable answer after every attempt: connection errors, timeouts or `5xx`.
    Unavailable { attempts: u32, last: String },
    /// An answer refused for what it holds: larger than its limit (before or after
    /// decompression), not decodable, or not matching its `ETag`. Never retried.
    Invalid { detail: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Config(text) => f.write_str(text),
            ClientError::Unauthorized { status, detail } => write!(
                f,
                "the service refused the token ({status}): {detail}; check --token"
            ),
            ClientError::Conflict {
                image_id,
                stored_sha256,
            } => write!(
                f,
                "a different baseline is already stored for image id {image_id} (sha256 \
                 {stored_sha256}); baselines are immutable, give this build a new --image-id"
            ),
            ClientError::TooLarge { size, detail } => write!(
                f,
                "the baseline ({size} bytes) is larger than the service accepts: {detail} \
                 (raise max_body_bytes on the service)"
            ),
            ClientError::NotFound { detail } => write!(f, "not found: {detail}"),
            ClientError::Rejected { status, detail } => {
                write!(f, "the service refused the request ({status}): {detail}")
            }
            ClientError::Replay { detail, .. } => {
                write!(
                    f,
                    "the service refused the report as a replay (409): {detail}"
                )
            }
            ClientError::Unavailable { attempts, last } => write!(
                f,
                "the service did not answer usefully after {attempts} attempt(s): {last}"
            ),
            ClientError::Invalid { detail } => {
                write!(f, "the service's answer was refused: {detail}")
            }
            ClientError::Untrusted {
                ca_cert: Some(file),
                detail,
            } => write!(
                f,
                "TLS: the service's certificate is not trusted by --ca-cert {}: {detail}",
                file.display()
            ),
            ClientError::Untrusted {
                ca_cert: None,
                detail,
            } => write!(
                f,
                "TLS: the service's certificate is not trusted by the public web roots \
                 (give its CA or its own certificate with --ca-cert): {detail}"
            ),
        }
    }
}

impl std::error::Error for ClientError {}
