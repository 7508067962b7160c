//! `gatehouse sandbox`: the host with every provider pointed at the repository's simulators, so a
//! newcomer can try every command on one machine without credentials.
//!
//! Architecture Invariant: only this command starts simulators, and it writes its own
//! configuration under `data/sandbox/`; `gatehouse serve` never falls back to a simulator.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use gatehouse_sim_common::RunningSimulator;

/// The API key the sandbox accepts, with every scope (printed at start; never valid outside the
/// sandbox). Its name in the ledger is `sandbox`.
pub const SANDBOX_API_KEY: &str = "sandbox-key";
/// A key of the sandbox that may only look (scope `read`), named `sandbox-readonly`.
pub const SANDBOX_READONLY_KEY: &str = "sandbox-readonly-key";

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

    let (_paygate, running) =
        gatehouse_sim_paygateglobal::PayGateSimulator::start("sandbox-paygate-token").await?;
    let _ = writeln!(
        accounts,
        "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"sandbox-paygate-token\" }}\n",
        running.base_url()
    );
    simulators.push(("paygateglobal", running));

    let xsolla_credentials = gatehouse_sim_xsolla::Credentials::default();
    let (xsolla, running) =
        gatehouse_sim_xsolla::XsollaSimulator::start(xsolla_credentials.clone()).await?;
    let saved_account = xsolla.add_saved_account("player-1", "card", "Visa **** 1111");
    let _ = writeln!(
        accounts,
        "# The simulator keeps one saved card (id {saved_account}) for user `player-1`.\n\
         [providers.xsolla.accounts.main]\nbase_url = \"{}\"\n\
         settings = {{ merchant_id = \"{}\", project_id = \"{}\", sandbox = \"true\", sandbox_paystation_url = \"{}/paystation4/\" }}\n\
         secrets = {{ api_key = \"{}\", project_secret_key = \"{}\" }}\n",
        gatehouse_sim_xsolla::XsollaSimulator::api_base_url(&running),
        xsolla_credentials.merchant_id,
        xsolla_credentials.project_id,
        running.base_url(),
        xsolla_credentials.api_key,
        xsolla_credentials.project_secret_key
    );
    simulators.push(("xsolla", running));

    let (kolmisoft, running) =
        gatehouse_sim_kolmisoft::KolmisoftSimulator::start("sandbox-kolmisoft-secret", "admin")
            .await?;
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    for (user_id, username, amount, currency) in [
        (2, "alice", "12.5000", "EUR"),
        (3, "bob", "100", "USD"),
        (2, "alice", "7.25", "EUR"),
    ] {
        kolmisoft.add_payment(gatehouse_sim_kolmisoft::Payment::new(
            user_id,
            username,
            today - 60,
            amount,
            currency,
        ));
    }
    let _ = writeln!(
        accounts,
        "[providers.kolmisoft.accounts.main]\nbase_url = \"{}/billing\"\nsettings = {{ username = \"admin\" }}\nsecrets = {{ secret_key = \"sandbox-kolmisoft-secret\" }}\n",
        running.base_url()
    );
    simulators.push(("kolmisoft", running));

    let (_ccbill, running) = gatehouse_sim_ccbill::CcBillSimulator::start().await?;
    let _ = writeln!(
        accounts,
        "[providers.ccbill.accounts.main]\nbase_url = \"{}\"\nsettings = {{ client_accnum = \"{}\", username = \"{}\", using_subacc = \"0000\" }}\nsecrets = {{ password = \"{}\" }}\n",
        running.base_url(),
        gatehouse_sim_ccbill::SEED_ACCNUM,
        gatehouse_sim_ccbill::SEED_USERNAME,
        gatehouse_sim_ccbill::SEED_PASSWORD
    );
    simulators.push(("ccbill", running));

    let (_paysite, running) = gatehouse_sim_paysitecash::PaysiteCashSimulator::start(
        "webmaster",
        "sandbox-paysite-password",
    )
    .await?;
    let _ = writeln!(
        accounts,
        "# Paysite Cash locks an account after 3 failed logins in 5 minutes: keep its rate low.\n\
         [providers.paysitecash.accounts.main]\nbase_url = \"{}\"\nrate_limit_per_minute = 30\nsettings = {{ user = \"webmaster\" }}\nsecrets = {{ password = \"sandbox-paysite-password\" }}\n",
        gatehouse_sim_paysitecash::PaysiteCashSimulator::stats_base_url(&running)
    );
    simulators.push(("paysitecash", running));

    let config_path = folder.join("plugins.toml");
    let config = format!(
        "# Written by `gatehouse sandbox`: every provider points at a simulator on loopback.\n\
         # Inline secrets are the simulators' own test values.\n\n\
         [host]\nplugins_dir = \"plugins\"\nlisten = \"{listen}\"\nledger = \"ledger.sqlite\"\n\n\
         [[api.key]]\nname = \"sandbox\"\nsecret = \"{SANDBOX_API_KEY}\"\nscopes = [\"read\", \"move_money\", \"operate\"]\n\n\
         [[api.key]]\nname = \"sandbox-readonly\"\nsecret = \"{SANDBOX_READONLY_KEY}\"\nscopes = [\"read\"]\n\n{accounts}"
    );
    write_private(folder, &config_path, &config)?;
    Ok(Sandbox {
        config_path,
        simulators,
        installed_plugins,
    })
}

/// Writes `text` to `path` readable by its owner only (mode 0600: the file holds secrets, test
/// values or not, and an operator may copy it as a starting point), through a temporary file
/// renamed into place, so the host watching the folder never reads half of it.
fn write_private(folder: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = folder.join(".plugins.toml.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
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
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(provider) = rest.strip_suffix(std::env::consts::DLL_SUFFIX) else {
            continue;
        };
        if provider == "template" {
            continue;
        }
        let file = format!(
            "{}{provider}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        );
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
