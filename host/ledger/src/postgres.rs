//! The shared ledger: one PostgreSQL database that several host instances use at once.
//!
//! Same contract as the SQLite ledger, to the letter (the same test suite runs against both,
//! `tests.rs`); what differs is how atomicity is had once several processes write at the same time:
//!
//! - Every write is atomic (`READ COMMITTED`) on a pooled connection, in as few round trips as
//!   it can be, every statement prepared once per connection (`postgres/connection.rs`).
//!   [`Ledger::record_outcome`] reads the entry, applies the rule and writes it back with its
//!   history row in one statement that matches only if the entry still holds what was read
//!   ([`SAVE_ENTRY_IF_UNCHANGED`]); when another write came in between (another host), it is
//!   redone as the other writes are: one transaction with the entry read `FOR UPDATE`, so two
//!   hosts recording on one entry run one after the other and the second sees the first's change
//!   (SQLite gets the same from its single writer).
//! - [`Ledger::begin`] is one statement ([`BEGIN_ENTRY`]: the entry, its history row, the entry
//!   returned) inserting with `ON CONFLICT ON CONSTRAINT entries_idempotency_key DO NOTHING`: a
//!   concurrent begin of the same key waits for the first one's commit and then finds its entry,
//!   so one key makes one entry across every host.
//! - Webhook events are numbered under a transaction-scoped advisory lock: sequence numbers are
//!   then handed out in commit order, and a feed reader that resumes after the last number it saw
//!   cannot miss an event that commits later with a smaller one (a plain identity column would
//!   allow exactly that). Webhooks are rare next to charges; entries are not serialized this way.
//! - Group commit: concurrent transactions on separate connections share WAL flushes by
//!   themselves, but each still costs the server a transaction; begins and outcomes queued at
//!   once are written as one statement by the caller leading the queue (`postgres/group_commit.rs`, which
//!   says what it saves and how a batch that cannot decide a write hands it back).
//!
//! Entry paging keys on `seq` (an identity column) as SQLite's does. Identity values are taken at
//! insert time, not commit time, so an entry whose insert was still running while a page was read
//! can commit with a smaller `seq` and show up on a later page rather than before the first: it is
//! never lost nor shown twice, and page boundaries never move.
//!
//! Commands, outcomes and events are kept as the JSON text the SQLite ledger keeps (not `jsonb`,
//! which would reorder keys): the stored form is byte for byte the same in both.
//!
//! **Schema migrations** are applied at start under a session advisory lock, so several hosts
//! starting together apply each migration once; a database whose schema is newer than this host
//! knows is refused with a message saying so.

use std::fmt;
use std::time::Duration;

use gatehouse_plugin_api::{Outcome, Secret, WebhookEvent};
use postgres::Row;
use postgres::error::SqlState;
use postgres::types::ToSql;

mod accounts;
mod connection;
mod fleet;
mod group_commit;
mod tls;

use connection::{Manager, Sql, Transaction};
use group_commit::{BeginWrite, Failed, GroupCommit, OutcomeWrite, Write, Written};

use super::rules::{self, EntryRow};
use super::sqlite::unix_now;
use super::{
    Begin, Entry, EntryState, HistoryEvent, Ledger, LedgerError, ListFilter, NewEntry, Settlement,
    StoredEvent,
};

/// The schema, one migration per version: `MIGRATIONS[n]` takes a database from version `n` to
/// `n + 1`. Applied migrations are never edited; a change is a new migration appended here.
/// Money is `BIGINT` minor units beside a currency code, never a floating-point type.
pub(super) const MIGRATIONS: &[&str] = &[
    // Version 1: entries, their history, received webhook events, and the readiness probe's row.
    "
    CREATE TABLE entries (
        seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id                  TEXT NOT NULL,
        provider            TEXT NOT NULL,
        account             TEXT NOT NULL,
        operation           TEXT NOT NULL,
        idempotency_key     TEXT,
        request_hash        TEXT NOT NULL,
        command_json        TEXT NOT NULL,
        state               TEXT NOT NULL CHECK (state IN
            ('sending', 'succeeded', 'pending', 'failed', 'unknown', 'needs_operator')),
        amount_minor_units  BIGINT,
        amount_currency     TEXT,
        provider_reference  TEXT,
        outcome_json        TEXT,
        refusal_code        TEXT,
        refusal_message     TEXT,
        operator_flag       TEXT,
        created_at_unix     BIGINT NOT NULL,
        updated_at_unix     BIGINT NOT NULL,
        CONSTRAINT entries_id_unique UNIQUE (id),
        CONSTRAINT entries_idempotency_key UNIQUE (provider, account, idempotency_key),
        CHECK ((amount_minor_units IS NULL) = (amount_currency IS NULL))
    );
    CREATE INDEX entries_by_state ON entries (state, updated_at_unix);
    CREATE INDEX entries_by_provider_reference ON entries (provider, provider_reference);
    CREATE INDEX entries_by_created ON entries (created_at_unix);

    CREATE TABLE entry_history (
        seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        entry_id   TEXT NOT NULL REFERENCES entries (id),
        at_unix    BIGINT NOT NULL,
        state      TEXT NOT NULL,
        detail     TEXT NOT NULL
    );
    CREATE INDEX entry_history_by_entry ON entry_history (entry_id, seq);

    CREATE TABLE webhook_events (
        sequence          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        provider          TEXT NOT NULL,
        account           TEXT NOT NULL,
        event_id          TEXT NOT NULL,
        event_json        TEXT NOT NULL,
        received_at_unix  BIGINT NOT NULL,
        CONSTRAINT webhook_events_once UNIQUE (provider, event_id)
    );

    CREATE TABLE ledger_probe (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        at_unix  BIGINT NOT NULL
    );
    ",
    // Version 2: host leases, and which instance began each entry. Lease times are the
    // database's clock, so hosts with skewed clocks still agree on whose lease is fresh.
    "
    CREATE TABLE host_leases (
        instance_id   TEXT PRIMARY KEY,
        started_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        -- Each instance's own lease length: hosts need not agree on it.
        expires_at    TIMESTAMPTZ NOT NULL
    );
    ALTER TABLE entries ADD COLUMN sender_instance TEXT;
    ",
    // Version 3: who asked for each entry (an API key's name, `cli`, an embedder's name) and who
    // took each step a person took (an operator's settlement); SQLite's version 2. Never a key.
    "
    ALTER TABLE entries ADD COLUMN actor TEXT;
    ALTER TABLE entry_history ADD COLUMN actor TEXT;
    ",
    // Version 4: account protection shared by the hosts (pause, proof, credentials probe).
    accounts::MIGRATION,
    // Version 5: the fleet's coordination (reconciliation claims, the forwarder's lease and
    // position, the hosts' registrations); the SQL is in `postgres/fleet.rs`.
    fleet::FLEET_MIGRATION,
];

