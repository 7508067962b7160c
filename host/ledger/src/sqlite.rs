//! The embedded ledger: one SQLite file in WAL mode.
//!
//! One connection behind one mutex serves every call. SQLite allows a single writer at a time
//! anyway, and a ledger write is a handful of indexed statements, so a pool would add contention
//! handling without adding throughput; one connection also makes every method trivially atomic
//! with respect to the others in this process. Writes run in `BEGIN IMMEDIATE` transactions, which
//! take the database's write lock up front, so two processes that open the same file (an
//! operator's CLI beside the server) still cannot interleave a read-check-insert.
//!
//! **Group commit.** With `synchronous=FULL` every commit is an fsync (milliseconds on a real
//! disk), so one transaction per write would cap the ledger at a few hundred writes a second
//! whatever the concurrency. Writers that arrive while another holds the connection join its
//! transaction instead: each runs its own statements inside a savepoint (an error rolls back only
//! its own), and the last writer in line commits for all of them, one fsync per batch. No writer
//! returns before the commit that holds its change is durable, so "recorded before sent" holds
//! exactly as with one transaction per write; a failed commit fails every writer of the batch.
//! Readers commit an open batch before they read, so nothing uncommitted is ever read.
//! Several host instances on several machines are the job of a PostgreSQL implementation of the
//! same [`Ledger`] trait, not of this one.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_plugin_api::{Outcome, WebhookEvent};
use rusqlite::{Connection, OptionalExtension, Params, Row, TransactionBehavior};

use super::rules::{self, EntryRow};
use super::{
    Begin, Entry, EntryState, HistoryEvent, Ledger, LedgerError, ListFilter, NewEntry, Settlement,
    StoredEvent,
};

