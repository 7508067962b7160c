//! The conformance check behind `gatehouse plugin check <file>`: loads a plugin file exactly as
//! the host would, then drives every operation its manifest declares with canned commands and
//! canned provider answers, and reports what a plugin author must fix before deploying.
//!
//! What is checked, one [`CheckResult`] each:
//! - **contract**: the file is a plugin library built against a compatible plugin-api (contract
//!   version and type layout), through [`gatehouse_core::loader::load_plugin`] itself;
//! - **manifest**: the manifest reads and validates (the loader's own validation);
//! - **operation `<name>`**, one per declared operation: canned commands of that operation, each
//!   answered in turn with every canned response, finish within the host's step limit without a
//!   panic, a hang, or any other plugin fault;
//! - **errors are well-formed**: every error the plugin returns has a message, a kind the host
//!   knows, bounded provider text, and a `failed` or `unknown` outcome says why;
//! - **no secret in errors**: no canned secret value appears in an error or an outcome's error;
//! - **requests stay on the account's origin** and **no secret in request URLs**;
//! - **secret headers are marked sensitive**: a header that carries a secret is one the host
//!   never logs.
//!
//! Plugins are deterministic functions of their input (they read no clock and do no I/O), so a
//! run that sends no request is not repeated for the other canned responses.
//!
//! Architecture Invariant: the check never sends anything anywhere. Requests the plugin asks for
//! are answered from the canned set; the base URL is `http://conformance.invalid`, a name that
//! cannot resolve.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use gatehouse_plugin_api::error::MAX_PROVIDER_TEXT;
use gatehouse_plugin_api::ffi::{EncodedInvocation, HostStep};
use gatehouse_plugin_api::{
    AccountConfig, CONTRACT_VERSION, Command, ErrorKind, HttpRequest, HttpResponse, Invocation,
    Manifest, Operation, Outcome, OutcomeStatus, ProviderError, Secret,
};
use serde::Serialize;
use serde_json::{Value, json};

use gatehouse_core::loader::{LoadError, LoadedPlugin, load_plugin};
use gatehouse_core::transport::{loggable_url, same_origin_of};
use gatehouse_plugin_api::flow::{self, MAX_FLOW_STEPS};

/// The base URL of the canned account. `.invalid` never resolves (RFC 2606), so even a request
/// that escaped the check could not reach anything.
pub const BASE_URL: &str = "http://conformance.invalid";

/// How long one plugin call (`start` or `resume`) may take before the check gives up on it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The host-made reference given to money-moving commands and payment pages, shaped like the
/// host's own (`gh_` and 32 hex digits).
pub const CANNED_REFERENCE: &str = "gh_c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0";

/// The value given to every required non-secret setting: digits only, so it passes both the
/// numeric-id checks (account numbers, merchant ids) and free-text checks (user names).
pub const CANNED_SETTING: &str = "100001";

/// The host's clock in every canned invocation: 2026-01-01T00:00:00Z.
pub const CANNED_NOW_UNIX: i64 = 1_767_225_600;

/// Check names, stable so that tests and tools can look a check up.
pub const CHECK_CONTRACT: &str = "contract";
pub const CHECK_MANIFEST: &str = "manifest";
pub const CHECK_ERRORS_WELL_FORMED: &str = "errors are well-formed";
pub const CHECK_NO_SECRET_IN_ERRORS: &str = "no secret in errors";
pub const CHECK_SAME_ORIGIN: &str = "requests stay on the account's origin";
pub const CHECK_NO_SECRET_IN_URLS: &str = "no secret in request URLs";
pub const CHECK_SENSITIVE_HEADERS: &str = "secret headers are marked sensitive";

/// The name of the check for one operation (`operation balance`).
pub fn operation_check_name(operation: Operation) -> String {
    format!("operation {operation}")
}

/// The canned value of a secret config key: distinctive, so an echo is unmistakable.
pub fn canned_secret(key: &str) -> String {
    format!("conformance-secret-{key}-7f3a")
}

/// What the check found about one plugin file.
#[derive(Debug, Clone, Serialize)]
pub struct ConformanceReport {
    pub file: PathBuf,
    /// The provider id, when the manifest could be read.
    pub provider: Option<String>,
    pub plugin_version: Option<String>,
    /// The plugin-api version the plugin was built against, when it loaded.
    pub contract_version: Option<String>,
    /// The plugin-api version of this host.
    pub host_contract_version: String,
    /// The manifest, when it loaded and validated.
    pub manifest: Option<Manifest>,
    pub checks: Vec<CheckResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// What was checked and found; for a failure, what is wrong and where.
    pub detail: String,
}

