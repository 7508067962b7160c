//! What only the PostgreSQL ledger has: migrations under a lock, a schema version a newer host
//! may have written, the connection settings and what errors show of them.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::*;

fn schema_versions(database: &gatehouse_pg_cluster::Database) -> Vec<i64> {
    database
        .connect()
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .expect("schema versions")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn hosts_starting_together_apply_each_migration_once() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let barrier = Arc::new(Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let options = postgres_options(&database);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                PostgresLedger::connect(&options).map(|_| ())
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread").expect("every host starts");
    }
    let latest = i64::try_from(super::super::postgres::MIGRATIONS.len()).expect("fits");
    assert_eq!(schema_versions(&database), (1..=latest).collect::<Vec<_>>());
}

#[test]
fn a_migration_waits_for_the_lock_another_host_holds() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let mut holder = database.connect();
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&super::super::postgres::MIGRATION_LOCK],
        )
        .expect("lock");
    let options = postgres_options(&database);
    let starting = std::thread::spawn(move || PostgresLedger::connect(&options).map(|_| ()));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !starting.is_finished(),
        "the host migrated without the lock"
    );
    assert!(
        database
            .connect()
            .query_one("SELECT to_regclass('entries') IS NULL", &[])
            .expect("query")
            .get::<_, bool>(0),
        "no table may exist while another host holds the lock"
    );
    holder
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&super::super::postgres::MIGRATION_LOCK],
        )
        .expect("unlock");
    starting
        .join()
        .expect("thread")
        .expect("starts once the lock is free");
    let latest = i64::try_from(super::super::postgres::MIGRATIONS.len()).expect("fits");
    assert_eq!(schema_versions(&database), (1..=latest).collect::<Vec<_>>());
}

#[test]
fn a_database_with_a_newer_schema_is_refused_with_a_clear_message() {
    let database = gatehouse_pg_cluster::shared().create_database();
    drop(PostgresLedger::connect(&postgres_options(&database)).expect("first start"));
    database
        .connect()
        .execute(
            "INSERT INTO schema_version (version, applied_at_unix) VALUES (99, 0)",
            &[],
        )
        .expect("pretend a newer host migrated it");
    let error = PostgresLedger::connect(&postgres_options(&database)).expect_err("refused");
    let message = error.to_string();
    assert!(
        message.contains("version 99") && message.contains("newer"),
        "{message}"
    );
    assert!(
        message.contains(&database.name),
        "names the database: {message}"
    );
}

#[test]
fn the_password_never_shows_in_errors_or_debug() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let ledger = PostgresLedger::connect(&postgres_options(&database)).expect("connects");
    let shown = format!("{ledger:?} {}", ledger.location());
    assert!(!shown.contains(&database.password), "{shown}");
    assert!(shown.contains(&database.name), "{shown}");

    // A wrong password: the error names the database, never either password.
    let mut wrong = postgres_options(&database);
    wrong.password = Some(gatehouse_plugin_api::Secret::new("wrong-password-123"));
    let message = PostgresLedger::connect(&wrong)
        .expect_err("refused")
        .to_string();
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(message.contains(&database.name), "{message}");
    assert!(!message.contains("wrong-password-123"), "{message}");
    assert!(!message.contains(&database.password), "{message}");
    assert!(!format!("{wrong:?}").contains("wrong-password-123"));

    // A password written into the URL is refused, and the refusal does not repeat it.
    let inline = PostgresOptions::new(format!(
        "postgres://{}:{}@{}:{}/{}",
        database.user, "inline-secret-456", database.host, database.port, database.name
    ));
    let message = PostgresLedger::connect(&inline)
        .expect_err("refused")
        .to_string();
    assert!(message.contains("must not hold the password"), "{message}");
    assert!(!message.contains("inline-secret-456"), "{message}");
}

#[test]
fn an_unreachable_server_is_an_error_naming_it() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut options = PostgresOptions::new(format!("postgres://gatehouse@127.0.0.1:{port}/ledger"));
    options.connect_timeout = Duration::from_secs(2);
    let message = PostgresLedger::connect(&options)
        .expect_err("refused")
        .to_string();
    assert!(
        message.contains(&format!("postgres://gatehouse@127.0.0.1:{port}/ledger")),
        "{message}"
    );
    assert!(message.contains("cannot connect"), "{message}");
    assert!(
        PostgresLedger::connect(&PostgresOptions::new(
            "postgres://gatehouse@127.0.0.1:not-a-port/ledger"
        ))
        .expect_err("invalid")
        .to_string()
        .contains("URL is invalid")
    );
}

