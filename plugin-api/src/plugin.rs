//! The Rust side of the contract for plugin authors: implement [`Plugin`], then
//! [`export_plugin!`](crate::export_plugin) it.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::std_types::{RResult, RSlice, RStr, RString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::Invocation;
use crate::error::ProviderError;
use crate::ffi::{FfiHttpResponse, FfiStep, PluginModule, PluginModuleRef};
use crate::http::{HttpRequest, HttpResponse};
use crate::manifest::Manifest;
use crate::outcome::Outcome;

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

/// Builds the root module for a plugin type. Called by [`export_plugin!`](crate::export_plugin).
pub fn root_module_for<P: Plugin>() -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginModule {
        contract_version: ffi_contract_version,
        manifest: ffi_manifest::<P>,
        start: ffi_start::<P>,
        resume: ffi_resume::<P>,
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
    match catch_unwind(manifest_json::<P>) {
        Ok(Ok(json)) => RResult::ROk(json.into()),
        Ok(Err(error)) => RResult::RErr(format!("manifest is not serializable: {error}").into()),
        Err(panic) => {
            RResult::RErr(format!("manifest() panicked: {}", panic_message(&*panic)).into())
        }
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
        let state: P::State = serde_json::from_str(state.as_str()).map_err(|error| {
            ProviderError::plugin_fault(format!(
                "flow state handed back by the host is unreadable: {error}"
            ))
        })?;
        Ok(P::resume(&invocation, state, &response.to_response()))
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
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(step)) => step_to_ffi(step),
        Ok(Err(error)) => failed(&error),
        Err(panic) => failed(&ProviderError::plugin_fault(format!(
            "plugin panicked in {entry_point}: {}",
            panic_message(&*panic)
        ))),
    }
}

fn step_to_ffi<S: Serialize>(step: Step<S>) -> FfiStep {
    match step {
        Step::Send { request, state } => match serde_json::to_string(&state) {
            Ok(state) => FfiStep::Send {
                request: request.into(),
                state: state.into(),
            },
            Err(error) => failed(&ProviderError::plugin_fault(format!(
                "flow state is not serializable: {error}"
            ))),
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
    let json = serde_json::to_string(error).unwrap_or_else(|_| {
        r#"{"kind":"plugin_fault","message":"error is not serializable"}"#.to_string()
    });
    FfiStep::Failed { error: json.into() }
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
