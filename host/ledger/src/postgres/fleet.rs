//! The shared ledger's fleet coordination (`crate::fleet`): reconciliation claims, the
//! forwarding lease and position, and the hosts' registrations beside their leases.
//!
//! Every time here is the database's clock (`clock_timestamp()`), like the host leases', so
//! hosts whose clocks disagree still agree on whose claim or lease is fresh.

use std::time::Duration;

use super::connection::Sql;
use super::{ENTRY_COLUMNS, PostgresLedger, seconds, sql_limit};
use crate::fleet::{FleetHost, Forwarding, ForwardingLease, HostRegistration, ServedPlugin};
use crate::{Entry, LedgerError};

/// Schema version 5: reconciliation claims on entries, the forwarder's lease and position, and
/// what each registered host serves (beside its lease in `host_leases`).
pub(super) const FLEET_MIGRATION: &str = "
    ALTER TABLE entries ADD COLUMN reconcile_claimed_by TEXT;
    ALTER TABLE entries ADD COLUMN reconcile_claim_until TIMESTAMPTZ;
    ALTER TABLE entries ADD COLUMN reconcile_claim_pass TEXT;

    -- One row: the fleet forwards through one host at a time, from one position.
    CREATE TABLE forwarder (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        position    BIGINT NOT NULL DEFAULT 0,
        holder      TEXT,
        expires_at  TIMESTAMPTZ
    );

    -- A host that registered (a server, not a CLI run) is shown in the fleet view, gone or not.
    ALTER TABLE host_leases ADD COLUMN registered_at TIMESTAMPTZ;
    ALTER TABLE host_leases ADD COLUMN listen_address TEXT;
    ALTER TABLE host_leases ADD COLUMN version TEXT;
    ALTER TABLE host_leases ADD COLUMN plugins_json TEXT;
";

/// What the heartbeat thread runs when the ledger closes ($1: the instance): a registered
/// host's row stays, its lease ended now (the fleet view shows it gone); an unregistered one
/// (a CLI run) leaves no trace; a forwarding lease it held ends now, so another host takes
/// over at once.
pub(super) const LEAVE: &[&str] = &[
    "UPDATE host_leases SET expires_at = clock_timestamp() \
     WHERE instance_id = $1 AND registered_at IS NOT NULL",
    "DELETE FROM host_leases WHERE instance_id = $1 AND registered_at IS NULL",
    "UPDATE forwarder SET expires_at = clock_timestamp() WHERE holder = $1",
];

impl PostgresLedger {
    pub(super) fn claim_batch(
        &self,
        pass: &str,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Entry>, LedgerError> {
        let action = "claim entries to reconcile";
        // SKIP LOCKED: an entry another pass is claiming, or a host is recording on, right now
        // is left to it instead of waited for; the claim columns keep it ours after commit.
        // This host's own claims from an earlier pass are its to take again (an operator's
        // pass right after the background one asks again); its passes run one at a time.
        let sql = format!(
            "WITH picked AS ( \
                 SELECT seq FROM entries \
                 WHERE state IN ('sending', 'pending', 'unknown') \
                   AND (reconcile_claim_until IS NULL \
                        OR reconcile_claim_until < clock_timestamp() \
                        OR (reconcile_claimed_by = $2 \
                            AND reconcile_claim_pass IS DISTINCT FROM $4)) \
                 ORDER BY updated_at_unix ASC, seq ASC LIMIT $1 \
                 FOR UPDATE SKIP LOCKED), \
             claimed AS ( \
                 UPDATE entries SET reconcile_claimed_by = $2, reconcile_claim_pass = $4, \
                     reconcile_claim_until = clock_timestamp() + make_interval(secs => $3) \
                 FROM picked WHERE entries.seq = picked.seq \
                 RETURNING entries.seq, {ENTRY_COLUMNS}) \
             SELECT {ENTRY_COLUMNS} FROM claimed ORDER BY updated_at_unix ASC, seq ASC"
        );
        self.write(action, |transaction, _| {
            self.entries(
                transaction,
                action,
                &sql,
                &[&sql_limit(limit), &self.instance_id, &seconds(hold), &pass],
            )
        })
    }

    pub(super) fn release_claims(&self, ids: &[String]) -> Result<(), LedgerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let action = "release reconciliation claims";
        let mut client = self.client(action)?;
        client
            .execute(
                "UPDATE entries SET reconcile_claimed_by = NULL, reconcile_claim_until = NULL, \
                     reconcile_claim_pass = NULL \
                 WHERE id = ANY($1) AND reconcile_claimed_by = $2",
                &[&ids, &self.instance_id],
            )
            .map_err(|error| self.storage_error(action, error))?;
        Ok(())
    }