/// How long a statement waits for another process's write lock before failing: long enough to
/// ride out a checkpoint or another process's transaction, short enough that a wedged file shows
/// up as an error rather than a hung request.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per version: `MIGRATIONS[n]` takes a database from version `n` to
/// `n + 1`. Applied migrations are never edited; a change is a new migration appended here.
///
/// Tables are `STRICT`, so a column declared `INTEGER` refuses a floating-point value: money is
/// integer minor units plus a currency code, never `REAL`.
pub(super) const MIGRATIONS: &[&str] = &[
    // Version 1: entries, their history, and received webhook events.
    "
    CREATE TABLE entries (
        seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
        id                  TEXT NOT NULL UNIQUE,
        provider            TEXT NOT NULL,
        account             TEXT NOT NULL,
        operation           TEXT NOT NULL,
        idempotency_key     TEXT,
        request_hash        TEXT NOT NULL,
        command_json        TEXT NOT NULL,
        state               TEXT NOT NULL CHECK (state IN
            ('sending', 'succeeded', 'pending', 'failed', 'unknown', 'needs_operator')),
        amount_minor_units  INTEGER,
        amount_currency     TEXT,
        provider_reference  TEXT,
        outcome_json        TEXT,
        refusal_code        TEXT,
        refusal_message     TEXT,
        operator_flag       TEXT,
        created_at_unix     INTEGER NOT NULL,
        updated_at_unix     INTEGER NOT NULL,
        CHECK ((amount_minor_units IS NULL) = (amount_currency IS NULL)),
        UNIQUE (provider, account, idempotency_key)
    ) STRICT;
    CREATE INDEX entries_by_state ON entries (state, updated_at_unix);
    CREATE INDEX entries_by_provider_reference ON entries (provider, provider_reference);
    CREATE INDEX entries_by_created ON entries (created_at_unix);

    CREATE TABLE entry_history (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        entry_id   TEXT NOT NULL REFERENCES entries (id),
        at_unix    INTEGER NOT NULL,
        state      TEXT NOT NULL,
        detail     TEXT NOT NULL
    ) STRICT;
    CREATE INDEX entry_history_by_entry ON entry_history (entry_id, seq);

    CREATE TABLE webhook_events (
        sequence          INTEGER PRIMARY KEY AUTOINCREMENT,
        provider          TEXT NOT NULL,
        account           TEXT NOT NULL,
        event_id          TEXT NOT NULL,
        event_json        TEXT NOT NULL,
        received_at_unix  INTEGER NOT NULL,
        UNIQUE (provider, event_id)
    ) STRICT;
    ",
    // Version 2: who asked for each entry (an API key's name, `cli`, an embedder's name) and who
    // took each step a person took (an operator's settlement). Never a key itself.
    "
    ALTER TABLE entries ADD COLUMN actor TEXT;
    ALTER TABLE entry_history ADD COLUMN actor TEXT;
    ",
    // Version 3: the same tables, rebuilt for a cheaper write (every row, `seq` and index kept).
    // - `state` is checked with `=` and `OR`: SQLite evaluates a `CHECK (x IN (...))` of more than
    //   two constants by building a temporary index of the list, on every insert and update.
    // - `seq` is a plain `INTEGER PRIMARY KEY`, without `AUTOINCREMENT`, which wrote the
    //   `sqlite_sequence` table (one more page in the WAL) on every insert. Entries and history
    //   rows are never deleted, so the next rowid (the largest plus one) still only grows: what
    //   `AUTOINCREMENT` adds is never reusing a deleted row's number, and no row is deleted.
    //   (`webhook_events.sequence` keeps it: the forwarder's position is one of its numbers.)
    // Runs with foreign keys off (`migrate`), which SQLite requires for rebuilding a table that
    // another references; `migrate` checks every reference before it commits.
    "
    CREATE TABLE entries_v3 (
        seq                 INTEGER PRIMARY KEY,
        id                  TEXT NOT NULL UNIQUE,
        provider            TEXT NOT NULL,
        account             TEXT NOT NULL,
        operation           TEXT NOT NULL,
        idempotency_key     TEXT,
        request_hash        TEXT NOT NULL,
        command_json        TEXT NOT NULL,
        state               TEXT NOT NULL CHECK (state = 'sending' OR state = 'succeeded'
            OR state = 'pending' OR state = 'failed' OR state = 'unknown'
            OR state = 'needs_operator'),
        amount_minor_units  INTEGER,
        amount_currency     TEXT,
        provider_reference  TEXT,
        outcome_json        TEXT,
        refusal_code        TEXT,
        refusal_message     TEXT,
        operator_flag       TEXT,
        created_at_unix     INTEGER NOT NULL,
        updated_at_unix     INTEGER NOT NULL,
        actor               TEXT,
        CHECK ((amount_minor_units IS NULL) = (amount_currency IS NULL)),
        UNIQUE (provider, account, idempotency_key)
    ) STRICT;
    INSERT INTO entries_v3 (seq, id, provider, account, operation, idempotency_key, request_hash,
        command_json, state, amount_minor_units, amount_currency, provider_reference,
        outcome_json, refusal_code, refusal_message, operator_flag, created_at_unix,
        updated_at_unix, actor)
    SELECT seq, id, provider, account, operation, idempotency_key, request_hash, command_json,
        state, amount_minor_units, amount_currency, provider_reference, outcome_json,
        refusal_code, refusal_message, operator_flag, created_at_unix, updated_at_unix, actor
    FROM entries;
    DROP TABLE entries;
    ALTER TABLE entries_v3 RENAME TO entries;
    CREATE INDEX entries_by_state ON entries (state, updated_at_unix);
    CREATE INDEX entries_by_provider_reference ON entries (provider, provider_reference);
    CREATE INDEX entries_by_created ON entries (created_at_unix);

    CREATE TABLE entry_history_v3 (
        seq        INTEGER PRIMARY KEY,
        entry_id   TEXT NOT NULL REFERENCES entries (id),
        at_unix    INTEGER NOT NULL,
        state      TEXT NOT NULL,
        detail     TEXT NOT NULL,
        actor      TEXT
    ) STRICT;
    INSERT INTO entry_history_v3 (seq, entry_id, at_unix, state, detail, actor)
    SELECT seq, entry_id, at_unix, state, detail, actor FROM entry_history;
    DROP TABLE entry_history;
    ALTER TABLE entry_history_v3 RENAME TO entry_history;
    CREATE INDEX entry_history_by_entry ON entry_history (entry_id, seq);
    DELETE FROM sqlite_sequence WHERE name IN ('entries', 'entry_history');
    ",
    // Version 4: two fewer index pages written per charge.
    // - `entries_by_created` is dropped: no query used it (the listing's optional time bounds
    //   sit inside `?n IS NULL OR …` terms, which no index serves; it walks `seq` instead), yet
    //   every begin wrote it.
    // - `entries_by_provider_reference` keeps only entries that have a provider reference: a
    //   begin (none yet) no longer writes it, and the lookups by reference (`= ?`, which implies
    //   `IS NOT NULL`) still use it.
    // PostgreSQL keeps both: its planner can serve a time-bounded listing from
    // `entries_by_created` once the bounds are known, and a partial index measured no gain there
    // (BENCHMARKS.md, run P) while its build would hold every host's writes during the migration.
    "
    DROP INDEX entries_by_created;
    DROP INDEX entries_by_provider_reference;
    CREATE INDEX entries_by_provider_reference ON entries (provider, provider_reference)
        WHERE provider_reference IS NOT NULL;
    ",
];

/// The entries a webhook event may concern (`?1` provider, `?2` the host's reference, `?3` the
/// provider's, which may be NULL), oldest first. Two index searches joined by `UNION ALL`, not
/// one `WHERE provider = ?1 AND (id = ?2 OR …)`: without table statistics (a ledger is never
/// `ANALYZE`d) SQLite's planner served that `OR` by walking every entry of the provider
/// (`EXPLAIN QUERY PLAN`: `SEARCH entries USING INDEX … (provider=?)`), a cost that grows with
/// the ledger; this form is two index searches and row lookups whatever the statistics say
/// (`sqlite_only.rs` checks the plan). An entry found by both is one `seq`, listed once by `IN`.
pub(crate) fn event_candidates_sql() -> String {
    format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE seq IN ( \
             SELECT seq FROM entries WHERE id = ?2 AND provider = ?1 \
             UNION ALL \
             SELECT seq FROM entries WHERE provider = ?1 AND provider_reference = ?3) \
         ORDER BY seq"
    )
}

/// The columns [`read_entry_row`] expects, in its order.
const ENTRY_COLUMNS: &str = "id, provider, account, operation, idempotency_key, request_hash, \
    command_json, state, amount_minor_units, amount_currency, provider_reference, outcome_json, \
    refusal_code, refusal_message, operator_flag, created_at_unix, updated_at_unix, actor";

/// Most writes one commit may gather: bounds how long the first writer of a batch waits.
const MAX_BATCH_WRITES: usize = 64;

