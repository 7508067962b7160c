//! The pool's connections, each preparing every statement once.
//!
//! `postgres::Client::execute` with SQL text prepares an unnamed statement on every call: a
//! Parse/Describe round trip, then the Bind/Execute one, and the server parses and plans the text
//! each time. A [`Connection`] keeps the statements it prepared, by their text, for as long as it
//! lives, so a statement costs one round trip from its second use on and the server reuses its
//! plan.
//!
//! A prepared statement can go stale while its connection lives: a column's type changed under
//! it (the server answers "cached plan must not change result type", `0A000`) or the session's
//! statements were dropped (`DISCARD ALL` behind a pooler: "prepared statement does not exist",
//! `26000`). Either error empties the connection's statements. A statement run on its own is then
//! prepared again and retried once at once (the error came before it ran); one inside a
//! transaction marks the connection [`Connection::take_stale`] and the caller reruns the whole
//! transaction, which the error rolled back. A connection the server dropped (a restart) is
//! replaced by the pool's check-out test, and its statements go with it.
//!
//! The check-out test is a round trip of its own (an empty query), which was two of a charge's
//! five. It runs only for a connection that has not answered for [`ALIVE_WITHOUT_TEST`] (the
//! "alive bypass window" of HikariCP, the JDBC pool): one that answered half a second ago is
//! as alive as a test would have shown then. What the window lets through is a connection that
//! died within that half-second (the server terminated its session, the network cut it): its
//! next call fails, as a call does when the connection dies under it, and the pool drops it at
//! check-in (`has_broken`). A database restart takes longer than the window, so after one every
//! connection is tested again before use. (The sync driver reads its socket only inside a call,
//! so a session the server closed in between cannot be seen without one.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{GenericClient, Row, Statement};

use super::tls;

/// Opens [`Connection`]s for the r2d2 pool (what `r2d2_postgres` does for a bare client).
pub(super) struct Manager {
    config: postgres::Config,
    connector: tls::Connector,
    /// [`ALIVE_WITHOUT_TEST`], but for tests that must not depend on the machine's speed.
    alive_without_test: Duration,
}

impl Manager {
    pub(super) fn new(config: postgres::Config, connector: tls::Connector) -> Self {
        Self {
            config,
            connector,
            alive_without_test: ALIVE_WITHOUT_TEST,
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Connection, postgres::Error> {
        Ok(Connection {
            client: self.config.connect(self.connector.clone())?,
            statements: Statements::default(),
            liveness: Liveness::answered_now(),
            #[cfg(test)]
            tests: 0,
        })
    }

    /// The check-out test: an empty query, so a connection the server dropped is replaced
    /// before a call uses it; skipped for one that answered within [`ALIVE_WITHOUT_TEST`].
    fn is_valid(&self, connection: &mut Connection) -> Result<(), postgres::Error> {
        let window = self.alive_without_test;
        if connection.liveness.answered_within(window) && !connection.client.is_closed() {
            return Ok(());
        }
        let tested = connection.client.simple_query("").map(drop);
        connection.liveness.saw(&tested);
        tested?;
        #[cfg(test)]
        {
            connection.tests += 1;
        }
        Ok(())
    }

    /// Closed, or a call saw the session end: the driver may not have noticed the closed
    /// socket yet when it hands back the server's last (FATAL) message.
    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.liveness.lost || connection.client.is_closed()
    }
}

/// How long after its last answer a connection is handed out without the check-out test.
pub(super) const ALIVE_WITHOUT_TEST: Duration = Duration::from_millis(500);

/// What the connection's calls said of its session: when the server last answered, and whether
/// an answer ended the session.
struct Liveness {
    answered_at: Instant,
    lost: bool,
}

impl Liveness {
    fn answered_now() -> Self {
        Self {
            answered_at: Instant::now(),
            lost: false,
        }
    }

    /// Whether the server answered within `window` and nothing since said the session ended.
    fn answered_within(&self, window: Duration) -> bool {
        !self.lost && self.answered_at.elapsed() < window
    }

    /// Notes what a call's result says of the session.
    fn saw<T>(&mut self, result: &Result<T, postgres::Error>) {
        match result {
            Ok(_) => self.answered_at = Instant::now(),
            Err(error) => self.saw_error(error),
        }
    }

