//! Sessions of the pages (REFERENCE §7, "Pages"): a `read` or `admin` token is given
//! once at login and never again; the browser holds only a random session id in an
//! HttpOnly, SameSite=Strict cookie (Secure under TLS), which expires. Each session
//! has its own CSRF token, carried by every form that changes something.
//!
//! Sessions live in memory (a restart logs everyone out) and are bounded: at most
//! [`MAX_SESSIONS`]; when full, expired ones go first, then the oldest. Replicas
//! sharing a store keep them in it instead ([`Sessions::share`]): a browser behind a
//! load balancer reaches any replica, and a logout ends the session on all of them.

use crate::auth::{Caller, Scope};
use crate::store::{SessionRecord, Store, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "bp_session";
/// How long a session lasts after login.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 10_000;
/// Sessions of one token kept at most (its oldest ends first).
pub const MAX_PER_TOKEN: usize = 50;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    /// The token forms carry (hex).
    pub csrf: String,
    expires: Instant,
    created: Instant,
}

/// Every session, by the SHA-256 of its id (a memory dump shows no usable cookie).
#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    /// Cookies get `Secure` (the service serves TLS).
    secure: AtomicBool,
    /// The store shared with other replicas, which then holds the sessions.
    shared: std::sync::OnceLock<std::sync::Arc<dyn Store>>,
}

/// 32 random bytes as hex, from the kernel.
pub fn random_hex() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unix_now() -> u64 {
    crate::fleet::now_secs()
}

impl Sessions {
    pub fn set_secure(&self, secure: bool) {
        self.secure.store(secure, Ordering::Relaxed);
    }

    /// Keeps the sessions in `store`, shared with other replicas, from now on.
    pub fn share(&self, store: std::sync::Arc<dyn Store>) {
        let _ = self.shared.set(store);
    }

    /// Starts a session for `caller` (in the shared store when there is one): its id
    /// for the cookie.
    pub async fn login(&self, caller: Caller) -> Result<String, StoreError> {
        let no_randomness = |error: std::io::Error| StoreError(format!("no randomness: {error}"));
        let Some(store) = self.shared.get().cloned() else {
            return self.start(caller).map(|(id, _)| id).map_err(no_randomness);
        };
        let id = random_hex().map_err(no_randomness)?;
        let now = unix_now();
        let record = SessionRecord {
            digest: hex(&digest(&id)),
            caller: caller.id,
            scope: caller.scope.as_str().to_owned(),
            csrf: random_hex().map_err(no_randomness)?,
            created: now,
            expires: now + LIFETIME.as_secs(),
        };
        tokio::task::spawn_blocking(move || store.put_session(&record, MAX_PER_TOKEN, now))
            .await
            .map_err(|error| StoreError(error.to_string()))??;
        Ok(id)
    }

    /// The live session of a request's cookie (from the shared store when there is
    /// one: every replica sees a logout at once).
    pub async fn lookup(&self, headers: &http::HeaderMap) -> Result<Option<Session>, StoreError> {
        let Some(store) = self.shared.get().cloned() else {
            return Ok(self.find(headers));
        };
        let Some(id) = cookie_value(headers) else {
            return Ok(None);
        };
        let key = hex(&digest(id));
        let now = unix_now();
        let record = tokio::task::spawn_blocking(move || store.session(&key, now))
            .await
            .map_err(|error| StoreError(error.to_string()))??;
        Ok(record.and_then(|record| {
            let scope = Scope::parse(&record.scope)?;
            let at = Instant::now();
            Some(Session {
                caller: Caller {
                    scope,
                    id: record.caller,
                },
                csrf: record.csrf,
                expires: at + Duration::from_secs(record.expires.saturating_sub(now)),
                created: at,
            })
        }))
    }

    /// Ends the session of a request's cookie (everywhere).
    pub async fn logout(&self, headers: &http::HeaderMap) -> Result<(), StoreError> {
        let Some(store) = self.shared.get().cloned() else {
            self.end(headers);
            return Ok(());
        };
        let Some(id) = cookie_value(headers) else {
            return Ok(());
        };
        let key = hex(&digest(id));
        tokio::task::spawn_blocking(move || store.end_session(&key))
            .await
            .map_err(|error| StoreError(error.to_string()))?
    }

