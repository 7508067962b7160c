//! `gatehouse`: the command-line shell over the host library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse_host::plugin_api::Command as PluginCommand;
use gatehouse_host::{Config, DispatchError, DispatchRequest, Gateway};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "A host for payment-provider plugins"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_CONFIG",
        default_value = "plugins.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// List loaded plugins, their versions and operations, load errors and paused accounts.
    Plugins {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run one normalized command and print its outcome as JSON.
    Call {
        provider: String,
        /// charge, refund, report, affiliate_payout, affiliate_refund, status, balance,
        /// payment_page, saved_accounts, delete_saved_account, sandbox_chargeback.
        operation: String,
        /// The account in plugins.toml.
        #[arg(long, default_value = "main")]
        account: String,
        /// The command's fields as a JSON object (without `operation`).
        #[arg(long, default_value = "{}")]
        json: String,
        /// The host-made reference to use (for a retry of a money-moving command).
        #[arg(long)]
        reference: Option<String>,
    },
    /// Run the host and its HTTP API: load plugins, watch the folder and the configuration,
    /// reconcile in the background, until SIGTERM or Ctrl-C.
    Serve,
    /// Run the host with every provider pointed at the repository's simulators (no credentials
    /// needed). Needs the plugins built next to this executable: `cargo build --workspace`.
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// Where the sandbox keeps its configuration, plugins and ledger.
        #[arg(long, default_value = "data/sandbox")]
        folder: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Plugin authors' tools.
    #[command(subcommand)]
    Plugin(PluginCommands),
    /// Settle unknown, pending and interrupted ledger entries through the providers' status
    /// operations now, and print what happened.
    Reconcile {
        /// Entries still `sending` younger than this are left alone: a running server may have
        /// them in flight. Use 0 when no server runs on this ledger.
        #[arg(long, default_value_t = 600)]
        sending_min_age_secs: u64,
    },
}

