//! Bearer tokens for writes. Tokens are kept only as SHA-256 digests and compared in
//! constant time against every configured token (no early exit), so neither the
//! comparison nor its position in the list leaks through timing. Tokens are never
//! logged, and the header is never echoed back.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header, or not a `Bearer` one.
    Missing,
    /// A bearer token that is not configured.
    Invalid,
}

/// The configured write tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.digests.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(tokens: I) -> Self {
        Tokens {
            digests: tokens
                .into_iter()
                .map(|token| digest(token.as_ref().as_bytes()))
                .collect(),
        }
    }

    /// No token configured: the service is in loopback-only mode, writes are open.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Checks a request's `Authorization` header. With no tokens configured every
    /// request passes (the listener is then loopback-only, enforced at start-up).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if self.digests.is_empty() {
            return Ok(());
        }
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim_matches(' '))
            })
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Missing)?;
        let presented = digest(presented.as_bytes());
        let mut found = subtle::Choice::from(0);
        for configured in &self.digests {
            found |= configured.ct_eq(&presented);
        }
        if bool::from(found) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        map
    }

    #[test]
    fn checks_every_configured_token() {
        let tokens = Tokens::new(["first-token", "second-token"]);
        assert_eq!(tokens.check(&headers("Bearer first-token")), Ok(()));
        assert_eq!(tokens.check(&headers("bearer second-token")), Ok(()));
        assert_eq!(
            tokens.check(&headers("Bearer third")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            tokens.check(&headers("Bearer first-toke")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            tokens.check(&headers("Basic Zm9vOmJhcg==")),
            Err(AuthError::Missing)
        );
        assert_eq!(tokens.check(&headers("Bearer ")), Err(AuthError::Missing));
        assert_eq!(tokens.check(&HeaderMap::new()), Err(AuthError::Missing));
    }

    #[test]
    fn no_tokens_means_open() {
        assert_eq!(Tokens::default().check(&HeaderMap::new()), Ok(()));
    }

    #[test]
    fn debug_does_not_show_tokens() {
        let shown = format!("{:?}", Tokens::new(["hunter2-secret"]));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
