//! Account protection across the hosts of one shared ledger: the gateway's side of
//! [`AccountCoordination`].
//!
//! - **The credentials probe.** While an account's credentials are unproven, a flow first takes
//!   the host's own probe (`AccountRuntime::probe_slot`, so one flow per host asks the database),
//!   then the fleet's ([`Fleet::admit`]): one flow in the whole fleet sends until the provider has
//!   accepted the credentials once. The claim reads the pause under the row lock, so a host sees
//!   the pause the previous holder set before it sends; the holder records its pause or proof
//!   before it gives the probe up ([`FleetProbe::finish`]).
//! - **Pauses and proofs** a host learns are written to the database at once; every host copies
//!   the database's state into its runtimes every [`REFRESH_EVERY`] ([`Fleet::refresh`]), so a
//!   pause set or lifted elsewhere reaches a host's proven accounts within that bound, with no
//!   database call on the request path once the credentials are proven.
//! - **Live hosts**, read in the same refresh, set each host's share of the accounts' limits.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use gatehouse_ledger::coordination::{AccountKey, AccountReport, FleetSnapshot, ProbeClaim};
use gatehouse_ledger::{AccountCoordination, LedgerError};

use crate::accounts::{AccountRuntime, AccountRuntimes};
use crate::error::DispatchError;

/// How often a host copies the fleet's account state and host count: the bound within which a
/// pause, a resume or a change in the number of hosts reaches the other hosts.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How often a flow waiting for another host's probe asks again.
const PROBE_POLL: Duration = Duration::from_millis(50);

/// The gateway's handle on the fleet's coordination.
#[derive(Clone)]
pub(crate) struct Fleet {
    coordination: Arc<dyn AccountCoordination>,
}

/// The fleet's probe, held by this host's one flow until it reports.
pub(crate) struct FleetProbe {
    coordination: Arc<dyn AccountCoordination>,
    provider: String,
    account: String,
    fingerprint: String,
    reported: bool,
}

impl Fleet {
    pub(crate) fn new(coordination: Arc<dyn AccountCoordination>) -> Self {
        Self { coordination }
    }

    /// Admits a flow on an account whose credentials this host has not seen proven: returns the
    /// fleet's probe once this host holds it, `None` if the credentials were proven elsewhere
    /// (the runtime then knows), or the pause in force.
    pub(crate) async fn admit(
        &self,
        runtime: &AccountRuntime,
        provider: &str,
        account: &str,
    ) -> Result<Option<FleetProbe>, DispatchError> {
        loop {
            let claim = {
                let (provider, account, fingerprint) = (
                    provider.to_string(),
                    account.to_string(),
                    runtime.fingerprint().to_string(),
                );
                self.call(move |coordination| {
                    coordination.claim_probe(&AccountKey {
                        provider: &provider,
                        account: &account,
                        fingerprint: &fingerprint,
                    })
                })
                .await?
            };
            match claim {
                ProbeClaim::Proven => {
                    runtime.mark_credentials_proven();
                    return Ok(None);
                }
                ProbeClaim::Paused(pause) => {
                    runtime.apply_shared_pause(&pause);
                    return Err(DispatchError::AccountPaused {
                        provider: provider.to_string(),
                        account: account.to_string(),
                        reason: pause.reason,
                        until_unix: pause.until_unix,
                    });
                }
                ProbeClaim::Claimed => {
                    return Ok(Some(FleetProbe {
                        coordination: self.coordination.clone(),
                        provider: provider.to_string(),
                        account: account.to_string(),
                        fingerprint: runtime.fingerprint().to_string(),
                        reported: false,
                    }));
                }
                ProbeClaim::HeldElsewhere => tokio::time::sleep(PROBE_POLL).await,
            }
        }
    }

    /// Records a pause a flow without the probe learnt (credentials proven, then refused).
    pub(crate) async fn report_pause(
        &self,
        runtime: &AccountRuntime,
        provider: &str,
        account: &str,
        reason: String,
        duration: Duration,
    ) -> Result<(), DispatchError> {
        let (provider, account, fingerprint) = (
            provider.to_string(),
            account.to_string(),
            runtime.fingerprint().to_string(),
        );
        self.call(move |coordination| {
            coordination.report(
                &AccountKey {
                    provider: &provider,
                    account: &account,
                    fingerprint: &fingerprint,
                },
                &AccountReport {
                    pause: Some((reason, duration)),
                    proven: false,
                    release_probe: false,
                },
            )
        })
        .await
    }

