//! The ledger's contract, exercised on [`SqliteLedger`] in memory and on disk.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Barrier};

use gatehouse_plugin_api::{
    Command, ErrorKind, Outcome, OutcomeStatus, ProviderError, WebhookEvent,
};
use serde_json::json;

use super::*;

const START: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// A ledger in memory with a clock the test moves by hand.
fn ledger() -> (SqliteLedger, Arc<AtomicI64>) {
    let clock = Arc::new(AtomicI64::new(START));
    let reader = Arc::clone(&clock);
    let ledger = SqliteLedger::open_in_memory()
        .expect("in-memory ledger opens")
        .with_clock(move || reader.load(Ordering::SeqCst));
    (ledger, clock)
}

fn tick(clock: &AtomicI64) {
    clock.fetch_add(1, Ordering::SeqCst);
}

fn command(value: serde_json::Value) -> Command {
    serde_json::from_value(value).expect("command JSON is valid")
}

fn charge(minor_units: i64) -> Command {
    command(json!({
        "operation": "charge",
        "amount": {"minor_units": minor_units, "currency": "XOF"},
        "payment_method": "FLOOZ",
        "extra": {"note": {"b": 1, "a": [1, 2]}}
    }))
}

fn new_entry(id: &str, key: Option<&str>, command: Command) -> NewEntry {
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

fn created(ledger: &SqliteLedger, id: &str) -> Entry {
    match ledger
        .begin(new_entry(id, None, charge(500)))
        .expect("begin")
    {
        Begin::Created(entry) => entry,
        Begin::Existing(entry) => panic!("expected a new entry, found {entry:?}"),
    }
}

fn event(event_id: &str, status: OutcomeStatus) -> WebhookEvent {
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

fn states(history: &[HistoryEvent]) -> Vec<EntryState> {
    history.iter().map(|event| event.state).collect()
}

#[test]
fn begin_creates_then_finds_the_same_key_and_body() {
    let (ledger, _) = ledger();
    let first = ledger
        .begin(new_entry("gh_1", Some("key-1"), charge(500)))
        .expect("begin");
    let Begin::Created(entry) = first else {
        panic!("first begin must create: {first:?}");
    };
    assert_eq!(entry.state, EntryState::Sending);
    assert_eq!(entry.amount, charge(500).amount());
    assert_eq!(entry.created_at_unix, START);

    // A retry carries a fresh reference; the key maps it to the first entry all the same.
    let retry = ledger
        .begin(new_entry("gh_2", Some("key-1"), charge(500)))
        .expect("begin again");
    assert_eq!(retry, Begin::Existing(entry.clone()));
    assert_eq!(ledger.get("gh_2").expect("get"), None);
    assert_eq!(
        ledger
            .find_by_key("paygateglobal", "main", "key-1")
            .expect("find"),
        Some(entry)
    );
    // The key belongs to one provider account: another account may use it.
    let mut other_account = new_entry("gh_3", Some("key-1"), charge(500));
    other_account.account = "second".into();
    assert!(matches!(ledger.begin(other_account), Ok(Begin::Created(_))));
}

#[test]
fn begin_refuses_a_key_reused_with_another_body() {
    let (ledger, _) = ledger();
    ledger
        .begin(new_entry("gh_1", Some("key-1"), charge(500)))
        .expect("begin");
    let reused = ledger.begin(new_entry("gh_2", Some("key-1"), charge(600)));
    assert_eq!(
        reused,
        Err(LedgerError::KeyReused {
            key: "key-1".into()
        })
    );
    assert_eq!(ledger.get("gh_2").expect("get"), None);
}

#[test]
fn begin_without_a_key_always_creates() {
    let (ledger, _) = ledger();
    for id in ["gh_1", "gh_2", "gh_3"] {
        assert!(matches!(
            ledger.begin(new_entry(id, None, charge(500))),
            Ok(Begin::Created(_))
        ));
    }
    assert_eq!(ledger.list(&ListFilter::default()).expect("list").len(), 3);
    // A reference is unique: reusing one is a bug, never a silent overwrite.
    assert_eq!(
        ledger.begin(new_entry("gh_1", None, charge(500))),
        Err(LedgerError::DuplicateId { id: "gh_1".into() })
    );
}

#[test]
fn begin_refuses_an_operation_that_is_not_the_commands() {
    let (ledger, _) = ledger();
    let mut entry = new_entry("gh_1", None, charge(500));
    entry.operation = Operation::Refund;
    assert!(matches!(
        ledger.begin(entry),
        Err(LedgerError::InvalidEntry { .. })
    ));
}

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

#[test]
fn record_outcome_moves_the_state_and_keeps_final_states() {
    let cases = [
        // (outcomes in order, expected state after each)
        (vec![OutcomeStatus::Succeeded], vec![EntryState::Succeeded]),
        (vec![OutcomeStatus::Failed], vec![EntryState::Failed]),
        (
            vec![
                OutcomeStatus::Unknown,
                OutcomeStatus::Pending,
                OutcomeStatus::Succeeded,
            ],
            vec![
                EntryState::Unknown,
                EntryState::Pending,
                EntryState::Succeeded,
            ],
        ),
        // A pending entry does not become unknown because a later status read failed.
        (
            vec![
                OutcomeStatus::Pending,
                OutcomeStatus::Unknown,
                OutcomeStatus::Failed,
            ],
            vec![EntryState::Pending, EntryState::Pending, EntryState::Failed],
        ),
        // A final state never moves back.
        (
            vec![
                OutcomeStatus::Succeeded,
                OutcomeStatus::Pending,
                OutcomeStatus::Unknown,
            ],
            vec![
                EntryState::Succeeded,
                EntryState::Succeeded,
                EntryState::Succeeded,
            ],
        ),
    ];
    for (index, (statuses, expected)) in cases.into_iter().enumerate() {
        let (ledger, _) = ledger();
        let id = format!("gh_{index}");
        created(&ledger, &id);
        for (status, expected_state) in statuses.iter().zip(&expected) {
            let outcome = Outcome::new(*status).with_provider_reference("tx-9");
            let entry = ledger.record_outcome(&id, &outcome).expect("record");
            assert_eq!(
                entry.state, *expected_state,
                "case {index} after {status:?}"
            );
            assert_eq!(entry.provider_reference.as_deref(), Some("tx-9"));
            assert_eq!(entry.operator_flag, None, "case {index}");
        }
        assert_eq!(
            ledger.get(&id).expect("get").map(|entry| entry.state),
            expected.last().copied()
        );
    }
}

#[test]
fn record_outcome_flags_a_contradicted_final_state() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_1");
    let first = Outcome::succeeded().with_provider_reference("tx-1");
    ledger.record_outcome("gh_1", &first).expect("record");
    let entry = ledger
        .record_outcome(
            "gh_1",
            &Outcome::failed(ProviderError::new(ErrorKind::Declined, "no funds")),
        )
        .expect("record");
    assert_eq!(entry.state, EntryState::Succeeded);
    assert_eq!(entry.outcome, Some(first));
    assert!(entry.operator_flag.is_some());
    let history = ledger.history("gh_1").expect("history");
    assert!(history[2].detail.contains("contradicts"), "{history:?}");
    assert!(history[2].detail.contains("no funds"), "{history:?}");
}

#[test]
fn record_outcome_of_an_unknown_entry_is_not_found() {
    let (ledger, _) = ledger();
    assert_eq!(
        ledger.record_outcome("gh_missing", &Outcome::succeeded()),
        Err(LedgerError::NotFound {
            id: "gh_missing".into()
        })
    );
}

#[test]
fn record_refusal_fails_only_an_entry_never_sent() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_1");
    let entry = ledger
        .record_refusal("gh_1", "account_paused", "account paginated/main is paused")
        .expect("refuse");
    assert_eq!(entry.state, EntryState::Failed);
    assert_eq!(
        entry.refusal,
        Some(Refusal {
            code: "account_paused".into(),
            message: "account paginated/main is paused".into()
        })
    );

    created(&ledger, "gh_2");
    ledger
        .record_outcome(
            "gh_2",
            &Outcome::unknown(ProviderError::new(
                ErrorKind::ProviderUnavailable,
                "timeout",
            )),
        )
        .expect("record");
    assert_eq!(
        ledger.record_refusal("gh_2", "invalid_request", "late"),
        Err(LedgerError::NotSending {
            id: "gh_2".into(),
            state: EntryState::Unknown,
            action: "recording a refusal",
        })
    );
    assert_eq!(
        ledger.get("gh_2").expect("get").map(|entry| entry.state),
        Some(EntryState::Unknown)
    );
}