impl ConformanceReport {
    /// Whether every check passed (a report with no checks has not passed).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|check| check.passed)
    }

    /// The check called `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|check| check.name == name)
    }

    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|check| !check.passed)
    }

    /// The report as text for a terminal: the plugin, its manifest, one line per check, a verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "conformance check of {}", self.file.display());
        match (&self.provider, &self.plugin_version) {
            (Some(provider), Some(version)) => {
                let _ = writeln!(out, "  plugin:   {provider} {version}");
            }
            _ => {
                let _ = writeln!(out, "  plugin:   (manifest not read)");
            }
        }
        let _ = writeln!(
            out,
            "  contract: {} (this host: {})",
            self.contract_version.as_deref().unwrap_or("unknown"),
            self.host_contract_version
        );
        if let Some(manifest) = &self.manifest {
            render_manifest(&mut out, manifest);
        }
        let _ = writeln!(out);
        for check in &self.checks {
            let mark = if check.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "  {mark}  {}", check.name);
            for line in check.detail.lines() {
                let _ = writeln!(out, "        {line}");
            }
        }
        let failed = self.failures().count();
        let _ = writeln!(out);
        if self.passed() {
            let _ = writeln!(out, "result: PASSED ({} checks)", self.checks.len());
        } else {
            let _ = writeln!(
                out,
                "result: FAILED ({failed} of {} checks failed)",
                self.checks.len()
            );
        }
        out
    }
}

fn render_manifest(out: &mut String, manifest: &Manifest) {
    let _ = writeln!(out, "  name:     {}", manifest.display_name);
    let operations: Vec<&str> = manifest
        .operations
        .iter()
        .map(|operation| operation.as_str())
        .collect();
    let _ = writeln!(out, "  operations: {}", operations.join(", "));
    let keys: Vec<String> = manifest
        .config_keys
        .iter()
        .map(|key| {
            let mut traits = vec![if key.required { "required" } else { "optional" }];
            if key.secret {
                traits.push("secret");
            }
            format!("{} ({})", key.name, traits.join(", "))
        })
        .collect();
    let _ = writeln!(
        out,
        "  config keys: {}",
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    );
    if !manifest.reports.is_empty() {
        let _ = writeln!(out, "  reports: {}", manifest.reports.join(", "));
    }
    for field in &manifest.extra_fields {
        let _ = writeln!(
            out,
            "  extra field: {}.{}{}",
            field.operation,
            field.name,
            if field.required { " (required)" } else { "" }
        );
    }
    if let Some(url) = &manifest.default_base_url {
        let _ = writeln!(out, "  default base URL: {url}");
    }
}

/// Loads `path` as the host would and checks it. Blocking: it maps the library and runs plugin
/// calls (each on a thread of its own, abandoned if it overruns [`CALL_TIMEOUT`]).
///
/// The library stays mapped in this process afterwards (libraries are never unloaded).
pub fn check_plugin_file(path: &Path) -> ConformanceReport {
    let mut report = ConformanceReport {
        file: path.to_path_buf(),
        provider: None,
        plugin_version: None,
        contract_version: None,
        host_contract_version: CONTRACT_VERSION.to_string(),
        manifest: None,
        checks: Vec::new(),
    };
    let plugin = match load(path) {
        Ok(plugin) => Arc::new(plugin),
        Err(error) => {
            record_load_failure(&mut report, &error);
            return report;
        }
    };
    report.provider = Some(plugin.manifest.provider.clone());
    report.plugin_version = Some(plugin.manifest.plugin_version.clone());
    report.contract_version = Some(plugin.contract_version.clone());
    report.manifest = Some(plugin.manifest.clone());
    report.checks.push(CheckResult {
        name: CHECK_CONTRACT.into(),
        passed: true,
        detail: format!(
            "built against gatehouse-plugin-api {}, compatible with this host's {CONTRACT_VERSION}; \
             abi_stable accepted the layout of every type that crosses the boundary",
            plugin.contract_version
        ),
    });
    report.checks.push(CheckResult {
        name: CHECK_MANIFEST.into(),
        passed: true,
        detail: format!(
            "provider `{}` version {}: {} operation(s), {} config key(s); the manifest validates",
            plugin.manifest.provider,
            plugin.manifest.plugin_version,
            plugin.manifest.operations.len(),
            plugin.manifest.config_keys.len()
        ),
    });
    let account = canned_account(&plugin.manifest);
    let mut runs = Vec::new();
    for &operation in &plugin.manifest.operations {
        runs.extend(run_operation(&plugin, &account, operation));
    }
    let secrets: Vec<(String, String)> = account
        .secrets
        .iter()
        .map(|(key, value)| (key.clone(), value.expose().to_string()))
        .collect();
    for &operation in &plugin.manifest.operations {
        let of_operation: Vec<&FlowRun> = runs
            .iter()
            .filter(|run| run.operation == operation)
            .collect();
        report
            .checks
            .push(operation_check(operation, &of_operation));
    }
    report.checks.push(errors_well_formed_check(&runs));
    report
        .checks
        .push(no_secret_in_errors_check(&runs, &secrets));
    report.checks.push(same_origin_check(&runs));
    report.checks.push(no_secret_in_urls_check(&runs, &secrets));
    report.checks.push(sensitive_headers_check(&runs, &secrets));
    report
}

