//! Webhook intake: store the raw delivery first, then verify, parse and
//! apply it; and operator replays of stored deliveries.

use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use nepxy_ledger::metadata::{Actor, EventMetadata, Source};
use nepxy_ledger::{PayoutStatus, Provider};
use serde_json::Value;
use uuid::Uuid;

use super::confirm::TransferStatusLookup;
use super::{Delivery, Report, ReportStatus, adapter};
use crate::commands::outcomes::{Applied, apply_in, retry_on_conflict, target};
use crate::commands::release;
use crate::config::WebhookSecrets;
use crate::controls::maintenance::MaintenanceSwitch;
use crate::error::ApiError;
use crate::store::webhooks::{self, NewDelivery, VerdictUpdate};
use crate::store::{Store, UnitOfWork};

/// Headers never stored, because they carry credentials.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// Everything the intake needs, shared by the HTTP handlers and the CLI.
#[derive(Clone)]
pub struct Intake {
    pub store: Store,
    pub secrets: WebhookSecrets,
    pub momo_status: Arc<dyn TransferStatusLookup>,
    /// While on, deliveries are stored but not applied; the retry worker
    /// applies them once maintenance ends.
    pub maintenance: MaintenanceSwitch,
}

/// A delivery as it arrived.
pub struct Arrival<'a> {
    pub provider: Provider,
    pub method: &'a str,
    pub path: &'a str,
    pub path_token: Option<&'a str>,
    pub peer_addr: Option<String>,
    /// Lowercase header names with their values, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// The result of handling one delivery.
#[derive(Debug, Clone)]
pub struct Handled {
    pub webhook_id: Uuid,
    pub verdict: String,
    pub payout_id: Option<Uuid>,
    /// Event types written (or, in a dry run, that would be written).
    pub events: Vec<String>,
    pub detail: Option<String>,
}

/// Reason a delivery was not accepted, with its webhook id for the operator.
#[derive(Debug)]
pub enum Refusal {
    Rejected { webhook_id: Uuid, reason: String },
    Malformed { webhook_id: Uuid, reason: String },
}

/// Drops credential headers and lowercases names.
pub fn storable_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, String)> {
    headers
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .filter(|(name, _)| !CREDENTIAL_HEADERS.contains(&name.as_str()))
        .collect()
}

impl Intake {
    /// Stores a delivery that exceeded the body size limit, without its body.
    pub async fn record_oversized(
        &self,
        arrival: &Arrival<'_>,
        body_size: i64,
    ) -> Result<Uuid, ApiError> {
        let webhook_id = Uuid::new_v4();
        webhooks::insert(
            self.store.pool(),
            &NewDelivery {
                webhook_id,
                provider: arrival.provider.name(),
                received_at: Utc::now(),
                peer_addr: arrival.peer_addr.clone(),
                method: arrival.method,
                path: arrival.path,
                headers: &arrival.headers,
                body: None,
                body_size,
                verdict: "oversized",
                reason: Some("body larger than the limit; not stored"),
            },
        )
        .await?;
        tracing::warn!(%webhook_id, provider = %arrival.provider, body_size, "oversized webhook delivery refused");
        Ok(webhook_id)
    }

