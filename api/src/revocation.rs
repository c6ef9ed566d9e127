//! The revocation check that every authenticated request passes, with a
//! short in-memory cache in front of the `access_tokens` table.
//!
//! A cached result is trusted for [`CACHE_TTL`], so a token revoked through
//! another instance can still pass on this one for at most that long. The
//! instance that revokes a token marks it in its own cache at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::store::StoreError;
use crate::store::tokens;

/// How long a cached result is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Token ids kept in the cache. When it is full, expired entries are dropped
/// first, then the whole cache.
const CACHE_CAPACITY: usize = 10_000;

#[derive(Clone)]
pub struct Revocations {
    cache: Arc<Mutex<Cache>>,
    ttl: Duration,
    capacity: usize,
}

struct Cache {
    /// Token id to (revoked, checked at).
    entries: HashMap<String, (bool, Instant)>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations::new(CACHE_TTL, CACHE_CAPACITY)
    }
}

impl Revocations {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Revocations {
            cache: Arc::new(Mutex::new(Cache {
                entries: HashMap::new(),
            })),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Returns whether the access token `jti` is revoked. A token id that
    /// this service never recorded (a token from before refresh tokens
    /// existed) counts as not revoked, because its signature and lifetime
    /// were already checked.
    pub async fn is_revoked(&self, pool: &PgPool, jti: &str) -> Result<bool, StoreError> {
        if let Some(revoked) = self.cached(jti) {
            metrics::counter!("auth_revocation_checks_total", "source" => "cache").increment(1);
            return Ok(revoked);
        }
        metrics::counter!("auth_revocation_checks_total", "source" => "database").increment(1);
        let revoked = tokens::access_token_revoked(pool, jti).await?;
        self.remember(jti, revoked);
        Ok(revoked)
    }

    /// Marks tokens revoked in this instance's cache, right after the
    /// revocation committed.
    pub fn mark_revoked(&self, jtis: &[String]) {
        for jti in jtis {
            self.remember(jti, true);
        }
    }

    fn cached(&self, jti: &str) -> Option<bool> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        cache
            .entries
            .get(jti)
            .filter(|(_, checked_at)| checked_at.elapsed() < self.ttl)
            .map(|(revoked, _)| *revoked)
    }

    fn remember(&self, jti: &str, revoked: bool) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if cache.entries.len() >= self.capacity && !cache.entries.contains_key(jti) {
            let ttl = self.ttl;
            cache
                .entries
                .retain(|_, (_, checked_at)| checked_at.elapsed() < ttl);
            if cache.entries.len() >= self.capacity {
                cache.entries.clear();
            }
        }
        cache
            .entries
            .insert(jti.to_owned(), (revoked, Instant::now()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_never_exceeds_capacity() {
        let revocations = Revocations::new(Duration::from_secs(60), 3);
        for index in 0..10 {
            revocations.remember(&format!("jti-{index}"), false);
            assert!(
                revocations.len() <= 3,
                "after {index}: {}",
                revocations.len()
            );
        }
        assert_eq!(revocations.cached("jti-9"), Some(false));
    }

    #[test]
    fn marked_token_is_revoked_in_cache() {
        let revocations = Revocations::new(Duration::from_secs(60), 10);
        revocations.remember("jti-1", false);
        revocations.mark_revoked(&["jti-1".to_owned()]);
        assert_eq!(revocations.cached("jti-1"), Some(true));
    }

    #[test]
    fn expired_entry_is_not_used() {
        let revocations = Revocations::new(Duration::ZERO, 10);
        revocations.remember("jti-1", true);
        assert_eq!(revocations.cached("jti-1"), None);
    }
}
