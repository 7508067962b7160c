//! Per-account runtime state: the rate limiter, the concurrency limit, and the pause that keeps
//! the host from walking into a provider's lockout.
//!
//! On a shared ledger this is the host's copy of what the fleet agreed (`fleet.rs` keeps it
//! current); the rate limit and concurrency are this host's share of the account's
//! (`fleet_share.rs`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gatehouse_ledger::coordination::SharedPause;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// A rate limiter on `std::time::Instant`. Governor's default clock (quanta) calibrates the TSC
/// on first use, for a time-dependent number of instructions: it made the callgrind counts of
/// the benchmark vary by tens of thousands per request between runs, for a clock read a
/// callback confirmation pays once.
type DirectRateLimiter =
    RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::AccountPolicy;
use crate::fleet_share::{ConcurrencyShare, ConcurrencySlot, RateShare};

/// Why and until when an account is paused.
#[derive(Debug, Clone, Serialize)]
pub struct Pause {
    pub reason: String,
    pub until_unix: u64,
    #[serde(skip)]
    until: Instant,
    /// When this host learnt of it: a refresh read before then cannot lift it.
    #[serde(skip)]
    set_at: Instant,
}

pub struct AccountRuntime {
    /// Changes when the policy or the credentials change; a new fingerprint gets a fresh runtime,
    /// which also lifts a pause (an operator who fixed the credentials expects traffic to resume).
    fingerprint: String,
    pub policy: AccountPolicy,
    limiter: RateShare,
    concurrency: ConcurrencyShare,
    /// The budget of requests confirming unsigned callbacks, apart from the commands' (anyone
    /// can POST a callback; the merchant's rate limit must not be theirs to spend).
    confirmation_limiter: DirectRateLimiter,
    pub confirmations: Semaphore,
    pause: Mutex<Option<Pause>>,
    /// Whether the current credentials have been accepted by the provider at least once.
    credentials_proven: std::sync::atomic::AtomicBool,
    /// Held by the one flow allowed to run while the credentials are unproven: providers lock
    /// accounts after a few failed logins, so with credentials that may be wrong, requests go
    /// one at a time and the first refusal pauses all the others before they are sent.
    probe: tokio::sync::Mutex<()>,
}

impl AccountRuntime {
    fn new(fingerprint: String, policy: AccountPolicy, live_hosts: u32) -> Self {
        let per_minute = NonZeroU32::new(policy.rate_limit_per_minute).unwrap_or(NonZeroU32::MIN);
        let confirmations_per_minute =
            NonZeroU32::new(policy.webhook_confirmations_per_minute).unwrap_or(NonZeroU32::MIN);
        // No burst beyond the concurrency: a flood spends the budget at its steady rate.
        let confirmation_burst = NonZeroU32::new(
            u32::try_from(policy.webhook_confirmations_max_concurrency)
                .unwrap_or(u32::MAX)
                .min(confirmations_per_minute.get()),
        )
        .unwrap_or(NonZeroU32::MIN);
        Self {
            fingerprint,
            limiter: RateShare::new(per_minute.get(), live_hosts),
            concurrency: ConcurrencyShare::new(policy.max_concurrency, live_hosts),
            confirmation_limiter: RateLimiter::direct_with_clock(
                Quota::per_minute(confirmations_per_minute).allow_burst(confirmation_burst),
                MonotonicClock,
            ),
            confirmations: Semaphore::new(policy.webhook_confirmations_max_concurrency.max(1)),
            policy,
            pause: Mutex::new(None),
            credentials_proven: std::sync::atomic::AtomicBool::new(false),
            probe: tokio::sync::Mutex::new(()),
        }
    }

