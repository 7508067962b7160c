//! The Rust side of the contract for plugin authors: implement [`Plugin`], then
//! [`export_plugin!`](crate::export_plugin) it.

use std::any::Any;

use abi_stable::std_types::{RResult, RSlice, RStr, RString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::Invocation;
use crate::error::ProviderError;
use crate::ffi::{FfiHttpResponse, FfiStep, PluginModule, PluginModuleRef};
use crate::http::{HttpRequest, HttpResponse};
use crate::manifest::Manifest;
use crate::outcome::Outcome;
use crate::panic_report;

/// One step of a flow, as a plugin returns it.
// A step lives for one exchange and is moved, never stored: boxing the larger variant would
// add an allocation per step for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step<S> {
    /// Send this request; the host calls [`Plugin::resume`] with the answer and `state`.
    Send { request: HttpRequest, state: S },
    /// Finished with an outcome (which may itself be `failed` or `unknown`).
    Done(Outcome),
    /// Finished without a result: the command was refused or could not be completed.
    Failed(ProviderError),
}

impl<S> Step<S> {
    pub fn send(request: HttpRequest, state: S) -> Self {
        Self::Send { request, state }
    }

    /// The step with the account's secrets removed from its error (a failed step's, or a
    /// finished outcome's): the one door a plugin's errors leave by, since error texts quote
    /// provider bodies that may echo the request. The host scrubs again, as a second line only.
    pub fn secrets_removed(self, account: &crate::AccountConfig) -> Self {
        match self {
            Self::Failed(error) => Self::Failed(error.redacted(account)),
            Self::Done(mut outcome) => {
                outcome.error = outcome.error.map(|error| error.redacted(account));
                Self::Done(outcome)
            }
            send @ Self::Send { .. } => send,
        }
    }
}

impl<S> From<Result<Outcome, ProviderError>> for Step<S> {
    fn from(result: Result<Outcome, ProviderError>) -> Self {
        match result {
            Ok(outcome) => Self::Done(outcome),
            Err(error) => Self::Failed(error),
        }
    }
}

/// A payment-provider plugin: pure functions from commands and HTTP answers to steps.
///
/// Architecture Invariant: a plugin does no I/O and reads no clock. Everything it needs arrives in
/// the [`Invocation`]; everything it wants done leaves as a [`Step`]. Flow state between steps is
/// plain data (`State`) that the host keeps, so a plugin holds no per-flow objects and a new
/// version can be swapped in between any two requests.
pub trait Plugin: 'static {
    /// What the plugin remembers between the steps of one flow.
    type State: Serialize + DeserializeOwned;

    fn manifest() -> Manifest;

    /// Starts the flow for `invocation.command`. `inbound_body` is the raw body of an inbound
    /// webhook for [`crate::Command::Webhook`], empty otherwise.
    fn start(invocation: &Invocation, inbound_body: &[u8]) -> Step<Self::State>;

    /// Continues the flow with the answer to the last request.
    fn resume(
        invocation: &Invocation,
        state: Self::State,
        response: &HttpResponse,
    ) -> Step<Self::State>;
}

#[cfg(not(feature = "previous-contract-fixture"))]
pub use v2::{ffi_resume_v2, ffi_resume_v3, ffi_start_v2, ffi_start_v3};

/// Builds the root module for a plugin type. Called by [`export_plugin!`](crate::export_plugin).
pub fn root_module_for<P: Plugin>() -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginModule {
        contract_version: ffi_contract_version,
        manifest: ffi_manifest::<P>,
        start: ffi_start::<P>,
        resume: ffi_resume::<P>,
        #[cfg(not(feature = "previous-contract-fixture"))]
        start_v2: ffi_start_v2::<P>,
        #[cfg(not(feature = "previous-contract-fixture"))]
        resume_v2: ffi_resume_v2::<P>,
        #[cfg(not(feature = "previous-contract-fixture"))]
        start_v3: ffi_start_v3::<P>,
        #[cfg(not(feature = "previous-contract-fixture"))]
        resume_v3: ffi_resume_v3::<P>,
        #[cfg(feature = "next-contract-fixture")]
        next_contract_probe: ffi_next_contract_probe,
    }
    .leak_into_prefix()
}

/// The appended function of the `next-contract-fixture` contract: a fixed answer the evolution
/// tests look for.
#[cfg(feature = "next-contract-fixture")]
pub extern "C" fn ffi_next_contract_probe() -> u32 {
    42
}

/// The manifest as it crosses the boundary. With the `next-contract-fixture` feature it carries a
/// field today's host does not know, as a newer plugin's manifest would: hosts must ignore it.
fn manifest_json<P: Plugin>() -> Result<String, serde_json::Error> {
    #[cfg(feature = "next-contract-fixture")]
    {
        let mut value = serde_json::to_value(P::manifest())?;
        value["next_contract_note"] =
            serde_json::Value::String("an optional manifest field of a later 0.1 release".into());
        serde_json::to_string(&value)
    }
    #[cfg(not(feature = "next-contract-fixture"))]
    {
        serde_json::to_string(&P::manifest())
    }
}

/// The contract version compiled into this copy of the crate.
pub extern "C" fn ffi_contract_version() -> RString {
    RString::from(crate::CONTRACT_VERSION)
}