    /// Stores, verifies, parses and applies one delivery.
    pub async fn receive(
        &self,
        arrival: Arrival<'_>,
    ) -> Result<Result<Handled, Refusal>, ApiError> {
        let webhook_id = Uuid::new_v4();
        let span = tracing::Span::current();
        span.record("webhook_id", tracing::field::display(webhook_id));

        // The raw bytes are committed before any check, so nothing that
        // arrived is lost, whatever happens next.
        webhooks::insert(
            self.store.pool(),
            &NewDelivery {
                webhook_id,
                provider: arrival.provider.name(),
                received_at: Utc::now(),
                peer_addr: arrival.peer_addr.clone(),
                method: arrival.method,
                path: arrival.path,
                headers: &arrival.headers,
                body: Some(arrival.body),
                body_size: arrival.body.len() as i64,
                verdict: "received",
                reason: None,
            },
        )
        .await?;
        tracing::info!(%webhook_id, provider = %arrival.provider, body_size = arrival.body.len(), "webhook stored");

        let delivery = Delivery {
            headers: &arrival.headers,
            body: arrival.body,
            path_token: arrival.path_token,
        };
        let metadata = EventMetadata {
            request_id: crate::request_id::current(),
            actor: Some(Actor {
                subject: format!("provider:{}", arrival.provider),
                role: "provider".to_owned(),
            }),
            source: Source::Webhook,
            idempotency_key: None,
            webhook_id: Some(webhook_id.to_string()),
            reason: None,
            recorded_at: Utc::now().trunc_subsecs(6),
        };
        let outcome = self
            .process(
                webhook_id,
                arrival.provider,
                &delivery,
                Mode::Fresh,
                &metadata,
                false,
            )
            .await;
        match outcome {
            Ok(outcome) => Ok(outcome),
            // The delivery is stored and due for an automatic retry, so the
            // response confirms receipt instead of asking for a resend.
            Err(error) => {
                tracing::error!(%webhook_id, provider = %arrival.provider, error = %error, "webhook stored but not processed; it will be retried");
                Ok(Ok(Handled {
                    webhook_id,
                    verdict: "received".to_owned(),
                    payout_id: None,
                    events: Vec::new(),
                    detail: Some("stored; processing failed and will be retried".to_owned()),
                }))
            }
        }
    }

    /// Verifies, parses and applies a stored delivery, and stores the verdict
    /// as `mode` allows. With `dry_run` nothing is written.
    /// Runs [`Self::evaluate`] and counts its verdict in the metrics.
    async fn process(
        &self,
        webhook_id: Uuid,
        provider: Provider,
        delivery: &Delivery<'_>,
        mode: Mode,
        metadata: &EventMetadata,
        dry_run: bool,
    ) -> Result<Result<Handled, Refusal>, ApiError> {
        let outcome = self
            .evaluate(webhook_id, provider, delivery, mode, metadata, dry_run)
            .await;
        let verdict = match &outcome {
            Ok(Ok(handled)) => handled.verdict.as_str(),
            Ok(Err(Refusal::Rejected { .. })) => "rejected",
            Ok(Err(Refusal::Malformed { .. })) => "malformed",
            Err(_) => "error",
        };
        crate::prometheus::webhook_verdict(provider.name(), verdict);
        outcome
    }

