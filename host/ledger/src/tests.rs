//! The ledger's tests. `contract.rs` holds the behaviour every backend must have, and each of its
//! functions runs once on SQLite (a real file in a temporary folder) and once on PostgreSQL (a
//! fresh database in the test process's throwaway cluster, `gatehouse-pg-cluster`); then come
//! what only one backend has (`sqlite_only.rs`, `postgres_only.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use gatehouse_plugin_api::{Command, OutcomeStatus, WebhookEvent};
use serde_json::json;

use super::*;

mod contract;
#[cfg(feature = "postgres")]
mod fleet_accounts;
#[cfg(feature = "postgres")]
mod postgres_fleet;
#[cfg(feature = "postgres")]
mod postgres_only;
mod sqlite_only;

pub(super) const START: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// A ledger for one test: the handle, the clock the test moves by hand, and a way to open more
/// handles on the same storage (standing for other processes, or a restart).
pub(super) struct Store {
    pub(super) ledger: Arc<dyn Ledger>,
    pub(super) clock: Arc<AtomicI64>,
    reopen: Box<dyn Fn(Arc<AtomicI64>) -> Arc<dyn Ledger>>,
    execute_sql: Box<dyn Fn(&str)>,
    /// The storage's lifetime (a temporary folder); dropped last.
    _storage: Box<dyn std::any::Any>,
}

impl Store {
    /// Another handle on the same storage, on the same clock.
    pub(super) fn reopen(&self) -> Arc<dyn Ledger> {
        (self.reopen)(Arc::clone(&self.clock))
    }

    /// Runs SQL on the storage directly, around the ledger (to corrupt a row).
    pub(super) fn execute_sql(&self, sql: &str) {
        (self.execute_sql)(sql);
    }
}

fn reading(clock: &Arc<AtomicI64>) -> impl Fn() -> i64 + Send + Sync + 'static {
    let clock = Arc::clone(clock);
    move || clock.load(Ordering::SeqCst)
}

/// A SQLite ledger in a file of its own.
fn sqlite_store() -> Store {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("nested").join("ledger.sqlite");
    let clock = Arc::new(AtomicI64::new(START));
    let open = {
        let path = path.clone();
        move |clock: Arc<AtomicI64>| -> Arc<dyn Ledger> {
            Arc::new(
                SqliteLedger::open(&path)
                    .expect("the ledger file opens")
                    .with_clock(reading(&clock)),
            )
        }
    };
    Store {
        ledger: open(Arc::clone(&clock)),
        clock,
        reopen: Box::new(open),
        execute_sql: Box::new(move |sql| {
            rusqlite::Connection::open(&path)
                .expect("open directly")
                .execute_batch(sql)
                .expect("the SQL runs");
        }),
        _storage: Box::new(folder),
    }
}

/// A PostgreSQL ledger in a new database of the shared test cluster.
#[cfg(feature = "postgres")]
pub(super) fn postgres_store() -> Store {
    let database = gatehouse_pg_cluster::shared().create_database();
    let clock = Arc::new(AtomicI64::new(START));
    let open = {
        let database = database.clone();
        move |clock: Arc<AtomicI64>| -> Arc<dyn Ledger> {
            Arc::new(
                PostgresLedger::connect(&postgres_options(&database))
                    .expect("the PostgreSQL ledger connects")
                    .with_clock(reading(&clock)),
            )
        }
    };
    Store {
        ledger: open(Arc::clone(&clock)),
        clock,
        reopen: Box::new(open),
        execute_sql: Box::new(move |sql| {
            database.connect().batch_execute(sql).expect("the SQL runs");
        }),
        _storage: Box::new(()),
    }
}

#[cfg(feature = "postgres")]
pub(super) fn postgres_options(database: &gatehouse_pg_cluster::Database) -> PostgresOptions {
    let mut options = PostgresOptions::new(database.url());
    options.password = Some(gatehouse_plugin_api::Secret::new(database.password.clone()));
    options.max_connections = 4;
    // SCRAM's 4096 HMAC rounds cost about 100 ms of CPU per connection in a debug build: on a
    // busy machine a new connection can take seconds.
    options.connect_timeout = std::time::Duration::from_secs(30);
    options
}

/// One `#[test]` per contract function and backend.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[test] fn $name() { super::contract::$name(&super::sqlite_store()); } )*
        }
        #[cfg(feature = "postgres")]
        mod on_postgres {
            $( #[test] fn $name() { super::contract::$name(&super::postgres_store()); } )*
        }
    };
}

