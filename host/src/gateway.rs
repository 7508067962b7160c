//! The gateway: the handle a platform embeds. It owns the configuration, the plugin registry, the
//! one HTTP client, the per-account runtimes and the metrics, and drives plugin flows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use gatehouse_plugin_api::ffi::{FfiHttpResponse, HostStep};
use gatehouse_plugin_api::{
    Command, Currency, ErrorKind, HttpRequest, HttpResponse, Invocation, Operation, Outcome,
    ProviderError,
};

use crate::accounts::{AccountRuntime, AccountRuntimes, Pause};
use crate::config::{AccountSection, Config, PluginCalls};
use crate::error::DispatchError;
use crate::loader::LoadedPlugin;
use crate::metrics::Metrics;
use crate::plugin_pool::{CallFailure, PluginPool};
use crate::registry::{Registry, ScanEvent};
use crate::resolve::{ResolvedAccount, resolve_account};
use crate::scrub::Scrubber;
use crate::transport::{TransportFailure, build_client, loggable_url, same_origin, send_once};

/// A flow never takes more steps than this; a plugin that keeps asking is faulty.
pub const MAX_FLOW_STEPS: usize = 16;

/// One command to dispatch, with what travels beside it.
#[derive(Debug, Clone)]
pub struct DispatchRequest {
    pub provider: String,
    pub account: String,
    pub command: Command,
    /// The host-made reference of a money-moving command. The ledger supplies it; when absent a
    /// fresh one is made.
    pub reference: Option<String>,
    /// The raw body of an inbound webhook.
    pub inbound_body: Vec<u8>,
}

impl DispatchRequest {
    pub fn new(provider: &str, account: &str, command: Command) -> Self {
        Self {
            provider: provider.to_string(),
            account: account.to_string(),
            command,
            reference: None,
            inbound_body: Vec::new(),
        }
    }
}