    async fn evaluate(
        &self,
        webhook_id: Uuid,
        provider: Provider,
        delivery: &Delivery<'_>,
        mode: Mode,
        metadata: &EventMetadata,
        dry_run: bool,
    ) -> Result<Result<Handled, Refusal>, ApiError> {
        let fresh = mode == Mode::Fresh;
        let records_refusal = mode != Mode::Replay;
        let adapter = adapter(provider);
        let pool = self.store.pool();
        let now = Utc::now().timestamp();

        let verified = match adapter.verify(delivery, self.secrets.of(provider), now, fresh) {
            Ok(verified) => verified,
            Err(rejection) => {
                let reason = rejection.to_string();
                tracing::warn!(%webhook_id, %provider, reason = %reason, "webhook rejected");
                // A replay that fails keeps the delivery's first verdict; the
                // failure is recorded with the replay.
                if records_refusal {
                    let update = VerdictUpdate {
                        verdict: "rejected",
                        reason: Some(&reason),
                        replay_key: None,
                        payout_id: None,
                        report: None,
                    };
                    webhooks::set_verdict(pool, webhook_id, &update).await?;
                }
                return Ok(Err(Refusal::Rejected { webhook_id, reason }));
            }
        };

        // A fresh delivery and an automatic retry claim the nonce or event
        // id, but an operator's replay does not. The happy path claims it in
        // the transaction that applies the report. Every refusal before that
        // claims it on its own first, so a reused key is reported as such
        // whatever else is wrong with the delivery.
        let claim = if mode == Mode::Replay {
            None
        } else {
            verified.replay_key.as_deref()
        };

        // During maintenance a fresh delivery is verified (signature,
        // timestamp, nonce) but not applied: it stays `received`, and the
        // retry worker applies it once maintenance ends.
        if fresh && self.maintenance.is_on() {
            if let Some(refusal) = self.claim_alone(webhook_id, provider, claim).await? {
                return Ok(Err(refusal));
            }
            tracing::info!(%webhook_id, %provider, "webhook verified and kept for after maintenance");
            return Ok(Ok(Handled {
                webhook_id,
                verdict: "received".to_owned(),
                payout_id: None,
                events: Vec::new(),
                detail: Some("maintenance: stored, applied when maintenance ends".to_owned()),
            }));
        }

        let report = match adapter.parse(delivery.body) {
            Ok(report) => report,
            Err(error) => {
                if let Some(refusal) = self.claim_alone(webhook_id, provider, claim).await? {
                    return Ok(Err(refusal));
                }
                let reason = error.to_string();
                tracing::warn!(%webhook_id, %provider, reason = %reason, "webhook body is malformed");
                if records_refusal {
                    let update = VerdictUpdate {
                        verdict: "malformed",
                        reason: Some(&reason),
                        replay_key: verified.replay_key.as_deref(),
                        payout_id: None,
                        report: None,
                    };
                    webhooks::set_verdict(pool, webhook_id, &update).await?;
                }
                return Ok(Err(Refusal::Malformed { webhook_id, reason }));
            }
        };

        // A MoMo callback URL names its payout; a body that names another
        // payout is not trusted with either of them.
        let body_payout = Uuid::parse_str(&report.external_ref).ok();
        if let (Some(url_payout), Some(body_payout)) = (verified.payout_id, body_payout)
            && url_payout != body_payout
        {
            if let Some(refusal) = self.claim_alone(webhook_id, provider, claim).await? {
                return Ok(Err(refusal));
            }
            let reason = format!(
                "callback URL belongs to payout {url_payout}, but the body names {body_payout}"
            );
            tracing::warn!(%webhook_id, %provider, reason = %reason, "webhook rejected");
            if records_refusal {
                let update = VerdictUpdate {
                    verdict: "rejected",
                    reason: Some(&reason),
                    replay_key: None,
                    payout_id: Some(url_payout),
                    report: None,
                };
                webhooks::set_verdict(pool, webhook_id, &update).await?;
            }
            return Ok(Err(Refusal::Rejected { webhook_id, reason }));
        }
        let payout_id = verified.payout_id.or(body_payout);
        if let Some(payout_id) = payout_id {
            tracing::Span::current().record("payout_id", tracing::field::display(payout_id));
        }

        let confirmed = self.confirm(provider, payout_id, &report).await;
        let settlement = Settlement {
            webhook_id,
            provider,
            claim,
            payout_id,
            report: &report,
            unconfirmed: confirmed.as_ref().err().map(String::as_str),
            replay_key: verified.replay_key.as_deref(),
            metadata,
            mode,
            dry_run,
        };
        let target = target(payout_id, &report);
        let result = match &target {
            Ok((payout_id, _)) => {
                retry_on_conflict(*payout_id, || self.settle(&settlement, &target)).await?
            }
            Err(_) => self.settle(&settlement, &target).await?,
        };
        let (verdict, events, detail) = match result {
            Ok(verdict) => verdict,
            Err(refusal) => return Ok(Err(refusal)),
        };
        tracing::info!(%webhook_id, %provider, verdict = %verdict, events = ?events, "webhook processed");
        Ok(Ok(Handled {
            webhook_id,
            verdict,
            payout_id,
            events,
            detail,
        }))
    }

    /// Claims `claim`, if any, in a transaction of its own. Returns the
    /// refusal, already stored, when another delivery used the key.
    async fn claim_alone(
        &self,
        webhook_id: Uuid,
        provider: Provider,
        claim: Option<&str>,
    ) -> Result<Option<Refusal>, ApiError> {
        let Some(replay_key) = claim else {
            return Ok(None);
        };
        let pool = self.store.pool();
        if webhooks::claim_replay_key(pool, provider.name(), replay_key, webhook_id).await? {
            return Ok(None);
        }
        Ok(Some(
            self.reject_reused_key(webhook_id, provider, replay_key)
                .await?,
        ))
    }

