//! Group commit for the two writes every charge makes: its entry begun, its outcome recorded.
//!
//! PostgreSQL already shares WAL flushes between concurrent transactions, so a batch does not
//! save fsyncs; it saves the database's work per transaction. Measured with `pgbench` on this
//! project's schema and statements (8 clients, durable commits, 2 cores): 520 µs of server CPU
//! per charge with each write its own transaction, 230 µs with four charges' writes in one
//! statement, 200 µs with eight — most of a lone write's cost is the transaction around it (the
//! round trip and the wake-ups on both sides, executor start, commit), not its rows.
//!
//! So [`PostgresLedger::begin`](super::PostgresLedger) and `record_outcome_of_begun` write
//! through a queue led by its callers (the leader/follower group commit of database engines): a
//! caller that finds nobody writing ([`LEADERS`]) leads, on its own thread: it takes a
//! connection from the pool, then whatever queued meanwhile (at most [`MOST_PER_BATCH`] writes
//! with its own), and runs them all as one statement ([`GROUP_WRITE`]), hence one transaction:
//! every write in it is committed, or none is. A caller that finds the leaders busy queues and
//! sleeps until a leader answers it, or hands it the lead with the writes queued behind it.
//! Nothing waits on a timer, and a write that finds the queue idle costs no thread hop: it goes
//! at once, alone; a batch grows only out of writes that arrived while others were in flight.
//! Each caller is answered after the commit, so "durable before the answer" holds for each
//! write as it did alone.
//!
//! What a batch cannot decide, it hands back (never guesses):
//! - a begin whose key was taken ([`Written::No`]): the caller reads the entry that holds it, as
//!   a lone begin does;
//! - an outcome whose entry changed since it was begun (a webhook, another host): the caller
//!   records it the locked way, as a lone write does;
//! - a batch the server refused (a duplicate id, a deadlock, any statement error): the statement
//!   rolled back, so each write is done again alone ([`Failed::Unwritten`]) and gets its own
//!   answer;
//! - a batch whose connection was lost on the way ([`Failed::Lost`]): whether it committed is
//!   unknown, so each caller gets the error, as a lone write would (a begun entry then stays
//!   `sending` for reconciliation; nothing was sent).
//!
//! Begins are inserted in key order, so two hosts' batches that share keys take the key locks in
//! the same order and cannot deadlock on them.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use postgres::types::ToSql;

use super::Pool;
use super::connection::{Sql, ends_the_session};
use crate::{Entry, NewEntry};

/// Callers writing at once, each a batch. One: measured against two in the bench (runs X3 and
/// X4 in BENCHMARKS.md), two leaders left most writes alone when three hosts shared the load
/// (PostgreSQL CPU per charge 730 against 755 µs unbatched), one batched them (513 against 725).
/// A write then waits at most one batch's round trip for its turn.
pub(super) const LEADERS: usize = 1;

/// Most writes one statement carries: bounds its size, and the wait of a batch's first write.
pub(super) const MOST_PER_BATCH: usize = 64;