/// The session advisory lock migrations run under (any fixed number works; this one is "gatehous"
/// in ASCII, unlikely to collide with another application's lock in a shared database).
pub(super) const MIGRATION_LOCK: i64 = 0x6761_7465_686f_7573;

/// The transaction advisory lock webhook events are numbered under ("gh_event").
const EVENTS_LOCK: i64 = 0x6768_5f65_7665_6e74;

/// Takes or renews this instance's lease ($1 instance, $2 lease in seconds), on the database's
/// clock.
const RENEW_LEASE: &str = "INSERT INTO host_leases (instance_id, expires_at) \
     VALUES ($1, clock_timestamp() + make_interval(secs => $2)) \
     ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = clock_timestamp(), \
     expires_at = EXCLUDED.expires_at";

/// A lease length as `make_interval` takes it (fractional seconds; a duration, not money).
fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// How long a starting host waits for another host's migration before giving up.
const MIGRATION_LOCK_TIMEOUT: &str = "60s";

/// The columns [`entry_row`] expects, in its order (a macro, for `concat!`).
macro_rules! entry_columns {
    () => {
        "id, provider, account, operation, idempotency_key, request_hash, command_json, state, \
         amount_minor_units, amount_currency, provider_reference, outcome_json, refusal_code, \
         refusal_message, operator_flag, created_at_unix, updated_at_unix, actor"
    };
}

/// The columns [`entry_row`] expects, in its order.
const ENTRY_COLUMNS: &str = entry_columns!();

/// [`Ledger::begin`]'s one statement: the entry in state `sending` and its first history row, or
/// nothing when its key is taken (`ON CONFLICT ... DO NOTHING`; another unique violation, the id,
/// is an error). Returns the new entry's id (the caller has the rest).
const BEGIN_ENTRY: &str = "WITH created AS ( \
         INSERT INTO entries (id, provider, account, operation, idempotency_key, request_hash, \
             command_json, state, amount_minor_units, amount_currency, created_at_unix, \
             updated_at_unix, sender_instance, actor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'sending', $8, $9, $10, $10, $11, $12) \
         ON CONFLICT ON CONSTRAINT entries_idempotency_key DO NOTHING \
         RETURNING id), \
     history AS ( \
         INSERT INTO entry_history (entry_id, at_unix, state, detail, actor) \
         SELECT id, $10, 'sending', 'created', NULL FROM created) \
     SELECT id FROM created";

/// Writes an entry's mutable columns back and appends one history row with its (new) state: $1
/// id, $2 state, $3 provider reference, $4 outcome JSON, $5 and $6 the refusal's code and message,
/// $7 the operator flag, $8 now, $9 the history's detail, $10 its actor.
const SAVE_ENTRY: &str = "WITH saved AS ( \
         UPDATE entries SET state = $2, provider_reference = $3, outcome_json = $4, \
             refusal_code = $5, refusal_message = $6, operator_flag = $7, updated_at_unix = $8 \
         WHERE id = $1 RETURNING id) \
     INSERT INTO entry_history (entry_id, at_unix, state, detail, actor) \
     SELECT id, $8, $2, $9, $10 FROM saved";

/// [`SAVE_ENTRY`] only if the entry still holds what it held when read: $11 to $17 the state,
/// provider reference, outcome JSON, refusal code and message, operator flag and update time
/// read (every column a rule reads besides those a write never changes). Counts 1 when saved, 0
/// when another write came first (the UPDATE re-checks its condition on the latest row).
const SAVE_ENTRY_IF_UNCHANGED: &str = "WITH saved AS ( \
         UPDATE entries SET state = $2, provider_reference = $3, outcome_json = $4, \
             refusal_code = $5, refusal_message = $6, operator_flag = $7, updated_at_unix = $8 \
         WHERE id = $1 AND state = $11 AND provider_reference IS NOT DISTINCT FROM $12 \
             AND outcome_json IS NOT DISTINCT FROM $13 AND refusal_code IS NOT DISTINCT FROM $14 \
             AND refusal_message IS NOT DISTINCT FROM $15 \
             AND operator_flag IS NOT DISTINCT FROM $16 AND updated_at_unix = $17 \
         RETURNING id) \
     INSERT INTO entry_history (entry_id, at_unix, state, detail, actor) \
     SELECT id, $8, $2, $9, $10 FROM saved";

/// What [`SAVE_ENTRY_IF_UNCHANGED`] compares ($11 to $17): the columns a write changes.
struct Mutable {
    state: String,
    provider_reference: Option<String>,
    outcome_json: Option<String>,
    refusal_code: Option<String>,
    refusal_message: Option<String>,
    operator_flag: Option<String>,
    updated_at_unix: i64,
}

/// An entry by id, unlocked.
const ENTRY_BY_ID: &str = concat!("SELECT ", entry_columns!(), " FROM entries WHERE id = $1");

/// Where a PostgreSQL ledger lives and how to reach it.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database` (or the key-value form libpq takes). It must not hold
    /// the password: that comes in [`PostgresOptions::password`], from a secret reference.
    pub url: String,
    pub password: Option<Secret>,
    /// Most connections the pool keeps open.
    pub max_connections: u32,
    /// How long opening a connection, or waiting for a free one in the pool, may take.
    pub connect_timeout: Duration,
    /// This host instance's name in the ledger's lease table: unique per running process.
    pub instance_id: String,
    /// How long this instance's lease lasts without a heartbeat (renewed every third of it):
    /// once it expired, the entries this instance was sending are others' to reconcile.
    pub lease: Duration,
    /// PEM CA certificates the database's certificate must chain to: set, every connection is
    /// TLS (`sslmode=require`, the URL's host name checked); unset, plain TCP or a Unix socket.
    pub ca_file: Option<std::path::PathBuf>,
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            instance_id: default_instance_id(),
            lease: Duration::from_secs(15),
            ca_file: None,
        }
    }
}

