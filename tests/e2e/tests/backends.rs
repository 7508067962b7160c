//! The service suites on both ledgers. A test written `async fn name(backend: Backend)` and
//! listed in `on_both_backends!` runs twice: `on_sqlite::name` (the embedded default, a file in
//! the host's temporary folder) and `on_postgres::name` (a fresh database of the test process's
//! PostgreSQL cluster). What a platform sees through the service — answers, the ledger's
//! entries, replays, reconciliation — must not depend on the backend, so the same assertions run
//! on each.

/// `on_both_backends!(#[tokio::test(...)] name, ...)`: each `name` once per backend, with the
/// runtime its attribute names.
macro_rules! on_both_backends {
    ($( #[$attribute:meta] $name:ident ),* $(,)?) => {
        mod on_sqlite {
            $(
                #[$attribute]
                async fn $name() {
                    super::$name(gatehouse_e2e::Backend::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[$attribute]
                async fn $name() {
                    super::$name(gatehouse_e2e::Backend::Postgres).await
                }
            )*
        }
    };
}
