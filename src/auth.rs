//! Credentials: users' passcodes are kept only as argon2id hashes (PHC strings from
//! `stompbox hash-password`), and checked off the async threads.
//!
//! Checking a passcode costs tens of milliseconds of CPU by design, so it runs on the
//! blocking pool, at most one per CPU at a time: a flood of CONNECTs slows logins, not
//! the connections already serving. An unknown login is checked against a dummy hash,
//! so a wrong login takes as long as a wrong passcode and does not reveal which users
//! exist. The comparison inside argon2 is constant-time.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};
use tokio::sync::Semaphore;

use crate::config::Auth;

/// The login and passcode of an HTTP `Authorization` header value `Basic <base64 of
/// login:passcode>`, if it is one (HTTP publish and the admin API).
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let b64 = value.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (login, passcode) = text.split_once(':')?;
    Some((login.to_owned(), passcode.to_owned()))
}

/// The PHC string of `password` under argon2id with the crate's recommended cost
/// (19 MiB, 2 passes), and a random salt.
pub fn hash_password(password: &str) -> String {
    hash_with(password, Params::default())
}

/// [`hash_password`] with explicit costs (tests use cheap ones).
pub fn hash_with(password: &str, params: Params) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 accepts any password with a generated salt")
        .to_string()
}

/// Whether `hash` is a PHC string argon2 can check against.
pub fn is_valid_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// The configured users, ready to check logins against.
pub struct Verifier {
    allow_anonymous: bool,
    /// Whether a login names an identity that grants something (ACL rules or tokens
    /// are configured): then only a configured user may claim one by passcode.
    logins_grant: bool,
    /// Login → PHC hash.
    users: HashMap<String, String>,
    /// What an unknown login is checked against, at the users' own cost.
    dummy: String,
    /// Checks running at once, at most one per CPU.
    permits: Arc<Semaphore>,
}

/// Hand-written: hashes stay out of logs too.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("allow_anonymous", &self.allow_anonymous)
            .field("logins_grant", &self.logins_grant)
            .field("users", &self.users.len())
            .finish()
    }
}

impl Verifier {
    /// From `[auth]` (validated: every user has a hash).
    pub fn new(auth: &Auth) -> Verifier {
        let users: HashMap<String, String> = auth
            .users
            .iter()
            .filter_map(|u| Some((u.login.clone(), u.passcode_hash.clone()?)))
            .collect();
        // Same parameters as a real user's hash, so a miss costs what a hit costs.
        let params = users
            .values()
            .next()
            .and_then(|h| PasswordHash::new(h).ok())
            .and_then(|h| Params::try_from(&h).ok())
            .unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Verifier {
            allow_anonymous: auth.allow_anonymous,
            logins_grant: !auth.acls.is_empty() || auth.jwt.has_keys(),
            dummy: hash_with("not a passcode", params),
            users,
            permits: Arc::new(Semaphore::new(cpus)),
        }
    }

    /// Whether a login accepted by [`Verifier::check`] was proven (a configured user's
    /// passcode), not just taken as a name.
    pub fn proves_logins(&self) -> bool {
        !self.users.is_empty()
    }

    /// What a passcode login means here, for the start-up log.
    pub fn describe(&self) -> &'static str {
        match (self.users.is_empty(), self.logins_grant) {
            (false, _) => "a login must be a configured user with its passcode",
            (true, true) => {
                "no [[auth.users]]: a CONNECT login without a token is refused, since ACL \
                 rules or token keys make logins worth claiming"
            }
            (true, false) => "no [[auth.users]], ACLs or token keys: a login is a name only",
        }
    }

    /// Whether a client presenting `login` (if any) and `passcode` is let in: with
    /// users configured, the login must be one and the passcode must match its hash;
    /// without `login`, `auth.allow_anonymous` decides. With no users configured, a
    /// login is taken as a name only (when anonymous access is allowed) — unless ACL
    /// rules or token keys make a login worth claiming: then it is refused, since
    /// nothing could prove it (a token logs in through `jwt` instead).
    pub async fn check(&self, login: Option<&str>, passcode: &str) -> bool {
        let Some(login) = login else {
            return self.allow_anonymous;
        };
        if self.users.is_empty() {
            return self.allow_anonymous && !self.logins_grant;
        }
        let (hash, known) = match self.users.get(login) {
            Some(hash) => (hash.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let passcode = passcode.to_owned();
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(passcode.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        matched && known
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::User;

    fn cheap(password: &str) -> String {
        hash_with(password, Params::new(8, 1, 1, None).unwrap())
    }

    #[test]
    fn a_hash_is_salted_and_checkable() {
        let a = cheap("pw");
        assert_ne!(a, cheap("pw"), "random salt");
        assert!(a.starts_with("$argon2id$"));
        assert!(is_valid_hash(&a));
        assert!(!is_valid_hash("pw"));
        assert!(!is_valid_hash("$2b$12$abcdefghijklmnopqrstuv"));
    }

    #[tokio::test]
    async fn checks_logins_against_hashes() {
        let auth = Auth {
            allow_anonymous: false,
            users: vec![User {
                login: "alice".into(),
                passcode_hash: Some(cheap("secret")),
                passcode: None,
            }],
            ..Auth::default()
        };
        let v = Verifier::new(&auth);
        assert!(v.check(Some("alice"), "secret").await);
        assert!(!v.check(Some("alice"), "wrong").await);
        assert!(!v.check(Some("mallory"), "secret").await);
        assert!(!v.check(None, "").await);
        assert!(
            !format!("{auth:?}").contains("argon2"),
            "hashes stay out of Debug"
        );
    }
}