/// The connection and the batch of writes waiting for its commit.
pub(super) struct Shared {
    pub(super) connection: Connection,
    /// How many writes the open batch holds, when one is open. Batches are numbered in order
    /// and one at a time, so the open one is always number `ended + 1`.
    open: Option<usize>,
    /// Every batch up to this number has ended (committed or failed).
    ended: u64,
    /// The last few batches whose commit failed, with the error.
    failed: VecDeque<(u64, String)>,
    /// The thread holding the open batch for [`Ledger::write_together`]: its writes leave the
    /// batch open, and another thread's write that joins waits for the holder's commit.
    held_by: Option<std::thread::ThreadId>,
}

/// The connection with no write batch open: what readers get.
struct ReadGuard<'a>(MutexGuard<'a, Shared>);

impl Deref for ReadGuard<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.0.connection
    }
}

/// How often the background thread checkpoints the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A thread with its own connection that checkpoints the WAL, so that no write waits for it.
/// It stops when the ledger is dropped.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Self> {
        let connection = Connection::open(path).ok()?;
        connection.busy_timeout(BUSY_TIMEOUT).ok()?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gatehouse-ledger-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(error) =
                        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(%error, "ledger checkpoint failed; retried in a second");
                    }
                }
            })
            .ok()?;
        Some(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A read-only connection to the ledger file at `path` (see [`SqliteLedger::scanner`]).
fn open_scanner(path: &Path) -> Option<Connection> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .inspect_err(|error| {
            tracing::warn!(%error, "no read-only ledger connection; counts read through the writer's")
        })
        .ok()?;
    connection.busy_timeout(BUSY_TIMEOUT).ok()?;
    Some(connection)
}