#[test]
fn history_is_kept_in_order() {
    let (ledger, clock) = ledger();
    created(&ledger, "gh_1");
    tick(&clock);
    ledger
        .record_outcome(
            "gh_1",
            &Outcome::unknown(ProviderError::new(
                ErrorKind::ProviderUnavailable,
                "timeout",
            )),
        )
        .expect("record");
    tick(&clock);
    ledger
        .record_outcome("gh_1", &Outcome::pending())
        .expect("record");
    tick(&clock);
    ledger
        .flag_for_operator("gh_1", "no status operation")
        .expect("flag");
    tick(&clock);
    ledger
        .record_outcome("gh_1", &Outcome::succeeded())
        .expect("record");

    let history = ledger.history("gh_1").expect("history");
    assert_eq!(
        states(&history),
        [
            EntryState::Sending,
            EntryState::Unknown,
            EntryState::Pending,
            EntryState::NeedsOperator,
            EntryState::Succeeded
        ]
    );
    assert_eq!(history[0].detail, "created");
    assert!(history[1].detail.contains("timeout"), "{history:?}");
    assert!(
        history[3].detail.contains("no status operation"),
        "{history:?}"
    );
    let times: Vec<i64> = history.iter().map(|event| event.at_unix).collect();
    assert_eq!(times, [START, START + 1, START + 2, START + 3, START + 4]);

    // The final answer settled what the operator was asked about.
    let entry = ledger.get("gh_1").expect("get").expect("exists");
    assert_eq!(entry.operator_flag, None);
    assert_eq!(entry.updated_at_unix, START + 4);
    assert_eq!(ledger.history("gh_missing").expect("history"), []);
}

