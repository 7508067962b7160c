//! `plugins.toml`: which plugins directory, which accounts, which policies.
//!
//! Typed and strict: an unknown key, a missing required key, or a secret reference that cannot be
//! resolved is an error that names the file, the line and the key. Secrets are referenced
//! (`"${ENV_VAR}"`, `{ env = "VAR" }` or `{ file = "path" }`), checked at load time, read again
//! while in use at most a second apart (so a secret file rotated in place takes effect without a
//! reload), and held as [`Secret`]s so they never reach a log.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use gatehouse_plugin_api::Secret;

pub use crate::access::{Grant, Scope};
use serde::Deserialize;
use toml::Spanned;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The whole configuration, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub host: HostSettings,
    #[serde(default)]
    pub api: ApiSettings,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSection>,
    #[serde(default)]
    pub webhooks: WebhookSettings,
    #[serde(default)]
    pub signatures: SignatureSettings,
    /// The HTTP listener's limits and TLS (read when `serve` starts).
    #[serde(default)]
    pub server: ServerSettings,
    /// The outbound proxy every account uses unless its own `egress` table says otherwise.
    #[serde(default)]
    pub egress: EgressSettings,
    /// `[plugins]`: the versions kept side by side, and installs through the API.
    #[serde(default)]
    pub plugins: PluginsSettings,
    /// A shared PostgreSQL ledger instead of the SQLite file `host.ledger`.
    #[serde(default)]
    pub ledger: LedgerSettings,
    /// Where the file was read from; relative paths in it are relative to its folder.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSettings {
    /// The folder watched for plugin libraries.
    pub plugins_dir: PathBuf,
    /// The address `gatehouse serve` listens on.
    pub listen: String,
    /// The ledger's SQLite file (unless `[ledger] url` names a PostgreSQL database; the webhook
    /// forwarder's position is kept beside this path either way).
    pub ledger: PathBuf,
    /// How long one plugin call (one build or parse step) may take before its request fails.
    pub plugin_call_budget_ms: u64,
    /// Where plugin calls run: `pool` (default) or `inline` (see [`PluginCalls`]).
    pub plugin_calls: PluginCalls,
    /// Quiet time after the last change in the plugins folder before it is rescanned. Kept short:
    /// a half-written file is kept out by the hidden-temporary-name convention (and refused by the
    /// object-file check if copied in place), not by this wait.
    pub reload_debounce_ms: u64,
    /// The plugins folder is scanned this often even without a change event (0: never): the
    /// safety net for an event the kernel dropped or a file unreadable when its event came.
    pub plugins_rescan_secs: u64,
    /// Libraries are never unloaded (abi_stable's rule), so every reload maps another copy.
    /// Past this many loaded libraries, further reloads are refused until a restart.
    pub max_loaded_libraries: usize,
    /// Largest provider answer read, in bytes; a larger one is a malformed response.
    pub max_response_bytes: usize,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace_ms: u64,
    /// A plugin call over its budget abandons its thread (it may never return). Past this many
    /// abandoned threads for one provider, that provider's plugin is refused new requests
    /// (`plugin_unavailable`) until a new version of it is loaded or the host restarts, so a hung
    /// plugin cannot grow the thread count without end.
    pub max_abandoned_plugin_threads: u64,
    /// `gatehouse serve` reconciles unresolved entries this often (seconds, 1 to 86400). A pass
    /// takes at most 500 entries and asks about them at reconciliation's pace (a quarter of each
    /// account's rate limit), so a shorter period settles entries sooner, not faster.
    pub reconcile_interval_secs: u64,
}

/// `[ledger]`: a PostgreSQL ledger that several hosts can share. Without `url`, the ledger is the
/// embedded SQLite file `host.ledger`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// `postgres://user@host:port/database`. Never the password: that is `password`.
    pub url: Option<String>,
    /// The database user's password, as a secret reference like every secret in this file.
    pub password: Option<SecretValue>,
    /// Most connections this host keeps open to the database.
    pub max_connections: u32,
    /// How long connecting, or waiting for a free pooled connection, may take.
    pub connect_timeout_ms: u64,
    /// How long this host's lease in the database lasts without a heartbeat (renewed every
    /// third of it). Once it lapsed, the other hosts treat this one as gone: they reconcile the
    /// entries it was sending. Shorter: a dead host's work is taken over sooner; too short, a
    /// host stalled that long (a pause of the machine) is taken for dead while it still sends.
    pub lease_ms: u64,
    /// PEM CA certificates the database's certificate must chain to (relative to this file's
    /// folder). Set: every connection is TLS, the server's certificate and the URL's host name
    /// checked; unset: plain TCP or a Unix socket, for a database on this machine or a
    /// private network.
    pub ca_file: Option<PathBuf>,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            url: None,
            password: None,
            max_connections: 8,
            connect_timeout_ms: 5_000,
            lease_ms: 15_000,
            ca_file: None,
        }
    }
}

impl LedgerSettings {
    fn check(
        &self,
        text: &str,
        invalid: &dyn Fn(usize, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            // The URL itself is never echoed: written by mistake, it may hold a password.
            let parsed = url::Url::parse(url)
                .map_err(|error| invalid(0, format!("ledger.url is not a URL: {error}")))?;
            if !matches!(parsed.scheme(), "postgres" | "postgresql") {
                return Err(invalid(
                    0,
                    "ledger.url must be a postgres:// URL (the SQLite ledger is host.ledger)"
                        .into(),
                ));
            }
            if parsed.password().is_some() {
                return Err(invalid(
                    0,
                    "ledger.url must not hold the password: use ledger.password with a secret reference".into(),
                ));
            }
        } else if self.password.is_some() || self.ca_file.is_some() {
            return Err(invalid(
                0,
                "ledger.password and ledger.ca_file need ledger.url (a PostgreSQL database)".into(),
            ));
        }
        if self.max_connections == 0 || self.connect_timeout_ms == 0 {
            return Err(invalid(
                0,
                "ledger: max_connections and connect_timeout_ms must be positive".into(),
            ));
        }
        if !(1_000..=3_600_000).contains(&self.lease_ms) {
            return Err(invalid(
                0,
                format!(
                    "ledger.lease_ms is {}: it must be between 1000 (1 s) and 3600000 (1 h)",
                    self.lease_ms
                ),
            ));
        }
        if let Some(password) = &self.password {
            password.resolve().map_err(|message| {
                invalid(password.line(text), format!("ledger.password: {message}"))
            })?;
        }
        Ok(())
    }
}

