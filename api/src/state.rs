//! State shared by every request handler.

use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::Tokens;
use crate::config::Config;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub store: Store,
    pub tokens: Tokens,
}

impl AppState {
    pub fn new(config: Config, pool: PgPool) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(AppState {
            tokens: Tokens::new(config.jwt.clone())?,
            store: Store::new(pool.clone()),
            config: Arc::new(config),
            pool,
        })
    }
}