pub extern "C" fn ffi_manifest<P: Plugin>() -> RResult<RString, RString> {
    match panic_report::catch(manifest_json::<P>) {
        Ok(Ok(json)) => RResult::ROk(json.into()),
        Ok(Err(error)) => RResult::RErr(format!("manifest is not serializable: {error}").into()),
        Err(panic) => RResult::RErr(format!("manifest() panicked: {}", panic_text(&panic)).into()),
    }
}

pub extern "C" fn ffi_start<P: Plugin>(
    invocation: RStr<'_>,
    inbound_body: RSlice<'_, u8>,
) -> FfiStep {
    guarded("start", || {
        let invocation = read_invocation(invocation.as_str())?;
        Ok(P::start(&invocation, inbound_body.as_slice()))
    })
}

pub extern "C" fn ffi_resume<P: Plugin>(
    invocation: RStr<'_>,
    state: RStr<'_>,
    response: &FfiHttpResponse,
) -> FfiStep {
    guarded("resume", || {
        let invocation = read_invocation(invocation.as_str())?;
        let state = read_state::<P>(state.as_str())?;
        Ok(P::resume(&invocation, state, &response.to_response()))
    })
}

fn read_state<P: Plugin>(state: &str) -> Result<P::State, ProviderError> {
    serde_json::from_str(state).map_err(|error| {
        ProviderError::plugin_fault(format!(
            "flow state handed back by the host is unreadable: {error}"
        ))
    })
}

fn read_invocation(json: &str) -> Result<Invocation, ProviderError> {
    serde_json::from_str(json).map_err(|error| {
        ProviderError::invalid_request(format!("the plugin cannot read the command: {error}"))
    })
}

/// Runs one entry point with panics caught: a panic becomes a plugin-fault error for this one
/// request instead of unwinding across the FFI boundary (which would abort the host).
fn guarded<S: Serialize>(
    entry_point: &str,
    body: impl FnOnce() -> Result<Step<S>, ProviderError>,
) -> FfiStep {
    guarded_as(entry_point, body, step_to_ffi, failed)
}

/// [`guarded`] for any generation of step: `to_ffi` lays a step out, `fail` an error.
fn guarded_as<S, T>(
    entry_point: &str,
    body: impl FnOnce() -> Result<Step<S>, ProviderError>,
    to_ffi: impl FnOnce(Step<S>) -> T,
    fail: impl FnOnce(&ProviderError) -> T,
) -> T {
    match panic_report::catch(body) {
        Ok(Ok(step)) => to_ffi(step),
        Ok(Err(error)) => fail(&error),
        Err(panic) => fail(&ProviderError::plugin_fault(format!(
            "plugin panicked in {entry_point}: {}",
            panic_text(&panic)
        ))),
    }
}

/// A `Send` step's request and state, laid out for the boundary.
fn send_to_ffi<S: Serialize>(
    request: crate::http::HttpRequest,
    state: &S,
) -> Result<(crate::ffi::FfiHttpRequest, RString), ProviderError> {
    match serde_json::to_string(state) {
        Ok(state) => Ok((request.into(), state.into())),
        Err(error) => Err(ProviderError::plugin_fault(format!(
            "flow state is not serializable: {error}"
        ))),
    }
}

fn step_to_ffi<S: Serialize>(step: Step<S>) -> FfiStep {
    match step {
        Step::Send { request, state } => match send_to_ffi(request, &state) {
            Ok((request, state)) => FfiStep::Send { request, state },
            Err(error) => failed(&error),
        },
        Step::Done(outcome) => match serde_json::to_string(&outcome) {
            Ok(json) => FfiStep::Done {
                outcome: json.into(),
            },
            Err(error) => failed(&ProviderError::plugin_fault(format!(
                "outcome is not serializable: {error}"
            ))),
        },
        Step::Failed(error) => failed(&error),
    }
}

fn failed(error: &ProviderError) -> FfiStep {
    FfiStep::Failed {
        error: error_json(error).into(),
    }
}

fn error_json(error: &ProviderError) -> String {
    serde_json::to_string(error).unwrap_or_else(|_| {
        r#"{"kind":"plugin_fault","message":"error is not serializable"}"#.to_string()
    })
}

/// The panic's message, then where it happened when known.
fn panic_text(panic: &panic_report::CaughtPanic) -> String {
    let message = panic_message(&*panic.payload);
    match &panic.location {
        Some(location) => format!("{message} (at {location})"),
        None => message,
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        crate::error::truncate(text)
    } else if let Some(text) = payload.downcast_ref::<String>() {
        crate::error::truncate(text)
    } else {
        "non-text panic payload".to_string()
    }
}