/// `<pid>-<nanoseconds>`: unique enough among the processes of a fleet; the service passes a
/// random UUID instead.
fn default_instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

type Pool = r2d2::Pool<Manager>;

/// The pool, dropped on a thread of its own: every pooled client owns a small tokio runtime (the
/// synchronous driver's), tokio refuses to drop a runtime on an async worker, and the last handle
/// on a ledger may well be dropped there (a service going away inside a runtime).
struct OwnedPool(Option<Pool>);

impl Drop for OwnedPool {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

/// The thread renewing this instance's lease; stopping it (on drop) gives the lease up.
struct Heartbeat {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The shared [`Ledger`]: a PostgreSQL database reached through a connection pool.
///
/// Blocking, like every [`Ledger`]: the driver runs its own runtime, so calls made on an async
/// worker panic; the service makes every call on tokio's blocking pool (`AsyncLedger`).
///
/// Each instance holds a lease (`host_leases`), renewed by a thread of its own, and stamps the
/// entries it begins with its instance id: that is how another host tells an entry still being
/// sent by a live peer from one a dead host left `sending`
/// ([`Ledger::sent_by_a_live_peer`]).
pub struct PostgresLedger {
    /// Declared first so it stops (and gives the lease up) before the pool goes.
    heartbeat: Option<Heartbeat>,
    /// The queue batching begins and outcomes (`group_commit.rs`).
    group: GroupCommit,
    pool: OwnedPool,
    instance_id: String,
    lease: Duration,
    /// `postgres://user@host:port/database`: never the password. For messages and Debug.
    location: String,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Where a configuration points, for messages: user, hosts, ports and database, no password.
fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let name = match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = config
                .get_ports()
                .get(index)
                .or_else(|| config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// The client configuration `options` describe, and where it points (for messages).
fn client_config(options: &PostgresOptions) -> Result<(postgres::Config, String), LedgerError> {
    // The parser's errors name the option at fault, never the text around it.
    let mut config: postgres::Config = options.url.parse().map_err(|error: postgres::Error| {
        LedgerError::Storage(format!(
            "the PostgreSQL ledger URL is invalid: {}",
            error.explain()
        ))
    })?;
    let location = describe(&config);
    if config.get_password().is_some() {
        return Err(LedgerError::Storage(format!(
            "ledger {location}: the URL must not hold the password; give it as a secret \
             reference (ledger.password in plugins.toml)"
        )));
    }
    if config.get_hosts().is_empty() {
        return Err(LedgerError::Storage(format!(
            "ledger {location}: the URL names no host"
        )));
    }
    if let Some(password) = &options.password {
        config.password(password.expose());
    }
    config
        .connect_timeout(options.connect_timeout)
        .application_name("gatehouse");
    Ok((config, location))
}

impl PostgresLedger {
    /// Connects, brings the schema up to date (under the migration lock) and opens the pool.
    /// Blocking: call it off the async workers.
    pub fn connect(options: &PostgresOptions) -> Result<Self, LedgerError> {
        let (mut config, location) = client_config(options)?;
        let connector = tls::connector(&mut config, options.ca_file.as_deref(), &location)?;
        migrate(&config, connector.clone(), &location, unix_now())?;
        let manager = Manager::new(config, connector);
        let pool = r2d2::Pool::builder()
            .max_size(options.max_connections.max(1))
            // Connections are opened when needed, not all at start (a fleet of hosts would
            // otherwise hold max_connections each whether busy or not).
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout)
            // r2d2 logs a connection error itself; ours carry the ledger's location instead.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        let mut ledger = Self {
            heartbeat: None,
            group: GroupCommit::new(&options.instance_id),
            pool: OwnedPool(Some(pool)),
            instance_id: options.instance_id.clone(),
            lease: options.lease.max(Duration::from_secs(1)),
            location,
            clock: Box::new(unix_now),
        };
        // The lease exists before this instance begins its first entry.
        ledger.renew_lease()?;
        ledger.heartbeat = Some(ledger.start_heartbeat()?);
        Ok(ledger)
    }

