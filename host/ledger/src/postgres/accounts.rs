//! Account protection shared by the hosts on one database ([`AccountCoordination`]): one row per
//! account and credentials fingerprint in `account_guards`, times on the database's clock.
//!
//! The probe is held by an instance id. It is free when nobody holds it, when its holder's lease
//! in `host_leases` has expired (a dead host frees it within its lease, 15 s by default), or when
//! it was taken longer ago than [`PROBE_HOLD_LIMIT`] (a live holder that lost track of it).

use postgres::Row;

use super::PostgresLedger;
use super::connection::Sql;
use crate::LedgerError;
use crate::coordination::{
    AccountCoordination, AccountKey, AccountReport, FleetSnapshot, ProbeClaim, SharedAccountState,
    SharedPause,
};

/// The migration that creates the table (an entry of `MIGRATIONS`).
pub(super) const MIGRATION: &str = "
    CREATE TABLE account_guards (
        provider        TEXT NOT NULL,
        account         TEXT NOT NULL,
        -- The gateway's SHA-256 of the account's policy and credentials: new credentials, new row.
        credentials     TEXT NOT NULL,
        paused_until    TIMESTAMPTZ,
        pause_reason    TEXT,
        proven          BOOLEAN NOT NULL DEFAULT FALSE,
        probe_holder    TEXT,
        probe_taken_at  TIMESTAMPTZ,
        updated_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (provider, account, credentials)
    );
    ";

/// How long a live host may hold a probe before another may take it: longer than any flow
/// (timeouts and retries included), short enough that a forgotten claim does not stop an account
/// for long.
const PROBE_HOLD_LIMIT: &str = "10 minutes";

/// The pause columns as [`shared_pause`] reads them, starting at column `$n`.
const PAUSE_COLUMNS: &str = "pause_reason, \
     (paused_until > clock_timestamp()) AS paused_now, \
     COALESCE(floor(extract(epoch FROM paused_until))::BIGINT, 0) AS until_unix, \
     COALESCE(GREATEST(0, ceil(extract(epoch FROM paused_until - clock_timestamp()) * 1000))::BIGINT, 0) AS remaining_ms";

impl AccountCoordination for PostgresLedger {
    fn claim_probe(&self, key: &AccountKey<'_>) -> Result<ProbeClaim, LedgerError> {
        let action = "claim an account's credentials probe";
        self.write(action, |transaction, _now| {
            let fail = |error: postgres::Error| self.storage_error(action, error);
            transaction
                .execute(
                    "INSERT INTO account_guards (provider, account, credentials) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&key.provider, &key.account, &key.fingerprint],
                )
                .map_err(fail)?;
            // The row lock orders the hosts: whoever reads after the previous holder's report
            // committed sees its pause or its proof.
            let row = transaction
                .query_one(
                    &format!(
                        "SELECT proven, {PAUSE_COLUMNS}, \
                         (probe_holder IS NOT NULL AND probe_holder <> $4 \
                          AND probe_taken_at > clock_timestamp() - interval '{PROBE_HOLD_LIMIT}' \
                          AND EXISTS (SELECT 1 FROM host_leases WHERE instance_id = probe_holder \
                                      AND expires_at > clock_timestamp())) AS held_elsewhere \
                         FROM account_guards \
                         WHERE provider = $1 AND account = $2 AND credentials = $3 FOR UPDATE"
                    ),
                    &[&key.provider, &key.account, &key.fingerprint, &self.instance_id],
                )
                .map_err(fail)?;
            if let Some(pause) = shared_pause(&row).map_err(fail)? {
                return Ok(ProbeClaim::Paused(pause));
            }
            if row.try_get::<_, bool>("proven").map_err(fail)? {
                return Ok(ProbeClaim::Proven);
            }
            if row.try_get::<_, bool>("held_elsewhere").map_err(fail)? {
                return Ok(ProbeClaim::HeldElsewhere);
            }
            transaction
                .execute(
                    "UPDATE account_guards SET probe_holder = $4, probe_taken_at = clock_timestamp(), \
                     updated_at = clock_timestamp() \
                     WHERE provider = $1 AND account = $2 AND credentials = $3",
                    &[&key.provider, &key.account, &key.fingerprint, &self.instance_id],
                )
                .map_err(fail)?;
            Ok(ProbeClaim::Claimed)
        })
    }

