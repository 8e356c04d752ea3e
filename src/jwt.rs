//! JSON Web Tokens as credentials (`[auth.jwt]`), for browsers: a page cannot set
//! headers on the WebSocket handshake, so the token travels in CONNECT, as the
//! `passcode` (stompjs `connectHeaders: { passcode: token }`) or a `token` header.
//!
//! A token is accepted when its signature checks against a configured key (HS256
//! secrets; RS256 or ES256 public keys, as PEM files or a JWKS file), it is inside `nbf`..`exp`, and its `aud` and
//! `iss` are the configured ones when those are set. The user is `user_claim`, the
//! roles (for ACLs) `roles_claim`. A connection replaces its token with a SEND to
//! `/sys/auth` before it expires; see `session`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use crate::config::Jwt;

/// Why a token was refused (the text becomes the ERROR message; it never holds the
/// token).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Expired.
    #[error("token expired")]
    Expired,
    /// Anything else: bad signature, not yet valid, wrong audience or issuer, no
    /// user claim, malformed.
    #[error("token refused: {0}")]
    Invalid(String),
}

/// A verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user (`user_claim`).
    pub user: String,
    /// Its roles (`roles_claim`).
    pub roles: Vec<String>,
    /// When it expires, in seconds since the epoch.
    pub exp: u64,
}

/// The configured keys.
pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    audience: String,
    issuer: String,
    user_claim: String,
    roles_claim: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("jwt::Verifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Whether `passcode` looks like a JWT (three base64url parts, a JSON header).
pub fn looks_like_token(passcode: &str) -> bool {
    passcode.starts_with("eyJ") && passcode.split('.').count() == 3
}

impl Verifier {
    /// From `[auth.jwt]`; `None` when no key is configured. A key file that cannot be
    /// read or parsed is an error naming it.
    pub fn new(config: &Jwt) -> Result<Option<Verifier>, String> {
        let mut keys: Vec<(Algorithm, DecodingKey)> = config
            .hs256_secrets
            .iter()
            .map(|s| (Algorithm::HS256, DecodingKey::from_secret(s.as_bytes())))
            .collect();
        for file in &config.public_key_files {
            let pem = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                keys.push((Algorithm::RS256, k));
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                keys.push((Algorithm::ES256, k));
            } else {
                return Err(format!("{file} is not an RSA or EC public key in PEM"));
            }
        }
        if !config.jwks_file.is_empty() {
            let file = &config.jwks_file;
            let text = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_slice(&text).map_err(|e| format!("{file} is not a JWKS: {e}"))?;
            for jwk in &set.keys {
                let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                    (Some(jsonwebtoken::jwk::KeyAlgorithm::RS256), _) => Algorithm::RS256,
                    (Some(jsonwebtoken::jwk::KeyAlgorithm::ES256), _) => Algorithm::ES256,
                    (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                    (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)) => {
                        Algorithm::ES256
                    }
                    // Other algorithms are not accepted: skip the key.
                    _ => continue,
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("{file}: a key cannot be used: {e}"))?;
                keys.push((alg, key));
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Verifier {
            keys,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            user_claim: config.user_claim.clone(),
            roles_claim: config.roles_claim.clone(),
        }))
    }

    /// Checks `token`.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.validate_nbf = true;
        validation.leeway = 0;
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&self.audience]);
        }
        if !self.issuer.is_empty() {
            validation.set_issuer(&[&self.issuer]);
        }
        let mut last = TokenError::Invalid(format!("no key for {:?}", header.alg));
        for (_, key) in self.keys.iter().filter(|(alg, _)| *alg == header.alg) {
            match decode::<serde_json::Map<String, Value>>(token, key, &validation) {
                Ok(data) => return self.identity(&data.claims),
                Err(e) => {
                    last = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                        _ => TokenError::Invalid(e.to_string()),
                    };
                }
            }
        }
        Err(last)
    }

    fn identity(&self, claims: &serde_json::Map<String, Value>) -> Result<Identity, TokenError> {
        let user = claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| TokenError::Invalid(format!("no {:?} claim", self.user_claim)))?;
        let roles = match claims.get(&self.roles_claim) {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(one)) => one.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok(Identity {
            user: user.to_owned(),
            roles,
            exp,
        })
    }
}