/// Loads the file through the host's own loader (which makes and removes its own private copy
/// folder).
fn load(path: &Path) -> Result<LoadedPlugin, LoadError> {
    let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
        file: path.display().to_string(),
        message: error.to_string(),
    })?;
    load_plugin(path, &bytes, &std::env::temp_dir())
}

fn record_load_failure(report: &mut ConformanceReport, error: &LoadError) {
    match error {
        // The library opened and passed the contract checks; only its manifest was refused.
        LoadError::Manifest { .. } => {
            report.checks.push(CheckResult {
                name: CHECK_CONTRACT.into(),
                passed: true,
                detail: format!(
                    "the contract version and the layout are compatible with this host's {CONTRACT_VERSION}"
                ),
            });
            report.checks.push(CheckResult {
                name: CHECK_MANIFEST.into(),
                passed: false,
                detail: format!("the host refuses this plugin: {error}"),
            });
        }
        _ => report.checks.push(CheckResult {
            name: CHECK_CONTRACT.into(),
            passed: false,
            detail: format!("the host refuses this file: {error}"),
        }),
    }
}

/// An account for the plugin's manifest: every secret key (required or optional) gets its
/// [`canned_secret`]; every required setting gets [`CANNED_SETTING`]. Optional settings are left
/// out, as an operator would leave them, so that the plugin's defaults apply: a made-up value for
/// a format, an enumeration or a second account number would mostly exercise the plugin's own
/// refusal of that value rather than its flows.
pub fn canned_account(manifest: &Manifest) -> AccountConfig {
    let mut account = AccountConfig {
        account: "conformance".into(),
        base_url: BASE_URL.into(),
        ..AccountConfig::default()
    };
    for key in &manifest.config_keys {
        if key.secret {
            account
                .secrets
                .insert(key.name.clone(), Secret::new(canned_secret(&key.name)));
        } else if key.required {
            account
                .settings
                .insert(key.name.clone(), CANNED_SETTING.into());
        }
    }
    account
}

/// One canned command of an operation, with what travels beside it.
#[derive(Debug, Clone)]
pub struct CannedCommand {
    /// A short description for the report (`charge in XOF`, `report payments`).
    pub label: String,
    pub command: Command,
    pub inbound_body: Vec<u8>,
}

