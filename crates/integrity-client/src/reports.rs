//! `POST /reports` (REFERENCE §7): a host report's exact bytes, its signature and the
//! host's public key, with the report token.

use crate::{detail, small_answer, Client, ClientError, SMALL_BODY_LIMIT};
use std::time::Duration;

/// What the service did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportAck {
    /// `201`: stored and durable.
    Stored,
    /// `200`: the very same report (host, seq and bytes) was stored already: a retry
    /// whose first answer was lost.
    AlreadyStored,
}

impl Client {
    /// `POST /reports` with the exact `bytes` of a report, its minisign signature
    /// (`.minisig` text, sent base64 in `X-Bulletproof-Signature`) and the host's
    /// public key (`host.pub` text, base64 in `X-Bulletproof-Host-Key`; the service
    /// pins it on a host's first report and ignores it after).
    ///
    /// `201` and `200` are acknowledgements; every other answer is an error: connection
    /// errors, timeouts and `5xx` (after the retries, on every service) are
    /// `ClientError::Unavailable`, a `409` is `ClientError::Replay` with the host's
    /// last seq, any other `4xx` (`429` included) is `ClientError::Rejected` with the
    /// status and the service's `detail`.
    pub fn post_report(
        &self,
        bytes: &[u8],
        signature: &str,
        host_key: Option<&str>,
        on_retry: &mut dyn FnMut(u32, &str, Duration),
    ) -> Result<ReportAck, ClientError> {
        let bearer = self.bearer();
        let signature = integrity_trust::to_header(signature);
        let host_key = host_key.map(integrity_trust::to_header);
        let answer = self.with_retries(
            |agent, base| {
                let mut request = agent
                    .post(format!("{base}/reports"))
                    .content_type("application/json")
                    .header("X-Bulletproof-Signature", &signature);
                if let Some(bearer) = &bearer {
                    request = request.header("Authorization", bearer);
                }
                if let Some(key) = &host_key {
                    request = request.header("X-Bulletproof-Host-Key", key);
                }
                // A refusal (token, size) arrives before the body travels.
                request.header("Expect", "100-continue").send(bytes)
            },
            |head, body| small_answer(head, body, SMALL_BODY_LIMIT),
            on_retry,
        )?;
        match answer.status {
            201 => Ok(ReportAck::Stored),
            200 => Ok(ReportAck::AlreadyStored),
            409 => Err(ClientError::Replay {
                last_seq: serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|body| body.get("last_seq").and_then(serde_json::Value::as_u64)),
                detail: detail(&answer.body),
            }),
            status => Err(ClientError::Rejected {
                status,
                detail: detail(&answer.body),
            }),
        }
    }
}