/// The entry points that take the invocation in pieces, and what they remember between calls.
#[cfg(not(feature = "previous-contract-fixture"))]
mod v2 {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex, PoisonError};

    use abi_stable::std_types::{RSlice, RStr};
    use serde::Serialize;

    use super::{Plugin, Step, error_json, guarded, guarded_as, read_state};
    use crate::command::{AccountConfig, Command, Invocation};
    use crate::error::ProviderError;
    use crate::ffi::{
        FfiHttpResponse, FfiInvocation, FfiInvocationV3, FfiOutcome, FfiStep, FfiStepV3,
    };

    /// `start` with the invocation in pieces: the account is parsed once per text (see
    /// [`parsed_account`]), the command every time, and the invocation is kept for the flow's
    /// `resume_v2` calls when the plugin asks to send.
    pub extern "C" fn ffi_start_v2<P: Plugin>(
        invocation: &FfiInvocation<'_>,
        inbound_body: RSlice<'_, u8>,
    ) -> FfiStep {
        guarded("start", || {
            let parsed = Arc::new(assemble_invocation(invocation)?);
            let step = P::start(&parsed, inbound_body.as_slice());
            if matches!(step, Step::Send { .. }) {
                FLOWS.keep(FlowKey::of(invocation), parsed);
            }
            Ok(step)
        })
    }

    /// `resume` with the invocation in pieces: the invocation `start_v2` kept for the same pieces
    /// (compared in full), parsed again only when it is not kept any more (more flows in flight than
    /// the cache holds, a flow started by another copy of the plugin).
    pub extern "C" fn ffi_resume_v2<P: Plugin>(
        invocation: &FfiInvocation<'_>,
        state: RStr<'_>,
        response: &FfiHttpResponse,
    ) -> FfiStep {
        guarded("resume", || {
            let parsed = match FLOWS.find(invocation) {
                Some(parsed) => parsed,
                None => Arc::new(assemble_invocation(invocation)?),
            };
            let state = read_state::<P>(state.as_str())?;
            let step = P::resume(&parsed, state, &response.to_response());
            if matches!(step, Step::Send { .. }) {
                FLOWS.keep(FlowKey::of(invocation), parsed);
            } else {
                FLOWS.forget(invocation);
            }
            Ok(step)
        })
    }

    /// `start` with a charge typed: the command built from its fields (no JSON), any other
    /// command parsed from its JSON; the account as in `start_v2`; the outcome returned typed.
    pub extern "C" fn ffi_start_v3<P: Plugin>(
        invocation: &FfiInvocationV3<'_>,
        inbound_body: RSlice<'_, u8>,
    ) -> FfiStepV3 {
        guarded_v3("start", || {
            let (account_text, parsed) = assemble_invocation_v3(invocation)?;
            let parsed = Arc::new(parsed);
            let step = P::start(&parsed, inbound_body.as_slice());
            if matches!(step, Step::Send { .. }) {
                FLOWS_V3.keep(invocation, account_text, parsed);
            }
            Ok(step)
        })
    }

    /// `resume` with a charge typed: the invocation `start_v3` kept for the same invocation (every
    /// field compared), built again only when it is not kept any more.
    pub extern "C" fn ffi_resume_v3<P: Plugin>(
        invocation: &FfiInvocationV3<'_>,
        state: RStr<'_>,
        response: &FfiHttpResponse,
    ) -> FfiStepV3 {
        guarded_v3("resume", || {
            let (account_text, parsed) = match FLOWS_V3.take(invocation) {
                Some(kept) => kept,
                None => {
                    let (text, parsed) = assemble_invocation_v3(invocation)?;
                    (text, Arc::new(parsed))
                }
            };
            let state = read_state::<P>(state.as_str())?;
            let step = P::resume(&parsed, state, &response.to_response());
            if matches!(step, Step::Send { .. }) {
                FLOWS_V3.keep(invocation, account_text, parsed);
            }
            Ok(step)
        })
    }

    fn guarded_v3<S: Serialize>(
        entry_point: &str,
        body: impl FnOnce() -> Result<Step<S>, ProviderError>,
    ) -> FfiStepV3 {
        guarded_as(entry_point, body, step_to_ffi_v3, failed_v3)
    }

    fn step_to_ffi_v3<S: Serialize>(step: Step<S>) -> FfiStepV3 {
        match step {
            Step::Done(outcome) => match FfiOutcome::from_outcome(outcome) {
                Ok(outcome) => FfiStepV3::Done { outcome },
                Err(error) => failed_v3(&ProviderError::plugin_fault(format!(
                    "outcome is not serializable: {error}"
                ))),
            },
            Step::Send { request, state } => match super::send_to_ffi(request, &state) {
                Ok((request, state)) => FfiStepV3::Send { request, state },
                Err(error) => failed_v3(&error),
            },
            Step::Failed(error) => failed_v3(&error),
        }
    }

    fn failed_v3(error: &ProviderError) -> FfiStepV3 {
        FfiStepV3::Failed {
            error: error_json(error).into(),
        }
    }

    /// The invocation of `start_v3`'s pieces, with the kept text of its account.
    fn assemble_invocation_v3(
        invocation: &FfiInvocationV3<'_>,
    ) -> Result<(Arc<str>, Invocation), ProviderError> {
        let command = match invocation.charge.as_ref().into_option() {
            Some(charge) => charge.to_command()?,
            None => serde_json::from_str(invocation.command.as_str()).map_err(|error| {
                ProviderError::invalid_request(format!(
                    "the plugin cannot read the command: {error}"
                ))
            })?,
        };
        let (text, account) = parsed_account(invocation.account.as_str())?;
        Ok((
            text,
            Invocation {
                command,
                account: AccountConfig::clone(&account),
                reference: invocation
                    .reference
                    .as_ref()
                    .map(|reference| reference.as_str().to_string())
                    .into_option(),
                now_unix: invocation.now_unix,
            },
        ))
    }

    /// A flow's invocation kept between its `start_v3` and its `resume_v3`, with what it was built
    /// from that the invocation itself does not hold: its account's text, and the command's text
    /// (the JSON of a command that is not a charge; a charge's `extra` text).
    struct KeptV3 {
        account_text: Arc<str>,
        command_text: Box<str>,
        invocation: Arc<Invocation>,
    }

    impl KeptV3 {
        fn is(&self, invocation: &FfiInvocationV3<'_>) -> bool {
            let kept = &self.invocation;
            kept.now_unix == invocation.now_unix
                && kept.reference.as_deref()
                    == invocation
                        .reference
                        .as_ref()
                        .map(|reference| reference.as_str())
                        .into_option()
                && *self.account_text == *invocation.account.as_str()
                && match invocation.charge.as_ref().into_option() {
                    Some(charge) => charge.is(&kept.command, &self.command_text),
                    None => {
                        !matches!(kept.command, Command::Charge { .. })
                            && *self.command_text == *invocation.command.as_str()
                    }
                }
        }
    }

    struct FlowCacheV3 {
        kept: Mutex<VecDeque<KeptV3>>,
    }

    static FLOWS_V3: FlowCacheV3 = FlowCacheV3 {
        kept: Mutex::new(VecDeque::new()),
    };

    impl FlowCacheV3 {
        /// The kept invocation for these pieces, taken out (a flow's next step keeps it again).
        fn take(&self, invocation: &FfiInvocationV3<'_>) -> Option<(Arc<str>, Arc<Invocation>)> {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let index = kept.iter().rposition(|entry| entry.is(invocation))?;
            kept.remove(index)
                .map(|entry| (entry.account_text, entry.invocation))
        }

        fn keep(
            &self,
            invocation: &FfiInvocationV3<'_>,
            account_text: Arc<str>,
            parsed: Arc<Invocation>,
        ) {
            let command_text: Box<str> = match invocation.charge.as_ref().into_option() {
                Some(charge) => charge.extra.as_str().into(),
                None => invocation.command.as_str().into(),
            };
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.len() >= KEPT_FLOWS {
                kept.pop_front();
            }
            kept.push_back(KeptV3 {
                account_text,
                command_text,
                invocation: parsed,
            });
        }
    }

    /// Whether a flow's invocation is kept for these pieces (tests).
    #[cfg(test)]
    pub(super) fn flow_v3_is_kept(invocation: &FfiInvocationV3<'_>) -> bool {
        FLOWS_V3
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|entry| entry.is(invocation))
    }

    /// How many parsed accounts a plugin keeps (one per account configured for it, in practice).
    const KEPT_ACCOUNTS: usize = 16;
    /// How many flows' invocations a plugin keeps between their steps; past it the oldest is dropped
    /// and its next step parses again.
    const KEPT_FLOWS: usize = 256;

    /// What a plugin remembers of the pieces it was given, so the text that does not change between
    /// calls is not parsed again. Keys are the whole texts: a hit is the same text, byte for byte.
    /// Nothing here is flow state: a miss parses, so a new copy of the plugin (or a host that calls
    /// `resume_v2` on a copy that never saw the flow's `start_v2`) behaves the same, only slower.
    static ACCOUNTS: Mutex<VecDeque<(Arc<str>, Arc<AccountConfig>)>> = Mutex::new(VecDeque::new());
    static FLOWS: FlowCache = FlowCache {
        kept: Mutex::new(VecDeque::new()),
    };

    /// Whether the account's text is kept (tests).
    #[cfg(test)]
    pub(super) fn account_is_kept(json: &str) -> bool {
        ACCOUNTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(text, _)| **text == *json)
    }

    /// Whether a flow's invocation is kept for these pieces (tests).
    #[cfg(test)]
    pub(super) fn flow_is_kept(invocation: &FfiInvocation<'_>) -> bool {
        FLOWS.find(invocation).is_some()
    }

    /// The account in `json`, parsed once per text, with the kept text.
    fn parsed_account(json: &str) -> Result<(Arc<str>, Arc<AccountConfig>), ProviderError> {
        let mut kept = ACCOUNTS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((text, account)) = kept.iter().find(|(text, _)| **text == *json) {
            return Ok((text.clone(), account.clone()));
        }
        drop(kept);
        // Only where the text is wrong, never serde's message: it may quote a value, and the
        // values here are credentials.
        let account: AccountConfig = serde_json::from_str(json).map_err(|error| {
            ProviderError::invalid_request(format!(
                "the plugin cannot read the account's configuration (line {}, column {})",
                error.line(),
                error.column()
            ))
        })?;
        let account = Arc::new(account);
        kept = ACCOUNTS.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= KEPT_ACCOUNTS {
            kept.pop_front();
        }
        let text: Arc<str> = json.into();
        kept.push_back((text.clone(), account.clone()));
        Ok((text, account))
    }

    fn assemble_invocation(invocation: &FfiInvocation<'_>) -> Result<Invocation, ProviderError> {
        let command: Command =
            serde_json::from_str(invocation.command.as_str()).map_err(|error| {
                ProviderError::invalid_request(format!(
                    "the plugin cannot read the command: {error}"
                ))
            })?;
        let (_, account) = parsed_account(invocation.account.as_str())?;
        Ok(Invocation {
            command,
            account: AccountConfig::clone(&account),
            reference: invocation
                .reference
                .as_ref()
                .map(|reference| reference.as_str().to_string())
                .into_option(),
            now_unix: invocation.now_unix,
        })
    }

    /// The pieces of one flow's invocation, owned, to compare the next call's against.
    #[derive(PartialEq)]
    struct FlowKey {
        command: Box<str>,
        account: Box<str>,
        reference: Option<Box<str>>,
        now_unix: i64,
    }

    impl FlowKey {
        fn of(invocation: &FfiInvocation<'_>) -> Self {
            Self {
                command: invocation.command.as_str().into(),
                account: invocation.account.as_str().into(),
                reference: invocation
                    .reference
                    .as_ref()
                    .map(|reference| reference.as_str().into())
                    .into_option(),
                now_unix: invocation.now_unix,
            }
        }

        fn is(&self, invocation: &FfiInvocation<'_>) -> bool {
            self.now_unix == invocation.now_unix
                && *self.command == *invocation.command.as_str()
                && *self.account == *invocation.account.as_str()
                && self.reference.as_deref()
                    == invocation
                        .reference
                        .as_ref()
                        .map(|reference| reference.as_str())
                        .into_option()
        }
    }

    struct FlowCache {
        kept: Mutex<VecDeque<(FlowKey, Arc<Invocation>)>>,
    }

    impl FlowCache {
        fn find(&self, invocation: &FfiInvocation<'_>) -> Option<Arc<Invocation>> {
            let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            kept.iter()
                .rev()
                .find(|(key, _)| key.is(invocation))
                .map(|(_, parsed)| parsed.clone())
        }

        fn keep(&self, key: FlowKey, parsed: Arc<Invocation>) {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.iter().any(|(kept_key, _)| *kept_key == key) {
                return;
            }
            if kept.len() >= KEPT_FLOWS {
                kept.pop_front();
            }
            kept.push_back((key, parsed));
        }

        fn forget(&self, invocation: &FfiInvocation<'_>) {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(index) = kept.iter().position(|(key, _)| key.is(invocation)) {
                kept.remove(index);
            }
        }
    }
}

