//! The gateway: the handle a platform embeds (through `gatehouse-service`). It owns the
//! configuration, the plugin registry, the one HTTP client, the per-account runtimes and the
//! metrics; it checks commands once ([`Gateway::prepare`]) and drives their flows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use gatehouse_ledger::{AccountCoordination, Reservation};
use gatehouse_plugin_api::ffi::EncodedInvocation;
use gatehouse_plugin_api::{Command, ErrorKind, Operation, Outcome};

use crate::accounts::{AccountRuntimes, Pause};
use crate::config::{AccountSection, Config, PluginCalls};
use crate::error::DispatchError;
use crate::fleet::{Fleet, FleetProbe};
use crate::flow::Flow;
use crate::loader::LoadedPlugin;
use crate::metrics::Metrics;
use crate::plugin_pool::PluginPool;
use crate::prepared::{DirectCommand, Prepared, RecordedCommand};
use crate::registry::{Registry, ScanEvent};
use crate::resolve::{ResolvedAccount, resolve_account};
use crate::scrub::Scrubber;
use crate::transport::{ClientCache, Egress, build_client};
use crate::versions::{InstallCheck, Versions};

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

/// What [`Gateway::plugin_threads`] reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginThreads {
    /// Threads abandoned since start (returned or not).
    pub abandoned_total: u64,
    /// Threads still stuck in a plugin call, per provider.
    pub stuck: std::collections::BTreeMap<String, u64>,
    /// `host.max_abandoned_plugin_threads`.
    pub max_per_provider: u64,
    /// Providers refused for it (`plugin_unavailable`).
    pub unavailable: Vec<String>,
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

