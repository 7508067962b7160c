//! The stable-ABI boundary: the root module every plugin library exports, and the few
//! `#[repr(C)]` types that cross it.
//!
//! Laid out for the ABI: HTTP requests and responses (raw bytes, so signatures are checked on
//! exactly what was sent), the step envelope, and — for `start_v3`/`resume_v3` — the hot types: a
//! charge command and an outcome without error or details ([`typed`]). Every other command and
//! outcome, and manifests, cross as JSON text of the types in this crate. abi_stable checks the
//! layout of everything reachable from [`PluginModule`] when a library is loaded; the JSON types
//! are covered by the contract version rules in the crate documentation.

mod typed;

pub use typed::{FfiCharge, FfiCustomer, FfiInvocationV3, FfiMoney, FfiOutcome, FfiStepV3};

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::{StableAbi, declare_root_module_statics, package_version_strings};

use crate::command::{AccountConfig, Command, Invocation};
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

/// The invocation as `start_v2` and `resume_v2` take it: an [`Invocation`] in its pieces, the
/// command and the account each as JSON of their own types (the same schema as inside the
/// invocation's JSON), the reference and the clock as plain values.
///
/// `account` is the part that does not change between dispatches: a host encodes it once per
/// resolution of the account and passes the same text every time, and a plugin keeps what it
/// parsed from it keyed by the whole text (never by a hash of it).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct FfiInvocation<'a> {
    /// JSON of the [`Command`].
    pub command: RStr<'a>,
    /// JSON of the [`AccountConfig`].
    pub account: RStr<'a>,
    pub reference: ROption<RStr<'a>>,
    pub now_unix: i64,
}

/// An invocation encoded for the boundary, as a host keeps it for one flow: the command itself
/// (a charge crosses `start_v3` typed, borrowed from it), and the texts older entry points take,
/// each made on first use: the command's JSON for `start_v2`'s pieces (and `start_v3`'s, for any
/// command but a charge), the single JSON text `start`/`resume` take for a plugin built before
/// them (byte for byte what serializing the [`Invocation`] gives).
#[derive(Debug)]
pub struct EncodedInvocation {
    command: Command,
    command_json: std::sync::OnceLock<String>,
    /// JSON of a charge's `extra`, empty when it has nothing (`start_v3`).
    extra_json: std::sync::OnceLock<String>,
    account: std::sync::Arc<str>,
    reference: Option<String>,
    now_unix: i64,
    whole: std::sync::OnceLock<String>,
}

impl EncodedInvocation {
    /// Encodes `command` for a flow. `account_json` is [`encode_account`]'s text of the account,
    /// made once per resolution of the account and shared by its flows.
    pub fn new(
        command: &Command,
        account_json: std::sync::Arc<str>,
        reference: Option<String>,
        now_unix: i64,
    ) -> Result<Self, serde_json::Error> {
        let encoded = Self {
            command: command.clone(),
            command_json: std::sync::OnceLock::new(),
            extra_json: std::sync::OnceLock::new(),
            account: account_json,
            reference,
            now_unix,
            whole: std::sync::OnceLock::new(),
        };
        // Every entry point needs the JSON of a command that is not a charge: made here, so a
        // command that cannot be encoded is refused before the flow.
        if !matches!(command, Command::Charge { .. }) {
            let json = serde_json::to_string(command)?;
            let _ = encoded.command_json.set(json);
        }
        Ok(encoded)
    }

    /// Encodes a whole invocation (tests and tools; a host shares the account's text instead).
    pub fn from_invocation(invocation: &Invocation) -> Result<Self, serde_json::Error> {
        Self::new(
            &invocation.command,
            encode_account(&invocation.account)?,
            invocation.reference.clone(),
            invocation.now_unix,
        )
    }

    /// The command's JSON, made on first use.
    fn command_json(&self) -> &str {
        // A command always serializes (its maps have string keys), so the empty fallback is
        // never taken; a plugin given it would refuse the command as unreadable.
        self.command_json
            .get_or_init(|| serde_json::to_string(&self.command).unwrap_or_default())
    }

