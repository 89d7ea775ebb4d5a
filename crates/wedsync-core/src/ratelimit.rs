//! Token buckets, keyed by anything (a source, an endpoint, a recipient, an organisation and
//! a channel).
//!
//! The bucket is pure arithmetic on integer micro-tokens (no floating-point drift), so the
//! in-memory limiter here and the database-backed one in the store (for limits that must hold
//! across nodes) share exactly the same behaviour. We keep our own rather than `governor`
//! because the same bucket must also live in a database row and follow the injected clock.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::SharedClock;

const MICRO: i128 = 1_000_000;

/// A limit: `capacity` tokens, refilled evenly over `per` (e.g. 100 a minute). The bucket
/// holds at most `capacity`, so bursts are bounded by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens in a full bucket, and tokens refilled per `per`.
    pub capacity: u32,
    /// The refill period.
    pub per: TimeDelta,
}

impl Rate {
    /// `capacity` per minute.
    pub fn per_minute(capacity: u32) -> Self {
        Self {
            capacity,
            per: TimeDelta::minutes(1),
        }
    }

    /// This rate scaled by `factor` (e.g. the peak-season multiple), at least one token.
    pub fn scaled(&self, factor: f64) -> Self {
        let capacity = (f64::from(self.capacity) * factor)
            .round()
            .clamp(1.0, f64::from(u32::MAX)) as u32;
        Self {
            capacity,
            per: self.per,
        }
    }
}

/// One bucket's state, kept in the time domain: the instant at which the bucket was (or will
/// be) empty if nothing refilled it since. Tokens available at `now` follow from it exactly
/// (`(now - empty_at) × capacity / per`, at most `capacity`), so looking at a bucket never
/// changes it and frequent checks lose nothing to rounding; only a take rounds, by at most a
/// microsecond, in the limiting direction. This is the GCRA formulation of a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// When the bucket would be empty.
    pub empty_at: DateTime<Utc>,
}

fn per_us(rate: &Rate) -> i128 {
    i128::from(rate.per.num_microseconds().unwrap_or(i64::MAX).max(1))
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: &Rate, now: DateTime<Utc>) -> Self {
        Self {
            empty_at: now - rate.per,
        }
    }

    /// Tokens available at `now`, in millionths.
    pub fn available_micro(&self, rate: &Rate, now: DateTime<Utc>) -> i64 {
        let cap = i128::from(rate.capacity) * MICRO;
        let since = i128::from(
            (now - self.empty_at)
                .num_microseconds()
                .unwrap_or(i64::MAX)
                .max(0),
        );
        (since * cap / per_us(rate)).min(cap) as i64
    }

    /// Takes `n` tokens if available; otherwise says how long until they will be.
    pub fn take(&mut self, rate: &Rate, now: DateTime<Utc>, n: u32) -> Result<(), TimeDelta> {
        if n > rate.capacity {
            // Can never be satisfied; say so with the longest sensible wait.
            return Err(rate.per);
        }
        // A bucket cannot hold more than `capacity`: an older empty_at counts as full.
        let empty_at = self.empty_at.max(now - rate.per);
        // The time n tokens take to refill, rounded up so grants never exceed the rate.
        let cost_us = (i128::from(n) * per_us(rate) + i128::from(rate.capacity) - 1)
            / i128::from(rate.capacity.max(1));
        let cost = TimeDelta::microseconds(cost_us.min(i128::from(i64::MAX)) as i64);
        let accrued = now - empty_at;
        if accrued >= cost {
            self.empty_at = empty_at + cost;
            Ok(())
        } else {
            Err(cost - accrued)
        }
    }

    /// Whether the bucket is full at `now` (a full bucket can be forgotten).
    pub fn is_full_at(&self, rate: &Rate, now: DateTime<Utc>) -> bool {
        now - self.empty_at >= rate.per
    }
}

/// An in-memory, per-node limiter over many keys; for hot paths where a limit per node is
/// acceptable (it costs no database round trip).
#[derive(Debug)]
pub struct KeyedLimiter {
    clock: SharedClock,
    buckets: Mutex<HashMap<String, TokenBucket>>,
    /// Past this many keys, full buckets are dropped (they carry no information).
    max_keys: usize,
}

impl KeyedLimiter {
    /// A limiter on `clock` that keeps up to about `max_keys` buckets.
    pub fn new(clock: SharedClock, max_keys: usize) -> Self {
        Self {
            clock,
            buckets: Mutex::new(HashMap::new()),
            max_keys,
        }
    }