struct GatewayInner {
    config: ArcSwap<Config>,
    registry: Registry,
    client: reqwest::Client,
    /// Clients for accounts that leave through a proxy, one per distinct proxy setting.
    proxy_clients: ClientCache,
    accounts: Arc<AccountRuntimes>,
    /// Set when the ledger is shared by several hosts: pauses, the credentials probe and the
    /// limits' shares then go through it (`fleet.rs`); unset, they live in this process alone.
    fleet: std::sync::OnceLock<Fleet>,
    metrics: Metrics,
    plugin_pool: PluginPool,
    shutting_down: AtomicBool,
    /// Why the newest configuration file was refused, if it was.
    config_error: std::sync::Mutex<Option<String>>,
    /// Accounts resolved against their plugin, per (provider, account): rebuilt only when the
    /// configuration or the plugin changes (see [`Gateway::resolved_account`]).
    resolved: std::sync::Mutex<HashMap<(String, String), CachedAccount>>,
    /// What the API's plugin install checks a library with (see [`InstallCheck`]).
    install_check: std::sync::RwLock<InstallCheck>,
    /// Whether loads are recorded in the versions folder ([`Gateway::inspect`] turns it off).
    manage_versions: AtomicBool,
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
        // `plugins.toml` is often readable by more people than the secrets it could hold.
        for place in config.inline_secrets() {
            tracing::warn!(
                secret = %place,
                "a secret is written inline in the configuration; reference it instead (\"${{ENV_VAR}}\", {{ env = … }} or {{ file = … }})"
            );
        }
        let registry = Registry::new(
            config.host.plugins_dir.clone(),
            config.host.max_loaded_libraries,
        );
        registry.set_signature_policy(config.signatures.policy());
        let metrics = Metrics::new();
        metrics.set_bounds(crate::metrics::LabelBounds::from_config(&config));
        Self {
            inner: Arc::new(GatewayInner {
                config: ArcSwap::from_pointee(config),
                registry,
                client: build_client(),
                proxy_clients: ClientCache::default(),
                accounts: Arc::default(),
                fleet: std::sync::OnceLock::new(),
                metrics,
                plugin_pool: PluginPool::new(
                    std::thread::available_parallelism()
                        .map_or(2, |cores| cores.get())
                        .clamp(2, 16),
                ),
                shutting_down: AtomicBool::new(false),
                config_error: std::sync::Mutex::new(None),
                resolved: std::sync::Mutex::new(HashMap::new()),
                install_check: std::sync::RwLock::new(Arc::new(crate::versions::loader_check)),
                manage_versions: AtomicBool::new(true),
            }),
        }
    }

    /// A gateway for `config` with its plugins folder scanned once.
    ///
    /// Before that scan, every provider installed through the versions folder gets its active
    /// version back into its slot if the slot holds something else ([`Versions::restore`]):
    /// a restart serves what was active.
    pub async fn start(config: Config) -> Self {
        let gateway = Self::new(config);
        let scanner = gateway.clone();
        let _ = tokio::task::spawn_blocking(move || {
            scanner.versions().restore();
            scanner.reload_plugins()
        })
        .await;
        gateway
    }

    /// A gateway for `config` with its plugins folder scanned once as it is: nothing in the
    /// folder is changed (no active version put back, no file recorded), for a listing of what
    /// is there (`gatehouse plugins` reading the disk).
    pub async fn inspect(config: Config) -> Self {
        let gateway = Self::new(config);
        gateway
            .inner
            .manage_versions
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let scanner = gateway.clone();
        let _ = tokio::task::spawn_blocking(move || scanner.reload_plugins()).await;
        gateway
    }

    /// The versions folder of this gateway's plugins folder, with the configured bound.
    pub fn versions(&self) -> Versions {
        Versions::new(
            self.inner.registry.plugins_dir(),
            self.inner.config.load().plugins.keep_versions,
        )
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Sets the gauges the gateway knows at scrape time: libraries mapped, providers serving,
    /// abandoned plugin threads, paused accounts.
    pub fn refresh_metric_gauges(&self) {
        let metrics = &self.inner.metrics;
        let count = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        metrics.set_gauge(
            "gatehouse_plugin_libraries_loaded",
            &[],
            count(self.inner.registry.libraries_loaded()),
        );
        metrics.set_gauge(
            "gatehouse_plugins_active",
            &[],
            count(self.inner.registry.active().len()),
        );
        metrics.set_gauge(
            "gatehouse_plugin_threads_abandoned",
            &[],
            i64::try_from(self.inner.plugin_pool.abandoned_threads()).unwrap_or(i64::MAX),
        );
        metrics.set_gauge(
            "gatehouse_accounts_paused",
            &[],
            count(self.inner.accounts.pauses().len()),
        );
        metrics.set_gauge(
            "gatehouse_fleet_live_hosts",
            &[],
            i64::from(self.inner.accounts.live_hosts()),
        );
    }

    pub fn config(&self) -> Arc<Config> {
        self.inner.config.load_full()
    }

    /// Replaces the configuration; requests already running keep the one they started with.
    pub fn set_config(&self, config: Config) {
        self.inner
            .registry
            .set_signature_policy(config.signatures.policy());
        self.inner
            .metrics
            .set_bounds(crate::metrics::LabelBounds::from_config(&config));
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
                    self.adopt(provider);
                    self.inner
                        .metrics
                        .increment("gatehouse_plugin_loads_total", &[("result", "loaded")]);
                }
                // Not by file name: names in the folder are not a bounded set.
                ScanEvent::Failed { .. } => {
                    self.inner
                        .metrics
                        .increment("gatehouse_plugin_loads_total", &[("result", "refused")]);
                }
                ScanEvent::Retired { .. } => {
                    self.inner
                        .metrics
                        .increment("gatehouse_plugin_loads_total", &[("result", "retired")]);
                }
            }
        }
        events
    }

    /// The check `POST /v1/plugins/{provider}/install` runs on a library before storing it.
    pub fn install_check(&self) -> InstallCheck {
        self.inner
            .install_check
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces that check (`gatehouse serve` sets the conformance check).
    pub fn set_install_check(&self, check: InstallCheck) {
        *self
            .inner
            .install_check
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = check;
    }

    /// A version loaded into a slot the versions folder manages, but not recorded there (a file
    /// copied in by hand), is stored and recorded active, so a restart serves it too.
    fn adopt(&self, provider: &str) {
        if !self
            .inner
            .manage_versions
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let versions = self.versions();
        if !versions.root().is_dir() {
            return;
        }
        let Some(plugin) = self.inner.registry.get(provider) else {
            return;
        };
        match versions.adopt(
            provider,
            &plugin.manifest.plugin_version,
            &plugin.file,
            &plugin.sha256,
            plugin.signed_by.clone(),
        ) {
            Ok(Some(activation)) => {
                tracing::info!(%provider, entry = %activation.entry, "a plugin file put in place by hand was recorded as the active version");
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%provider, %error, "the loaded version could not be recorded in the versions folder")
            }
        }
    }

    /// The plugin threads abandoned to calls over budget: since start, and still stuck per
    /// provider. A provider at `host.max_abandoned_plugin_threads` stuck threads is refused.
    pub fn plugin_threads(&self) -> PluginThreads {
        let stuck = self.inner.plugin_pool.stuck_threads();
        let max_per_provider = self.inner.config.load().host.max_abandoned_plugin_threads;
        PluginThreads {
            abandoned_total: self.inner.plugin_pool.abandoned_threads(),
            unavailable: stuck
                .iter()
                .filter(|(_, count)| **count >= max_per_provider)
                .map(|(provider, _)| provider.clone())
                .collect(),
            stuck,
            max_per_provider,
        }
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

    /// Lifts an account's pause on this host and, on a shared ledger, on every host (they see
    /// it within [`crate::fleet::REFRESH_EVERY`]). Returns whether it was paused here or there.
    pub async fn resume_account_everywhere(
        &self,
        provider: &str,
        account: &str,
    ) -> Result<bool, DispatchError> {
        // The database first: a refresh that read the pause before it was lifted there could
        // otherwise put it back here (until the next refresh).
        let there = match self.inner.fleet.get() {
            Some(fleet) => fleet.lift_pause(provider, account).await?,
            None => false,
        };
        let here = self.resume_account(provider, account);
        Ok(here || there)
    }

    /// Shares the accounts' protection and limits with the other hosts of `coordination` (a
    /// shared ledger): reads the fleet's state once before returning, then every
    /// [`crate::fleet::REFRESH_EVERY`] on a task of its own. Called once, before serving; a
    /// second call is ignored.
    pub async fn coordinate_accounts(&self, coordination: Arc<dyn AccountCoordination>) {
        let fleet = Fleet::new(coordination);
        if self.inner.fleet.set(fleet.clone()).is_err() {
            return;
        }
        if let Err(error) = fleet.refresh(&self.inner.accounts).await {
            tracing::warn!(%error, "the fleet's account state was not read at start; retried");
        }
        tokio::spawn(crate::fleet::keep_refreshed(
            fleet,
            Arc::downgrade(&self.inner.accounts),
        ));
    }

    /// Hosts sharing the accounts' rate limits and concurrency (1 without a shared ledger).
    pub fn live_hosts(&self) -> u32 {
        self.inner.accounts.live_hosts()
    }

    /// Stops accepting new dispatches.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Checks `command` for `provider`'s `account` once, before any I/O: a plugin is loaded for
    /// the provider, its manifest lists the operation (and every `extra` field, and the report),
    /// the account is configured and satisfies the manifest, an amount is positive, and the
    /// account is not paused. The [`Prepared`] command holds what dispatch needs, so nothing is
    /// checked twice or against another configuration.
    pub fn prepare(
        &self,
        provider: &str,
        account: &str,
        command: Command,
    ) -> Result<Prepared, DispatchError> {
        let operation = command.operation();
        self.check(provider, account, command)
            .inspect_err(|refusal| {
                let code = refusal.code().as_str();
                self.count_outcome(provider, account, operation, "error", Some(code));
            })
    }

    fn check(
        &self,
        provider: &str,
        account: &str,
        command: Command,
    ) -> Result<Prepared, DispatchError> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(DispatchError::ShuttingDown);
        }
        let plugin =
            self.inner
                .registry
                .get(provider)
                .ok_or_else(|| DispatchError::UnknownProvider {
                    provider: provider.to_string(),
                })?;
        let config = self.inner.config.load_full();
        let stuck = self.inner.plugin_pool.stuck_threads_of(provider);
        let max = config.host.max_abandoned_plugin_threads;
        if stuck >= max {
            return Err(DispatchError::PluginUnavailable {
                provider: provider.to_string(),
                stuck,
                max,
            });
        }
        let operation = command.operation();
        if !plugin.manifest.supports(operation) {
            return Err(DispatchError::NotSupported {
                provider: provider.to_string(),
                operation,
            });
        }
        let Some(section) = config.account(provider, account) else {
            return Err(DispatchError::UnknownAccount {
                provider: provider.to_string(),
                account: account.to_string(),
            });
        };
        check_command_fields(&plugin, provider, &command)?;
        check_amount_limit(provider, account, section, &command)?;
        let resolved = self.resolved_account(&config, &plugin, provider, account, section)?;
        let runtime =
            self.inner
                .accounts
                .get(provider, account, &resolved.fingerprint, &section.policy());
        if let Some(pause) = runtime.paused() {
            return Err(paused(provider, account, pause));
        }
        Ok(Prepared {
            provider: provider.to_string(),
            account: account.to_string(),
            command,
            plugin,
            config,
            resolved,
            runtime,
            inbound_body: Vec::new(),
        })
    }

    /// Dispatches a prepared command that needs no ledger entry (reads, webhooks).
    pub async fn dispatch(&self, command: DirectCommand) -> Result<Dispatched, DispatchError> {
        self.run(command.0, None).await
    }

    /// Dispatches a command the ledger recorded: `reservation` proves its entry is durable in
    /// state `sending`, and its id is the host-made reference the provider sees.
    pub async fn dispatch_recorded(
        &self,
        command: RecordedCommand,
        reservation: Reservation,
    ) -> Result<Dispatched, DispatchError> {
        if !command.matches(&reservation) {
            return Err(DispatchError::ReservationMismatch {
                reservation: reservation.id().to_string(),
            });
        }
        self.run(command.prepared, Some(reservation.into_id()))
            .await
    }

    /// Counts a command's end: its outcome status (or `error` when it ended in an error), and,
    /// for errors and failed or unknown outcomes, the error code (`code` is `None` otherwise).
    fn count_outcome(
        &self,
        provider: &str,
        account: &str,
        operation: Operation,
        status: &str,
        code: Option<&str>,
    ) {
        let operation = operation.as_str();
        let metrics = &self.inner.metrics;
        metrics.increment(
            "gatehouse_requests_total",
            &[
                ("provider", provider),
                ("account", account),
                ("operation", operation),
            ],
        );
        metrics.increment(
            "gatehouse_outcomes_total",
            &[
                ("provider", provider),
                ("account", account),
                ("operation", operation),
                ("status", status),
            ],
        );
        if let Some(code) = code {
            metrics.increment(
                "gatehouse_errors_total",
                &[
                    ("provider", provider),
                    ("account", account),
                    ("operation", operation),
                    ("code", code),
                ],
            );
        }
    }

    async fn run(
        &self,
        prepared: Prepared,
        reference: Option<String>,
    ) -> Result<Dispatched, DispatchError> {
        let operation = prepared.operation();
        let (provider, account) = (prepared.provider.clone(), prepared.account.clone());
        let result = self.run_flow(prepared, reference).await;
        let (status, code) = match &result {
            Ok(dispatched) => (
                dispatched.outcome.status.as_str(),
                dispatched
                    .outcome
                    .error
                    .as_ref()
                    .map(|error| error.kind.code()),
            ),
            Err(error) => ("error", Some(error.code().as_str())),
        };
        self.count_outcome(&provider, &account, operation, status, code);
        result
    }

    async fn run_flow(
        &self,
        prepared: Prepared,
        reference: Option<String>,
    ) -> Result<Dispatched, DispatchError> {
        let Prepared {
            provider,
            account,
            command,
            plugin,
            config,
            resolved,
            runtime,
            inbound_body,
        } = prepared;
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(DispatchError::ShuttingDown);
        }
        let operation = command.operation();
        // With credentials not yet accepted by the provider, flows run one at a time (see
        // `AccountRuntime::probe_slot`); the pause is checked again once the slot is ours, since
        // the flow before may have paused the account.
        let probe = if operation == Operation::Webhook {
            None
        } else {
            runtime.probe_slot().await
        };
        // On a shared ledger the probe is the fleet's too: this host's one probing flow waits
        // for it, and reads the pause another host may have set before it sends.
        let fleet = self.inner.fleet.get();
        let fleet_probe: Option<FleetProbe> = match (&probe, fleet) {
            (Some(_), Some(fleet)) => fleet.admit(&runtime, &provider, &account).await?,
            _ => None,
        };
        if let Some(pause) = runtime.paused() {
            return Err(paused(&provider, &account, pause));
        }
        let expected_currency = command.amount().map(|amount| amount.currency);
        // The account's part was encoded when the account was resolved; only the command is
        // encoded per dispatch.
        let invocation = EncodedInvocation::new(
            &command,
            resolved.config_json.clone(),
            reference.clone(),
            now_unix(),
        )
        .map_err(|error| DispatchError::InvalidCommand {
            message: format!("the command cannot be serialized: {error}"),
        })?;
        let flow = Flow {
            pool: &self.inner.plugin_pool,
            client: resolved.client.as_ref().unwrap_or(&self.inner.client),
            metrics: &self.inner.metrics,
            plugin: plugin.clone(),
            runtime: runtime.clone(),
            scrubber: &resolved.scrubber,
            learned: Scrubber::default(),
            base_url: &resolved.config.base_url,
            parsed_base_url: resolved.base_url.as_ref(),
            provider: &provider,
            account: &account,
            operation,
            invocation: Arc::new(invocation),
            budget: Duration::from_millis(config.host.plugin_call_budget_ms),
            max_stuck_threads: config.host.max_abandoned_plugin_threads,
            inline_calls: config.host.plugin_calls == PluginCalls::Inline,
            expected_currency,
            max_response_bytes: config.host.max_response_bytes,
            provider_requests: 0,
            host_refusal: None,
        };
        // The flow's lines (plugin steps, provider requests) carry the command's names, inside
        // the caller's span (an API request's id).
        let span = tracing::info_span!("flow", provider = %provider, account = %account, operation = %operation);
        let (result, provider_requests) =
            tracing::Instrument::instrument(flow.run(inbound_body), span).await;
        // Protect the account from the provider's lockout: after the provider refuses the
        // credentials or says "too many attempts", stop sending until a pause has passed.
        let error_kind = match &result {
            Ok(outcome) => outcome.error.as_ref().map(|error| error.kind),
            Err(DispatchError::Provider(error)) => Some(error.kind),
            Err(_) => None,
        };
        let policy = &runtime.policy;
        let (pause, proven) = match error_kind {
            Some(ErrorKind::Authentication) if operation != Operation::Webhook => {
                tracing::warn!(%provider, %account, "account paused after an authentication failure");
                (
                    Some((
                        "the provider refused the credentials; fix them in plugins.toml (which lifts the pause) or resume the account".to_string(),
                        Duration::from_secs(policy.auth_failure_pause_secs),
                    )),
                    false,
                )
            }
            Some(ErrorKind::RateLimited) if operation != Operation::Webhook => {
                tracing::warn!(%provider, %account, "account paused after a rate-limit answer");
                (
                    Some((
                        "the provider answered with a rate-limit or lockout error".to_string(),
                        Duration::from_secs(policy.auth_failure_pause_secs.min(300)),
                    )),
                    false,
                )
            }
            // The provider answered without refusing the credentials.
            _ => (
                None,
                provider_requests > 0
                    && !matches!(result, Err(DispatchError::Provider(ref error)) if error.kind == ErrorKind::ProviderUnavailable),
            ),
        };
        // The fleet hears of a pause or a proof before this host's next flow may go (the probe
        // is released only after): a failure to tell it is logged, and the local pause holds.
        let told = match (fleet_probe, fleet, &pause) {
            (Some(fleet_probe), _, _) => fleet_probe.finish(pause.clone(), proven).await,
            (None, Some(fleet), Some((reason, duration))) => {
                fleet
                    .report_pause(&runtime, &provider, &account, reason.clone(), *duration)
                    .await
            }
            _ => Ok(()),
        };
        if let Err(error) = told {
            tracing::error!(%provider, %account, %error, "the fleet was not told of this account's pause or proof");
        }
        if let Some((reason, duration)) = pause {
            runtime.pause_for(duration, reason);
        } else if proven {
            runtime.mark_credentials_proven();
        }
        drop(probe);
        result.map(|outcome| Dispatched {
            outcome,
            plugin_version: plugin.manifest.plugin_version.clone(),
            reference,
            provider_requests,
        })
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
        let misconfigured = |problems| DispatchError::AccountMisconfigured {
            provider: provider.to_string(),
            account: account.to_string(),
            problems,
        };
        let mut resolved =
            resolve_account(&plugin.manifest, account, section).map_err(misconfigured)?;
        if let Some(egress) = Egress::resolve(config.egress_for(section))
            .map_err(|problem| misconfigured(vec![problem]))?
        {
            // A proxy that echoes its request headers must not put its password in an error.
            if let Some(password) = egress.password() {
                resolved.scrubber.extend([password.expose().to_string()]);
            }
            resolved.client = Some(
                self.inner
                    .proxy_clients
                    .client_for(&egress)
                    .map_err(|problem| misconfigured(vec![problem]))?,
            );
        }
        let resolved = Arc::new(resolved);
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
}

