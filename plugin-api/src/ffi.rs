//! The stable-ABI boundary: the root module every plugin library exports, and the few
//! `#[repr(C)]` types that cross it.
//!
//! Only transport types are laid out for the ABI: HTTP requests and responses (raw bytes, so
//! signatures are checked on exactly what was sent) and the step envelope. Commands, outcomes and
//! manifests cross as JSON text of the types in this crate. abi_stable checks the layout of
//! everything reachable from [`PluginModule`] when a library is loaded; the JSON types are covered
//! by the contract version rules in the crate documentation.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::{StableAbi, declare_root_module_statics, package_version_strings};

use crate::error::{ErrorKind, ProviderError};
use crate::http::{HttpRequest, HttpResponse, Method};
use crate::outcome::Outcome;

/// An HTTP request as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiHttpRequest {
    pub method: RString,
    pub url: RString,
    pub headers: RVec<Tuple2<RString, RString>>,
    pub body: RVec<u8>,
    /// 0 means "the account's configured timeout".
    pub timeout_ms: u64,
    pub retry_safe: bool,
    pub sensitive_headers: RVec<RString>,
}

/// An HTTP response as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiHttpResponse {
    pub status: u16,
    pub headers: RVec<Tuple2<RString, RString>>,
    pub body: RVec<u8>,
}

/// One step of a sans-IO flow.
///
/// A `#[repr(u8)]` enum's layout is part of the checked ABI: adding a variant changes it, and
/// abi_stable refuses every plugin built before the change. A new kind of step is therefore never
/// a new variant within a `0.MINOR`. It is added the append-only way instead: a new root-module
/// function appended to [`PluginModule`] (say `resume_v2`) that returns a *new* step type with
/// the extra variant, called by a host only when the plugin has it (an older plugin reads as
/// `None` and keeps being driven through `start`/`resume` and this enum); or, when the new step
/// carries only data, as JSON inside `Done`'s outcome (new optional fields). Changing this enum
/// itself is a breaking change: a new `0.MINOR`.
#[repr(u8)]
#[derive(StableAbi, Debug)]
pub enum FfiStep {
    /// Send this request, then call `resume` with the answer and this state.
    Send {
        request: FfiHttpRequest,
        state: RString,
    },
    /// Finished: JSON of an [`Outcome`].
    Done { outcome: RString },
    /// Finished without a result: JSON of a [`ProviderError`].
    Failed { error: RString },
}

/// The root module of a plugin library.
///
/// Architecture Invariant: fields are only ever appended at the end, and
/// `#[sabi(last_prefix_field)]` never moves from the field it marks in the first release
/// (abi_stable: every later minor version adds fields after it without moving it; moving it is a
/// breaking change). A host reads a field an older plugin lacks as `None`
/// (`missing_field(option)`), so older plugins keep loading.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    /// The version of `gatehouse-plugin-api` the plugin was built with.
    pub contract_version: extern "C" fn() -> RString,
    /// JSON of the plugin's [`crate::Manifest`], or a plugin-fault message.
    pub manifest: extern "C" fn() -> RResult<RString, RString>,
    /// Starts a flow: the invocation as JSON and the raw inbound body (webhooks; empty otherwise).
    pub start: extern "C" fn(invocation: RStr<'_>, inbound_body: RSlice<'_, u8>) -> FfiStep,
    /// Continues a flow with the answer to the request the last step asked for.
    #[sabi(last_prefix_field)]
    pub resume:
        extern "C" fn(invocation: RStr<'_>, state: RStr<'_>, response: &FfiHttpResponse) -> FfiStep,
    /// Test fixture only (feature `next-contract-fixture`): a function the next minor version
    /// appends, after `resume` and without moving `last_prefix_field`. A host built with it reads
    /// it from today's plugins as `None` (`PluginModuleRef::next_contract_probe()`); today's host
    /// never looks at it.
    #[cfg(feature = "next-contract-fixture")]
    pub next_contract_probe: extern "C" fn() -> u32,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "gatehouse_plugin";
    const NAME: &'static str = "gatehouse_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

impl From<HttpRequest> for FfiHttpRequest {
    fn from(request: HttpRequest) -> Self {
        Self {
            method: RString::from(request.method.as_str()),
            url: request.url.into(),
            headers: request
                .headers
                .into_iter()
                .map(|(name, value)| Tuple2(name.into(), value.into()))
                .collect(),
            body: request.body.into(),
            timeout_ms: request.timeout_ms.unwrap_or(0),
            retry_safe: request.retry_safe,
            sensitive_headers: request
                .sensitive_headers
                .into_iter()
                .map(RString::from)
                .collect(),
        }
    }
}

impl FfiHttpRequest {
    /// Converts back to the typed request, refusing an unknown method.
    pub fn into_request(self) -> Result<HttpRequest, ProviderError> {
        let method = Method::parse(self.method.as_str()).ok_or_else(|| {
            ProviderError::plugin_fault(format!(
                "plugin asked for unknown HTTP method `{}`",
                crate::error::truncate(self.method.as_str())
            ))
        })?;
        Ok(HttpRequest {
            method,
            url: self.url.into_string(),
            headers: self
                .headers
                .into_iter()
                .map(|Tuple2(name, value)| (name.into_string(), value.into_string()))
                .collect(),
            body: self.body.into_vec(),
            timeout_ms: (self.timeout_ms != 0).then_some(self.timeout_ms),
            retry_safe: self.retry_safe,
            sensitive_headers: self
                .sensitive_headers
                .into_iter()
                .map(RString::into_string)
                .collect(),
        })
    }
}

impl From<HttpResponse> for FfiHttpResponse {
    fn from(response: HttpResponse) -> Self {
        Self {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|(name, value)| Tuple2(name.into(), value.into()))
                .collect(),
            body: response.body.into(),
        }
    }
}

impl FfiHttpResponse {
    pub fn to_response(&self) -> HttpResponse {
        HttpResponse {
            status: self.status,
            headers: self
                .headers
                .iter()
                .map(|Tuple2(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: self.body.to_vec(),
        }
    }
}

/// A step as the host sees it: state stays opaque text, outcome and error are typed.
// A step lives for one exchange and is moved, never stored: boxing the larger variant would
// add an allocation per step for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum HostStep {
    Send { request: HttpRequest, state: String },
    Done(Outcome),
    Failed(ProviderError),
}

impl FfiStep {
    /// Reads the step the plugin returned. Output the host cannot read becomes a plugin-fault
    /// error: a plugin that returns nonsense fails its request, not the host.
    pub fn into_host_step(self) -> HostStep {
        match self {
            FfiStep::Send { request, state } => match request.into_request() {
                Ok(request) => HostStep::Send {
                    request,
                    state: state.into_string(),
                },
                Err(error) => HostStep::Failed(error),
            },
            FfiStep::Done { outcome } => match serde_json::from_str::<Outcome>(&outcome) {
                Ok(outcome) => HostStep::Done(outcome),
                Err(error) => HostStep::Failed(ProviderError::new(
                    ErrorKind::PluginFault,
                    format!("plugin returned an outcome the host cannot read: {error}"),
                )),
            },
            FfiStep::Failed { error } => match serde_json::from_str::<ProviderError>(&error) {
                Ok(error) => HostStep::Failed(error),
                Err(parse_error) => HostStep::Failed(ProviderError::plugin_fault(format!(
                    "plugin returned an error the host cannot read: {parse_error}"
                ))),
            },
        }
    }
}