/// `[signatures]`: which keys may sign plugin libraries, and whether a signature is required.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignatureSettings {
    /// Refuse every plugin library without a valid `<file>.minisig` by a trusted key.
    pub require_signatures: bool,
    /// minisign public keys (the base64 line of a `.pub` file, `RW…`).
    pub trusted_keys: Vec<String>,
}

impl SignatureSettings {
    /// The policy the registry applies (the keys were checked when the file was read).
    pub fn policy(&self) -> crate::signature::SignaturePolicy {
        crate::signature::SignaturePolicy::new(self.require_signatures, &self.trusted_keys)
            // Unreachable for a parsed configuration; fail closed all the same.
            .unwrap_or_else(|_| crate::signature::SignaturePolicy::refuse_all())
    }
}

/// `[plugins]`: how many versions of each provider's plugin the versions folder keeps
/// (`gatehouse plugin install`, `history`, `rollback`), and the largest library the API's
/// install route accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsSettings {
    /// Versions kept per provider (at least 2, the active one and one to roll back to); the
    /// oldest that is not active is dropped past it.
    pub keep_versions: usize,
    /// Largest library body `POST /v1/plugins/{provider}/install` reads, in bytes.
    pub max_install_bytes: usize,
}

impl Default for PluginsSettings {
    fn default() -> Self {
        Self {
            keep_versions: crate::versions::DEFAULT_KEEP_VERSIONS,
            max_install_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Where the host runs plugin code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginCalls {
    /// On the host's plugin threads, awaited within the budget: a plugin that never returns
    /// fails its own request and costs one abandoned thread. Each call crosses threads twice
    /// (tens of microseconds when the threads are asleep).
    #[default]
    Pool,
    /// On the async worker that dispatches: no thread hop, for plugins the operator trusts to
    /// return. A call over budget still fails its request, but only once it returns; a plugin
    /// that never returns would hold a worker of the runtime for good.
    Inline,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            plugins_dir: PathBuf::from("plugins"),
            listen: "127.0.0.1:8080".into(),
            ledger: PathBuf::from("data/gatehouse.sqlite"),
            plugin_call_budget_ms: 2_000,
            plugin_calls: PluginCalls::Pool,
            reload_debounce_ms: 50,
            plugins_rescan_secs: 10,
            max_loaded_libraries: 256,
            max_response_bytes: 4 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
            max_abandoned_plugin_threads: 16,
            reconcile_interval_secs: 60,
        }
    }
}

/// `[server]`: how the HTTP listener protects itself. Every limit has a default that is safe on
/// a public address; they take effect when `serve` starts (a reload does not rebind the
/// listener), except the TLS files, which are re-read whenever they change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// A connection must deliver a request's headers within this long after it is accepted
    /// (TLS handshake included) or after its previous answer, or it is closed: the guard against
    /// clients that trickle headers to hold connections open.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout_ms: u64,
    /// A request (waiting for a slot, reading its body, running) that takes longer is answered
    /// `request_timeout`; a money-moving command it started still runs to its end and is recorded.
    pub request_timeout_ms: u64,
    /// Connections open at once. At the limit, a new connection displaces the one that has gone
    /// longest without a request in progress; when every connection has one, new connections
    /// wait in the kernel's queue. Capped at the process's descriptor limit less a reserve.
    pub max_connections: usize,
    /// Requests served at once; more wait (within `request_timeout_ms`) for a slot.
    pub max_concurrent_requests: usize,
    /// The listening socket's accept queue: connections whose handshake the kernel completed
    /// and the host has not accepted yet (the kernel caps it at `net.core.somaxconn`). When it
    /// is full the kernel drops handshakes, and those clients retry only after 1, 3, 7, 15 s:
    /// a burst of connections larger than the queue turns into seconds of delay.
    pub listen_backlog: u32,
    /// Serve HTTPS from these files instead of plain HTTP.
    pub tls: Option<TlsSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 60_000,
            max_connections: 1_024,
            max_concurrent_requests: 256,
            listen_backlog: 4_096,
            tls: None,
        }
    }
}

/// `[server.tls]`: PEM files, relative to the configuration file's folder. Both are read again
/// when either changes (a rotated certificate is served to new connections without a restart).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[egress]` or an account's `egress` table: the outbound HTTP(S) proxy requests leave
/// through, so that a provider that accepts only listed addresses sees a known one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// `http://host:port` (or `https://`); no credentials in it: use the two keys below.
    #[serde(default)]
    pub proxy: Option<String>,
    #[serde(default)]
    pub proxy_username: Option<String>,
    /// A secret reference, like every secret in this file.
    #[serde(default)]
    pub proxy_password: Option<SecretValue>,
    /// Hosts reached directly, as in `NO_PROXY`: `example.com` (and its subdomains),
    /// `.example.com`, an IP address, a CIDR block (`10.0.0.0/8`), or `*`.
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Bearer keys accepted on every non-webhook route with every scope on every account (the
    /// first form; named `keys[<n>]` in the ledger). Prefer `[[api.key]]`.
    #[serde(default)]
    pub keys: Vec<SecretValue>,
    /// Named keys, each with its scopes and the providers and accounts it reaches
    /// (`[[api.key]]`).
    #[serde(default, rename = "key")]
    pub named_keys: Vec<ApiKeySection>,
    /// Bearer keys that open `GET /metrics` and nothing else: a scraper needs no key that can
    /// move money. (`keys` open `/metrics` too.)
    #[serde(default)]
    pub metrics_keys: Vec<SecretValue>,
}

/// One `[[api.key]]`: a named bearer key and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySection {
    /// Recorded with every ledger entry and operator action the key makes (never the key).
    pub name: Spanned<String>,
    pub secret: SecretValue,
    /// `read`, `move_money`, `operate`.
    pub scopes: Spanned<Vec<Scope>>,
    /// Only these providers (every account of each), when given.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Only these accounts, written `provider/account`, when given.
    #[serde(default)]
    pub accounts: Vec<String>,
}

impl ApiKeySection {
    /// What the key grants (its lists were checked when the file was read).
    pub fn grant(&self) -> Grant {
        Grant {
            scopes: self.scopes.get_ref().iter().copied().collect(),
            providers: self.providers.iter().cloned().collect(),
            accounts: self
                .accounts
                .iter()
                .filter_map(|pair| pair.split_once('/'))
                .map(|(provider, account)| (provider.to_string(), account.to_string()))
                .collect(),
        }
    }
}

