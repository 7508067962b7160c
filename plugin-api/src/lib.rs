//! # gatehouse-plugin-api: the contract between the Gatehouse host and provider plugins
//!
//! This is the only crate the host and the plugins share. A plugin is a `cdylib` that implements
//! [`Plugin`] and exports it with [`export_plugin!`]; the host loads it, checks it, and drives it.
//!
//! ## The sans-IO flow
//! The host hands the plugin an [`Invocation`] (a normalized [`Command`], the account's
//! configuration, a host-made reference, the host's clock). The plugin answers with a [`Step`]:
//! *send this [`HttpRequest`]*, *done with this [`Outcome`]*, or *failed with this
//! [`ProviderError`]*. The host performs the request and calls [`Plugin::resume`] with the
//! [`HttpResponse`]. Plugins link no tokio and no HTTP client; they are testable with
//! [`testkit`] (feature `testkit`) without sockets.
//!
//! The invocation crosses in one of three ways: as one JSON text (`start`/`resume`, the first
//! release's entry points); in pieces ([`ffi::FfiInvocation`], `start_v2`/`resume_v2`, appended
//! later), the account's configuration as a text of its own that the host encodes once per
//! resolution and the plugin parses once per text; and as those pieces with a charge command and
//! an outcome without error or details typed ([`ffi::FfiInvocationV3`], [`ffi::FfiOutcome`],
//! `start_v3`/`resume_v3`, appended after them), every other command and outcome as JSON in the
//! same call. A host uses the newest the plugin has; [`export_plugin!`] exports all three, and the
//! testkit's `run` checks they agree.
//!
//! ## Compatibility rules
//! Two things are versioned: the **layout** of the types in [`ffi`], checked by abi_stable at load
//! time, and the **JSON schema** of commands, outcomes and manifests, tied to this crate's version
//! ([`CONTRACT_VERSION`]). The host compares the contract version a plugin was built with to its own:
//!
//! * **Same `0.MINOR`** (or same `MAJOR` from 1.0 on): compatible. Within it, a release may only
//!   *add*: new optional JSON fields (with `#[serde(default)]`), new [`Operation`]s and
//!   [`Command`] variants (the host sends a plugin only the operations its manifest lists),
//!   new functions appended at the end of [`ffi::PluginModule`], *without* moving
//!   `#[sabi(last_prefix_field)]` (moving it is a breaking change; an older plugin reads the new
//!   functions as `None`: the host accepts a plugin whose root module is a prefix of its own, and
//!   a newer plugin's extra functions it does not know), new [`FfiStep`](ffi::FfiStep) kinds only
//!   that way (see its docs). Both directions are tested with real libraries
//!   (`tests/standalone/next-contract`).
//! * **A different `0.MINOR` / `MAJOR`**: incompatible. The host refuses the plugin at load with an
//!   error naming the file, both versions, and keeps serving the previous version of that provider.
//! * **Breaking changes** (removing or renaming a field or variant, changing a field's type,
//!   reordering or removing a root-module function) require a new `0.MINOR` / `MAJOR`.
//!   abi_stable's layout check catches the ABI-level ones even when the version was not bumped,
//!   and reports the first difference it finds.
//! * A newer plugin may return [`Details`] variants an older host does not know: the host answers
//!   that request with a plugin-fault error naming the variant rather than guessing.
//!
//! ## Panics and secrets
//! Every exported entry point runs under `catch_unwind`; a panic becomes a
//! [`ErrorKind::PluginFault`] error for that one request, naming the panic's message and
//! `file:line`. The plugin's own panic hook stays silent for it (the library links its own
//! `std`, whose default hook would print the raw message, unredacted, to the host's stderr). Secrets arrive as [`Secret`] (whose
//! `Debug` prints `***`); a plugin must never put one in an error or outcome, and the host scrubs
//! known secret values from everything a plugin returns as a second line of defence.

pub mod command;
pub mod error;
pub mod ffi;
pub mod flow;
pub mod http;
pub mod manifest;
pub mod money;
pub mod outcome;
mod panic_report;
pub mod plugin;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod verify;

pub use command::{AccountConfig, Command, Customer, Extra, Invocation, Operation, Secret};
pub use error::{ErrorKind, ProviderError};
pub use http::{HttpRequest, HttpResponse, Method};
pub use manifest::{ConfigKey, ExtraField, Manifest, UnsignedCallbacks};
pub use money::{Currency, Money, MoneyError};
pub use outcome::{
    BalanceEntry, Details, Outcome, OutcomeStatus, ReportRecord, SavedAccount, TransactionInfo,
    WebhookEvent, WebhookReply, WebhookResult,
};
pub use plugin::{Plugin, Step, root_module_for};
pub use rust_decimal::Decimal;

/// The version of this crate, compiled into every plugin built against it.
pub const CONTRACT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether a plugin built with contract `plugin_version` can be driven by a host built with
/// `host_version`. See the crate documentation for the rules.
pub fn contract_compatible(host_version: &str, plugin_version: &str) -> bool {
    fn major_minor(version: &str) -> Option<(u64, u64)> {
        let mut parts = version.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    }
    match (major_minor(host_version), major_minor(plugin_version)) {
        (Some((0, host_minor)), Some((0, plugin_minor))) => host_minor == plugin_minor,
        (Some((host_major, _)), Some((plugin_major, _))) => host_major == plugin_major,
        _ => false,
    }
}

#[doc(hidden)]
pub mod __private {
    pub use abi_stable;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions() {
        assert!(contract_compatible("0.1.0", "0.1.7"));
        assert!(contract_compatible("0.1.7", "0.1.0"));
        assert!(!contract_compatible("0.1.0", "0.2.0"));
        assert!(contract_compatible("1.2.0", "1.0.5"));
        assert!(!contract_compatible("1.2.0", "2.0.0"));
        assert!(!contract_compatible("0.1.0", "garbage"));
    }

    #[test]
    fn export_macro_uses_abi_stable_symbol_name() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