/// The batch's one statement. `$1`–`$11`: the begins, one array per column (`$10` each entry's
/// time); `$12` this instance; `$13`–`$22`: the outcomes (`$22` the update time its entry was
/// begun with: the entry is saved only if it is still as begun). Returns `(true, id)` for each
/// entry created and `(false, id)` for each outcome saved.
pub(super) const GROUP_WRITE: &str = "WITH begun AS ( \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::int8[], $9::text[], $10::int8[], $11::text[]) \
         AS b(id, provider, account, operation, idempotency_key, request_hash, command_json, \
             amount_minor_units, amount_currency, at_unix, actor)), \
     created AS ( \
         INSERT INTO entries (id, provider, account, operation, idempotency_key, request_hash, \
             command_json, state, amount_minor_units, amount_currency, created_at_unix, \
             updated_at_unix, sender_instance, actor) \
         SELECT id, provider, account, operation, idempotency_key, request_hash, command_json, \
             'sending', amount_minor_units, amount_currency, at_unix, at_unix, $12, actor \
         FROM begun \
         ON CONFLICT ON CONSTRAINT entries_idempotency_key DO NOTHING \
         RETURNING id, created_at_unix), \
     created_history AS ( \
         INSERT INTO entry_history (entry_id, at_unix, state, detail, actor) \
         SELECT id, created_at_unix, 'sending', 'created', NULL FROM created), \
     recorded AS ( \
         SELECT * FROM unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::text[], \
             $18::text[], $19::text[], $20::int8[], $21::text[], $22::int8[]) \
         AS o(id, state, provider_reference, outcome_json, refusal_code, refusal_message, \
             operator_flag, at_unix, detail, begun_at_unix)), \
     saved AS ( \
         UPDATE entries SET state = o.state, provider_reference = o.provider_reference, \
             outcome_json = o.outcome_json, refusal_code = o.refusal_code, \
             refusal_message = o.refusal_message, operator_flag = o.operator_flag, \
             updated_at_unix = o.at_unix \
         FROM recorded o \
         WHERE entries.id = o.id AND entries.state = 'sending' \
             AND entries.provider_reference IS NULL AND entries.outcome_json IS NULL \
             AND entries.refusal_code IS NULL AND entries.refusal_message IS NULL \
             AND entries.operator_flag IS NULL AND entries.updated_at_unix = o.begun_at_unix \
         RETURNING entries.id, o.at_unix, o.state, o.detail), \
     saved_history AS ( \
         INSERT INTO entry_history (entry_id, at_unix, state, detail, actor) \
         SELECT id, at_unix, state, detail, NULL FROM saved) \
     SELECT true, id FROM created UNION ALL SELECT false, id FROM saved";

/// A begin as the batch writes it.
pub(super) struct BeginWrite {
    pub id: String,
    pub provider: String,
    pub account: String,
    pub operation: &'static str,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub command_json: String,
    pub amount_minor_units: Option<i64>,
    pub amount_currency: Option<&'static str>,
    pub at_unix: i64,
    pub actor: Option<String>,
}

impl BeginWrite {
    pub(super) fn new(entry: &NewEntry, command_json: String, at_unix: i64) -> Self {
        let amount = entry.command.amount();
        Self {
            id: entry.id.clone(),
            provider: entry.provider.clone(),
            account: entry.account.clone(),
            operation: entry.operation.as_str(),
            idempotency_key: entry.idempotency_key.clone(),
            request_hash: entry.request_hash.clone(),
            command_json,
            amount_minor_units: amount.map(|money| money.minor_units),
            amount_currency: amount.map(|money| money.currency.code()),
            at_unix,
            actor: entry.actor.clone(),
        }
    }
}

/// An outcome as the batch writes it: the entry's columns after the outcome was applied, saved
/// only while the stored entry is still as begun at `begun_at_unix`.
pub(super) struct OutcomeWrite {
    pub id: String,
    pub state: &'static str,
    pub provider_reference: Option<String>,
    pub outcome_json: Option<String>,
    pub refusal_code: Option<String>,
    pub refusal_message: Option<String>,
    pub operator_flag: Option<String>,
    pub at_unix: i64,
    pub detail: String,
    pub begun_at_unix: i64,
}

impl OutcomeWrite {
    /// `entry` with the outcome applied and stamped `entry.updated_at_unix`.
    pub(super) fn new(
        entry: &Entry,
        outcome_json: Option<String>,
        detail: String,
        begun_at_unix: i64,
    ) -> Self {
        Self {
            id: entry.id.clone(),
            state: entry.state.as_str(),
            provider_reference: entry.provider_reference.clone(),
            outcome_json,
            refusal_code: entry.refusal.as_ref().map(|refusal| refusal.code.clone()),
            refusal_message: entry
                .refusal
                .as_ref()
                .map(|refusal| refusal.message.clone()),
            operator_flag: entry.operator_flag.clone(),
            at_unix: entry.updated_at_unix,
            detail,
            begun_at_unix,
        }
    }
}

/// What the batch did with one write.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Written {
    /// The entry was created, or the outcome saved, and committed.
    Yes,
    /// Committed without it: the key was taken, or the entry was no longer as begun.
    No,
}

/// Why the batch did not decide a write.
#[derive(Debug)]
pub(super) enum Failed {
    /// Nothing of the batch was written (the server refused the statement): do it alone.
    Unwritten,
    /// The connection was lost, or none could be had: the error, explained.
    Lost(String),
}

type Answer = Result<Written, Failed>;

pub(super) enum Write {
    Begin(BeginWrite),
    Outcome(OutcomeWrite),
}