/// Exports a [`Plugin`] implementation as the library's root module.
///
/// ```text
/// gatehouse_plugin_api::export_plugin!(MyProviderPlugin);
/// ```
///
/// The exported static is what `abi_stable::export_root_module` would generate, spelled out so
/// that a plugin crate needs no dependency but this one. Every entry point it exports catches
/// panics (see [`root_module_for`]).
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub fn __gatehouse_root_module() -> $crate::ffi::PluginModuleRef {
            $crate::root_module_for::<$plugin>()
        }

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader:
            $crate::__private::abi_stable::library::LibHeader = {
            pub extern "C" fn erased_module()
            -> $crate::__private::abi_stable::library::RootModuleResult {
                $crate::__private::abi_stable::library::__call_root_module_loader(
                    __gatehouse_root_module,
                )
            }
            unsafe {
                $crate::__private::abi_stable::library::LibHeader::from_constructor::<
                    $crate::ffi::PluginModuleRef,
                >(
                    erased_module,
                    $crate::__private::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(all(test, not(feature = "previous-contract-fixture")))]
mod tests {
    use std::collections::BTreeMap;

    use abi_stable::std_types::{RSlice, RStr};

    use super::*;
    use crate::ffi::{EncodedInvocation, FfiInvocation, FfiInvocationV3, HostStep};
    use crate::{AccountConfig, Command, Customer, Money, Secret};

    /// Asks for one request, then finishes with the reference it was given; panics when the
    /// answer is a 500.
    struct Probe;

    impl Plugin for Probe {
        type State = String;

        fn manifest() -> Manifest {
            Manifest {
                provider: "probe".into(),
                display_name: "Probe".into(),
                plugin_version: "1.0.0".into(),
                operations: vec![crate::Operation::Charge],
                config_keys: Vec::new(),
                extra_fields: Vec::new(),
                reports: Vec::new(),
                default_base_url: None,
                status_of: Vec::new(),
                max_text_lengths: BTreeMap::new(),
                unsigned_callbacks: None,
            }
        }

        fn start(invocation: &Invocation, _inbound_body: &[u8]) -> Step<String> {
            Step::send(
                HttpRequest::get(format!("{}/pay", invocation.account.base_url)),
                invocation.account.account.clone(),
            )
        }

        fn resume(invocation: &Invocation, state: String, response: &HttpResponse) -> Step<String> {
            assert_ne!(response.status, 500, "the probe was told to panic");
            let mut outcome = Outcome::succeeded().with_provider_reference(format!(
                "{state}:{}",
                invocation.reference.clone().unwrap_or_default()
            ));
            outcome.amount = invocation.command.amount();
            Step::Done(outcome)
        }
    }

    fn invocation(account: &str, reference: Option<&str>) -> Invocation {
        Invocation {
            command: Command::Charge {
                amount: Money::new(500, crate::Currency::from_code("XOF").expect("XOF")),
                description: Some("a \"quoted\" description".into()),
                customer: Customer::default(),
                payment_method: Some("FLOOZ".into()),
                saved_account_id: None,
                extra: BTreeMap::new(),
            },
            account: AccountConfig {
                account: account.into(),
                base_url: "http://provider.test".into(),
                settings: BTreeMap::from([("mode".to_string(), "sandbox".to_string())]),
                secrets: BTreeMap::from([("token".to_string(), Secret::new("s3cr3t-token"))]),
            },
            reference: reference.map(str::to_string),
            now_unix: 1_767_225_600,
        }
    }

    fn answer(status: u16) -> FfiHttpResponse {
        FfiHttpResponse::from(HttpResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    #[test]
    fn the_whole_json_is_what_serde_writes_for_the_invocation() {
        for reference in [
            None,
            Some("gh_1"),
            Some("with \"quotes\" and \\ and \u{e9}"),
        ] {
            let invocation = invocation("main", reference);
            let encoded = EncodedInvocation::from_invocation(&invocation).expect("encodes");
            assert_eq!(
                encoded.whole_json(),
                serde_json::to_string(&invocation).expect("serializes")
            );
            let read: Invocation = serde_json::from_str(encoded.whole_json()).expect("reads");
            assert_eq!(read, invocation);
        }
    }

    /// Both generations of entry points give the same steps, and `resume_v2` does not parse what
    /// `start_v2` parsed; the account's text is parsed once for every flow that carries it.
    #[test]
    fn resume_v2_reuses_what_start_v2_parsed_and_the_account_is_parsed_once() {
        // An account name of this test's own: the caches are the process's.
        let first = invocation("reuse-account", Some("gh_reuse_1"));
        let encoded = EncodedInvocation::from_invocation(&first).expect("encodes");
        let HostStep::Send { request, state } =
            ffi_start_v2::<Probe>(&encoded.as_ffi(), RSlice::from_slice(b"")).into_host_step()
        else {
            panic!("the probe asks to send");
        };
        assert_eq!(request.url, "http://provider.test/pay");
        assert!(
            v2::flow_is_kept(&encoded.as_ffi()),
            "start_v2 keeps the invocation of a flow that asks to send"
        );
        let done = ffi_resume_v2::<Probe>(&encoded.as_ffi(), RStr::from_str(&state), &answer(200))
            .into_host_step();
        let HostStep::Done(outcome) = done else {
            panic!("the probe finishes: {done:?}");
        };
        assert_eq!(
            outcome.provider_reference.as_deref(),
            Some("reuse-account:gh_reuse_1")
        );
        // The same flow through the first release's entry points ends the same.
        let whole = super::ffi_resume::<Probe>(
            RStr::from_str(encoded.whole_json()),
            RStr::from_str(&state),
            &answer(200),
        )
        .into_host_step();
        let HostStep::Done(whole) = whole else {
            panic!("the probe finishes through resume: {whole:?}");
        };
        assert_eq!(whole, outcome);

        // A second flow to the same account: its command is parsed, its account is not.
        let second = invocation("reuse-account", Some("gh_reuse_2"));
        let encoded = EncodedInvocation::from_invocation(&second).expect("encodes");
        assert!(
            v2::account_is_kept(encoded.as_ffi().account.as_str()),
            "the account's text is kept after its first flow"
        );
        let HostStep::Send { .. } =
            ffi_start_v2::<Probe>(&encoded.as_ffi(), RSlice::from_slice(b"")).into_host_step()
        else {
            panic!("the probe asks to send");
        };
    }

    /// A kept invocation is found by its whole text: the same pieces differing in one byte of the
    /// command, the reference or the clock are another invocation, parsed anew.
    #[test]
    fn a_kept_invocation_is_found_only_by_equal_pieces() {
        let original = invocation("equality-account", Some("gh_equal"));
        let encoded = EncodedInvocation::from_invocation(&original).expect("encodes");
        let HostStep::Send { state, .. } =
            ffi_start_v2::<Probe>(&encoded.as_ffi(), RSlice::from_slice(b"")).into_host_step()
        else {
            panic!("the probe asks to send");
        };
        assert!(v2::flow_is_kept(&encoded.as_ffi()));
        let pieces = encoded.as_ffi();
        let command = pieces.command.as_str().replace("500", "501");
        let other_reference = FfiInvocation {
            reference: Some(RStr::from_str("gh_other")).into(),
            ..pieces
        };
        let other_clock = FfiInvocation {
            now_unix: pieces.now_unix + 1,
            ..pieces
        };
        let other_command = FfiInvocation {
            command: RStr::from_str(&command),
            ..pieces
        };
        for other in [other_reference, other_clock, other_command] {
            assert!(!v2::flow_is_kept(&other), "{other:?}");
        }
        // Resumed with a changed command, the plugin reads the changed one, not the kept one.
        let done = ffi_resume_v2::<Probe>(&other_command, RStr::from_str(&state), &answer(200))
            .into_host_step();
        let HostStep::Done(outcome) = done else {
            panic!("the probe finishes: {done:?}");
        };
        assert_eq!(outcome.amount.map(|amount| amount.minor_units), Some(501));
        // The flow's own invocation is forgotten once it ends.
        let done =
            ffi_resume_v2::<Probe>(&pieces, RStr::from_str(&state), &answer(200)).into_host_step();
        assert!(matches!(done, HostStep::Done(_)), "{done:?}");
        assert!(!v2::flow_is_kept(&pieces));
    }

    #[test]
    fn a_panic_in_resume_v2_is_a_plugin_fault_for_that_call() {
        let encoded = EncodedInvocation::from_invocation(&invocation("panic-account", None))
            .expect("encodes");
        let done = ffi_resume_v2::<Probe>(
            &encoded.as_ffi(),
            RStr::from_str("\"panic-account\""),
            &answer(500),
        )
        .into_host_step();
        let HostStep::Failed(error) = done else {
            panic!("a panic is a failed step: {done:?}");
        };
        assert_eq!(error.kind, crate::ErrorKind::PluginFault);
        assert!(
            error.message.contains("panicked in resume"),
            "{}",
            error.message
        );
    }

    /// serde quotes the value it fails on; in the account's text, values are credentials.
    #[test]
    fn an_unreadable_account_is_refused_without_quoting_it() {
        let pieces = FfiInvocation {
            command: RStr::from_str(r#"{"operation":"balance"}"#),
            account: RStr::from_str(
                r#"{"account":"a","base_url":"http://provider.test","secrets":{"token":987654321}}"#,
            ),
            reference: None.into(),
            now_unix: 0,
        };
        let step = ffi_start_v2::<Probe>(&pieces, RSlice::from_slice(b"")).into_host_step();
        let HostStep::Failed(error) = step else {
            panic!("an unreadable account fails the call: {step:?}");
        };
        assert_eq!(error.kind, crate::ErrorKind::InvalidRequest);
        assert!(!error.message.contains("987654321"), "{}", error.message);
        assert!(error.message.contains("account"), "{}", error.message);
    }

    /// A charge with every optional field set, `extra` included, for the typed crossing.
    fn full_charge(account: &str, reference: Option<&str>) -> Invocation {
        let mut full = invocation(account, reference);
        full.command = Command::Charge {
            amount: Money::new(1_234_567, crate::Currency::from_code("EUR").expect("EUR")),
            description: Some("caf\u{e9} \"n\u{b0}1\"".into()),
            customer: Customer {
                id: Some("c-1".into()),
                name: Some("Ad\u{e9}la".into()),
                email: Some("a@example.test".into()),
                phone: Some("+22890123456".into()),
                ip: Some("192.0.2.1".into()),
                country: Some("TG".into()),
            },
            payment_method: Some("card".into()),
            saved_account_id: Some("sa_9".into()),
            extra: BTreeMap::from([(
                "note".to_string(),
                serde_json::json!({"b": [1, 2], "a": null}),
            )]),
        };
        full
    }

    /// Records what the plugin was given, to compare the generations of entry points.
    struct Echo;

    impl Plugin for Echo {
        type State = ();

        fn manifest() -> Manifest {
            Probe::manifest()
        }

        fn start(invocation: &Invocation, _inbound_body: &[u8]) -> Step<()> {
            let seen = serde_json::to_value(invocation).expect("serializes");
            Step::send(
                HttpRequest::post("http://provider.test/echo").json_body(&seen),
                (),
            )
        }

        fn resume(invocation: &Invocation, _state: (), response: &HttpResponse) -> Step<()> {
            match response.status {
                // An outcome the typed fields carry.
                200 => Step::Done(
                    Outcome::pending()
                        .with_provider_reference(invocation.reference.clone().unwrap_or_default())
                        .with_amount(invocation.command.amount().expect("a charge")),
                ),
                // One they do not: details and an error, through the outcome's JSON.
                _ => Step::Done(
                    Outcome::unknown(ProviderError::plugin_fault("went wrong")).with_details(
                        crate::Details::PaymentPage {
                            url: "http://provider.test/page".into(),
                            token: Some("t".into()),
                        },
                    ),
                ),
            }
        }
    }

    /// Every generation of entry points hands the plugin the same invocation and gives the host
    /// the same outcome: a charge typed (every field, `extra` included), any other command as
    /// JSON, an outcome typed or as JSON.
    #[test]
    fn the_typed_entry_points_give_the_plugin_and_the_host_what_the_json_ones_give() {
        let mut balance = invocation("typed-account", None);
        balance.command = Command::Balance {
            extra: BTreeMap::new(),
        };
        for original in [
            full_charge("typed-account", Some("gh_typed")),
            invocation("typed-account", Some("gh_plain")),
            balance,
        ] {
            let encoded = EncodedInvocation::from_invocation(&original).expect("encodes");
            let typed = encoded.as_ffi_v3();
            assert_eq!(
                typed.charge.is_some(),
                matches!(original.command, Command::Charge { .. }),
                "{typed:?}"
            );
            let HostStep::Send { request, state } =
                ffi_start_v3::<Echo>(&typed, RSlice::from_slice(b"")).into_host_step()
            else {
                panic!("the echo asks to send");
            };
            let seen: Invocation = serde_json::from_slice(&request.body).expect("echoed");
            assert_eq!(seen, original);
            let HostStep::Send {
                request: pieces, ..
            } = ffi_start_v2::<Echo>(&encoded.as_ffi(), RSlice::from_slice(b"")).into_host_step()
            else {
                panic!("the echo asks to send");
            };
            assert_eq!(pieces.body, request.body);
            if original.command.amount().is_none() {
                continue;
            }
            for status in [200, 500] {
                let typed_outcome =
                    ffi_resume_v3::<Echo>(&typed, RStr::from_str(&state), &answer(status))
                        .into_host_step();
                let json_outcome = super::ffi_resume::<Echo>(
                    RStr::from_str(encoded.whole_json()),
                    RStr::from_str(&state),
                    &answer(status),
                )
                .into_host_step();
                let (HostStep::Done(typed_outcome), HostStep::Done(json_outcome)) =
                    (typed_outcome, json_outcome)
                else {
                    panic!("both finish");
                };
                assert_eq!(typed_outcome, json_outcome);
            }
        }
    }

    /// `resume_v3` finds what `start_v3` built only for an equal invocation: any field of the
    /// typed charge, the reference or the clock differing is another invocation, built anew.
    #[test]
    fn a_kept_typed_invocation_is_found_only_by_equal_fields() {
        let original = full_charge("typed-equality", Some("gh_typed_equal"));
        let encoded = EncodedInvocation::from_invocation(&original).expect("encodes");
        let typed = encoded.as_ffi_v3();
        let HostStep::Send { state, .. } =
            ffi_start_v3::<Probe>(&typed, RSlice::from_slice(b"")).into_host_step()
        else {
            panic!("the probe asks to send");
        };
        assert!(v2::flow_v3_is_kept(&typed));
        let charge = typed.charge.into_option().expect("typed");
        let mut others: Vec<FfiInvocationV3<'_>> = vec![
            FfiInvocationV3 {
                reference: Some(RStr::from_str("gh_other")).into(),
                ..typed
            },
            FfiInvocationV3 {
                now_unix: typed.now_unix + 1,
                ..typed
            },
        ];
        let mut customer = charge.customer;
        customer.country = Some(RStr::from_str("BJ")).into();
        for changed in [
            crate::ffi::FfiCharge {
                minor_units: charge.minor_units + 1,
                ..charge
            },
            crate::ffi::FfiCharge {
                currency: RStr::from_str("USD"),
                ..charge
            },
            crate::ffi::FfiCharge {
                description: None.into(),
                ..charge
            },
            crate::ffi::FfiCharge { customer, ..charge },
            crate::ffi::FfiCharge {
                extra: RStr::from_str(""),
                ..charge
            },
        ] {
            others.push(FfiInvocationV3 {
                charge: Some(changed).into(),
                ..typed
            });
        }
        for other in &others {
            assert!(!v2::flow_v3_is_kept(other), "{other:?}");
        }
        // Resumed with a changed amount, the plugin reads the changed one.
        let done = ffi_resume_v3::<Probe>(&others[2], RStr::from_str(&state), &answer(200))
            .into_host_step();
        let HostStep::Done(outcome) = done else {
            panic!("the probe finishes: {done:?}");
        };
        assert_eq!(
            outcome.amount.map(|amount| amount.minor_units),
            Some(1_234_568)
        );
        // The flow's own invocation is taken when it ends.
        let done =
            ffi_resume_v3::<Probe>(&typed, RStr::from_str(&state), &answer(200)).into_host_step();
        assert!(matches!(done, HostStep::Done(_)), "{done:?}");
        assert!(!v2::flow_v3_is_kept(&typed));
    }

    /// What a host could send wrong through the typed charge is refused as reading its JSON
    /// would refuse it, as an invalid request for that call.
    #[test]
    fn a_typed_charge_the_plugin_cannot_read_is_an_invalid_request() {
        let original = full_charge("typed-hostile", None);
        let encoded = EncodedInvocation::from_invocation(&original).expect("encodes");
        let typed = encoded.as_ffi_v3();
        let charge = typed.charge.into_option().expect("typed");
        for (currency, extra, what) in [
            ("XXZ", "", "currency"),
            ("eur", "", "currency"),
            ("", "", "currency"),
            ("EUR", "{\"note\":", "extra"),
            ("EUR", "[1,2]", "extra"),
        ] {
            let hostile = FfiInvocationV3 {
                charge: Some(crate::ffi::FfiCharge {
                    currency: RStr::from_str(currency),
                    extra: RStr::from_str(extra),
                    ..charge
                })
                .into(),
                ..typed
            };
            let step = ffi_start_v3::<Probe>(&hostile, RSlice::from_slice(b"")).into_host_step();
            let HostStep::Failed(error) = step else {
                panic!("{currency:?} {extra:?} is refused: {step:?}");
            };
            assert_eq!(error.kind, crate::ErrorKind::InvalidRequest, "{error:?}");
            assert!(
                error.message.contains("cannot read the command"),
                "{what}: {}",
                error.message
            );
        }
    }

    #[test]
    fn a_panic_in_resume_v3_is_a_plugin_fault_for_that_call() {
        let encoded = EncodedInvocation::from_invocation(&invocation("panic-v3-account", None))
            .expect("encodes");
        let done = ffi_resume_v3::<Probe>(
            &encoded.as_ffi_v3(),
            RStr::from_str("\"panic-v3-account\""),
            &answer(500),
        )
        .into_host_step();
        let HostStep::Failed(error) = done else {
            panic!("a panic is a failed step: {done:?}");
        };
        assert_eq!(error.kind, crate::ErrorKind::PluginFault);
        assert!(
            error.message.contains("panicked in resume"),
            "{}",
            error.message
        );
    }
}
