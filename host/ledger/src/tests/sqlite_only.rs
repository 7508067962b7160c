//! What only the SQLite ledger has: its file format, group commit and checkpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::*;

/// A ledger in memory with a clock the test moves by hand.
fn ledger() -> (SqliteLedger, Arc<AtomicI64>) {
    let clock = Arc::new(AtomicI64::new(START));
    let reader = Arc::clone(&clock);
    let ledger = SqliteLedger::open_in_memory()
        .expect("in-memory ledger opens")
        .with_clock(move || reader.load(Ordering::SeqCst));
    (ledger, clock)
}

#[test]
fn an_in_memory_ledger_keeps_the_contract_basics() {
    let (ledger, clock) = ledger();
    created(&ledger, "gh_1");
    tick(&clock);
    let entry = ledger
        .record_outcome("gh_1", &gatehouse_plugin_api::Outcome::succeeded())
        .expect("record");
    assert_eq!(entry.state, EntryState::Succeeded);
    assert_eq!(entry.updated_at_unix, START + 1);
    assert_eq!(ledger.location(), ":memory:");
}

#[test]
fn the_file_records_its_schema_version() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    drop(SqliteLedger::open(&path).expect("open"));
    let version: i64 = rusqlite::Connection::open(&path)
        .expect("open directly")
        .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .expect("schema version");
    assert_eq!(version, super::super::sqlite::MIGRATIONS.len() as i64);
    assert_eq!(version, 4);
}

#[test]
fn a_file_with_a_newer_schema_is_refused() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    drop(SqliteLedger::open(&path).expect("open"));
    rusqlite::Connection::open(&path)
        .expect("open directly")
        .execute(
            "INSERT INTO schema_version (version, applied_at_unix) VALUES (99, 0)",
            [],
        )
        .expect("pretend a newer host migrated it");
    let error = SqliteLedger::open(&path).expect_err("refused");
    assert!(error.to_string().contains("newer"), "{error}");
}

#[test]
fn money_columns_refuse_floating_point() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).expect("open");
    created(&ledger, "gh_1");
    let update = rusqlite::Connection::open(&path)
        .expect("open directly")
        .execute(
            "UPDATE entries SET amount_minor_units = 4.5 WHERE id = 'gh_1'",
            [],
        );
    let error = update.expect_err("a STRICT INTEGER column must refuse 4.5");
    assert!(error.to_string().contains("REAL"), "{error}");
}

#[test]
fn a_panicking_write_leaves_the_ledger_usable_and_unchanged() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_before");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = ledger.write("test a panic", |connection, now| -> Result<(), LedgerError> {
            connection
                .execute(
                    "INSERT INTO entry_history (entry_id, at_unix, state, detail) VALUES ('gh_before', ?1, 'sending', 'half')",
                    [now],
                )
                .expect("insert");
            panic!("a bug in a write");
        });
    }));
    assert!(panicked.is_err());
    assert_eq!(ledger.history("gh_before").expect("history").len(), 1);
    created(&ledger, "gh_after");
    assert_eq!(ledger.list(&ListFilter::default()).expect("list").len(), 2);
}

