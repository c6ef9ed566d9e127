//! Client secrets, HS256 access tokens and the authenticated principal.

use std::fmt;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::config::JwtConfig;
use crate::error::ApiError;
use crate::state::AppState;

/// Prefix of client secrets, so a leaked one is easy to recognize in a scan.
const CLIENT_SECRET_PREFIX: &str = "nxs_";
/// Random bytes in a client secret.
const CLIENT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Auditor,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "client" => Ok(Role::Client),
            "auditor" => Ok(Role::Auditor),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// A new client secret: shown once, stored only as [`hash_secret`].
pub fn generate_client_secret() -> String {
    let bytes: [u8; CLIENT_SECRET_BYTES] = rand::random();
    format!("{CLIENT_SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 of a secret. Client secrets carry 256 random bits, so a fast hash
/// is enough: there is no dictionary to search.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(presented: &str, stored_hash: &[u8]) -> bool {
    hash_secret(presented).ct_eq(stored_hash).into()
}

/// Compares two secrets in constant time (for equal lengths).
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.ct_eq(right).into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub role: Role,
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct Tokens {
    config: JwtConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
}

impl Tokens {
    /// Fails when the secret is unusable as an HMAC key (empty).
    pub fn new(config: JwtConfig) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Tokens {
            encoding: EncodingKey::from_secret(&config.secret)?,
            decoding: DecodingKey::from_secret(&config.secret)?,
            config,
        })
    }

    pub fn issue(&self, client_id: Uuid, role: Role) -> Result<IssuedToken, ApiError> {
        let now = Utc::now().timestamp();
        let expires_in = self.config.access_token_ttl.as_secs();
        let claims = Claims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: client_id.to_string(),
            exp: now + expires_in as i64,
            iat: now,
            jti: Uuid::new_v4().to_string(),
            role,
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(
                |error| ApiError::Internal(format!("signing an access token failed: {error}")),
            )?;
        Ok(IssuedToken {
            access_token,
            expires_in,
        })
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and issue time.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
        validation.leeway = self.config.leeway_seconds;

        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |error| {
                tracing::info!(error = %error, "access token rejected");
                ApiError::unauthorized(
                    "the access token is invalid or expired; request a new one at /v1/auth/token",
                )
            },
        )?;
        let claims = data.claims;

        // jsonwebtoken does not check `iat`: reject tokens issued in the future
        // or living longer than this service ever issues.
        let now = Utc::now().timestamp();
        let leeway = self.config.leeway_seconds as i64;
        let max_lifetime = self.config.access_token_ttl.as_secs() as i64;
        if claims.iat > now + leeway || claims.exp - claims.iat > max_lifetime + leeway {
            return Err(ApiError::unauthorized(
                "the access token has an invalid lifetime; request a new one at /v1/auth/token",
            ));
        }
        Ok(claims)
    }
}

/// The caller, as proven by a valid access token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub client_id: Uuid,
    pub role: Role,
}

impl Principal {
    /// Fails with 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "this action requires one of the roles: {}",
                names.join(", ")
            )))
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header_value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized(
                "missing Authorization header; send 'Authorization: Bearer <token>'",
            )
        })?;
        // The scheme name is case-insensitive (RFC 9110, section 11.1).
        let token = header_value
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("Authorization header must be 'Bearer <token>'")
            })?;
        let claims = state.tokens.verify(token)?;
        let client_id = Uuid::parse_str(&claims.sub)
            .map_err(|_| ApiError::unauthorized("the access token has an invalid subject"))?;
        tracing::Span::current().record("client_id", tracing::field::display(client_id));
        crate::controls::rate_limit::check_token(parts, state, client_id)?;
        Ok(Principal {
            client_id,
            role: claims.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tokens() -> Tokens {
        let tokens = Tokens::new(JwtConfig {
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
            issuer: "nepxy-ledger".to_owned(),
            audience: "nepxy-api".to_owned(),
            access_token_ttl: Duration::from_secs(900),
            leeway_seconds: 5,
        });
        tokens.expect("valid key")
    }

    #[test]
    fn issued_token_verifies() {
        let tokens = tokens();
        let client_id = Uuid::new_v4();
        let issued = tokens.issue(client_id, Role::Client).expect("issue");
        let claims = tokens.verify(&issued.access_token).expect("verify");
        assert_eq!(claims.sub, client_id.to_string());
        assert_eq!(claims.role, Role::Client);
        assert_eq!(issued.expires_in, 900);
    }

    #[test]
    fn secret_hash_round_trip() {
        let secret = generate_client_secret();
        assert!(secret.starts_with("nxs_"));
        let hash = hash_secret(&secret);
        assert!(secret_matches(&secret, &hash));
        assert!(!secret_matches("nxs_wrong", &hash));
    }
}
