//! Support for the end-to-end tests. HARNESS-READY
//!
//! Tests here use only real parts: plugin libraries built as `cdylib`s by cargo, loaded by the
//! real host from a temporary plugins folder, talking real HTTP on loopback to the provider
//! simulators in `tests/simulators`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use gatehouse_host::plugin_api::{Command as PluginCommand, Outcome};
use gatehouse_host::watcher::WatchHandle;
use gatehouse_host::{Config, DispatchError, DispatchRequest, Dispatched, Gateway};
use serde_json::Value;
use tempfile::TempDir;

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
        .map(|dir| if dir.is_absolute() { dir } else { workspace_root().join(dir) })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The path of a built plugin library, by package name (`gatehouse-plugin-paygateglobal`).
/// The first call builds every library package with cargo (the same profile as the tests).
pub fn library(package: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut command = Command::new(env!("CARGO"));
        command.current_dir(workspace_root()).arg("build").arg("--quiet");
        for package in LIBRARY_PACKAGES {
            if workspace_root().join(package_dir(package)).join("Cargo.toml").exists() {
                command.args(["-p", package]);
            }
        }
        let status = command.status().expect("cargo runs");
        assert!(status.success(), "building the plugin libraries failed");
    });
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
    format!("{}{provider}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// A running host over a temporary folder holding `plugins/` and `plugins.toml`.
pub struct TestHost {
    pub gateway: Gateway,
    pub dir: TempDir,
    watch: Option<WatchHandle>,
}

impl TestHost {
    /// Starts a host with the given plugin packages installed and `accounts_toml` appended to
    /// its configuration (the `[providers.*]` tables).
    pub async fn start(packages: &[&str], accounts_toml: &str) -> Self {
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
        let config_path = dir.path().join("plugins.toml");
        std::fs::write(
            &config_path,
            format!("[host]\nplugins_dir = \"plugins\"\nreload_debounce_ms = 50\nplugin_call_budget_ms = 1000\n\n{accounts_toml}"),
        )
        .expect("write plugins.toml");
        let config = Config::load(&config_path).expect("test configuration is valid");
        let gateway = Gateway::start(config).await;
        Self {
            gateway,
            dir,
            watch: None,
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
        self.watch = Some(gatehouse_host::watcher::watch(&self.gateway).expect("watch"));
    }

    /// Runs a command given as JSON (`{"operation": "charge", ...}`).
    pub async fn call(&self, provider: &str, account: &str, command: Value) -> Result<Outcome, DispatchError> {
        self.call_full(provider, account, command).await.map(|dispatched| dispatched.outcome)
    }

    /// Runs a command and returns everything the dispatch reports.
    pub async fn call_full(&self, provider: &str, account: &str, command: Value) -> Result<Dispatched, DispatchError> {
        let command: PluginCommand = serde_json::from_value(command).expect("test command is valid JSON for the contract");
        self.gateway
            .dispatch_request(DispatchRequest::new(provider, account, command))
            .await
    }

    /// Delivers an inbound webhook body, as the HTTP API would.
    pub async fn webhook(&self, provider: &str, account: &str, headers: Vec<(String, String)>, body: &[u8]) -> Result<Outcome, DispatchError> {
        let mut request = DispatchRequest::new(provider, account, PluginCommand::Webhook { headers });
        request.inbound_body = body.to_vec();
        self.gateway.dispatch_request(request).await.map(|dispatched| dispatched.outcome)
    }

    /// Waits (up to `timeout`) until `condition` holds, polling.
    pub async fn wait_until(&self, timeout: std::time::Duration, mut condition: impl FnMut(&Gateway) -> bool) -> bool {
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

/// Log output of the host, captured for the secret-leak tests.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOG_BUFFER.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

static LOG_BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct BufferWriter;

impl std::io::Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG_BUFFER.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(bytes);
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