#[test]
fn checkpoints_run_in_the_background_not_in_a_write() {
    // The writer's connection never checkpoints (wal_autocheckpoint=0); the background thread
    // moves the WAL into the database file within about a second.
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).expect("open");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The database file's bytes, not its size: the migrations leave free pages (dropped
    // indexes) that new rows may fill without the file growing.
    let contents = |file: &std::path::Path| std::fs::read(file).unwrap_or_default();
    let before = contents(&path);
    for index in 0..50 {
        created(&ledger, &format!("gh_{index}"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while contents(&path) == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        contents(&path) != before,
        "the database file did not change: nothing was checkpointed ({} bytes)",
        before.len()
    );
    let autocheckpoint: i64 = ledger
        .lock_shared()
        .connection
        .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
        .expect("pragma");
    assert_eq!(autocheckpoint, 0, "writes must not checkpoint");
    assert_eq!(
        ledger
            .list(&ListFilter {
                limit: 1000,
                ..ListFilter::default()
            })
            .expect("list")
            .len(),
        50
    );
}

#[test]
fn a_file_ledger_has_no_peers() {
    // One process owns a SQLite ledger: an entry `sending` is this process's, or a crash's.
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    let first = SqliteLedger::open(&path).expect("open");
    created(&first, "gh_1");
    let second = SqliteLedger::open(&path).expect("open again");
    assert!(!second.sent_by_a_live_peer("gh_1").expect("ask"));
}

#[test]
fn a_version_1_ledger_file_migrates_and_keeps_its_entries_without_an_actor() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    {
        let connection = rusqlite::Connection::open(&path).expect("create");
        connection
            .execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, \
                 applied_at_unix INTEGER NOT NULL) STRICT;",
            )
            .expect("version table");
        connection
            .execute_batch(super::super::sqlite::MIGRATIONS[0])
            .expect("version 1");
        connection
            .execute("INSERT INTO schema_version VALUES (1, 0)", [])
            .expect("record version 1");
        let command = charge(500);
        connection
            .execute(
                "INSERT INTO entries (id, provider, account, operation, request_hash, \
                 command_json, state, created_at_unix, updated_at_unix) \
                 VALUES ('gh_old', 'paygateglobal', 'main', 'charge', ?1, ?2, 'unknown', 5, 5)",
                rusqlite::params![
                    request_hash("paygateglobal", "main", &command),
                    serde_json::to_string(&command).expect("json")
                ],
            )
            .expect("old entry");
        connection
            .execute(
                "INSERT INTO entry_history (entry_id, at_unix, state, detail) \
                 VALUES ('gh_old', 5, 'unknown', 'created')",
                [],
            )
            .expect("old history");
    }
    let ledger = SqliteLedger::open(&path).expect("migrates");
    let old = ledger.get("gh_old").expect("get").expect("kept");
    assert_eq!((old.state, old.actor), (EntryState::Unknown, None));
    assert_eq!(ledger.history("gh_old").expect("history")[0].actor, None);
    let settled = ledger
        .settle(
            "gh_old",
            &Settlement {
                state: EntryState::Failed,
                provider_reference: None,
                reason: "never reached the provider".into(),
                actor: "ops-settle".into(),
            },
        )
        .expect("an old entry settles");
    assert_eq!(settled.state, EntryState::Failed);
}

/// A version-2 file (the schema before the tables were rebuilt) with two entries and their
/// history, as a host of that version left it.
fn version_2_file(path: &std::path::Path) {
    let connection = rusqlite::Connection::open(path).expect("create");
    connection
        .execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, \
             applied_at_unix INTEGER NOT NULL) STRICT;",
        )
        .expect("version table");
    for (index, migration) in super::super::sqlite::MIGRATIONS[..2].iter().enumerate() {
        connection.execute_batch(migration).expect("old migration");
        connection
            .execute("INSERT INTO schema_version VALUES (?1, 0)", [index + 1])
            .expect("record the version");
    }
    let command = charge(500);
    for (seq, id, state) in [(7, "gh_a", "succeeded"), (9, "gh_b", "unknown")] {
        connection
            .execute(
                "INSERT INTO entries (seq, id, provider, account, operation, idempotency_key, \
                 request_hash, command_json, state, amount_minor_units, amount_currency, \
                 created_at_unix, updated_at_unix, actor) \
                 VALUES (?1, ?2, 'paygateglobal', 'main', 'charge', ?2, ?3, ?4, ?5, 500, 'XOF', \
                 5, 6, 'api:ops')",
                rusqlite::params![
                    seq,
                    id,
                    request_hash("paygateglobal", "main", &command),
                    serde_json::to_string(&command).expect("json"),
                    state
                ],
            )
            .expect("old entry");
        for detail in ["created", "outcome"] {
            connection
                .execute(
                    "INSERT INTO entry_history (entry_id, at_unix, state, detail) \
                     VALUES (?1, 5, ?2, ?3)",
                    rusqlite::params![id, state, detail],
                )
                .expect("old history");
        }
    }
}

