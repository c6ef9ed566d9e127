//! Token grants, refresh token rotation and revocation.
//!
//! A client_credentials grant starts a refresh token family. Each refresh
//! marks the presented token used and issues a new access token and a new
//! refresh token in the same family. Presenting a used refresh token again
//! revokes the family and every access token issued from it, because either
//! the client or someone who copied the token is replaying it.

use chrono::Utc;
use nepxy_ledger::metadata::Source;
use nepxy_ledger::{ClientCommand, RevocationScope};
use uuid::Uuid;

use super::clients::{action_metadata, actor_of, record};
use crate::auth::{IssuedToken, Principal, Role, Tokens, generate_refresh_token, hash_secret};
use crate::error::ApiError;
use crate::revocation::Revocations;
use crate::store::tokens::{self, NewAccessToken, Revoked};
use crate::store::{Store, UnitOfWork};

/// An access token and the refresh token that replaces it.
pub struct TokenGrant {
    pub access: IssuedToken,
    pub refresh_token: String,
}

/// Target of POST /v1/auth/revoke.
pub enum RevokeTarget {
    AccessToken(String),
    RefreshToken(String),
    Client(Uuid),
}

/// Result of one revocation.
pub struct RevokeOutcome {
    pub client_id: Uuid,
    pub scope: RevocationScope,
    pub access_tokens_revoked: i64,
    pub families_revoked: i64,
}

fn invalid_refresh_token() -> ApiError {
    ApiError::unauthorized(
        "the refresh token is invalid, expired or revoked; request new tokens with grant_type client_credentials",
    )
}

/// Issues an access token and a refresh token, and records both.
async fn issue(
    unit: &mut UnitOfWork,
    tokens: &Tokens,
    client_id: Uuid,
    role: Role,
    family_id: Uuid,
) -> Result<TokenGrant, ApiError> {
    let access = tokens.issue(client_id, role, Some(family_id))?;
    let refresh_token = generate_refresh_token();
    let ttl = chrono::Duration::from_std(tokens.refresh_token_ttl())
        .map_err(|error| ApiError::Internal(format!("refresh token lifetime: {error}")))?;
    tokens::insert_refresh_token(
        unit.connection().await?,
        &hash_secret(&refresh_token),
        family_id,
        client_id,
        Utc::now() + ttl,
    )
    .await?;
    tokens::insert_access_token(
        unit.connection().await?,
        &NewAccessToken {
            jti: &access.jti,
            client_id,
            family_id: Some(family_id),
            issued_at: access.issued_at,
            expires_at: access.expires_at,
        },
    )
    .await?;
    Ok(TokenGrant {
        access,
        refresh_token,
    })
}

/// Starts a new family for a client that proved its credentials.
pub async fn grant(
    store: &Store,
    tokens: &Tokens,
    client_id: Uuid,
    role: Role,
) -> Result<TokenGrant, ApiError> {
    let family_id = Uuid::new_v4();
    let mut unit = store.begin().await?;
    tokens::insert_family(unit.connection().await?, family_id, client_id).await?;
    let grant = issue(&mut unit, tokens, client_id, role, family_id).await?;
    unit.commit().await?;
    Ok(grant)
}

/// Exchanges a refresh token for new tokens. Of two exchanges of the same
/// token, the first wins and the second revokes the family.
pub async fn refresh(
    store: &Store,
    tokens: &Tokens,
    revocations: &Revocations,
    presented: &str,
) -> Result<TokenGrant, ApiError> {
    let token_hash = hash_secret(presented);
    let mut unit = store.begin().await?;
    let Some(row) = tokens::lock_refresh_token(unit.connection().await?, &token_hash).await? else {
        tracing::info!("refresh rejected: unknown refresh token");
        metrics::counter!("auth_refresh_total", "result" => "unknown").increment(1);
        return Err(invalid_refresh_token());
    };
    let client_id = row.client_id;
    let family_id = row.family_id;

    if row.family_revoked_at.is_some() {
        tracing::info!(%client_id, %family_id, "refresh rejected: family revoked");
        metrics::counter!("auth_refresh_total", "result" => "revoked").increment(1);
        return Err(invalid_refresh_token());
    }
    if row.used_at.is_some() {
        let revoked = tokens::revoke_family(unit.connection().await?, family_id).await?;
        let metadata = action_metadata(
            None,
            Source::Api,
            Some("a spent refresh token was presented again".to_owned()),
        );
        record(
            &mut unit,
            client_id,
            ClientCommand::RecordRefreshTokenReuse {
                client_id,
                family_id,
                access_tokens_revoked: revoked.access_tokens.len() as i64,
            },
            &metadata,
        )
        .await?;
        unit.commit().await?;
        revocations.mark_revoked(&revoked.access_tokens);
        tracing::warn!(
            %client_id,
            %family_id,
            access_tokens_revoked = revoked.access_tokens.len(),
            "spent refresh token presented again; family revoked"
        );
        metrics::counter!("auth_refresh_total", "result" => "reused").increment(1);
        return Err(invalid_refresh_token());
    }
    if row.expires_at <= Utc::now() {
        tracing::info!(%client_id, %family_id, "refresh rejected: refresh token expired");
        metrics::counter!("auth_refresh_total", "result" => "expired").increment(1);
        return Err(invalid_refresh_token());
    }
    let role: Role = row
        .role
        .parse()
        .map_err(|()| ApiError::Internal(format!("client {client_id} has an unknown role")))?;

    tokens::mark_refresh_token_used(unit.connection().await?, &token_hash).await?;
    let grant = issue(&mut unit, tokens, client_id, role, family_id).await?;
    unit.commit().await?;
    tracing::info!(%client_id, %family_id, "refresh token exchanged");
    metrics::counter!("auth_refresh_total", "result" => "exchanged").increment(1);
    Ok(grant)
}