/// An API key resolved for checking a request: its name, its secret, what it grants.
pub struct ApiKey {
    pub name: String,
    pub secret: Secret,
    pub grant: Grant,
}

impl ApiSettings {
    /// Every API key whose secret resolves now, plain ones (`keys[<n>]`, every scope) first.
    pub fn api_keys(&self) -> Vec<ApiKey> {
        let plain = self.keys.iter().enumerate().filter_map(|(index, key)| {
            Some(ApiKey {
                name: format!("keys[{index}]"),
                secret: key.resolve().ok()?.value,
                grant: Grant::full(),
            })
        });
        let named = self.named_keys.iter().filter_map(|key| {
            Some(ApiKey {
                name: key.name.get_ref().clone(),
                secret: key.secret.resolve().ok()?.value,
                grant: key.grant(),
            })
        });
        plain.chain(named).collect()
    }

    /// Whether any API key is configured (plain or named).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty() || !self.named_keys.is_empty()
    }

    /// Checks names, scopes, lists and secrets; `invalid` makes the error for a line.
    fn check(
        &self,
        text: &str,
        invalid: &dyn Fn(usize, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        // Every secret, with where it is written, to refuse empty and shared ones.
        let mut secrets: Vec<(String, usize, Secret)> = Vec::new();
        for (index, key) in self.keys.iter().enumerate() {
            let resolved = key
                .resolve()
                .map_err(|message| invalid(key.line(text), format!("api.keys: {message}")))?;
            secrets.push((format!("api.keys[{index}]"), key.line(text), resolved.value));
        }
        let mut names = std::collections::BTreeSet::new();
        for key in &self.named_keys {
            let name = key.name.get_ref();
            let line = line_of(text, key.name.span().start);
            if !is_identifier(name) {
                return Err(invalid(
                    line,
                    format!(
                        "api.key name `{name}`: use letters, digits, `-` and `_` (it is recorded in the ledger)"
                    ),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(
                    line,
                    format!("api.key name `{name}` is used twice: names must be unique"),
                ));
            }
            if key.scopes.get_ref().is_empty() {
                return Err(invalid(
                    line_of(text, key.scopes.span().start),
                    format!(
                        "api.key `{name}`: scopes is empty; give at least one of read, move_money, operate"
                    ),
                ));
            }
            for provider in &key.providers {
                if !is_identifier(provider) {
                    return Err(invalid(
                        line,
                        format!("api.key `{name}`: `{provider}` is not a provider name"),
                    ));
                }
            }
            for pair in &key.accounts {
                let accounts_line = line;
                let Some((provider, account)) =
                    pair.split_once('/').filter(|(provider, account)| {
                        is_identifier(provider) && is_identifier(account)
                    })
                else {
                    return Err(invalid(
                        accounts_line,
                        format!(
                            "api.key `{name}`: accounts entry `{pair}` is not `provider/account`"
                        ),
                    ));
                };
                if !key.providers.is_empty() && !key.providers.iter().any(|p| p == provider) {
                    return Err(invalid(
                        accounts_line,
                        format!(
                            "api.key `{name}`: account `{provider}/{account}` is outside its providers ({}), so it would grant nothing",
                            key.providers.join(", ")
                        ),
                    ));
                }
            }
            let resolved = key.secret.resolve().map_err(|message| {
                invalid(
                    key.secret.line(text),
                    format!("api.key `{name}`.secret: {message}"),
                )
            })?;
            secrets.push((
                format!("api.key `{name}`"),
                key.secret.line(text),
                resolved.value,
            ));
        }
        for (index, (place, line, secret)) in secrets.iter().enumerate() {
            if secret.expose().is_empty() {
                return Err(invalid(*line, format!("{place}: the secret is empty")));
            }
            // Two keys with one secret: which grant would a request get? Refused, never guessed.
            if let Some((other, _, _)) = secrets[..index]
                .iter()
                .find(|(_, _, earlier)| earlier.expose() == secret.expose())
            {
                return Err(invalid(
                    *line,
                    format!("{place} has the same secret as {other}: every key needs its own"),
                ));
            }
        }
        for key in &self.metrics_keys {
            key.resolve().map_err(|message| {
                invalid(key.line(text), format!("api.metrics_keys: {message}"))
            })?;
        }
        Ok(())
    }
}

/// What the host does with verified webhook events besides storing them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where each stored event is POSTed (at least once, in order, retried with backoff).
    #[serde(default)]
    pub forward_url: Option<String>,
    /// Sent as `Authorization: Bearer <key>` with every forwarded event.
    #[serde(default)]
    pub forward_key: Option<SecretValue>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountSection>,
}

/// One provider account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    /// The provider's base URL; defaults to the plugin's `default_base_url`.
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_rate_limit_per_minute")]
    pub rate_limit_per_minute: u32,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default = "default_auth_failure_pause_secs")]
    pub auth_failure_pause_secs: u64,
    /// The largest amount one command of this account may name, in minor units (none: no limit
    /// beyond the type's).
    #[serde(default)]
    pub max_amount_minor_units: Option<i64>,
    /// Requests a minute the host may send to confirm unsigned callbacks (PayGateGlobal's), a
    /// budget of their own: forged callbacks cannot spend the commands' rate limit.
    #[serde(default = "default_webhook_confirmations_per_minute")]
    pub webhook_confirmations_per_minute: u32,
    /// Callback confirmations in flight at once for this account.
    #[serde(default = "default_webhook_confirmations_max_concurrency")]
    pub webhook_confirmations_max_concurrency: usize,
    /// Non-secret settings, by the names the plugin's manifest declares.
    #[serde(default)]
    pub settings: BTreeMap<String, Spanned<String>>,
    /// Secret settings, by the names the plugin's manifest declares as secret.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretValue>,
    /// This account's outbound proxy, in place of the top-level `[egress]` (an empty table:
    /// direct).
    #[serde(default)]
    pub egress: Option<EgressSettings>,
}