#[test]
fn a_version_2_file_is_rebuilt_keeping_every_row_its_order_and_its_references() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    version_2_file(&path);
    let ledger = SqliteLedger::open(&path).expect("migrates");
    let old = ledger.get("gh_b").expect("get").expect("kept");
    assert_eq!(
        (
            old.state,
            old.actor.as_deref(),
            old.idempotency_key.as_deref()
        ),
        (EntryState::Unknown, Some("api:ops"), Some("gh_b"))
    );
    assert_eq!(
        old.amount
            .map(|money| (money.minor_units, money.currency.code())),
        Some((500, "XOF"))
    );
    let details: Vec<String> = ledger
        .history("gh_a")
        .expect("history")
        .into_iter()
        .map(|event| event.detail)
        .collect();
    assert_eq!(details, ["created", "outcome"]);
    // A new entry comes after the old ones, in the order listings and cursors use.
    created(&ledger, "gh_new");
    let listed: Vec<String> = ledger
        .list(&ListFilter::default())
        .expect("list")
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(listed, ["gh_new", "gh_b", "gh_a"]);
    drop(ledger);

    let connection = rusqlite::Connection::open(&path).expect("open directly");
    let seqs: Vec<(String, i64)> = connection
        .prepare("SELECT id, seq FROM entries ORDER BY seq")
        .expect("prepare")
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        seqs,
        [
            ("gh_a".into(), 7),
            ("gh_b".into(), 9),
            ("gh_new".into(), 10)
        ]
    );
    let schema: String = connection
        .query_row(
            "SELECT group_concat(sql, ';') FROM sqlite_master WHERE name IN ('entries', 'entry_history')",
            [],
            |row| row.get(0),
        )
        .expect("schema");
    assert!(!schema.contains("AUTOINCREMENT"), "{schema}");
    assert!(!schema.contains(" IN ("), "{schema}");
    let sequences: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM sqlite_sequence WHERE name IN ('entries', 'entry_history')",
            [],
            |row| row.get(0),
        )
        .expect("sqlite_sequence");
    assert_eq!(sequences, 0);
    let indexes: Vec<String> = connection
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
             AND tbl_name IN ('entries', 'entry_history') ORDER BY name",
        )
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("indexes")
        .collect::<Result<_, _>>()
        .expect("names");
    // Version 4 (after the rebuild) dropped `entries_by_created` and made the provider
    // reference's index partial.
    assert_eq!(
        indexes,
        [
            "entries_by_provider_reference",
            "entries_by_state",
            "entry_history_by_entry"
        ]
    );
}

/// The lookup a webhook event makes is index searches, never a walk over the provider's
/// entries, on a ledger without table statistics (as every ledger is).
#[test]
fn a_webhook_events_lookup_is_index_searches_whatever_the_ledger_holds() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    drop(SqliteLedger::open(&path).expect("ledger"));
    let connection = rusqlite::Connection::open(&path).expect("open");
    let plan: Vec<String> = connection
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {}",
            super::super::sqlite::event_candidates_sql()
        ))
        .expect("prepare the plan")
        .query_map(rusqlite::params!["paygateglobal", "gh_x", "tx-1"], |row| {
            row.get(3)
        })
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("plan rows");
    let text = plan.join("\n");
    assert!(
        text.contains("USING INTEGER PRIMARY KEY")
            && text.contains("(id=?)")
            && text.contains("(provider=? AND provider_reference=?)"),
        "{text}"
    );
    assert!(!text.contains("SCAN"), "{text}");
    assert!(
        !text.lines().any(|line| line.ends_with("(provider=?)")),
        "{text}"
    );
    let partial: String = connection
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'entries_by_provider_reference'",
            [],
            |row| row.get(0),
        )
        .expect("index");
    assert!(
        partial.contains("WHERE provider_reference IS NOT NULL"),
        "{partial}"
    );
}