/// The canned commands of `operation` for a plugin with `manifest`: plausible values in every
/// field, every report the manifest lists (with and without a period), every required extra field
/// filled, and amounts in a few currencies (providers often accept only one). Identifiers are
/// digit strings, which numeric-id providers accept and text-id providers do too.
pub fn canned_commands(operation: Operation, manifest: &Manifest) -> Vec<CannedCommand> {
    const CURRENCIES: [(&str, i64); 3] = [("USD", 1_000), ("EUR", 1_000), ("XOF", 1_000)];
    let customer = json!({
        "id": "conformance-customer-1", "name": "Ada Lovelace", "email": "ada@example.com",
        "phone": "+22890123456", "ip": "192.0.2.10", "country": "TG"
    });
    let mut variants: Vec<(String, Value, Vec<u8>)> = Vec::new();
    match operation {
        Operation::Charge => {
            for (currency, minor_units) in CURRENCIES {
                let amount = json!({"minor_units": minor_units, "currency": currency});
                variants.push((
                    format!("charge in {currency}"),
                    json!({"amount": amount, "description": "Gatehouse conformance check",
                           "customer": customer, "payment_method": "FLOOZ"}),
                    Vec::new(),
                ));
                variants.push((
                    format!("charge of a saved account in {currency}"),
                    json!({"amount": amount, "description": "Gatehouse conformance check",
                           "customer": customer, "payment_method": "card",
                           "saved_account_id": "100000002"}),
                    Vec::new(),
                ));
            }
        }
        Operation::Refund => {
            variants.push((
                "full refund".into(),
                json!({"transaction_id": "100000001"}),
                Vec::new(),
            ));
            for (currency, _) in CURRENCIES {
                variants.push((
                    format!("partial refund in {currency}"),
                    json!({"transaction_id": "100000001",
                           "amount": {"minor_units": 500, "currency": currency},
                           "reason": "conformance check", "email": "ada@example.com"}),
                    Vec::new(),
                ));
            }
        }
        Operation::Report => {
            let names = if manifest.reports.is_empty() {
                vec!["conformance".to_string()]
            } else {
                manifest.reports.clone()
            };
            for name in names {
                variants.push((
                    format!("report {name} for the last day"),
                    json!({"report": name, "from": CANNED_NOW_UNIX - 86_400, "till": CANNED_NOW_UNIX}),
                    Vec::new(),
                ));
                variants.push((format!("report {name} without a period"), json!({"report": name}), Vec::new()));
            }
        }
        Operation::AffiliatePayout => {
            for (currency, minor_units) in CURRENCIES {
                variants.push((
                    format!("affiliate payout in {currency}"),
                    json!({"affiliate_id": "100002", "amount": {"minor_units": minor_units, "currency": currency},
                           "original_subscription_id": "0100000001"}),
                    Vec::new(),
                ));
            }
        }
        Operation::AffiliateRefund => variants.push((
            "affiliate refund".into(),
            json!({"affiliate_id": "100002", "subscription_id": "0100000002",
                   "original_subscription_id": "0100000001", "transaction_type": "one_time"}),
            Vec::new(),
        )),
        Operation::Status => {
            variants.push((
                "status by transaction id".into(),
                json!({"transaction_id": "100000001"}),
                Vec::new(),
            ));
            variants.push((
                "status by reference".into(),
                json!({"reference": CANNED_REFERENCE}),
                Vec::new(),
            ));
        }
        Operation::Balance => variants.push(("balance".into(), json!({}), Vec::new())),
        Operation::PaymentPage => {
            for (currency, minor_units) in CURRENCIES {
                variants.push((
                    format!("payment page in {currency}"),
                    json!({"amount": {"minor_units": minor_units, "currency": currency},
                           "description": "Gatehouse conformance check", "customer": customer,
                           "return_url": "https://merchant.example/return"}),
                    Vec::new(),
                ));
            }
        }
        Operation::SavedAccounts => {
            variants.push((
                "saved accounts".into(),
                json!({"user_id": "conformance-user-1"}),
                Vec::new(),
            ));
        }
        Operation::DeleteSavedAccount => variants.push((
            "delete a saved account".into(),
            json!({"user_id": "conformance-user-1", "account_type": "card", "account_id": "100000002"}),
            Vec::new(),
        )),
        Operation::SandboxChargeback => {
            variants.push((
                "sandbox chargeback".into(),
                json!({"transaction_id": "100000001"}),
                Vec::new(),
            ));
        }
        Operation::Webhook => {
            let headers = json!([["content-type", "application/json"]]);
            for (label, body) in [
                ("webhook with `{}`", b"{}".to_vec()),
                ("webhook with an empty body", Vec::new()),
                ("webhook with garbage", garbage_bytes()),
            ] {
                variants.push((label.into(), json!({"headers": headers}), body));
            }
        }
    }
    let required_extra: Vec<&str> = manifest
        .extra_fields
        .iter()
        .filter(|field| field.operation == operation && field.required)
        .map(|field| field.name.as_str())
        .collect();
    variants
        .into_iter()
        .filter_map(|(label, mut fields, inbound_body)| {
            fields["operation"] = json!(operation.as_str());
            if operation != Operation::Webhook && !required_extra.is_empty() {
                let extra: serde_json::Map<String, Value> = required_extra
                    .iter()
                    .map(|name| (name.to_string(), json!("conformance")))
                    .collect();
                fields["extra"] = Value::Object(extra);
            }
            // Every variant above is valid for this host's contract; one that stopped being so
            // after a contract change is skipped rather than reported as the plugin's fault.
            let command: Command = serde_json::from_value(fields).ok()?;
            Some(CannedCommand {
                label,
                command,
                inbound_body,
            })
        })
        .collect()
}

/// The canned provider answers, by description. Each run answers every request of the flow with
/// the same one.
pub fn canned_responses() -> Vec<(&'static str, HttpResponse)> {
    vec![
        (
            "HTTP 500 with a text body",
            HttpResponse::new(500, "Internal Server Error")
                .with_header("content-type", "text/plain"),
        ),
        (
            "HTTP 200 with `{}`",
            HttpResponse::new(200, "{}").with_header("content-type", "application/json"),
        ),
        (
            "HTTP 200 with garbage bytes",
            HttpResponse::new(200, garbage_bytes())
                .with_header("content-type", "application/octet-stream"),
        ),
        (
            "HTTP 200 with an empty body",
            HttpResponse::new(200, Vec::new()),
        ),
    ]
}

/// Bytes no parser should accept: invalid UTF-8, a NUL, unbalanced markup and JSON openers.
fn garbage_bytes() -> Vec<u8> {
    let mut bytes = vec![
        0xff, 0xfe, 0x00, b'<', b'{', b'"', 0x9c, 0x80, b'[', b';', b'\n', 0xc3,
    ];
    bytes.extend_from_slice(b"\x1b[0m]]}}>");
    bytes
}