fn default_timeout_ms() -> u64 {
    AccountPolicy::default().timeout_ms
}
fn default_rate_limit_per_minute() -> u32 {
    AccountPolicy::default().rate_limit_per_minute
}
fn default_max_concurrency() -> usize {
    AccountPolicy::default().max_concurrency
}
fn default_max_retries() -> u32 {
    AccountPolicy::default().max_retries
}
fn default_auth_failure_pause_secs() -> u64 {
    AccountPolicy::default().auth_failure_pause_secs
}
fn default_webhook_confirmations_per_minute() -> u32 {
    AccountPolicy::default().webhook_confirmations_per_minute
}
fn default_webhook_confirmations_max_concurrency() -> usize {
    AccountPolicy::default().webhook_confirmations_max_concurrency
}

impl AccountSection {
    /// The account's traffic policy (the policy keys are written directly in the account table).
    pub fn policy(&self) -> AccountPolicy {
        AccountPolicy {
            timeout_ms: self.timeout_ms,
            rate_limit_per_minute: self.rate_limit_per_minute,
            max_concurrency: self.max_concurrency,
            max_retries: self.max_retries,
            auth_failure_pause_secs: self.auth_failure_pause_secs,
            max_amount_minor_units: self.max_amount_minor_units,
            webhook_confirmations_per_minute: self.webhook_confirmations_per_minute,
            webhook_confirmations_max_concurrency: self.webhook_confirmations_max_concurrency,
        }
    }
}

/// How the host treats one account's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPolicy {
    /// Per-request timeout unless the plugin's step asks for another.
    pub timeout_ms: u64,
    /// Requests per minute the host lets through to the provider for this account.
    pub rate_limit_per_minute: u32,
    /// Requests in flight at once to the provider for this account.
    pub max_concurrency: usize,
    /// How many times a request the plugin marked retry-safe is resent after a transport failure.
    pub max_retries: u32,
    /// After the provider refuses the credentials, no request is sent for this long (or until an
    /// operator resumes the account, or the credentials change): providers lock accounts after
    /// repeated failures, and walking into that lockout is worse than pausing.
    pub auth_failure_pause_secs: u64,
    /// The largest amount one command may name, in minor units; refused before any I/O.
    pub max_amount_minor_units: Option<i64>,
    /// Requests a minute spent confirming unsigned callbacks, apart from the commands' budget.
    pub webhook_confirmations_per_minute: u32,
    /// Callback confirmations in flight at once.
    pub webhook_confirmations_max_concurrency: usize,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        Self {
            timeout_ms: 30_000,
            rate_limit_per_minute: 600,
            max_concurrency: 64,
            max_retries: 2,
            auth_failure_pause_secs: 900,
            max_amount_minor_units: None,
            webhook_confirmations_per_minute: 60,
            webhook_confirmations_max_concurrency: 2,
        }
    }
}

/// A reference to a secret, or (discouraged) the secret itself, with where it was written.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(Spanned<SecretRef>);

/// How a secret is written in `plugins.toml`.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    /// `"${ENV_VAR}"`, or an inline value (allowed for sandbox configurations; warned about).
    Text(String),
    Env {
        env: String,
    },
    File {
        file: String,
    },
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.get_ref() {
            SecretRef::Text(text) if env_reference(text).is_some() => write!(f, "{text}"),
            SecretRef::Text(_) => f.write_str("***"),
            SecretRef::Env { env } => write!(f, "{{ env = {env:?} }}"),
            SecretRef::File { file } => write!(f, "{{ file = {file:?} }}"),
        }
    }
}

fn env_reference(text: &str) -> Option<&str> {
    text.strip_prefix("${")?.strip_suffix('}')
}