    /// Stores the verdict of a delivery whose nonce or event id another
    /// delivery used, and returns the refusal.
    async fn reject_reused_key(
        &self,
        webhook_id: Uuid,
        provider: Provider,
        replay_key: &str,
    ) -> Result<Refusal, ApiError> {
        let reason = "nonce or webhook id was already used".to_owned();
        tracing::warn!(%webhook_id, %provider, "webhook rejected: replayed nonce or event id");
        let update = VerdictUpdate {
            verdict: "rejected",
            reason: Some(&reason),
            replay_key: Some(replay_key),
            payout_id: None,
            report: None,
        };
        webhooks::set_verdict(self.store.pool(), webhook_id, &update).await?;
        Ok(Refusal::Rejected { webhook_id, reason })
    }

    /// In one transaction: claims the delivery's nonce or event id, applies
    /// its report when it is confirmed and names a payout, and stores the
    /// verdict. A failure rolls back all three, so the delivery stays
    /// `received` for the retry worker and its key stays free. Returns the
    /// verdict, the event types written and the verdict's detail.
    async fn settle(
        &self,
        settlement: &Settlement<'_>,
        target: &Result<(Uuid, PayoutStatus), Applied>,
    ) -> Result<Result<Verdict, Refusal>, ApiError> {
        let mut unit = self.store.begin().await?;
        let decided = Self::decide_in(&mut unit, settlement, target).await;
        match decided {
            Ok(Some(verdict)) if !settlement.dry_run => {
                unit.commit().await?;
                Ok(Ok(verdict))
            }
            Ok(Some(verdict)) => {
                release(unit).await;
                Ok(Ok(verdict))
            }
            Ok(None) => {
                release(unit).await;
                let replay_key = settlement.claim.unwrap_or_default();
                let refusal = self
                    .reject_reused_key(settlement.webhook_id, settlement.provider, replay_key)
                    .await?;
                Ok(Err(refusal))
            }
            // Rolled back now, so the payout's and the wallet's locks are
            // free for the retry.
            Err(error) => {
                release(unit).await;
                Err(error)
            }
        }
    }

    /// Runs the statements of [`Self::settle`] in `unit`. Returns `None`
    /// when another delivery claimed the nonce or event id.
    async fn decide_in(
        unit: &mut UnitOfWork,
        settlement: &Settlement<'_>,
        target: &Result<(Uuid, PayoutStatus), Applied>,
    ) -> Result<Option<Verdict>, ApiError> {
        let webhook_id = settlement.webhook_id;
        if let Some(replay_key) = settlement.claim {
            let connection = unit.connection().await?;
            let provider = settlement.provider.name();
            if !webhooks::claim_replay_key(connection, provider, replay_key, webhook_id).await? {
                return Ok(None);
            }
        }

        let (verdict, events, detail) = match (settlement.unconfirmed, target) {
            (Some(detail), _) => (
                "unconfirmed".to_owned(),
                Vec::new(),
                Some(detail.to_owned()),
            ),
            (None, Err(applied)) => (applied.verdict().to_owned(), Vec::new(), describe(applied)),
            (None, Ok((payout_id, status))) => {
                let (applied, events) = apply_in(
                    unit,
                    *payout_id,
                    *status,
                    settlement.report,
                    settlement.metadata,
                )
                .await?;
                (applied.verdict().to_owned(), events, describe(&applied))
            }
        };

        // A replay that finds the report already applied keeps the
        // delivery's first verdict, so `applied` stays searchable.
        let keeps_first_verdict = settlement.mode == Mode::Replay && verdict == "duplicate";
        if !settlement.dry_run && !keeps_first_verdict {
            let update = VerdictUpdate {
                verdict: &verdict,
                reason: detail.as_deref(),
                replay_key: settlement.replay_key,
                payout_id: settlement.payout_id,
                report: serde_json::to_value(settlement.report).ok(),
            };
            webhooks::set_verdict(unit.connection().await?, webhook_id, &update).await?;
        }
        Ok(Some((verdict, events, detail)))
    }

