//! Served paths: separate server processes called over HTTP by this process's clients, side by
//! side in one run: the reference service (`../shared/refsvc`, the durable work of a ledgered
//! charge and nothing more), `gatehouse serve` on its SQLite ledger, `gatehouse serve` on a
//! PostgreSQL ledger, and three `gatehouse serve` sharing one PostgreSQL ledger (the clients
//! spread over them). Each server is its own process, so its CPU per request is read from the
//! kernel and not mixed with the clients'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::artifacts::{target_dir, workspace_root};
use crate::host::{API_KEY, prepare_folder, work_dir};
use crate::process::{Process, children_cpu, thread_cpu};
use crate::simulator::AUTH_TOKEN;
use crate::stats::Latencies;

/// The body both services accept for a charge (the host's `ChargeRequest`).
pub const CHARGE_BODY: &str = r#"{"amount":{"minor_units":1500,"currency":"XOF"},"customer":{"phone":"90123456"},"payment_method":"FLOOZ"}"#;

/// The environment variable `gatehouse serve` reads its API key from.
const API_KEY_VARIABLE: &str = "GATEHOUSE_API_KEY";

/// The environment variable the PostgreSQL hosts read their ledger password from.
const LEDGER_PASSWORD_VARIABLE: &str = "GATEHOUSE_BENCH_LEDGER_PASSWORD";

/// One server process the bench started; stopped (by its id) when dropped.
pub struct ServerProcess {
    pub base_url: String,
    child: Child,
    _dir: TempDir,
}

impl ServerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a `gatehouse serve` keeps its ledger.
#[derive(Debug, Clone)]
pub enum LedgerChoice {
    /// `host.ledger`, the SQLite file in the host's folder.
    Sqlite,
    /// `[ledger] url`, with the password given through the environment.
    Postgres { url: String, password: String },
}

fn free_port() -> anyhow::Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(probe.local_addr().context("probe address")?.port())
}

/// Starts `gatehouse serve` with the five plugins and the bench account, ready when it returns.
pub async fn spawn_gatehouse(
    executable: &Path,
    simulator_base_url: &str,
    ledger: &LedgerChoice,
) -> anyhow::Result<ServerProcess> {
    spawn_gatehouse_with(executable, simulator_base_url, ledger, "").await
}

/// [`spawn_gatehouse`] with `host_settings` (TOML lines) added to its `[host]` table.
pub async fn spawn_gatehouse_with(
    executable: &Path,
    simulator_base_url: &str,
    ledger: &LedgerChoice,
    host_settings: &str,
) -> anyhow::Result<ServerProcess> {
    spawn_gatehouse_under(&[], executable, simulator_base_url, ledger, host_settings).await
}

/// [`spawn_gatehouse_with`], run by `wrapper` (a program and its arguments, such as
/// `valgrind --tool=callgrind`; none for the executable itself).
pub async fn spawn_gatehouse_under(
    wrapper: &[String],
    executable: &Path,
    simulator_base_url: &str,
    ledger: &LedgerChoice,
    host_settings: &str,
) -> anyhow::Result<ServerProcess> {
    let dir = work_dir()?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let config_path = prepare_folder(dir.path(), simulator_base_url, &listen)?;
    let mut command = wrapped(wrapper, executable);
    // As an operator deploys it (and as the reference's `bench/compare.py` runs it): the API key
    // from the environment, not written in the file.
    let mut config = std::fs::read_to_string(&config_path)
        .context("reading plugins.toml")?
        .replace(
            &format!("keys = [\"{API_KEY}\"]"),
            &format!("keys = [\"${{{API_KEY_VARIABLE}}}\"]"),
        )
        .replacen("[host]\n", &format!("[host]\n{host_settings}"), 1);
    command.env(API_KEY_VARIABLE, API_KEY);
    if let LedgerChoice::Postgres { url, password } = ledger {
        config.push_str(&format!(
            "\n[ledger]\nurl = \"{url}\"\npassword = \"${{{LEDGER_PASSWORD_VARIABLE}}}\"\n"
        ));
        command.env(LEDGER_PASSWORD_VARIABLE, password);
    }
    std::fs::write(&config_path, config).context("writing plugins.toml")?;
    let log = std::fs::File::create(dir.path().join("serve.log")).context("serve.log")?;
    let child = command
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        // The default log level (info), to a file, as a deployment would run it.
        .env_remove("GATEHOUSE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting gatehouse serve")?;
    let server = ServerProcess {
        base_url: format!("http://{listen}"),
        child,
        _dir: dir,
    };
    wait_ready(
        &format!("{}/readyz", server.base_url),
        ready_deadline(wrapper),
    )
    .await?;
    Ok(server)
}

/// `executable` as a command, behind `wrapper` when there is one.
fn wrapped(wrapper: &[String], executable: &Path) -> Command {
    match wrapper.split_first() {
        None => Command::new(executable),
        Some((program, arguments)) => {
            let mut command = Command::new(program);
            command.args(arguments).arg(executable);
            command
        }
    }
}

