//! Instructions per request of a server process alone, under callgrind.
//!
//! `gatehouse-bench server-callgrind [N] [ledgered|read]` starts each server (the reference service,
//! `gatehouse serve` on its SQLite ledger, and the baseline build when
//! `GATEHOUSE_BENCH_BASELINE` names one) under `valgrind --tool=callgrind`, makes 200 warm-up
//! requests from one keep-alive client, zeroes the counters (`callgrind_control -z`), makes `N`
//! requests one at a time and dumps the counters (`callgrind_control -d`). Start-up and the
//! warm-up are not counted, and neither is the client nor the simulator (other processes): what is
//! left is the server's own work per request, the figure to hold against the reference's. The
//! dumps stay in `target/bench-server-callgrind/` for `callgrind_annotate`. A last argument
//! counts only the calls whose name starts with it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::artifacts::target_dir;
use crate::callgrind::total_instructions;
use crate::served::{
    LedgerChoice, ServedCall, ServerProcess, build_refsvc, served_call, spawn_gatehouse_under,
    spawn_refsvc_under,
};
use crate::served_section::BASELINE_VARIABLE;

/// Requests before the counters are zeroed: connections open, caches and statements warm.
const WARM_UP: u64 = 200;

/// The calls counted, each on a server of its own.
pub const CALLS: [(&str, ServedCall); 2] = [
    ("ledgered charge", ServedCall::LedgeredCharge),
    ("read (balance)", ServedCall::Balance),
];

/// Which server a count is of.
#[derive(Debug, Clone)]
pub enum Server {
    Reference(PathBuf),
    Gatehouse {
        label: String,
        executable: PathBuf,
        /// TOML lines added to the host's `[host]` table.
        host_settings: String,
    },
}

impl Server {
    pub fn label(&self) -> &str {
        match self {
            Server::Reference(_) => "reference service (refsvc)",
            Server::Gatehouse { label, .. } => label,
        }
    }

    fn file_stem(&self) -> String {
        self.label()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    }
}

/// The environment variable naming `[host]` settings (TOML, `;` between lines) for one more
/// server: this build so configured, measured beside it (`plugin_calls = "inline"`, say).
pub const VARIANT_VARIABLE: &str = "GATEHOUSE_BENCH_VARIANT_SETTINGS";

/// The servers of one run: the reference (when it builds), this build, this build with the
/// settings of [`VARIANT_VARIABLE`] when it is set, and the baseline.
pub fn servers(gatehouse: &Path) -> Vec<Server> {
    let mut servers = Vec::new();
    match build_refsvc() {
        Ok(binary) => servers.push(Server::Reference(binary)),
        Err(error) => eprintln!("server-callgrind: no reference service: {error:#}"),
    }
    servers.push(Server::Gatehouse {
        label: "gatehouse serve (this build)".into(),
        executable: gatehouse.to_path_buf(),
        host_settings: String::new(),
    });
    if let Ok(settings) = std::env::var(VARIANT_VARIABLE) {
        servers.push(Server::Gatehouse {
            label: format!("gatehouse serve (this build, {})", settings.trim()),
            executable: gatehouse.to_path_buf(),
            host_settings: settings
                .split(';')
                .map(|line| format!("{}\n", line.trim()))
                .collect(),
        });
    }
    if let Some(baseline) = std::env::var_os(BASELINE_VARIABLE) {
        servers.push(Server::Gatehouse {
            label: "gatehouse serve (baseline)".into(),
            executable: PathBuf::from(baseline),
            host_settings: String::new(),
        });
    }
    servers
}

/// One server's count for one call.
#[derive(Debug, Clone)]
pub struct ServerCount {
    pub server: String,
    pub call: &'static str,
    pub requests: u64,
    pub instructions: u64,
    /// The dump, for `callgrind_annotate`.
    pub dump: PathBuf,
}

impl ServerCount {
    pub fn per_request(&self) -> f64 {
        self.instructions as f64 / self.requests.max(1) as f64
    }
}

