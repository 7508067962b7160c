//! The end-to-end tests: one binary, a module per area. Every test uses real parts: plugin
//! libraries built as cdylibs, loaded by the real host, over real HTTP on loopback to the provider
//! simulators (see `gatehouse_e2e` for the shared harness).

/// `on_both_backends!`: the service suites on SQLite and on PostgreSQL.
#[macro_use]
mod backends;

/// Support shared by the reliability areas (faults, kills, load, storms, security, properties).
mod reliability;

mod api;
mod ccbill;
mod cli;
mod conformance;
mod console;
mod crash;
mod deploy;
mod edge;
mod faults;
mod fleet;
mod fleet_accounts;
mod fleet_kills;
mod kills;
mod kolmisoft;
mod listener;
mod load;
mod loading;
mod money_properties;
mod observability;
mod operator;
mod paygateglobal;
mod paysitecash;
mod postgres_ledger;
mod reconcile_refunds;
mod routes;
mod sandbox;
mod scopes;
mod scrub_basic_auth;
mod security;
mod signatures;
mod storms;
mod tidy;
mod xsolla;