/// How long a server may take to answer its first request: far longer under a wrapper such as
/// valgrind, which runs start-up (plugin loading and its layout checks) some fifty times slower.
fn ready_deadline(wrapper: &[String]) -> Duration {
    if wrapper.is_empty() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(300)
    }
}

/// The reference service's sources: `../shared/refsvc` next to the checkout, or
/// `GATEHOUSE_BENCH_REFSVC`.
fn refsvc_sources() -> PathBuf {
    std::env::var_os("GATEHOUSE_BENCH_REFSVC")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/refsvc"))
}

/// Builds the reference service in release into a target folder of the bench's own
/// (`target/bench-refsvc`), so its lock file and dependencies never touch the workspace's.
pub fn build_refsvc() -> anyhow::Result<PathBuf> {
    let sources = refsvc_sources();
    let manifest = sources.join("Cargo.toml");
    if !manifest.exists() {
        bail!("no reference service at {}", sources.display());
    }
    let target = target_dir().join("bench-refsvc");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .context("running cargo to build the reference service")?;
    if !status.success() {
        bail!("building the reference service failed");
    }
    let binary = target.join("release").join("refsvc");
    if !binary.exists() {
        bail!("{} was not built", binary.display());
    }
    Ok(binary)
}

/// Starts the reference service (ledger on disk beside the hosts', `synchronous=FULL`).
pub async fn spawn_refsvc(
    binary: &Path,
    simulator_base_url: &str,
) -> anyhow::Result<ServerProcess> {
    spawn_refsvc_under(&[], binary, simulator_base_url).await
}

/// [`spawn_refsvc`], run by `wrapper` (see [`spawn_gatehouse_under`]).
pub async fn spawn_refsvc_under(
    wrapper: &[String],
    binary: &Path,
    simulator_base_url: &str,
) -> anyhow::Result<ServerProcess> {
    let dir = work_dir()?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let log = std::fs::File::create(dir.path().join("refsvc.log")).context("refsvc.log")?;
    let child = wrapped(wrapper, binary)
        .current_dir(dir.path())
        .env("REFSVC_LISTEN", &listen)
        .env("REFSVC_UPSTREAM", simulator_base_url)
        .env("REFSVC_LEDGER", dir.path().join("ledger.sqlite"))
        .env("REFSVC_API_KEY", API_KEY)
        .env("REFSVC_AUTH_TOKEN", AUTH_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting the reference service")?;
    let server = ServerProcess {
        base_url: format!("http://{listen}"),
        child,
        _dir: dir,
    };
    wait_ready(
        &format!("{}/stats", server.base_url),
        ready_deadline(wrapper),
    )
    .await?;
    Ok(server)
}

async fn wait_ready(url: &str, within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|answer| answer.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a served path is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedCall {
    /// `POST …/charges` with a fresh `Idempotency-Key`: the ledgered charge.
    LedgeredCharge,
    /// `GET …/balance`: a read.
    Balance,
}

/// One closed-loop measurement of a served path.
#[derive(Debug, Clone, Default)]
pub struct ServedRun {
    pub completed: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// CPU the server processes used (all of them, for a fleet).
    pub server_cpu: Duration,
    /// The same, by thread name (see [`thread_cpu`]): where the server's time goes.
    pub threads: BTreeMap<String, Duration>,
    /// CPU the database server's processes used meanwhile (a PostgreSQL path; zero otherwise).
    /// The paths run one at a time, so the server's CPU in a path's window is that path's.
    pub database_cpu: Duration,
    pub first_error: Option<String>,
}

impl ServedRun {
    pub fn add(&mut self, other: ServedRun) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.server_cpu += other.server_cpu;
        self.database_cpu += other.database_cpu;
        for (name, cpu) in other.threads {
            *self.threads.entry(name).or_insert(Duration::ZERO) += cpu;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn per_second(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.completed as f64 / self.elapsed.as_secs_f64()
        }
    }

    pub fn server_cpu_micros_per_call(&self) -> f64 {
        micros_per_call(self.server_cpu, self.completed)
    }

    pub fn database_cpu_micros_per_call(&self) -> f64 {
        micros_per_call(self.database_cpu, self.completed)
    }
}

fn micros_per_call(cpu: Duration, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / calls as f64
    }
}

/// A served path: one or more servers answering the same API (a fleet is called round-robin).
pub struct ServedPath {
    pub label: String,
    pub servers: Vec<ServerProcess>,
    /// The database server's process id (PostgreSQL's postmaster), whose children's CPU is
    /// counted as [`ServedRun::database_cpu`].
    pub database_server: Option<u32>,
}

/// The clients' shared state for one run.
struct Clients {
    http: reqwest::Client,
    urls: Vec<String>,
    /// Idempotency keys unique across the whole run (every path, every round).
    sequence: Arc<AtomicU64>,
}

impl Clients {
    async fn call(&self, call: ServedCall) -> Result<(), String> {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let base = &self.urls[(n as usize) % self.urls.len()];
        served_call(&self.http, base, call, n).await
    }
}

/// One `call` to the server at `base`; `n` makes the charge's idempotency key, which must be
/// unique across the run.
pub async fn served_call(
    http: &reqwest::Client,
    base: &str,
    call: ServedCall,
    n: u64,
) -> Result<(), String> {
    match call {
        ServedCall::LedgeredCharge => {
            ledgered_charge(http, base, &format!("served-{n:024x}")).await
        }
        ServedCall::Balance => {
            let request = http.get(format!("{base}/v1/paygateglobal/main/balance"));
            expect_status(request, base, "succeeded").await
        }
    }
}

/// `POST {base}/v1/paygateglobal/main/charges` with `idempotency_key`: the ledgered charge,
/// answered `pending` (PayGateGlobal's customer confirms on their phone).
pub async fn ledgered_charge(
    http: &reqwest::Client,
    base: &str,
    idempotency_key: &str,
) -> Result<(), String> {
    let request = http
        .post(format!("{base}/v1/paygateglobal/main/charges"))
        .header("content-type", "application/json")
        .header("idempotency-key", idempotency_key)
        .body(CHARGE_BODY);
    expect_status(request, base, "pending").await
}

/// Sends `request` with the bench's key; an answer other than a success whose `status` is
/// `expected` is the error, naming `base`.
async fn expect_status(
    request: reqwest::RequestBuilder,
    base: &str,
    expected: &str,
) -> Result<(), String> {
    let response = request
        .bearer_auth(API_KEY)
        .send()
        .await
        .map_err(|error| format!("{base}: {error}"))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|error| format!("{base} body: {error}"))?;
    let answer: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|error| format!("{base} answer: {error}"))?;
    if status.is_success() && answer["status"] == expected {
        Ok(())
    } else {
        Err(format!("{base}: HTTP {status}: {answer}"))
    }
}

