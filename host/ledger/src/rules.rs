//! What a report does to an entry, decided once for every backend: the storage code of each
//! [`Ledger`](crate::Ledger) implementation reads the entry (locked), lets these functions change
//! it in memory and say what happened, and writes the entry and the history line back. Keeping the
//! decisions here is what makes the SQLite and PostgreSQL ledgers behave the same.

use gatehouse_plugin_api::{Command, Currency, Money, Operation, Outcome, WebhookEvent};

use super::{
    Entry, EntryState, LedgerError, Refusal, Transition, describe_event, describe_outcome,
    event_concerns, transition,
};

/// Records a dispatch's (or a status read's) outcome on `entry`; returns the history detail.
pub(crate) fn apply_outcome(entry: &mut Entry, outcome: &Outcome) -> String {
    let mut detail = describe_outcome(outcome);
    match transition(entry.state, outcome.status) {
        Transition::Move(state) => {
            if entry.state == EntryState::NeedsOperator {
                detail.push_str("; settles what the operator was asked to look at");
                entry.operator_flag = None;
            }
            entry.state = state;
            entry.outcome = Some(outcome.clone());
            if outcome.provider_reference.is_some() {
                entry
                    .provider_reference
                    .clone_from(&outcome.provider_reference);
            }
        }
        Transition::Stay => {
            detail.push_str(&format!("; the entry stays {}", entry.state));
            keep_first_outcome(entry, outcome);
        }
        Transition::Contradiction => {
            let reason = format!(
                "an outcome reports {} for an entry already {}",
                outcome.status.as_str(),
                entry.state
            );
            detail.push_str(&format!(
                "; contradicts the final state {}, flagged for an operator",
                entry.state
            ));
            entry.operator_flag = Some(reason);
            keep_first_outcome(entry, outcome);
        }
    }
    detail
}

/// Records the host's refusal to send `entry`; only an entry still `sending` can be refused.
pub(crate) fn apply_refusal(
    entry: &mut Entry,
    code: &str,
    message: &str,
) -> Result<String, LedgerError> {
    if entry.state != EntryState::Sending {
        return Err(LedgerError::NotSending {
            id: entry.id.clone(),
            state: entry.state,
            action: "recording a refusal",
        });
    }
    entry.state = EntryState::Failed;
    entry.refusal = Some(Refusal {
        code: code.to_string(),
        message: message.to_string(),
    });
    Ok(format!("refused before sending: {code}: {message}"))
}

/// [`apply_refusal`], and the key released; returns the history detail.
pub(crate) fn apply_transient_refusal(
    entry: &mut Entry,
    code: &str,
    message: &str,
) -> Result<String, LedgerError> {
    let detail = apply_refusal(entry, code, message)?;
    Ok(match entry.idempotency_key.take() {
        Some(key) => format!("{detail} (idempotency key `{key}` released: a retry runs afresh)"),
        None => detail,
    })
}

/// Asks an operator to look at `entry`; returns the history detail.
pub(crate) fn apply_flag(entry: &mut Entry, reason: &str) -> String {
    // A final state is what the provider said happened; the flag asks a person to look, it does
    // not unsay it.
    if !entry.state.is_final() {
        entry.state = EntryState::NeedsOperator;
    }
    entry.operator_flag = Some(reason.to_string());
    format!("flagged for an operator: {reason}")
}

/// Applies a verified event to the entry [`choose_entry`] picked; `concerned` is what it said.
/// Returns the history detail.
pub(crate) fn apply_event(entry: &mut Entry, event: &WebhookEvent, concerned: bool) -> String {
    let mut detail = describe_event(event);
    if !concerned {
        // A refund event carrying the reference of the charge it refunds says nothing about
        // whether the charge itself succeeded.
        detail.push_str(&format!(
            "; it concerns another transaction than this {}, the entry stays {}",
            entry.operation, entry.state
        ));
        return detail;
    }
    match transition(entry.state, event.status) {
        Transition::Move(state) => {
            if entry.state == EntryState::NeedsOperator {
                detail.push_str("; settles what the operator was asked to look at");
                entry.operator_flag = None;
            }
            entry.state = state;
            if let Some(difference) = amount_difference(entry, event) {
                detail.push_str(&format!("; {difference}, flagged for an operator"));
                entry.operator_flag = Some(difference);
            }
        }
        Transition::Stay => detail.push_str(&format!("; the entry stays {}", entry.state)),
        Transition::Contradiction => {
            let reason = format!(
                "event {} reports {} for an entry already {}",
                event.event_id,
                event.status.as_str(),
                entry.state
            );
            detail.push_str(&format!(
                "; contradicts the final state {}, flagged for an operator",
                entry.state
            ));
            entry.operator_flag = Some(reason);
        }
    }
    if entry.provider_reference.is_none() {
        entry
            .provider_reference
            .clone_from(&event.provider_reference);
    }
    detail
}