/// One flow of one canned command answered with one canned response.
#[derive(Debug)]
struct FlowRun {
    operation: Operation,
    /// `charge in USD, answered with HTTP 500 with a text body`, or `..., before any request`.
    context: String,
    requests: Vec<HttpRequest>,
    end: FlowEnd,
}

// A check keeps a few hundred of these at most: boxing the outcome would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum FlowEnd {
    Done(Outcome),
    Failed(ProviderError),
    /// A plugin call did not return within [`CALL_TIMEOUT`].
    TimedOut {
        entry_point: &'static str,
    },
    /// A plugin call ended without a result (its thread died).
    Lost {
        entry_point: &'static str,
    },
    TooManySteps,
}

fn run_operation(
    plugin: &Arc<LoadedPlugin>,
    account: &AccountConfig,
    operation: Operation,
) -> Vec<FlowRun> {
    let mut runs = Vec::new();
    for canned in canned_commands(operation, &plugin.manifest) {
        let reference = (operation.moves_money() || operation == Operation::PaymentPage)
            .then(|| CANNED_REFERENCE.to_string());
        let invocation = Invocation {
            command: canned.command.clone(),
            account: account.clone(),
            reference,
            now_unix: CANNED_NOW_UNIX,
        };
        // Encoded as dispatch encodes it, and driven through the entry points dispatch uses.
        let Ok(invocation_json) = EncodedInvocation::from_invocation(&invocation) else {
            continue;
        };
        let invocation_json = Arc::new(invocation_json);
        for (answer, response) in canned_responses() {
            let run = run_flow(
                plugin,
                operation,
                &invocation_json,
                &canned,
                answer,
                &response,
            );
            let asked_nothing = run.requests.is_empty();
            let hung = matches!(run.end, FlowEnd::TimedOut { .. });
            runs.push(run);
            // A hung call keeps its thread: one is enough to know. A flow that sent no request
            // would end the same way whatever the answer.
            if hung {
                return runs;
            }
            if asked_nothing {
                break;
            }
        }
    }
    runs
}

fn run_flow(
    plugin: &Arc<LoadedPlugin>,
    operation: Operation,
    invocation_json: &Arc<EncodedInvocation>,
    canned: &CannedCommand,
    answer: &str,
    response: &HttpResponse,
) -> FlowRun {
    let mut run = drive_flow(
        plugin,
        operation,
        invocation_json,
        &canned.inbound_body,
        response,
    );
    run.context = if run.requests.is_empty() {
        format!("{}, before any request", canned.label)
    } else {
        format!("{}, answered with {answer}", canned.label)
    };
    run
}

fn drive_flow(
    plugin: &Arc<LoadedPlugin>,
    operation: Operation,
    invocation_json: &Arc<EncodedInvocation>,
    inbound_body: &[u8],
    response: &HttpResponse,
) -> FlowRun {
    let driven = flow::drive(
        || {
            let (plugin, invocation, body) = (
                plugin.clone(),
                invocation_json.clone(),
                inbound_body.to_vec(),
            );
            call_with_timeout(move || plugin.start_flow(&invocation, &body))
                .map_err(|failure| (failure, "start"))
        },
        |state, answer| {
            let (plugin, invocation) = (plugin.clone(), invocation_json.clone());
            call_with_timeout(move || plugin.resume_flow(&invocation, &state, &answer))
                .map_err(|failure| (failure, "resume"))
        },
        |_| Some(response.clone()),
    );
    let end = match driven.end {
        flow::FlowEnd::Done(outcome) => FlowEnd::Done(outcome),
        flow::FlowEnd::Failed(error) => FlowEnd::Failed(error),
        // Every request is answered with the canned response: a flow never runs out of answers.
        flow::FlowEnd::Unanswered | flow::FlowEnd::TooManySteps => FlowEnd::TooManySteps,
        flow::FlowEnd::Aborted((failure, entry_point)) => failure.into_end(entry_point),
    };
    FlowRun {
        operation,
        context: String::new(),
        requests: driven.requests,
        end,
    }
}

enum CallFailure {
    TimedOut,
    Lost,
}

impl CallFailure {
    fn into_end(self, entry_point: &'static str) -> FlowEnd {
        match self {
            Self::TimedOut => FlowEnd::TimedOut { entry_point },
            Self::Lost => FlowEnd::Lost { entry_point },
        }
    }
}

/// Runs one plugin call on a thread of its own and waits for it at most [`CALL_TIMEOUT`]. A call
/// that overruns is abandoned: its thread is detached and may never end.
fn call_with_timeout(
    call: impl FnOnce() -> HostStep + Send + 'static,
) -> Result<HostStep, CallFailure> {
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("gatehouse-conformance".into())
        .spawn(move || {
            let _ = sender.send(call());
        });
    if spawned.is_err() {
        return Err(CallFailure::Lost);
    }
    match receiver.recv_timeout(CALL_TIMEOUT) {
        Ok(step) => Ok(step),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(CallFailure::TimedOut),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(CallFailure::Lost),
    }
}