#[test]
fn tls_to_the_database_is_checked_against_the_ca_file() {
    let cluster = gatehouse_pg_cluster::shared();
    let database = cluster.create_database();
    let mut options = postgres_options(&database);
    options.ca_file = Some(cluster.ca_file());
    let ledger = PostgresLedger::connect(&options).expect("connects over TLS");
    created(&ledger, "gh_1");
    // The server's view: every connection of the ledger's pool is a TLS session.
    let row = database
        .connect()
        .query_one(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'gatehouse' AND a.datname = $1",
            &[&database.name],
        )
        .expect("pg_stat_ssl");
    let (connections, all_tls): (i64, Option<bool>) = (row.get(0), row.get(1));
    assert!(connections >= 1, "the ledger holds a connection");
    assert_eq!(all_tls, Some(true), "every ledger connection uses TLS");
    drop(ledger);

    // Another CA: the server's certificate is refused, and the error says where and why.
    let folder = tempfile::tempdir().expect("folder");
    let other_ca = folder.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    std::fs::write(&other_ca, params.self_signed(&key).expect("CA").pem()).expect("write");
    options.ca_file = Some(other_ca);
    let message = PostgresLedger::connect(&options)
        .expect_err("an unknown issuer is refused")
        .to_string();
    assert!(message.contains(&database.name), "{message}");
    assert!(message.contains("certificate"), "{message}");
    assert!(!message.contains(&database.password), "{message}");

    // A CA file that is missing, or holds no certificate, is named.
    for (name, contents) in [
        ("missing.pem", None),
        ("empty.pem", Some("not a certificate\n")),
    ] {
        let path = folder.path().join(name);
        if let Some(contents) = contents {
            std::fs::write(&path, contents).expect("write");
        }
        options.ca_file = Some(path.clone());
        let message = PostgresLedger::connect(&options)
            .expect_err("refused")
            .to_string();
        assert!(message.contains("ledger.ca_file"), "{message}");
        assert!(message.contains(name), "{message}");
    }

    // A URL asking for TLS without a CA to check it against is refused, not silently plain.
    let mut asked = postgres_options(&database);
    asked.url = format!("{}?sslmode=require", database.url());
    let message = PostgresLedger::connect(&asked)
        .expect_err("refused")
        .to_string();
    assert!(message.contains("sslmode=require"), "{message}");
    assert!(message.contains("ledger.ca_file"), "{message}");
}

#[test]
fn money_is_stored_as_bigint_minor_units() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let ledger = PostgresLedger::connect(&postgres_options(&database)).expect("connects");
    created(&ledger, "gh_1");
    let entry = ledger.get("gh_1").expect("get").expect("exists");
    assert_eq!(entry.amount.map(|money| money.minor_units), Some(500));
    // The column types, from the catalog: integers, never a floating-point or numeric type.
    let columns: std::collections::BTreeMap<String, String> = database
        .connect()
        .query(
            "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns \
             WHERE table_name = 'entries'",
            &[],
        )
        .expect("catalog")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for column in [
        "amount_minor_units",
        "created_at_unix",
        "updated_at_unix",
        "seq",
    ] {
        assert_eq!(
            columns.get(column).map(String::as_str),
            Some("bigint"),
            "{column}: {columns:?}"
        );
    }
}