    /// Notes what a call's error says of the session.
    fn saw_error(&mut self, error: &postgres::Error) {
        if ends_the_session(error) {
            self.lost = true;
        } else {
            // The server's own error (a constraint, a stale statement): it answered.
            self.answered_at = Instant::now();
        }
    }
}

/// Whether `error` means the session is over: the connection closed or cut (no SQLSTATE), or
/// the server's last word on it (a FATAL or PANIC, such as `pg_terminate_backend`'s 57P01, or a
/// connection exception, class 08).
pub(super) fn ends_the_session(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    let Some(server) = error.as_db_error() else {
        return error.code().is_none();
    };
    matches!(
        server.parsed_severity(),
        Some(postgres::error::Severity::Fatal | postgres::error::Severity::Panic)
    ) || server.code().code().starts_with("08")
}

/// The statements one connection prepared, by SQL text.
#[derive(Default)]
struct Statements {
    prepared: HashMap<String, Statement>,
    /// A statement failed as stale inside a transaction since [`Connection::take_stale`].
    stale: bool,
    /// Statements prepared over the connection's life.
    #[cfg(test)]
    prepares: u64,
}

impl Statements {
    /// `sql` prepared on this connection, once. A failed prepare is noted in `liveness` as a
    /// failed statement is: on the first use of a statement, the prepare is the call that meets
    /// a session the server ended (`pg_terminate_backend`), and a connection that does not say
    /// so goes back to the pool as if alive.
    fn get(
        &mut self,
        client: &mut impl GenericClient,
        liveness: &mut Liveness,
        sql: &str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client
            .prepare(sql)
            .inspect_err(|error| liveness.saw_error(error))?;
        #[cfg(test)]
        {
            self.prepares += 1;
        }
        self.prepared.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Forgets every statement when `error` says one went stale; whether it did.
    fn forget_if_stale(&mut self, error: &postgres::Error) -> bool {
        let stale = matches!(
            error.code(),
            Some(&SqlState::FEATURE_NOT_SUPPORTED | &SqlState::INVALID_SQL_STATEMENT_NAME)
        );
        if stale {
            self.prepared.clear();
        }
        stale
    }
}

/// What the ledger runs statements on: a [`Connection`] (each statement its own transaction) or
/// a [`Transaction`] on one. The methods are the `postgres` client's, with prepared statements.
pub(super) trait Sql {
    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error>;

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error>;

    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error>;

    fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error>;
}

/// A pooled client and the statements it prepared.
pub(super) struct Connection {
    client: postgres::Client,
    statements: Statements,
    /// When the server last answered a statement (or the check-out test) on this connection,
    /// and whether one of its answers ended the session.
    liveness: Liveness,
    /// Check-out tests run over the connection's life.
    #[cfg(test)]
    tests: u64,
}

impl Connection {
    /// Begins a transaction; dropped without [`Transaction::commit`], it rolls back.
    pub(super) fn transaction(&mut self) -> Result<Transaction<'_>, postgres::Error> {
        let Connection {
            client,
            statements,
            liveness,
            ..
        } = self;
        let begun = client.transaction();
        liveness.saw(&begun);
        Ok(Transaction {
            transaction: begun?,
            statements,
            liveness,
        })
    }

    /// Whether a statement went stale in a transaction since the last call (the transaction is
    /// worth running again: its statements will be prepared afresh).
    pub(super) fn take_stale(&mut self) -> bool {
        std::mem::take(&mut self.statements.stale)
    }

    /// How many statements this connection prepared so far.
    #[cfg(test)]
    pub(super) fn prepares(&self) -> u64 {
        self.statements.prepares
    }

    /// How many check-out tests ran on this connection so far.
    #[cfg(test)]
    pub(super) fn tests(&self) -> u64 {
        self.tests
    }