/// Problems found by one check. The same problem found by several runs is reported once, with
/// the first run that showed it and how many did.
struct Findings {
    problems: Vec<(String, String)>,
}

impl Findings {
    /// Distinct problems shown in a report; the rest are counted.
    const SHOWN: usize = 4;

    fn new() -> Self {
        Self {
            problems: Vec::new(),
        }
    }

    fn add(&mut self, problem: String, context: &str) {
        self.problems.push((problem, context.to_string()));
    }

    fn into_check(self, name: &str, passed_detail: String) -> CheckResult {
        if self.problems.is_empty() {
            return CheckResult {
                name: name.to_string(),
                passed: true,
                detail: passed_detail,
            };
        }
        let mut distinct: Vec<(&str, &str, usize)> = Vec::new();
        for (problem, context) in &self.problems {
            match distinct.iter_mut().find(|(known, _, _)| known == problem) {
                Some((_, _, count)) => *count += 1,
                None => distinct.push((problem, context, 1)),
            }
        }
        let mut lines: Vec<String> = distinct
            .iter()
            .take(Self::SHOWN)
            .map(|(problem, context, count)| match count {
                1 => format!("{problem}\n  in: {context}"),
                _ => format!("{problem}\n  in: {context} (and {} more run(s))", count - 1),
            })
            .collect();
        if distinct.len() > Self::SHOWN {
            lines.push(format!(
                "… and {} more problem(s)",
                distinct.len() - Self::SHOWN
            ));
        }
        CheckResult {
            name: name.to_string(),
            passed: false,
            detail: lines.join("\n"),
        }
    }
}

/// Whether a plugin-fault error is the host failing to read what the plugin returned (malformed
/// output) rather than a fault the plugin reported or a panic.
fn is_unreadable_output(error: &ProviderError) -> bool {
    error.kind == ErrorKind::PluginFault
        && (error
            .message
            .starts_with("plugin returned an error the host cannot read")
            || error
                .message
                .starts_with("plugin returned an outcome the host cannot read")
            || error
                .message
                .starts_with("plugin asked for unknown HTTP method"))
}

fn operation_check(operation: Operation, runs: &[&FlowRun]) -> CheckResult {
    let mut findings = Findings::new();
    let (mut done, mut failed, mut requests) = (0, 0, 0);
    for run in runs {
        requests += run.requests.len();
        match &run.end {
            FlowEnd::Done(outcome) => {
                done += 1;
                if let Some(error) = outcome.error.as_ref().filter(|error| error.kind == ErrorKind::PluginFault) {
                    findings.add(format!("the outcome reports a plugin fault: {}", error.message), &run.context);
                }
            }
            FlowEnd::Failed(error) => {
                failed += 1;
                // Unreadable output is a malformed error, reported by the well-formedness check.
                if error.kind == ErrorKind::PluginFault && !is_unreadable_output(error) {
                    let what = if error.message.starts_with("plugin panicked") {
                        "panicked"
                    } else {
                        "reported a plugin fault"
                    };
                    findings.add(format!("{what}: {}", error.message), &run.context);
                }
            }
            FlowEnd::TimedOut { entry_point } => findings.add(
                format!(
                    "`{entry_point}` did not return within {} s: the host would fail the request and abandon a thread",
                    CALL_TIMEOUT.as_secs()
                ),
                &run.context,
            ),
            FlowEnd::Lost { entry_point } => {
                findings.add(format!("`{entry_point}` ended without a result"), &run.context)
            }
            FlowEnd::TooManySteps => findings.add(
                format!("the flow did not finish within {MAX_FLOW_STEPS} steps, the host's limit"),
                &run.context,
            ),
        }
    }
    if runs.is_empty() {
        findings.add(
            "no canned command of this operation could be built".into(),
            "the canned commands",
        );
    }
    findings.into_check(
        &operation_check_name(operation),
        format!(
            "{} run(s) of canned commands and answers: {done} ended with an outcome, {failed} with an error; \
             {requests} request(s) asked for",
            runs.len()
        ),
    )
}

/// The error a run produced, if any: the flow's own, or its outcome's.
fn error_of(run: &FlowRun) -> Option<(&ProviderError, &'static str)> {
    match &run.end {
        FlowEnd::Failed(error) => Some((error, "error")),
        FlowEnd::Done(outcome) => outcome
            .error
            .as_ref()
            .map(|error| (error, "outcome's error")),
        _ => None,
    }
}