#[test]
fn a_broken_connection_is_replaced_by_the_pool() {
    // A server-side kill of every ledger connection (a database restart, a failover): the next
    // calls get fresh connections instead of failing for good.
    let store = postgres_store();
    created(store.ledger.as_ref(), "gh_1");
    store.execute_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.ledger.get("gh_1") {
            Ok(Some(_)) => break,
            other if std::time::Instant::now() > deadline => {
                panic!("the ledger did not recover: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    created(store.ledger.as_ref(), "gh_2");
}

#[test]
fn the_ledger_keeps_working_when_a_column_changes_type_under_its_prepared_statements() {
    // Each pooled connection prepares a statement once; a column changing type (a migration by
    // hand, a newer host's) makes the prepared ones fail with "cached plan must not change
    // result type". They are prepared again: no call fails, in a transaction or not.
    let store = postgres_store();
    created(store.ledger.as_ref(), "gh_1");
    store
        .ledger
        .record_outcome("gh_1", &gatehouse_plugin_api::Outcome::pending())
        .expect("record");
    assert!(store.ledger.get("gh_1").expect("read").is_some());
    store.execute_sql("ALTER TABLE entries ALTER COLUMN refusal_message TYPE VARCHAR(2000)");
    store.execute_sql("ALTER TABLE entries ALTER COLUMN outcome_json TYPE VARCHAR(100000)");
    assert!(store.ledger.get("gh_1").expect("read after").is_some());
    created(store.ledger.as_ref(), "gh_2");
    created(store.ledger.as_ref(), "gh_3");
    let recorded = store
        .ledger
        .record_outcome("gh_2", &gatehouse_plugin_api::Outcome::pending())
        .expect("record after");
    assert_eq!(recorded.state, EntryState::Pending);
    store
        .ledger
        .record_refusal("gh_3", "invalid_request", "no")
        .expect("refusal after");
    assert_eq!(store.ledger.history("gh_2").expect("history").len(), 2);
    assert_eq!(store.ledger.history("gh_3").expect("history").len(), 2);
}

#[test]
fn a_peer_sees_an_entry_sending_while_its_sender_holds_a_live_lease() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let host = |name: &str| {
        let mut options = postgres_options(&database);
        options.instance_id = name.into();
        options.lease = Duration::from_secs(3);
        PostgresLedger::connect(&options).expect("connects")
    };
    let (a, b) = (host("host-a"), host("host-b"));
    assert_eq!(a.instance_id(), "host-a");
    created(&a, "gh_1");
    assert!(
        !a.sent_by_a_live_peer("gh_1").expect("ask"),
        "its own entry"
    );
    assert!(
        b.sent_by_a_live_peer("gh_1").expect("ask"),
        "a live peer sends it"
    );
    a.record_outcome("gh_1", &gatehouse_plugin_api::Outcome::pending())
        .expect("record");
    assert!(
        !b.sent_by_a_live_peer("gh_1").expect("ask"),
        "no longer sending"
    );
    assert!(!b.sent_by_a_live_peer("gh_missing").expect("ask"));

    // A lease that expired (a host that stopped renewing it): the entry is nobody's.
    created(&a, "gh_2");
    assert!(b.sent_by_a_live_peer("gh_2").expect("ask"));
    database
        .connect()
        .execute(
            "UPDATE host_leases SET expires_at = clock_timestamp() - interval '1 second' \
             WHERE instance_id = 'host-a'",
            &[],
        )
        .expect("expire the lease");
    assert!(
        !b.sent_by_a_live_peer("gh_2").expect("ask"),
        "the lease expired"
    );
    // The heartbeat (every third of the lease) renews it while host A lives.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !b.sent_by_a_live_peer("gh_2").expect("ask") {
        assert!(
            std::time::Instant::now() < deadline,
            "the heartbeat did not renew the lease"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A host that leaves gives its lease up at once.
    drop(a);
    assert!(!b.sent_by_a_live_peer("gh_2").expect("ask"), "host A left");
}

#[test]
fn a_version_2_database_migrates_and_keeps_its_entries_without_an_actor() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let mut client = database.connect();
    client
        .batch_execute(
            "CREATE TABLE schema_version (version BIGINT PRIMARY KEY, \
             applied_at_unix BIGINT NOT NULL)",
        )
        .expect("version table");
    for migration in &super::super::postgres::MIGRATIONS[..2] {
        client.batch_execute(migration).expect("versions 1 and 2");
    }
    client
        .batch_execute("INSERT INTO schema_version VALUES (1, 0), (2, 0)")
        .expect("record versions 1 and 2");
    let command = charge(500);
    client
        .execute(
            "INSERT INTO entries (id, provider, account, operation, request_hash, \
             command_json, state, created_at_unix, updated_at_unix) \
             VALUES ('gh_old', 'paygateglobal', 'main', 'charge', $1, $2, 'unknown', 5, 5)",
            &[
                &request_hash("paygateglobal", "main", &command),
                &serde_json::to_string(&command).expect("json"),
            ],
        )
        .expect("old entry");
    client
        .batch_execute(
            "INSERT INTO entry_history (entry_id, at_unix, state, detail) \
             VALUES ('gh_old', 5, 'unknown', 'created')",
        )
        .expect("old history");
    drop(client);

    let ledger = PostgresLedger::connect(&postgres_options(&database)).expect("migrates");
    let latest = i64::try_from(super::super::postgres::MIGRATIONS.len()).expect("fits");
    assert!(latest >= 3, "version 3 added the actor columns");
    assert_eq!(schema_versions(&database), (1..=latest).collect::<Vec<_>>());
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
    let history = ledger.history("gh_old").expect("history");
    assert_eq!(
        history.last().and_then(|event| event.actor.as_deref()),
        Some("ops-settle")
    );
}
