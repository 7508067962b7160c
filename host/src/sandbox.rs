//! `gatehouse sandbox`: the host with every provider pointed at the repository's simulators, so a
//! newcomer can try every command on one machine without credentials.
//!
//! Architecture Invariant: only this command starts simulators, and it writes its own
//! configuration under `data/sandbox/`; `gatehouse serve` never falls back to a simulator.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use gatehouse_sim_common::RunningSimulator;

/// The API key the sandbox accepts (printed at start; never valid outside the sandbox).
pub const SANDBOX_API_KEY: &str = "sandbox-key";

/// What the sandbox started: the simulators (kept alive by this value) and its configuration.
pub struct Sandbox {
    pub config_path: PathBuf,
    pub simulators: Vec<(&'static str, RunningSimulator)>,
    pub installed_plugins: Vec<String>,
}

/// Starts the simulators, installs the built plugins into `folder/plugins`, and writes
/// `folder/plugins.toml` pointing every provider at its simulator.
pub async fn prepare(folder: &Path, listen: &str) -> anyhow::Result<Sandbox> {
    let plugins_dir = folder.join("plugins");
    std::fs::create_dir_all(&plugins_dir)?;
    let installed_plugins = install_built_plugins(&plugins_dir)?;

    let mut simulators = Vec::new();
    let mut accounts = String::new();

    let (_paygate, running) = gatehouse_sim_paygateglobal::PayGateSimulator::start("sandbox-paygate-token").await?;
    let _ = writeln!(
        accounts,
        "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"sandbox-paygate-token\" }}\n",
        running.base_url()
    );
    simulators.push(("paygateglobal", running));

    let config_path = folder.join("plugins.toml");
    let config = format!(
        "# Written by `gatehouse sandbox`: every provider points at a simulator on loopback.\n\
         # Inline secrets are the simulators' own test values.\n\n\
         [host]\nplugins_dir = \"plugins\"\nlisten = \"{listen}\"\nledger = \"ledger.sqlite\"\n\n\
         [api]\nkeys = [\"{SANDBOX_API_KEY}\"]\n\n{accounts}"
    );
    std::fs::write(&config_path, config)?;
    Ok(Sandbox {
        config_path,
        simulators,
        installed_plugins,
    })
}

/// Copies every `gatehouse_plugin_*` library built next to this executable into `plugins_dir`,
/// named after its provider, the documented way (temporary file, then rename).
fn install_built_plugins(plugins_dir: &Path) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe()?;
    let build_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let prefix = format!("{}gatehouse_plugin_", std::env::consts::DLL_PREFIX);
    let mut installed = Vec::new();
    for entry in std::fs::read_dir(&build_dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else { continue };
        let Some(rest) = name.strip_prefix(&prefix) else { continue };
        let Some(provider) = rest.strip_suffix(std::env::consts::DLL_SUFFIX) else { continue };
        if provider == "template" {
            continue;
        }
        let file = format!("{}{provider}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
        let temporary = plugins_dir.join(format!(".{file}.tmp"));
        std::fs::copy(&path, &temporary)?;
        std::fs::rename(&temporary, plugins_dir.join(&file))?;
        installed.push(provider.to_string());
    }
    if installed.is_empty() {
        anyhow::bail!(
            "no plugin library found next to {} — build them first: cargo build --workspace",
            exe.display()
        );
    }
    installed.sort();
    Ok(installed)
}
