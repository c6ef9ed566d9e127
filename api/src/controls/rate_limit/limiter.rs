//! One keyed limit: the `governor` crate's GCRA limiter with a bucket per
//! key, and the numbers that the RateLimit headers report.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Size of a limit: a bucket of `burst` requests that refills at
/// `per_minute` requests per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl LimitSpec {
    fn quota(self) -> Quota {
        Quota::per_minute(self.per_minute).allow_burst(self.burst)
    }
}

/// A key's bucket right after a request, as the RateLimit headers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// Size of a full bucket, in requests (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests that may still be sent at once (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds, rounded up, until the bucket is full again
    /// (`RateLimit-Reset`).
    pub reset_seconds: u64,
}

impl BucketState {
    /// Returns whichever of two buckets is closer to running out: fewer
    /// remaining requests, then the longer reset.
    pub fn tighter(self, other: BucketState) -> BucketState {
        let other_is_tighter = other.remaining < self.remaining
            || (other.remaining == self.remaining && other.reset_seconds > self.reset_seconds);
        if other_is_tighter { other } else { self }
    }
}

/// A request over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub bucket: BucketState,
    /// Seconds, rounded up and at least 1, until the key may send one more
    /// request (`Retry-After`).
    pub retry_after_seconds: u64,
}

/// A limit with one bucket per key. Keys are added on first use and removed
/// by [`KeyedLimit::sweep`] once their bucket is full again.
pub struct KeyedLimit<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    spec: LimitSpec,
    limiter: RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    pub fn new(spec: LimitSpec) -> Self {
        KeyedLimit::with_clock(spec, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedLimit<K, C> {
    pub fn with_clock(spec: LimitSpec, clock: C) -> Self {
        let limiter = RateLimiter::dashmap_with_clock(spec.quota(), clock)
            .with_middleware::<StateInformationMiddleware>();
        KeyedLimit { spec, limiter }
    }

    pub fn spec(&self) -> LimitSpec {
        self.spec
    }

    /// Counts one request of `key`, or rejects it when its bucket is empty.
    pub fn check(&self, key: &K) -> Result<BucketState, Exceeded> {
        let limit = self.spec.burst.get();
        let refill_interval = self.spec.quota().replenish_interval();
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                // The bucket lacks `limit - remaining` requests; the one being
                // refilled may be partly done, so this rounds up by at most
                // one refill interval.
                let until_full = refill_interval * (limit - remaining);
                Ok(BucketState {
                    limit,
                    remaining,
                    reset_seconds: whole_seconds_up(until_full),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                // After the next request is allowed, the other `limit - 1`
                // refill one interval each.
                let until_full = wait + refill_interval * (limit - 1);
                Err(Exceeded {
                    bucket: BucketState {
                        limit,
                        remaining: 0,
                        reset_seconds: whole_seconds_up(until_full),
                    },
                    retry_after_seconds: whole_seconds_up(wait).max(1),
                })
            }
        }
    }

    /// Removes the keys whose bucket has been full for at least one refill
    /// interval, which behave exactly like keys never seen, and returns how
    /// many keys remain.
    pub fn sweep(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }

    pub fn tracked_keys(&self) -> usize {
        self.limiter.len()
    }
}

fn whole_seconds_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn spec(per_minute: u32, burst: u32) -> LimitSpec {
        LimitSpec {
            per_minute: NonZeroU32::new(per_minute).expect("nonzero"),
            burst: NonZeroU32::new(burst).expect("nonzero"),
        }
    }

    #[test]
    fn burst_then_rejection_with_retry_after() {
        let clock = FakeRelativeClock::default();
        // 6 per minute: one request refills every 10 s.
        let limit = KeyedLimit::with_clock(spec(6, 3), clock.clone());

        let first = limit.check(&"a").expect("first request");
        assert_eq!(first.limit, 3);
        assert_eq!(first.remaining, 2);
        assert_eq!(first.reset_seconds, 10);
        let second = limit.check(&"a").expect("second request");
        assert_eq!(second.remaining, 1);
        assert_eq!(second.reset_seconds, 20);
        let third = limit.check(&"a").expect("third request");
        assert_eq!(third.remaining, 0);
        assert_eq!(third.reset_seconds, 30);

        let exceeded = limit.check(&"a").expect_err("fourth request");
        assert_eq!(exceeded.retry_after_seconds, 10);
        assert_eq!(exceeded.bucket.remaining, 0);
        assert_eq!(exceeded.bucket.limit, 3);
        assert_eq!(exceeded.bucket.reset_seconds, 30);

        clock.advance(Duration::from_millis(2_500));
        let later = limit.check(&"a").expect_err("still empty");
        assert_eq!(later.retry_after_seconds, 8, "7.5 s rounds up");

        clock.advance(Duration::from_millis(7_500));
        let refilled = limit.check(&"a").expect("one request refilled");
        assert_eq!(refilled.remaining, 0);
    }

    #[test]
    fn keys_have_separate_buckets() {
        let limit = KeyedLimit::with_clock(spec(60, 1), FakeRelativeClock::default());
        limit.check(&"a").expect("a's first request");
        limit.check(&"a").expect_err("a is over its limit");
        limit.check(&"b").expect("b is not throttled by a");
    }

    #[test]
    fn sweep_removes_only_full_buckets() {
        let clock = FakeRelativeClock::default();
        // One request refills per second into a bucket of 3.
        let limit = KeyedLimit::with_clock(spec(60, 3), clock.clone());
        for key in 0..1_000_u32 {
            limit.check(&key).expect("first request of each key");
        }
        assert_eq!(limit.tracked_keys(), 1_000);

        // 2.5 s later those buckets have been full for over a second; a busy
        // key then empties its own.
        clock.advance(Duration::from_millis(2_500));
        for _ in 0..3 {
            limit.check(&5_000).expect("busy key within its burst");
        }
        assert_eq!(limit.sweep(), 1);

        limit
            .check(&5_000)
            .expect_err("busy key keeps its empty bucket");
        let swept = limit.check(&7).expect("swept key starts full");
        assert_eq!(swept.remaining, 2);
    }

    #[test]
    fn tighter_bucket_is_chosen() {
        let roomy = BucketState {
            limit: 10,
            remaining: 9,
            reset_seconds: 6,
        };
        let tight = BucketState {
            limit: 3,
            remaining: 1,
            reset_seconds: 40,
        };
        assert_eq!(roomy.tighter(tight), tight);
        assert_eq!(tight.tighter(roomy), tight);
        let same_remaining = BucketState {
            reset_seconds: 50,
            ..tight
        };
        assert_eq!(tight.tighter(same_remaining), same_remaining);
    }
}