/// The embedded [`Ledger`]: a SQLite file (or memory, for tests).
pub struct SqliteLedger {
    shared: Mutex<Shared>,
    /// Signalled whenever a batch ends.
    batch_ended: Condvar,
    /// Writers waiting for the connection: while there are some, a writer leaves the commit to
    /// the last of them.
    waiting_writers: AtomicUsize,
    /// The background checkpoints of an on-disk ledger (none in memory).
    checkpointer: Option<Checkpointer>,
    /// A read-only connection of its own (on disk; none in memory) for the reads that scan the
    /// whole table (`count_by_state`, a `/metrics` scrape): under WAL it reads beside the
    /// writer, so a scan that grows with the ledger never holds the writers' lock. What it
    /// cannot see is the open batch, whose writers have not been answered yet.
    scanner: Option<Mutex<Connection>>,
    /// The file's path (or `:memory:`), for error messages.
    location: String,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteLedger {
    /// Opens (or creates, with its parent folders) the ledger file at `path` and brings its
    /// schema up to date.
    ///
    /// The file runs in WAL mode, so readers never block the writer, with `synchronous=FULL`:
    /// every commit is fsynced before it returns, so an entry written before a request is sent
    /// survives a power loss right after the send. WAL's default (`NORMAL`) could lose the last
    /// commits, which for a payment ledger means a charge the host no longer knows it made.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let location = path.display().to_string();
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|error| {
                LedgerError::Storage(format!(
                    "ledger {location}: cannot create the folder {}: {error}",
                    parent.display()
                ))
            })?;
        }
        let connection = Connection::open(path).map_err(|error| {
            LedgerError::Storage(format!("ledger {location}: cannot open: {error}"))
        })?;
        let mut ledger = Self::prepare(connection, location, true)?;
        // Checkpoints move the WAL back into the database file, fsyncing it: by default the
        // writer whose commit crosses 1000 WAL pages runs one, and a charge waits for it. A
        // thread of its own runs them instead (PASSIVE: it never blocks a writer). If it cannot
        // start, SQLite's automatic checkpoints stay on.
        if let Some(checkpointer) = Checkpointer::start(path) {
            let shared = ledger.lock_shared();
            if shared
                .connection
                .pragma_update(None, "wal_autocheckpoint", 0)
                .is_ok()
            {
                drop(shared);
                ledger.checkpointer = Some(checkpointer);
            }
        }
        // Without it, the scans read through the shared connection as every read does.
        ledger.scanner = open_scanner(path).map(Mutex::new);
        Ok(ledger)
    }

    /// A ledger that lives in memory and vanishes with the value: for tests.
    pub fn open_in_memory() -> Result<Self, LedgerError> {
        let location = ":memory:".to_string();
        let connection = Connection::open_in_memory().map_err(|error| {
            LedgerError::Storage(format!("ledger {location}: cannot open: {error}"))
        })?;
        Self::prepare(connection, location, false)
    }

    /// Replaces the clock (Unix seconds) used for timestamps: tests use it to control time.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Where the ledger lives: the file's path, or `:memory:`.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn prepare(
        mut connection: Connection,
        location: String,
        on_disk: bool,
    ) -> Result<Self, LedgerError> {
        let fail = |action: &str, error: rusqlite::Error| {
            LedgerError::Storage(format!("ledger {location}: {action}: {error}"))
        };
        // Every statement the ledger runs fits in the cache (rusqlite's default holds 16).
        connection.set_prepared_statement_cache_capacity(64);
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|error| fail("cannot set the busy timeout", error))?;
        let journal_mode: String = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|error| fail("cannot switch to WAL mode", error))?;
        // An in-memory database reports `memory`; a file that cannot do WAL (some network file
        // systems) would silently keep a rollback journal, with different locking: refuse it.
        if on_disk && !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Storage(format!(
                "ledger {location}: the file system refused WAL mode (journal mode is `{journal_mode}`)"
            )));
        }
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|error| fail("cannot set synchronous=FULL", error))?;
        // Off while migrating (a migration may rebuild a table another references; `migrate`
        // checks every reference itself before each commit), on for everything after.
        connection
            .pragma_update(None, "foreign_keys", false)
            .map_err(|error| fail("cannot disable foreign keys for the migrations", error))?;
        migrate(&mut connection, &location, unix_now())?;
        connection
            .pragma_update(None, "foreign_keys", true)
            .map_err(|error| fail("cannot enable foreign keys", error))?;
        Ok(Self {
            shared: Mutex::new(Shared {
                connection,
                open: None,
                ended: 0,
                failed: VecDeque::new(),
                held_by: None,
            }),
            batch_ended: Condvar::new(),
            waiting_writers: AtomicUsize::new(0),
            checkpointer: None,
            scanner: None,
            location,
            clock: Box::new(unix_now),
        })
    }

    pub(super) fn lock_shared(&self) -> MutexGuard<'_, Shared> {
        // A panic while the lock was held cannot have left a half-done change behind: `write`
        // rolls a panicking writer's savepoint back before unwinding further. The connection is
        // sound, so the poison flag carries no information worth failing every later call for.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection for reading, after committing any open write batch (its writers are
    /// waiting for that commit anyway), so that a read never sees an uncommitted change.
    fn connection(&self) -> ReadGuard<'_> {
        let mut shared = self.lock_shared();
        if shared.open.is_some() {
            self.commit_batch(&mut shared);
        }
        ReadGuard(shared)
    }

    fn storage_error(&self, action: &str, error: impl fmt::Display) -> LedgerError {
        LedgerError::Storage(format!("ledger {}: {action}: {error}", self.location))
    }

    /// Commits the open batch and wakes its writers; a failed commit is rolled back and
    /// remembered for them.
    fn commit_batch(&self, shared: &mut Shared) {
        if shared.open.take().is_none() {
            return;
        }
        let batch = shared.ended + 1;
        if let Err(error) = run_cached(&shared.connection, "COMMIT") {
            let _ = shared.connection.execute_batch("ROLLBACK");
            shared.failed.push_back((batch, error.to_string()));
            if shared.failed.len() > 16 {
                shared.failed.pop_front();
            }
        }
        shared.ended = batch;
        self.batch_ended.notify_all();
    }

    /// Runs `body` atomically and returns once the batch that holds its change is committed; an
    /// error (or a panic) in `body` undoes its own statements only. See the module docs on group
    /// commit.
    ///
    /// The first write of a batch runs directly in the batch's transaction: nothing else is in it
    /// yet, so undoing it is rolling the transaction back, and it pays for no savepoint (a
    /// savepoint copies every page the write touches into a statement journal first). Every later
    /// write of the batch runs inside a savepoint of its own.
    pub(super) fn write<T>(
        &self,
        action: &str,
        body: impl FnOnce(&Connection, i64) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let now = (self.clock)();
        self.waiting_writers.fetch_add(1, Ordering::SeqCst);
        let mut shared = self.lock_shared();
        self.waiting_writers.fetch_sub(1, Ordering::SeqCst);
        let first = shared.open.is_none();
        if first {
            // A transaction that no batch owns can only be what a failed rollback left behind.
            if !shared.connection.is_autocommit() {
                let _ = shared.connection.execute_batch("ROLLBACK");
            }
            run_cached(&shared.connection, "BEGIN IMMEDIATE")
                .map_err(|error| self.storage_error(action, error))?;
        }
        let writes = shared.open.get_or_insert(0);
        *writes += 1;
        let full = *writes >= MAX_BATCH_WRITES;
        let batch = shared.ended + 1;
        let result = if first {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                body(&shared.connection, now)
            }));
            // On an error or a panic the batch holds this write alone: the whole transaction is
            // rolled back. Nobody waits for a batch that never committed; the next write opens
            // a new one.
            match run {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => {
                    shared.open = None;
                    return match shared.connection.execute_batch("ROLLBACK") {
                        Ok(()) => Err(error),
                        Err(rollback) => Err(self.storage_error(action, rollback)),
                    };
                }
                Err(panic) => {
                    shared.open = None;
                    let _ = shared.connection.execute_batch("ROLLBACK");
                    drop(shared);
                    std::panic::resume_unwind(panic);
                }
            }
        } else {
            self.write_in_savepoint(&mut shared, action, now, body)
        };
        let held_by = shared.held_by;
        if held_by == Some(std::thread::current().id()) {
            // `write_together` commits at its end; a full batch is committed now and the next
            // write opens another.
            if full {
                self.commit_batch(&mut shared);
            }
        } else if held_by.is_none() && (full || self.waiting_writers.load(Ordering::SeqCst) == 0) {
            self.commit_batch(&mut shared);
        } else {
            // A writer is queued behind this one: it (or the last one queued) commits for all.
            while shared.ended < batch {
                shared = self
                    .batch_ended
                    .wait(shared)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        if let Some((_, error)) = shared.failed.iter().find(|(failed, _)| *failed == batch) {
            return Err(self.storage_error(action, format!("commit failed: {error}")));
        }
        result
    }

    /// Runs a write that joins a batch other writes are in, inside a savepoint: an error or a
    /// panic rolls back its own statements and leaves theirs.
    fn write_in_savepoint<T>(
        &self,
        shared: &mut MutexGuard<'_, Shared>,
        action: &str,
        now: i64,
        body: impl FnOnce(&Connection, i64) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        if let Err(error) = run_cached(&shared.connection, "SAVEPOINT ledger_write") {
            return Err(self.storage_error(action, error));
        }
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            body(&shared.connection, now)
        }));
        let ended = if matches!(run, Ok(Ok(_))) {
            run_cached(&shared.connection, "RELEASE ledger_write")
        } else {
            shared
                .connection
                .execute_batch("ROLLBACK TO ledger_write; RELEASE ledger_write")
        };
        match run {
            Err(panic) => {
                // Nobody else may be left waiting for this batch: commit it first.
                self.commit_batch(shared);
                std::panic::resume_unwind(panic);
            }
            Ok(result) => match ended {
                Ok(()) => result,
                Err(error) => Err(self.storage_error(action, error)),
            },
        }
    }

    fn entries(
        &self,
        connection: &Connection,
        action: &str,
        sql: &str,
        params: impl Params,
    ) -> Result<Vec<Entry>, LedgerError> {
        let rows = query_rows(connection, sql, params, read_entry_row)
            .map_err(|error| self.storage_error(action, error))?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    fn entry_by_id(
        &self,
        connection: &Connection,
        action: &str,
        id: &str,
    ) -> Result<Option<Entry>, LedgerError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ?1");
        Ok(self.entries(connection, action, &sql, [id])?.pop())
    }

    fn required_entry(
        &self,
        connection: &Connection,
        action: &str,
        id: &str,
    ) -> Result<Entry, LedgerError> {
        self.entry_by_id(connection, action, id)?
            .ok_or_else(|| LedgerError::NotFound { id: id.to_string() })
    }

    fn entry_by_key(
        &self,
        connection: &Connection,
        action: &str,
        provider: &str,
        account: &str,
        idempotency_key: &str,
    ) -> Result<Option<Entry>, LedgerError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries \
             WHERE provider = ?1 AND account = ?2 AND idempotency_key = ?3"
        );
        Ok(self
            .entries(
                connection,
                action,
                &sql,
                [provider, account, idempotency_key],
            )?
            .pop())
    }

    /// Writes the mutable part of `entry` back, stamps it `now`, and appends `detail` to its
    /// history with the entry's (new) state.
    fn save(
        &self,
        transaction: &Connection,
        action: &str,
        entry: &mut Entry,
        now: i64,
        detail: &str,
    ) -> Result<(), LedgerError> {
        self.save_unless_changed(transaction, action, entry, now, detail, None)
            .map(|_| ())
    }

    /// [`SqliteLedger::save`]; with `begun_at`, only while the stored entry is still as
    /// [`Ledger::begin`] wrote it then. Whether it was saved.
    fn save_unless_changed(
        &self,
        transaction: &Connection,
        action: &str,
        entry: &mut Entry,
        now: i64,
        detail: &str,
        begun_at: Option<i64>,
    ) -> Result<bool, LedgerError> {
        entry.updated_at_unix = now;
        let saved = self.update_entry(transaction, action, entry, now, begun_at)?;
        if begun_at.is_some() && saved == 0 {
            return Ok(false);
        }
        self.append_history(
            transaction,
            action,
            &entry.id,
            now,
            entry.state,
            detail,
            None,
        )?;
        Ok(true)
    }

    /// The entry's outcome as the `outcome_json` column keeps it.
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

    /// Writes the mutable part of `entry`, stamped `now`; with `begun_at`, only while the stored
    /// entry is still as [`Ledger::begin`] wrote it at that time. Counts the rows written.
    fn update_entry(
        &self,
        transaction: &Connection,
        action: &str,
        entry: &Entry,
        now: i64,
        begun_at: Option<i64>,
    ) -> Result<usize, LedgerError> {
        macro_rules! set {
            () => {
                "UPDATE entries SET state = ?2, provider_reference = ?3, outcome_json = ?4, \
                 refusal_code = ?5, refusal_message = ?6, operator_flag = ?7, \
                 updated_at_unix = ?8 WHERE id = ?1"
            };
        }
        const SET: &str = set!();
        const SET_IF_AS_BEGUN: &str = concat!(
            set!(),
            " AND state = 'sending' AND provider_reference IS NULL AND outcome_json IS NULL \
             AND refusal_code IS NULL AND refusal_message IS NULL AND operator_flag IS NULL \
             AND updated_at_unix = ?9"
        );
        let outcome_json = self.outcome_json(action, entry)?;
        let refusal_code = entry.refusal.as_ref().map(|refusal| &refusal.code);
        let refusal_message = entry.refusal.as_ref().map(|refusal| &refusal.message);
        let state = entry.state.as_str();
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![
            &entry.id,
            &state,
            &entry.provider_reference,
            &outcome_json,
            &refusal_code,
            &refusal_message,
            &entry.operator_flag,
            &now,
        ];
        let sql = match &begun_at {
            None => SET,
            Some(at) => {
                params.push(at);
                SET_IF_AS_BEGUN
            }
        };
        execute_cached(transaction, sql, params.as_slice())
            .map_err(|error| self.storage_error(action, error))
    }

    /// Writes the mutable part of `entry` back, stamped `now`, without a history event.
    fn save_entry(
        &self,
        transaction: &Connection,
        action: &str,
        entry: &Entry,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.update_entry(transaction, action, entry, now, None)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn append_history(
        &self,
        transaction: &Connection,
        action: &str,
        id: &str,
        now: i64,
        state: EntryState,
        detail: &str,
        actor: Option<&str>,
    ) -> Result<(), LedgerError> {
        execute_cached(
            transaction,
            "INSERT INTO entry_history (entry_id, at_unix, state, detail, actor) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, now, state.as_str(), detail, actor],
        )
        .map_err(|error| self.storage_error(action, error))?;
        Ok(())
    }

    fn unresolved_query(
        &self,
        updated_before_unix: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Entry>, LedgerError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries \
             WHERE state IN ('sending', 'pending', 'unknown') \
               AND (?1 IS NULL OR updated_at_unix < ?1) \
             ORDER BY updated_at_unix ASC, seq ASC LIMIT ?2"
        );
        let connection = self.connection();
        self.entries(
            &connection,
            "list unresolved entries",
            &sql,
            rusqlite::params![updated_before_unix, sql_limit(limit)],
        )
    }
}