#[test]
fn flag_for_operator_keeps_a_final_state() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_1");
    ledger
        .record_outcome("gh_1", &Outcome::succeeded())
        .expect("record");
    let entry = ledger
        .flag_for_operator("gh_1", "customer disputes")
        .expect("flag");
    assert_eq!(entry.state, EntryState::Succeeded);
    assert_eq!(entry.operator_flag.as_deref(), Some("customer disputes"));
    let needing_operator = ledger
        .list(&ListFilter {
            state: Some(EntryState::NeedsOperator),
            ..ListFilter::default()
        })
        .expect("list");
    assert_eq!(needing_operator, [entry]);
}

#[test]
fn a_cursor_pages_in_insertion_order_and_inserts_between_pages_land_before_the_first() {
    let (ledger, _clock) = ledger();
    for id in ["gh_1", "gh_2", "gh_3"] {
        ledger
            .begin(new_entry(id, None, charge(500)))
            .expect("begin");
    }
    let page = |starting_after: Option<&str>| -> Vec<String> {
        ledger
            .list(&ListFilter {
                limit: 2,
                starting_after: starting_after.map(str::to_string),
                ..ListFilter::default()
            })
            .expect("list")
            .into_iter()
            .map(|entry| entry.id)
            .collect()
    };
    assert_eq!(page(None), ["gh_3", "gh_2"]);
    ledger
        .begin(new_entry("gh_4", None, charge(500)))
        .expect("begin");
    assert_eq!(page(Some("gh_2")), ["gh_1"]);
    assert!(matches!(
        ledger.list(&ListFilter {
            starting_after: Some("gh_nope".into()),
            ..ListFilter::default()
        }),
        Err(LedgerError::NotFound { .. })
    ));
    ledger
        .record_outcome("gh_4", &Outcome::succeeded())
        .expect("record");
    let mut counts = ledger.count_by_state().expect("counts");
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(
        counts,
        [(EntryState::Sending, 3), (EntryState::Succeeded, 1)]
    );
}

#[test]
fn list_filters_newest_first() {
    let (ledger, clock) = ledger();
    for (id, provider, account) in [
        ("gh_1", "paygateglobal", "main"),
        ("gh_2", "xsolla", "main"),
        ("gh_3", "paygateglobal", "second"),
        ("gh_4", "paygateglobal", "main"),
    ] {
        let mut entry = new_entry(id, None, charge(500));
        entry.provider = provider.into();
        entry.account = account.into();
        ledger.begin(entry).expect("begin");
        tick(&clock);
    }
    ledger
        .record_outcome("gh_4", &Outcome::succeeded())
        .expect("record");
    ledger
        .record_outcome("gh_1", &Outcome::succeeded())
        .expect("record");

    let ids = |filter: ListFilter| -> Vec<String> {
        ledger
            .list(&filter)
            .expect("list")
            .into_iter()
            .map(|entry| entry.id)
            .collect()
    };
    assert_eq!(ids(ListFilter::default()), ["gh_4", "gh_3", "gh_2", "gh_1"]);
    let provider = Some("paygateglobal".to_string());
    assert_eq!(
        ids(ListFilter {
            provider: provider.clone(),
            ..ListFilter::default()
        }),
        ["gh_4", "gh_3", "gh_1"]
    );
    assert_eq!(
        ids(ListFilter {
            provider: provider.clone(),
            account: Some("main".into()),
            ..ListFilter::default()
        }),
        ["gh_4", "gh_1"]
    );
    assert_eq!(
        ids(ListFilter {
            state: Some(EntryState::Sending),
            ..ListFilter::default()
        }),
        ["gh_3", "gh_2"]
    );
    assert_eq!(
        ids(ListFilter {
            provider,
            state: Some(EntryState::Succeeded),
            limit: 1,
            ..ListFilter::default()
        }),
        ["gh_4"]
    );
    assert_eq!(
        ids(ListFilter {
            limit: 0,
            ..ListFilter::default()
        }),
        Vec::<String>::new()
    );
}