    pub(super) fn forwarding_lease(&self, hold: Duration) -> Result<ForwardingLease, LedgerError> {
        let action = "take the forwarding lease";
        let mut client = self.client(action)?;
        // Taken when nobody holds it, renewed when this instance does, taken over when the
        // holder's lease lapsed (a killed host stops renewing it).
        let row = client
            .query_opt(
                "INSERT INTO forwarder (id, position, holder, expires_at) \
                 VALUES (1, 0, $1, clock_timestamp() + make_interval(secs => $2)) \
                 ON CONFLICT (id) DO UPDATE \
                     SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                 WHERE forwarder.holder IS NULL OR forwarder.holder = EXCLUDED.holder \
                    OR forwarder.expires_at IS NULL OR forwarder.expires_at < clock_timestamp() \
                 RETURNING position",
                &[&self.instance_id, &seconds(hold)],
            )
            .map_err(|error| self.storage_error(action, error))?;
        if let Some(row) = row {
            let position: i64 = row
                .try_get(0)
                .map_err(|error| self.storage_error(action, error))?;
            return Ok(ForwardingLease::Held { position });
        }
        let holder: Option<String> = client
            .query_opt("SELECT holder FROM forwarder WHERE id = 1", &[])
            .map_err(|error| self.storage_error(action, error))?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(|error| self.storage_error(action, error))?
            .flatten();
        Ok(ForwardingLease::HeldByPeer {
            holder: holder.unwrap_or_default(),
        })
    }

    pub(super) fn save_forwarded(
        &self,
        sequence: i64,
        hold: Duration,
    ) -> Result<bool, LedgerError> {
        let action = "record the forwarder's position";
        let mut client = self.client(action)?;
        let updated = client
            .execute(
                "UPDATE forwarder SET position = GREATEST(position, $2), \
                     expires_at = clock_timestamp() + make_interval(secs => $3) \
                 WHERE id = 1 AND holder = $1 AND expires_at > clock_timestamp()",
                &[&self.instance_id, &sequence, &seconds(hold)],
            )
            .map_err(|error| self.storage_error(action, error))?;
        Ok(updated == 1)
    }

    pub(super) fn forwarding_state(&self) -> Result<Option<Forwarding>, LedgerError> {
        let action = "read the forwarder's position";
        let mut client = self.client(action)?;
        let row = client
            .query_opt(
                "SELECT position, holder, COALESCE(expires_at > clock_timestamp(), false) \
                 FROM forwarder WHERE id = 1",
                &[],
            )
            .map_err(|error| self.storage_error(action, error))?;
        let Some(row) = row else {
            return Ok(Some(Forwarding {
                position: 0,
                holder: None,
                holder_live: false,
            }));
        };
        let read = |error| self.storage_error(action, error);
        Ok(Some(Forwarding {
            position: row.try_get(0).map_err(read)?,
            holder: row.try_get(1).map_err(read)?,
            holder_live: row.try_get(2).map_err(read)?,
        }))
    }

    pub(super) fn register(&self, registration: &HostRegistration) -> Result<(), LedgerError> {
        let action = "register this host in the fleet";
        let plugins_json = serde_json::to_string(&registration.plugins)
            .map_err(|error| self.storage_error(action, error))?;
        let mut client = self.client(action)?;
        // An upsert: the lease row exists from the start, but one a day-old cleanup removed
        // (a host whose heartbeat thread stalled that long) comes back.
        client
            .execute(
                "INSERT INTO host_leases (instance_id, expires_at, registered_at, \
                     listen_address, version, plugins_json) \
                 VALUES ($1, clock_timestamp() + make_interval(secs => $2), clock_timestamp(), \
                     $3, $4, $5) \
                 ON CONFLICT (instance_id) DO UPDATE SET \
                     registered_at = COALESCE(host_leases.registered_at, clock_timestamp()), \
                     listen_address = EXCLUDED.listen_address, version = EXCLUDED.version, \
                     plugins_json = EXCLUDED.plugins_json",
                &[
                    &self.instance_id,
                    &seconds(self.lease),
                    &registration.listen_address,
                    &registration.version,
                    &plugins_json,
                ],
            )
            .map_err(|error| self.storage_error(action, error))?;
        Ok(())
    }

    pub(super) fn registered_hosts(&self) -> Result<Vec<FleetHost>, LedgerError> {
        let action = "read the fleet";
        let mut client = self.client(action)?;
        let rows = client
            .query(
                "SELECT instance_id, listen_address, version, \
                     extract(epoch FROM started_at)::BIGINT, \
                     extract(epoch FROM heartbeat_at)::BIGINT, \
                     expires_at > clock_timestamp(), plugins_json \
                 FROM host_leases WHERE registered_at IS NOT NULL \
                 ORDER BY started_at, instance_id",
                &[],
            )
            .map_err(|error| self.storage_error(action, error))?;
        rows.iter()
            .map(|row| {
                let read = |error| self.storage_error(action, error);
                let instance_id: String = row.try_get(0).map_err(read)?;
                let plugins_json: Option<String> = row.try_get(6).map_err(read)?;
                let plugins: Vec<ServedPlugin> = match plugins_json {
                    Some(json) => {
                        serde_json::from_str(&json).map_err(|error| LedgerError::Corrupt {
                            id: format!("host {instance_id}"),
                            problem: format!("the plugins it serves are unreadable: {error}"),
                        })?
                    }
                    None => Vec::new(),
                };
                Ok(FleetHost {
                    listen_address: row
                        .try_get::<_, Option<String>>(1)
                        .map_err(read)?
                        .unwrap_or_default(),
                    version: row
                        .try_get::<_, Option<String>>(2)
                        .map_err(read)?
                        .unwrap_or_default(),
                    started_at_unix: row.try_get(3).map_err(read)?,
                    heartbeat_at_unix: row.try_get(4).map_err(read)?,
                    live: row.try_get(5).map_err(read)?,
                    instance_id,
                    plugins,
                })
            })
            .collect()
    }
}
