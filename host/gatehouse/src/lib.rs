//! # gatehouse
//!
//! The `gatehouse` command's parts, as a library so the end-to-end tests can drive them: the
//! plugin conformance check, plugin deployment (install, history, rollback), the plugin scaffold, the sandbox, and the exit codes. Platforms that
//! embed Gatehouse depend on `gatehouse-service` instead, which pulls in none of this (no clap,
//! no anyhow, no simulators).

pub mod conformance;
pub mod deploy;
pub mod exit;
pub mod first_run;
pub mod listing;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod scaffold;
pub mod signing;
