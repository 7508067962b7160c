//! Support for the end-to-end tests. HARNESS-READY
//!
//! Tests here use only real parts: plugin libraries built as `cdylib`s by cargo, loaded by the
//! real host from a temporary plugins folder, talking real HTTP on loopback to the provider
//! simulators in `tests/simulators`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use gatehouse_core::watcher::WatchHandle;
use gatehouse_core::{Config, DispatchError, Gateway};
use gatehouse_plugin_api::{Command as PluginCommand, Outcome};
use gatehouse_service::{CommandAnswer, Service, ServiceError};
use serde_json::Value;
use tempfile::TempDir;

pub mod webdriver;

/// Every cdylib the tests load: provider plugins and test fixtures.
const LIBRARY_PACKAGES: &[&str] = &[
    "gatehouse-plugin-paygateglobal",
    "gatehouse-plugin-xsolla",
    "gatehouse-plugin-kolmisoft",
    "gatehouse-plugin-ccbill",
    "gatehouse-plugin-paysitecash",
    "gatehouse-fixture-paygateglobal-next",
    "gatehouse-fixture-misbehaving-plugin",
    "gatehouse-fixture-not-a-plugin",
    "gatehouse-fixture-contract-old-version",
    "gatehouse-fixture-contract-other-layout",
    "gatehouse-plugin-template",
    "gatehouse-fixture-broken-panicking",
    "gatehouse-fixture-broken-manifest",
    "gatehouse-fixture-broken-secret-echo",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The path of a built plugin library, by package name (`gatehouse-plugin-paygateglobal`).
/// The first call builds every library package with cargo (the same profile as the tests).
pub fn library(package: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(workspace_root())
            .arg("build")
            .arg("--quiet");
        for package in LIBRARY_PACKAGES {
            if workspace_root()
                .join(package_dir(package))
                .join("Cargo.toml")
                .exists()
            {
                command.args(["-p", package]);
            }
        }
        let status = command.status().expect("cargo runs");
        assert!(status.success(), "building the plugin libraries failed");
        // The `gatehouse` executable too: some tests run the real binary.
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "gatehouse", "--bin", "gatehouse"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the gatehouse binary failed");
    });
    built_library(package)
}

/// A library crate kept out of the workspace (`tests/standalone/<dir>`, its own lock file) because
/// its dependencies cannot share the workspace's: built here, into the same target folder.
pub fn standalone_library(dir: &str, package: &str) -> PathBuf {
    build_standalone(dir);
    built_library(package)
}

/// Builds the standalone workspace `tests/standalone/<dir>` once per test process.
fn build_standalone(dir: &str) {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|done| done == dir) {
        let manifest = workspace_root()
            .join("tests/standalone")
            .join(dir)
            .join("Cargo.toml");
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace_root())
            .arg("build")
            .arg("--quiet")
            .arg("--locked")
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {} failed", manifest.display());
        built.push(dir.to_string());
    }
}

