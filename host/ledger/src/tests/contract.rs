//! The ledger's contract: every function here runs once per backend (see `tests.rs`), so the
//! SQLite and the PostgreSQL ledgers are held to the very same behaviour.

use std::sync::{Arc, Barrier};

use gatehouse_plugin_api::{ErrorKind, Outcome, OutcomeStatus, ProviderError};
use serde_json::json;

use super::*;

pub(super) fn begin_creates_then_finds_the_same_key_and_body(store: &Store) {
    let ledger = store.ledger.as_ref();
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

pub(super) fn begin_refuses_a_key_reused_with_another_body(store: &Store) {
    let ledger = store.ledger.as_ref();
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

pub(super) fn begin_without_a_key_always_creates(store: &Store) {
    let ledger = store.ledger.as_ref();
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

pub(super) fn begin_refuses_an_operation_that_is_not_the_commands(store: &Store) {
    let ledger = store.ledger.as_ref();
    let mut entry = new_entry("gh_1", None, charge(500));
    entry.operation = Operation::Refund;
    assert!(matches!(
        ledger.begin(entry),
        Err(LedgerError::InvalidEntry { .. })
    ));
}

pub(super) fn record_outcome_moves_the_state_and_keeps_final_states(store: &Store) {
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
        let ledger = store.ledger.as_ref();
        let id = format!("gh_{index}");
        created(ledger, &id);
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

pub(super) fn record_outcome_flags_a_contradicted_final_state(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_1");
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

pub(super) fn record_outcome_of_an_unknown_entry_is_not_found(store: &Store) {
    let ledger = store.ledger.as_ref();
    assert_eq!(
        ledger.record_outcome("gh_missing", &Outcome::succeeded()),
        Err(LedgerError::NotFound {
            id: "gh_missing".into()
        })
    );
}

pub(super) fn record_outcome_of_begun_saves_what_record_outcome_would(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_by_id");
    let begun = created(ledger, "gh_begun");
    tick(&store.clock);
    let outcome = Outcome::succeeded().with_provider_reference("tx-7");
    let by_id = ledger.record_outcome("gh_by_id", &outcome).expect("record");
    let of_begun = ledger
        .record_outcome_of_begun(begun, &outcome)
        .expect("record against the begun entry");
    assert_eq!(of_begun.state, EntryState::Succeeded);
    assert_eq!(of_begun.updated_at_unix, START + 1);
    assert_eq!(
        Entry {
            id: "gh_by_id".into(),
            ..of_begun.clone()
        },
        by_id
    );
    // What it answered is what it stored, history included.
    assert_eq!(ledger.get("gh_begun").expect("get"), Some(of_begun));
    let details = |id: &str| -> Vec<(EntryState, String)> {
        let history = ledger.history(id).expect("history");
        history
            .into_iter()
            .map(|event| (event.state, event.detail))
            .collect()
    };
    assert_eq!(details("gh_begun"), details("gh_by_id"));
    assert_eq!(details("gh_begun").len(), 2);
}

pub(super) fn record_outcome_of_begun_sees_a_write_that_came_in_between(store: &Store) {
    let ledger = store.ledger.as_ref();
    let begun = created(ledger, "gh_1");
    // A webhook (or another host's reconciler) finished the entry while the flow ran, in the
    // same second: the begun entry is stale and must not be written over.
    let first = Outcome::succeeded().with_provider_reference("tx-1");
    ledger.record_outcome("gh_1", &first).expect("record");
    let entry = ledger
        .record_outcome_of_begun(
            begun,
            &Outcome::failed(ProviderError::new(ErrorKind::Declined, "no funds")),
        )
        .expect("record against the begun entry");
    assert_eq!(entry.state, EntryState::Succeeded);
    assert_eq!(entry.outcome, Some(first));
    assert!(entry.operator_flag.is_some());
    assert_eq!(ledger.get("gh_1").expect("get"), Some(entry));
    let history = ledger.history("gh_1").expect("history");
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(history[2].detail.contains("contradicts"), "{history:?}");

    // An entry that is not as `begin` wrote it is recorded by id; an unknown one is not found.
    let mut recorded = ledger.get("gh_1").expect("get").expect("the entry");
    recorded.id = "gh_missing".into();
    assert_eq!(
        ledger.record_outcome_of_begun(recorded, &Outcome::succeeded()),
        Err(LedgerError::NotFound {
            id: "gh_missing".into()
        })
    );
    let mut missing = created(ledger, "gh_2");
    missing.id = "gh_missing".into();
    assert_eq!(
        ledger.record_outcome_of_begun(missing, &Outcome::succeeded()),
        Err(LedgerError::NotFound {
            id: "gh_missing".into()
        })
    );
}

pub(super) fn record_refusal_fails_only_an_entry_never_sent(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_1");
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

    created(ledger, "gh_2");
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

pub(super) fn a_transient_refusal_releases_the_key_for_a_retry(store: &Store) {
    let ledger = store.ledger.as_ref();
    let begun = |id: &str| {
        ledger
            .begin(new_entry(id, Some("order-429"), charge(500)))
            .expect("begin")
    };
    let Begin::Created(first) = begun("gh_1") else {
        panic!("a new key makes an entry");
    };
    let refused = ledger
        .record_transient_refusal(&first.id, "rate_limited", "over the account's rate limit")
        .expect("refuse");
    assert_eq!(refused.state, EntryState::Failed);
    assert_eq!(refused.idempotency_key, None, "the key is released");
    assert_eq!(
        ledger
            .get("gh_1")
            .expect("get")
            .map(|entry| entry.idempotency_key),
        Some(None),
        "and stays released when read back"
    );
    let history = ledger.history("gh_1").expect("history");
    assert!(
        history.last().is_some_and(|event| event
            .detail
            .contains("idempotency key `order-429` released")),
        "{history:?}"
    );
    // The retry with the same key and body runs afresh: a new entry, not the refusal replayed.
    match begun("gh_2") {
        Begin::Created(entry) => assert_eq!(entry.idempotency_key.as_deref(), Some("order-429")),
        Begin::Existing(entry) => panic!("the released key still answered with {entry:?}"),
    }
    assert_eq!(
        ledger
            .find_by_key("paygateglobal", "main", "order-429")
            .expect("find")
            .map(|entry| entry.id),
        Some("gh_2".to_string())
    );
    // Like any refusal, only an entry never sent can be refused.
    assert!(matches!(
        ledger.record_transient_refusal("gh_1", "rate_limited", "again"),
        Err(LedgerError::NotSending { .. })
    ));
}

pub(super) fn history_is_kept_in_order(store: &Store) {
    let (ledger, clock) = (store.ledger.as_ref(), &*store.clock);
    created(ledger, "gh_1");
    tick(clock);
    ledger
        .record_outcome(
            "gh_1",
            &Outcome::unknown(ProviderError::new(
                ErrorKind::ProviderUnavailable,
                "timeout",
            )),
        )
        .expect("record");
    tick(clock);
    ledger
        .record_outcome("gh_1", &Outcome::pending())
        .expect("record");
    tick(clock);
    ledger
        .flag_for_operator("gh_1", "no status operation")
        .expect("flag");
    tick(clock);
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

pub(super) fn flag_for_operator_keeps_a_final_state(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_1");
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

pub(super) fn a_cursor_pages_in_insertion_order_and_inserts_between_pages_land_before_the_first(
    store: &Store,
) {
    let ledger = store.ledger.as_ref();
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

pub(super) fn list_filters_newest_first(store: &Store) {
    let (ledger, clock) = (store.ledger.as_ref(), &*store.clock);
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
        tick(clock);
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

pub(super) fn list_breaks_ties_in_the_same_second_by_insertion(store: &Store) {
    let ledger = store.ledger.as_ref();
    for id in ["gh_b", "gh_a", "gh_c"] {
        created(ledger, id);
    }
    let ids: Vec<String> = ledger
        .list(&ListFilter::default())
        .expect("list")
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(ids, ["gh_c", "gh_a", "gh_b"]);
}

pub(super) fn unresolved_returns_sending_unknown_and_pending_only(store: &Store) {
    let (ledger, clock) = (store.ledger.as_ref(), &*store.clock);
    let statuses = [
        ("gh_sending", None),
        ("gh_succeeded", Some(OutcomeStatus::Succeeded)),
        ("gh_pending", Some(OutcomeStatus::Pending)),
        ("gh_failed", Some(OutcomeStatus::Failed)),
        ("gh_unknown", Some(OutcomeStatus::Unknown)),
        ("gh_operator", Some(OutcomeStatus::Unknown)),
    ];
    for (id, status) in statuses {
        created(ledger, id);
        if let Some(status) = status {
            ledger
                .record_outcome(id, &Outcome::new(status))
                .expect("record");
        }
        tick(clock);
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

pub(super) fn record_event_stores_each_event_once(store: &Store) {
    let ledger = store.ledger.as_ref();
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

pub(super) fn events_feed_is_ordered_and_resumable(store: &Store) {
    let (ledger, clock) = (store.ledger.as_ref(), &*store.clock);
    for index in 0..5 {
        let event = event(&format!("event-{index}"), OutcomeStatus::Succeeded);
        ledger
            .record_event("xsolla", "main", &event)
            .expect("record");
        tick(clock);
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

pub(super) fn apply_event_settles_a_pending_entry(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_1");
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

pub(super) fn apply_event_finds_an_entry_by_provider_reference(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_1");
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

pub(super) fn apply_event_ignores_unknown_references_and_unverified_events(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_1");
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

pub(super) fn apply_event_never_regresses_a_final_state_and_flags_contradictions(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_1");
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

pub(super) fn apply_event_keeps_a_refund_event_off_the_charge_it_refunds(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_charge");
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

pub(super) fn apply_event_flags_a_payment_of_another_amount(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_1");
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

pub(super) fn a_reopened_ledger_keeps_everything(store: &Store) {
    let mut payment = event("e-1", OutcomeStatus::Succeeded);
    payment.reference = Some("gh_1".into());
    let (entry, history, stored_events) = {
        let ledger = store.reopen();
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
    let reopened = store.reopen();
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
}

pub(super) fn a_corrupt_row_is_an_error_naming_the_entry(store: &Store) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_1");
    created(ledger, "gh_2");
    store.execute_sql("UPDATE entries SET command_json = '{not json' WHERE id = 'gh_2'");

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

pub(super) fn concurrent_begins_with_one_key_create_exactly_one_entry(store: &Store) {
    let ledger = Arc::clone(&store.ledger);
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

pub(super) fn concurrent_begins_through_separate_connections_create_exactly_one_entry(
    store: &Store,
) {
    // Four handles on one store stand for separate processes, which no in-process lock can
    // order: SQLite's `BEGIN IMMEDIATE` and busy timeout, PostgreSQL's unique constraint and
    // `ON CONFLICT` must.
    let handles: Vec<Arc<dyn Ledger>> = (0..4).map(|_| store.reopen()).collect();
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

pub(super) fn entries_serialize_with_snake_case_states(store: &Store) {
    let ledger = store.ledger.as_ref();
    let entry = created(ledger, "gh_1");
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

pub(super) fn concurrent_writers_share_commits_and_keep_every_write_durable(store: &Store) {
    // Writers that overlap join one transaction (group commit); an error in one (a reused key)
    // rolls back only its own savepoint. Every write that returned Ok must be in the file when
    // it is opened afresh.
    let ledger = store.reopen();
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
    let reopened = store.reopen();
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

pub(super) fn a_feed_reader_never_misses_an_event_committed_behind_it(store: &Store) {
    // Writers on separate handles record events while a reader follows the feed the way the
    // forwarder does (resuming after the last sequence it saw): it must see every event once.
    let writers = 4;
    let per_writer = 40;
    let barrier = Arc::new(Barrier::new(writers + 1));
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let ledger = store.reopen();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for index in 0..per_writer {
                    let event = event(&format!("e-{writer}-{index}"), OutcomeStatus::Succeeded);
                    assert!(
                        ledger
                            .record_event("xsolla", "main", &event)
                            .expect("record")
                    );
                }
            })
        })
        .collect();
    let reader = store.reopen();
    barrier.wait();
    let mut seen = Vec::new();
    let mut after = 0;
    while !threads.iter().all(|thread| thread.is_finished()) {
        for stored in reader.events(after, 7).expect("events") {
            after = stored.sequence;
            seen.push(stored.event.event_id);
        }
    }
    for thread in threads {
        thread.join().expect("writer");
    }
    seen.extend(
        reader
            .events(after, 1000)
            .expect("events")
            .into_iter()
            .map(|stored| stored.event.event_id),
    );
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "an event was read twice");
    assert_eq!(
        seen.len(),
        writers * per_writer,
        "the reader missed events: it saw {} of {}",
        seen.len(),
        writers * per_writer
    );
}

pub(super) fn concurrent_reports_on_one_entry_keep_every_history_line(store: &Store) {
    // Hosts recording on the same entry at once (a webhook beside the flow's outcome,
    // reconciliation beside both) run one after the other: every report is in the history,
    // and the entry ends in the state the reports settle.
    created(store.ledger.as_ref(), "gh_1");
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let ledger = store.reopen();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..5 {
                    let outcome = if thread == 0 {
                        Outcome::succeeded()
                    } else {
                        Outcome::pending()
                    };
                    ledger.record_outcome("gh_1", &outcome).expect("record");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    let history = store.ledger.history("gh_1").expect("history");
    assert_eq!(history.len(), 1 + 8 * 5, "{history:?}");
    let entry = store.ledger.get("gh_1").expect("get").expect("exists");
    assert_eq!(
        entry.state,
        EntryState::Succeeded,
        "a final state is never left"
    );
    assert_eq!(entry.operator_flag, None);
}

fn settlement(state: EntryState, reason: &str) -> Settlement {
    Settlement {
        state,
        provider_reference: Some("tx-77".into()),
        reason: reason.into(),
        actor: "ops-settle".into(),
    }
}

pub(super) fn an_operator_settles_an_entry_that_needs_one_and_history_names_who_and_why(
    store: &Store,
) {
    let ledger = store.ledger.as_ref();
    let entry = created(ledger, "gh_1");
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
    tick(&store.clock);
    let settled = ledger
        .settle(
            "gh_1",
            &settlement(EntryState::Succeeded, "paid, seen in the back office"),
        )
        .expect("settle");
    assert_eq!(settled.state, EntryState::Succeeded);
    assert_eq!(settled.operator_flag, None);
    assert_eq!(settled.provider_reference.as_deref(), Some("tx-77"));
    assert_eq!(settled.updated_at_unix, START + 1);
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
    assert_eq!(ledger.get("gh_1").expect("get"), Some(settled.clone()));
    // Another handle (another host, or a restart) reads the same decision.
    assert_eq!(store.reopen().get("gh_1").expect("get"), Some(settled));
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

pub(super) fn settling_refuses_final_and_sending_entries_and_bad_settlements_and_changes_nothing(
    store: &Store,
) {
    let ledger = store.ledger.as_ref();
    created(ledger, "gh_sending");
    created(ledger, "gh_final");
    ledger
        .record_outcome(
            "gh_final",
            &Outcome::failed(ProviderError::new(ErrorKind::Declined, "no")),
        )
        .expect("record");
    created(ledger, "gh_unknown");
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

pub(super) fn an_entry_without_an_actor_reads_back_without_one(store: &Store) {
    let ledger = store.ledger.as_ref();
    let mut anonymous = new_entry("gh_1", None, charge(500));
    anonymous.actor = None;
    let Begin::Created(entry) = ledger.begin(anonymous).expect("begin") else {
        panic!("a new entry");
    };
    assert_eq!(entry.actor, None);
    assert_eq!(ledger.get("gh_1").expect("get").expect("kept").actor, None);
    assert_eq!(
        created(ledger, "gh_2").actor.as_deref(),
        Some("test-key"),
        "and one with an actor keeps it"
    );
}

pub(super) fn list_filters_by_creation_time(store: &Store) {
    let ledger = store.ledger.as_ref();
    for id in ["gh_1", "gh_2", "gh_3"] {
        created(ledger, id);
        tick(&store.clock);
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
    // The time filter combines with the others (all of them must hold).
    ledger
        .record_outcome("gh_1", &Outcome::succeeded())
        .expect("record");
    ledger
        .record_outcome("gh_3", &Outcome::succeeded())
        .expect("record");
    let succeeded_later: Vec<String> = ledger
        .list(&ListFilter {
            created_after_unix: Some(START + 1),
            state: Some(EntryState::Succeeded),
            ..ListFilter::default()
        })
        .expect("list")
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(succeeded_later, ["gh_3"]);
}