#[test]
fn the_rebuilt_tables_still_refuse_an_unknown_state_and_a_history_row_of_no_entry() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    version_2_file(&path);
    let ledger = SqliteLedger::open(&path).expect("migrates");
    let shared = ledger.lock_shared();
    let state = shared.connection.execute(
        "UPDATE entries SET state = 'refunded' WHERE id = 'gh_a'",
        [],
    );
    let error = state.expect_err("`refunded` is not a state");
    assert!(
        error.to_string().contains("CHECK constraint failed"),
        "{error}"
    );
    let orphan = shared.connection.execute(
        "INSERT INTO entry_history (entry_id, at_unix, state, detail) \
         VALUES ('gh_nobody', 5, 'sending', 'created')",
        [],
    );
    let error = orphan.expect_err("foreign keys are on after migrating");
    assert!(error.to_string().contains("FOREIGN KEY"), "{error}");
}

#[test]
fn a_migration_that_would_break_a_reference_is_refused_and_changes_nothing() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    version_2_file(&path);
    {
        // A version-2 host ran with foreign keys on, so this cannot happen through it; a file
        // edited by hand can.
        let connection = rusqlite::Connection::open(&path).expect("open directly");
        connection
            .pragma_update(None, "foreign_keys", false)
            .expect("foreign keys off");
        connection
            .execute(
                "INSERT INTO entry_history (entry_id, at_unix, state, detail) \
                 VALUES ('gh_gone', 5, 'sending', 'created')",
                [],
            )
            .expect("orphan history row");
    }
    let error = SqliteLedger::open(&path).expect_err("refused");
    assert!(
        error.to_string().contains("schema migration 3") && error.to_string().contains("1 rows"),
        "{error}"
    );
    let version: i64 = rusqlite::Connection::open(&path)
        .expect("open directly")
        .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .expect("schema version");
    assert_eq!(version, 2, "the failed migration rolled back");
}

#[test]
fn a_failing_first_write_of_a_batch_rolls_back_alone_and_the_next_write_commits() {
    let (ledger, _) = ledger();
    let failed = ledger.write("test a failure", |connection, now| -> Result<(), LedgerError> {
        connection
            .execute(
                "INSERT INTO entry_history (entry_id, at_unix, state, detail) VALUES ('gh_x', ?1, 'sending', 'half')",
                [now],
            )
            .map_err(|error| LedgerError::Storage(error.to_string()))?;
        Ok(())
    });
    assert!(failed.is_err(), "a history row of no entry is refused");
    let failed = ledger.write(
        "test a failure",
        |connection, now| -> Result<(), LedgerError> {
            connection
                .execute("UPDATE entries SET updated_at_unix = ?1", [now])
                .map_err(|error| LedgerError::Storage(error.to_string()))?;
            Err(LedgerError::Storage("the write changed its mind".into()))
        },
    );
    assert!(failed.is_err());
    assert!(
        ledger.lock_shared().connection.is_autocommit(),
        "no transaction left open"
    );
    created(&ledger, "gh_after");
    assert_eq!(ledger.list(&ListFilter::default()).expect("list").len(), 1);
    assert_eq!(ledger.history("gh_after").expect("history").len(), 1);
}

#[test]
fn counting_entries_reads_beside_the_writer_instead_of_holding_it() {
    // `count_by_state` scans the whole table (a `/metrics` scrape): on a file it runs on a
    // read-only connection of its own, so it needs nothing the writers hold. Here the writers'
    // lock is held for the whole count; through the shared connection it would never return.
    let folder = tempfile::tempdir().expect("temporary folder");
    let ledger = Arc::new(SqliteLedger::open(&folder.path().join("ledger.sqlite")).expect("open"));
    for index in 0..3 {
        created(&*ledger, &format!("gh_{index}"));
    }
    ledger
        .record_outcome("gh_0", &gatehouse_plugin_api::Outcome::succeeded())
        .expect("record");
    let held = ledger.lock_shared();
    let (counted, counts) = std::sync::mpsc::channel();
    let counter = Arc::clone(&ledger);
    let thread = std::thread::spawn(move || {
        let _ = counted.send(counter.count_by_state());
    });
    let counts = counts
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the count returns while the writers' lock is held")
        .expect("counted");
    drop(held);
    thread.join().expect("the counting thread");
    let mut counts = counts;
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(
        counts,
        vec![(EntryState::Sending, 2), (EntryState::Succeeded, 1)],
        "what was committed"
    );
}