    fn report(&self, key: &AccountKey<'_>, report: &AccountReport) -> Result<(), LedgerError> {
        let action = "record an account's pause or proof";
        let (reason, pause_secs) = match &report.pause {
            Some((reason, duration)) => (Some(reason.as_str()), Some(duration.as_secs_f64())),
            None => (None, None),
        };
        let release_for = report.release_probe.then_some(self.instance_id.as_str());
        let mut client = self.client(action)?;
        client
            .execute(
                "INSERT INTO account_guards \
                     (provider, account, credentials, paused_until, pause_reason, proven) \
                 VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4::FLOAT8), $5, $6) \
                 ON CONFLICT (provider, account, credentials) DO UPDATE SET \
                     paused_until = COALESCE(EXCLUDED.paused_until, account_guards.paused_until), \
                     pause_reason = COALESCE(EXCLUDED.pause_reason, account_guards.pause_reason), \
                     proven = account_guards.proven OR EXCLUDED.proven, \
                     probe_holder = CASE WHEN account_guards.probe_holder = $7 THEN NULL \
                                    ELSE account_guards.probe_holder END, \
                     updated_at = clock_timestamp()",
                &[
                    &key.provider,
                    &key.account,
                    &key.fingerprint,
                    &pause_secs,
                    &reason,
                    &report.proven,
                    &release_for,
                ],
            )
            .map_err(|error| self.storage_error(action, error))?;
        Ok(())
    }

    fn lift_pause(&self, provider: &str, account: &str) -> Result<bool, LedgerError> {
        let action = "lift an account's pause";
        let mut client = self.client(action)?;
        let lifted = client
            .execute(
                "UPDATE account_guards SET paused_until = NULL, pause_reason = NULL, \
                 updated_at = clock_timestamp() \
                 WHERE provider = $1 AND account = $2 AND paused_until > clock_timestamp()",
                &[&provider, &account],
            )
            .map_err(|error| self.storage_error(action, error))?;
        Ok(lifted > 0)
    }

    fn snapshot(&self) -> Result<FleetSnapshot, LedgerError> {
        let action = "read the fleet's account state";
        let fail = |error: postgres::Error| self.storage_error(action, error);
        let mut client = self.client(action)?;
        let live: i64 = client
            .query_one(
                "SELECT count(*) FROM host_leases WHERE expires_at > clock_timestamp()",
                &[],
            )
            .map_err(fail)?
            .try_get(0)
            .map_err(fail)?;
        let rows = client
            .query(
                &format!(
                    "SELECT provider, account, credentials, proven, {PAUSE_COLUMNS} \
                     FROM account_guards WHERE proven OR paused_until > clock_timestamp()"
                ),
                &[],
            )
            .map_err(fail)?;
        let accounts = rows
            .iter()
            .map(|row| {
                Ok(SharedAccountState {
                    provider: row.try_get("provider")?,
                    account: row.try_get("account")?,
                    fingerprint: row.try_get("credentials")?,
                    pause: shared_pause(row)?,
                    proven: row.try_get("proven")?,
                })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()
            .map_err(fail)?;
        Ok(FleetSnapshot {
            // This host's own lease is in the count; a count of zero (its lease lapsed while the
            // database was unreachable) still means at least this host.
            live_hosts: u32::try_from(live).unwrap_or(u32::MAX).max(1),
            accounts,
        })
    }
}

/// The pause in force in a row holding [`PAUSE_COLUMNS`], if one is.
fn shared_pause(row: &Row) -> Result<Option<SharedPause>, postgres::Error> {
    if !row
        .try_get::<_, Option<bool>>("paused_now")?
        .unwrap_or(false)
    {
        return Ok(None);
    }
    let until_unix: i64 = row.try_get("until_unix")?;
    let remaining_ms: i64 = row.try_get("remaining_ms")?;
    Ok(Some(SharedPause {
        reason: row
            .try_get::<_, Option<String>>("pause_reason")?
            .unwrap_or_default(),
        until_unix: u64::try_from(until_unix).unwrap_or(0),
        remaining_ms: u64::try_from(remaining_ms).unwrap_or(0),
    }))
}
