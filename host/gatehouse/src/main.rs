//! `gatehouse`: the command-line shell over the host library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gatehouse::{exit, listing};
use gatehouse_core::{Config, Gateway};
use gatehouse_plugin_api::Command as PluginCommand;
use gatehouse_service::{ApiError, Service};
use serde_json::Value;

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
    /// List the plugins served, their versions and operations, load errors and paused accounts:
    /// asked of the running server on `host.listen` when it serves this configuration, read from
    /// the plugins folder otherwise (the first line, or `source` in JSON, says which).
    Plugins {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read the plugins folder even when a server runs.
        #[arg(long)]
        disk: bool,
    },
    /// Run one normalized command and print its outcome as JSON. Money-moving commands and
    /// payment pages are recorded in the configured ledger before they are sent, like the API's.
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
        /// An idempotency key: a retry with the same key and command is answered from the ledger
        /// and never reaches the provider twice.
        #[arg(long)]
        idempotency_key: Option<String>,
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
    /// Plugin authors' and operators' tools: check, sign, install, history, rollback.
    #[command(subcommand)]
    Plugin(PluginCommands),
    /// An operator's actions on the ledger (on the configured ledger file, beside a running
    /// server or not), recorded with the actor `cli` unless `--actor` names another.
    #[command(subcommand)]
    Ledger(LedgerCommands),
    /// Show the hosts sharing the configured PostgreSQL ledger, live or gone, with the plugin
    /// versions (and SHA-256) each serves: read from the database itself, so it answers with
    /// every server down. A SQLite ledger has no fleet (`GET /v1/fleet` on the server shows it
    /// alone).
    Fleet {
        /// Print JSON (the shape of `GET /v1/fleet`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift an account's pause on the running server (pauses live in its memory): the server
    /// on `host.listen` that serves this configuration, with a key that may operate the account.
    Resume { provider: String, account: String },
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
enum LedgerCommands {
    /// Print an entry, its history, and why it needs an operator if it does.
    Show { id: String },
    /// Settle an entry that needs an operator (or is unknown or pending) by hand, as succeeded
    /// or failed; refused for an entry already final or still `sending`.
    Settle {
        id: String,
        /// succeeded or failed.
        #[arg(long)]
        state: String,
        /// What the operator saw (recorded in the entry's history).
        #[arg(long)]
        reason: String,
        /// The provider's reference for the transaction, when known.
        #[arg(long)]
        provider_reference: Option<String>,
        /// Who is acting, recorded in the history.
        #[arg(long, default_value = "cli")]
        actor: String,
    },
    /// Reconcile one entry now through the provider's status operation.
    Reconcile {
        id: String,
        /// A `sending` entry younger than this is left alone: a running server may have it in
        /// flight. Use 0 when no server runs on this ledger.
        #[arg(long, default_value_t = 600)]
        sending_min_age_secs: u64,
        #[arg(long, default_value = "cli")]
        actor: String,
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
    /// Make a minisign key pair for signing plugins: `<out>.pub` (its base64 line goes in
    /// `[signatures] trusted_keys`) and `<out>.key` (secret, mode 0600: keep it off the hosts).
    Keygen {
        /// The files' common name.
        #[arg(long, default_value = "gatehouse-signing")]
        out: PathBuf,
    },
    /// Sign a plugin library: writes `<file>.minisig` beside it (minisign format).
    Sign {
        file: PathBuf,
        /// The secret key made by `gatehouse plugin keygen` (or an unencrypted minisign key).
        #[arg(long)]
        key: PathBuf,
    },
    /// Install a plugin library into the running (or next) host: checks its signature
    /// (`[signatures]`) and conformance first, stores it in the versions folder
    /// (`<plugins>/.versions/<provider>/<version>-<sha256>/`) and activates it by an atomic
    /// rename into the plugins folder, which a running host's watcher loads.
    Install {
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The versions of a provider's plugin kept side by side, which one is active, and when each
    /// was activated and by what.
    History {
        provider: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Activate the version installed before the active one (or `--to` a kept version), by the
    /// same atomic rename: requests in flight finish on the version they started with.
    Rollback {
        provider: String,
        /// A kept version (`1.0.0`) or entry (`1.0.0-0123456789ab`).
        #[arg(long)]
        to: Option<String>,
        /// Print the result as JSON.
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

// mimalloc rather than glibc's malloc: a served request makes some two hundred small
// allocations across the async workers, the plugin pool and the ledger writer, and under perf
// glibc's malloc and free were 16 % of a served read's CPU (BENCHMARKS.md, run AK). Only the
// binary sets it: the crates stay on whatever allocator the program embedding them chose, and
// a plugin library keeps its own (everything that crosses the ABI is freed by its side).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Commands::Serve) && !is_sandbox(&cli.command) {
        restore_default_sigpipe();
    }
    let default_level = match cli.command {
        Commands::Plugins { .. }
        | Commands::Call { .. }
        | Commands::Reconcile { .. }
        | Commands::Ledger(_)
        | Commands::Resume { .. }
        | Commands::Fleet { .. }
        | Commands::Plugin(_) => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // `GATEHOUSE_LOG_FORMAT=json`: one JSON object per line, with the current span's fields
    // (`span.request_id`) and every enclosing span's (`spans`), for a log pipeline to index.
    if std::env::var("GATEHOUSE_LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"))
    {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
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
            ExitCode::from(exit::BAD_INVOCATION)
        }
    }
}

/// A short-lived command whose output is piped into `head` should end quietly when the reader
/// goes away, as Unix tools do, instead of panicking in `println!` on `EPIPE` (Rust ignores
/// SIGPIPE by default). Not for `serve`/`sandbox`: a server whose log reader dies must keep
/// serving (its sockets use `MSG_NOSIGNAL` either way).
fn restore_default_sigpipe() {
    // SAFETY: called once at the start of `main`, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn is_sandbox(command: &Commands) -> bool {
    #[cfg(feature = "sandbox")]
    if matches!(command, Commands::Sandbox { .. }) {
        return true;
    }
    let _ = command;
    false
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "sandbox")]
    if let Commands::Sandbox { folder, listen } = &cli.command {
        return sandbox(folder, listen).await;
    }
    if let Commands::Plugin(command) = &cli.command
        && !matches!(
            command,
            PluginCommands::Install { .. }
                | PluginCommands::History { .. }
                | PluginCommands::Rollback { .. }
        )
    {
        return plugin_tool(command);
    }
    let config = Config::load(&cli.config)?;
    if let Some(problem) = gatehouse::first_run::problem(&config) {
        eprintln!("{problem}");
        return Ok(ExitCode::from(exit::BAD_INVOCATION));
    }
    if let Commands::Plugin(command) = &cli.command {
        return deploy_tool(&config, command);
    }
    match cli.command {
        Commands::Plugins { json, disk } => {
            let (listing, source) = if disk {
                let why = "--disk".to_string();
                (disk_listing(config).await, listing::Source::Disk { why })
            } else {
                match listing::ask_server(&config).await {
                    Ok(answer) => answer,
                    Err(why) => (disk_listing(config).await, listing::Source::Disk { why }),
                }
            };
            if json {
                let mut listing = listing.clone();
                listing["source"] = source.to_json();
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else {
                print!("{}", listing::render(&listing, &source));
            }
            // A refused plugin file is something an operator must see, in a script too.
            Ok(if listing::has_load_errors(&listing) {
                ExitCode::from(exit::REFUSED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Commands::Call {
            provider,
            operation,
            account,
            json,
            idempotency_key,
        } => {
            let mut fields: Value = serde_json::from_str(&json).context("--json is not JSON")?;
            let object = fields
                .as_object_mut()
                .context("--json must be a JSON object")?;
            object.insert("operation".into(), Value::String(operation.clone()));
            let command: PluginCommand = serde_json::from_value(fields)
                .with_context(|| format!("not a valid `{operation}` command"))?;
            let service = match Service::open(config).await {
                Ok(service) => service,
                Err(error) => return Ok(print_error(ApiError::from(error))),
            };
            match service
                .acting_as("cli")
                .execute(&provider, &account, command, idempotency_key)
                .await
            {
                Ok(answer) => {
                    println!("{}", serde_json::to_string_pretty(&answer)?);
                    Ok(exit::for_outcome(answer.outcome.status))
                }
                Err(error) => Ok(print_error(ApiError::from(error))),
            }
        }
        Commands::Serve => {
            serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Fleet { json } => fleet(&config, json).await,
        Commands::Resume { provider, account } => {
            match listing::resume_on_server(&config, &provider, &account).await {
                Ok(answer) => {
                    println!("{}", serde_json::to_string_pretty(&answer)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(listing::ResumeError::NoServer(why)) => {
                    eprintln!(
                        "gatehouse: nothing was resumed: pauses live in the running server, and {why}"
                    );
                    Ok(ExitCode::from(exit::HOST_FAILURE))
                }
                Err(listing::ResumeError::Refused(why)) => {
                    eprintln!("gatehouse: nothing was resumed: {why}");
                    Ok(ExitCode::from(exit::REFUSED))
                }
            }
        }
        Commands::Reconcile {
            sending_min_age_secs,
        } => {
            let service = match Service::open(config).await {
                Ok(service) => service,
                Err(error) => return Ok(print_error(ApiError::from(error))),
            };
            let report = service
                .reconcile_with(10_000, std::time::Duration::from_secs(sending_min_age_secs))
                .await;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::HOST_FAILURE)
            })
        }
        Commands::Ledger(command) => {
            let service = match Service::open(config).await {
                Ok(service) => service,
                Err(error) => return Ok(print_error(ApiError::from(error))),
            };
            ledger_tool(&service, command).await
        }
        #[cfg(feature = "sandbox")]
        Commands::Sandbox { .. } => unreachable!("handled before the configuration is read"),
        Commands::Plugin(_) => unreachable!("handled before the configuration is read"),
    }
}

/// `gatehouse ledger …`: the operator's actions, through the service like the API's.
async fn ledger_tool(service: &Service, command: LedgerCommands) -> anyhow::Result<ExitCode> {
    let answer = match command {
        LedgerCommands::Show { id } => match service.ledger().entry_with_history(&id).await {
            Ok(Some((entry, history))) => Ok(serde_json::json!({
                "entry": entry,
                "history": history,
                "needs_operator": entry.operator_flag.as_ref().map(|reason| serde_json::json!({
                    "reason": reason,
                    "settleable": entry.state.is_settleable(),
                })),
            })),
            Ok(None) => Err(ApiError::new(
                gatehouse_core::ErrorCode::NotFound,
                format!("no ledger entry `{id}`"),
            )),
            Err(error) => Err(ApiError::from(error)),
        },
        LedgerCommands::Settle {
            id,
            state,
            reason,
            provider_reference,
            actor,
        } => {
            let state = match state.as_str() {
                "succeeded" => gatehouse_service::ledger::EntryState::Succeeded,
                "failed" => gatehouse_service::ledger::EntryState::Failed,
                other => anyhow::bail!("--state `{other}`: succeeded or failed"),
            };
            service
                .acting_as(&actor)
                .settle(&id, state, provider_reference, &reason)
                .await
                .map(|entry| serde_json::json!({ "entry": entry }))
                .map_err(ApiError::from)
        }
        LedgerCommands::Reconcile {
            id,
            sending_min_age_secs,
            actor,
        } => service
            .acting_as(&actor)
            .reconcile_one(&id, std::time::Duration::from_secs(sending_min_age_secs))
            .await
            .map(|(entry, report)| serde_json::json!({ "entry": entry, "report": report }))
            .map_err(ApiError::from),
    };
    match answer {
        Ok(answer) => {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => Ok(print_error(error)),
    }
}

fn plugin_tool(command: &PluginCommands) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommands::Check { file, json } => {
            let report = gatehouse::conformance::check_plugin_file(file);
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::REFUSED)
            })
        }
        PluginCommands::Keygen { out } => {
            let key = gatehouse::signing::keygen(out)?;
            println!("public key: {}", key.public_key_file.display());
            println!(
                "secret key: {} (keep it off the hosts)",
                key.secret_key_file.display()
            );
            println!(
                "trust it in plugins.toml:\n[signatures]\ntrusted_keys = [\"{}\"]",
                key.public_key
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommands::Sign { file, key } => {
            let signature = gatehouse::signing::sign(file, key)?;
            println!("signed: {}", signature.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommands::Install { .. }
        | PluginCommands::History { .. }
        | PluginCommands::Rollback { .. } => {
            unreachable!("handled by deploy_tool once the configuration is read")
        }
        PluginCommands::New { name, destination } => {
            let created = gatehouse::scaffold::new_plugin(name, destination)?;
            println!("created {}", created.display());
            if gatehouse::scaffold::inside_a_gatehouse_workspace(destination) {
                println!(
                    "next: it joins the workspace if it is under plugins/ (plugins/* is globbed); `cargo test -p gatehouse-plugin-{name}`"
                );
            } else {
                println!(
                    "outside a Gatehouse workspace: the crate is a workspace of its own, with concrete versions and gatehouse-plugin-api by path; next: `cd {} && cargo test`",
                    created.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `plugin install`, `history` and `rollback`: they need `plugins.toml` (the plugins folder, the
/// signature policy, the retention bound).
fn deploy_tool(config: &Config, command: &PluginCommands) -> anyhow::Result<ExitCode> {
    use gatehouse::deploy;
    let refused = |error: deploy::DeployError| {
        eprintln!("gatehouse: {error}");
        Ok(ExitCode::from(if error.is_refusal() {
            exit::REFUSED
        } else {
            exit::HOST_FAILURE
        }))
    };
    match command {
        PluginCommands::Install { file, json } => match deploy::install(config, file) {
            Ok(installed) => {
                if *json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "stored": installed.stored,
                            "activation": installed.activation,
                            "slot": installed.slot_path.display().to_string(),
                            "dropped": installed.dropped,
                            "already_kept": installed.already_kept,
                        }))?
                    );
                } else {
                    println!(
                        "installed {} {} ({}) as {}",
                        installed.activation.entry,
                        installed.stored.version,
                        installed.stored.signed_by.as_deref().map_or_else(
                            || "unsigned".to_string(),
                            |key| format!("signed by {key}")
                        ),
                        installed.slot_path.display()
                    );
                    for entry in &installed.dropped {
                        println!("dropped {entry} (plugins.keep_versions)");
                    }
                    println!(
                        "a running host loads it from the plugins folder now; a stopped host at its start"
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => refused(error),
        },
        PluginCommands::History { provider, json } => match deploy::history(config, provider) {
            Ok(history) => {
                if *json {
                    println!("{}", serde_json::to_string_pretty(&history)?);
                } else {
                    print!(
                        "{}",
                        deploy::render_history(&history, &config.host.plugins_dir)
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => refused(error),
        },
        PluginCommands::Rollback { provider, to, json } => {
            match deploy::rollback(config, provider, to.as_deref()) {
                Ok(activation) => {
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&activation)?);
                    } else {
                        println!(
                            "{provider}: {} ({}) is active again; a running host loads it from the plugins folder now",
                            activation.entry, activation.version
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => refused(error),
            }
        }
        _ => unreachable!("only the deploying commands come here"),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some(warning) = gatehouse::first_run::no_api_key_warning(&config) {
        eprintln!("{warning}");
    }
    let listen = config.host.listen.clone();
    let server_settings = config.server.clone();
    let ledger = gatehouse_service::ledger_access::ledger_location(&config);
    let service = Service::open(config)
        .await
        .with_context(|| format!("cannot open the ledger {ledger}"))?;
    // An install through the API passes the same conformance check as `plugin install`.
    service
        .gateway()
        .set_install_check(gatehouse::deploy::conformance_check());
    let _watch = gatehouse_core::watcher::watch(service.gateway())
        .context("cannot watch the plugins folder")?;
    let listing = gatehouse_service::api::plugins_listing(service.gateway());
    let source = listing::Source::Disk {
        why: "this server, starting".into(),
    };
    print!(
        "{}",
        listing::render(&listing, &source)
            .lines()
            .skip(1)
            .map(|line| format!("{line}\n"))
            .collect::<String>()
    );
    let listener = gatehouse_service::server::bind(&listen, &server_settings)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving the API");
    gatehouse_service::server::serve(
        service,
        listener,
        gatehouse_service::server::shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(feature = "sandbox")]
async fn sandbox(folder: &std::path::Path, listen: &str) -> anyhow::Result<ExitCode> {
    let sandbox = gatehouse::sandbox::prepare(folder, listen).await?;
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
        gatehouse::sandbox::SANDBOX_API_KEY
    );
    println!(
        "  read-only key: {} (scope read)",
        gatehouse::sandbox::SANDBOX_READONLY_KEY
    );
    println!("  console: http://{listen}/console");
    println!(
        "  try: curl -s -H 'Authorization: Bearer {}' http://{listen}/v1/plugins",
        gatehouse::sandbox::SANDBOX_API_KEY
    );
    serve(config).await?;
    drop(sandbox);
    Ok(ExitCode::SUCCESS)
}

/// Prints an error in the API's envelope and returns its exit code.
fn print_error(error: ApiError) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(&error.to_json()).unwrap_or_else(|_| error.message.clone())
    );
    exit::for_error(error.code)
}

/// The listing a server started now would serve: the plugins folder loaded as the host would.
async fn disk_listing(config: Config) -> Value {
    // As the folder is: a listing changes nothing in it.
    let gateway = Gateway::inspect(config).await;
    gatehouse_service::api::plugins_listing(&gateway)
}

/// `gatehouse fleet`: the fleet table of the configured ledger's database.
async fn fleet(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    if config.ledger.url.is_none() {
        println!(
            "the ledger is the SQLite file {}: one host, no fleet (GET /v1/fleet on the running server shows it alone)",
            config.host.ledger.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let opening = config.clone();
    // Opened and dropped off the async workers (the driver runs a runtime of its own). This
    // run never registers, so it leaves no row in the fleet table.
    let hosts = tokio::task::spawn_blocking(move || {
        let ledger = gatehouse_service::ledger_access::open_ledger(&opening)?;
        ledger.fleet()
    })
    .await
    .context("reading the fleet")?;
    let hosts = match hosts {
        Ok(hosts) => hosts.unwrap_or_default(),
        Err(error) => {
            eprintln!("gatehouse: cannot read the fleet: {error}");
            return Ok(ExitCode::from(exit::HOST_FAILURE));
        }
    };
    let view = gatehouse_service::fleet::render_json(&hosts, true, None);
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", gatehouse_service::fleet::render_text(&view));
    }
    Ok(ExitCode::SUCCESS)
}