    /// Takes `n` tokens from `key`'s bucket, or returns how long to wait.
    pub fn check(&self, key: &str, rate: &Rate, n: u32) -> Result<(), TimeDelta> {
        let now = self.clock.now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= self.max_keys && !buckets.contains_key(key) {
            buckets.retain(|_, b| !b.is_full_at(rate, now));
        }
        buckets
            .entry(key.to_owned())
            .or_insert_with(|| TokenBucket::full(rate, now))
            .take(rate, now, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 13, 12, 0, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn a_hundred_a_minute() {
        let rate = Rate::per_minute(100);
        let mut b = TokenBucket::full(&rate, t0());
        for _ in 0..100 {
            b.take(&rate, t0(), 1).expect("within burst");
        }
        assert_eq!(b.take(&rate, t0(), 1), Err(TimeDelta::milliseconds(600)));
        assert!(
            b.take(&rate, t0() + TimeDelta::milliseconds(599), 1)
                .is_err()
        );
        b.take(&rate, t0() + TimeDelta::milliseconds(600), 1)
            .expect("refilled");
    }

    #[test]
    fn keyed_limiter_separates_keys_and_follows_the_clock() {
        let clock = crate::clock::ManualClock::new(t0());
        let limiter = KeyedLimiter::new(std::sync::Arc::new(clock.clone()), 1000);
        let rate = Rate::per_minute(2);
        limiter.check("src_a", &rate, 1).expect("1");
        limiter.check("src_a", &rate, 1).expect("2");
        assert!(limiter.check("src_a", &rate, 1).is_err());
        limiter.check("src_b", &rate, 1).expect("other key");
        clock.advance(TimeDelta::seconds(30));
        limiter.check("src_a", &rate, 1).expect("refilled one");
    }

    #[test]
    fn scaling_for_peak_season() {
        assert_eq!(Rate::per_minute(100).scaled(3.0).capacity, 300);
        assert_eq!(Rate::per_minute(1).scaled(0.1).capacity, 1);
    }

    proptest! {
        /// Over any run of requests, no more is granted than a full bucket plus what the
        /// elapsed time refills.
        #[test]
        fn never_grants_more_than_the_rate(
            capacity in 1u32..500,
            per_ms in 1i64..120_000,
            steps in proptest::collection::vec((0i64..5_000, 1u32..10), 1..200),
        ) {
            let rate = Rate { capacity, per: TimeDelta::milliseconds(per_ms) };
            let mut b = TokenBucket::full(&rate, t0());
            let mut now = t0();
            let mut granted: u64 = 0;
            for (advance_ms, n) in steps {
                now += TimeDelta::milliseconds(advance_ms);
                if b.take(&rate, now, n).is_ok() {
                    granted += u64::from(n);
                }
                prop_assert!(b.available_micro(&rate, now) <= i64::from(capacity) * 1_000_000);
            }
            let elapsed_ms = (now - t0()).num_milliseconds() as u128;
            let refill = u128::from(capacity) * elapsed_ms / per_ms as u128;
            prop_assert!(u128::from(granted) <= u128::from(capacity) + refill);
        }

        /// Waiting exactly the advised time is always enough.
        #[test]
        fn retry_after_is_sufficient(
            capacity in 1u32..500,
            per_ms in 1i64..120_000,
            drain in 0u32..500,
            n in 1u32..50,
        ) {
            let rate = Rate { capacity, per: TimeDelta::milliseconds(per_ms) };
            let n = n.min(capacity);
            let mut b = TokenBucket::full(&rate, t0());
            let _ = b.take(&rate, t0(), drain.min(capacity));
            if let Err(wait) = b.take(&rate, t0(), n) {
                prop_assert!(wait > TimeDelta::zero());
                prop_assert!(b.take(&rate, t0() + wait, n).is_ok());
            }
        }

        /// A client taking one token whenever it can, checking every millisecond, gets the
        /// burst plus the rate: checking often neither slows nor speeds the refill. (Each
        /// take rounds its cost up by under a microsecond, so the count is taken a
        /// millisecond after the last period ends.)
        #[test]
        fn steady_drain_matches_the_rate(capacity in 1u32..200, periods in 1i64..4) {
            let rate = Rate { capacity, per: TimeDelta::seconds(1) };
            let mut b = TokenBucket::full(&rate, t0());
            let mut granted = 0i64;
            for ms in 0..=(periods * 1000 + 1) {
                while b.take(&rate, t0() + TimeDelta::milliseconds(ms), 1).is_ok() {
                    granted += 1;
                }
            }
            prop_assert_eq!(granted, i64::from(capacity) * (periods + 1));
        }
    }
}
