//! Bearer tokens. A configured token is `SCOPE:NAME:SECRET` (REFERENCE §5) or a bare
//! `SECRET`, which keeps meaning scope `baseline`. Secrets are kept only as SHA-256
//! digests and compared in constant time against every configured token (no early
//! exit), so neither the comparison nor its position in the list leaks through timing.
//! Secrets are never logged, and the header is never echoed back.

use http::HeaderMap;
use sha2::{Digest, Sha256};

use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header, or not a `Bearer` one.
    Missing,
    /// A bearer token that is not configured.
    Invalid,
    /// A configured token whose scope does not allow this request.
    Scope,
}

/// What a token may do. `Admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// `GET` of fleet views (issue 18); no writes.
    Read,
    /// `POST /reports` (issue 18).
    Report,
    /// `POST /baselines`, `PUT` of the signature of a baseline it posted.
    Baseline,
    /// Everything, and corrections: replacing a signature.
    Admin,
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        Some(match text {
            "read" => Scope::Read,
            "report" => Scope::Report,
            "baseline" => Scope::Baseline,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Report => "report",
            Scope::Baseline => "baseline",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may make a request that needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

/// The caller id of every request to a service without tokens (loopback only).
pub const LOOPBACK: &str = "loopback";

/// Who made an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    /// A stable identity that is not the secret: `name:NAME` for a named token,
    /// `token:` + 16 hex digits of a domain-separated digest of a bare one, `loopback`
    /// when the service runs without tokens. Stored with a baseline as its poster.
    pub id: String,
}

struct Configured {
    digest: [u8; 32],
    scope: Scope,
    id: String,
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    tokens: std::sync::Arc<Vec<Configured>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.tokens.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The identity of a bare token: not the digest the check uses (a stored poster id
/// must not be a ready-made oracle for guessing the secret), and short.
fn bare_id(secret: &str) -> String {
    let mut hasher = integrity_common::digest::Sha256Hasher::new();
    hasher.update(b"bulletproof-token-id-v1\0");
    hasher.update(secret.as_bytes());
    format!("token:{}", &hasher.finish().to_hex()[..16])
}

/// Splits a configured token into scope, identity and secret. `SCOPE:NAME:SECRET` with a
/// known scope and a non-empty name and secret is scoped; anything else is a bare
/// `baseline` secret (a bare secret may itself contain `:`).
fn parse(token: &str) -> (Scope, String, &str) {
    let mut parts = token.splitn(3, ':');
    if let (Some(scope), Some(name), Some(secret)) = (parts.next(), parts.next(), parts.next()) {
        if let Some(scope) = Scope::parse(scope) {
            if !name.is_empty() && !secret.is_empty() {
                return (scope, format!("name:{name}"), secret);
            }
        }
    }
    (Scope::Baseline, bare_id(token), token)
}

/// The secret of a configured token (`SCOPE:NAME:SECRET` or a bare `SECRET`).
pub fn secret_of(token: &str) -> &str {
    parse(token).2
}

impl Tokens {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(tokens: I) -> Self {
        let tokens = tokens
            .into_iter()
            .map(|token| {
                let (scope, id, secret) = parse(token.as_ref());
                Configured {
                    digest: digest(secret.as_bytes()),
                    scope,
                    id,
                }
            })
            .collect();
        Tokens {
            tokens: std::sync::Arc::new(tokens),
        }
    }

    /// No token configured: the service is in loopback-only mode, writes are open.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Checks a request's `Authorization` header for a token of scope `needed` (or
    /// `admin`). With no tokens configured every request passes with the scope it
    /// needs, as caller [`LOOPBACK`] (the listener is then loopback-only, enforced at
    /// start-up); so, there, a signature is replaced only by a request that needs
    /// `admin`, never by a plain `PUT`.
    pub fn check(&self, headers: &HeaderMap, needed: Scope) -> Result<Caller, AuthError> {
        if self.tokens.is_empty() {
            return Ok(Caller {
                scope: needed,
                id: LOOPBACK.to_owned(),
            });
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
        self.check_secret(presented, needed)
    }

    /// Checks a token presented otherwise than in a header (the pages' login form) for
    /// scope `needed` (or `admin`); the caller's scope is the token's own.
    pub fn check_secret(&self, presented: &str, needed: Scope) -> Result<Caller, AuthError> {
        if self.tokens.is_empty() {
            return Ok(Caller {
                scope: needed,
                id: LOOPBACK.to_owned(),
            });
        }
        let presented = digest(presented.as_bytes());
        // Every entry is compared and the match is selected without a branch.
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, configured) in self.tokens.iter().enumerate() {
            let matches = configured.digest.ct_eq(&presented);
            index = u64::conditional_select(&index, &(i as u64), matches & !found);
            found |= matches;
        }
        if !bool::from(found) {
            return Err(AuthError::Invalid);
        }
        let configured = &self.tokens[index as usize];
        if !configured.scope.allows(needed) {
            return Err(AuthError::Scope);
        }
        Ok(Caller {
            scope: configured.scope,
            id: configured.id.clone(),
        })
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
        let check = |value: &str| tokens.check(&headers(value), Scope::Baseline);
        assert!(check("Bearer first-token").is_ok());
        assert!(check("bearer second-token").is_ok());
        assert_eq!(check("Bearer third"), Err(AuthError::Invalid));
        assert_eq!(check("Bearer first-toke"), Err(AuthError::Invalid));
        assert_eq!(check("Basic Zm9vOmJhcg=="), Err(AuthError::Missing));
        assert_eq!(check("Bearer "), Err(AuthError::Missing));
        assert_eq!(
            tokens.check(&HeaderMap::new(), Scope::Baseline),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn scopes_names_and_bare_tokens() {
        let tokens = Tokens::new([
            "admin:ops:s3cret-admin",
            "read:dash:s3cret-read",
            "bare:with:colons",
            "plain",
        ]);
        let admin = tokens
            .check(&headers("Bearer s3cret-admin"), Scope::Baseline)
            .unwrap();
        assert_eq!((admin.scope, admin.id.as_str()), (Scope::Admin, "name:ops"));
        assert_eq!(
            tokens.check(&headers("Bearer s3cret-read"), Scope::Baseline),
            Err(AuthError::Scope)
        );
        // An unknown "scope" makes the whole string a bare secret.
        let bare = tokens
            .check(&headers("Bearer bare:with:colons"), Scope::Baseline)
            .unwrap();
        assert_eq!(bare.scope, Scope::Baseline);
        assert!(
            bare.id.starts_with("token:") && bare.id.len() == 22,
            "{bare:?}"
        );
        let plain = tokens
            .check(&headers("Bearer plain"), Scope::Baseline)
            .unwrap();
        assert_ne!(plain.id, bare.id);
        assert!(!plain.id.contains("plain"));
        assert_eq!(
            tokens.check(&headers("Bearer plain"), Scope::Admin),
            Err(AuthError::Scope)
        );
    }

    #[test]
    fn no_tokens_means_open() {
        let caller = Tokens::default()
            .check(&HeaderMap::new(), Scope::Baseline)
            .unwrap();
        assert_eq!(
            (caller.scope, caller.id.as_str()),
            (Scope::Baseline, LOOPBACK)
        );
    }

    #[test]
    fn debug_does_not_show_tokens() {
        let shown = format!("{:?}", Tokens::new(["hunter2-secret"]));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
