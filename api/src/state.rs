//! State shared by every request handler.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;

use crate::auth::Tokens;
use crate::commands::payouts::PayoutBatcher;
use crate::config::Config;
use crate::controls::maintenance::MaintenanceSwitch;
use crate::controls::rate_limit::RateLimits;
use crate::dispatch::ProviderSwitches;
use crate::providers::momo::MomoClient;
use crate::revocation::Revocations;
use crate::store::Store;
use crate::webhooks::confirm::{NotConfigured, ProviderLookup, TransferStatusLookup};
use crate::webhooks::intake::Intake;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub store: Store,
    pub tokens: Tokens,
    /// Revocation check of access tokens, with its in-memory cache.
    pub revocations: Revocations,
    pub intake: Intake,
    pub switches: ProviderSwitches,
    /// Payout queues per wallet, which run queued payouts in batches.
    pub payouts: PayoutBatcher,
    /// Wakes the in-process dispatcher when a payout is accepted.
    pub dispatch_wake: Arc<Notify>,
    /// Lag of the catch-up projector in seconds, reported by /health.
    pub projection_lag_seconds: Arc<std::sync::atomic::AtomicI64>,
    /// Maintenance mode, shared with `intake`; starts from MAINTENANCE_MODE.
    pub maintenance: MaintenanceSwitch,
    /// Request counts of the rate limits, kept for the life of the process.
    pub rate_limits: Arc<RateLimits>,
}

impl AppState {
    pub fn new(config: Config, pool: PgPool) -> Result<Self, jsonwebtoken::errors::Error> {
        let store = Store::new(pool.clone());
        // MoMo callbacks are confirmed with the MoMo adapter when MoMo is
        // configured; otherwise they wait, unconfirmed, for a replay.
        let momo_status: Arc<dyn TransferStatusLookup> = match &config.providers.momo {
            Some(momo) => {
                match crate::providers::http_client_with_timeout(config.providers.request_timeout) {
                    Ok(http) => Arc::new(ProviderLookup(Arc::new(MomoClient::with_client(
                        momo.clone(),
                        http,
                    )))),
                    Err(error) => {
                        tracing::error!(error = %error, "could not build the MoMo HTTP client; callbacks wait for a replay");
                        Arc::new(NotConfigured)
                    }
                }
            }
            None => Arc::new(NotConfigured),
        };
        let maintenance = MaintenanceSwitch::new(config.controls.maintenance_mode);
        let switches = ProviderSwitches::new(config.providers.disabled.clone());
        Ok(AppState {
            tokens: Tokens::new(config.jwt.clone())?,
            revocations: Revocations::default(),
            intake: Intake {
                store: store.clone(),
                secrets: config.webhook_secrets.clone(),
                momo_status,
                maintenance: maintenance.clone(),
            },
            maintenance,
            rate_limits: Arc::new(RateLimits::new(&config.rate_limits)),
            payouts: PayoutBatcher::new(store.clone(), switches.clone()),
            store,
            switches,
            dispatch_wake: Arc::new(Notify::new()),
            projection_lag_seconds: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            config: Arc::new(config),
            pool,
        })
    }

    /// The dispatcher for this state's database, providers and switches.
    pub fn dispatcher(&self, settings: crate::dispatch::Settings) -> crate::dispatch::Dispatcher {
        crate::dispatch::Dispatcher {
            store: self.store.clone(),
            providers: crate::providers::build(&self.config.providers),
            switches: self.switches.clone(),
            callback_secret: self.config.webhook_secrets.momo.current.clone(),
            settings,
            wake: Arc::clone(&self.dispatch_wake),
        }
    }

    /// Replaces the MTN MoMo status lookup, e.g. with a test double.
    pub fn with_momo_status(mut self, lookup: Arc<dyn TransferStatusLookup>) -> Self {
        self.intake.momo_status = lookup;
        self
    }
}