fn errors_well_formed_check(runs: &[FlowRun]) -> CheckResult {
    let mut findings = Findings::new();
    let mut errors = 0;
    for run in runs {
        let operation = run.operation;
        if let FlowEnd::Done(outcome) = &run.end
            && matches!(
                outcome.status,
                OutcomeStatus::Failed | OutcomeStatus::Unknown
            )
            && outcome.error.is_none()
        {
            findings.add(
                format!(
                    "a `{operation}` outcome `{}` carries no error saying why",
                    outcome.status.as_str()
                ),
                &run.context,
            );
        }
        let Some((error, what)) = error_of(run) else {
            continue;
        };
        errors += 1;
        if is_unreadable_output(error) {
            findings.add(format!("`{operation}`: {}", error.message), &run.context);
        }
        if error.message.trim().is_empty() {
            findings.add(
                format!(
                    "the `{operation}` {what} (kind {}) has an empty message",
                    error.kind
                ),
                &run.context,
            );
        }
        for (field, text) in [
            ("provider_code", &error.provider_code),
            ("provider_message", &error.provider_message),
        ] {
            let length = text.as_deref().map_or(0, |text| text.chars().count());
            // `truncate` keeps MAX_PROVIDER_TEXT characters and adds an ellipsis.
            if length > MAX_PROVIDER_TEXT + 1 {
                findings.add(
                    format!(
                        "the `{operation}` {what} has a {field} of {length} characters, over the contract's \
                         {MAX_PROVIDER_TEXT}: set it with ProviderError::with_{field}, which bounds it"
                    ),
                    &run.context,
                );
            }
        }
    }
    findings.into_check(
        CHECK_ERRORS_WELL_FORMED,
        format!(
            "{errors} error(s) returned, each readable by the host, with a known kind and a message"
        ),
    )
}

fn no_secret_in_errors_check(runs: &[FlowRun], secrets: &[(String, String)]) -> CheckResult {
    let mut findings = Findings::new();
    let mut errors = 0;
    for run in runs {
        let Some((error, what)) = error_of(run) else {
            continue;
        };
        errors += 1;
        let text = serde_json::to_string(error).unwrap_or_default();
        for (key, value) in secrets {
            if text.contains(value.as_str()) {
                findings.add(
                    format!(
                        "the `{}` {what} contains the value of secret `{key}`",
                        run.operation
                    ),
                    &run.context,
                );
            }
        }
    }
    let keys: Vec<&str> = secrets.iter().map(|(key, _)| key.as_str()).collect();
    findings.into_check(
        CHECK_NO_SECRET_IN_ERRORS,
        if keys.is_empty() {
            format!("the manifest declares no secret; {errors} error(s) returned")
        } else {
            format!(
                "{errors} error(s) searched for the values of {}: none found",
                keys.join(", ")
            )
        },
    )
}

fn same_origin_check(runs: &[FlowRun]) -> CheckResult {
    let mut findings = Findings::new();
    let mut requests = 0;
    for run in runs {
        for request in &run.requests {
            requests += 1;
            if !same_origin_of(&request.url, BASE_URL) {
                findings.add(
                    format!(
                        "`{}` asked for {}, outside the account's base URL {BASE_URL}: the host refuses to send it",
                        run.operation,
                        loggable_url(&request.url)
                    ),
                    &run.context,
                );
            }
        }
    }
    findings.into_check(
        CHECK_SAME_ORIGIN,
        format!("{requests} request(s), all to {BASE_URL}"),
    )
}

fn no_secret_in_urls_check(runs: &[FlowRun], secrets: &[(String, String)]) -> CheckResult {
    let mut findings = Findings::new();
    for run in runs {
        for request in &run.requests {
            for (key, value) in secrets {
                if request.url.contains(value.as_str()) {
                    findings.add(
                        format!(
                            "`{}` puts the value of secret `{key}` in the URL of a request to {}: URLs end up in \
                             proxies' and servers' logs; send it in a header or the body",
                            run.operation,
                            loggable_url(&request.url)
                        ),
                        &run.context,
                    );
                }
            }
        }
    }
    findings.into_check(
        CHECK_NO_SECRET_IN_URLS,
        "no request URL carries a secret value".into(),
    )
}