    /// The pieces, borrowed for one call.
    pub fn as_ffi(&self) -> FfiInvocation<'_> {
        FfiInvocation {
            command: RStr::from_str(self.command_json()),
            account: RStr::from_str(&self.account),
            reference: self.reference.as_deref().map(RStr::from_str).into(),
            now_unix: self.now_unix,
        }
    }

    /// The invocation as `start_v3`/`resume_v3` take it: a charge typed, any other command as
    /// JSON.
    pub fn as_ffi_v3(&self) -> FfiInvocationV3<'_> {
        let extra = match &self.command {
            Command::Charge { extra, .. } if !extra.is_empty() => self
                .extra_json
                .get_or_init(|| serde_json::to_string(extra).unwrap_or_default())
                .as_str(),
            _ => "",
        };
        let charge = FfiCharge::of(&self.command, extra);
        FfiInvocationV3 {
            command: match charge {
                Some(_) => RStr::from_str(""),
                None => RStr::from_str(self.command_json()),
            },
            charge: charge.into(),
            account: RStr::from_str(&self.account),
            reference: self.reference.as_deref().map(RStr::from_str).into(),
            now_unix: self.now_unix,
        }
    }

    /// The invocation as one JSON text, for `start` and `resume`: the pieces spliced into the
    /// object serde writes for an [`Invocation`] (same fields, same order).
    pub fn whole_json(&self) -> &str {
        self.whole.get_or_init(|| {
            let command = self.command_json();
            let mut json = String::with_capacity(command.len() + self.account.len() + 96);
            json.push_str("{\"command\":");
            json.push_str(command);
            json.push_str(",\"account\":");
            json.push_str(&self.account);
            if let Some(reference) = &self.reference {
                json.push_str(",\"reference\":");
                // A string always serializes.
                json.push_str(&serde_json::to_string(reference).unwrap_or_default());
            }
            json.push_str(",\"now_unix\":");
            json.push_str(&self.now_unix.to_string());
            json.push('}');
            json
        })
    }
}

/// The account's configuration as [`FfiInvocation::account`] carries it.
pub fn encode_account(account: &AccountConfig) -> Result<std::sync::Arc<str>, serde_json::Error> {
    serde_json::to_string(account).map(std::sync::Arc::from)
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
    /// `start` with the invocation in pieces ([`FfiInvocation`]): the account's configuration as
    /// the same text for every dispatch until it changes, so the host encodes it once and the
    /// plugin parses it once. Appended after the first release's fields: a plugin built before
    /// it reads as `None` and is driven through `start`/`resume`. Absent with the `previous-contract-fixture` feature (a
    /// test fixture of a plugin built before it).
    #[cfg(not(feature = "previous-contract-fixture"))]
    pub start_v2:
        extern "C" fn(invocation: &FfiInvocation<'_>, inbound_body: RSlice<'_, u8>) -> FfiStep,
    /// `resume` with the invocation in pieces: a plugin finds the invocation it parsed in
    /// `start_v2` again (same pieces, compared in full) instead of parsing it a second time.
    #[cfg(not(feature = "previous-contract-fixture"))]
    pub resume_v2: extern "C" fn(
        invocation: &FfiInvocation<'_>,
        state: RStr<'_>,
        response: &FfiHttpResponse,
    ) -> FfiStep,
    /// `start` with a charge typed and a typed outcome ([`typed`]): no JSON made or parsed for
    /// a charge's command or for an outcome without error or details. Appended after `resume_v2`:
    /// a plugin built before it reads as `None` and is driven through `start_v2`/`resume_v2`.
    #[cfg(not(feature = "previous-contract-fixture"))]
    pub start_v3:
        extern "C" fn(invocation: &FfiInvocationV3<'_>, inbound_body: RSlice<'_, u8>) -> FfiStepV3,
    /// `resume` to go with `start_v3`.
    #[cfg(not(feature = "previous-contract-fixture"))]
    pub resume_v3: extern "C" fn(
        invocation: &FfiInvocationV3<'_>,
        state: RStr<'_>,
        response: &FfiHttpResponse,
    ) -> FfiStepV3,
    /// Test fixture only (feature `next-contract-fixture`): a function the next minor version
    /// appends, after the last field and without moving `last_prefix_field`. A host built with it
    /// reads it from today's plugins as `None` (`PluginModuleRef::next_contract_probe()`); today's
    /// host never looks at it.
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
