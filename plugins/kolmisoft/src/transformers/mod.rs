//! Pure mappings between Gatehouse's normalized types and the Kolmisoft API's wire format
//! (seed document `002`: "M4 API payments get"; `providers.md` section 3).
//!
//! Nothing here does I/O or reads a clock: the integration in `lib.rs` hands in the command, the
//! account's settings and the host's time, and sends what these functions build.

pub mod payments;
pub mod query;
pub mod signing;
pub mod xml;

/// The one API method this plugin calls, relative to the account's base URL
/// (the document's `http://<SERVER_IP>/billing`).
pub const PAYMENTS_GET_PATH: &str = "/api/payments_get";

/// The report name under which `payments_get` is offered (`Command::Report { report, .. }`).
pub const PAYMENTS_REPORT: &str = "payments";