fn paused(provider: &str, account: &str, pause: Pause) -> DispatchError {
    DispatchError::AccountPaused {
        provider: provider.to_string(),
        account: account.to_string(),
        reason: pause.reason,
        until_unix: pause.until_unix,
    }
}

/// The checks of a command's own fields against the plugin's manifest and the rules that hold for
/// every provider: `extra` fields known (and the required ones given), the report offered, an
/// amount positive.
fn check_command_fields(
    plugin: &LoadedPlugin,
    provider: &str,
    command: &Command,
) -> Result<(), DispatchError> {
    let operation = command.operation();
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
    check_text_lengths(plugin, provider, command)?;
    if let Some(amount) = command.amount()
        && amount.minor_units <= 0
    {
        return Err(DispatchError::InvalidCommand {
            message: format!(
                "amount.minor_units must be positive, got {}",
                amount.minor_units
            ),
        });
    }
    Ok(())
}

/// The manifest's `max_text_lengths`: each named field of the command (a path in its JSON:
/// `description`, `customer.name`, `extra.note`) at most that many characters.
fn check_text_lengths(
    plugin: &LoadedPlugin,
    provider: &str,
    command: &Command,
) -> Result<(), DispatchError> {
    let limits = &plugin.manifest.max_text_lengths;
    if limits.is_empty() {
        return Ok(());
    }
    let Ok(json) = serde_json::to_value(command) else {
        return Ok(());
    };
    for (field, max) in limits {
        let value = field
            .split('.')
            .try_fold(&json, |value, part| value.get(part))
            .and_then(serde_json::Value::as_str);
        if let Some(text) = value {
            let length = text.chars().count();
            if length > *max {
                return Err(DispatchError::InvalidCommand {
                    message: format!(
                        "{field} is {length} characters; `{provider}` accepts at most {max}"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The account's `max_amount_minor_units`, checked before the ledger and before any I/O: a
/// mistyped or hostile amount must not reach a provider that may accept it.
fn check_amount_limit(
    provider: &str,
    account: &str,
    section: &AccountSection,
    command: &Command,
) -> Result<(), DispatchError> {
    match (command.amount(), section.max_amount_minor_units) {
        (Some(amount), Some(max)) if amount.minor_units > max => {
            Err(DispatchError::InvalidCommand {
                message: format!(
                    "amount.minor_units {} is over the limit of account `{provider}/{account}` (max_amount_minor_units = {max})",
                    amount.minor_units
                ),
            })
        }
        _ => Ok(()),
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// A fresh host-made reference: `gh_` and the 32 hex digits of a version 7 UUID (RFC 9562): a
/// millisecond timestamp, then a counter and random bits, ordered by creation within the process.
///
/// Time-ordered on purpose: the reference is the ledger's entry id, and an index on random ids
/// (the entry's own, and the history's by entry) dirties a different leaf page for every
/// charge, where ordered ids append to the leaf the previous charge already wrote, which both
/// SQLite's and PostgreSQL's write-ahead logs then carry once per commit instead of once per
/// charge. What it reveals, the millisecond the entry was made, is the entry's `created_at`.
pub fn new_reference() -> String {
    format!("gh_{}", uuid::Uuid::now_v7().simple())
}
