//! An account's rate limit and concurrency as this host's share of the fleet's: the configured
//! figure divided by the live hosts (one host on SQLite: the whole figure).
//!
//! Why shares and not a budget in the database: a shared budget costs a database round trip per
//! provider request on every host, and the hot path of a host on PostgreSQL already pays for the
//! ledger; a share costs nothing per request. The price is that the fleet's figure is reached
//! only when the load balancer spreads an account's traffic evenly (a host given more than its
//! share refuses the excess while others idle), and that a change in the number of hosts is seen
//! at the next refresh (see `fleet.rs`).
//!
//! The limits change size while they are in use, which governor's limiter and tokio's semaphore
//! do not do by themselves: [`RateShare`] is a GCRA whose theoretical arrival time survives a
//! change of share, and [`ConcurrencyShare`] shrinks by forgetting permits as they come back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// A GCRA rate limit of `per_minute ÷ hosts` requests a minute, with a burst of that many (at
/// least one), like governor's `Quota::per_minute` for one host.
pub struct RateShare {
    per_minute: u32,
    state: Mutex<RateState>,
}

struct RateState {
    hosts: u32,
    /// When the next request would conform with no burst left (GCRA's theoretical arrival time).
    theoretical_arrival: Option<Instant>,
}

impl RateShare {
    pub fn new(per_minute: u32, hosts: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            state: Mutex::new(RateState {
                hosts: hosts.max(1),
                theoretical_arrival: None,
            }),
        }
    }

    /// Takes a slot now, or says how long until one is free.
    pub fn check(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        let (interval, tolerance) = self.spacing(state.hosts);
        let arrival = state.theoretical_arrival.map_or(now, |at| at.max(now));
        match arrival.checked_sub(tolerance) {
            Some(earliest) if earliest > now => Err(earliest - now),
            _ => {
                state.theoretical_arrival = Some(arrival + interval);
                Ok(())
            }
        }
    }

    /// Changes the number of hosts sharing the limit; the slots already spent stay spent.
    pub fn set_hosts(&self, hosts: u32) {
        self.lock().hosts = hosts.max(1);
    }

    /// The spacing between requests and the burst's allowance, for `hosts` sharing the limit.
    fn spacing(&self, hosts: u32) -> (Duration, Duration) {
        let share = f64::from(self.per_minute) / f64::from(hosts);
        let interval = Duration::from_secs_f64(60.0 / share);
        let burst = share.floor().max(1.0);
        (interval, interval.mul_f64(burst - 1.0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateState> {
        // Two numbers and an instant: no invariant a panic could break.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// At most `max ÷ hosts` flows at once (at least one).
pub struct ConcurrencyShare {
    max: usize,
    semaphore: Semaphore,
    state: Mutex<ConcurrencyState>,
}

struct ConcurrencyState {
    share: usize,
    /// Permits to forget as they come back (the share shrank while they were out).
    debt: usize,
}

/// A slot of a [`ConcurrencyShare`], given back when dropped.
pub struct ConcurrencySlot<'a> {
    share: &'a ConcurrencyShare,
    permit: Option<SemaphorePermit<'a>>,
}

impl ConcurrencyShare {
    pub fn new(max: usize, hosts: u32) -> Self {
        let max = max.max(1);
        let share = share_of(max, hosts);
        Self {
            max,
            semaphore: Semaphore::new(share),
            state: Mutex::new(ConcurrencyState { share, debt: 0 }),
        }
    }

    /// Waits for a slot; `None` once the account is closed.
    pub async fn acquire(&self) -> Option<ConcurrencySlot<'_>> {
        let permit = self.semaphore.acquire().await.ok()?;
        Some(ConcurrencySlot {
            share: self,
            permit: Some(permit),
        })
    }

    /// Slots free now (for tests and gauges).
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Resizes to the share of `hosts`; slots in use are not taken back, they are not returned.
    pub fn set_hosts(&self, hosts: u32) {
        let mut state = self.lock();
        let share = share_of(self.max, hosts);
        if share > state.share {
            let grow = share - state.share;
            let repaid = grow.min(state.debt);
            state.debt -= repaid;
            self.semaphore.add_permits(grow - repaid);
        } else if share < state.share {
            let shrink = state.share - share;
            let forgotten = self.semaphore.forget_permits(shrink);
            state.debt += shrink - forgotten;
        }
        state.share = share;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConcurrencyState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ConcurrencySlot<'_> {
    fn drop(&mut self) {
        let mut state = self.share.lock();
        if let Some(permit) = self.permit.take()
            && state.debt > 0
        {
            state.debt -= 1;
            permit.forget();
        }
    }
}

fn share_of(max: usize, hosts: u32) -> usize {
    (max / usize::try_from(hosts.max(1)).unwrap_or(usize::MAX)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_share_allows_its_burst_then_refuses() {
        // 12 a minute over 3 hosts: 4 at once on this host, then one every 15 s.
        let rate = RateShare::new(12, 3);
        for _ in 0..4 {
            assert!(rate.check().is_ok());
        }
        let wait = rate.check().expect_err("the share is spent");
        assert!(wait > Duration::from_secs(14), "{wait:?}");
    }

    #[test]
    fn a_smaller_fleet_gives_a_larger_share_without_refilling_what_was_spent() {
        let rate = RateShare::new(12, 3);
        for _ in 0..4 {
            assert!(rate.check().is_ok());
        }
        rate.set_hosts(1);
        // The four taken still count: 12 at once in all, not 12 more.
        let mut more = 0;
        while rate.check().is_ok() {
            more += 1;
        }
        assert!(more <= 9, "{more} more after 4");
    }

    #[tokio::test]
    async fn a_shrinking_concurrency_share_takes_back_slots_as_they_return() {
        let share = ConcurrencyShare::new(6, 1);
        let first = share.acquire().await.expect("slot");
        let second = share.acquire().await.expect("slot");
        share.set_hosts(3); // 6 ÷ 3 = 2, both in use
        assert_eq!(share.available(), 0);
        drop(first);
        drop(second);
        assert_eq!(share.available(), 2);
        share.set_hosts(1);
        assert_eq!(share.available(), 6);
    }
}
