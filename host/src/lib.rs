//! # gatehouse-host
//!
//! The Gatehouse host as a library: it loads one stable-ABI plugin per payment provider from a
//! folder, hot-reloads a plugin when its file changes, and dispatches normalized commands
//! through the plugins' sans-IO flows, performing their HTTP requests itself.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use gatehouse_host::{Config, Gateway};
//! let config = Config::load("plugins.toml".as_ref())?;
//! let gateway = Gateway::start(config).await;
//! let _watch = gatehouse_host::watcher::watch(&gateway)?;
//! let command = serde_json::from_value(serde_json::json!({"operation": "balance"}))?;
//! let outcome = gateway.dispatch("paygateglobal", "main", command).await?;
//! println!("{}", serde_json::to_string(&outcome)?);
//! # Ok(()) }
//! ```

pub mod accounts;
pub mod config;
pub mod conformance;
pub mod error;
pub mod gateway;
pub mod ledger;
pub mod loader;
pub mod metrics;
pub mod plugin_pool;
pub mod registry;
pub mod resolve;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod scaffold;
pub mod scrub;
pub mod server;
pub mod service;
pub mod transport;
pub mod watcher;

pub use config::Config;
pub use error::DispatchError;
pub use gatehouse_plugin_api as plugin_api;
pub use gateway::{DispatchRequest, Dispatched, Gateway};