    /// How many group-commit statements this ledger ran, and how many writes (begins and
    /// outcomes) they carried.
    #[cfg(test)]
    pub(super) fn group_commits(&self) -> (u64, u64) {
        let counts = &self.group.counts;
        (
            counts.batches.load(std::sync::atomic::Ordering::Relaxed),
            counts.writes.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// This instance's name in the lease table.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    fn renew_lease(&self) -> Result<(), LedgerError> {
        let action = "renew this host's lease";
        let mut client = self.client(action)?;
        client
            .execute(RENEW_LEASE, &[&self.instance_id, &seconds(self.lease)])
            .map_err(|error| self.storage_error(action, error))?;
        // Leases of processes that ended without giving theirs up (a SIGKILL, a crash) would
        // pile up: a day after expiry they tell nobody anything.
        client
            .execute(
                "DELETE FROM host_leases WHERE expires_at < clock_timestamp() - interval '1 day'",
                &[],
            )
            .map_err(|error| self.storage_error(action, error))?;
        Ok(())
    }

    fn start_heartbeat(&self) -> Result<Heartbeat, LedgerError> {
        let pool = self.pool.0.clone().ok_or_else(|| {
            self.storage_error("start the heartbeat", "the ledger is closing".to_string())
        })?;
        let (instance_id, location) = (self.instance_id.clone(), self.location.clone());
        let every = self.lease / 3;
        let lease_secs = seconds(self.lease);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gatehouse-ledger-heartbeat".into())
            .spawn(move || {
                let run = |sql: &str, params: &[&(dyn ToSql + Sync)]| -> Result<u64, String> {
                    let mut client = pool.get().map_err(|error| error.explain())?;
                    client.execute(sql, params).map_err(|error| error.explain())
                };
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    if let Err(error) = run(RENEW_LEASE, &[&instance_id, &lease_secs]) {
                        tracing::warn!(ledger = %location, %error, "lease not renewed; retried");
                    }
                }
                // Leaving: the entries this instance still had `sending` are others' to
                // settle, and its forwarding lease another host's to take.
                for leave in fleet::LEAVE {
                    let _ = run(leave, &[&instance_id]);
                }
                // The pool's clients own runtimes: dropped here, on this plain thread.
                drop(pool);
            })
            .map_err(|error| self.storage_error("start the heartbeat thread", error.to_string()))?;
        Ok(Heartbeat {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Replaces the clock (Unix seconds) used for timestamps: tests use it to control time.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// `postgres://user@host:port/database`, without the password.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn storage_error(&self, action: &str, error: impl Explain) -> LedgerError {
        LedgerError::Storage(format!(
            "ledger {}: {action}: {}",
            self.location,
            error.explain()
        ))
    }

    fn pool(&self, action: &str) -> Result<&Pool, LedgerError> {
        self.pool
            .0
            .as_ref()
            .ok_or_else(|| self.storage_error(action, "the ledger is closing".to_string()))
    }

    fn client(&self, action: &str) -> Result<r2d2::PooledConnection<Manager>, LedgerError> {
        self.pool(action)?.get().map_err(|error| {
            self.storage_error(&format!("{action}: no database connection"), error)
        })
    }

    /// Runs `body` in one transaction and commits it; an error (or a panic) in `body` rolls it
    /// back. `body` gets the clock's reading. A transaction a stale prepared statement failed
    /// (see `connection.rs`) is run once more, its statements prepared afresh.
    fn write<T>(
        &self,
        action: &str,
        mut body: impl FnMut(&mut Transaction<'_>, i64) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let now = (self.clock)();
        let mut client = self.client(action)?;
        let _ = client.take_stale();
        let mut retried = false;
        loop {
            let mut transaction = client
                .transaction()
                .map_err(|error| self.storage_error(action, error))?;
            match body(&mut transaction, now) {
                Ok(value) => {
                    transaction.commit().map_err(|error| {
                        self.storage_error(&format!("{action}: commit failed"), error)
                    })?;
                    return Ok(value);
                }
                Err(error) => {
                    drop(transaction);
                    if retried || !client.take_stale() {
                        return Err(error);
                    }
                    retried = true;
                }
            }
        }
    }

    fn entries(
        &self,
        client: &mut impl Sql,
        action: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Entry>, LedgerError> {
        let rows = client
            .query(sql, params)
            .map_err(|error| self.storage_error(action, error))?;
        rows.iter()
            .map(|row| {
                entry_row(row)
                    .map_err(|error| self.storage_error(action, error))?
                    .into_entry()
            })
            .collect()
    }

    fn entry_by_id(
        &self,
        client: &mut impl Sql,
        action: &str,
        id: &str,
        for_update: bool,
    ) -> Result<Option<Entry>, LedgerError> {
        let sql = if for_update {
            concat!(
                "SELECT ",
                entry_columns!(),
                " FROM entries WHERE id = $1 FOR UPDATE"
            )
        } else {
            ENTRY_BY_ID
        };
        Ok(self.entries(client, action, sql, &[&id])?.pop())
    }

    /// The entry, locked until the transaction ends, or [`LedgerError::NotFound`].
    fn locked_entry(
        &self,
        transaction: &mut Transaction<'_>,
        action: &str,
        id: &str,
    ) -> Result<Entry, LedgerError> {
        self.entry_by_id(transaction, action, id, true)?
            .ok_or_else(|| LedgerError::NotFound { id: id.to_string() })
    }

    fn entry_by_key(
        &self,
        client: &mut impl Sql,
        action: &str,
        provider: &str,
        account: &str,
        idempotency_key: &str,
    ) -> Result<Option<Entry>, LedgerError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries \
             WHERE provider = $1 AND account = $2 AND idempotency_key = $3"
        );
        Ok(self
            .entries(
                client,
                action,
                &sql,
                &[&provider, &account, &idempotency_key],
            )?
            .pop())
    }

    /// Writes the mutable part of `entry` back, stamps it `now`, and appends `detail` to its
    /// history with the entry's (new) state; the host's own steps name no actor.
    fn save(
        &self,
        transaction: &mut Transaction<'_>,
        action: &str,
        entry: &mut Entry,
        now: i64,
        detail: &str,
    ) -> Result<(), LedgerError> {
        self.save_as(transaction, action, entry, now, detail, None)
    }

    /// [`Self::save`] with the history row naming `actor` (an operator's step): one statement.
    fn save_as(
        &self,
        transaction: &mut Transaction<'_>,
        action: &str,
        entry: &mut Entry,
        now: i64,
        detail: &str,
        actor: Option<&str>,
    ) -> Result<(), LedgerError> {
        entry.updated_at_unix = now;
        let outcome_json = self.outcome_json(action, entry)?;
        transaction
            .execute(
                SAVE_ENTRY,
                &[
                    &entry.id,
                    &entry.state.as_str(),
                    &entry.provider_reference,
                    &outcome_json,
                    &entry.refusal.as_ref().map(|refusal| &refusal.code),
                    &entry.refusal.as_ref().map(|refusal| &refusal.message),
                    &entry.operator_flag,
                    &now,
                    &detail,
                    &actor,
                ],
            )
            .map_err(|error| self.storage_error(action, error))?;
        Ok(())
    }

    /// The entry's outcome as the JSON text stored.
    fn outcome_json(&self, action: &str, entry: &Entry) -> Result<Option<String>, LedgerError> {
        entry
            .outcome
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|error| {
                self.storage_error(
                    &format!("{action}: cannot serialize the outcome of `{}`", entry.id),
                    error,
                )
            })
    }

    /// Applies `apply` to entry `id` and saves it with its history row in two statements and no
    /// transaction: the entry read unlocked, then written back only if it still holds what was
    /// read ([`SAVE_ENTRY_IF_UNCHANGED`]). The rules decide from those columns alone, so the
    /// result is what the locked read-apply-write would have written. `None`: another write
    /// came in between; the caller does the locked one.
    fn save_unless_changed(
        &self,
        action: &str,
        id: &str,
        apply: impl FnOnce(&mut Entry) -> String,
    ) -> Result<Option<Entry>, LedgerError> {
        let mut client = self.client(action)?;
        let row = client
            .query_opt(ENTRY_BY_ID, &[&id])
            .map_err(|error| self.storage_error(action, error))?
            .ok_or_else(|| LedgerError::NotFound { id: id.to_string() })?;
        let read = entry_row(&row).map_err(|error| self.storage_error(action, error))?;
        let before = Mutable {
            state: read.state.clone(),
            provider_reference: read.provider_reference.clone(),
            outcome_json: read.outcome_json.clone(),
            refusal_code: read.refusal_code.clone(),
            refusal_message: read.refusal_message.clone(),
            operator_flag: read.operator_flag.clone(),
            updated_at_unix: read.updated_at_unix,
        };
        let entry = read.into_entry()?;
        self.save_if_still(action, &mut *client, entry, &before, apply)
    }

    /// Applies `apply` to `entry` and saves it with its history row in one statement, only if
    /// the stored entry's mutable columns still hold `before`. `None`: they do not.
    fn save_if_still(
        &self,
        action: &str,
        client: &mut dyn Sql,
        mut entry: Entry,
        before: &Mutable,
        apply: impl FnOnce(&mut Entry) -> String,
    ) -> Result<Option<Entry>, LedgerError> {
        let now = (self.clock)();
        let detail = apply(&mut entry);
        entry.updated_at_unix = now;
        let outcome_json = self.outcome_json(action, &entry)?;
        let saved = client
            .execute(
                SAVE_ENTRY_IF_UNCHANGED,
                &[
                    &entry.id,
                    &entry.state.as_str(),
                    &entry.provider_reference,
                    &outcome_json,
                    &entry.refusal.as_ref().map(|refusal| &refusal.code),
                    &entry.refusal.as_ref().map(|refusal| &refusal.message),
                    &entry.operator_flag,
                    &now,
                    &detail,
                    &None::<&str>,
                    &before.state,
                    &before.provider_reference,
                    &before.outcome_json,
                    &before.refusal_code,
                    &before.refusal_message,
                    &before.operator_flag,
                    &before.updated_at_unix,
                ],
            )
            .map_err(|error| self.storage_error(action, error))?;
        Ok((saved == 1).then_some(entry))
    }

    fn unresolved_query(
        &self,
        updated_before_unix: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Entry>, LedgerError> {
        let action = "list unresolved entries";
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries \
             WHERE state IN ('sending', 'pending', 'unknown') \
               AND ($1::BIGINT IS NULL OR updated_at_unix < $1) \
             ORDER BY updated_at_unix ASC, seq ASC LIMIT $2"
        );
        let mut client = self.client(action)?;
        self.entries(
            &mut *client,
            action,
            &sql,
            &[&updated_before_unix, &sql_limit(limit)],
        )
    }

    /// What an existing entry found under the caller's key answers.
    fn existing_for(new: &NewEntry, existing: Entry, key: &str) -> Result<Begin, LedgerError> {
        if existing.request_hash == new.request_hash {
            Ok(Begin::Existing(existing))
        } else {
            Err(LedgerError::KeyReused {
                key: key.to_string(),
            })
        }
    }
}

impl Ledger for PostgresLedger {
    fn claim_for_reconciliation(
        &self,
        pass: &str,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Entry>, LedgerError> {
        self.claim_batch(pass, limit, hold)
    }

    fn release_reconciliation_claims(&self, ids: &[String]) -> Result<(), LedgerError> {
        self.release_claims(ids)
    }

    fn take_forwarding_lease(&self, hold: Duration) -> Result<crate::ForwardingLease, LedgerError> {
        self.forwarding_lease(hold)
    }

    fn record_forwarded(&self, sequence: i64, hold: Duration) -> Result<bool, LedgerError> {
        self.save_forwarded(sequence, hold)
    }

    fn forwarding(&self) -> Result<Option<crate::Forwarding>, LedgerError> {
        self.forwarding_state()
    }

    fn register_host(&self, registration: &crate::HostRegistration) -> Result<(), LedgerError> {
        self.register(registration)
    }

    fn fleet(&self) -> Result<Option<Vec<crate::FleetHost>>, LedgerError> {
        self.registered_hosts().map(Some)
    }

    fn instance_id(&self) -> Option<String> {
        Some(self.instance_id.clone())
    }

    fn sent_by_a_live_peer(&self, id: &str) -> Result<bool, LedgerError> {
        let action = "check who sends an entry";
        let mut client = self.client(action)?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM entries JOIN host_leases \
                     ON host_leases.instance_id = entries.sender_instance \
                 WHERE entries.id = $1 AND entries.state = 'sending' \
                   AND entries.sender_instance <> $2 \
                   AND host_leases.expires_at > clock_timestamp())",
                &[&id, &self.instance_id],
            )
            .map_err(|error| self.storage_error(action, error))?;
        row.try_get(0)
            .map_err(|error| self.storage_error(action, error))
    }