/// Returns whether `principal` may revoke tokens of `owner`. Admins may
/// revoke any client's tokens, and every other role only its own.
fn may_revoke(principal: &Principal, owner: Uuid) -> bool {
    principal.role == Role::Admin || principal.client_id == owner
}

/// Revokes tokens and records a `TokensRevoked` event in one transaction.
/// A target the caller may not revoke is reported as not found, so that a
/// client learns nothing about other clients' tokens.
pub async fn revoke(
    store: &Store,
    revocations: &Revocations,
    principal: &Principal,
    target: RevokeTarget,
    reason: Option<String>,
) -> Result<RevokeOutcome, ApiError> {
    let mut unit = store.begin().await?;
    let (client_id, scope, jti, family_id, revoked) = match target {
        RevokeTarget::AccessToken(jti) => {
            let not_found = || ApiError::not_found(format!("access token {jti:?} not found"));
            let owner = tokens::lock_access_token(unit.connection().await?, &jti)
                .await?
                .filter(|owner| may_revoke(principal, *owner))
                .ok_or_else(not_found)?;
            let changed = tokens::revoke_access_token(unit.connection().await?, &jti).await?;
            let revoked = Revoked {
                families: 0,
                access_tokens: if changed {
                    vec![jti.clone()]
                } else {
                    Vec::new()
                },
            };
            (
                owner,
                RevocationScope::AccessToken,
                Some(jti),
                None,
                revoked,
            )
        }
        RevokeTarget::RefreshToken(presented) => {
            let not_found = || ApiError::not_found("refresh token not found");
            let (family_id, owner) =
                tokens::find_refresh_token(unit.connection().await?, &hash_secret(&presented))
                    .await?
                    .filter(|(_, owner)| may_revoke(principal, *owner))
                    .ok_or_else(not_found)?;
            let revoked = tokens::revoke_family(unit.connection().await?, family_id).await?;
            (
                owner,
                RevocationScope::Family,
                None,
                Some(family_id),
                revoked,
            )
        }
        RevokeTarget::Client(client_id) => {
            let not_found = || ApiError::not_found(format!("client {client_id} not found"));
            if !may_revoke(principal, client_id) {
                return Err(not_found());
            }
            if crate::store::clients::find(store.pool(), client_id)
                .await?
                .is_none()
            {
                return Err(not_found());
            }
            let revoked = tokens::revoke_client(unit.connection().await?, client_id).await?;
            (client_id, RevocationScope::Client, None, None, revoked)
        }
    };

    let outcome = RevokeOutcome {
        client_id,
        scope,
        access_tokens_revoked: revoked.access_tokens.len() as i64,
        families_revoked: revoked.families,
    };
    let source = if principal.role == Role::Admin || principal.role == Role::Operator {
        Source::Admin
    } else {
        Source::Api
    };
    let metadata = action_metadata(Some(actor_of(principal)), source, reason);
    record(
        &mut unit,
        client_id,
        ClientCommand::RecordRevocation {
            client_id,
            scope,
            jti,
            family_id,
            access_tokens_revoked: outcome.access_tokens_revoked,
            families_revoked: outcome.families_revoked,
        },
        &metadata,
    )
    .await?;
    unit.commit().await?;
    revocations.mark_revoked(&revoked.access_tokens);
    tracing::info!(
        %client_id,
        scope = ?scope,
        access_tokens_revoked = outcome.access_tokens_revoked,
        families_revoked = outcome.families_revoked,
        revoked_by = %principal.client_id,
        "tokens revoked"
    );
    metrics::counter!("auth_revocations_total", "scope" => scope_name(scope)).increment(1);
    Ok(outcome)
}

pub fn scope_name(scope: RevocationScope) -> &'static str {
    match scope {
        RevocationScope::AccessToken => "access_token",
        RevocationScope::Family => "family",
        RevocationScope::Client => "client",
    }
}
