//! # gatehouse-service
//!
//! What a platform embeds, or runs as `gatehouse serve`: the [`Service`] — the one door through
//! which every command reaches a provider, with the ledger in front (record before sending,
//! idempotency keys, reconciliation) — its HTTP API ([`api::router`], an axum router to serve or
//! mount), the server ([`server::serve`]) and the webhook forwarder.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use gatehouse_service::{Config, Service};
//! let service = Service::open(Config::load("plugins.toml".as_ref())?).await?;
//! let _watch = gatehouse_service::watcher::watch(service.gateway())?;
//! let command = serde_json::from_value(serde_json::json!({
//!     "operation": "charge",
//!     "amount": {"minor_units": 500, "currency": "XOF"},
//!     "customer": {"phone": "90123456"},
//!     "payment_method": "FLOOZ",
//!     "description": "order 1042",
//! }))?;
//! // Recorded in the ledger before it is sent; a retry with the same key is answered from it.
//! let answer = service
//!     .execute("paygateglobal", "main", command, Some("order-1042".into()))
//!     .await?;
//! println!("{} {}", answer.reference.unwrap_or_default(), answer.outcome.status.as_str());
//! # Ok(()) }
//! ```

pub mod api;
pub mod console;
pub mod error;
pub mod fleet;
pub mod forward;
mod in_flight;
pub mod ledger_access;
mod pacing;
pub mod server;
mod service;
pub mod tls;

pub use error::{ApiError, ServiceError};
pub use gatehouse_core::{Config, Gateway, plugin_api, watcher};
pub use gatehouse_ledger as ledger;
pub use service::{
    CommandAnswer, DEFAULT_ACTOR, Instance, RECONCILE_CLAIM, Readiness, ReconcileReport, Service,
    WebhookHandling,
};