#[derive(Subcommand)]
enum PluginCommands {
    /// Load a plugin file as the host would and check it against the contract; exits non-zero
    /// with a readable report when anything fails.
    Check {
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a new plugin crate from the template.
    New {
        /// The provider id (lower case letters, digits, `-`, `_`).
        name: String,
        /// The folder the crate is created in (`<destination>/<name>`).
        #[arg(long, default_value = "plugins")]
        destination: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Commands::Plugins { .. }
        | Commands::Call { .. }
        | Commands::Reconcile { .. }
        | Commands::Plugin(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gatehouse: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("gatehouse: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "sandbox")]
    if let Commands::Sandbox { folder, listen } = &cli.command {
        return sandbox(folder, listen).await;
    }
    if let Commands::Plugin(command) = &cli.command {
        return plugin_tool(command);
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Commands::Plugins { json } => {
            let gateway = Gateway::start(config).await;
            print_plugins(&gateway, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Call {
            provider,
            operation,
            account,
            json,
            reference,
        } => {
            let mut fields: Value = serde_json::from_str(&json).context("--json is not JSON")?;
            let object = fields
                .as_object_mut()
                .context("--json must be a JSON object")?;
            object.insert("operation".into(), Value::String(operation.clone()));
            let command: PluginCommand = serde_json::from_value(fields)
                .with_context(|| format!("not a valid `{operation}` command"))?;
            let gateway = Gateway::start(config).await;
            let mut request = DispatchRequest::new(&provider, &account, command);
            request.reference = reference;
            match gateway.dispatch_request(request).await {
                Ok(dispatched) => {
                    let mut answer = serde_json::to_value(&dispatched.outcome)?;
                    if let Some(reference) = dispatched.reference {
                        answer["reference"] = json!(reference);
                    }
                    answer["plugin_version"] = json!(dispatched.plugin_version);
                    println!("{}", serde_json::to_string_pretty(&answer)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    println!("{}", serde_json::to_string_pretty(&error_json(&error))?);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Commands::Serve => {
            serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Reconcile {
            sending_min_age_secs,
        } => {
            let ledger = open_ledger(&config)?;
            let gateway = Gateway::start(config).await;
            let service = gatehouse_host::service::Service::new(gateway, ledger);
            let report = service
                .reconcile_with(10_000, std::time::Duration::from_secs(sending_min_age_secs))
                .await;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        #[cfg(feature = "sandbox")]
        Commands::Sandbox { .. } => unreachable!("handled before the configuration is read"),
        Commands::Plugin(_) => unreachable!("handled before the configuration is read"),
    }
}

fn plugin_tool(command: &PluginCommands) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommands::Check { file, json } => {
            let report = gatehouse_host::conformance::check_plugin_file(file);
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PluginCommands::New { name, destination } => {
            let created = gatehouse_host::scaffold::new_plugin(name, destination)?;
            println!("created {}", created.display());
            println!(
                "next: add it to the workspace (plugins/* is globbed), then `cargo test -p gatehouse-plugin-{name}`"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_ledger(
    config: &Config,
) -> anyhow::Result<std::sync::Arc<dyn gatehouse_host::ledger::Ledger>> {
    let ledger = gatehouse_host::ledger::SqliteLedger::open(&config.host.ledger)
        .with_context(|| format!("cannot open the ledger {}", config.host.ledger.display()))?;
    Ok(std::sync::Arc::new(ledger))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.host.listen.clone();
    let ledger = open_ledger(&config)?;
    let gateway = Gateway::start(config).await;
    let _watch =
        gatehouse_host::watcher::watch(&gateway).context("cannot watch the plugins folder")?;
    print_plugins(&gateway, false)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving the API");
    gatehouse_host::server::serve(
        gateway,
        ledger,
        listener,
        gatehouse_host::server::shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(feature = "sandbox")]
async fn sandbox(folder: &std::path::Path, listen: &str) -> anyhow::Result<ExitCode> {
    let sandbox = gatehouse_host::sandbox::prepare(folder, listen).await?;
    let config = Config::load(&sandbox.config_path)?;
    println!("=== SANDBOX: every provider is a simulator on loopback; no real money moves ===");
    for (provider, simulator) in &sandbox.simulators {
        println!("  simulator {provider:<14} {}", simulator.base_url());
    }
    println!(
        "  plugins installed: {}",
        sandbox.installed_plugins.join(", ")
    );
    println!(
        "  API: http://{listen}  (Authorization: Bearer {})",
        gatehouse_host::sandbox::SANDBOX_API_KEY
    );
    println!(
        "  try: curl -s -H 'Authorization: Bearer {}' http://{listen}/v1/plugins",
        gatehouse_host::sandbox::SANDBOX_API_KEY
    );
    serve(config).await?;
    drop(sandbox);
    Ok(ExitCode::SUCCESS)
}

fn error_json(error: &DispatchError) -> Value {
    let mut body = json!({"code": error.code(), "message": error.to_string()});
    if let Some(provider_error) = error.provider_error() {
        body["provider_code"] = json!(provider_error.provider_code);
        body["provider_message"] = json!(provider_error.provider_message);
        if !provider_error.fields.is_empty() {
            body["fields"] = json!(provider_error.fields);
        }
    }
    json!({ "error": body })
}

fn print_plugins(gateway: &Gateway, as_json: bool) -> anyhow::Result<()> {
    let statuses = gateway.registry().statuses();
    let failures = gateway.registry().failures();
    let pauses = gateway.paused_accounts();
    if as_json {
        let pauses: Vec<Value> = pauses
            .iter()
            .map(|(provider, account, pause)| json!({"provider": provider, "account": account, "reason": pause.reason, "until_unix": pause.until_unix}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "plugins_dir": gateway.registry().plugins_dir().display().to_string(),
                "plugins": statuses,
                "load_errors": failures,
                "paused_accounts": pauses,
            }))?
        );
        return Ok(());
    }
    println!(
        "plugins folder: {}",
        gateway.registry().plugins_dir().display()
    );
    if statuses.is_empty() {
        println!("no plugin loaded");
    }
    for status in &statuses {
        println!(
            "{:<14} {:<8} contract {:<6} {}\n{:<14} operations: {}",
            status.provider,
            status.plugin_version,
            status.contract_version,
            status.file,
            "",
            status.operations.join(", ")
        );
    }
    for failure in &failures {
        println!("load error: {}", failure.error);
    }
    for (provider, account, pause) in &pauses {
        println!(
            "paused: {provider}/{account} until {} — {}",
            pause.until_unix, pause.reason
        );
    }
    Ok(())
}