#[test]
fn list_breaks_ties_in_the_same_second_by_insertion() {
    let (ledger, _) = ledger();
    for id in ["gh_b", "gh_a", "gh_c"] {
        created(&ledger, id);
    }
    let ids: Vec<String> = ledger
        .list(&ListFilter::default())
        .expect("list")
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(ids, ["gh_c", "gh_a", "gh_b"]);
}

#[test]
fn unresolved_returns_sending_unknown_and_pending_only() {
    let (ledger, clock) = ledger();
    let statuses = [
        ("gh_sending", None),
        ("gh_succeeded", Some(OutcomeStatus::Succeeded)),
        ("gh_pending", Some(OutcomeStatus::Pending)),
        ("gh_failed", Some(OutcomeStatus::Failed)),
        ("gh_unknown", Some(OutcomeStatus::Unknown)),
        ("gh_operator", Some(OutcomeStatus::Unknown)),
    ];
    for (id, status) in statuses {
        created(&ledger, id);
        if let Some(status) = status {
            ledger
                .record_outcome(id, &Outcome::new(status))
                .expect("record");
        }
        tick(&clock);
    }
    ledger
        .flag_for_operator("gh_operator", "gave up")
        .expect("flag");

    let ids = |entries: Vec<Entry>| -> Vec<String> {
        entries.into_iter().map(|entry| entry.id).collect()
    };
    assert_eq!(
        ids(ledger.unresolved(10).expect("unresolved")),
        ["gh_sending", "gh_pending", "gh_unknown"]
    );
    assert_eq!(
        ids(ledger.unresolved(2).expect("unresolved")),
        ["gh_sending", "gh_pending"]
    );
    // Entries touched at or after the cut-off (a flow still running) are left alone.
    assert_eq!(
        ids(ledger.unresolved_before(START + 2, 10).expect("unresolved")),
        ["gh_sending"]
    );
}

#[test]
fn record_event_stores_each_event_once() {
    let (ledger, _) = ledger();
    let payment = event("pgg:tx-1:succeeded", OutcomeStatus::Succeeded);
    assert!(
        ledger
            .record_event("paygateglobal", "main", &payment)
            .expect("record")
    );
    assert!(
        !ledger
            .record_event("paygateglobal", "main", &payment)
            .expect("replay")
    );
    assert!(
        !ledger
            .record_event("paygateglobal", "second", &payment)
            .expect("replay")
    );
    // Event ids are the provider's: another provider may use the same text.
    assert!(
        ledger
            .record_event("xsolla", "main", &payment)
            .expect("record")
    );
    let stored = ledger.events(0, 10).expect("events");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].event, payment);
    assert_eq!(stored[0].account, "main");
}

#[test]
fn events_feed_is_ordered_and_resumable() {
    let (ledger, clock) = ledger();
    for index in 0..5 {
        let event = event(&format!("event-{index}"), OutcomeStatus::Succeeded);
        ledger
            .record_event("xsolla", "main", &event)
            .expect("record");
        tick(&clock);
    }
    let first_page = ledger.events(0, 3).expect("events");
    let ids: Vec<&str> = first_page
        .iter()
        .map(|stored| stored.event.event_id.as_str())
        .collect();
    assert_eq!(ids, ["event-0", "event-1", "event-2"]);
    assert!(
        first_page
            .windows(2)
            .all(|pair| pair[0].sequence < pair[1].sequence)
    );
    assert_eq!(first_page[1].received_at_unix, START + 1);

    let last_seen = first_page[2].sequence;
    let rest = ledger.events(last_seen, 10).expect("events");
    let ids: Vec<&str> = rest
        .iter()
        .map(|stored| stored.event.event_id.as_str())
        .collect();
    assert_eq!(ids, ["event-3", "event-4"]);
    assert_eq!(ledger.events(rest[1].sequence, 10).expect("events"), []);
}

#[test]
fn apply_event_settles_a_pending_entry() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_1");
    ledger
        .record_outcome("gh_1", &Outcome::pending())
        .expect("record");

    let mut payment = event("pgg:tx-1:succeeded", OutcomeStatus::Succeeded);
    payment.reference = Some("gh_1".into());
    payment.provider_reference = Some("tx-1".into());
    let entry = ledger
        .apply_event("paygateglobal", &payment)
        .expect("apply")
        .expect("an entry changed");
    assert_eq!(entry.id, "gh_1");
    assert_eq!(entry.state, EntryState::Succeeded);
    assert_eq!(entry.provider_reference.as_deref(), Some("tx-1"));
    assert_eq!(entry.operator_flag, None);
    let history = ledger.history("gh_1").expect("history");
    assert_eq!(
        states(&history),
        [
            EntryState::Sending,
            EntryState::Pending,
            EntryState::Succeeded
        ]
    );
    assert!(
        history[2].detail.contains("pgg:tx-1:succeeded"),
        "{history:?}"
    );
}