/// A write queued behind the leaders, and where its turn comes.
struct Waiting {
    write: Write,
    turn: Sender<Turn>,
}

/// What a queued write's caller is told.
enum Turn {
    /// A leader wrote it.
    Answered(Answer),
    /// The leader that finished hands its place to this caller, with the writes queued
    /// behind it (its own write given back).
    Lead {
        own: Box<Write>,
        others: Vec<Waiting>,
    },
}

/// What the tests count: statements run and the writes they carried.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Counts {
    /// Statements run.
    pub batches: AtomicU64,
    /// Writes carried by them.
    pub writes: AtomicU64,
}

struct Queue {
    /// Callers writing right now (at most [`LEADERS`]).
    leaders: usize,
    waiting: VecDeque<Waiting>,
}

/// The queue of writes and the leaders writing it.
pub(super) struct GroupCommit {
    instance_id: String,
    queue: Mutex<Queue>,
    #[cfg(test)]
    pub(super) counts: Counts,
}

impl GroupCommit {
    pub(super) fn new(instance_id: &str) -> Self {
        Self {
            instance_id: instance_id.to_string(),
            queue: Mutex::new(Queue {
                leaders: 0,
                waiting: VecDeque::new(),
            }),
            #[cfg(test)]
            counts: Counts::default(),
        }
    }

    /// Writes `write` through `pool`: at once when fewer than [`LEADERS`] callers are writing
    /// (this caller then leads, taking what queued meanwhile), else queued for the next batch.
    pub(super) fn write(&self, pool: &Pool, write: Write) -> Answer {
        let mut queue = self.lock();
        if queue.leaders < LEADERS {
            queue.leaders += 1;
            drop(queue);
            return self.lead(pool, write, Vec::new());
        }
        let (turn, my_turn) = crossbeam_channel::bounded(1);
        queue.waiting.push_back(Waiting { write, turn });
        drop(queue);
        match my_turn.recv() {
            Ok(Turn::Answered(answer)) => answer,
            Ok(Turn::Lead { own, others }) => self.lead(pool, *own, others),
            // The leader holding this write went away without answering (it cannot panic on a
            // write, but if it did): whether the write committed is unknown, as with a lost
            // connection.
            Err(_) => Err(Failed::Lost(
                "the ledger's writer stopped before answering".to_string(),
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue is consistent at every unlock, so a panic elsewhere leaves it usable.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `own` and the writes queued (those `handed` over first), answers the others, and
    /// hands the lead on to the next write in line; returns `own`'s answer.
    fn lead(&self, pool: &Pool, own: Write, handed: Vec<Waiting>) -> Answer {
        let leading = Leading(self);
        // The connection first: writes that queue while it is being had join this batch.
        let connection = pool.get();
        let mut others = handed;
        {
            let mut queue = self.lock();
            let room = MOST_PER_BATCH.saturating_sub(1 + others.len());
            let taken = room.min(queue.waiting.len());
            others.extend(queue.waiting.drain(..taken));
        }
        let writes: Vec<&Write> = std::iter::once(&own)
            .chain(others.iter().map(|waiting| &waiting.write))
            .collect();
        let answers = match connection {
            Ok(mut connection) => write_batch(&mut *connection, &self.instance_id, &writes),
            Err(error) => {
                let lost = format!("no database connection: {error}");
                writes
                    .iter()
                    .map(|_| Err(Failed::Lost(lost.clone())))
                    .collect()
            }
        };
        #[cfg(test)]
        {
            self.counts.batches.fetch_add(1, Ordering::Relaxed);
            self.counts
                .writes
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
        }
        let mut answers = answers.into_iter();
        let mine = answers
            .next()
            .unwrap_or_else(|| Err(Failed::Lost("the batch gave no answer".to_string())));
        for (waiting, answer) in others.into_iter().zip(answers) {
            let _ = waiting.turn.send(Turn::Answered(answer));
        }
        drop(leading);
        mine
    }

    /// Leaders writing right now, and writes queued behind them.
    #[cfg(test)]
    pub(super) fn state(&self) -> (usize, usize) {
        let queue = self.lock();
        (queue.leaders, queue.waiting.len())
    }
}

/// A caller's place as a leader: given up on drop (a panic included), to the first write in
/// line when one waits, so a queued write never waits for a leader that is not coming.
struct Leading<'a>(&'a GroupCommit);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        while let Some(next) = queue.waiting.pop_front() {
            let taken = (MOST_PER_BATCH - 1).min(queue.waiting.len());
            let others: Vec<Waiting> = queue.waiting.drain(..taken).collect();
            // A caller waits for its turn until it has one, so the send fails only if that
            // thread is gone: its writes go back in line and the next one is asked.
            if let Err(crossbeam_channel::SendError(Turn::Lead { others, .. })) =
                next.turn.send(Turn::Lead {
                    own: Box::new(next.write),
                    others,
                })
            {
                for waiting in others.into_iter().rev() {
                    queue.waiting.push_front(waiting);
                }
                continue;
            }
            return;
        }
        queue.leaders -= 1;
    }
}

/// One statement parameter: `pick` of every row, as an array.
fn column<'a, T, V>(rows: &[&'a T], pick: impl Fn(&'a T) -> V) -> Vec<V> {
    rows.iter().map(|row| pick(row)).collect()
}