    /// Starts a session for `caller`: its id (for the cookie) and the session.
    pub fn start(&self, caller: Caller) -> std::io::Result<(String, Session)> {
        let id = random_hex()?;
        let now = Instant::now();
        let session = Session {
            caller,
            csrf: random_hex()?,
            expires: now + LIFETIME,
            created: now,
        };
        let mut sessions = self.lock();
        // One token's sessions are bounded on their own, so logging in again and again
        // with one token (a read token, say) only ends that token's oldest sessions,
        // never another token's.
        let mine: Vec<([u8; 32], Instant)> = sessions
            .iter()
            .filter(|(_, other)| other.caller.id == session.caller.id)
            .map(|(key, other)| (*key, other.created))
            .collect();
        if mine.len() >= MAX_PER_TOKEN {
            if let Some((oldest, _)) = mine.iter().min_by_key(|(_, created)| *created) {
                sessions.remove(oldest);
            }
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, session| session.expires > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.created)
                .map(|(key, _)| *key)
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(digest(&id), session.clone());
        Ok((id, session))
    }

    /// The live session of a request's cookie header, if any.
    pub fn find(&self, headers: &http::HeaderMap) -> Option<Session> {
        let id = cookie_value(headers)?;
        let key = digest(id);
        let mut sessions = self.lock();
        match sessions.get(&key) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of a request's cookie.
    pub fn end(&self, headers: &http::HeaderMap) {
        if let Some(id) = cookie_value(headers) {
            self.lock().remove(&digest(id));
        }
    }

    /// The `Set-Cookie` value for a new session.
    pub fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
            LIFETIME.as_secs(),
            self.secure_attribute()
        )
    }

    /// The `Set-Cookie` value that removes the cookie.
    pub fn removal(&self) -> String {
        format!(
            "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.secure_attribute()
        )
    }

    fn secure_attribute(&self) -> &'static str {
        if self.secure.load(Ordering::Relaxed) {
            "; Secure"
        } else {
            ""
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_digest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Session {
    /// Whether a form's CSRF token is this session's (compared in constant time).
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|presented| {
            presented.len() == self.csrf.len()
                && bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
        })
    }
}

/// Our cookie's value in a request (the first one of that name).
fn cookie_value(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| value.len() == 64 && value.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;

    fn caller() -> Caller {
        Caller {
            scope: Scope::Read,
            id: "name:ops".into(),
        }
    }

    fn with_cookie(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ended() {
        let sessions = Sessions::default();
        let (id, session) = sessions.start(caller()).unwrap();
        let headers = with_cookie(&format!("other=1; {COOKIE}={id}"));
        assert_eq!(sessions.find(&headers).unwrap().csrf, session.csrf);
        assert!(sessions
            .find(&with_cookie(&format!("{COOKIE}={}", "0".repeat(64))))
            .is_none());
        assert!(sessions
            .find(&with_cookie(&format!("{COOKIE}=short")))
            .is_none());
        sessions.end(&headers);
        assert!(sessions.find(&headers).is_none());
    }

    #[test]
    fn csrf_must_match_exactly() {
        let sessions = Sessions::default();
        let (_, session) = sessions.start(caller()).unwrap();
        assert!(session.csrf_matches(Some(&session.csrf.clone())));
        assert!(!session.csrf_matches(None));
        assert!(!session.csrf_matches(Some("")));
        assert!(!session.csrf_matches(Some(&session.csrf[1..])));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let sessions = Sessions::default();
        let plain = sessions.cookie("abc");
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        sessions.set_secure(true);
        assert!(sessions.cookie("abc").ends_with("; Secure"));
        assert!(sessions.removal().contains("Max-Age=0"));
    }

    #[test]
    fn sessions_are_bounded_per_token_and_in_all() {
        let sessions = Sessions::default();
        let admin = Caller {
            scope: Scope::Admin,
            id: "name:root".into(),
        };
        let (admin_id, _) = sessions.start(admin).unwrap();
        for _ in 0..MAX_PER_TOKEN * 3 {
            sessions.start(caller()).unwrap();
        }
        assert_eq!(sessions.lock().len(), MAX_PER_TOKEN + 1);
        let headers = with_cookie(&format!("{COOKIE}={admin_id}"));
        assert!(
            sessions.find(&headers).is_some(),
            "another token's session stays"
        );
        for index in 0..MAX_SESSIONS + 5 {
            sessions
                .start(Caller {
                    scope: Scope::Read,
                    id: format!("name:t{index}"),
                })
                .unwrap();
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    }
}