#[test]
fn apply_event_finds_an_entry_by_provider_reference() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_1");
    ledger
        .record_outcome("gh_1", &Outcome::pending().with_provider_reference("tx-7"))
        .expect("record");
    let mut payment = event("x:payment:tx-7", OutcomeStatus::Failed);
    payment.provider_reference = Some("tx-7".into());
    let entry = ledger
        .apply_event("paygateglobal", &payment)
        .expect("apply");
    assert_eq!(entry.map(|entry| entry.state), Some(EntryState::Failed));
    // The same provider reference at another provider is another transaction.
    assert_eq!(ledger.apply_event("xsolla", &payment).expect("apply"), None);
}

#[test]
fn apply_event_ignores_unknown_references_and_unverified_events() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_1");
    ledger
        .record_outcome("gh_1", &Outcome::pending())
        .expect("record");

    let mut stranger = event("e-1", OutcomeStatus::Succeeded);
    stranger.reference = Some("gh_nobody".into());
    stranger.provider_reference = Some("tx-nobody".into());
    assert_eq!(
        ledger
            .apply_event("paygateglobal", &stranger)
            .expect("apply"),
        None
    );
    let mut no_reference = event("e-2", OutcomeStatus::Succeeded);
    no_reference.reference = None;
    assert_eq!(
        ledger
            .apply_event("paygateglobal", &no_reference)
            .expect("apply"),
        None
    );

    let mut unverified = event("e-3", OutcomeStatus::Succeeded);
    unverified.reference = Some("gh_1".into());
    unverified.verified = false;
    assert_eq!(
        ledger
            .apply_event("paygateglobal", &unverified)
            .expect("apply"),
        None
    );

    let entry = ledger.get("gh_1").expect("get").expect("exists");
    assert_eq!(entry.state, EntryState::Pending);
    assert_eq!(ledger.history("gh_1").expect("history").len(), 2);
}

#[test]
fn apply_event_never_regresses_a_final_state_and_flags_contradictions() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_1");
    ledger
        .record_outcome("gh_1", &Outcome::succeeded())
        .expect("record");

    // A late `pending` event is out-of-order delivery, not news: history only.
    let mut late = event("e-pending", OutcomeStatus::Pending);
    late.reference = Some("gh_1".into());
    let entry = ledger
        .apply_event("paygateglobal", &late)
        .expect("apply")
        .expect("noted");
    assert_eq!(entry.state, EntryState::Succeeded);
    assert_eq!(entry.operator_flag, None);

    // `failed` after `succeeded` is a contradiction only a person can settle.
    let mut contradiction = event("e-failed", OutcomeStatus::Failed);
    contradiction.reference = Some("gh_1".into());
    let entry = ledger
        .apply_event("paygateglobal", &contradiction)
        .expect("apply")
        .expect("noted");
    assert_eq!(entry.state, EntryState::Succeeded);
    let flag = entry.operator_flag.expect("flagged");
    assert!(flag.contains("e-failed"), "{flag}");

    let history = ledger.history("gh_1").expect("history");
    assert_eq!(
        states(&history),
        [
            EntryState::Sending,
            EntryState::Succeeded,
            EntryState::Succeeded,
            EntryState::Succeeded
        ]
    );
    assert!(history[3].detail.contains("contradicts"), "{history:?}");
    let flagged = ledger
        .list(&ListFilter {
            state: Some(EntryState::NeedsOperator),
            ..ListFilter::default()
        })
        .expect("list");
    assert_eq!(flagged.len(), 1);
}

#[test]
fn apply_event_keeps_a_refund_event_off_the_charge_it_refunds() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_charge");
    ledger
        .record_outcome(
            "gh_charge",
            &Outcome::succeeded().with_provider_reference("tx-1"),
        )
        .expect("record");
    let mut refund = event("x:refund:tx-1", OutcomeStatus::Failed);
    refund.event_type = "refund".into();
    refund.reference = Some("gh_charge".into());
    refund.provider_reference = Some("tx-1".into());
    let entry = ledger
        .apply_event("paygateglobal", &refund)
        .expect("apply")
        .expect("noted");
    assert_eq!(entry.id, "gh_charge");
    assert_eq!(entry.state, EntryState::Succeeded);
    assert_eq!(entry.operator_flag, None);

    // With a refund entry for the same transaction, the refund event settles that one.
    let refund_command = command(json!({"operation": "refund", "transaction_id": "tx-1"}));
    ledger
        .begin(new_entry("gh_refund", None, refund_command))
        .expect("begin");
    ledger
        .record_outcome(
            "gh_refund",
            &Outcome::pending().with_provider_reference("tx-1"),
        )
        .expect("record");
    refund.event_id = "x:refund:tx-1:again".into();
    refund.status = OutcomeStatus::Succeeded;
    let entry = ledger
        .apply_event("paygateglobal", &refund)
        .expect("apply")
        .expect("applied");
    assert_eq!(entry.id, "gh_refund");
    assert_eq!(entry.state, EntryState::Succeeded);
}