fn sensitive_headers_check(runs: &[FlowRun], secrets: &[(String, String)]) -> CheckResult {
    let mut findings = Findings::new();
    for run in runs {
        for request in &run.requests {
            for (name, value) in &request.headers {
                let marked = request
                    .sensitive_headers
                    .iter()
                    .any(|sensitive| sensitive.eq_ignore_ascii_case(name));
                for (key, secret) in secrets {
                    if !marked && value.contains(secret.as_str()) {
                        findings.add(
                            format!(
                                "`{}` sends the value of secret `{key}` in header `{name}` without marking it \
                                 sensitive (HttpRequest::sensitive_header), so the host may log it",
                                run.operation
                            ),
                            &run.context,
                        );
                    }
                }
            }
        }
    }
    findings.into_check(
        CHECK_SENSITIVE_HEADERS,
        "every header that carries a secret is marked sensitive".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(operations: Vec<Operation>) -> Manifest {
        Manifest {
            provider: "example".into(),
            display_name: "Example".into(),
            plugin_version: "1.0.0".into(),
            operations,
            config_keys: vec![
                gatehouse_plugin_api::ConfigKey::secret("api_key", "key"),
                gatehouse_plugin_api::ConfigKey::secret("webhook_key", "key"),
                gatehouse_plugin_api::ConfigKey::required("merchant_id", "id"),
                gatehouse_plugin_api::ConfigKey::optional("format", "csv or xml"),
            ],
            extra_fields: vec![gatehouse_plugin_api::ExtraField::required(
                Operation::Report,
                "scope",
                "scope",
            )],
            reports: vec!["payments".into(), "payouts".into()],
            default_base_url: None,
            status_of: Vec::new(),
            max_text_lengths: Default::default(),
            unsigned_callbacks: None,
        }
    }

    #[test]
    fn every_operation_has_canned_commands_of_its_own_kind() {
        let manifest = manifest(Operation::ALL.to_vec());
        for operation in Operation::ALL {
            let commands = canned_commands(operation, &manifest);
            assert!(!commands.is_empty(), "{operation}");
            for canned in &commands {
                assert_eq!(canned.command.operation(), operation, "{}", canned.label);
            }
        }
        let reports: Vec<String> = canned_commands(Operation::Report, &manifest)
            .iter()
            .map(|canned| match &canned.command {
                Command::Report {
                    report,
                    from,
                    extra,
                    ..
                } => format!("{report} {} {}", from.is_some(), extra["scope"]),
                other => panic!("not a report: {other:?}"),
            })
            .collect();
        assert_eq!(
            reports,
            vec![
                "payments true \"conformance\"",
                "payments false \"conformance\"",
                "payouts true \"conformance\"",
                "payouts false \"conformance\""
            ]
        );
    }

    #[test]
    fn the_canned_account_fills_secrets_and_required_settings() {
        let account = canned_account(&manifest(vec![Operation::Balance]));
        assert_eq!(account.base_url, BASE_URL);
        assert_eq!(
            account.secret("api_key").map(Secret::expose),
            Some("conformance-secret-api_key-7f3a")
        );
        assert!(account.secret("webhook_key").is_some());
        assert_eq!(account.setting("merchant_id"), Some(CANNED_SETTING));
        assert_eq!(
            account.setting("format"),
            None,
            "optional settings keep the plugin's default"
        );
    }

    #[test]
    fn canned_responses_cover_server_errors_and_unreadable_bodies() {
        let statuses: Vec<(u16, usize)> = canned_responses()
            .iter()
            .map(|(_, response)| (response.status, response.body.len()))
            .collect();
        assert_eq!(statuses[0].0, 500);
        assert!(
            statuses
                .iter()
                .any(|&(status, length)| status == 200 && length == 0)
        );
        assert!(
            std::str::from_utf8(&canned_responses()[2].1.body).is_err(),
            "garbage is not UTF-8"
        );
    }

    #[test]
    fn findings_are_grouped_and_bounded() {
        let mut findings = Findings::new();
        for (problem, context) in [
            ("a", "1"),
            ("a", "2"),
            ("b", "3"),
            ("c", "4"),
            ("d", "5"),
            ("e", "6"),
            ("f", "7"),
        ] {
            findings.add(problem.to_string(), context);
        }
        let check = findings.into_check("x", String::new());
        assert!(!check.passed);
        assert_eq!(
            check.detail,
            "a\n  in: 1 (and 1 more run(s))\nb\n  in: 3\nc\n  in: 4\nd\n  in: 5\n… and 2 more problem(s)"
        );
    }

    #[test]
    fn a_missing_file_fails_the_contract_check_with_the_loaders_message() {
        let report = check_plugin_file(Path::new("/nonexistent/libnothing.so"));
        assert!(!report.passed());
        let contract = report.check(CHECK_CONTRACT).expect("contract check");
        assert!(!contract.passed);
        assert!(
            contract
                .detail
                .contains("/nonexistent/libnothing.so: cannot read"),
            "{}",
            contract.detail
        );
        assert!(
            report
                .render()
                .contains("result: FAILED (1 of 1 checks failed)"),
            "{}",
            report.render()
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_is_refused() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let file = folder.path().join("libfake.so");
        std::fs::write(&file, b"#!/bin/sh\necho not a library\n").expect("write");
        let report = check_plugin_file(&file);
        let contract = report.check(CHECK_CONTRACT).expect("contract check");
        assert!(!contract.passed);
        assert!(
            contract.detail.contains("not a loadable library"),
            "{}",
            contract.detail
        );
    }
}