    fn probe_write(&self) -> Result<(), LedgerError> {
        let action = "probe a write";
        self.write(action, |transaction, now| {
            transaction
                .execute(
                    "INSERT INTO ledger_probe (id, at_unix) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET at_unix = EXCLUDED.at_unix",
                    &[&now],
                )
                .map_err(|error| self.storage_error(action, error))?;
            Ok(())
        })
    }

    fn begin(&self, new: NewEntry) -> Result<Begin, LedgerError> {
        let action = "begin an entry";
        if new.command.operation() != new.operation {
            return Err(LedgerError::InvalidEntry {
                id: new.id,
                problem: format!(
                    "operation `{}` does not match its command's `{}`",
                    new.operation,
                    new.command.operation()
                ),
            });
        }
        let command_json = serde_json::to_string(&new.command).map_err(|error| {
            self.storage_error(
                &format!("{action}: cannot serialize the command of `{}`", new.id),
                error,
            )
        })?;
        let now = (self.clock)();
        // The common case: one statement shared with the other writes queued meanwhile.
        let write = Write::Begin(BeginWrite::new(&new, command_json.clone(), now));
        match self.group.write(self.pool(action)?, write) {
            Ok(Written::Yes) => return Ok(Begin::Created(new.into_sending_entry(now))),
            // The key is taken (its entry is read below), or the batch was refused as a whole
            // (the insert is tried alone below, and gets its own answer).
            Ok(Written::No) | Err(Failed::Unwritten) => {}
            Err(Failed::Lost(error)) => return Err(self.storage_error(action, error)),
        }
        let amount = new.command.amount();
        let mut client = self.client(action)?;
        // One statement, so its own transaction: the entry and its first history row, or
        // nothing when the key is taken. A concurrent begin of the same key (another host) makes
        // the insert wait for its commit and then do nothing: the entry it made is the one to
        // answer with, read by the next statement (which sees that commit).
        for _ in 0..3 {
            let created = client
                .query_opt(
                    BEGIN_ENTRY,
                    &[
                        &new.id,
                        &new.provider,
                        &new.account,
                        &new.operation.as_str(),
                        &new.idempotency_key,
                        &new.request_hash,
                        &command_json,
                        &amount.map(|money| money.minor_units),
                        &amount.map(|money| money.currency.code()),
                        &now,
                        &self.instance_id,
                        &new.actor,
                    ],
                )
                .map_err(|error| {
                    if violates(&error, "entries_id_unique") {
                        LedgerError::DuplicateId { id: new.id.clone() }
                    } else {
                        self.storage_error(action, error)
                    }
                })?;
            if created.is_some() {
                // What the insert wrote, built from what it was given rather than sent back
                // and its command parsed again on every charge.
                return Ok(Begin::Created(new.into_sending_entry(now)));
            }
            let key = new.idempotency_key.as_deref().unwrap_or_default();
            // `None`: the entry that held the key let it go in between (a "not now" refusal
            // releases its key); the insert is tried again.
            if let Some(existing) =
                self.entry_by_key(&mut *client, action, &new.provider, &new.account, key)?
            {
                return Self::existing_for(&new, existing, key);
            }
        }
        Err(self.storage_error(
            action,
            format!(
                "the key `{}` was taken and released three times over",
                new.idempotency_key.as_deref().unwrap_or_default()
            ),
        ))
    }

