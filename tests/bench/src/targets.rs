//! The three ways a platform can make the same call: directly to the provider with one reqwest
//! client, through the host embedded as a library, and through the host's HTTP API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gatehouse_core::Gateway;
use gatehouse_ledger::SqliteLedger;
use gatehouse_plugin_api::{Command, OutcomeStatus};
use gatehouse_service::Service;
use serde_json::{Value, json};

use crate::host::{ACCOUNT, API_KEY, PROVIDER};
use crate::simulator::AUTH_TOKEN;

/// How the call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// (a) reqwest straight to the simulator; the caller builds the body and reads the answer.
    Direct,
    /// (b) `Gateway::dispatch` in this process.
    Library,
    /// (b') the same with `host.plugin_calls = "inline"`: plugin calls on the dispatching thread
    /// instead of the plugin pool (an operator's opt-in for trusted plugins).
    LibraryInline,
    /// (c) the host's HTTP API on loopback, with a reqwest client.
    HttpApi,
}

impl Path {
    pub const ALL: [Path; 4] = [
        Path::Direct,
        Path::Library,
        Path::LibraryInline,
        Path::HttpApi,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Library => "library",
            Self::LibraryInline => "library-inline",
            Self::HttpApi => "http-api",
        }
    }

    /// Whether the library targets apply (the host embedded in this process).
    pub fn is_library(self) -> bool {
        matches!(self, Self::Library | Self::LibraryInline)
    }
}

/// What is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A PayGateGlobal charge (method 1: `POST /api/v1/pay`), pending once registered.
    Charge,
    /// The balance (`POST /api/v1/check-balance`): a report-like read.
    Balance,
}

impl Call {
    pub const ALL: [Call; 2] = [Call::Charge, Call::Balance];

    pub fn label(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Balance => "balance",
        }
    }
}

/// The amount every benchmark charge asks for: 1500 XOF (integer minor units).
pub const CHARGE_MINOR_UNITS: i64 = 1500;
pub const CHARGE_PHONE: &str = "90123456";

/// The normalized charge command.
pub fn charge_command() -> Command {
    command_from_json(charge_fields_with_operation())
}

pub fn balance_command() -> Command {
    command_from_json(json!({"operation": "balance"}))
}

fn charge_fields() -> Value {
    json!({
        "amount": {"minor_units": CHARGE_MINOR_UNITS, "currency": "XOF"},
        "customer": {"phone": CHARGE_PHONE},
        "payment_method": "FLOOZ",
    })
}

fn charge_fields_with_operation() -> Value {
    let mut fields = charge_fields();
    fields["operation"] = json!("charge");
    fields
}

fn command_from_json(value: Value) -> Command {
    match serde_json::from_value(value) {
        Ok(command) => command,
        Err(error) => panic!("the benchmark's command is not a valid command: {error}"),
    }
}

/// Everything needed to make a call by any path.
pub struct Targets {
    pub gateway: Gateway,
    /// A second embedded gateway over the same plugins folder, with inline plugin calls.
    pub inline_gateway: Gateway,
    pub service: Service,
    /// The library paths: each gateway behind a service whose ledger is in memory, so the path
    /// measures the host's work per command (the door included) without the disk.
    library_service: Service,
    inline_service: Service,
    simulator_base_url: String,
    api_base_url: String,
    /// The platform's own client, for the direct path.
    direct_client: reqwest::Client,
    /// The platform's client to the host's API.
    api_client: reqwest::Client,
    charge: Command,
    balance: Command,
    charge_api_body: Vec<u8>,
    sequence: AtomicU64,
}

impl Targets {
    pub fn new(
        gateway: Gateway,
        inline_gateway: Gateway,
        service: Service,
        simulator_base_url: &str,
        api_base_url: &str,
    ) -> Arc<Self> {
        let in_memory = || -> Arc<dyn gatehouse_ledger::Ledger> {
            match SqliteLedger::open_in_memory() {
                Ok(ledger) => Arc::new(ledger),
                Err(error) => panic!("an in-memory ledger: {error}"),
            }
        };
        Arc::new(Self {
            library_service: Service::new(gateway.clone(), in_memory()),
            inline_service: Service::new(inline_gateway.clone(), in_memory()),
            gateway,
            inline_gateway,
            service,
            simulator_base_url: simulator_base_url.to_string(),
            api_base_url: api_base_url.to_string(),
            direct_client: reqwest::Client::new(),
            api_client: reqwest::Client::new(),
            charge: charge_command(),
            balance: balance_command(),
            charge_api_body: serde_json::to_vec(&charge_fields()).unwrap_or_default(),
            sequence: AtomicU64::new(0),
        })
    }

    fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes one call; `Ok(plugin version)` when the host served it (empty for direct calls).
    pub async fn call(&self, path: Path, call: Call) -> Result<String, String> {
        match path {
            Path::Direct => self.direct(call).await.map(|()| String::new()),
            Path::Library => self.library(&self.library_service, call).await,
            Path::LibraryInline => self.library(&self.inline_service, call).await,
            Path::HttpApi => self.http_api(call).await,
        }
    }

    /// What a platform integrating PayGateGlobal itself would do: build the documented JSON
    /// body, POST it, read and parse the answer. The same work the plugin does for the host.
    async fn direct(&self, call: Call) -> Result<(), String> {
        let (path, body) = match call {
            Call::Charge => (
                "/api/v1/pay",
                json!({
                    "phone_number": CHARGE_PHONE,
                    "amount": CHARGE_MINOR_UNITS,
                    // Unique like the host's `gh_` + 32 hex reference, and of the same length.
                    "identifier": format!("dc_{:032x}", self.next_sequence()),
                    "network": "FLOOZ",
                    "auth_token": AUTH_TOKEN,
                }),
            ),
            Call::Balance => ("/api/v1/check-balance", json!({ "auth_token": AUTH_TOKEN })),
        };
        let response = self
            .direct_client
            .post(format!("{}{path}", self.simulator_base_url))
            .json(&body)
            .send()
            .await
            .map_err(|error| format!("direct: {error}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| format!("direct body: {error}"))?;
        let answer: Value =
            serde_json::from_slice(&bytes).map_err(|error| format!("direct answer: {error}"))?;
        let good = status.is_success()
            && match call {
                Call::Charge => answer["status"] == 0 && answer["tx_reference"].is_string(),
                Call::Balance => answer["flooz"].is_i64(),
            };
        if good {
            Ok(())
        } else {
            Err(format!("direct: HTTP {status}: {answer}"))
        }
    }

    async fn library(&self, service: &Service, call: Call) -> Result<String, String> {
        let command = match call {
            Call::Charge => self.charge.clone(),
            Call::Balance => self.balance.clone(),
        };
        let answer = service
            .execute(PROVIDER, ACCOUNT, command, None)
            .await
            .map_err(|error| format!("library: {error}"))?;
        check_status(call, answer.outcome.status)
            .map_err(|problem| format!("library: {problem}"))?;
        Ok(answer.plugin_version.unwrap_or_default())
    }

    async fn http_api(&self, call: Call) -> Result<String, String> {
        let request = match call {
            Call::Charge => self
                .api_client
                .post(format!(
                    "{}/v1/{PROVIDER}/{ACCOUNT}/charges",
                    self.api_base_url
                ))
                .header("content-type", "application/json")
                .header(
                    "idempotency-key",
                    format!("bench-{:024x}", self.next_sequence()),
                )
                .body(self.charge_api_body.clone()),
            Call::Balance => self.api_client.get(format!(
                "{}/v1/{PROVIDER}/{ACCOUNT}/balance",
                self.api_base_url
            )),
        };
        let response = request
            .bearer_auth(API_KEY)
            .send()
            .await
            .map_err(|error| format!("http-api: {error}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| format!("http-api body: {error}"))?;
        let answer: Value =
            serde_json::from_slice(&bytes).map_err(|error| format!("http-api answer: {error}"))?;
        if !status.is_success() {
            return Err(format!("http-api: HTTP {status}: {answer}"));
        }
        let outcome_status: OutcomeStatus = serde_json::from_value(answer["status"].clone())
            .map_err(|error| format!("http-api status: {error}"))?;
        check_status(call, outcome_status).map_err(|problem| format!("http-api: {problem}"))?;
        Ok(answer["plugin_version"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// An idempotent charge through the service (ledger on): a fresh idempotency key each time.
    pub async fn ledgered_charge(&self) -> Result<(), String> {
        let key = format!("bench-{:024x}", self.next_sequence());
        let answer = self
            .service
            .execute(PROVIDER, ACCOUNT, self.charge.clone(), Some(key))
            .await
            .map_err(|error| format!("service: {error}"))?;
        check_status(Call::Charge, answer.outcome.status)
            .map_err(|problem| format!("service: {problem}"))
    }
}

fn check_status(call: Call, status: OutcomeStatus) -> Result<(), String> {
    let expected = match call {
        Call::Charge => OutcomeStatus::Pending,
        Call::Balance => OutcomeStatus::Succeeded,
    };
    if status == expected {
        Ok(())
    } else {
        Err(format!(
            "{} ended {status:?}, expected {expected:?}",
            call.label()
        ))
    }
}