#[test]
fn apply_event_flags_a_payment_of_another_amount() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_1");
    ledger
        .record_outcome("gh_1", &Outcome::pending())
        .expect("record");
    let mut payment = event("e-1", OutcomeStatus::Succeeded);
    payment.reference = Some("gh_1".into());
    payment.amount = charge(499).amount();
    let entry = ledger
        .apply_event("paygateglobal", &payment)
        .expect("apply")
        .expect("applied");
    assert_eq!(entry.state, EntryState::Succeeded);
    let flag = entry.operator_flag.expect("flagged");
    assert!(flag.contains("499") && flag.contains("500"), "{flag}");
}

#[test]
fn a_reopened_file_ledger_keeps_everything() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("nested").join("ledger.sqlite");
    let mut payment = event("e-1", OutcomeStatus::Succeeded);
    payment.reference = Some("gh_1".into());
    let (entry, history, stored_events) = {
        let ledger = SqliteLedger::open(&path).expect("open");
        ledger
            .begin(new_entry("gh_1", Some("key-1"), charge(500)))
            .expect("begin");
        ledger
            .record_outcome("gh_1", &Outcome::pending())
            .expect("record");
        assert!(
            ledger
                .record_event("paygateglobal", "main", &payment)
                .expect("record")
        );
        ledger
            .apply_event("paygateglobal", &payment)
            .expect("apply");
        (
            ledger.get("gh_1").expect("get").expect("exists"),
            ledger.history("gh_1").expect("history"),
            ledger.events(0, 10).expect("events"),
        )
    };
    assert!(path.exists());

    let reopened = SqliteLedger::open(&path).expect("reopen");
    assert_eq!(reopened.get("gh_1").expect("get"), Some(entry.clone()));
    assert_eq!(entry.state, EntryState::Succeeded);
    assert_eq!(reopened.history("gh_1").expect("history"), history);
    assert_eq!(reopened.events(0, 10).expect("events"), stored_events);
    assert!(
        !reopened
            .record_event("paygateglobal", "main", &payment)
            .expect("replay")
    );
    assert_eq!(
        reopened.begin(new_entry("gh_2", Some("key-1"), charge(500))),
        Ok(Begin::Existing(entry))
    );
    let version: i64 = rusqlite::Connection::open(&path)
        .expect("open directly")
        .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .expect("schema version");
    assert_eq!(version, 2);
}

fn settlement(state: EntryState, reason: &str) -> Settlement {
    Settlement {
        state,
        provider_reference: Some("tx-77".into()),
        reason: reason.into(),
        actor: "ops-settle".into(),
    }
}

#[test]
fn an_operator_settles_an_entry_that_needs_one_and_history_names_who_and_why() {
    let (ledger, clock) = ledger();
    let entry = created(&ledger, "gh_1");
    assert_eq!(entry.actor.as_deref(), Some("test-key"));
    ledger
        .record_outcome(
            "gh_1",
            &Outcome::unknown(ProviderError::new(ErrorKind::ProviderUnavailable, "reset")),
        )
        .expect("record");
    ledger
        .flag_for_operator("gh_1", "no status operation")
        .expect("flag");
    tick(&clock);
    let settled = ledger
        .settle(
            "gh_1",
            &settlement(EntryState::Succeeded, "paid, seen in the back office"),
        )
        .expect("settle");
    assert_eq!(settled.state, EntryState::Succeeded);
    assert_eq!(settled.operator_flag, None);
    assert_eq!(settled.provider_reference.as_deref(), Some("tx-77"));
    assert_eq!(
        settled.actor.as_deref(),
        Some("test-key"),
        "who asked stays"
    );
    let outcome = settled.outcome.as_ref().expect("an outcome for retries");
    assert_eq!(
        (outcome.status, outcome.error.as_ref()),
        (OutcomeStatus::Succeeded, None)
    );
    assert_eq!(ledger.get("gh_1").expect("get"), Some(settled));
    let history = ledger.history("gh_1").expect("history");
    let last = history.last().expect("a settlement event");
    assert_eq!(
        (last.state, last.at_unix, last.actor.as_deref()),
        (EntryState::Succeeded, START + 1, Some("ops-settle"))
    );
    assert!(
        last.detail.contains("paid, seen in the back office")
            && last.detail.contains("was needs_operator")
            && last.detail.contains("tx-77"),
        "{last:?}"
    );
    // The host's own steps name nobody.
    assert!(
        history[..history.len() - 1]
            .iter()
            .all(|event| event.actor.is_none())
    );
    // No longer listed for an operator.
    let flagged = ledger
        .list(&ListFilter {
            state: Some(EntryState::NeedsOperator),
            ..ListFilter::default()
        })
        .expect("list");
    assert_eq!(flagged, []);
}

