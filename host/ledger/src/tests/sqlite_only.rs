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
    assert_eq!(version, 2);
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
    let size = |file: &std::path::Path| std::fs::metadata(file).map_or(0, |meta| meta.len());
    let before = size(&path);
    for index in 0..50 {
        created(&ledger, &format!("gh_{index}"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size(&path) <= before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        size(&path) > before,
        "the database file did not grow: nothing was checkpointed ({before} bytes)"
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