/// One entry row as stored, before its JSON and codes are checked.
pub(crate) struct EntryRow {
    pub(crate) id: String,
    pub(crate) provider: String,
    pub(crate) account: String,
    pub(crate) operation: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) request_hash: String,
    pub(crate) command_json: String,
    pub(crate) state: String,
    pub(crate) amount_minor_units: Option<i64>,
    pub(crate) amount_currency: Option<String>,
    pub(crate) provider_reference: Option<String>,
    pub(crate) outcome_json: Option<String>,
    pub(crate) refusal_code: Option<String>,
    pub(crate) refusal_message: Option<String>,
    pub(crate) operator_flag: Option<String>,
    pub(crate) created_at_unix: i64,
    pub(crate) updated_at_unix: i64,
    /// Who asked for the command (schema v2 on SQLite, migration 3 on PostgreSQL).
    pub(crate) actor: Option<String>,
}

impl EntryRow {
    /// Checks and parses the row. A row that cannot be read back is an error naming the entry,
    /// never a panic and never a silently altered entry.
    pub(crate) fn into_entry(self) -> Result<Entry, LedgerError> {
        let id = self.id;
        let corrupt = |problem: String| LedgerError::Corrupt {
            id: id.clone(),
            problem,
        };
        let operation = Operation::parse(&self.operation)
            .ok_or_else(|| corrupt(format!("unknown operation `{}`", self.operation)))?;
        let command: Command = serde_json::from_str(&self.command_json)
            .map_err(|error| corrupt(format!("the command JSON is unreadable: {error}")))?;
        if command.operation() != operation {
            return Err(corrupt(format!(
                "the entry says `{operation}` but its command is `{}`",
                command.operation()
            )));
        }
        let state = EntryState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("unknown state `{}`", self.state)))?;
        let amount = match (self.amount_minor_units, self.amount_currency) {
            (Some(minor_units), Some(code)) => {
                let currency = Currency::from_code(&code).map_err(|error| {
                    corrupt(format!("the amount's currency is unusable: {error}"))
                })?;
                Some(Money::new(minor_units, currency))
            }
            (None, None) => None,
            _ => {
                return Err(corrupt(
                    "the amount has minor units or a currency, not both".into(),
                ));
            }
        };
        let outcome: Option<Outcome> = self
            .outcome_json
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|error| corrupt(format!("the outcome JSON is unreadable: {error}")))?;
        let refusal = self.refusal_code.map(|code| Refusal {
            code,
            message: self.refusal_message.unwrap_or_default(),
        });
        Ok(Entry {
            id,
            provider: self.provider,
            account: self.account,
            operation,
            idempotency_key: self.idempotency_key,
            request_hash: self.request_hash,
            command,
            state,
            amount,
            provider_reference: self.provider_reference,
            outcome,
            refusal,
            operator_flag: self.operator_flag,
            created_at_unix: self.created_at_unix,
            updated_at_unix: self.updated_at_unix,
            actor: self.actor,
        })
    }
}

/// Picks the entry an event is about among those whose reference or provider reference it names,
/// and says whether the event concerns that entry's kind of transaction.
///
/// Entries of the kind the event reports on win; among them, the one whose id the event names,
/// then one whose amount equals the event's (several partial refunds of one transaction share its
/// provider reference), then an unsettled one, then the newest. With none of the right kind, the
/// event is only noted on the entry it names.
pub(crate) fn choose_entry(candidates: Vec<Entry>, event: &WebhookEvent) -> Option<(Entry, bool)> {
    let names = |entry: &Entry| event.reference.as_deref() == Some(entry.id.as_str());
    let rank = |entry: &Entry| {
        (
            names(entry),
            event.amount.is_some() && entry.amount == event.amount,
            !entry.state.is_final(),
        )
    };
    let (concerned, unconcerned): (Vec<Entry>, Vec<Entry>) = candidates
        .into_iter()
        .partition(|entry| event_concerns(&event.event_type, entry.operation));
    // `max_by_key` keeps the last of equal maxima, and candidates come oldest first.
    if let Some(best) = concerned.into_iter().max_by_key(|entry| rank(entry)) {
        return Some((best, true));
    }
    unconcerned
        .into_iter()
        .max_by_key(|entry| rank(entry))
        .map(|entry| (entry, false))
}

/// Describes how a successful event's amount differs from the command's, if it does. Partial
/// refunds are meant to differ from what they refund.
fn amount_difference(entry: &Entry, event: &WebhookEvent) -> Option<String> {
    let (Some(expected), Some(reported)) = (entry.amount, event.amount) else {
        return None;
    };
    let settled_differently = entry.state == EntryState::Succeeded
        && event.event_type != "partial_refund"
        && expected != reported;
    settled_differently.then(|| {
        format!(
            "event {} reports {reported} where the command named {expected}",
            event.event_id
        )
    })
}

/// Keeps the first outcome recorded: when a webhook settled the entry before the flow ended,
/// the flow's outcome is still what a retrying caller should be answered with.
fn keep_first_outcome(entry: &mut Entry, outcome: &Outcome) {
    if entry.outcome.is_none() {
        entry.outcome = Some(outcome.clone());
    }
}