    /// Confirms an unsigned MoMo report with MoMo's status endpoint; other
    /// providers' reports are signed and need no confirmation.
    async fn confirm(
        &self,
        provider: Provider,
        payout_id: Option<Uuid>,
        report: &Report,
    ) -> Result<(), String> {
        if provider != Provider::Momo || report.status == ReportStatus::Pending {
            return Ok(());
        }
        let Some(payout_id) = payout_id else {
            return Ok(());
        };
        match self.momo_status.transfer_status(payout_id).await {
            Ok(status) if status == report.status => Ok(()),
            Ok(status) => {
                let detail = format!(
                    "MoMo's status endpoint reports {status:?}, the callback reported {:?}",
                    report.status
                );
                tracing::warn!(%payout_id, detail = %detail, "MoMo callback not confirmed");
                Err(detail)
            }
            Err(error) => {
                tracing::warn!(%payout_id, error = %error, "MoMo status lookup failed; callback kept for replay");
                Err(format!("status lookup failed: {error}"))
            }
        }
    }

    /// Re-applies a stored delivery: the signature is checked again against
    /// the stored bytes and headers, but not the timestamp or the nonce. The
    /// replay is recorded with its actor and reason.
    pub async fn replay(
        &self,
        webhook_id: Uuid,
        actor: Actor,
        replay_reason: &str,
        dry_run: bool,
    ) -> Result<Option<Result<Handled, Refusal>>, ApiError> {
        let Some(row) = webhooks::find(self.store.pool(), webhook_id).await? else {
            return Ok(None);
        };
        let provider: Provider = row.provider.parse().map_err(|_| {
            ApiError::Internal(format!(
                "delivery {webhook_id} has unknown provider {}",
                row.provider
            ))
        })?;
        let Some(body) = row.body.as_deref() else {
            let reason = "the delivery was oversized and its body was not stored".to_owned();
            let metadata = replay_metadata(webhook_id, &actor, replay_reason);
            crate::commands::replays::record(
                &self.store,
                provider.name(),
                &webhooks::NewReplay {
                    webhook_id,
                    actor: &actor.subject,
                    reason: replay_reason,
                    dry_run,
                    verdict: "malformed",
                    detail: Some(&reason),
                },
                &metadata,
            )
            .await?;
            return Ok(Some(Err(Refusal::Malformed { webhook_id, reason })));
        };
        let (headers, path_token) = stored_request(&row);
        let delivery = Delivery {
            headers: &headers,
            body,
            path_token: path_token.as_deref(),
        };
        let metadata = replay_metadata(webhook_id, &actor, replay_reason);
        tracing::info!(%webhook_id, actor = %actor.subject, dry_run, "replaying webhook");
        let outcome = self
            .process(
                webhook_id,
                provider,
                &delivery,
                Mode::Replay,
                &metadata,
                dry_run,
            )
            .await?;

        let (verdict, detail) = match &outcome {
            Ok(handled) => (handled.verdict.clone(), handled.detail.clone()),
            Err(Refusal::Rejected { reason, .. }) => ("rejected".to_owned(), Some(reason.clone())),
            Err(Refusal::Malformed { reason, .. }) => {
                ("malformed".to_owned(), Some(reason.clone()))
            }
        };
        crate::commands::replays::record(
            &self.store,
            provider.name(),
            &webhooks::NewReplay {
                webhook_id,
                actor: &actor.subject,
                reason: replay_reason,
                dry_run,
                verdict: &verdict,
                detail: detail.as_deref(),
            },
            &metadata,
        )
        .await?;
        Ok(Some(outcome))
    }
}

/// Metadata of the events an operator's replay writes.
fn replay_metadata(webhook_id: Uuid, actor: &Actor, reason: &str) -> EventMetadata {
    EventMetadata {
        request_id: crate::request_id::current(),
        actor: Some(actor.clone()),
        source: Source::Replay,
        idempotency_key: None,
        webhook_id: Some(webhook_id.to_string()),
        reason: Some(reason.to_owned()),
        recorded_at: Utc::now().trunc_subsecs(6),
    }
}