    fn record_outcome(&self, id: &str, outcome: &Outcome) -> Result<Entry, LedgerError> {
        let action = "record an outcome";
        // The common case, one host recording on an entry nobody else touches: two statements.
        if let Some(entry) =
            self.save_unless_changed(action, id, |entry| rules::apply_outcome(entry, outcome))?
        {
            return Ok(entry);
        }
        self.write(action, |transaction, now| {
            let mut entry = self.locked_entry(transaction, action, id)?;
            let detail = rules::apply_outcome(&mut entry, outcome);
            self.save(transaction, action, &mut entry, now, &detail)?;
            Ok(entry)
        })
    }

    fn record_outcome_of_begun(
        &self,
        begun: Entry,
        outcome: &Outcome,
    ) -> Result<Entry, LedgerError> {
        if !begun.is_as_begun() {
            return self.record_outcome(&begun.id, outcome);
        }
        let action = "record an outcome";
        let id = begun.id.clone();
        // What `begin` wrote is known: the entry is not read first, and the write is saved only
        // while the entry is still as begun, in one statement shared with the other writes
        // queued meanwhile.
        let begun_at = begun.updated_at_unix;
        let mut entry = begun;
        let detail = rules::apply_outcome(&mut entry, outcome);
        entry.updated_at_unix = (self.clock)();
        let outcome_json = self.outcome_json(action, &entry)?;
        let write = Write::Outcome(OutcomeWrite::new(&entry, outcome_json, detail, begun_at));
        match self.group.write(self.pool(action)?, write) {
            Ok(Written::Yes) => Ok(entry),
            // Another write came in between (a webhook, another host), or the batch was refused
            // as a whole: recorded the locked way.
            Ok(Written::No) | Err(Failed::Unwritten) => self.record_outcome(&id, outcome),
            Err(Failed::Lost(error)) => Err(self.storage_error(action, error)),
        }
    }

    fn record_refusal(&self, id: &str, code: &str, message: &str) -> Result<Entry, LedgerError> {
        let action = "record a refusal";
        self.write(action, |transaction, now| {
            let mut entry = self.locked_entry(transaction, action, id)?;
            let detail = rules::apply_refusal(&mut entry, code, message)?;
            self.save(transaction, action, &mut entry, now, &detail)?;
            Ok(entry)
        })
    }

    fn record_transient_refusal(
        &self,
        id: &str,
        code: &str,
        message: &str,
    ) -> Result<Entry, LedgerError> {
        let action = "record a transient refusal";
        self.write(action, |transaction, now| {
            let mut entry = self.locked_entry(transaction, action, id)?;
            let detail = rules::apply_transient_refusal(&mut entry, code, message)?;
            transaction
                .execute(
                    "UPDATE entries SET idempotency_key = NULL WHERE id = $1",
                    &[&id],
                )
                .map_err(|error| self.storage_error(action, error))?;
            self.save(transaction, action, &mut entry, now, &detail)?;
            Ok(entry)
        })
    }

    fn flag_for_operator(&self, id: &str, reason: &str) -> Result<Entry, LedgerError> {
        let action = "flag an entry for an operator";
        self.write(action, |transaction, now| {
            let mut entry = self.locked_entry(transaction, action, id)?;
            let detail = rules::apply_flag(&mut entry, reason);
            self.save(transaction, action, &mut entry, now, &detail)?;
            Ok(entry)
        })
    }

    fn settle(&self, id: &str, settlement: &Settlement) -> Result<Entry, LedgerError> {
        let action = "settle an entry by hand";
        settlement.check(id)?;
        // The entry is locked for the transaction: a webhook or an outcome arriving meanwhile on
        // another host waits, then sees the settled (final) entry and applies its rules to it.
        self.write(action, |transaction, now| {
            let mut entry = self.locked_entry(transaction, action, id)?;
            if !entry.state.is_settleable() {
                return Err(LedgerError::NotSettleable {
                    id: id.to_string(),
                    state: entry.state,
                });
            }
            let detail = settlement.describe(entry.state);
            settlement.apply(&mut entry);
            self.save_as(
                transaction,
                action,
                &mut entry,
                now,
                &detail,
                Some(&settlement.actor),
            )?;
            Ok(entry)
        })
    }