    /// The credentials fingerprint this runtime was made for.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Waits for a slot of this host's share of the account's concurrency.
    pub async fn concurrency_slot(&self) -> Option<ConcurrencySlot<'_>> {
        self.concurrency.acquire().await
    }

    /// Resizes the rate limit and concurrency to this host's share among `live_hosts`.
    pub fn set_live_hosts(&self, live_hosts: u32) {
        self.limiter.set_hosts(live_hosts);
        self.concurrency.set_hosts(live_hosts);
    }

    pub fn credentials_proven(&self) -> bool {
        self.credentials_proven
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn mark_credentials_proven(&self) {
        self.credentials_proven
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// While the credentials are unproven, waits for the single probe slot; afterwards, free.
    pub async fn probe_slot(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.credentials_proven() {
            None
        } else {
            Some(self.probe.lock().await)
        }
    }

    /// The current pause, if one is in force.
    pub fn paused(&self) -> Option<Pause> {
        let mut pause = self
            .pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if pause
            .as_ref()
            .is_some_and(|pause| pause.until <= Instant::now())
        {
            *pause = None;
        }
        pause.clone()
    }

    pub fn pause_for(&self, duration: Duration, reason: String) {
        let until_unix = SystemTime::now()
            .checked_add(duration)
            .and_then(|until| until.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(u64::MAX, |since| since.as_secs());
        *self
            .pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Pause {
            reason,
            until_unix,
            until: Instant::now() + duration,
            set_at: Instant::now(),
        });
    }

    /// Takes on a pause another host set (as the database tells it).
    pub fn apply_shared_pause(&self, shared: &SharedPause) {
        let now = Instant::now();
        *self
            .pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Pause {
            reason: shared.reason.clone(),
            until_unix: shared.until_unix,
            until: now + Duration::from_millis(shared.remaining_ms),
            set_at: now,
        });
    }

    /// Lifts a pause this host learnt of before `read_at` (the fleet's state, read then, has
    /// none); a pause set since stays, as the read cannot have seen it.
    pub fn lift_pause_learnt_before(&self, read_at: Instant) -> bool {
        let mut pause = self
            .pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if pause.as_ref().is_some_and(|pause| pause.set_at < read_at) {
            *pause = None;
            return true;
        }
        false
    }

    pub fn resume(&self) -> bool {
        self.pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .is_some()
    }

    /// Takes a slot of the callback-confirmation budget, waiting at most `max_wait`; otherwise
    /// says how long the wait would be.
    pub async fn take_confirmation_slot(&self, max_wait: Duration) -> Result<(), Duration> {
        take_slot(&self.confirmation_limiter, max_wait).await
    }

    /// Takes a slot of the rate limit, waiting at most `max_wait`; otherwise says how long the
    /// wait would be.
    pub async fn take_rate_slot(&self, max_wait: Duration) -> Result<(), Duration> {
        loop {
            match self.limiter.check() {
                Ok(()) => return Ok(()),
                Err(wait) if wait > max_wait => return Err(wait),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// Takes a slot of `limiter`, waiting at most `max_wait`; otherwise says how long the wait would be.
async fn take_slot(limiter: &DirectRateLimiter, max_wait: Duration) -> Result<(), Duration> {
    loop {
        match limiter.check() {
            Ok(()) => return Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(MonotonicClock.now());
                if wait > max_wait {
                    return Err(wait);
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The runtimes of every account, created on first use.
pub struct AccountRuntimes {
    runtimes: Mutex<HashMap<(String, String), Arc<AccountRuntime>>>,
    /// Hosts sharing the accounts' limits: 1 unless a shared ledger says more.
    live_hosts: AtomicU32,
}

impl Default for AccountRuntimes {
    fn default() -> Self {
        Self {
            runtimes: Mutex::default(),
            live_hosts: AtomicU32::new(1),
        }
    }
}

impl AccountRuntimes {
    /// The runtime for an account with this fingerprint, replacing one made for an older
    /// configuration of the same account.
    pub fn get(
        &self,
        provider: &str,
        account: &str,
        fingerprint: &str,
        policy: &AccountPolicy,
    ) -> Arc<AccountRuntime> {
        let mut runtimes = self
            .runtimes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (provider.to_string(), account.to_string());
        match runtimes.get(&key) {
            Some(runtime) if runtime.fingerprint == fingerprint => runtime.clone(),
            _ => {
                let runtime = Arc::new(AccountRuntime::new(
                    fingerprint.to_string(),
                    policy.clone(),
                    self.live_hosts.load(Ordering::Acquire),
                ));
                runtimes.insert(key, runtime.clone());
                runtime
            }
        }
    }

    /// The runtime of an account if it has been used.
    pub fn existing(&self, provider: &str, account: &str) -> Option<Arc<AccountRuntime>> {
        self.runtimes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(provider.to_string(), account.to_string()))
            .cloned()
    }

    /// The hosts sharing the accounts' limits.
    pub fn live_hosts(&self) -> u32 {
        self.live_hosts.load(Ordering::Acquire)
    }

    /// Resizes every account's limits to this host's share among `live_hosts`.
    pub fn set_live_hosts(&self, live_hosts: u32) {
        let live_hosts = live_hosts.max(1);
        if self.live_hosts.swap(live_hosts, Ordering::AcqRel) == live_hosts {
            return;
        }
        for runtime in self.all() {
            runtime.set_live_hosts(live_hosts);
        }
    }

    /// Every runtime in use, with its provider and account.
    pub fn all(&self) -> Vec<Arc<AccountRuntime>> {
        self.runtimes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every runtime in use, keyed by provider and account.
    pub fn all_keyed(&self) -> Vec<((String, String), Arc<AccountRuntime>)> {
        self.runtimes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(key, runtime)| (key.clone(), runtime.clone()))
            .collect()
    }

    /// Every paused account.
    pub fn pauses(&self) -> Vec<(String, String, Pause)> {
        self.runtimes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter_map(|((provider, account), runtime)| {
                runtime
                    .paused()
                    .map(|pause| (provider.clone(), account.clone(), pause))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> Arc<AccountRuntime> {
        AccountRuntimes::default().get("paysitecash", "main", "f", &AccountPolicy::default())
    }

    #[test]
    fn a_refresh_lifts_only_the_pauses_learnt_before_it_read_the_fleet() {
        let runtime = runtime();
        runtime.pause_for(Duration::from_secs(60), "refused".into());
        let read_at = Instant::now();
        assert!(runtime.lift_pause_learnt_before(read_at));
        assert!(runtime.paused().is_none());
        // A pause this host set after the read began: the read cannot have seen it.
        let read_at = Instant::now();
        runtime.pause_for(Duration::from_secs(60), "refused again".into());
        assert!(!runtime.lift_pause_learnt_before(read_at));
        assert_eq!(
            runtime.paused().map(|pause| pause.reason),
            Some("refused again".into())
        );
    }

    #[test]
    fn a_shared_pause_lasts_what_the_database_says_is_left() {
        let runtime = runtime();
        runtime.apply_shared_pause(&SharedPause {
            reason: "paused by another host".into(),
            until_unix: 42,
            remaining_ms: 0,
        });
        assert!(runtime.paused().is_none(), "nothing left: over");
        runtime.apply_shared_pause(&SharedPause {
            reason: "paused by another host".into(),
            until_unix: 42,
            remaining_ms: 60_000,
        });
        assert_eq!(runtime.paused().map(|pause| pause.until_unix), Some(42));
    }

    #[test]
    fn new_runtimes_take_this_hosts_share_of_the_fleet() {
        let runtimes = AccountRuntimes::default();
        runtimes.set_live_hosts(3);
        let policy = AccountPolicy {
            max_concurrency: 6,
            ..AccountPolicy::default()
        };
        let runtime = runtimes.get("paygateglobal", "main", "f", &policy);
        assert_eq!(runtime.concurrency.available(), 2);
        runtimes.set_live_hosts(1);
        assert_eq!(runtime.concurrency.available(), 6);
    }
}