/// What a finished dispatch reports besides its outcome.
#[derive(Debug, Clone)]
pub struct Dispatched {
    pub outcome: Outcome,
    /// The plugin version that served the whole flow.
    pub plugin_version: String,
    pub reference: Option<String>,
    /// Requests sent to the provider (retries included).
    pub provider_requests: u32,
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

struct GatewayInner {
    config: ArcSwap<Config>,
    registry: Registry,
    client: reqwest::Client,
    accounts: AccountRuntimes,
    metrics: Metrics,
    plugin_pool: PluginPool,
    shutting_down: AtomicBool,
    /// Why the newest configuration file was refused, if it was.
    config_error: std::sync::Mutex<Option<String>>,
    /// Accounts resolved against their plugin, per (provider, account): rebuilt only when the
    /// configuration or the plugin changes (see [`Gateway::resolved_account`]).
    resolved: std::sync::Mutex<HashMap<(String, String), CachedAccount>>,
}

/// A resolved account and what it was resolved from. The configuration is held (not just its
/// address) so that a new configuration can never reuse the address of the one cached here.
struct CachedAccount {
    config: Arc<Config>,
    plugin_generation: u64,
    resolved: Arc<ResolvedAccount>,
    resolved_at: Instant,
}

/// How long a resolved account is reused. Secrets come from the environment or from files that
/// an orchestrator may rotate in place, without `plugins.toml` changing: they are read again at
/// least this often.
const RESOLVED_ACCOUNT_TTL: Duration = Duration::from_secs(1);

impl Gateway {
    /// A gateway for `config`. Plugins are not loaded yet: call [`Gateway::reload_plugins`]
    /// (blocking) or [`Gateway::start`].
    pub fn new(config: Config) -> Self {
        let registry = Registry::new(
            config.host.plugins_dir.clone(),
            config.host.max_loaded_libraries,
        );
        Self {
            inner: Arc::new(GatewayInner {
                config: ArcSwap::from_pointee(config),
                registry,
                client: build_client(),
                accounts: AccountRuntimes::default(),
                metrics: Metrics::default(),
                plugin_pool: PluginPool::new(
                    std::thread::available_parallelism()
                        .map_or(2, |cores| cores.get())
                        .clamp(2, 16),
                ),
                shutting_down: AtomicBool::new(false),
                config_error: std::sync::Mutex::new(None),
                resolved: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A gateway for `config` with its plugins folder scanned once.
    pub async fn start(config: Config) -> Self {
        let gateway = Self::new(config);
        let scanner = gateway.clone();
        let _ = tokio::task::spawn_blocking(move || scanner.reload_plugins()).await;
        gateway
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> Arc<Config> {
        self.inner.config.load_full()
    }

    /// Replaces the configuration; requests already running keep the one they started with.
    pub fn set_config(&self, config: Config) {
        self.inner.config.store(Arc::new(config));
    }

    /// Why the newest `plugins.toml` was refused (the previous one stays in force), if it was.
    pub fn config_error(&self) -> Option<String> {
        self.inner
            .config_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn set_config_error(&self, error: Option<String>) {
        *self
            .inner
            .config_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    /// Rescans the plugins folder (blocking: file I/O and `dlopen`).
    pub fn reload_plugins(&self) -> Vec<ScanEvent> {
        let events = self.inner.registry.scan();
        for event in &events {
            match event {
                ScanEvent::Loaded { provider, .. } => {
                    self.inner
                        .metrics
                        .increment("gatehouse_plugin_reloads_total", &[("provider", provider)]);
                }
                ScanEvent::Failed { file, .. } => {
                    let file = file
                        .file_name()
                        .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
                    self.inner
                        .metrics
                        .increment("gatehouse_plugin_load_failures_total", &[("file", &file)]);
                }
                ScanEvent::Retired { .. } => {}
            }
        }
        events
    }

    /// Accounts paused after an authentication failure or a provider's rate-limit answer.
    pub fn paused_accounts(&self) -> Vec<(String, String, Pause)> {
        self.inner.accounts.pauses()
    }

    /// Lifts an account's pause (an operator's decision). Returns whether it was paused.
    pub fn resume_account(&self, provider: &str, account: &str) -> bool {
        self.inner
            .accounts
            .existing(provider, account)
            .is_some_and(|runtime| runtime.resume())
    }

    /// Stops accepting new dispatches.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Dispatches `command` to `provider`'s `account`.
    pub async fn dispatch(
        &self,
        provider: &str,
        account: &str,
        command: Command,
    ) -> Result<Outcome, DispatchError> {
        self.dispatch_request(DispatchRequest::new(provider, account, command))
            .await
            .map(|dispatched| dispatched.outcome)
    }

    /// Checks what can be checked before any I/O: provider, account, operation, extra fields.
    pub fn preflight(
        &self,
        provider: &str,
        account: &str,
        command: &Command,
    ) -> Result<Arc<LoadedPlugin>, DispatchError> {
        let plugin =
            self.inner
                .registry
                .get(provider)
                .ok_or_else(|| DispatchError::UnknownProvider {
                    provider: provider.to_string(),
                })?;
        let operation = command.operation();
        if !plugin.manifest.supports(operation) {
            return Err(DispatchError::NotSupported {
                provider: provider.to_string(),
                operation,
            });
        }
        if self
            .inner
            .config
            .load()
            .account(provider, account)
            .is_none()
        {
            return Err(DispatchError::UnknownAccount {
                provider: provider.to_string(),
                account: account.to_string(),
            });
        }
        if let Some(extra) = command.extra() {
            let known: Vec<&str> = plugin
                .manifest
                .extra_fields
                .iter()
                .filter(|field| field.operation == operation)
                .map(|field| field.name.as_str())
                .collect();
            if let Some(unknown) = extra.keys().find(|key| !known.contains(&key.as_str())) {
                return Err(DispatchError::InvalidCommand {
                    message: format!(
                        "extra.{unknown} is not a field of `{provider}` `{operation}` (known: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                });
            }
            for field in plugin
                .manifest
                .extra_fields
                .iter()
                .filter(|field| field.operation == operation && field.required)
            {
                if !extra.contains_key(&field.name) {
                    return Err(DispatchError::InvalidCommand {
                        message: format!("extra.{} is required: {}", field.name, field.description),
                    });
                }
            }
        }
        if let Command::Report { report, .. } = command
            && !plugin.manifest.reports.iter().any(|known| known == report)
        {
            return Err(DispatchError::InvalidCommand {
                message: format!(
                    "report `{report}` is not offered by `{provider}` (known: {})",
                    plugin.manifest.reports.join(", ")
                ),
            });
        }
        Ok(plugin)
    }

    /// The account's section resolved against its plugin's manifest (secrets read, settings
    /// checked, scrubber built), from the cache when neither the configuration nor the plugin
    /// changed since and it is under a second old (secret files may be rotated in place):
    /// resolving costs more than the rest of the host's bookkeeping per dispatch.
    fn resolved_account(
        &self,
        config: &Arc<Config>,
        plugin: &LoadedPlugin,
        provider: &str,
        account: &str,
        section: &AccountSection,
    ) -> Result<Arc<ResolvedAccount>, DispatchError> {
        let key = (provider.to_string(), account.to_string());
        {
            let cache = self.lock_resolved();
            if let Some(cached) = cache.get(&key).filter(|cached| {
                Arc::ptr_eq(&cached.config, config)
                    && cached.plugin_generation == plugin.generation
                    && cached.resolved_at.elapsed() < RESOLVED_ACCOUNT_TTL
            }) {
                return Ok(cached.resolved.clone());
            }
        }
        let resolved = Arc::new(resolve_account(&plugin.manifest, account, section).map_err(
            |problems| DispatchError::AccountMisconfigured {
                provider: provider.to_string(),
                account: account.to_string(),
                problems,
            },
        )?);
        let mut cache = self.lock_resolved();
        // Entries of an older configuration go with it (a removed account must not linger).
        cache.retain(|_, cached| Arc::ptr_eq(&cached.config, config));
        cache.insert(
            key,
            CachedAccount {
                config: config.clone(),
                plugin_generation: plugin.generation,
                resolved: resolved.clone(),
                resolved_at: Instant::now(),
            },
        );
        Ok(resolved)
    }

    fn lock_resolved(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), CachedAccount>> {
        // The cache holds no invariant a panic could break: recover it.
        self.inner
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks, before anything is recorded or sent, that the account can take a command now:
    /// configured correctly for its plugin, and not paused.
    pub fn check_account(
        &self,
        provider: &str,
        account: &str,
        command: &Command,
    ) -> Result<(), DispatchError> {
        let plugin = self.preflight(provider, account, command)?;
        let config = self.inner.config.load();
        let section =
            config
                .account(provider, account)
                .ok_or_else(|| DispatchError::UnknownAccount {
                    provider: provider.to_string(),
                    account: account.to_string(),
                })?;
        let resolved = self.resolved_account(&config, &plugin, provider, account, section)?;
        let runtime =
            self.inner
                .accounts
                .get(provider, account, &resolved.fingerprint, &section.policy());
        if let Some(pause) = runtime.paused() {
            return Err(DispatchError::AccountPaused {
                provider: provider.to_string(),
                account: account.to_string(),
                reason: pause.reason,
                until_unix: pause.until_unix,
            });
        }
        Ok(())
    }

    /// Dispatches a command and reports how it went.
    pub async fn dispatch_request(
        &self,
        request: DispatchRequest,
    ) -> Result<Dispatched, DispatchError> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(DispatchError::ShuttingDown);
        }
        let operation = request.command.operation();
        let labels = [
            ("provider", request.provider.as_str()),
            ("operation", operation.as_str()),
        ];
        self.inner
            .metrics
            .increment("gatehouse_requests_total", &labels);
        let result = self.dispatch_checked(request.clone(), operation).await;
        let (status, code) = match &result {
            Ok(dispatched) => (dispatched.outcome.status.as_str(), "none"),
            Err(error) => ("error", error.code()),
        };
        self.inner.metrics.increment(
            "gatehouse_outcomes_total",
            &[
                ("provider", &request.provider),
                ("operation", operation.as_str()),
                ("status", status),
                ("error", code),
            ],
        );
        result
    }

    async fn dispatch_checked(
        &self,
        request: DispatchRequest,
        operation: Operation,
    ) -> Result<Dispatched, DispatchError> {
        let plugin = self.preflight(&request.provider, &request.account, &request.command)?;
        let config = self.inner.config.load_full();
        let section = config
            .account(&request.provider, &request.account)
            .ok_or_else(|| DispatchError::UnknownAccount {
                provider: request.provider.clone(),
                account: request.account.clone(),
            })?;
        let resolved = self.resolved_account(
            &config,
            &plugin,
            &request.provider,
            &request.account,
            section,
        )?;
        let account_config = resolved.config.clone();
        let fingerprint = &resolved.fingerprint;
        let policy = section.policy();
        let runtime =
            self.inner
                .accounts
                .get(&request.provider, &request.account, fingerprint, &policy);
        if let Some(pause) = runtime.paused() {
            return Err(DispatchError::AccountPaused {
                provider: request.provider.clone(),
                account: request.account.clone(),
                reason: pause.reason,
                until_unix: pause.until_unix,
            });
        }
        // With credentials not yet accepted by the provider, flows run one at a time (see
        // `AccountRuntime::probe_slot`); the pause is checked again once the slot is ours.
        let probe = if operation == Operation::Webhook {
            None
        } else {
            runtime.probe_slot().await
        };
        if let Some(pause) = runtime.paused() {
            return Err(DispatchError::AccountPaused {
                provider: request.provider.clone(),
                account: request.account.clone(),
                reason: pause.reason,
                until_unix: pause.until_unix,
            });
        }
        let reference = if operation.moves_money() || operation == Operation::PaymentPage {
            Some(request.reference.clone().unwrap_or_else(new_reference))
        } else {
            request.reference.clone()
        };
        let base_url = account_config.base_url.clone();
        let expected_currency = request.command.amount().map(|amount| amount.currency);
        let invocation = Invocation {
            command: request.command,
            account: account_config,
            reference: reference.clone(),
            now_unix: now_unix(),
        };
        let invocation_json: Arc<str> = serde_json::to_string(&invocation)
            .map_err(|error| DispatchError::InvalidCommand {
                message: format!("the command cannot be serialized: {error}"),
            })?
            .into();
        let flow = Flow {
            gateway: self,
            plugin: plugin.clone(),
            runtime: runtime.clone(),
            scrubber: &resolved.scrubber,
            learned: Scrubber::default(),
            base_url: &base_url,
            provider: &request.provider,
            account: &request.account,
            operation,
            invocation_json,
            budget: Duration::from_millis(config.host.plugin_call_budget_ms),
            inline_calls: config.host.plugin_calls == PluginCalls::Inline,
            expected_currency,
            max_response_bytes: config.host.max_response_bytes,
            provider_requests: 0,
        };
        let (result, provider_requests) = flow.run(request.inbound_body).await;
        // Protect the account from the provider's lockout: after the provider refuses the
        // credentials or says "too many attempts", stop sending until a pause has passed.
        let error_kind = match &result {
            Ok(outcome) => outcome.error.as_ref().map(|error| error.kind),
            Err(DispatchError::Provider(error)) => Some(error.kind),
            Err(_) => None,
        };
        match error_kind {
            Some(ErrorKind::Authentication) if operation != Operation::Webhook => {
                runtime.pause_for(
                    Duration::from_secs(policy.auth_failure_pause_secs),
                    "the provider refused the credentials; fix them in plugins.toml (which lifts the pause) or resume the account".into(),
                );
                tracing::warn!(provider = %request.provider, account = %request.account, "account paused after an authentication failure");
            }
            Some(ErrorKind::RateLimited) if operation != Operation::Webhook => {
                runtime.pause_for(
                    Duration::from_secs(policy.auth_failure_pause_secs.min(300)),
                    "the provider answered with a rate-limit or lockout error".into(),
                );
                tracing::warn!(provider = %request.provider, account = %request.account, "account paused after a rate-limit answer");
            }
            _ => {
                // The provider answered without refusing the credentials.
                if provider_requests > 0
                    && !matches!(result, Err(DispatchError::Provider(ref error)) if error.kind == ErrorKind::ProviderUnavailable)
                {
                    runtime.mark_credentials_proven();
                }
            }
        }
        drop(probe);
        result.map(|outcome| Dispatched {
            outcome,
            plugin_version: plugin.manifest.plugin_version.clone(),
            reference,
            provider_requests,
        })
    }
}

/// One command's flow through a plugin.
struct Flow<'a> {
    gateway: &'a Gateway,
    plugin: Arc<LoadedPlugin>,
    runtime: Arc<AccountRuntime>,
    /// The account's secrets.
    scrubber: &'a Scrubber,
    /// The sensitive header values this flow has sent (see `Scrubber::learn_sensitive_headers`);
    /// empty, and free, for plugins that mark none.
    learned: Scrubber,
    base_url: &'a str,
    provider: &'a str,
    account: &'a str,
    operation: Operation,
    invocation_json: Arc<str>,
    budget: Duration,
    /// `host.plugin_calls = "inline"`: plugin calls run on this task's thread.
    inline_calls: bool,
    /// The currency of the amount the command names, to check the outcome's against.
    expected_currency: Option<Currency>,
    max_response_bytes: usize,
    provider_requests: u32,
}

impl Flow<'_> {
    async fn run(mut self, inbound_body: Vec<u8>) -> (Result<Outcome, DispatchError>, u32) {
        let result = match self.drive(inbound_body).await {
            // Once a money-moving request has been sent, no error is a definitive failure: the
            // provider may have acted even if the plugin then failed to read its answer.
            Err(DispatchError::Provider(error))
                if self.operation.moves_money() && self.provider_requests > 0 =>
            {
                Ok(Outcome::unknown(self.scrub(error)))
            }
            other => other,
        };
        (result, self.provider_requests)
    }

    async fn drive(&mut self, inbound_body: Vec<u8>) -> Result<Outcome, DispatchError> {
        let plugin = self.plugin.clone();
        let invocation = self.invocation_json.clone();
        let mut step = self
            .call_plugin(move || plugin.start(&invocation, &inbound_body))
            .await?;
        for _ in 0..MAX_FLOW_STEPS {
            match step {
                HostStep::Done(outcome) => {
                    if let Some(problem) = self.impossible_amount(&outcome) {
                        return self.finish_with_error(ProviderError::plugin_fault(problem));
                    }
                    return Ok(self.scrubber.outcome(self.learned.outcome(outcome)));
                }
                HostStep::Failed(error) => return self.finish_with_error(error),
                HostStep::Send { request, state } => {
                    let response = match self.perform(&request).await {
                        Ok(response) => response,
                        Err(failure) => return self.finish_after_transport_failure(failure),
                    };
                    let plugin = self.plugin.clone();
                    let invocation = self.invocation_json.clone();
                    let response = FfiHttpResponse::from(response);
                    step = self
                        .call_plugin(move || plugin.resume(&invocation, &state, &response))
                        .await?;
                }
            }
        }
        self.finish_with_error(ProviderError::plugin_fault(format!(
            "the plugin did not finish within {MAX_FLOW_STEPS} steps"
        )))
    }

    /// Runs one plugin entry point off the async workers, within the call budget. A plugin that
    /// never returns costs one abandoned thread, not the host: its request fails here.
    async fn call_plugin(
        &self,
        call: impl FnOnce() -> HostStep + Send + 'static,
    ) -> Result<HostStep, DispatchError> {
        let result = if self.inline_calls {
            let started = Instant::now();
            // The plugin's entry points catch its panics; this catches the host side's.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
                Ok(_) if started.elapsed() > self.budget => Err(CallFailure::OverBudget),
                Ok(step) => Ok(step),
                Err(_) => Err(CallFailure::Lost),
            }
        } else {
            self.gateway.inner.plugin_pool.run(self.budget, call).await
        };
        match result {
            Ok(step) => Ok(step),
            Err(CallFailure::Lost) => Err(DispatchError::Provider(ProviderError::plugin_fault(
                "the plugin call ended without a result",
            ))),
            Err(CallFailure::OverBudget) => {
                self.gateway.inner.metrics.increment(
                    "gatehouse_plugin_calls_over_budget_total",
                    &[("provider", self.provider)],
                );
                Err(DispatchError::Provider(ProviderError::plugin_fault(
                    format!(
                        "the plugin did not answer within its {} ms budget",
                        self.budget.as_millis()
                    ),
                )))
            }
        }
    }

    /// An outcome of a money-moving command whose amount cannot be right: negative, or in
    /// another currency than the command's. It is a plugin fault, not data to pass on: a caller
    /// would book it. (Once a request went out, `run` makes that fault an `unknown` outcome.)
    fn impossible_amount(&self, outcome: &Outcome) -> Option<String> {
        if !self.operation.moves_money() {
            return None;
        }
        let claimed = outcome.amount?;
        if claimed.minor_units < 0 {
            return Some(format!(
                "the plugin reported a negative amount ({} {} minor units) for a {}",
                claimed.minor_units, claimed.currency, self.operation
            ));
        }
        self.expected_currency
            .filter(|expected| *expected != claimed.currency)
            .map(|expected| {
                format!(
                    "the plugin reported an amount in {} for a {} in {expected}",
                    claimed.currency, self.operation
                )
            })
    }

    /// Removes the account's secrets and the sensitive header values sent so far.
    fn scrub(&self, error: ProviderError) -> ProviderError {
        self.scrubber.error(self.learned.error(error))
    }

    fn finish_with_error(&self, error: ProviderError) -> Result<Outcome, DispatchError> {
        let error = self.scrub(error);
        if self.operation.moves_money() && error.kind != ErrorKind::PluginFault {
            // The plugin refused before or after sending; it decides `unknown` itself when a
            // request may have acted, so a plain error here is a definitive failure.
            Ok(Outcome::failed(error))
        } else {
            Err(DispatchError::Provider(error))
        }
    }

    fn finish_after_transport_failure(
        &self,
        failure: TransportFailure,
    ) -> Result<Outcome, DispatchError> {
        let kind = match failure {
            TransportFailure::TooLarge { .. } => ErrorKind::MalformedResponse,
            _ => ErrorKind::ProviderUnavailable,
        };
        let error = self.scrub(ProviderError::new(kind, failure.describe()));
        if self.operation.moves_money() {
            if failure.nothing_sent() {
                Ok(Outcome::failed(error))
            } else {
                Ok(Outcome::unknown(error))
            }
        } else {
            Err(DispatchError::Provider(error))
        }
    }

    /// Sends one request the plugin asked for, under the account's policy.
    async fn perform(&mut self, request: &HttpRequest) -> Result<HttpResponse, TransportFailure> {
        self.learned.learn_sensitive_headers(request, self.scrubber);
        if !same_origin(&request.url, self.base_url) {
            return Err(TransportFailure::NotSent(format!(
                "the plugin asked for {}, outside the account's base URL {}",
                loggable_url(&request.url),
                loggable_url(self.base_url)
            )));
        }
        let policy = &self.runtime.policy;
        let timeout = Duration::from_millis(request.timeout_ms.unwrap_or(policy.timeout_ms));
        if let Err(wait) = self.runtime.take_rate_slot(timeout).await {
            return Err(TransportFailure::NotSent(format!(
                "the account's rate limit ({} a minute) has no slot for {} ms",
                policy.rate_limit_per_minute,
                wait.as_millis()
            )));
        }
        let Ok(_permit) = self.runtime.concurrency.acquire().await else {
            return Err(TransportFailure::NotSent("the account is closed".into()));
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A pause set by another flow while this one waited stops it before it sends.
            if let Some(pause) = self.runtime.paused() {
                return Err(TransportFailure::NotSent(format!(
                    "the account is paused: {}",
                    pause.reason
                )));
            }
            let started = Instant::now();
            let result = send_once(
                &self.gateway.inner.client,
                request,
                timeout,
                self.max_response_bytes,
            )
            .await;
            self.provider_requests += 1;
            let elapsed = started.elapsed();
            let status_label = match &result {
                Ok(response) => response.status.to_string(),
                Err(TransportFailure::NotSent(_)) => "not_sent".into(),
                Err(TransportFailure::NoAnswer(_)) => "no_answer".into(),
                Err(TransportFailure::TooLarge { .. }) => "too_large".into(),
            };
            let metrics = &self.gateway.inner.metrics;
            metrics.observe(
                "gatehouse_provider_latency_seconds",
                &[("provider", self.provider)],
                elapsed,
            );
            metrics.increment(
                "gatehouse_provider_requests_total",
                &[("provider", self.provider), ("status", &status_label)],
            );
            tracing::debug!(
                provider = self.provider,
                account = self.account,
                method = request.method.as_str(),
                url = %loggable_url(&request.url),
                status = %status_label,
                elapsed_us = elapsed.as_micros() as u64,
                attempt,
                "provider request"
            );
            let retryable = match &result {
                // Nothing reached the provider: resending cannot do anything twice.
                Err(TransportFailure::NotSent(_)) => true,
                Err(TransportFailure::NoAnswer(_)) => request.retry_safe,
                Ok(response) => request.retry_safe && matches!(response.status, 502..=504),
                Err(TransportFailure::TooLarge { .. }) => false,
            };
            if !retryable || attempt > policy.max_retries {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(50 * (1 << attempt.min(6)))).await;
        }
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// A fresh host-made reference: `gh_` and 32 hex digits of a random UUID.
pub fn new_reference() -> String {
    format!("gh_{}", uuid::Uuid::new_v4().simple())
}