    fn get(&self, id: &str) -> Result<Option<Entry>, LedgerError> {
        let action = "read an entry";
        let mut client = self.client(action)?;
        self.entry_by_id(&mut *client, action, id, false)
    }

    fn find_by_key(
        &self,
        provider: &str,
        account: &str,
        idempotency_key: &str,
    ) -> Result<Option<Entry>, LedgerError> {
        let action = "find an entry by key";
        let mut client = self.client(action)?;
        self.entry_by_key(&mut *client, action, provider, account, idempotency_key)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Entry>, LedgerError> {
        let action = "list entries";
        let mut client = self.client(action)?;
        let before_seq: Option<i64> = match &filter.starting_after {
            None => None,
            Some(id) => {
                let row = client
                    .query_opt("SELECT seq FROM entries WHERE id = $1", &[id])
                    .map_err(|error| self.storage_error("find a paging cursor", error))?;
                let row = row.ok_or_else(|| LedgerError::NotFound { id: id.clone() })?;
                Some(
                    row.try_get(0)
                        .map_err(|error| self.storage_error("find a paging cursor", error))?,
                )
            }
        };
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries \
             WHERE ($1::TEXT IS NULL OR provider = $1) \
               AND ($2::TEXT IS NULL OR account = $2) \
               AND ($3::TEXT IS NULL OR state = $3 \
                    OR ($3 = 'needs_operator' AND operator_flag IS NOT NULL)) \
               AND ($5::BIGINT IS NULL OR seq < $5) \
               AND ($6::BIGINT IS NULL OR created_at_unix >= $6) \
               AND ($7::BIGINT IS NULL OR created_at_unix < $7) \
             ORDER BY seq DESC LIMIT $4"
        );
        self.entries(
            &mut *client,
            action,
            &sql,
            &[
                &filter.provider,
                &filter.account,
                &filter.state.map(EntryState::as_str),
                &sql_limit(filter.limit),
                &before_seq,
                &filter.created_after_unix,
                &filter.created_before_unix,
            ],
        )
    }

    fn count_by_state(&self) -> Result<Vec<(EntryState, u64)>, LedgerError> {
        let action = "count entries by state";
        let mut client = self.client(action)?;
        let rows = client
            .query("SELECT state, COUNT(*) FROM entries GROUP BY state", &[])
            .map_err(|error| self.storage_error(action, error))?;
        rows.iter()
            .map(|row| {
                let (state, count): (String, i64) = (
                    row.try_get(0)
                        .map_err(|error| self.storage_error(action, error))?,
                    row.try_get(1)
                        .map_err(|error| self.storage_error(action, error))?,
                );
                let state = EntryState::parse(&state).ok_or_else(|| LedgerError::Corrupt {
                    id: String::new(),
                    problem: format!("unknown entry state `{state}` in the state counts"),
                })?;
                Ok((state, u64::try_from(count).unwrap_or(0)))
            })
            .collect()
    }

    fn history(&self, id: &str) -> Result<Vec<HistoryEvent>, LedgerError> {
        let action = "read an entry's history";
        let mut client = self.client(action)?;
        let rows = client
            .query(
                "SELECT at_unix, state, detail, actor FROM entry_history WHERE entry_id = $1 \
                 ORDER BY seq",
                &[&id],
            )
            .map_err(|error| self.storage_error(action, error))?;
        rows.iter()
            .map(|row| {
                let read = |error| self.storage_error(action, error);
                let at_unix: i64 = row.try_get(0).map_err(read)?;
                let state: String = row.try_get(1).map_err(read)?;
                let detail: String = row.try_get(2).map_err(read)?;
                let actor: Option<String> = row.try_get(3).map_err(read)?;
                let state = EntryState::parse(&state).ok_or_else(|| LedgerError::Corrupt {
                    id: id.to_string(),
                    problem: format!("a history event has the unknown state `{state}`"),
                })?;
                Ok(HistoryEvent {
                    at_unix,
                    state,
                    detail,
                    actor,
                })
            })
            .collect()
    }

    fn unresolved(&self, limit: usize) -> Result<Vec<Entry>, LedgerError> {
        self.unresolved_query(None, limit)
    }

