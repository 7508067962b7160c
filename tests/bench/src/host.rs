//! The host under test: the real `Gateway` with the five provider plugins loaded from a plugins
//! folder and watched for changes, and its HTTP API served on loopback with a SQLite ledger.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use gatehouse_core::watcher::WatchHandle;
use gatehouse_core::{Config, Gateway};
use gatehouse_ledger::{Ledger, SqliteLedger};
use tempfile::TempDir;

use crate::artifacts::{
    PROVIDER_PLUGINS, install, plugin_file_name, provider_of, release_library, target_dir,
};
use crate::simulator::AUTH_TOKEN;

/// The bearer key the benchmark host accepts.
pub const API_KEY: &str = "bench-api-key-0123456789abcdef";

/// The account every benchmark uses.
pub const PROVIDER: &str = "paygateglobal";
pub const ACCOUNT: &str = "main";

/// `plugins.toml` for a host whose PayGateGlobal account points at `simulator_base_url`.
///
/// The account's rate limit and concurrency cap are raised out of the way: the benchmark
/// measures what the host costs, not the policy an operator would set for a real provider.
/// Everything else keeps the documented defaults (the reload debounce included).
pub fn config_text(simulator_base_url: &str, listen: &str) -> String {
    format!(
        r#"[host]
plugins_dir = "plugins"
ledger = "ledger.sqlite"
listen = "{listen}"

[api]
keys = ["{API_KEY}"]

[providers.paygateglobal.accounts.{ACCOUNT}]
base_url = "{simulator_base_url}"
rate_limit_per_minute = 4000000000
max_concurrency = 4096
secrets = {{ auth_token = "{AUTH_TOKEN}" }}
"#
    )
}

/// A temporary folder on the same file system as the build (not a tmpfs), so the ledger's
/// fsyncs cost what they cost on a real disk.
pub fn work_dir() -> anyhow::Result<TempDir> {
    let parent = target_dir().join("bench-tmp");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&parent)
        .context("creating the benchmark's temporary folder")
}

/// Writes `plugins.toml` and a plugins folder holding the five provider plugins into `dir`.
pub fn prepare_folder(
    dir: &Path,
    simulator_base_url: &str,
    listen: &str,
) -> anyhow::Result<PathBuf> {
    let plugins_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugins_dir).context("creating the plugins folder")?;
    for package in PROVIDER_PLUGINS {
        install(
            &release_library(package)?,
            &plugins_dir,
            &plugin_file_name(provider_of(package)),
        )?;
    }
    let config_path = dir.join("plugins.toml");
    std::fs::write(&config_path, config_text(simulator_base_url, listen))
        .context("writing plugins.toml")?;
    Ok(config_path)
}

/// The host embedded as a library: the gateway with the five plugins, watching its folder.
pub struct BenchHost {
    pub gateway: Gateway,
    pub dir: TempDir,
    _watch: WatchHandle,
}

impl BenchHost {
    /// Loads the five plugins and starts watching the folder (as `gatehouse serve` does).
    pub async fn start(simulator_base_url: &str) -> anyhow::Result<Self> {
        let dir = work_dir()?;
        let gateway = start_gateway(dir.path(), simulator_base_url).await?;
        let watch =
            gatehouse_core::watcher::watch(&gateway).context("watching the plugins folder")?;
        Ok(Self {
            gateway,
            dir,
            _watch: watch,
        })
    }

    /// A second gateway over the same folder and configuration, with `host.plugin_calls =
    /// "inline"` (not watched: the reload figures are the pooled gateway's).
    pub async fn inline_gateway(&self) -> anyhow::Result<Gateway> {
        let mut config = (*self.gateway.config()).clone();
        config.host.plugin_calls = gatehouse_core::config::PluginCalls::Inline;
        let gateway = Gateway::start(config).await;
        anyhow::ensure!(
            gateway.registry().active().len() == PROVIDER_PLUGINS.len(),
            "the inline gateway loaded {:?}",
            gateway.registry().failures()
        );
        Ok(gateway)
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }
}

async fn start_gateway(dir: &Path, simulator_base_url: &str) -> anyhow::Result<Gateway> {
    let config_path = prepare_folder(dir, simulator_base_url, "127.0.0.1:0")?;
    let config = Config::load(&config_path).context("the benchmark's plugins.toml is refused")?;
    let gateway = Gateway::start(config).await;
    let loaded = gateway.registry().active().len();
    anyhow::ensure!(
        loaded == PROVIDER_PLUGINS.len(),
        "{loaded} plugins loaded, expected {}: {:?}",
        PROVIDER_PLUGINS.len(),
        gateway.registry().failures()
    );
    Ok(gateway)
}

/// The host's HTTP API (`server::serve` on loopback, SQLite ledger on disk), run like a separate
/// server: its own gateway, plugins and runtime threads.
///
/// Its own runtime keeps its blocking work (the ledger's fsyncs run on the async workers) from
/// stalling the clients and the embedded host that share this process, which would otherwise
/// show up as latency of the direct baseline. Its own gateway keeps the embedded host's HTTP
/// connections from being driven by this runtime.
pub struct ApiHost {
    pub base_url: String,
    pub gateway: Gateway,
    _dir: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiHost {
    pub fn start(simulator_base_url: &str) -> anyhow::Result<Self> {
        let dir = work_dir()?;
        let folder = dir.path().to_path_buf();
        let simulator_base_url = simulator_base_url.to_string();
        let (started_sender, started) =
            std::sync::mpsc::channel::<anyhow::Result<(String, Gateway)>>();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-api-host".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .thread_name("bench-api-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started_sender.send(Err(anyhow::anyhow!("API runtime: {error}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let prepared = async {
                        let gateway = start_gateway(&folder, &simulator_base_url).await?;
                        let ledger: Arc<dyn Ledger> = Arc::new(
                            SqliteLedger::open(&folder.join("ledger.sqlite"))
                                .context("opening the ledger")?,
                        );
                        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                            .await
                            .context("binding the API")?;
                        let base_url =
                            format!("http://{}", listener.local_addr().context("API address")?);
                        anyhow::Ok((gateway, ledger, listener, base_url))
                    }
                    .await;
                    let (gateway, ledger, listener, base_url) = match prepared {
                        Ok(prepared) => prepared,
                        Err(error) => {
                            let _ = started_sender.send(Err(error));
                            return;
                        }
                    };
                    let _ = started_sender.send(Ok((base_url, gateway.clone())));
                    let service = gatehouse_service::Service::new(gateway, ledger);
                    let _ = gatehouse_service::server::serve(service, listener, async move {
                        let _ = stopped.await;
                    })
                    .await;
                });
            })
            .context("starting the API host's thread")?;
        let (base_url, gateway) = started.recv().context("the API host's thread died")??;
        Ok(Self {
            base_url,
            gateway,
            _dir: dir,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for ApiHost {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A SQLite ledger on disk in its own temporary folder (for the ledger section).
pub fn disk_ledger() -> anyhow::Result<(Arc<dyn Ledger>, TempDir)> {
    let dir = work_dir()?;
    let ledger: Arc<dyn Ledger> = Arc::new(
        SqliteLedger::open(&dir.path().join("ledger.sqlite")).context("opening the ledger")?,
    );
    Ok((ledger, dir))
}