    /// Lifts the account's pause on every host (each sees it at its next refresh).
    pub(crate) async fn lift_pause(
        &self,
        provider: &str,
        account: &str,
    ) -> Result<bool, DispatchError> {
        let (provider, account) = (provider.to_string(), account.to_string());
        self.call(move |coordination| coordination.lift_pause(&provider, &account))
            .await
    }

    /// Copies the fleet's state into this host's runtimes: the live hosts (the limits' shares),
    /// each account's pause (set or lifted elsewhere) and proof.
    pub(crate) async fn refresh(&self, accounts: &AccountRuntimes) -> Result<(), DispatchError> {
        let read_at = Instant::now();
        let snapshot = self.call(|coordination| coordination.snapshot()).await?;
        apply(accounts, &snapshot, read_at);
        Ok(())
    }

    /// Runs `call` on the blocking pool (the coordination is a database).
    async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn AccountCoordination) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, DispatchError> {
        let coordination = self.coordination.clone();
        tokio::task::spawn_blocking(move || call(coordination.as_ref()))
            .await
            .map_err(|error| DispatchError::Coordination {
                message: format!("the call ended abnormally: {error}"),
            })?
            .map_err(|error| DispatchError::Coordination {
                message: error.to_string(),
            })
    }
}

/// Refreshes forever, every [`REFRESH_EVERY`], until the gateway is gone.
pub(crate) async fn keep_refreshed(fleet: Fleet, accounts: Weak<AccountRuntimes>) {
    let mut ticks = tokio::time::interval(REFRESH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(accounts) = accounts.upgrade() else {
            return;
        };
        if let Err(error) = fleet.refresh(&accounts).await {
            // The copies stay as they were: pauses this host knows keep holding, and the probe
            // (asked of the database on each unproven flow) fails closed.
            tracing::warn!(%error, "the fleet's account state was not refreshed; retried");
        }
    }
}

fn apply(accounts: &AccountRuntimes, snapshot: &FleetSnapshot, read_at: Instant) {
    accounts.set_live_hosts(snapshot.live_hosts);
    for ((provider, account), runtime) in accounts.all_keyed() {
        let shared = snapshot.accounts.iter().find(|shared| {
            shared.provider == provider
                && shared.account == account
                && shared.fingerprint == runtime.fingerprint()
        });
        match shared.and_then(|shared| shared.pause.as_ref()) {
            Some(pause) => {
                if runtime
                    .paused()
                    .is_none_or(|local| local.until_unix != pause.until_unix)
                {
                    runtime.apply_shared_pause(pause);
                }
            }
            None => {
                if runtime.lift_pause_learnt_before(read_at) {
                    tracing::info!(%provider, %account, "account pause lifted by another host");
                }
            }
        }
        if shared.is_some_and(|shared| shared.proven) {
            runtime.mark_credentials_proven();
        }
    }
}

impl FleetProbe {
    /// Records what the probing flow learnt and gives the probe up, in one transaction: the
    /// next holder sees this pause or this proof.
    pub(crate) async fn finish(
        mut self,
        pause: Option<(String, Duration)>,
        proven: bool,
    ) -> Result<(), DispatchError> {
        self.reported = true;
        let coordination = self.coordination.clone();
        let (provider, account, fingerprint) = (
            self.provider.clone(),
            self.account.clone(),
            self.fingerprint.clone(),
        );
        Fleet { coordination }
            .call(move |coordination| {
                coordination.report(
                    &AccountKey {
                        provider: &provider,
                        account: &account,
                        fingerprint: &fingerprint,
                    },
                    &AccountReport {
                        pause,
                        proven,
                        release_probe: true,
                    },
                )
            })
            .await
    }
}

impl Drop for FleetProbe {
    /// A flow that ended without reporting (its task dropped) still gives the probe up, so the
    /// fleet does not wait for [`PROBE_HOLD_LIMIT`](gatehouse_ledger::coordination) to pass.
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let coordination = self.coordination.clone();
        let (provider, account, fingerprint) = (
            std::mem::take(&mut self.provider),
            std::mem::take(&mut self.account),
            std::mem::take(&mut self.fingerprint),
        );
        runtime.spawn_blocking(move || {
            let released = coordination.report(
                &AccountKey {
                    provider: &provider,
                    account: &account,
                    fingerprint: &fingerprint,
                },
                &AccountReport {
                    release_probe: true,
                    ..AccountReport::default()
                },
            );
            if let Err(error) = released {
                tracing::warn!(%provider, %account, %error, "the credentials probe was not given up; it frees itself");
            }
        });
    }
}