    fn unresolved_before(
        &self,
        updated_before_unix: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, LedgerError> {
        self.unresolved_query(Some(updated_before_unix), limit)
    }

    fn record_event(
        &self,
        provider: &str,
        account: &str,
        event: &WebhookEvent,
    ) -> Result<bool, LedgerError> {
        let action = "record a webhook event";
        let event_json = serde_json::to_string(event).map_err(|error| {
            self.storage_error(
                &format!("{action}: cannot serialize event `{}`", event.event_id),
                error,
            )
        })?;
        self.write(action, |transaction, now| {
            // Numbers in commit order (see the module docs): held until this transaction ends.
            transaction
                .execute("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK])
                .map_err(|error| self.storage_error(action, error))?;
            let inserted = transaction
                .execute(
                    "INSERT INTO webhook_events \
                     (provider, account, event_id, event_json, received_at_unix) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT ON CONSTRAINT webhook_events_once DO NOTHING",
                    &[&provider, &account, &event.event_id, &event_json, &now],
                )
                .map_err(|error| self.storage_error(action, error))?;
            Ok(inserted == 1)
        })
    }

    fn apply_event(
        &self,
        provider: &str,
        event: &WebhookEvent,
    ) -> Result<Option<Entry>, LedgerError> {
        // The host changes its ledger only for events the plugin confirmed with the provider.
        if !event.verified {
            return Ok(None);
        }
        let action = "apply a webhook event";
        self.write(action, |transaction, now| {
            // Locked in `seq` order: two hosts applying events to the same entries never
            // deadlock. A NULL provider reference matches nothing (`= NULL` is never true), so
            // the two arms are plain index conditions the planner can OR as bitmaps.
            let sql = format!(
                "SELECT {ENTRY_COLUMNS} FROM entries \
                 WHERE provider = $1 AND (id = $2 OR provider_reference = $3) \
                 ORDER BY seq FOR UPDATE"
            );
            let candidates = self.entries(
                transaction,
                action,
                &sql,
                &[&provider, &event.reference, &event.provider_reference],
            )?;
            let Some((mut entry, concerned)) = rules::choose_entry(candidates, event) else {
                return Ok(None);
            };
            let detail = rules::apply_event(&mut entry, event, concerned);
            self.save(transaction, action, &mut entry, now, &detail)?;
            Ok(Some(entry))
        })
    }

    fn events(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>, LedgerError> {
        let action = "read webhook events";
        let mut client = self.client(action)?;
        let rows = client
            .query(
                "SELECT sequence, provider, account, event_json, received_at_unix \
                 FROM webhook_events WHERE sequence > $1 ORDER BY sequence LIMIT $2",
                &[&after, &sql_limit(limit)],
            )
            .map_err(|error| self.storage_error(action, error))?;
        rows.iter()
            .map(|row| {
                let read = |error| self.storage_error(action, error);
                let sequence: i64 = row.try_get(0).map_err(read)?;
                let event_json: String = row.try_get(3).map_err(read)?;
                let event =
                    serde_json::from_str(&event_json).map_err(|error| LedgerError::Corrupt {
                        id: format!("event #{sequence}"),
                        problem: format!("the event JSON is unreadable: {error}"),
                    })?;
                Ok(StoredEvent {
                    sequence,
                    provider: row.try_get(1).map_err(read)?,
                    account: row.try_get(2).map_err(read)?,
                    event,
                    received_at_unix: row.try_get(4).map_err(read)?,
                })
            })
            .collect()
    }
}

/// Brings the schema to the latest version. Runs on a connection of its own holding the
/// migration lock, so hosts starting together migrate one after the other: the second finds the
/// first's versions recorded and applies nothing.
fn migrate(
    config: &postgres::Config,
    connector: tls::Connector,
    location: &str,
    now: i64,
) -> Result<(), LedgerError> {
    let fail = |action: &str, error: postgres::Error| {
        LedgerError::Storage(format!("ledger {location}: {action}: {}", error.explain()))
    };
    let mut client = config
        .connect(connector)
        .map_err(|error| fail("cannot connect", error))?;
    client
        .batch_execute(&format!("SET lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'"))
        .map_err(|error| fail("set the lock timeout", error))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|error| {
            fail(
                &format!(
                    "take the migration lock (another host may have held it for over \
                     {MIGRATION_LOCK_TIMEOUT})"
                ),
                error,
            )
        })?;
    let migrated = apply_migrations(&mut client, location, now);
    // Closing the connection would release the lock too; an explicit unlock keeps it short.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    migrated
}

fn apply_migrations(
    client: &mut postgres::Client,
    location: &str,
    now: i64,
) -> Result<(), LedgerError> {
    let fail = |action: &str, error: postgres::Error| {
        LedgerError::Storage(format!("ledger {location}: {action}: {}", error.explain()))
    };
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version          BIGINT PRIMARY KEY,
                applied_at_unix  BIGINT NOT NULL
            )",
        )
        .map_err(|error| fail("create the schema_version table", error))?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .and_then(|row| row.try_get(0))
        .map_err(|error| fail("read the schema version", error))?;
    let latest = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > latest {
        return Err(LedgerError::Storage(format!(
            "ledger {location}: the schema is version {current}, newer than the {latest} this \
             host knows; it was written by a newer Gatehouse: run that version (or newer) here"
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index).unwrap_or(i64::MAX) + 1;
        if version <= current {
            continue;
        }
        let mut transaction = client
            .transaction()
            .map_err(|error| fail("begin a migration", error))?;
        transaction
            .batch_execute(migration)
            .map_err(|error| fail(&format!("apply schema migration {version}"), error))?;
        transaction
            .execute(
                "INSERT INTO schema_version (version, applied_at_unix) VALUES ($1, $2)",
                &[&version, &now],
            )
            .map_err(|error| fail(&format!("record schema migration {version}"), error))?;
        transaction
            .commit()
            .map_err(|error| fail(&format!("commit schema migration {version}"), error))?;
    }
    Ok(())
}

/// An error in words, with its causes: the driver's own `Display` says only "db error" and
/// keeps the server's message in its source.
trait Explain {
    fn explain(&self) -> String;
}

impl Explain for postgres::Error {
    fn explain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

impl Explain for r2d2::Error {
    fn explain(&self) -> String {
        self.to_string()
    }
}

impl Explain for serde_json::Error {
    fn explain(&self) -> String {
        self.to_string()
    }
}

impl Explain for String {
    fn explain(&self) -> String {
        self.clone()
    }
}

/// Whether `error` is a unique violation of `constraint`.
fn violates(error: &postgres::Error, constraint: &str) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && error
            .as_db_error()
            .and_then(|db| db.constraint())
            .is_some_and(|name| name == constraint)
}

/// Reads the columns of [`ENTRY_COLUMNS`], in that order.
fn entry_row(row: &Row) -> Result<EntryRow, postgres::Error> {
    Ok(EntryRow {
        id: row.try_get(0)?,
        provider: row.try_get(1)?,
        account: row.try_get(2)?,
        operation: row.try_get(3)?,
        idempotency_key: row.try_get(4)?,
        request_hash: row.try_get(5)?,
        command_json: row.try_get(6)?,
        state: row.try_get(7)?,
        amount_minor_units: row.try_get(8)?,
        amount_currency: row.try_get(9)?,
        provider_reference: row.try_get(10)?,
        outcome_json: row.try_get(11)?,
        refusal_code: row.try_get(12)?,
        refusal_message: row.try_get(13)?,
        operator_flag: row.try_get(14)?,
        created_at_unix: row.try_get(15)?,
        updated_at_unix: row.try_get(16)?,
        actor: row.try_get(17)?,
    })
}

/// `LIMIT` takes a signed 64-bit integer; anything larger means "no limit" anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