    /// Runs `run` with `sql` prepared; a stale statement is prepared again and run once more.
    fn with_statement<T>(
        &mut self,
        sql: &str,
        mut run: impl FnMut(&mut postgres::Client, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let statement = self
            .statements
            .get(&mut self.client, &mut self.liveness, sql)?;
        let result = match run(&mut self.client, &statement) {
            Err(error) if self.statements.forget_if_stale(&error) => {
                let statement = self
                    .statements
                    .get(&mut self.client, &mut self.liveness, sql)?;
                run(&mut self.client, &statement)
            }
            result => result,
        };
        self.liveness.saw(&result);
        result
    }
}

/// [`Sql`] for a type with a `with_statement` (a [`Connection`] or a [`Transaction`]): each
/// call runs on the statement prepared once per connection.
macro_rules! sql_through_statements {
    ($type:ty) => {
        impl Sql for $type {
            fn query(
                &mut self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Vec<Row>, postgres::Error> {
                self.with_statement(sql, |client, statement| client.query(statement, params))
            }

            fn execute(
                &mut self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<u64, postgres::Error> {
                self.with_statement(sql, |client, statement| client.execute(statement, params))
            }

            fn query_opt(
                &mut self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Option<Row>, postgres::Error> {
                self.with_statement(sql, |client, statement| client.query_opt(statement, params))
            }

            fn query_one(
                &mut self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Row, postgres::Error> {
                self.with_statement(sql, |client, statement| client.query_one(statement, params))
            }
        }
    };
}

sql_through_statements!(Connection);

/// A transaction on a [`Connection`], using (and filling) its statements.
pub(super) struct Transaction<'a> {
    transaction: postgres::Transaction<'a>,
    statements: &'a mut Statements,
    liveness: &'a mut Liveness,
}

impl Transaction<'_> {
    pub(super) fn commit(self) -> Result<(), postgres::Error> {
        let committed = self.transaction.commit();
        self.liveness.saw(&committed);
        committed
    }

    /// Runs `run` with `sql` prepared. A stale statement aborted the transaction: noted for
    /// [`Connection::take_stale`], the error returned.
    fn with_statement<T>(
        &mut self,
        sql: &str,
        run: impl FnOnce(&mut postgres::Transaction<'_>, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let statement = self
            .statements
            .get(&mut self.transaction, self.liveness, sql)?;
        let result = run(&mut self.transaction, &statement).inspect_err(|error| {
            if self.statements.forget_if_stale(error) {
                self.statements.stale = true;
            }
        });
        self.liveness.saw(&result);
        result
    }
}

sql_through_statements!(Transaction<'_>);

#[cfg(test)]
mod tests {
    use r2d2::ManageConnection;

    use super::*;

    fn manager(database: &gatehouse_pg_cluster::Database) -> Manager {
        let mut config = database.config();
        let connector = tls::connector(&mut config, None, "test").expect("connector");
        Manager::new(config, connector)
    }

    const READ: &str = "SELECT label FROM things WHERE id = $1";

    fn label(sql: &mut impl Sql, id: i64) -> String {
        sql.query_one(READ, &[&id])
            .expect("the read runs")
            .try_get(0)
            .expect("a text column")
    }

    #[test]
    fn a_statement_is_prepared_once_per_connection() {
        let database = gatehouse_pg_cluster::shared().create_database();
        database
            .connect()
            .batch_execute(
                "CREATE TABLE things (id BIGINT PRIMARY KEY, label TEXT NOT NULL); \
                 INSERT INTO things VALUES (1, 'one'), (2, 'two');",
            )
            .expect("schema");
        let manager = manager(&database);
        let mut connection = manager.connect().expect("connects");
        assert_eq!(label(&mut connection, 1), "one");
        assert_eq!(label(&mut connection, 2), "two");
        let mut transaction = connection.transaction().expect("begin");
        assert_eq!(label(&mut transaction, 1), "one");
        transaction.commit().expect("commit");
        assert_eq!(connection.prepares(), 1, "one statement, prepared once");
        manager.is_valid(&mut connection).expect("valid");
        assert!(!manager.has_broken(&mut connection));
    }

    #[test]
    fn a_statement_gone_stale_is_prepared_again_instead_of_failing() {
        let database = gatehouse_pg_cluster::shared().create_database();
        let mut admin = database.connect();
        admin
            .batch_execute(
                "CREATE TABLE things (id BIGINT PRIMARY KEY, label TEXT NOT NULL); \
                 INSERT INTO things VALUES (1, 'one');",
            )
            .expect("schema");
        let mut connection = manager(&database).connect().expect("connects");
        assert_eq!(label(&mut connection, 1), "one");

        // A column's type changes under the prepared statement (a migration): its result type
        // changed, which the server refuses for a prepared statement ("cached plan must not
        // change result type").
        admin
            .batch_execute("ALTER TABLE things ALTER COLUMN label TYPE VARCHAR(100)")
            .expect("alter");
        assert_eq!(
            label(&mut connection, 1),
            "one",
            "on its own: retried at once"
        );
        assert_eq!(connection.prepares(), 2);

        admin
            .batch_execute("ALTER TABLE things ALTER COLUMN label TYPE TEXT")
            .expect("alter back");
        // In a transaction the error aborts it: the connection says so, and the caller's second
        // run of the transaction (as `PostgresLedger::write` does) prepares afresh.
        assert!(!connection.take_stale());
        let mut transaction = connection.transaction().expect("begin");
        let failed = transaction.query_one(READ, &[&1_i64]);
        assert!(
            failed.is_err(),
            "the stale statement fails in the transaction"
        );
        drop(transaction);
        assert!(connection.take_stale(), "and the connection says why");
        assert!(!connection.take_stale(), "once");
        let mut transaction = connection.transaction().expect("begin again");
        assert_eq!(label(&mut transaction, 1), "one");
        transaction.commit().expect("commit");
        assert_eq!(connection.prepares(), 3);

        // The session's statements dropped behind the connection's back (`DISCARD ALL` by a
        // pooler): "prepared statement does not exist", prepared again.
        connection
            .client
            .batch_execute("DEALLOCATE ALL")
            .expect("deallocate");
        assert_eq!(label(&mut connection, 1), "one");
        assert_eq!(connection.prepares(), 4);
    }

    #[test]
    fn a_connection_that_just_answered_is_handed_out_without_a_round_trip() {
        let database = gatehouse_pg_cluster::shared().create_database();
        let manager = manager(&database);
        let mut connection = manager.connect().expect("connects");
        manager.is_valid(&mut connection).expect("valid");
        manager.is_valid(&mut connection).expect("valid");
        assert_eq!(connection.tests(), 0, "it just connected: no test");

        std::thread::sleep(ALIVE_WITHOUT_TEST + Duration::from_millis(100));
        manager.is_valid(&mut connection).expect("valid");
        assert_eq!(
            connection.tests(),
            1,
            "silent for longer than the window: tested"
        );
        manager.is_valid(&mut connection).expect("valid");
        assert_eq!(connection.tests(), 1, "and the test counts as an answer");
    }

    #[test]
    fn an_error_of_the_statement_leaves_the_connection_alive_and_untested() {
        let database = gatehouse_pg_cluster::shared().create_database();
        let manager = Manager {
            alive_without_test: Duration::from_secs(60),
            ..manager(&database)
        };
        let mut connection = manager.connect().expect("connects");
        let error = connection
            .query_one("SELECT 1 / 0", &[])
            .expect_err("division by zero");
        assert_eq!(error.code(), Some(&SqlState::DIVISION_BY_ZERO));
        assert!(!manager.has_broken(&mut connection), "the server answered");
        manager.is_valid(&mut connection).expect("valid");
        assert_eq!(connection.tests(), 0, "and it counts as an answer");
    }

    #[test]
    fn a_connection_terminated_within_the_window_fails_one_call_and_is_then_dropped() {
        let database = gatehouse_pg_cluster::shared().create_database();
        // A window no loaded machine outlasts between the answer and the check-out below.
        let window = Duration::from_secs(60);
        let manager = Manager {
            alive_without_test: window,
            ..manager(&database)
        };
        let mut connection = manager.connect().expect("connects");
        let pid: i32 = connection
            .query_one("SELECT pg_backend_pid()", &[])
            .expect("its pid")
            .get(0);
        let terminated: bool = database
            .connect()
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .expect("terminate")
            .get(0);
        assert!(terminated);
        assert!(
            connection.liveness.answered_within(window),
            "still inside the window"
        );
        manager
            .is_valid(&mut connection)
            .expect("handed out without a test");
        assert!(
            connection.query_one("SELECT 1", &[]).is_err(),
            "the call on the dead session fails"
        );
        assert!(
            manager.has_broken(&mut connection),
            "and the pool drops the connection at check-in"
        );
        assert!(
            manager.is_valid(&mut connection).is_err(),
            "nor would it hand it out again"
        );
    }
}