/// How many entries another connection to the file sees: what is committed.
fn committed_entries(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .expect("a second connection")
        .query_row("SELECT COUNT(*) FROM entries", [], |row| row.get(0))
        .expect("count")
}

#[test]
fn writes_made_together_commit_once_at_the_end_and_not_before() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).expect("open");
    assert!(ledger.batches_on_one_thread());
    let mut seen_inside = None;
    ledger
        .write_together(&mut || {
            for index in 0..5 {
                created(&ledger, &format!("gh_together_{index}"));
            }
            seen_inside = Some(committed_entries(&path));
        })
        .expect("committed");
    assert_eq!(
        seen_inside,
        Some(0),
        "nothing is visible before the batch commits"
    );
    assert_eq!(committed_entries(&path), 5);
    // Afterwards a write commits by itself again.
    created(&ledger, "gh_alone");
    assert_eq!(committed_entries(&path), 6);
}

#[test]
fn a_failing_write_made_together_undoes_only_itself() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_existing");
    let mut results = Vec::new();
    ledger
        .write_together(&mut || {
            // The first write of the batch fails, then one succeeds, then one fails inside the
            // batch (a savepoint), then one more succeeds.
            results.push(
                ledger
                    .begin(new_entry("gh_existing", None, charge(1)))
                    .is_ok(),
            );
            results.push(ledger.begin(new_entry("gh_b", None, charge(2))).is_ok());
            results.push(ledger.begin(new_entry("gh_b", None, charge(3))).is_ok());
            results.push(ledger.begin(new_entry("gh_d", None, charge(4))).is_ok());
        })
        .expect("committed");
    assert_eq!(results, [false, true, false, true]);
    let mut ids: Vec<String> = ledger
        .list(&ListFilter::default())
        .expect("list")
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["gh_b", "gh_d", "gh_existing"]);
    assert_eq!(
        ledger
            .get("gh_b")
            .expect("get")
            .expect("kept")
            .amount
            .map(|m| m.minor_units),
        Some(2)
    );
}

#[test]
fn another_threads_write_during_a_held_batch_waits_for_its_commit() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    let ledger = Arc::new(SqliteLedger::open(&path).expect("open"));
    let mut other = None;
    ledger
        .write_together(&mut || {
            created(ledger.as_ref(), "gh_holder");
            let shared = Arc::clone(&ledger);
            let thread = std::thread::spawn(move || {
                shared
                    .begin(new_entry("gh_other", None, charge(7)))
                    .map(|begin| matches!(begin, Begin::Created(_)))
            });
            // The other write joins the open batch and must not return before its commit.
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(
                !thread.is_finished(),
                "a write returned before its batch committed"
            );
            assert_eq!(committed_entries(&path), 0);
            other = Some(thread);
        })
        .expect("committed");
    let created_other = other.expect("spawned").join().expect("no panic");
    assert!(created_other.expect("begun"));
    assert_eq!(committed_entries(&path), 2);
}

#[test]
fn a_panic_inside_writes_made_together_still_commits_what_was_written_and_releases_the_batch() {
    let (ledger, _) = ledger();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = ledger.write_together(&mut || {
            created(&ledger, "gh_before_the_panic");
            panic!("a bug in the caller");
        });
    }));
    assert!(panicked.is_err());
    assert!(ledger.get("gh_before_the_panic").expect("get").is_some());
    // The batch is no longer held: a write commits by itself.
    created(&ledger, "gh_after");
    assert_eq!(ledger.list(&ListFilter::default()).expect("list").len(), 2);
}