contract_tests!(
    begin_creates_then_finds_the_same_key_and_body,
    begin_refuses_a_key_reused_with_another_body,
    begin_without_a_key_always_creates,
    begin_refuses_an_operation_that_is_not_the_commands,
    record_outcome_moves_the_state_and_keeps_final_states,
    record_outcome_flags_a_contradicted_final_state,
    record_outcome_of_an_unknown_entry_is_not_found,
    record_outcome_of_begun_saves_what_record_outcome_would,
    record_outcome_of_begun_sees_a_write_that_came_in_between,
    record_refusal_fails_only_an_entry_never_sent,
    a_transient_refusal_releases_the_key_for_a_retry,
    history_is_kept_in_order,
    flag_for_operator_keeps_a_final_state,
    a_cursor_pages_in_insertion_order_and_inserts_between_pages_land_before_the_first,
    list_filters_newest_first,
    list_breaks_ties_in_the_same_second_by_insertion,
    unresolved_returns_sending_unknown_and_pending_only,
    record_event_stores_each_event_once,
    events_feed_is_ordered_and_resumable,
    apply_event_settles_a_pending_entry,
    apply_event_finds_an_entry_by_provider_reference,
    apply_event_ignores_unknown_references_and_unverified_events,
    apply_event_never_regresses_a_final_state_and_flags_contradictions,
    apply_event_keeps_a_refund_event_off_the_charge_it_refunds,
    apply_event_flags_a_payment_of_another_amount,
    a_reopened_ledger_keeps_everything,
    a_corrupt_row_is_an_error_naming_the_entry,
    concurrent_begins_with_one_key_create_exactly_one_entry,
    concurrent_begins_through_separate_connections_create_exactly_one_entry,
    entries_serialize_with_snake_case_states,
    concurrent_writers_share_commits_and_keep_every_write_durable,
    a_feed_reader_never_misses_an_event_committed_behind_it,
    concurrent_reports_on_one_entry_keep_every_history_line,
    an_operator_settles_an_entry_that_needs_one_and_history_names_who_and_why,
    settling_refuses_final_and_sending_entries_and_bad_settlements_and_changes_nothing,
    an_entry_without_an_actor_reads_back_without_one,
    list_filters_by_creation_time,
);

#[test]
fn request_hash_is_canonical_and_scoped() {
    let one = command(
        json!({"operation": "charge", "amount": {"currency": "XOF", "minor_units": 5},
        "extra": {"x": {"b": 1, "a": 2}}}),
    );
    let same = command(
        json!({"operation": "charge", "amount": {"minor_units": 5, "currency": "XOF"},
        "extra": {"x": {"a": 2, "b": 1}}}),
    );
    let other = command(
        json!({"operation": "charge", "amount": {"minor_units": 6, "currency": "XOF"},
        "extra": {"x": {"a": 2, "b": 1}}}),
    );
    let hash = request_hash("p", "a", &one);
    assert_eq!(hash.len(), 64);
    assert_eq!(hash, request_hash("p", "a", &same));
    assert_ne!(hash, request_hash("p", "a", &other));
    assert_ne!(hash, request_hash("p", "b", &one));
    // Length prefixes keep ("pa", "") and ("p", "a") apart.
    assert_ne!(request_hash("pa", "", &one), request_hash("p", "a", &one));
}

/// The hash as the ledger made it before it was written straight into the hasher (a sorted copy
/// of the tree, then its string): every stored entry's hash, which a retry must still match.
fn request_hash_as_first_made(provider: &str, account: &str, command: &Command) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(members) => {
                let mut members: Vec<_> = members.iter().collect();
                members.sort_by(|left, right| left.0.cmp(right.0));
                serde_json::Value::Object(
                    members
                        .into_iter()
                        .map(|(key, member)| (key.clone(), sorted(member)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    let mut hasher = Sha256::new();
    for part in [provider, account] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let value = serde_json::to_value(command).expect("a command serializes");
    hasher.update(sorted(&value).to_string().as_bytes());
    hex::encode(hasher.finalize())
}

#[test]
fn request_hash_is_the_one_stored_entries_were_made_with() {
    let commands = [
        charge(500),
        command(
            json!({"operation": "charge", "amount": {"minor_units": 0, "currency": "XOF"},
            "extra": {}}),
        ),
        command(json!({"operation": "charge",
            "amount": {"minor_units": 9_007_199_254_740_993_i64, "currency": "EUR"},
            "extra": {"z": [[], {}, [{"b": null, "a": true}]], "\u{0}\"\\\n": "é\u{1F600}</script>",
                "A": -1.5e300, "a": [1, "2", false], "": ""}})),
        command(json!({"operation": "refund", "transaction_id": "tx-1",
            "amount": {"minor_units": 1, "currency": "XOF"}})),
    ];
    for command in &commands {
        assert_eq!(
            request_hash("paygateglobal", "main", command),
            request_hash_as_first_made("paygateglobal", "main", command),
            "{command:?}"
        );
    }
}

pub(super) fn tick(clock: &AtomicI64) {
    clock.fetch_add(1, Ordering::SeqCst);
}

pub(super) fn command(value: serde_json::Value) -> Command {
    serde_json::from_value(value).expect("command JSON is valid")
}

pub(super) fn charge(minor_units: i64) -> Command {
    command(json!({
        "operation": "charge",
        "amount": {"minor_units": minor_units, "currency": "XOF"},
        "payment_method": "FLOOZ",
        "extra": {"note": {"b": 1, "a": [1, 2]}}
    }))
}

pub(super) fn new_entry(id: &str, key: Option<&str>, command: Command) -> NewEntry {
    NewEntry {
        id: id.into(),
        provider: "paygateglobal".into(),
        account: "main".into(),
        operation: command.operation(),
        idempotency_key: key.map(str::to_string),
        request_hash: request_hash("paygateglobal", "main", &command),
        command,
        actor: Some("test-key".into()),
    }
}

pub(super) fn created(ledger: &dyn Ledger, id: &str) -> Entry {
    match ledger
        .begin(new_entry(id, None, charge(500)))
        .expect("begin")
    {
        Begin::Created(entry) => entry,
        Begin::Existing(entry) => panic!("expected a new entry, found {entry:?}"),
    }
}

pub(super) fn event(event_id: &str, status: OutcomeStatus) -> WebhookEvent {
    WebhookEvent {
        event_id: event_id.into(),
        event_type: "payment".into(),
        status,
        provider_reference: None,
        reference: None,
        amount: None,
        verified: true,
        raw: json!({}),
    }
}

pub(super) fn states(history: &[HistoryEvent]) -> Vec<EntryState> {
    history.iter().map(|event| event.state).collect()
}