/// `concurrency` clients for `window`, each sending its next request when the last is answered.
pub async fn closed_loop(
    path: &ServedPath,
    call: ServedCall,
    concurrency: usize,
    window: Duration,
    sequence: Arc<AtomicU64>,
) -> ServedRun {
    let clients = Arc::new(Clients {
        http: reqwest::Client::new(),
        urls: path
            .servers
            .iter()
            .map(|server| server.base_url.clone())
            .collect(),
        sequence,
    });
    let cpu = || -> Duration {
        path.servers
            .iter()
            .map(|server| Process::Other(server.pid()).cpu_time())
            .sum()
    };
    let threads = || {
        let mut total: BTreeMap<String, Duration> = BTreeMap::new();
        for server in &path.servers {
            for (name, cpu) in thread_cpu(server.pid()) {
                *total.entry(name).or_insert(Duration::ZERO) += cpu;
            }
        }
        total
    };
    let database_cpu = || path.database_server.map_or(Duration::ZERO, children_cpu);
    let threads_before = threads();
    let cpu_before = cpu();
    let database_before = database_cpu();
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let clients = clients.clone();
        tasks.push(tokio::spawn(async move {
            let mut run = ServedRun::default();
            while Instant::now() < deadline {
                let one = Instant::now();
                match clients.call(call).await {
                    Ok(()) => {
                        run.completed += 1;
                        run.latencies.push(one.elapsed());
                    }
                    Err(error) => {
                        run.failed += 1;
                        run.first_error.get_or_insert(error);
                    }
                }
            }
            run
        }));
    }
    let mut total = ServedRun::default();
    for task in tasks {
        if let Ok(run) = task.await {
            total.add(run);
        }
    }
    total.elapsed = started.elapsed();
    total.server_cpu = cpu().saturating_sub(cpu_before);
    total.database_cpu = database_cpu().saturating_sub(database_before);
    total.threads = threads()
        .into_iter()
        .map(|(name, after)| {
            let before = threads_before.get(&name).copied().unwrap_or(Duration::ZERO);
            (name, after.saturating_sub(before))
        })
        .collect();
    total
}

/// `rounds` rounds, each visiting every path in turn (the order rotated each round), so that
/// the machine's slow and fast moments fall on every path alike.
pub async fn interleaved(
    paths: &[&ServedPath],
    call: ServedCall,
    concurrency: usize,
    window: Duration,
    rounds: usize,
) -> Vec<ServedRun> {
    let sequence = Arc::new(AtomicU64::new(0));
    let mut totals: Vec<ServedRun> = paths.iter().map(|_| ServedRun::default()).collect();
    for round in 0..rounds {
        for offset in 0..paths.len() {
            let index = (round + offset) % paths.len();
            let run = closed_loop(paths[index], call, concurrency, window, sequence.clone()).await;
            totals[index].add(run);
        }
    }
    totals
}