impl Ledger for SqliteLedger {
    fn probe_write(&self) -> Result<(), LedgerError> {
        // The header's `user_version` (unused by the schema, which keeps its own version table)
        // takes the write: one page, through the same group commit as every entry.
        self.write("probe a write", |connection, now| {
            connection
                .pragma_update(None, "user_version", now.rem_euclid(i64::from(i32::MAX)))
                .map_err(|error| self.storage_error("probe a write", error))
        })
    }

    fn batches_on_one_thread(&self) -> bool {
        true
    }

    fn write_together(&self, writes: &mut dyn FnMut()) -> Result<(), LedgerError> {
        let first_batch = {
            let mut shared = self.lock_shared();
            shared.held_by = Some(std::thread::current().id());
            shared.ended + 1
        };
        // Cleared and committed even when `writes` panics: nobody may be left waiting.
        struct Release<'a>(&'a SqliteLedger);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut shared = self.0.lock_shared();
                shared.held_by = None;
                self.0.commit_batch(&mut shared);
            }
        }
        let release = Release(self);
        writes();
        drop(release);
        let shared = self.lock_shared();
        match shared
            .failed
            .iter()
            .find(|(batch, _)| *batch >= first_batch)
        {
            Some((_, error)) => {
                Err(self.storage_error("write together", format!("commit failed: {error}")))
            }
            None => Ok(()),
        }
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
        let inserted = self.write(action, |transaction, now| {
            if let Some(key) = &new.idempotency_key
                && let Some(existing) =
                    self.entry_by_key(transaction, action, &new.provider, &new.account, key)?
            {
                return if existing.request_hash == new.request_hash {
                    Ok(Inserted::Existing(existing))
                } else {
                    Err(LedgerError::KeyReused { key: key.clone() })
                };
            }
            let amount = new.command.amount();
            execute_cached(
                transaction,
                "INSERT INTO entries (id, provider, account, operation, idempotency_key, \
                     request_hash, command_json, state, amount_minor_units, amount_currency, \
                     created_at_unix, updated_at_unix, actor) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'sending', ?8, ?9, ?10, ?10, ?11)",
                rusqlite::params![
                    new.id,
                    new.provider,
                    new.account,
                    new.operation.as_str(),
                    new.idempotency_key,
                    new.request_hash,
                    command_json,
                    amount.map(|money| money.minor_units),
                    amount.map(|money| money.currency.code()),
                    now,
                    new.actor,
                ],
            )
            .map_err(|error| {
                // The key was looked up above in this write, so the one unique column left to
                // collide is the id (no separate look-up: it was a read of every charge).
                if is_unique_violation_of(&error, "entries.id") {
                    LedgerError::DuplicateId { id: new.id.clone() }
                } else {
                    self.storage_error(action, error)
                }
            })?;
            self.append_history(
                transaction,
                action,
                &new.id,
                now,
                EntryState::Sending,
                "created",
                None,
            )?;
            Ok(Inserted::New { at: now })
        })?;
        Ok(match inserted {
            Inserted::Existing(entry) => Begin::Existing(entry),
            // What the insert wrote, built from what it was given rather than read back (and
            // its command parsed again) on every charge.
            Inserted::New { at } => Begin::Created(new.into_sending_entry(at)),
        })
    }

    fn record_outcome(&self, id: &str, outcome: &Outcome) -> Result<Entry, LedgerError> {
        let action = "record an outcome";
        self.write(action, |transaction, now| {
            let mut entry = self.required_entry(transaction, action, id)?;
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
        self.write(action, |transaction, now| {
            // The single writer holds the file: nothing writes between this update and the
            // history row. The update matches only while the entry is still as begun.
            let begun_at = begun.updated_at_unix;
            let mut entry = begun;
            let detail = rules::apply_outcome(&mut entry, outcome);
            if self.save_unless_changed(
                transaction,
                action,
                &mut entry,
                now,
                &detail,
                Some(begun_at),
            )? {
                return Ok(entry);
            }
            // Written in between (a webhook, the reconciler): record against what is stored.
            let mut stored = self.required_entry(transaction, action, &entry.id)?;
            let detail = rules::apply_outcome(&mut stored, outcome);
            self.save(transaction, action, &mut stored, now, &detail)?;
            Ok(stored)
        })
    }

    fn record_refusal(&self, id: &str, code: &str, message: &str) -> Result<Entry, LedgerError> {
        let action = "record a refusal";
        self.write(action, |transaction, now| {
            let mut entry = self.required_entry(transaction, action, id)?;
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
            let mut entry = self.required_entry(transaction, action, id)?;
            let detail = rules::apply_transient_refusal(&mut entry, code, message)?;
            execute_cached(
                transaction,
                "UPDATE entries SET idempotency_key = NULL WHERE id = ?1",
                rusqlite::params![id],
            )
            .map_err(|error| self.storage_error(action, error))?;
            self.save(transaction, action, &mut entry, now, &detail)?;
            Ok(entry)
        })
    }

    fn flag_for_operator(&self, id: &str, reason: &str) -> Result<Entry, LedgerError> {
        let action = "flag an entry for an operator";
        self.write(action, |transaction, now| {
            let mut entry = self.required_entry(transaction, action, id)?;
            let detail = rules::apply_flag(&mut entry, reason);
            self.save(transaction, action, &mut entry, now, &detail)?;
            Ok(entry)
        })
    }

    fn settle(&self, id: &str, settlement: &Settlement) -> Result<Entry, LedgerError> {
        let action = "settle an entry by hand";
        settlement.check(id)?;
        self.write(action, |transaction, now| {
            let mut entry = self.required_entry(transaction, action, id)?;
            if !entry.state.is_settleable() {
                return Err(LedgerError::NotSettleable {
                    id: id.to_string(),
                    state: entry.state,
                });
            }
            let detail = settlement.describe(entry.state);
            settlement.apply(&mut entry);
            entry.updated_at_unix = now;
            self.save_entry(transaction, action, &entry, now)?;
            self.append_history(
                transaction,
                action,
                id,
                now,
                entry.state,
                &detail,
                Some(&settlement.actor),
            )?;
            Ok(entry)
        })
    }

    fn get(&self, id: &str) -> Result<Option<Entry>, LedgerError> {
        let connection = self.connection();
        self.entry_by_id(&connection, "read an entry", id)
    }

    fn find_by_key(
        &self,
        provider: &str,
        account: &str,
        idempotency_key: &str,
    ) -> Result<Option<Entry>, LedgerError> {
        let connection = self.connection();
        self.entry_by_key(
            &connection,
            "find an entry by key",
            provider,
            account,
            idempotency_key,
        )
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Entry>, LedgerError> {
        let connection = self.connection();
        // The cursor is the entry's place in the insertion order (`seq`, its rowid): a keyset,
        // so a page never shifts when entries are inserted between two page reads.
        let before_seq: Option<i64> = match &filter.starting_after {
            None => None,
            Some(id) => {
                let seq = connection
                    .query_row("SELECT seq FROM entries WHERE id = ?1", [id], |row| {
                        row.get::<_, i64>(0)
                    })
                    .optional()
                    .map_err(|error| self.storage_error("find a paging cursor", error))?;
                Some(seq.ok_or_else(|| LedgerError::NotFound { id: id.clone() })?)
            }
        };
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries \
             WHERE (?1 IS NULL OR provider = ?1) \
               AND (?2 IS NULL OR account = ?2) \
               AND (?3 IS NULL OR state = ?3 \
                    OR (?3 = 'needs_operator' AND operator_flag IS NOT NULL)) \
               AND (?5 IS NULL OR seq < ?5) \
               AND (?6 IS NULL OR created_at_unix >= ?6) \
               AND (?7 IS NULL OR created_at_unix < ?7) \
             ORDER BY seq DESC LIMIT ?4"
        );
        self.entries(
            &connection,
            "list entries",
            &sql,
            rusqlite::params![
                filter.provider,
                filter.account,
                filter.state.map(EntryState::as_str),
                sql_limit(filter.limit),
                before_seq,
                filter.created_after_unix,
                filter.created_before_unix,
            ],
        )
    }

    fn count_by_state(&self) -> Result<Vec<(EntryState, u64)>, LedgerError> {
        let action = "count entries by state";
        const COUNT: &str = "SELECT state, COUNT(*) FROM entries GROUP BY state";
        let counted = |row: &Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?));
        let rows = match &self.scanner {
            Some(scanner) => {
                let scanner = scanner.lock().unwrap_or_else(PoisonError::into_inner);
                query_rows(&scanner, COUNT, [], counted)
            }
            None => query_rows(&self.connection(), COUNT, [], counted),
        }
        .map_err(|error| self.storage_error(action, error))?;
        rows.into_iter()
            .map(|(state, count)| {
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
        let connection = self.connection();
        let rows = query_rows(
            &connection,
            "SELECT at_unix, state, detail, actor FROM entry_history WHERE entry_id = ?1 \
             ORDER BY seq",
            [id],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            },
        )
        .map_err(|error| self.storage_error(action, error))?;
        rows.into_iter()
            .map(|(at_unix, state, detail, actor)| {
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
            let inserted = execute_cached(
                    transaction,
                    "INSERT INTO webhook_events (provider, account, event_id, event_json, received_at_unix) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (provider, event_id) DO NOTHING",
                    rusqlite::params![provider, account, event.event_id, event_json, now],
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
            let candidates = self.entries(
                transaction,
                action,
                &event_candidates_sql(),
                rusqlite::params![provider, event.reference, event.provider_reference],
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
        // Sequence numbers are handed out inside write transactions, which SQLite runs one at a
        // time, so they are assigned in commit order: a reader that resumes after the last number
        // it saw cannot miss an event that commits later with a smaller one.
        let action = "read webhook events";
        let connection = self.connection();
        let rows = query_rows(
            &connection,
            "SELECT sequence, provider, account, event_json, received_at_unix FROM webhook_events \
             WHERE sequence > ?1 ORDER BY sequence LIMIT ?2",
            rusqlite::params![after, sql_limit(limit)],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            },
        )
        .map_err(|error| self.storage_error(action, error))?;
        rows.into_iter()
            .map(
                |(sequence, provider, account, event_json, received_at_unix)| {
                    let event = serde_json::from_str(&event_json).map_err(|error| {
                        LedgerError::Corrupt {
                            id: format!("event #{sequence}"),
                            problem: format!("the event JSON is unreadable: {error}"),
                        }
                    })?;
                    Ok(StoredEvent {
                        sequence,
                        provider,
                        account,
                        event,
                        received_at_unix,
                    })
                },
            )
            .collect()
    }
}

/// Brings the schema to the latest version, one migration per transaction.
fn migrate(connection: &mut Connection, location: &str, now: i64) -> Result<(), LedgerError> {
    let fail = |action: &str, error: rusqlite::Error| {
        LedgerError::Storage(format!("ledger {location}: {action}: {error}"))
    };
    let latest = MIGRATIONS.len() as i64;
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        // The version is read again inside each write transaction, so two processes opening a new
        // file at the same moment cannot both apply the same migration.
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|error| fail("begin a migration", error))?;
        transaction
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (
                    version          INTEGER PRIMARY KEY,
                    applied_at_unix  INTEGER NOT NULL
                ) STRICT;",
            )
            .map_err(|error| fail("create the schema_version table", error))?;
        let current: i64 = transaction
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |row| row.get(0),
            )
            .map_err(|error| fail("read the schema version", error))?;
        if current > latest {
            return Err(LedgerError::Storage(format!(
                "ledger {location}: the schema is version {current}, newer than the {latest} this \
                 host knows; it was written by a newer Gatehouse"
            )));
        }
        if current >= version {
            continue;
        }
        transaction
            .execute_batch(migration)
            .map_err(|error| fail(&format!("apply schema migration {version}"), error))?;
        // Foreign keys are off while migrating: a migration that broke a reference is refused
        // here, before it commits.
        let broken: i64 = transaction
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })
            .map_err(|error| fail(&format!("check schema migration {version}"), error))?;
        if broken > 0 {
            return Err(LedgerError::Storage(format!(
                "ledger {location}: schema migration {version} would leave {broken} rows \
                 referring to rows that do not exist; nothing was changed"
            )));
        }
        transaction
            .execute(
                "INSERT INTO schema_version (version, applied_at_unix) VALUES (?1, ?2)",
                rusqlite::params![version, now],
            )
            .map_err(|error| fail(&format!("record schema migration {version}"), error))?;
        transaction
            .commit()
            .map_err(|error| fail(&format!("commit schema migration {version}"), error))?;
    }
    Ok(())
}

