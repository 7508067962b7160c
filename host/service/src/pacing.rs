//! Reconciliation's pace: a budget of status calls per account, well under the account's
//! `rate_limit_per_minute`, so that a backlog (the first pass after a crash may find hundreds
//! of entries) never spends the budget the foreground's commands need.
//!
//! Reconciliation may spend a quarter of an account's rate limit ([`RECONCILE_SHARE`]), with a
//! burst of a quarter of that (fifteen seconds' worth): a handful of entries is reconciled at
//! once, a backlog at a steady trickle. Status calls still pass through the account's own rate
//! and concurrency limits like any request; this budget only keeps reconciliation from taking
//! more than its share of them. Each host paces its own passes; with several hosts the claims
//! split the backlog between them, so the fleet spends at most a quarter per live host.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The part of an account's `rate_limit_per_minute` reconciliation may spend.
pub const RECONCILE_SHARE: u32 = 4;

/// Per-account token buckets for reconciliation's status calls.
#[derive(Default)]
pub struct ReconcilePacer {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

/// A token bucket that may run into debt: each reservation takes a token now and waits for as
/// long as the debt takes to refill, so concurrent callers queue in order.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refreshed: Instant,
}

/// What reconciliation may spend on one account, from its rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub per_second: f64,
    pub burst: f64,
}

impl Budget {
    /// A quarter of `rate_limit_per_minute` (at least one call a minute), a burst of a quarter
    /// of that (at least one call).
    pub fn for_rate_limit(rate_limit_per_minute: u32) -> Self {
        let per_minute = f64::from((rate_limit_per_minute / RECONCILE_SHARE).max(1));
        Self {
            per_second: per_minute / 60.0,
            burst: (per_minute / 4.0).floor().max(1.0),
        }
    }
}

impl ReconcilePacer {
    /// Takes one status call of `provider`/`account` from its budget at `now`, and says how
    /// long to wait before making it.
    pub fn reserve(&self, provider: &str, account: &str, budget: Budget, now: Instant) -> Duration {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets
            .entry((provider.to_string(), account.to_string()))
            .or_insert(Bucket {
                tokens: budget.burst,
                refreshed: now,
            });
        let elapsed = now
            .saturating_duration_since(bucket.refreshed)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * budget.per_second).min(budget.burst);
        bucket.refreshed = now;
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / budget.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_quarter_of_the_rate_limit_with_a_quarter_of_that_as_burst() {
        let budget = Budget::for_rate_limit(600);
        assert_eq!(budget.burst, 37.0);
        assert!((budget.per_second - 2.5).abs() < 1e-9);
        // A tiny limit still lets one call through.
        let tiny = Budget::for_rate_limit(1);
        assert_eq!(tiny.burst, 1.0);
        assert!((tiny.per_second - 1.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn a_backlog_is_spread_at_the_budgets_rate_after_the_burst() {
        let pacer = ReconcilePacer::default();
        let budget = Budget::for_rate_limit(240); // 60 a minute, burst 15
        let start = Instant::now();
        let waits: Vec<Duration> = (0..20)
            .map(|_| pacer.reserve("paygateglobal", "main", budget, start))
            .collect();
        assert!(waits[..15].iter().all(|wait| wait.is_zero()), "{waits:?}");
        // The 16th waits one second (one call a second), the 20th five.
        assert_eq!(waits[15], Duration::from_secs(1));
        assert_eq!(waits[19], Duration::from_secs(5));
        // Another account has a budget of its own.
        assert!(
            pacer
                .reserve("paygateglobal", "other", budget, start)
                .is_zero()
        );
        // Time refills the bucket: ten seconds later the debt of five is paid and five are free.
        let later = start + Duration::from_secs(10);
        let waits: Vec<Duration> = (0..6)
            .map(|_| pacer.reserve("paygateglobal", "main", budget, later))
            .collect();
        assert!(waits[..5].iter().all(|wait| wait.is_zero()), "{waits:?}");
        assert_eq!(waits[5], Duration::from_secs(1));
    }
}
