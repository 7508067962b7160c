//! # gatehouse-core
//!
//! The Gatehouse core: it loads one stable-ABI plugin per payment provider from a folder,
//! hot-reloads a plugin when its file changes, checks every command once
//! ([`Gateway::prepare`]), and drives the plugins' sans-IO flows, performing their HTTP requests
//! itself under each account's policy.
//!
//! Platforms embed the core through `gatehouse-service`, whose `Service` puts the ledger in front
//! of it: a money-moving command can only be dispatched here with a ledger
//! [`Reservation`](gatehouse_ledger::Reservation) (see [`prepared`]).

pub mod access;
pub mod accounts;
pub mod config;
pub mod error;
mod fleet;
pub mod fleet_share;
mod flow;
pub mod gateway;
pub mod loader;
pub mod metrics;
pub mod plugin_pool;
pub mod prepared;
pub mod registry;
pub mod resolve;
pub mod scrub;
pub mod signature;
pub mod transport;
pub mod versions;
pub mod watcher;

pub use config::Config;
pub use error::{DispatchError, ErrorCode};
pub use gatehouse_plugin_api as plugin_api;
pub use gateway::{Dispatched, Gateway, new_reference};
pub use prepared::{DirectCommand, Door, Prepared, RecordedCommand};