/// A secret resolved from its reference, with where it was written (for error messages).
pub struct ResolvedSecret {
    pub value: Secret,
    pub inline: bool,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` is used for messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|error| {
            let line = error.span().map_or(0, |span| line_of(text, span.start));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                message: error.message().to_string(),
            }
        })?;
        config.source = Some(path.to_path_buf());
        let base = path.parent().unwrap_or(Path::new("."));
        if config.host.plugins_dir.is_relative() {
            config.host.plugins_dir = base.join(&config.host.plugins_dir);
        }
        if config.host.ledger.is_relative() {
            config.host.ledger = base.join(&config.host.ledger);
        }
        if let Some(ca_file) = &mut config.ledger.ca_file
            && ca_file.is_relative()
        {
            *ca_file = base.join(&*ca_file);
        }
        if let Some(tls) = &mut config.server.tls {
            if tls.cert_file.is_relative() {
                tls.cert_file = base.join(&tls.cert_file);
            }
            if tls.key_file.is_relative() {
                tls.key_file = base.join(&tls.key_file);
            }
        }
        config.check(text, path)?;
        Ok(config)
    }

    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |line: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        if let Err((index, problem)) = crate::signature::SignaturePolicy::new(
            self.signatures.require_signatures,
            &self.signatures.trusted_keys,
        ) {
            return Err(invalid(
                0,
                format!("signatures.trusted_keys[{index}]: {problem}"),
            ));
        }
        if self.plugins.keep_versions < 2 {
            return Err(invalid(
                0,
                format!(
                    "plugins.keep_versions is {}: keep at least 2 (the active version and one to roll back to)",
                    self.plugins.keep_versions
                ),
            ));
        }
        if self.signatures.require_signatures && self.signatures.trusted_keys.is_empty() {
            return Err(invalid(
                0,
                "signatures.require_signatures is true but signatures.trusted_keys is empty: no plugin could load".into(),
            ));
        }
        for (provider, section) in &self.providers {
            for (account, settings) in &section.accounts {
                let name = format!("providers.{provider}.accounts.{account}");
                if !is_identifier(account) {
                    return Err(invalid(
                        0,
                        format!("account name `{account}` must be letters, digits, `-` or `_`"),
                    ));
                }
                if let Some(base_url) = &settings.base_url {
                    let parsed = url::Url::parse(base_url).map_err(|error| {
                        invalid(
                            0,
                            format!("{name}.base_url `{base_url}` is not a URL: {error}"),
                        )
                    })?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(invalid(0, format!("{name}.base_url must be http or https")));
                    }
                }
                let policy = settings.policy();
                if policy.timeout_ms == 0
                    || policy.rate_limit_per_minute == 0
                    || policy.max_concurrency == 0
                    || policy.webhook_confirmations_per_minute == 0
                    || policy.webhook_confirmations_max_concurrency == 0
                    || policy.max_amount_minor_units.is_some_and(|max| max <= 0)
                {
                    return Err(invalid(
                        0,
                        format!(
                            "{name}: timeout_ms, rate_limit_per_minute, max_concurrency, webhook_confirmations_per_minute, webhook_confirmations_max_concurrency and max_amount_minor_units must be positive"
                        ),
                    ));
                }
                for (key, value) in &settings.secrets {
                    value.resolve().map_err(|message| {
                        invalid(value.line(text), format!("{name}.secrets.{key}: {message}"))
                    })?;
                }
                if let Some(egress) = &settings.egress {
                    egress.check(&format!("{name}.egress"), text, &invalid)?;
                }
            }
        }
        self.egress.check("egress", text, &invalid)?;
        self.ledger.check(text, &invalid)?;
        if !(1..=86_400).contains(&self.host.reconcile_interval_secs) {
            return Err(invalid(
                0,
                format!(
                    "host.reconcile_interval_secs is {}: it must be between 1 and 86400 (a day)",
                    self.host.reconcile_interval_secs
                ),
            ));
        }
        let server = &self.server;
        if server.header_read_timeout_ms == 0
            || server.idle_timeout_ms == 0
            || server.request_timeout_ms == 0
            || server.max_connections == 0
            || server.max_concurrent_requests == 0
            || server.listen_backlog == 0
        {
            return Err(invalid(
                0,
                "server: every timeout and limit must be positive".into(),
            ));
        }
        if let Some(url) = &self.webhooks.forward_url {
            let parsed = url::Url::parse(url).map_err(|error| {
                invalid(
                    0,
                    format!("webhooks.forward_url `{url}` is not a URL: {error}"),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    0,
                    "webhooks.forward_url must be http or https".into(),
                ));
            }
        }
        if let Some(key) = &self.webhooks.forward_key {
            key.resolve().map_err(|message| {
                invalid(key.line(text), format!("webhooks.forward_key: {message}"))
            })?;
        }
        self.api.check(text, &invalid)?;
        Ok(())
    }

    /// Where secrets are written inline rather than referenced (`"${ENV}"`, `{ env }`,
    /// `{ file }`): `providers.<provider>.accounts.<account>.secrets.<key>`, `api.keys[<n>]`,
    /// `webhooks.forward_key`. Names only, never values; the host warns about each at start.
    pub fn inline_secrets(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (provider, account, settings) in self.accounts() {
            for (key, value) in &settings.secrets {
                if value.is_inline() {
                    found.push(format!(
                        "providers.{provider}.accounts.{account}.secrets.{key}"
                    ));
                }
            }
        }
        for (index, key) in self.api.keys.iter().enumerate() {
            if key.is_inline() {
                found.push(format!("api.keys[{index}]"));
            }
        }
        for key in &self.api.named_keys {
            if key.secret.is_inline() {
                found.push(format!("api.key.{}.secret", key.name.get_ref()));
            }
        }
        if self
            .webhooks
            .forward_key
            .as_ref()
            .is_some_and(SecretValue::is_inline)
        {
            found.push("webhooks.forward_key".into());
        }
        if self
            .ledger
            .password
            .as_ref()
            .is_some_and(SecretValue::is_inline)
        {
            found.push("ledger.password".into());
        }
        found
    }

    /// The account section for `provider`/`account`, if configured.
    pub fn account(&self, provider: &str, account: &str) -> Option<&AccountSection> {
        self.providers.get(provider)?.accounts.get(account)
    }

    /// Every configured `(provider, account)`.
    pub fn accounts(&self) -> impl Iterator<Item = (&str, &str, &AccountSection)> {
        self.providers.iter().flat_map(|(provider, section)| {
            section
                .accounts
                .iter()
                .map(move |(account, settings)| (provider.as_str(), account.as_str(), settings))
        })
    }

    /// A configuration with no accounts, for embedding and tests.
    pub fn empty(plugins_dir: PathBuf) -> Self {
        Self {
            host: HostSettings {
                plugins_dir,
                ..HostSettings::default()
            },
            api: ApiSettings::default(),
            providers: BTreeMap::new(),
            webhooks: WebhookSettings::default(),
            signatures: SignatureSettings::default(),
            server: ServerSettings::default(),
            egress: EgressSettings::default(),
            plugins: PluginsSettings::default(),
            ledger: LedgerSettings::default(),
            source: None,
        }
    }
}

/// Builds a configuration in code, for platforms that embed the host. It writes the same TOML a
/// file would hold and parses it, so a built configuration is checked exactly like a file.
pub struct ConfigBuilder {
    plugins_dir: PathBuf,
    ledger: Option<PathBuf>,
    text: String,
}

impl ConfigBuilder {
    /// The ledger's SQLite file (default: `ledger.sqlite` in the working folder).
    pub fn ledger(mut self, path: impl Into<PathBuf>) -> Self {
        self.ledger = Some(path.into());
        self
    }

    /// A bearer key for the HTTP API (an `"${ENV_VAR}"` reference or the key itself).
    pub fn api_key(mut self, key: &str) -> Self {
        self.text
            .push_str(&format!("[api]\nkeys = [{}]\n\n", toml_string(key)));
        self
    }

    /// An account of `provider` at `base_url`, with its settings and secrets.
    pub fn account(
        mut self,
        provider: &str,
        account: &str,
        base_url: &str,
        settings: &[(&str, &str)],
        secrets: &[(&str, &str)],
    ) -> Self {
        let table = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(key, value)| format!("{} = {}", toml_string(key), toml_string(value)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.text.push_str(&format!(
            "[providers.{}.accounts.{}]\nbase_url = {}\nsettings = {{ {} }}\nsecrets = {{ {} }}\n\n",
            toml_string(provider),
            toml_string(account),
            toml_string(base_url),
            table(settings),
            table(secrets)
        ));
        self
    }

    pub fn build(self) -> Result<Config, ConfigError> {
        let text = format!(
            "[host]\nplugins_dir = {}\n\n{}",
            toml_string(&self.plugins_dir.to_string_lossy()),
            self.text
        );
        let mut config = Config::parse(&text, Path::new("<built in code>"))?;
        config.host.plugins_dir = self.plugins_dir;
        if let Some(ledger) = self.ledger {
            config.host.ledger = ledger;
        }
        config.source = None;
        Ok(config)
    }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

impl Config {
    /// Starts a configuration in code; see [`ConfigBuilder`].
    pub fn builder(plugins_dir: impl Into<PathBuf>) -> ConfigBuilder {
        ConfigBuilder {
            plugins_dir: plugins_dir.into(),
            ledger: None,
            text: String::new(),
        }
    }
}

impl EgressSettings {
    fn check(
        &self,
        name: &str,
        text: &str,
        invalid: &dyn Fn(usize, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if let Some(proxy) = &self.proxy {
            // The URL itself is never echoed: written by mistake, it may hold a password.
            let parsed = url::Url::parse(proxy)
                .map_err(|error| invalid(0, format!("{name}.proxy is not a URL: {error}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(invalid(
                    0,
                    format!("{name}.proxy must be an http:// or https:// URL with a host"),
                ));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(invalid(
                    0,
                    format!(
                        "{name}.proxy must not hold credentials: use proxy_username and a proxy_password secret reference"
                    ),
                ));
            }
        } else if self.proxy_username.is_some() || self.proxy_password.is_some() {
            return Err(invalid(
                0,
                format!("{name}: proxy credentials are set but no proxy is"),
            ));
        }
        if let Some(password) = &self.proxy_password {
            if self.proxy_username.is_none() {
                return Err(invalid(
                    password.line(text),
                    format!("{name}.proxy_password needs proxy_username"),
                ));
            }
            password.resolve().map_err(|message| {
                invalid(
                    password.line(text),
                    format!("{name}.proxy_password: {message}"),
                )
            })?;
        }
        Ok(())
    }
}

impl Config {
    /// A short, stable name for the configuration file this host runs (SHA-256 of its canonical
    /// path, 16 hex digits), published in `GET /v1/plugins` so the CLI can tell whether the server
    /// answering on `host.listen` runs the same configuration as the file it was given. The path
    /// itself is not published.
    pub fn fingerprint(&self) -> Option<String> {
        use sha2::{Digest, Sha256};
        let source = self.source.as_ref()?;
        let canonical = std::fs::canonicalize(source).unwrap_or_else(|_| source.clone());
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        Some(hex::encode(&digest[..8]))
    }
}

impl Config {
    /// The outbound proxy settings for an account: its own `egress` table, or the host's.
    pub fn egress_for<'a>(&'a self, section: &'a AccountSection) -> &'a EgressSettings {
        section.egress.as_ref().unwrap_or(&self.egress)
    }
}

impl SecretValue {
    /// Resolves the reference. The error says what is missing, never the value.
    pub fn resolve(&self) -> Result<ResolvedSecret, String> {
        match self.0.get_ref() {
            SecretRef::Text(text) => match env_reference(text) {
                Some(variable) => from_env(variable),
                None => Ok(ResolvedSecret {
                    value: Secret::new(text.clone()),
                    inline: true,
                }),
            },
            SecretRef::Env { env } => from_env(env),
            SecretRef::File { file } => std::fs::read_to_string(file)
                .map(|contents| ResolvedSecret {
                    value: Secret::new(contents.trim_end_matches(['\n', '\r']).to_string()),
                    inline: false,
                })
                .map_err(|error| format!("cannot read secret file `{file}`: {error}")),
        }
    }

    /// Whether the secret itself is written here (rather than a reference to it).
    pub fn is_inline(&self) -> bool {
        matches!(self.0.get_ref(), SecretRef::Text(text) if env_reference(text).is_none())
    }

    fn line(&self, text: &str) -> usize {
        line_of(text, self.0.span().start)
    }
}

fn from_env(variable: &str) -> Result<ResolvedSecret, String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(ResolvedSecret {
            value: Secret::new(value),
            inline: false,
        }),
        _ => Err(format!("environment variable `{variable}` is not set")),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count() + 1)
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/gatehouse/plugins.toml"))
    }

    #[test]
    fn reads_accounts_policies_and_secret_references() {
        // SAFETY: tests in this module use a variable name no other test touches.
        unsafe { std::env::set_var("GATEHOUSE_TEST_TOKEN_A", "tok-123") };
        let config = parse(
            r#"
[host]
plugins_dir = "plugins"

[providers.paygateglobal.accounts.main]
base_url = "http://127.0.0.1:9000"
timeout_ms = 5000
secrets = { auth_token = "${GATEHOUSE_TEST_TOKEN_A}" }
"#,
        )
        .expect("valid");
        assert_eq!(config.host.plugins_dir, Path::new("/etc/gatehouse/plugins"));
        let account = config.account("paygateglobal", "main").expect("account");
        assert_eq!(account.timeout_ms, 5000);
        assert_eq!(account.max_retries, 2);
        let secret = account.secrets["auth_token"].resolve().expect("resolves");
        assert_eq!(secret.value.expose(), "tok-123");
        assert!(!secret.inline);
        assert_eq!(
            format!("{:?}", account.secrets["auth_token"]),
            "${GATEHOUSE_TEST_TOKEN_A}"
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let error =
            parse("[host]\nplugins_dir = \"p\"\nplugin_dir = \"typo\"\n").expect_err("unknown key");
        let text = error.to_string();
        assert!(text.starts_with("/etc/gatehouse/plugins.toml:3:"), "{text}");
        assert!(text.contains("plugin_dir"), "{text}");

        let error = parse(
            "[providers.x.accounts.a]\nsecrets = { key = \"${GATEHOUSE_TEST_UNSET_VARIABLE}\" }\n",
        )
        .expect_err("unset variable");
        let text = error.to_string();
        assert!(text.contains(":2:"), "{text}");
        assert!(
            text.contains("providers.x.accounts.a.secrets.key"),
            "{text}"
        );
        assert!(text.contains("GATEHOUSE_TEST_UNSET_VARIABLE"), "{text}");

        let error =
            parse("[providers.x.accounts.a]\nbase_url = \"ftp://h\"\n").expect_err("scheme");
        assert!(error.to_string().contains("http or https"));

        let error = parse("[providers.x.accounts.a]\ntimeout_ms = \"soon\"\n").expect_err("type");
        assert!(error.to_string().contains(":2:"), "{error}");
    }

    #[test]
    fn inline_secrets_never_print() {
        let config =
            parse("[providers.x.accounts.a]\nsecrets = { key = \"hunter2\" }\n").expect("valid");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn inline_secrets_are_named_and_references_are_not() {
        // SAFETY: tests in this module use a variable name no other test touches.
        unsafe { std::env::set_var("GATEHOUSE_TEST_TOKEN_B", "tok-456") };
        let config = parse(
            "[api]\nkeys = [\"${GATEHOUSE_TEST_TOKEN_B}\", \"literal-api-key\"]\n\n\
             [webhooks]\nforward_url = \"http://127.0.0.1:1\"\nforward_key = \"literal-forward\"\n\n\
             [providers.x.accounts.a]\nsecrets = { token = \"hunter2\", other = { env = \"GATEHOUSE_TEST_TOKEN_B\" } }\n",
        )
        .expect("valid");
        let found = config.inline_secrets();
        assert_eq!(
            found,
            [
                "providers.x.accounts.a.secrets.token",
                "api.keys[1]",
                "webhooks.forward_key"
            ]
        );
        assert!(!found.join(" ").contains("hunter2"));
    }

    #[test]
    fn account_limits_read_and_must_be_positive() {
        let config = parse(
            "[providers.x.accounts.a]\nmax_amount_minor_units = 1000000\nwebhook_confirmations_per_minute = 10\n",
        )
        .expect("valid");
        let policy = config.account("x", "a").expect("account").policy();
        assert_eq!(policy.max_amount_minor_units, Some(1_000_000));
        assert_eq!(policy.webhook_confirmations_per_minute, 10);
        assert_eq!(policy.webhook_confirmations_max_concurrency, 2);
        let error = parse("[providers.x.accounts.a]\nmax_amount_minor_units = 0\n")
            .expect_err("zero limit");
        assert!(
            error.to_string().contains("max_amount_minor_units"),
            "{error}"
        );
    }

    #[test]
    fn server_limits_default_safely_and_must_be_positive() {
        let config = parse("").expect("valid");
        assert_eq!(config.server.header_read_timeout_ms, 10_000);
        assert_eq!(config.server.max_connections, 1_024);
        assert_eq!(config.server.listen_backlog, 4_096);
        assert!(config.server.tls.is_none());
        let config = parse(
            "[server]\nmax_concurrent_requests = 8\n[server.tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"/abs/key.pem\"\n",
        )
        .expect("valid");
        assert_eq!(config.server.max_concurrent_requests, 8);
        let tls = config.server.tls.expect("tls");
        assert_eq!(tls.cert_file, Path::new("/etc/gatehouse/tls/cert.pem"));
        assert_eq!(tls.key_file, Path::new("/abs/key.pem"));
        let error = parse("[server]\nheader_read_timeout_ms = 0\n").expect_err("zero");
        assert!(error.to_string().contains("must be positive"), "{error}");
        let error = parse("[server]\nlisten_backlog = 0\n").expect_err("zero");
        assert!(error.to_string().contains("must be positive"), "{error}");
        let error = parse("[server]\nlisten_backlog = -1\n").expect_err("negative");
        // serde names the line, not the key: the line is the key's.
        assert!(
            error.to_string().contains("plugins.toml:2:")
                && error.to_string().contains("expected u32"),
            "{error}"
        );
    }

    #[test]
    fn plugin_versions_kept_default_to_five_and_at_least_two() {
        let config = parse("").expect("valid");
        assert_eq!(config.plugins.keep_versions, 5);
        assert_eq!(config.plugins.max_install_bytes, 64 * 1024 * 1024);
        let config = parse("[plugins]\nkeep_versions = 2\n").expect("valid");
        assert_eq!(config.plugins.keep_versions, 2);
        let error = parse("[plugins]\nkeep_versions = 1\n").expect_err("one");
        assert!(
            error.to_string().contains("plugins.keep_versions"),
            "{error}"
        );
        assert!(
            parse("[plugins]\nkeep = 3\n").is_err(),
            "unknown keys refused"
        );
    }

    #[test]
    fn egress_proxies_take_credentials_only_as_secret_references() {
        let config = parse(
            "[egress]\nproxy = \"http://proxy.internal:3128\"\nno_proxy = [\"10.0.0.0/8\"]\n\n\
             [providers.x.accounts.a]\n\n\
             [providers.x.accounts.b]\negress = {}\n",
        )
        .expect("valid");
        let a = config.account("x", "a").expect("a");
        let b = config.account("x", "b").expect("b");
        assert_eq!(
            config.egress_for(a).proxy.as_deref(),
            Some("http://proxy.internal:3128")
        );
        assert_eq!(
            config.egress_for(b).proxy,
            None,
            "an empty table means direct"
        );

        let error = parse("[egress]\nproxy = \"http://user:hunter22@proxy:3128\"\n")
            .expect_err("credentials in the URL");
        let text = error.to_string();
        assert!(text.contains("must not hold credentials"), "{text}");
        assert!(!text.contains("hunter22"), "{text}");

        let error = parse(
            "[egress]\nproxy = \"http://proxy:3128\"\nproxy_username = \"u\"\nproxy_password = \"${GATEHOUSE_TEST_UNSET_PROXY_PASSWORD}\"\n",
        )
        .expect_err("unresolvable password");
        assert!(
            error.to_string().contains("egress.proxy_password"),
            "{error}"
        );
        let error = parse("[egress]\nproxy = \"socks5://proxy:1080\"\n").expect_err("scheme");
        assert!(error.to_string().contains("http:// or https://"), "{error}");
        let error = parse("[egress]\nproxy_username = \"u\"\n").expect_err("no proxy");
        assert!(error.to_string().contains("no proxy is"), "{error}");
    }

    #[test]
    fn named_keys_carry_scopes_and_limits_and_the_plain_list_grants_everything() {
        let config = parse(
            "[api]\nkeys = [\"plain-key-1\"]\n\n\
             [[api.key]]\nname = \"ops-readonly\"\nsecret = \"readonly-key-1\"\nscopes = [\"read\"]\n\
             providers = [\"xsolla\"]\naccounts = [\"xsolla/main\"]\n\n\
             [[api.key]]\nname = \"shop\"\nsecret = \"shop-key-1\"\nscopes = [\"read\", \"move_money\"]\n",
        )
        .expect("valid");
        let keys = config.api.api_keys();
        let names: Vec<&str> = keys.iter().map(|key| key.name.as_str()).collect();
        assert_eq!(names, ["keys[0]", "ops-readonly", "shop"]);
        assert_eq!(keys[0].grant, Grant::full());
        let readonly = &keys[1].grant;
        assert!(readonly.allows_scope(Scope::Read) && !readonly.allows_scope(Scope::Operate));
        assert!(readonly.allows_account("xsolla", "main"));
        assert!(!readonly.allows_account("xsolla", "eu"));
        assert!(keys[2].grant.is_unlimited());
        assert_eq!(
            config.inline_secrets(),
            [
                "api.keys[0]",
                "api.key.ops-readonly.secret",
                "api.key.shop.secret"
            ]
        );
        assert!(!format!("{config:?}").contains("readonly-key-1"));
    }

    #[test]
    fn named_keys_are_refused_with_what_and_where() {
        let key = |body: &str| parse(&format!("[api]\n\n[[api.key]]\n{body}\n"));
        for (body, expected) in [
            (
                "name = \"a\"\nsecret = \"s-1\"\nscopes = [\"admin\"]",
                "unknown variant `admin`",
            ),
            (
                "name = \"a\"\nsecret = \"s-1\"\nscopes = []",
                "scopes is empty",
            ),
            (
                "name = \"a\"\nsecret = \"\"\nscopes = [\"read\"]",
                "the secret is empty",
            ),
            (
                "name = \"a b\"\nsecret = \"s-1\"\nscopes = [\"read\"]",
                "api.key name `a b`",
            ),
            (
                "name = \"a\"\nsecret = \"s-1\"\nscopes = [\"read\"]\naccounts = [\"main\"]",
                "not `provider/account`",
            ),
            (
                "name = \"a\"\nsecret = \"s-1\"\nscopes = [\"read\"]\nproviders = [\"x\"]\naccounts = [\"y/main\"]",
                "outside its providers",
            ),
            (
                "name = \"a\"\nsecret = \"${GATEHOUSE_TEST_UNSET_NAMED_KEY}\"\nscopes = [\"read\"]",
                "api.key `a`.secret: environment variable `GATEHOUSE_TEST_UNSET_NAMED_KEY` is not set",
            ),
            ("name = \"a\"\nsecret = \"s-1\"", "missing field `scopes`"),
            (
                "name = \"a\"\nsecret = \"s-1\"\nscopes = [\"read\"]\nscope = \"x\"",
                "unknown field `scope`",
            ),
        ] {
            let error = key(body).expect_err(body).to_string();
            assert!(error.contains(expected), "{body}: {error}");
            assert!(
                error.contains(":4:")
                    || error.contains(":5:")
                    || error.contains(":6:")
                    || error.contains(":7:")
                    || error.contains(":3:"),
                "{body}: a line: {error}"
            );
        }
        let error = parse(
            "[api]\n[[api.key]]\nname = \"a\"\nsecret = \"s-1\"\nscopes = [\"read\"]\n\
             [[api.key]]\nname = \"a\"\nsecret = \"s-2\"\nscopes = [\"read\"]\n",
        )
        .expect_err("duplicate name")
        .to_string();
        assert!(
            error.contains("`a` is used twice") && error.contains(":7:"),
            "{error}"
        );
        let error = parse(
            "[api]\nkeys = [\"s-1\"]\n[[api.key]]\nname = \"a\"\nsecret = \"s-1\"\nscopes = [\"read\"]\n",
        )
        .expect_err("shared secret")
        .to_string();
        assert!(
            error.contains("api.key `a` has the same secret as api.keys[0]")
                && !error.contains("s-1"),
            "{error}"
        );
        let error = parse("[api]\nkeys = [\"\"]\n")
            .expect_err("empty plain key")
            .to_string();
        assert!(
            error.contains("api.keys[0]: the secret is empty"),
            "{error}"
        );
    }

    #[test]
    fn a_postgres_ledger_takes_its_password_as_a_secret_reference() {
        let parse = |text: &str| Config::parse(text, Path::new("/etc/gatehouse/plugins.toml"));
        let config = parse("").expect("valid");
        assert_eq!(config.ledger.url, None, "SQLite stays the default");

        // SAFETY: set once, read by this test only (its name is unique to it).
        unsafe { std::env::set_var("GATEHOUSE_TEST_LEDGER_PASSWORD", "pg-secret-1") };
        let config = parse(
            "[ledger]\nurl = \"postgres://gatehouse@db.internal:5432/ledger\"\npassword = \"${GATEHOUSE_TEST_LEDGER_PASSWORD}\"\nmax_connections = 4\n",
        )
        .expect("valid");
        assert_eq!(config.ledger.max_connections, 4);
        assert_eq!(config.ledger.lease_ms, 15_000, "the lease's default");
        assert_eq!(
            config.ledger.ca_file, None,
            "plain TCP unless a CA is given"
        );
        let with_ca = parse("[ledger]\nurl = \"postgres://g@db/l\"\nca_file = \"tls/db-ca.pem\"\n")
            .expect("valid");
        assert_eq!(
            with_ca.ledger.ca_file.as_deref(),
            Some(Path::new("/etc/gatehouse/tls/db-ca.pem")),
            "relative to the file's folder"
        );
        let password = config.ledger.password.as_ref().expect("set");
        assert_eq!(
            password.resolve().expect("resolves").value.expose(),
            "pg-secret-1"
        );
        assert!(!format!("{config:?}").contains("pg-secret-1"));
        assert!(config.inline_secrets().is_empty());

        for (text, expected) in [
            (
                "[ledger]\nurl = \"postgres://gatehouse:pg-secret-2@db/ledger\"\n",
                "must not hold the password",
            ),
            ("[ledger]\nurl = \"mysql://db/ledger\"\n", "postgres:// URL"),
            (
                "[ledger]\npassword = \"${GATEHOUSE_TEST_LEDGER_PASSWORD}\"\n",
                "ledger.password and ledger.ca_file need ledger.url",
            ),
            (
                "[ledger]\nurl = \"postgres://g@db/l\"\npassword = \"${GATEHOUSE_TEST_UNSET_LEDGER}\"\n",
                "ledger.password: environment variable `GATEHOUSE_TEST_UNSET_LEDGER` is not set",
            ),
            (
                "[ledger]\nca_file = \"/etc/db-ca.pem\"\n",
                "ledger.password and ledger.ca_file need ledger.url",
            ),
            (
                "[ledger]\nurl = \"postgres://g@db/l\"\nlease_ms = 200\n",
                "ledger.lease_ms is 200: it must be between 1000 (1 s) and 3600000 (1 h)",
            ),
            (
                "[host]\nreconcile_interval_secs = 0\n",
                "host.reconcile_interval_secs is 0: it must be between 1 and 86400",
            ),
        ] {
            let message = parse(text).expect_err("refused").to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(!message.contains("pg-secret-2"), "{message}");
        }
        let inline = parse("[ledger]\nurl = \"postgres://g@db/l\"\npassword = \"hunter2\"\n")
            .expect("allowed, warned about");
        assert_eq!(inline.inline_secrets(), ["ledger.password"]);
    }
}