#[test]
fn settling_refuses_final_and_sending_entries_and_bad_settlements_and_changes_nothing() {
    let (ledger, _) = ledger();
    created(&ledger, "gh_sending");
    created(&ledger, "gh_final");
    ledger
        .record_outcome(
            "gh_final",
            &Outcome::failed(ProviderError::new(ErrorKind::Declined, "no")),
        )
        .expect("record");
    created(&ledger, "gh_unknown");
    ledger
        .record_outcome(
            "gh_unknown",
            &Outcome::unknown(ProviderError::new(ErrorKind::ProviderUnavailable, "reset")),
        )
        .expect("record");
    for (id, state) in [
        ("gh_final", EntryState::Failed),
        ("gh_sending", EntryState::Sending),
    ] {
        let before = (
            ledger.get(id).expect("get"),
            ledger.history(id).expect("history"),
        );
        assert_eq!(
            ledger.settle(id, &settlement(EntryState::Succeeded, "sure")),
            Err(LedgerError::NotSettleable {
                id: id.into(),
                state
            })
        );
        assert_eq!(
            (
                ledger.get(id).expect("get"),
                ledger.history(id).expect("history")
            ),
            before
        );
    }
    for (bad, problem) in [
        (
            settlement(EntryState::Pending, "later"),
            "succeeded or failed",
        ),
        (settlement(EntryState::Failed, "  "), "reason"),
        (
            Settlement {
                actor: String::new(),
                ..settlement(EntryState::Failed, "declined")
            },
            "actor",
        ),
    ] {
        match ledger.settle("gh_unknown", &bad) {
            Err(LedgerError::InvalidSettlement { problem: found, .. }) => {
                assert!(found.contains(problem), "{found}")
            }
            other => panic!("{bad:?} answered {other:?}"),
        }
    }
    assert_eq!(
        ledger.settle("gh_missing", &settlement(EntryState::Failed, "x")),
        Err(LedgerError::NotFound {
            id: "gh_missing".into()
        })
    );
    let failed = ledger
        .settle(
            "gh_unknown",
            &settlement(EntryState::Failed, "never arrived"),
        )
        .expect("an unknown entry settles");
    assert_eq!(failed.state, EntryState::Failed);
    assert_eq!(
        failed.outcome.map(|outcome| outcome.status),
        Some(OutcomeStatus::Failed)
    );
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
            .execute_batch(super::sqlite::MIGRATIONS[0])
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
            &settlement(EntryState::Failed, "never reached the provider"),
        )
        .expect("an old entry settles");
    assert_eq!(settled.state, EntryState::Failed);
}

#[test]
fn a_corrupt_row_is_an_error_naming_the_entry() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    let ledger = SqliteLedger::open(&path).expect("open");
    created(&ledger, "gh_1");
    created(&ledger, "gh_2");
    rusqlite::Connection::open(&path)
        .expect("open directly")
        .execute(
            "UPDATE entries SET command_json = '{not json' WHERE id = 'gh_2'",
            [],
        )
        .expect("corrupt the row");

    assert!(matches!(ledger.get("gh_1"), Ok(Some(_))));
    match ledger.get("gh_2") {
        Err(LedgerError::Corrupt { id, problem }) => {
            assert_eq!(id, "gh_2");
            assert!(problem.contains("command"), "{problem}");
        }
        other => panic!("expected a corrupt-entry error, got {other:?}"),
    }
    assert!(matches!(
        ledger.list(&ListFilter::default()),
        Err(LedgerError::Corrupt { .. })
    ));
    assert!(matches!(
        ledger.record_outcome("gh_2", &Outcome::succeeded()),
        Err(LedgerError::Corrupt { .. })
    ));
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
fn concurrent_begins_with_one_key_create_exactly_one_entry() {
    let (ledger, _) = ledger();
    let ledger = Arc::new(ledger);
    let barrier = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|index| {
            let ledger = Arc::clone(&ledger);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                ledger.begin(new_entry(
                    &format!("gh_{index}"),
                    Some("shared-key"),
                    charge(500),
                ))
            })
        })
        .collect();
    let results: Vec<Begin> = threads
        .into_iter()
        .map(|thread| thread.join().expect("thread").expect("begin"))
        .collect();
    let created = results
        .iter()
        .filter(|begin| matches!(begin, Begin::Created(_)))
        .count();
    assert_eq!(created, 1);
    let ids: std::collections::BTreeSet<&str> = results
        .iter()
        .map(|begin| begin.entry().id.as_str())
        .collect();
    assert_eq!(ids.len(), 1, "every caller must see the same entry");
    assert_eq!(ledger.list(&ListFilter::default()).expect("list").len(), 1);
}