/// An executable of a standalone crate (`tests/standalone/<dir>`), built like its libraries.
pub fn standalone_binary(dir: &str, binary: &str) -> PathBuf {
    build_standalone(dir);
    let path = target_dir()
        .join("debug")
        .join(format!("{binary}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Where cargo put a package's `cdylib` (same profile as the tests), checked to exist.
fn built_library(package: &str) -> PathBuf {
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let path = target_dir().join("debug").join(file);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The path of the built `gatehouse` executable.
pub fn gatehouse_binary() -> PathBuf {
    library("gatehouse-plugin-paygateglobal");
    let path = target_dir()
        .join("debug")
        .join(format!("gatehouse{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn package_dir(package: &str) -> String {
    if let Some(provider) = package.strip_prefix("gatehouse-plugin-") {
        format!("plugins/{provider}")
    } else if let Some(fixture) = package.strip_prefix("gatehouse-fixture-") {
        format!("tests/fixtures/{fixture}")
    } else {
        package.to_string()
    }
}

/// Installs a library into a plugins folder the way operators are told to: write a hidden
/// temporary file, then rename it into place, so the host never sees a half-written file.
pub fn install(library_path: &Path, plugins_dir: &Path, file_name: &str) {
    let temporary = plugins_dir.join(format!(".{file_name}.tmp"));
    std::fs::copy(library_path, &temporary).expect("copy plugin");
    std::fs::rename(&temporary, plugins_dir.join(file_name)).expect("rename plugin into place");
}

/// The file name a provider's plugin gets in the plugins folder.
pub fn plugin_file_name(provider: &str) -> String {
    format!(
        "{}{provider}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// A loopback port free right now (for a child `gatehouse serve` to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A fresh database in the test process's PostgreSQL cluster (started on first use; a machine
/// without Debian's `postgresql-15` fails here, naming the package), and the `[ledger]` table
/// that points a host at it. The password goes through a secret file in `dir`, the way an
/// operator would write it, never into the URL.
pub fn postgres_ledger_toml(dir: &Path) -> (String, gatehouse_pg_cluster::Database) {
    let database = gatehouse_pg_cluster::shared().create_database();
    let password_file = dir.join("ledger-password");
    std::fs::write(&password_file, &database.password).expect("write the password file");
    let toml = format!(
        "[ledger]\nurl = \"{}\"\npassword = {{ file = \"{}\" }}\nmax_connections = 4\nconnect_timeout_ms = 30000\n",
        database.url(),
        password_file.display()
    );
    (toml, database)
}

/// A ledger handle on `database`, opened apart for a test's own reads. Blocking (the driver
/// runs its own runtime): call it from `spawn_blocking` or a plain thread.
pub fn open_postgres_ledger(
    database: &gatehouse_pg_cluster::Database,
) -> std::sync::Arc<dyn gatehouse_ledger::Ledger> {
    let mut options = gatehouse_ledger::PostgresOptions::new(database.url());
    options.password = Some(gatehouse_plugin_api::Secret::new(database.password.clone()));
    options.max_connections = 2;
    options.connect_timeout = std::time::Duration::from_secs(30);
    std::sync::Arc::new(
        gatehouse_ledger::PostgresLedger::connect(&options).expect("the ledger connects"),
    )
}

/// The bearer key test hosts accept.
pub const API_KEY: &str = "test-api-key-0123456789";
/// The test hosts' scrape key: it opens `/metrics` and nothing else.
pub const METRICS_KEY: &str = "test-metrics-key-9876543210";

/// The ledger a test host runs on. The service suites run on both (`on_both_backends!` in the
/// e2e tests): what a platform sees through the service must not depend on the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `ledger.sqlite` in the host's temporary folder (the embedded default).
    Sqlite,
    /// A fresh database of the test process's PostgreSQL cluster (`[ledger] url`).
    Postgres,
}

/// A running host over a temporary folder holding `plugins/`, `plugins.toml` and the ledger
/// (`ledger.sqlite`, or a database of the test cluster): every command goes through the service,
/// the one door a platform uses.
pub struct TestHost {
    pub gateway: Gateway,
    pub service: Service,
    pub dir: TempDir,
    pub backend: Backend,
    /// The PostgreSQL database of a [`Backend::Postgres`] host.
    pub database: Option<gatehouse_pg_cluster::Database>,
    watch: Option<WatchHandle>,
}

impl TestHost {
    /// Starts a host with the given plugin packages installed and `accounts_toml` appended to
    /// its configuration (the `[providers.*]` tables), on the SQLite ledger.
    pub async fn start(packages: &[&str], accounts_toml: &str) -> Self {
        Self::start_on(Backend::Sqlite, packages, accounts_toml).await
    }

    /// Like [`TestHost::start`], on the ledger `backend` names.
    pub async fn start_on(backend: Backend, packages: &[&str], accounts_toml: &str) -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("temporary folder");
        let plugins_dir = dir.path().join("plugins");
        std::fs::create_dir(&plugins_dir).expect("plugins folder");
        for package in packages {
            let provider = package
                .strip_prefix("gatehouse-plugin-")
                .or_else(|| package.strip_prefix("gatehouse-fixture-"))
                .unwrap_or(package);
            install(&library(package), &plugins_dir, &plugin_file_name(provider));
        }
        let (ledger_toml, database) = match backend {
            Backend::Sqlite => (String::new(), None),
            Backend::Postgres => {
                let dir = dir.path().to_path_buf();
                let (toml, database) =
                    tokio::task::spawn_blocking(move || postgres_ledger_toml(&dir))
                        .await
                        .expect("the test database is created");
                (toml, Some(database))
            }
        };
        let config_path = dir.path().join("plugins.toml");
        std::fs::write(
            &config_path,
            format!(
                "[host]\nplugins_dir = \"plugins\"\nledger = \"ledger.sqlite\"\nreload_debounce_ms = 50\nplugin_call_budget_ms = 1000\n\n[api]\nkeys = [\"{API_KEY}\"]\nmetrics_keys = [\"{METRICS_KEY}\"]\n\n{ledger_toml}\n{accounts_toml}"
            ),
        )
        .expect("write plugins.toml");
        let config = Config::load(&config_path).expect("test configuration is valid");
        let service = Service::open(config).await.expect("the service opens");
        Self {
            gateway: service.gateway().clone(),
            service,
            dir,
            backend,
            database,
            watch: None,
        }
    }

    /// Another handle on this host's ledger, for a test's own reads and writes (the same SQLite
    /// file, or the same database).
    pub async fn open_ledger(&self) -> std::sync::Arc<dyn gatehouse_ledger::Ledger> {
        match &self.database {
            None => std::sync::Arc::new(
                gatehouse_ledger::SqliteLedger::open(&self.dir.path().join("ledger.sqlite"))
                    .expect("ledger"),
            ),
            Some(database) => {
                let database = database.clone();
                tokio::task::spawn_blocking(move || open_postgres_ledger(&database))
                    .await
                    .expect("the ledger opens")
            }
        }
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("plugins.toml")
    }

    /// Starts watching the plugins folder and `plugins.toml` for changes.
    pub fn watch(&mut self) {
        self.watch = Some(gatehouse_core::watcher::watch(&self.gateway).expect("watch"));
    }

    /// Runs a command given as JSON (`{"operation": "charge", ...}`) through the service.
    pub async fn call(
        &self,
        provider: &str,
        account: &str,
        command: Value,
    ) -> Result<Outcome, DispatchError> {
        self.call_full(provider, account, command)
            .await
            .map(|answer| answer.outcome)
    }

    /// Runs a command and returns the whole answer. The gateway's refusals and errors come back
    /// as they are; a ledger failure fails the test (no test here expects one).
    pub async fn call_full(
        &self,
        provider: &str,
        account: &str,
        command: Value,
    ) -> Result<CommandAnswer, DispatchError> {
        self.call_keyed(provider, account, command, None).await
    }

    /// Runs a command under an idempotency key.
    pub async fn call_keyed(
        &self,
        provider: &str,
        account: &str,
        command: Value,
        idempotency_key: Option<&str>,
    ) -> Result<CommandAnswer, DispatchError> {
        execute(&self.service, provider, account, command, idempotency_key).await
    }

    /// Delivers an inbound webhook body, as the HTTP API would, and returns the plugin's
    /// verdict as an outcome (its `details` hold the webhook result).
    pub async fn webhook(
        &self,
        provider: &str,
        account: &str,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Result<Outcome, DispatchError> {
        let prepared =
            self.gateway
                .prepare(provider, account, PluginCommand::Webhook { headers })?;
        match prepared.into_door() {
            gatehouse_core::Door::Direct(command) => self
                .gateway
                .dispatch(command.with_inbound_body(body.to_vec()))
                .await
                .map(|dispatched| dispatched.outcome),
            gatehouse_core::Door::Recorded(_) => unreachable!("webhooks are not recorded"),
        }
    }

    /// Waits (up to `timeout`) until `condition` holds, polling.
    pub async fn wait_until(
        &self,
        timeout: std::time::Duration,
        mut condition: impl FnMut(&Gateway) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if condition(&self.gateway) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        condition(&self.gateway)
    }
}

/// Runs a command given as JSON through `service` (the one door), under an optional idempotency
/// key. The gateway's refusals and errors come back as they are; a ledger failure fails the test
/// (no test here expects one).
pub async fn execute(
    service: &Service,
    provider: &str,
    account: &str,
    command: Value,
    idempotency_key: Option<&str>,
) -> Result<CommandAnswer, DispatchError> {
    let command: PluginCommand =
        serde_json::from_value(command).expect("test command is valid JSON for the contract");
    match service
        .execute(
            provider,
            account,
            command,
            idempotency_key.map(str::to_string),
        )
        .await
    {
        Ok(answer) => Ok(answer),
        Err(ServiceError::Dispatch(error)) => Err(error),
        Err(ServiceError::RecordedRefusal { message, .. }) => {
            Err(DispatchError::InvalidCommand { message })
        }
        Err(other) => panic!("the service failed: {other}"),
    }
}

/// Runs the calling test alone in a process of its own (this test binary, run again with just
/// that test) when it measures the process itself — memory, descriptors, threads — which the
/// other tests of this one binary would disturb. Returns `true` in that process, where the test
/// body runs; in the parent it waits for the child, fails if the child failed, and returns
/// `false`.
pub fn in_own_process(test_path: &str) -> bool {
    const ALONE: &str = "GATEHOUSE_E2E_ALONE";
    if std::env::var_os(ALONE).is_some() {
        return true;
    }
    let status = Command::new(std::env::current_exe().expect("the test binary"))
        .args([test_path, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, "1")
        .status()
        .expect("the test binary runs");
    assert!(status.success(), "{test_path} failed in its own process");
    false
}

/// Log output of the host, captured for the secret-leak tests.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOG_BUFFER.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

static LOG_BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct BufferWriter;

impl std::io::Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG_BUFFER
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line, at every level, into a buffer the tests can search.
pub fn init_logging() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(|| BufferWriter)
            .with_ansi(false)
            .try_init();
    });
}

/// A host serving its HTTP API on loopback, with a SQLite ledger in its temporary folder.
pub struct ApiHost {
    pub host: TestHost,
    pub base_url: String,
    /// The same ledger file, opened apart for the tests' own reads.
    pub ledger: std::sync::Arc<dyn gatehouse_ledger::Ledger>,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl ApiHost {
    /// A host on the SQLite ledger serving its API.
    pub async fn start(packages: &[&str], accounts_toml: &str) -> Self {
        Self::start_on(Backend::Sqlite, packages, accounts_toml).await
    }

    /// Like [`ApiHost::start`], on the ledger `backend` names.
    pub async fn start_on(backend: Backend, packages: &[&str], accounts_toml: &str) -> Self {
        let host = TestHost::start_on(backend, packages, accounts_toml).await;
        let ledger = host.open_ledger().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(gatehouse_service::server::serve(
            host.service.clone(),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            host,
            base_url,
            ledger,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Sends a request with the test API key; returns status, headers and the JSON body (or the
    /// body as a JSON string when it is not JSON).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        extra_headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(API_KEY);
        for (name, value) in extra_headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API reachable");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, _, value) = self
            .request(reqwest::Method::POST, path, Some(body), &[])
            .await;
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, _, value) = self.request(reqwest::Method::GET, path, None, &[]).await;
        (status, value)
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// A child process (a `gatehouse serve`) that is killed and reaped when the guard is dropped,
/// so a failing assertion does not leave a server running after the test.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `gatehouse serve` on `config`, its output discarded; killed when the guard drops.
pub fn spawn_serve(config: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(gatehouse_binary())
            .args(["--config", config.to_str().expect("utf-8 path"), "serve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("gatehouse starts"),
    )
}

/// A PayGateGlobal charge of 2 500 XOF by Flooz, as a command (the services' own door).
pub fn paygateglobal_charge_command() -> PluginCommand {
    serde_json::from_value(serde_json::json!({
        "operation": "charge",
        "amount": {"minor_units": 2500, "currency": "XOF"},
        "customer": {"phone": "90123456"},
        "payment_method": "FLOOZ"
    }))
    .expect("a charge")
}

/// Waits until `GET {base}/readyz` answers 200: up to two minutes, since five debug plugins
/// load slowly on a loaded 2-core machine (three fleet hosts starting at once, beside the other
/// tests, once took over a minute in CI). Readiness time is not what any test asserts. Panics
/// naming the address otherwise.
pub async fn wait_ready(base: &str) {
    for _ in 0..2400 {
        if let Ok(answer) = reqwest::get(format!("{base}/readyz")).await
            && answer.status() == 200
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the host did not become ready at {base}");
}