/// Reads the columns of [`ENTRY_COLUMNS`], in that order.
fn read_entry_row(row: &Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok(EntryRow {
        id: row.get(0)?,
        provider: row.get(1)?,
        account: row.get(2)?,
        operation: row.get(3)?,
        idempotency_key: row.get(4)?,
        request_hash: row.get(5)?,
        command_json: row.get(6)?,
        state: row.get(7)?,
        amount_minor_units: row.get(8)?,
        amount_currency: row.get(9)?,
        provider_reference: row.get(10)?,
        outcome_json: row.get(11)?,
        refusal_code: row.get(12)?,
        refusal_message: row.get(13)?,
        operator_flag: row.get(14)?,
        created_at_unix: row.get(15)?,
        updated_at_unix: row.get(16)?,
        actor: row.get(17)?,
    })
}

fn query_rows<T>(
    connection: &Connection,
    sql: &str,
    params: impl Params,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, read)?;
    rows.collect()
}

/// Runs one statement through the connection's statement cache: a ledger write runs the same few
/// statements every time, and compiling SQL anew each time cost more than running it.
fn execute_cached(
    connection: &Connection,
    sql: &str,
    params: impl Params,
) -> rusqlite::Result<usize> {
    connection.prepare_cached(sql)?.execute(params)
}

/// Runs one parameterless statement (`BEGIN IMMEDIATE`, `COMMIT`, a savepoint's) through the
/// statement cache: compiling it anew, as `execute_batch` does, cost each charge eight compiles.
fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// What [`Ledger::begin`]'s write did.
// Made once per begin and matched at once (the reasoning of `Begin`): boxing buys nothing.
#[allow(clippy::large_enum_variant)]
enum Inserted {
    /// The key was there, with the same request.
    Existing(Entry),
    /// A new entry, written at this time.
    New { at: i64 },
}

/// Whether `error` is a UNIQUE constraint of `column` (`table.column`, as SQLite names it).
fn is_unique_violation_of(error: &rusqlite::Error, column: &str) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, Some(message)) => {
            failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && message.strip_prefix("UNIQUE constraint failed: ") == Some(column)
        }
        _ => false,
    }
}

/// SQLite's `LIMIT` takes a signed 64-bit integer; anything larger means "no limit" anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
