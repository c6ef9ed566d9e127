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
/// Prefix of refresh tokens, so a leaked one is easy to recognize in a scan.
const REFRESH_TOKEN_PREFIX: &str = "nxr_";
/// Random bytes in a refresh token (256 bits).
const REFRESH_TOKEN_BYTES: usize = 32;

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

/// Generates a refresh token, which is returned once to the client and
/// stored only as [`hash_secret`].
pub fn generate_refresh_token() -> String {
    let bytes: [u8; REFRESH_TOKEN_BYTES] = rand::random();
    format!("{REFRESH_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
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
    /// The refresh token family the token was issued from, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid: Option<Uuid>,
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct Tokens {
    config: JwtConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// JWT_SECRET_OLD, tried only when JWT_SECRET does not verify a signature.
    previous_decoding: Option<DecodingKey>,
}

pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
    pub jti: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl Tokens {
    /// Fails when a secret is unusable as an HMAC key (empty).
    pub fn new(config: JwtConfig) -> Result<Self, jsonwebtoken::errors::Error> {
        let previous_decoding = config
            .previous_secret
            .as_deref()
            .map(DecodingKey::from_secret)
            .transpose()?;
        Ok(Tokens {
            encoding: EncodingKey::from_secret(&config.secret)?,
            decoding: DecodingKey::from_secret(&config.secret)?,
            previous_decoding,
            config,
        })
    }

    pub fn refresh_token_ttl(&self) -> std::time::Duration {
        self.config.refresh_token_ttl
    }

    /// Signs an access token with JWT_SECRET, never with JWT_SECRET_OLD.
    pub fn issue(
        &self,
        client_id: Uuid,
        role: Role,
        family_id: Option<Uuid>,
    ) -> Result<IssuedToken, ApiError> {
        let now = Utc::now().timestamp();
        let expires_in = self.config.access_token_ttl.as_secs();
        let jti = Uuid::new_v4().to_string();
        let claims = Claims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: client_id.to_string(),
            exp: now + expires_in as i64,
            iat: now,
            jti: jti.clone(),
            role,
            fid: family_id,
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(
                |error| ApiError::Internal(format!("signing an access token failed: {error}")),
            )?;
        Ok(IssuedToken {
            access_token,
            expires_in,
            jti,
            issued_at: claims.iat,
            expires_at: claims.exp,
        })
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and issue time.
    /// The signature is checked with JWT_SECRET and, when that fails and
    /// JWT_SECRET_OLD is set, with JWT_SECRET_OLD.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
        validation.leeway = self.config.leeway_seconds;

        let mut decoded = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation);
        if let (Err(error), Some(previous)) = (&decoded, &self.previous_decoding)
            && matches!(
                error.kind(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature
            )
        {
            decoded = jsonwebtoken::decode::<Claims>(token, previous, &validation);
            if decoded.is_ok() {
                metrics::counter!("auth_tokens_verified_with_old_secret_total").increment(1);
            }
        }
        let claims = decoded
            .map_err(|error| {
                tracing::info!(error = %error, "access token rejected");
                metrics::counter!("auth_tokens_rejected_total", "reason" => "invalid").increment(1);
                ApiError::unauthorized(
                    "the access token is invalid or expired; request a new one at /v1/auth/token",
                )
            })?
            .claims;

        // jsonwebtoken does not check `iat`: reject tokens issued in the future
        // or living longer than this service ever issues.
        let now = Utc::now().timestamp();
        let leeway = self.config.leeway_seconds as i64;
        let max_lifetime = self.config.access_token_ttl.as_secs() as i64;
        if claims.iat > now + leeway || claims.exp - claims.iat > max_lifetime + leeway {
            metrics::counter!("auth_tokens_rejected_total", "reason" => "lifetime").increment(1);
            return Err(ApiError::unauthorized(
                "the access token has an invalid lifetime; request a new one at /v1/auth/token",
            ));
        }
        Ok(claims)
    }
}

/// The caller, as proven by a valid access token that is not revoked.
#[derive(Debug, Clone)]
pub struct Principal {
    pub client_id: Uuid,
    pub role: Role,
    /// The access token's id (`jti` claim).
    pub jti: String,
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
        if state
            .revocations
            .is_revoked(&state.pool, &claims.jti)
            .await?
        {
            tracing::info!(%client_id, jti = %claims.jti, "access token rejected: revoked");
            metrics::counter!("auth_tokens_rejected_total", "reason" => "revoked").increment(1);
            return Err(ApiError::unauthorized(
                "the access token was revoked; request a new one at /v1/auth/token",
            ));
        }
        tracing::Span::current().record("client_id", tracing::field::display(client_id));
        crate::controls::rate_limit::check_token(parts, state, client_id)?;
        Ok(Principal {
            client_id,
            role: claims.role,
            jti: claims.jti,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn config(secret: &[u8], previous: Option<&[u8]>) -> JwtConfig {
        JwtConfig {
            secret: secret.to_vec(),
            previous_secret: previous.map(<[u8]>::to_vec),
            issuer: "nepxy-ledger".to_owned(),
            audience: "nepxy-api".to_owned(),
            access_token_ttl: Duration::from_secs(900),
            leeway_seconds: 5,
            refresh_token_ttl: Duration::from_secs(86_400),
        }
    }

    fn tokens() -> Tokens {
        Tokens::new(config(SECRET, None)).expect("valid key")
    }

    #[test]
    fn issued_token_verifies() {
        let tokens = tokens();
        let client_id = Uuid::new_v4();
        let family_id = Uuid::new_v4();
        let issued = tokens
            .issue(client_id, Role::Client, Some(family_id))
            .expect("issue");
        let claims = tokens.verify(&issued.access_token).expect("verify");
        assert_eq!(claims.sub, client_id.to_string());
        assert_eq!(claims.role, Role::Client);
        assert_eq!(claims.jti, issued.jti);
        assert_eq!(claims.fid, Some(family_id));
        assert_eq!(issued.expires_in, 900);
        assert_eq!(issued.expires_at - issued.issued_at, 900);
    }

    #[test]
    fn old_secret_verifies_only_while_configured() {
        let old = Tokens::new(config(OTHER_SECRET, None)).expect("valid key");
        let issued = old
            .issue(Uuid::new_v4(), Role::Client, None)
            .expect("issue");

        let rotating = Tokens::new(config(SECRET, Some(OTHER_SECRET))).expect("valid key");
        assert!(rotating.verify(&issued.access_token).is_ok());
        assert!(tokens().verify(&issued.access_token).is_err());
    }

    #[test]
    fn only_the_current_secret_signs() {
        let rotating = Tokens::new(config(SECRET, Some(OTHER_SECRET))).expect("valid key");
        let issued = rotating
            .issue(Uuid::new_v4(), Role::Client, None)
            .expect("issue");
        let current_only = tokens();
        assert!(current_only.verify(&issued.access_token).is_ok());
        let old_only = Tokens::new(config(OTHER_SECRET, None)).expect("valid key");
        assert!(old_only.verify(&issued.access_token).is_err());
    }

    #[test]
    fn refresh_tokens_are_random_and_prefixed() {
        let first = generate_refresh_token();
        let second = generate_refresh_token();
        assert!(first.starts_with("nxr_"));
        assert_ne!(first, second);
        // 32 bytes in unpadded base64url are 43 characters.
        assert_eq!(first.len(), "nxr_".len() + 43);
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