/// Counts every call on every server.
pub async fn count_all(
    servers: &[Server],
    simulator_base_url: &str,
    requests: u64,
    only: Option<&str>,
) -> anyhow::Result<Vec<ServerCount>> {
    check_valgrind()?;
    let folder = target_dir().join("bench-server-callgrind");
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    let mut counts = Vec::new();
    for (call_name, call) in CALLS {
        if only.is_some_and(|word| !call_name.starts_with(word)) {
            continue;
        }
        for server in servers {
            eprintln!("server-callgrind: {}, {call_name}...", server.label());
            let out = folder.join(format!(
                "callgrind.{}.{}.out",
                server.file_stem(),
                call_name.split_whitespace().next().unwrap_or("call")
            ));
            let instructions = count_one(server, call, simulator_base_url, requests, &out)
                .await
                .with_context(|| format!("{}, {call_name}", server.label()))?;
            counts.push(ServerCount {
                server: server.label().to_string(),
                call: call_name,
                requests,
                instructions,
                dump: dump_of(&out),
            });
        }
    }
    Ok(counts)
}

/// The file `callgrind_control -d` writes first for `--callgrind-out-file=out`.
fn dump_of(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

async fn count_one(
    server: &Server,
    call: ServedCall,
    simulator_base_url: &str,
    requests: u64,
    out: &Path,
) -> anyhow::Result<u64> {
    let dump = dump_of(out);
    for stale in [out, dump.as_path()] {
        let _ = std::fs::remove_file(stale);
    }
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let process: ServerProcess = match server {
        Server::Reference(binary) => {
            spawn_refsvc_under(&wrapper, binary, simulator_base_url).await?
        }
        Server::Gatehouse {
            executable,
            host_settings,
            ..
        } => {
            spawn_gatehouse_under(
                &wrapper,
                executable,
                simulator_base_url,
                &LedgerChoice::Sqlite,
                host_settings,
            )
            .await?
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .context("client")?;
    let mut sequence = u64::from(std::process::id()) << 32;
    let base = &process.base_url;
    let mut requests_made = |count: u64, what: &'static str| {
        let http = &http;
        let first = sequence;
        sequence += count;
        async move {
            for n in first..first + count {
                served_call(http, base, call, n + 1)
                    .await
                    .map_err(|error| anyhow::anyhow!("{what} request: {error}"))?;
            }
            anyhow::Ok(())
        }
    };
    requests_made(WARM_UP, "warm-up").await?;
    control(process.pid(), "-z")?;
    requests_made(requests, "counted").await?;
    control(process.pid(), "-d")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let instructions = loop {
        // The dump is written by the server's next scheduled valgrind check; wait for a whole
        // file (its totals line is written last).
        if let Some(total) = std::fs::read_to_string(&dump)
            .ok()
            .and_then(|text| total_instructions(&text))
        {
            break total;
        }
        if Instant::now() > deadline {
            bail!("no whole dump at {} after 60 s", dump.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(process);
    Ok(instructions)
}

fn check_valgrind() -> anyhow::Result<()> {
    let found = Command::new("callgrind_control")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        Ok(())
    } else {
        bail!("callgrind_control not found: install valgrind (Debian: apt-get install valgrind)")
    }
}

/// `callgrind_control <option> <pid>`: valgrind runs the server in the same process id.
fn control(pid: u32, option: &str) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .arg(option)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running callgrind_control")?;
    if !status.success() {
        bail!("callgrind_control {option} {pid} failed: {status}");
    }
    Ok(())
}

/// The report: instructions per request, each server's against the reference's.
pub fn render(counts: &[ServerCount], out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n## Server-only instructions per request (callgrind, {WARM_UP} warm-up requests, one client)\n"
    );
    let _ = writeln!(
        out,
        "| call | server | instructions per request | × reference | dump |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---|");
    for count in counts {
        let reference = counts
            .iter()
            .find(|other| other.call == count.call && other.server.starts_with("reference"))
            .map(ServerCount::per_request);
        let ratio = reference
            .filter(|reference| *reference > 0.0)
            .map_or("–".to_string(), |reference| {
                format!("{:.2}", count.per_request() / reference)
            });
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {ratio} | `{}` |",
            count.call,
            count.server,
            count.per_request(),
            count.dump.display()
        );
    }
}