impl Intake {
    /// Processes a stored delivery again after a transient failure (a
    /// database error, an unconfirmed MoMo report, a payout not yet visible)
    /// and stores the new verdict. Returns the verdict and its detail.
    pub async fn retry(
        &self,
        webhook_id: Uuid,
        attempt: i32,
    ) -> Result<(String, Option<String>), ApiError> {
        let Some(row) = webhooks::find(self.store.pool(), webhook_id).await? else {
            return Err(ApiError::Internal(format!(
                "delivery {webhook_id} disappeared"
            )));
        };
        let provider: Provider = row.provider.parse().map_err(|_| {
            ApiError::Internal(format!(
                "delivery {webhook_id} has unknown provider {}",
                row.provider
            ))
        })?;
        let Some(body) = row.body.as_deref() else {
            return Ok((
                "malformed".to_owned(),
                Some("no body was stored".to_owned()),
            ));
        };
        let (headers, path_token) = stored_request(&row);
        let delivery = Delivery {
            headers: &headers,
            body,
            path_token: path_token.as_deref(),
        };
        let metadata = EventMetadata {
            request_id: None,
            actor: Some(Actor {
                subject: format!("provider:{provider}"),
                role: "provider".to_owned(),
            }),
            source: Source::Webhook,
            idempotency_key: None,
            webhook_id: Some(webhook_id.to_string()),
            reason: Some(format!("automatic retry {attempt}")),
            recorded_at: Utc::now().trunc_subsecs(6),
        };
        let outcome = self
            .process(
                webhook_id,
                provider,
                &delivery,
                Mode::Retry,
                &metadata,
                false,
            )
            .await?;
        Ok(match outcome {
            Ok(handled) => (handled.verdict, handled.detail),
            Err(Refusal::Rejected { reason, .. }) => ("rejected".to_owned(), Some(reason)),
            Err(Refusal::Malformed { reason, .. }) => ("malformed".to_owned(), Some(reason)),
        })
    }
}

/// The stored headers of a delivery and its MoMo callback token, if any.
fn stored_request(row: &webhooks::DeliveryRow) -> (Vec<(String, String)>, Option<String>) {
    (row.header_pairs(), momo_token_from_path(&row.path))
}

/// A delivery's verdict, the event types its report wrote and the
/// verdict's detail.
type Verdict = (String, Vec<String>, Option<String>);

/// A verified and parsed delivery, ready for [`Intake::settle`].
struct Settlement<'a> {
    webhook_id: Uuid,
    provider: Provider,
    /// The nonce or event id to claim, if this mode claims one.
    claim: Option<&'a str>,
    payout_id: Option<Uuid>,
    report: &'a Report,
    /// The reason MoMo's status endpoint did not confirm the report, if it
    /// did not.
    unconfirmed: Option<&'a str>,
    /// The nonce or event id stored with the verdict.
    replay_key: Option<&'a str>,
    metadata: &'a EventMetadata,
    mode: Mode,
    dry_run: bool,
}

/// Processing mode of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Just arrived: timestamp and nonce are checked, every verdict stored.
    Fresh,
    /// An operator's replay: the signature is checked but not the timestamp
    /// or the nonce; a refusal or a duplicate leaves the stored verdict alone.
    Replay,
    /// An automatic retry of a delivery that could not be applied: like a
    /// replay, but every verdict is stored.
    Retry,
}

/// The callback token of a stored MoMo path `/v1/webhooks/momo/{token}`.
pub fn momo_token_from_path(path: &str) -> Option<String> {
    path.strip_prefix("/v1/webhooks/momo/")
        .filter(|token| !token.is_empty() && !token.contains('/'))
        .map(str::to_owned)
}

fn describe(applied: &Applied) -> Option<String> {
    match applied {
        Applied::Changed(status) => Some(format!("payout is now {}", status.as_str())),
        Applied::Unchanged(status) => Some(format!("payout was already {}", status.as_str())),
        Applied::StillPending => Some("provider reports the payout in progress".to_owned()),
        Applied::Orphan => {
            Some("no payout has this reference yet; replay once it exists".to_owned())
        }
        Applied::Conflict => {
            Some("amount or currency differ from the payout; recorded as a conflict".to_owned())
        }
        Applied::TransitionRejected { from, to } => Some(format!(
            "a {} payout cannot become {}; recorded, not applied",
            from.as_str(),
            to.as_str()
        )),
    }
}

/// Builds the JSON response body for a handled delivery.
pub fn handled_json(handled: &Handled) -> Value {
    serde_json::json!({
        "webhook_id": handled.webhook_id,
        "verdict": handled.verdict,
        "payout_id": handled.payout_id,
        "events": handled.events,
        "detail": handled.detail,
    })
}