/// Runs `batch` as one statement; the answers in the batch's order.
fn write_batch(sql: &mut dyn Sql, instance_id: &str, batch: &[&Write]) -> Vec<Answer> {
    let mut begins: Vec<&BeginWrite> = Vec::new();
    let mut outcomes: Vec<&OutcomeWrite> = Vec::new();
    // An entry twice in one batch cannot be told apart in the statement's answer: the second
    // is done alone. (A host never records two outcomes of one begun entry at once.)
    let mut outcome_ids = HashSet::new();
    let mut alone = vec![false; batch.len()];
    for (index, write) in batch.iter().enumerate() {
        match write {
            Write::Begin(begin) => begins.push(begin),
            Write::Outcome(outcome) if outcome_ids.insert(outcome.id.as_str()) => {
                outcomes.push(outcome);
            }
            Write::Outcome(_) => alone[index] = true,
        }
    }
    // Key order: two batches sharing keys lock them in the same order.
    begins.sort_by(|a, b| {
        (&a.provider, &a.account, &a.idempotency_key).cmp(&(
            &b.provider,
            &b.account,
            &b.idempotency_key,
        ))
    });
    let begin_ids = column(&begins, |b| Some(&b.id));
    let providers = column(&begins, |b| Some(&b.provider));
    let accounts = column(&begins, |b| Some(&b.account));
    let operations = column(&begins, |b| Some(b.operation));
    let keys = column(&begins, |b| b.idempotency_key.as_deref());
    let hashes = column(&begins, |b| Some(&b.request_hash));
    let commands = column(&begins, |b| Some(&b.command_json));
    let minor_units = column(&begins, |b| b.amount_minor_units);
    let currencies = column(&begins, |b| b.amount_currency);
    let begun_at = column(&begins, |b| b.at_unix);
    let actors = column(&begins, |b| b.actor.as_deref());
    let outcome_ids = column(&outcomes, |o| Some(&o.id));
    let states = column(&outcomes, |o| Some(o.state));
    let references = column(&outcomes, |o| o.provider_reference.as_deref());
    let outcome_jsons = column(&outcomes, |o| o.outcome_json.as_deref());
    let refusal_codes = column(&outcomes, |o| o.refusal_code.as_deref());
    let refusal_messages = column(&outcomes, |o| o.refusal_message.as_deref());
    let flags = column(&outcomes, |o| o.operator_flag.as_deref());
    let recorded_at = column(&outcomes, |o| o.at_unix);
    let details = column(&outcomes, |o| Some(&o.detail));
    let as_begun_at = column(&outcomes, |o| o.begun_at_unix);
    let params: [&(dyn ToSql + Sync); 22] = [
        &begin_ids,
        &providers,
        &accounts,
        &operations,
        &keys,
        &hashes,
        &commands,
        &minor_units,
        &currencies,
        &begun_at,
        &actors,
        &instance_id,
        &outcome_ids,
        &states,
        &references,
        &outcome_jsons,
        &refusal_codes,
        &refusal_messages,
        &flags,
        &recorded_at,
        &details,
        &as_begun_at,
    ];
    let written = match sql.query(GROUP_WRITE, &params) {
        Ok(rows) => rows,
        Err(error) => {
            let failed = if ends_the_session(&error) {
                format!(
                    "the batch's connection was lost: {}",
                    super::Explain::explain(&error)
                )
            } else {
                // Rolled back whole: each write gets its own answer alone.
                tracing::debug!(error = %super::Explain::explain(&error), writes = batch.len(),
                    "ledger batch refused; its writes are done one by one");
                return batch.iter().map(|_| Err(Failed::Unwritten)).collect();
            };
            return batch
                .iter()
                .map(|_| Err(Failed::Lost(failed.clone())))
                .collect();
        }
    };
    let mut created = HashSet::new();
    let mut saved = HashSet::new();
    for row in &written {
        let (was_begin, id): (bool, String) = match (row.try_get(0), row.try_get(1)) {
            (Ok(was_begin), Ok(id)) => (was_begin, id),
            // The statement committed, but its answer cannot be read: nobody can be told
            // "not written" truthfully, nor "written"; reconciliation settles what began.
            _ => {
                let unreadable = "the batch committed but its answer could not be read";
                return batch
                    .iter()
                    .map(|_| Err(Failed::Lost(unreadable.to_string())))
                    .collect();
            }
        };
        if was_begin {
            created.insert(id);
        } else {
            saved.insert(id);
        }
    }
    batch
        .iter()
        .zip(alone)
        .map(|(write, alone)| match write {
            _ if alone => Err(Failed::Unwritten),
            Write::Begin(begin) if created.contains(&begin.id) => Ok(Written::Yes),
            Write::Outcome(outcome) if saved.contains(&outcome.id) => Ok(Written::Yes),
            _ => Ok(Written::No),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Batches made on purpose: the pool has one connection and the test holds it, so the
    //! leaders wait for it with one write each while the writes under test queue behind them;
    //! released, the first leader to get the connection takes the whole queue in one statement.

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::tests::{START, charge, new_entry, postgres_options, states};
    use crate::{Begin, EntryState, Ledger, LedgerError};
    use gatehouse_plugin_api::Outcome;

    use super::super::PostgresLedger;

    type Job<T> = Box<dyn FnOnce(&PostgresLedger) -> T + Send>;

    fn ledger() -> Arc<PostgresLedger> {
        let database = gatehouse_pg_cluster::shared().create_database();
        let mut options = postgres_options(&database);
        options.max_connections = 1;
        let ledger = PostgresLedger::connect(&options)
            .expect("the PostgreSQL ledger connects")
            .with_clock(|| START);
        Arc::new(ledger)
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs `jobs` so that their writes share one statement; their results in order. Also
    /// returns the statements run and writes carried, the two writers' own included.
    fn in_one_batch<T: Send + 'static>(
        ledger: &Arc<PostgresLedger>,
        jobs: Vec<Job<T>>,
    ) -> (Vec<T>, (u64, u64)) {
        let before = ledger.group_commits();
        let held = ledger
            .client("hold the pool's one connection")
            .expect("connection");
        let occupying: Vec<_> = (0..LEADERS)
            .map(|index| {
                let ledger = Arc::clone(ledger);
                std::thread::spawn(move || {
                    let id = format!("occupy-{index}-{}", ledger.group_commits().0);
                    let _ = ledger.begin(new_entry(&id, None, charge(1)));
                })
            })
            .collect();
        wait_until("every leader holds a write", || {
            ledger.group.state() == (LEADERS, 0)
        });
        let count = jobs.len();
        let under_test: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let ledger = Arc::clone(ledger);
                std::thread::spawn(move || job(&ledger))
            })
            .collect();
        wait_until("every write under test is queued", || {
            ledger.group.state() == (LEADERS, count)
        });
        drop(held);
        for thread in occupying {
            thread.join().expect("an occupying write");
        }
        let results = under_test
            .into_iter()
            .map(|thread| thread.join().expect("a write under test"))
            .collect();
        let after = ledger.group_commits();
        (results, (after.0 - before.0, after.1 - before.1))
    }

    fn begin_job(id: &str, key: Option<&str>) -> Job<Result<Begin, LedgerError>> {
        let (id, key) = (id.to_string(), key.map(str::to_string));
        Box::new(move |ledger| ledger.begin(new_entry(&id, key.as_deref(), charge(700))))
    }

    fn succeeded(reference: &str) -> Outcome {
        Outcome::succeeded().with_provider_reference(reference)
    }

    #[test]
    fn writes_queued_while_the_writers_wait_share_one_statement() {
        let ledger = ledger();
        let begins = (0..6)
            .map(|n| begin_job(&format!("gh_{n}"), Some(&format!("key-{n}"))))
            .collect();
        let (begun, (statements, writes)) = in_one_batch(&ledger, begins);
        // The first leader's write and the six under test in one statement, any other
        // leader's alone.
        let leaders = LEADERS as u64;
        assert_eq!((statements, writes), (leaders, leaders + 6));
        let begun: Vec<Entry> = begun
            .into_iter()
            .map(|begin| match begin.expect("begins") {
                Begin::Created(entry) => entry,
                other => panic!("expected a new entry, got {other:?}"),
            })
            .collect();

        // Outcomes of three and begins of three more, in one statement.
        let mut jobs: Vec<Job<Result<Entry, LedgerError>>> = begun[..3]
            .iter()
            .cloned()
            .map(|entry| {
                Box::new(move |ledger: &PostgresLedger| {
                    let reference = format!("ref-{}", entry.id);
                    ledger.record_outcome_of_begun(entry, &succeeded(&reference))
                }) as Job<_>
            })
            .collect();
        for n in 6..9 {
            let job = begin_job(&format!("gh_{n}"), Some(&format!("key-{n}")));
            jobs.push(Box::new(move |ledger| job(ledger).map(Begin::into_entry)));
        }
        let (written, counts) = in_one_batch(&ledger, jobs);
        assert_eq!(counts, (leaders, leaders + 6));
        for (index, entry) in written.into_iter().enumerate() {
            let entry = entry.expect("written");
            let expected = if index < 3 {
                EntryState::Succeeded
            } else {
                EntryState::Sending
            };
            assert_eq!(entry.state, expected, "{}", entry.id);
            let stored = ledger.get(&entry.id).expect("get").expect("stored");
            assert_eq!(stored.state, expected, "{} as stored", entry.id);
            assert_eq!(stored.provider_reference, entry.provider_reference);
            let history = states(&ledger.history(&entry.id).expect("history"));
            let expected_history = if index < 3 {
                vec![EntryState::Sending, EntryState::Succeeded]
            } else {
                vec![EntryState::Sending]
            };
            assert_eq!(history, expected_history, "{}", entry.id);
        }
    }

    #[test]
    fn a_key_taken_in_the_same_batch_is_answered_with_the_entry_that_holds_it() {
        let ledger = ledger();
        let jobs = vec![
            begin_job("gh_first", Some("shared")),
            begin_job("gh_second", Some("shared")),
            begin_job("gh_other", Some("other")),
        ];
        let (results, _) = in_one_batch(&ledger, jobs);
        let results: Vec<Begin> = results.into_iter().map(|r| r.expect("begins")).collect();
        let created: Vec<&str> = results
            .iter()
            .filter_map(|begin| match begin {
                Begin::Created(entry) => Some(entry.id.as_str()),
                Begin::Existing(_) => None,
            })
            .collect();
        assert_eq!(created.len(), 2, "{results:?}");
        assert!(created.contains(&"gh_other"));
        let holder = created.iter().find(|id| **id != "gh_other").expect("one");
        let existing: Vec<&Entry> = results
            .iter()
            .filter_map(|begin| match begin {
                Begin::Existing(entry) => Some(entry),
                Begin::Created(_) => None,
            })
            .collect();
        assert_eq!(existing.len(), 1);
        assert_eq!(
            &existing[0].id, holder,
            "answered with the entry holding the key"
        );
    }

    #[test]
    fn a_batch_the_server_refuses_is_written_one_write_at_a_time() {
        let ledger = ledger();
        // Two begins of one id: the statement violates `entries_id_unique` and rolls back whole.
        let jobs = vec![
            begin_job("gh_twice", None),
            begin_job("gh_fine", Some("fine")),
            begin_job("gh_twice", None),
        ];
        let (results, _) = in_one_batch(&ledger, jobs);
        let duplicates = results
            .iter()
            .filter(
                |result| matches!(result, Err(LedgerError::DuplicateId { id }) if id == "gh_twice"),
            )
            .count();
        assert_eq!(duplicates, 1, "{results:?}");
        assert!(matches!(&results[1], Ok(Begin::Created(entry)) if entry.id == "gh_fine"));
        for id in ["gh_twice", "gh_fine"] {
            let history = states(&ledger.history(id).expect("history"));
            assert_eq!(history, vec![EntryState::Sending], "{id} written once");
        }
    }
}