#[test]
fn concurrent_begins_through_separate_connections_create_exactly_one_entry() {
    // Four handles on one file stand for separate processes: the mutex cannot help them, so
    // this checks the `BEGIN IMMEDIATE` transaction and the busy timeout.
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    let handles: Vec<Arc<SqliteLedger>> = (0..4)
        .map(|_| Arc::new(SqliteLedger::open(&path).expect("open")))
        .collect();
    let barrier = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|index| {
            let ledger = Arc::clone(&handles[index % handles.len()]);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                ledger.begin(new_entry(
                    &format!("gh_{index}"),
                    Some("shared-key"),
                    charge(500),
                ))
            })
        })
        .collect();
    let created = threads
        .into_iter()
        .map(|thread| thread.join().expect("thread").expect("begin"))
        .filter(|begin| matches!(begin, Begin::Created(_)))
        .count();
    assert_eq!(created, 1);
    assert_eq!(
        handles[0].list(&ListFilter::default()).expect("list").len(),
        1
    );
}

#[test]
fn entries_serialize_with_snake_case_states() {
    let (ledger, _) = ledger();
    let entry = created(&ledger, "gh_1");
    let value = serde_json::to_value(&entry).expect("serializes");
    assert_eq!(value["state"], "sending");
    assert_eq!(value["operation"], "charge");
    assert_eq!(
        value["amount"],
        json!({"minor_units": 500, "currency": "XOF"})
    );
    assert_eq!(
        serde_json::to_value(EntryState::NeedsOperator).expect("serializes"),
        "needs_operator"
    );
    for state in EntryState::ALL {
        assert_eq!(EntryState::parse(state.as_str()), Some(state));
    }
}

#[test]
fn concurrent_writers_share_commits_and_keep_every_write_durable() {
    // Writers that overlap join one transaction (group commit); an error in one (a reused key)
    // rolls back only its own savepoint. Every write that returned Ok must be in the file when
    // it is opened afresh.
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("ledger.sqlite");
    let ledger = Arc::new(SqliteLedger::open(&path).expect("open"));
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|thread| {
            let ledger = Arc::clone(&ledger);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut written = Vec::new();
                let mut refused = 0;
                for round in 0..25 {
                    let id = format!("gh_{thread}_{round}");
                    if round % 5 == 4 {
                        // The same key with another body each time: all but one refused.
                        match ledger.begin(new_entry(
                            &id,
                            Some("contested"),
                            charge(100 + thread as i64 * 100 + round as i64),
                        )) {
                            Ok(Begin::Created(entry)) => written.push(entry.id),
                            Ok(Begin::Existing(_)) | Err(LedgerError::KeyReused { .. }) => {
                                refused += 1
                            }
                            Err(other) => panic!("unexpected error: {other}"),
                        }
                        continue;
                    }
                    ledger
                        .begin(new_entry(&id, Some(&id), charge(500)))
                        .expect("begin");
                    ledger
                        .record_outcome(&id, &Outcome::pending())
                        .expect("outcome");
                    written.push(id);
                }
                (written, refused)
            })
        })
        .collect();
    let mut written = Vec::new();
    let mut refused = 0;
    for thread in threads {
        let (ids, count) = thread.join().expect("thread");
        written.extend(ids);
        refused += count;
    }
    assert_eq!(written.len() + refused, 16 * 25);
    assert_eq!(refused, 16 * 5 - 1, "one contested begin wins");
    drop(ledger);
    let reopened = SqliteLedger::open(&path).expect("reopen");
    let entries = reopened
        .list(&ListFilter {
            limit: 1000,
            ..ListFilter::default()
        })
        .expect("list");
    assert_eq!(entries.len(), written.len(), "no write lost, none extra");
    for id in &written {
        let entry = reopened.get(id).expect("read").expect("present");
        if entry.idempotency_key.as_deref() != Some("contested") {
            assert_eq!(entry.state, EntryState::Pending, "{id}");
            assert_eq!(reopened.history(id).expect("history").len(), 2, "{id}");
        }
    }
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
fn list_filters_by_creation_time() {
    let (ledger, clock) = ledger();
    for id in ["gh_1", "gh_2", "gh_3"] {
        created(&ledger, id);
        tick(&clock);
    }
    let ids = |after: Option<i64>, before: Option<i64>| -> Vec<String> {
        ledger
            .list(&ListFilter {
                created_after_unix: after,
                created_before_unix: before,
                ..ListFilter::default()
            })
            .expect("list")
            .into_iter()
            .map(|entry| entry.id)
            .collect()
    };
    assert_eq!(ids(Some(START + 1), None), ["gh_3", "gh_2"], "at or after");
    assert_eq!(ids(None, Some(START + 1)), ["gh_1"], "strictly before");
    assert_eq!(ids(Some(START + 1), Some(START + 2)), ["gh_2"]);
    assert_eq!(ids(Some(START + 9), None), Vec::<String>::new());
}
