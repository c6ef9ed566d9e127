//! State shared by every request handler.

use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::Tokens;
use crate::config::Config;
use crate::store::Store;
use crate::webhooks::confirm::{NotConfigured, TransferStatusLookup};
use crate::webhooks::intake::Intake;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub store: Store,
    pub tokens: Tokens,
    pub intake: Intake,
}

impl AppState {
    pub fn new(config: Config, pool: PgPool) -> Result<Self, jsonwebtoken::errors::Error> {
        let store = Store::new(pool.clone());
        Ok(AppState {
            tokens: Tokens::new(config.jwt.clone())?,
            intake: Intake {
                store: store.clone(),
                secrets: config.webhook_secrets.clone(),
                momo_status: Arc::new(NotConfigured),
            },
            store,
            config: Arc::new(config),
            pool,
        })
    }

    /// Replaces the MTN MoMo status lookup, e.g. with a test double.
    pub fn with_momo_status(mut self, lookup: Arc<dyn TransferStatusLookup>) -> Self {
        self.intake.momo_status = lookup;
        self
    }
}
