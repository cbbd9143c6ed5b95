//! HTTP Basic authentication and the principal a session is bound to.
//!
//! Credentials live in a file of `user:PHC-hash` lines (argon2id, as printed by
//! `broker hash-password`; `#` starts a comment). An endpoint's `auth` setting decides what a request
//! needs: `none` (credentials are ignored, every request is anonymous), `optional` (no credentials:
//! anonymous; wrong ones: 401) or `required` (missing or wrong: 401 with `WWW-Authenticate`).
//! `directory` (DSML endpoints before an ldap class with `bind = "principal"`) requires Basic
//! credentials and leaves checking them to the directory, which the class binds to as the user.
//!
//! argon2 is slow on purpose (tens of milliseconds), so a verified `Authorization` value is
//! remembered in a small bounded cache: only the first request with given credentials pays, and a
//! changed password simply misses the cache. Passwords are never logged.

use base64::Engine as _;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// How an endpoint treats credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Optional,
    Required,
    /// HTTP Basic credentials required but not checked here: the directory the endpoint's ldap
    /// class binds to checks them (`bind = "principal"`); the broker keeps no password for them.
    Directory,
}

/// The user name and password of an HTTP Basic `Authorization` value; `None` for any other.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The result of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated as this user.
    User(String),
    /// No credentials, and the endpoint allows that.
    Anonymous,
    /// Answer 401 with a challenge.
    Challenge,
}

/// Most verified `Authorization` values remembered at once; the cache is emptied when full.
const CACHE_LIMIT: usize = 4096;

/// The credentials file, loaded once.
pub struct Authenticator {
    users: HashMap<String, String>,
    realm: String,
    verified: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Authenticator {
    // Never print hashes or cached header values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.len())
            .field("realm", &self.realm)
            .finish()
    }
}

impl Authenticator {
    /// Whether `other` holds the same users, passwords and realm (a reload compares them).
    pub fn same_credentials(&self, other: &Authenticator) -> bool {
        self.users == other.users && self.realm == other.realm
    }

    /// Load `user:hash` lines. Errors name the line.
    pub fn load(path: &Path, realm: &str) -> Result<Authenticator, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        Authenticator::parse(&text, realm)
    }

    /// Parse credentials text (see the module docs).
    pub fn parse(text: &str, realm: &str) -> Result<Authenticator, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {}: expected user:hash", n + 1));
            };
            if user.is_empty() {
                return Err(format!("line {}: empty user name", n + 1));
            }
            if argon2::PasswordHash::new(hash).is_err() {
                return Err(format!(
                    "line {}: the hash of {user:?} is not a PHC string (make one with `broker hash-password`)",
                    n + 1
                ));
            }
            if users.insert(user.to_string(), hash.to_string()).is_some() {
                return Err(format!("line {}: user {user:?} appears twice", n + 1));
            }
        }
        Ok(Authenticator {
            users,
            realm: realm.to_string(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the credentials name this user.
    pub fn has_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The realm of the `WWW-Authenticate` challenge.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The outcome when it needs no password hashing (no credentials needed or given, or
    /// credentials verified before); `None` when [`Authenticator::check`] must run argon2.
    pub fn check_cheap(&self, mode: AuthMode, authorization: Option<&str>) -> Option<AuthOutcome> {
        if mode == AuthMode::None {
            return Some(AuthOutcome::Anonymous);
        }
        let Some(value) = authorization else {
            return Some(if mode == AuthMode::Required {
                AuthOutcome::Challenge
            } else {
                AuthOutcome::Anonymous
            });
        };
        let user = self
            .verified
            .lock()
            .ok()
            .and_then(|c| c.get(value).cloned())?;
        Some(AuthOutcome::User(user))
    }

    /// Check a request's `Authorization` header value (None when absent) under `mode`. May run
    /// argon2 (tens of milliseconds): call it off the event loop unless `check_cheap` answered.
    pub fn check(&self, mode: AuthMode, authorization: Option<&str>) -> AuthOutcome {
        if let Some(outcome) = self.check_cheap(mode, authorization) {
            return outcome;
        }
        let Some(value) = authorization else {
            return AuthOutcome::Challenge;
        };
        match self.verify(value) {
            Some(user) => {
                if let Ok(mut cache) = self.verified.lock() {
                    if cache.len() >= CACHE_LIMIT {
                        cache.clear();
                    }
                    cache.insert(value.to_string(), user.clone());
                }
                AuthOutcome::User(user)
            }
            None => AuthOutcome::Challenge,
        }
    }

    fn verify(&self, value: &str) -> Option<String> {
        let (user, password) = basic_credentials(value)?;
        let hash = self.users.get(&user)?;
        let parsed = argon2::PasswordHash::new(hash).ok()?;
        use argon2::PasswordVerifier;
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .ok()?;
        Some(user)
    }
}

/// Hash a password for the credentials file (argon2id, random salt from the OS).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn modes_and_credentials() {
        let text = format!("# users\nalice:{}\n", hash_password("s3cret").unwrap());
        let auth = Authenticator::parse(&text, "broker").unwrap();
        let good = basic("alice", "s3cret");
        assert_eq!(
            auth.check(AuthMode::Required, Some(&good)),
            AuthOutcome::User("alice".into())
        );
        // Second time from the cache, without argon2, same answer.
        assert_eq!(
            auth.check_cheap(AuthMode::Required, Some(&good)),
            Some(AuthOutcome::User("alice".into()))
        );
        assert_eq!(
            auth.check(AuthMode::Required, Some(&good)),
            AuthOutcome::User("alice".into())
        );
        // Unverified credentials are never answered cheaply.
        assert_eq!(
            auth.check_cheap(AuthMode::Required, Some(&basic("alice", "wrong"))),
            None
        );
        assert_eq!(
            auth.check(AuthMode::Required, Some(&basic("alice", "wrong"))),
            AuthOutcome::Challenge
        );
        assert_eq!(
            auth.check(AuthMode::Required, Some(&basic("bob", "s3cret"))),
            AuthOutcome::Challenge
        );
        assert_eq!(
            auth.check(AuthMode::Required, Some("Bearer x")),
            AuthOutcome::Challenge
        );
        assert_eq!(
            auth.check(AuthMode::Required, Some("Basic !!!")),
            AuthOutcome::Challenge
        );
        assert_eq!(auth.check(AuthMode::Required, None), AuthOutcome::Challenge);
        assert_eq!(auth.check(AuthMode::Optional, None), AuthOutcome::Anonymous);
        assert_eq!(
            auth.check(AuthMode::Optional, Some(&basic("alice", "no"))),
            AuthOutcome::Challenge
        );
        assert_eq!(
            auth.check(AuthMode::None, Some(&basic("alice", "no"))),
            AuthOutcome::Anonymous
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        assert!(Authenticator::parse("alice", "r")
            .err()
            .unwrap_or_default()
            .contains("line 1"));
        assert!(Authenticator::parse("\nalice:plain", "r")
            .err()
            .unwrap_or_default()
            .contains("line 2"));
        let h = hash_password("x").unwrap();
        assert!(Authenticator::parse(&format!("a:{h}\na:{h}"), "r")
            .err()
            .unwrap_or_default()
            .contains("twice"));
    }
}
