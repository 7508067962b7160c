//! `gatehouse-bench`: the host against the direct call, side by side in one run.
//!
//! ```sh
//! cargo run --release -p gatehouse-bench            # the whole benchmark (about 2 minutes)
//! cargo run --release -p gatehouse-bench -- profile 3000   # only library dispatches, for a profiler
//! cargo run --release -p gatehouse-bench -- served         # only the disk's floor and the served paths
//! cargo run --release -p gatehouse-bench -- callgrind 100  # instructions per request, per path
//! cargo run --release -p gatehouse-bench -- server-callgrind 500 [ledgered|read] # the server process's own instructions per request
//! cargo run --release -p gatehouse-bench -- server-cpu 6     # the servers' user and system CPU and context switches per request
//! cargo run --release -p gatehouse-bench -- plugin-call 2000 # the plugin boundary alone: times, instructions per flow
//! cargo run --release -p gatehouse-bench -- soak [seconds] [interval] # reconciliation passes under load (130 s, 60 s)
//! ```
//!
//! Every figure is measured in the same run as its baseline, the variants interleaved, and
//! reported as a ratio: on a small shared machine absolute numbers drift, ratios hold. See
//! `BENCHMARKS.md` for the method and the latest figures.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gatehouse_bench::artifacts::{
    PROVIDER_PLUGINS, build_release_gatehouse, build_release_libraries,
};
use gatehouse_bench::callgrind;
use gatehouse_bench::host::{ApiHost, BenchHost, disk_ledger};
use gatehouse_bench::measure::{LoadRun, PacedRun, closed_loop, paced};
use gatehouse_bench::process::{Process, mib};
use gatehouse_bench::scenarios::{
    PluginCallCost, ReloadRun, Variant, gatehouse_serve_idle_rss, hot_reload,
    interleaved_throughput, plugin_call_cost, quiet_rss,
};
use gatehouse_bench::served_section::{self, ServedSection};
use gatehouse_bench::simulator::{SIMULATE_ARGUMENT, SimulatorProcess, run_child};
use gatehouse_bench::stats::{REPORTED_PERCENTILES, added_micros, human, human_micros};
use gatehouse_bench::targets::{Call, Path, Targets};
use gatehouse_service::Service;

/// Clients of the maximum-throughput runs.
const CONCURRENT_CLIENTS: usize = 16;
/// One closed-loop window; every variant gets `ROUNDS` of them, interleaved.
const THROUGHPUT_WINDOW: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 3;
/// The moderate fixed rate of the latency runs, per path (the paths interleaved).
const LATENCY_RATE_PER_PATH: u32 = 200;
const LATENCY_DURATION: Duration = Duration::from_secs(10);
/// Plugin swaps in the hot-reload section, and the library dispatch rate meanwhile.
const RELOAD_SWAPS: usize = 20;
const RELOAD_LOAD_RATE: u32 = 300;

/// The issue's targets.
const TARGET_LIBRARY_THROUGHPUT: f64 = 0.9;
const TARGET_API_THROUGHPUT: f64 = 0.7;
const TARGET_LIBRARY_P99_MICROS: f64 = 100.0;
const TARGET_API_P99_MICROS: f64 = 1_000.0;
const TARGET_ABI_RATIO: f64 = 2.0;
const TARGET_RELOAD: Duration = Duration::from_millis(250);
const TARGET_IDLE_RSS_KIB: u64 = 40 * 1024;

fn main() -> ExitCode {
    let mut arguments = std::env::args().skip(1);
    let result = match arguments.next().as_deref() {
        Some(SIMULATE_ARGUMENT) => run_child(),
        Some("profile") => {
            let dispatches = arguments
                .next()
                .and_then(|text| text.parse().ok())
                .unwrap_or(3_000);
            profile(dispatches)
        }
        Some("served") => served_only(),
        Some("soak") => {
            let mut settings = gatehouse_bench::soak::SoakSettings::default();
            if let Some(seconds) = arguments.next().and_then(|text| text.parse().ok()) {
                settings.duration = Duration::from_secs(seconds);
            }
            if let Some(seconds) = arguments.next().and_then(|text| text.parse().ok()) {
                settings.interval = Duration::from_secs(seconds);
            }
            soak_only(settings)
        }
        Some("plugin-call") => {
            plugin_call_only(arguments.next().and_then(|text| text.parse().ok()))
        }
        Some(gatehouse_bench::plugin_call::RUN_ARGUMENT) => {
            let case = arguments.next().unwrap_or_default();
            let flows = arguments
                .next()
                .and_then(|text| text.parse().ok())
                .unwrap_or(1_000);
            gatehouse_bench::plugin_call::run_flows(&case, flows)
        }
        Some("callgrind") => {
            let requests = arguments
                .next()
                .and_then(|text| text.parse().ok())
                .unwrap_or(100);
            callgrind(requests)
        }
        Some("server-callgrind") => {
            let requests = arguments
                .next()
                .and_then(|text| text.parse().ok())
                .unwrap_or(500);
            server_callgrind_only(requests, arguments.next())
        }
        Some("server-cpu") => {
            let seconds = arguments
                .next()
                .and_then(|text| text.parse().ok())
                .unwrap_or(6);
            server_cpu_only(Duration::from_secs(seconds))
        }
        Some(callgrind::RUN_ARGUMENT) => {
            let case = arguments.next().unwrap_or_default();
            let requests = arguments
                .next()
                .and_then(|text| text.parse().ok())
                .unwrap_or(100);
            callgrind_child(&case, requests)
        }
        None | Some("run") => run(),
        Some(other) => {
            eprintln!(
                "gatehouse-bench: unknown command `{other}`; use no argument, `profile [dispatches]`, `served`, `soak [seconds] [interval]`, `callgrind [requests]`, `server-callgrind [requests]`, `server-cpu [seconds]` or `plugin-call [flows under callgrind]`"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatehouse-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything one run measured.
struct Report {
    machine: String,
    /// The 1-minute load average when the measurements started and ended.
    load_before: String,
    load_after: String,
    throughput: Vec<(Call, Vec<(&'static str, LoadRun)>)>,
    latency: Vec<(Call, PacedRun)>,
    plugin_call: PluginCallCost,
    ledger: Vec<(&'static str, LoadRun)>,
    reload: ReloadRun,
    memory: Memory,
    /// The disk's floor and the served paths (absent when `gatehouse` did not build).
    served: Option<ServedSection>,
    /// The whole run, builds included.
    elapsed: Duration,
    /// From the first warm-up request to the last measurement.
    measuring: Duration,
}

#[derive(Default)]
struct Memory {
    process_start_kib: u64,
    idle_five_plugins_kib: u64,
    under_load_kib: u64,
    idle_after_load_kib: u64,
    gatehouse_serve_idle_kib: Option<u64>,
}

fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let process_start_kib = Process::This.rss_kib().unwrap_or(0);
    eprintln!("building the plugin libraries and the gatehouse executable in release (cargo)...");
    build_release_libraries()?;
    // The executable is only needed for one memory figure: a build failure (the host is being
    // edited) skips that figure instead of the whole run.
    let gatehouse = build_release_gatehouse()
        .inspect_err(|error| {
            eprintln!("  the `gatehouse serve` memory figure will be skipped: {error:#}")
        })
        .ok();
    let executable = std::env::current_exe().context("locating this executable")?;
    let simulator = SimulatorProcess::spawn(&executable)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut report = runtime.block_on(measure_everything(&simulator, gatehouse.as_deref()))?;
    report.memory.process_start_kib = process_start_kib;
    report.elapsed = started.elapsed();
    print!("{}", render(&mut report));
    Ok(())
}

async fn measure_everything(
    simulator: &SimulatorProcess,
    gatehouse: Option<&std::path::Path>,
) -> anyhow::Result<Report> {
    let simulator_process = simulator.process();
    eprintln!(
        "starting the host with {} plugins...",
        PROVIDER_PLUGINS.len()
    );
    let host = BenchHost::start(&simulator.base_url).await?;
    let mut memory = Memory {
        idle_five_plugins_kib: quiet_rss().await,
        ..Memory::default()
    };
    eprintln!("starting the HTTP API host (its own gateway and runtime)...");
    let api_host = ApiHost::start(&simulator.base_url)?;
    // The ledger section's service: the embedded gateway with a ledger of its own on disk.
    let (ledger, _ledger_dir) = disk_ledger()?;
    let service = Service::new(host.gateway.clone(), ledger);
    let targets = Targets::new(
        host.gateway.clone(),
        host.inline_gateway().await?,
        service,
        &simulator.base_url,
        &api_host.base_url,
    );
    let measuring_since = Instant::now();
    let load_before = load_average();

    eprintln!("warming up every path...");
    for call in Call::ALL {
        for path in Path::ALL {
            let run = closed_loop(4, Duration::from_millis(400), simulator_process, {
                let targets = targets.clone();
                move || {
                    let targets = targets.clone();
                    async move { targets.call(path, call).await.map(|_| ()) }
                }
            })
            .await;
            if run.failed > 0 || run.completed == 0 {
                anyhow::bail!(
                    "warm-up of {} {} failed: {}",
                    path.label(),
                    call.label(),
                    run.first_error.unwrap_or_default()
                );
            }
        }
    }

    let mut latency = Vec::new();
    for call in Call::ALL {
        eprintln!(
            "latency: {} at {LATENCY_RATE_PER_PATH}/s per path, paths interleaved, {} s...",
            call.label(),
            LATENCY_DURATION.as_secs()
        );
        latency.push((
            call,
            paced(
                targets.clone(),
                &Path::ALL,
                call,
                LATENCY_RATE_PER_PATH,
                LATENCY_DURATION,
            )
            .await,
        ));
    }

    let mut throughput = Vec::new();
    for call in Call::ALL {
        eprintln!(
            "throughput: {} with {CONCURRENT_CLIENTS} clients...",
            call.label()
        );
        let variants: Vec<(&'static str, Variant)> = Path::ALL
            .iter()
            .map(|path| (path.label(), Variant::Plain(*path, call)))
            .collect();
        let runs = interleaved_throughput(
            &targets,
            simulator_process,
            &variants,
            CONCURRENT_CLIENTS,
            THROUGHPUT_WINDOW,
            ROUNDS,
        )
        .await;
        for (_, run) in &runs {
            memory.under_load_kib = memory.under_load_kib.max(run.rss_under_load_kib);
        }
        throughput.push((call, runs));
    }

    eprintln!("ledger: idempotent charges with the SQLite ledger on and off...");
    let ledger = interleaved_throughput(
        &targets,
        simulator_process,
        &[
            (
                "ledger off: Gateway::dispatch",
                Variant::Plain(Path::Library, Call::Charge),
            ),
            (
                "ledger on: Service::execute + Idempotency-Key",
                Variant::LedgeredCharge,
            ),
        ],
        CONCURRENT_CLIENTS,
        THROUGHPUT_WINDOW,
        ROUNDS,
    )
    .await;

    eprintln!("plugin call cost: the cdylib against the same code linked statically...");
    let plugin_call =
        plugin_call_cost(&host, &simulator.base_url, Duration::from_millis(300), 5).await?;

    memory.idle_after_load_kib = quiet_rss().await;
    eprintln!("hot reload: {RELOAD_SWAPS} swaps under {RELOAD_LOAD_RATE} dispatches/s...");
    let reload = hot_reload(&host, &targets, RELOAD_SWAPS, RELOAD_LOAD_RATE).await?;

    eprintln!("memory of the real `gatehouse serve`, idle...");
    memory.gatehouse_serve_idle_kib = match gatehouse {
        Some(gatehouse) => match gatehouse_serve_idle_rss(gatehouse, &simulator.base_url).await {
            Ok(kib) => Some(kib),
            Err(error) => {
                eprintln!("  not measured: {error:#}");
                None
            }
        },
        None => None,
    };
    drop(targets);
    drop(api_host);
    let served = match gatehouse {
        Some(gatehouse) => Some(served_section::measure(gatehouse, &simulator.base_url).await?),
        None => None,
    };
    Ok(Report {
        machine: machine_description(),
        load_before,
        load_after: load_average(),
        throughput,
        latency,
        plugin_call,
        ledger,
        reload,
        memory,
        served,
        elapsed: Duration::ZERO,
        measuring: measuring_since.elapsed(),
    })
}

/// What the subcommands that start `gatehouse serve` share: the release builds, the simulator
/// child and a runtime.
struct ServedSetup {
    gatehouse: std::path::PathBuf,
    simulator: SimulatorProcess,
    runtime: tokio::runtime::Runtime,
}

impl ServedSetup {
    fn start() -> anyhow::Result<Self> {
        build_release_libraries()?;
        let gatehouse = build_release_gatehouse()?;
        let executable = std::env::current_exe().context("locating this executable")?;
        let simulator = SimulatorProcess::spawn(&executable)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        Ok(Self {
            gatehouse,
            simulator,
            runtime,
        })
    }
}

/// A subcommand report's title and machine line.
fn report_header(out: &mut String, command: &str, load_before: &str) {
    let _ = writeln!(out, "# gatehouse-bench {command}");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "machine: {}; load average {load_before} before, {} after",
        machine_description(),
        load_average()
    );
}

/// The disk's floor and the served paths only (reference, SQLite, PostgreSQL, three hosts).
fn served_only() -> anyhow::Result<()> {
    let setup = ServedSetup::start()?;
    let load_before = load_average();
    let mut section = setup.runtime.block_on(served_section::measure(
        &setup.gatehouse,
        &setup.simulator.base_url,
    ))?;
    let mut out = String::new();
    report_header(&mut out, "served", &load_before);
    let rows = served_section::render(&mut section, &mut out);
    let _ = writeln!(out);
    let _ = writeln!(out, "| target | wanted | measured | |");
    let _ = writeln!(out, "|---|---|---:|---|");
    for (name, wanted, measured, verdict) in rows {
        let _ = writeln!(out, "| {name} | {wanted} | {measured} | {verdict} |");
    }
    print!("{out}");
    Ok(())
}

/// The server processes' own instructions per request, the reference's beside (see
/// `server_callgrind.rs`).
fn server_callgrind_only(requests: u64, only: Option<String>) -> anyhow::Result<()> {
    use gatehouse_bench::server_callgrind;
    let setup = ServedSetup::start()?;
    let load_before = load_average();
    let servers = server_callgrind::servers(&setup.gatehouse);
    let counts = setup.runtime.block_on(server_callgrind::count_all(
        &servers,
        &setup.simulator.base_url,
        requests,
        only.as_deref(),
    ))?;
    let mut out = String::new();
    report_header(&mut out, "server-callgrind", &load_before);
    server_callgrind::render(&counts, &mut out);
    print!("{out}");
    Ok(())
}

/// The servers' user and system CPU and context switches per request (see `server_cpu.rs`).
fn server_cpu_only(window: Duration) -> anyhow::Result<()> {
    use gatehouse_bench::{server_callgrind, server_cpu};
    let setup = ServedSetup::start()?;
    let load_before = load_average();
    let servers = server_callgrind::servers(&setup.gatehouse);
    let rows = setup.runtime.block_on(server_cpu::measure(
        &servers,
        &setup.simulator.base_url,
        window,
    ))?;
    let mut out = String::new();
    report_header(&mut out, "server-cpu", &load_before);
    server_cpu::render(&rows, &mut out);
    print!("{out}");
    Ok(())
}

/// Reconciliation passes under a fixed load, beside a server that runs none (see `soak.rs`).
fn soak_only(settings: gatehouse_bench::soak::SoakSettings) -> anyhow::Result<()> {
    let setup = ServedSetup::start()?;
    let load_before = load_average();
    eprintln!(
        "soak: {} s at {}/s per server, reconciling every {} s...",
        settings.duration.as_secs(),
        settings.rate_per_server,
        settings.interval.as_secs()
    );
    let mut run = setup.runtime.block_on(gatehouse_bench::soak::run(
        &setup.gatehouse,
        &setup.simulator.base_url,
        settings,
    ))?;
    let mut out = String::new();
    report_header(&mut out, "soak", &load_before);
    let _ = writeln!(out);
    run.render(&mut out);
    print!("{out}");
    Ok(())
}

/// Instructions per request for each path, under callgrind (see `callgrind.rs`).
fn callgrind(requests: u64) -> anyhow::Result<()> {
    build_release_libraries()?;
    let executable = std::env::current_exe().context("locating this executable")?;
    let work = gatehouse_bench::host::work_dir()?;
    let counts = callgrind::count_all(&executable, requests, work.path())?;
    let direct = |case: &str| {
        counts
            .iter()
            .find(|count| count.case == case)
            .map_or(0.0, callgrind::Count::per_request)
    };
    println!(
        "# gatehouse-bench callgrind ({requests} and {} requests per path)",
        2 * requests
    );
    println!();
    println!(
        "| path | instructions per request (whole bench process: client + host) | over the direct call |"
    );
    println!("|---|---:|---:|");
    for count in &counts {
        let baseline = if count.case.ends_with("balance") || count.case == "http-read" {
            direct("direct-balance")
        } else {
            direct("direct-charge")
        };
        let over = if count.case.starts_with("direct") {
            "baseline".to_string()
        } else {
            format!("{:.0}", count.per_request() - baseline)
        };
        println!("| {} | {:.0} | {over} |", count.case, count.per_request());
    }
    Ok(())
}

/// The child `callgrind` runs under valgrind: the same start-up and warm-up whatever
/// `requests` is, then `requests` calls of `case`, one at a time.
/// The plugin boundary alone: every way of calling one charge flow timed (interleaved) and, given
/// a number of flows, counted under callgrind.
fn plugin_call_only(callgrind_flows: Option<u64>) -> anyhow::Result<()> {
    use gatehouse_bench::plugin_call::{CASES, count_all, time_all};
    build_release_libraries()?;
    let times = time_all(Duration::from_millis(300), 10)?;
    let counts = match callgrind_flows {
        Some(flows) => {
            let executable = std::env::current_exe().context("locating this executable")?;
            let work = tempfile::tempdir().context("a folder for callgrind's files")?;
            Some(count_all(&executable, flows, work.path())?)
        }
        None => None,
    };
    let static_typed = times[0].1;
    let static_typed_instructions = counts.as_ref().map_or(0.0, |counts| counts[0].1);
    println!("| variant | per flow | × static typed | instructions per flow | × static typed |");
    println!("|---|---:|---:|---:|---:|");
    for (index, ((_, label), (_, time))) in CASES.iter().zip(&times).enumerate() {
        let ratio = time.as_nanos() as f64 / static_typed.as_nanos().max(1) as f64;
        let (instructions, instruction_ratio) = match &counts {
            Some(counts) => (
                format!("{:.0}", counts[index].1),
                format!(
                    "{:.2}",
                    counts[index].1 / static_typed_instructions.max(1.0)
                ),
            ),
            None => (String::new(), String::new()),
        };
        println!(
            "| {label} | {} | {ratio:.2} | {instructions} | {instruction_ratio} |",
            human(*time)
        );
    }
    Ok(())
}

/// The rows of the plugin-call table, fastest way of calling first.
fn plugin_call_rows(cost: &PluginCallCost) -> [(&'static str, Duration); 8] {
    [
        (
            "static, direct trait calls (typed values, no JSON)",
            cost.static_typed,
        ),
        (
            "static, the plugin's `extern \"C\"` entry points (JSON in and out)",
            cost.static_json,
        ),
        (
            "ABI before: the first release's `start`/`resume`, the whole invocation as JSON per dispatch, parsed by each call",
            cost.abi_whole_json,
        ),
        (
            "ABI, `start`/`resume` with the account's text kept by the host (the host's half alone)",
            cost.abi_whole_json_account_kept,
        ),
        (
            "ABI, `start_v2`/`resume_v2` (invocation in pieces, command and outcome as JSON)",
            cost.abi_pieces,
        ),
        (
            "**ABI: the loaded cdylib as dispatch drives it (`start_v3`/`resume_v3`, charge and outcome typed)**",
            cost.abi,
        ),
        (
            "ABI (`start_v3`/`resume_v3`), each call on the host's plugin pool as dispatch runs it, flows back to back",
            cost.abi_via_pool,
        ),
        (
            "ABI on the plugin pool, one flow every 5 ms (threads asleep between flows; median)",
            cost.abi_via_pool_paced,
        ),
    ]
}

fn callgrind_child(case: &str, requests: u64) -> anyhow::Result<()> {
    let Some((path, call)) = callgrind::case(case) else {
        anyhow::bail!("unknown callgrind case `{case}`");
    };
    let executable = std::env::current_exe().context("locating this executable")?;
    let simulator = SimulatorProcess::spawn(&executable)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let host = BenchHost::start(&simulator.base_url).await?;
        let api_host = ApiHost::start(&simulator.base_url)?;
        let (ledger, _ledger_dir) = disk_ledger()?;
        let service = Service::new(host.gateway.clone(), ledger);
        let targets = Targets::new(
            host.gateway.clone(),
            host.gateway.clone(),
            service,
            &simulator.base_url,
            &api_host.base_url,
        );
        for _ in 0..20 + requests {
            targets.call(path, call).await.map_err(anyhow::Error::msg)?;
        }
        drop(targets);
        drop(api_host);
        drop(host);
        anyhow::Ok(())
    })
}

/// Library dispatches only (charges, 4 at a time), for a profiler: starts like the benchmark,
/// says `profile: measuring` on stderr, waits two seconds (time to switch the profiler's
/// collection on), then dispatches.
fn profile(dispatches: u64) -> anyhow::Result<()> {
    build_release_libraries()?;
    let executable = std::env::current_exe().context("locating this executable")?;
    let simulator = SimulatorProcess::spawn(&executable)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let host = BenchHost::start(&simulator.base_url).await?;
        let (ledger, _ledger_dir) = disk_ledger()?;
        let service = Service::new(host.gateway.clone(), ledger);
        // No API host: the profile is of library dispatch only.
        let targets = Targets::new(
            host.gateway.clone(),
            host.gateway.clone(),
            service,
            &simulator.base_url,
            "http://127.0.0.1:9",
        );
        for _ in 0..50 {
            targets
                .call(Path::Library, Call::Charge)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        eprintln!("profile: measuring (pid {})", std::process::id());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = Instant::now();
        let remaining = Arc::new(std::sync::atomic::AtomicU64::new(dispatches));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (targets, remaining) = (targets.clone(), remaining.clone());
            clients.push(tokio::spawn(async move {
                while remaining
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |left| left.checked_sub(1),
                    )
                    .is_ok()
                {
                    targets
                        .call(Path::Library, Call::Charge)
                        .await
                        .map_err(anyhow::Error::msg)?;
                }
                anyhow::Ok(())
            }));
        }
        for client in clients {
            client.await.context("profile client")??;
        }
        eprintln!(
            "profile: done, {dispatches} dispatches in {}",
            human(started.elapsed())
        );
        drop(targets);
        drop(host);
        anyhow::Ok(())
    })
}

fn machine_description() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    let memory_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .map(|rest| rest.trim().to_string())
        })
        .unwrap_or_default();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu_model}), MemTotal {memory_total}")
}

/// The 1-minute load average: other work on the machine shows up here (and in the figures).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn met(condition: bool) -> &'static str {
    if condition { "**met**" } else { "**missed**" }
}

fn render(report: &mut Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# gatehouse-bench");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "machine: {}; load average {} before, {} after; simulator in a child process; measurements {:.0} s (whole run, release builds of the plugins included, {:.0} s)",
        report.machine,
        report.load_before,
        report.load_after,
        report.measuring.as_secs_f64(),
        report.elapsed.as_secs_f64()
    );
    let mut summary: Vec<(String, String, String, &'static str)> = Vec::new();

    // Throughput.
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "## Throughput: {CONCURRENT_CLIENTS} concurrent clients, closed loop, {ROUNDS} interleaved rounds of {:.1} s per path",
        THROUGHPUT_WINDOW.as_secs_f64()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| call | path | calls/s | × direct | target | failed | CPU µs/call, bench process (clients + host) | CPU µs/call, simulator |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---|---:|---:|---:|");
    for (call, runs) in &report.throughput {
        let direct = runs
            .iter()
            .find(|(label, _)| *label == Path::Direct.label())
            .map_or(0.0, |(_, run)| run.per_second());
        for (label, run) in runs {
            let ratio = if direct > 0.0 {
                run.per_second() / direct
            } else {
                0.0
            };
            let target = match *label {
                "library" | "library-inline" => Some(TARGET_LIBRARY_THROUGHPUT),
                "http-api" => Some(TARGET_API_THROUGHPUT),
                _ => None,
            };
            let target_text = target.map_or_else(
                || "baseline".to_string(),
                |target| format!("≥ {target:.1}× {}", met(ratio >= target)),
            );
            let _ = writeln!(
                out,
                "| {} | {label} | {:.0} | {ratio:.2} | {target_text} | {} | {:.0} | {:.0} |",
                call.label(),
                run.per_second(),
                run.failed,
                run.cpu_micros_per_call(run.bench_cpu),
                run.cpu_micros_per_call(run.simulator_cpu),
            );
            if let Some(target) = target {
                summary.push((
                    format!("{label} throughput, {}", call.label()),
                    format!("≥ {target:.1}× direct"),
                    format!("{ratio:.2}×"),
                    met(ratio >= target),
                ));
            }
            if let Some(error) = &run.first_error {
                let _ = writeln!(out, "|  | first error: {error} | | | | | | |");
            }
        }
    }

    // Latency.
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "## Latency at a fixed rate: {LATENCY_RATE_PER_PATH} requests/s per path, open loop, the paths interleaved request by request, {} s",
        LATENCY_DURATION.as_secs()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Host-added = the path's percentile minus the direct path's same percentile (quantile difference of the interleaved samples)."
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| call | path | samples | p50 | p90 | p99 | max | added p50 | added p90 | added p99 | added max | target (added p99) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for (call, run) in &mut report.latency {
        let direct: Vec<Duration> = REPORTED_PERCENTILES
            .iter()
            .map(|(_, quantile)| run.latencies_of(Path::Direct).quantile(*quantile))
            .collect();
        for path in Path::ALL {
            let latencies = run.latencies_of(path);
            let values: Vec<Duration> = REPORTED_PERCENTILES
                .iter()
                .map(|(_, quantile)| latencies.quantile(*quantile))
                .collect();
            let mut row = format!(
                "| {} | {} | {} |",
                call.label(),
                path.label(),
                latencies.len()
            );
            for value in &values {
                let _ = write!(row, " {} |", human(*value));
            }
            if path == Path::Direct {
                row.push_str(" | | | | baseline |");
            } else {
                for (value, baseline) in values.iter().zip(&direct) {
                    let _ = write!(row, " {} |", human_micros(added_micros(*value, *baseline)));
                }
                let added_p99 = added_micros(values[2], direct[2]);
                let target = if path.is_library() {
                    TARGET_LIBRARY_P99_MICROS
                } else {
                    TARGET_API_P99_MICROS
                };
                let _ = write!(
                    row,
                    " < {} {} |",
                    human_micros(target),
                    met(added_p99 < target)
                );
                summary.push((
                    format!("{} added p99, {}", path.label(), call.label()),
                    format!("< {}", human_micros(target)),
                    human_micros(added_p99),
                    met(added_p99 < target),
                ));
            }
            let _ = writeln!(out, "{row}");
        }
        if run.failed > 0 {
            let _ = writeln!(
                out,
                "| {} | failed: {} (first: {}) | | | | | | | | | | |",
                call.label(),
                run.failed,
                run.first_error.clone().unwrap_or_default()
            );
        }
    }

    // Plugin call cost.
    let cost = &report.plugin_call;
    let ratio =
        |value: Duration| value.as_nanos() as f64 / cost.static_typed.as_nanos().max(1) as f64;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "## Plugin call cost: one PayGateGlobal charge flow (start builds the request, resume parses the answer), single thread"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| variant | per flow | × static typed |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (label, value) in plugin_call_rows(cost) {
        let _ = writeln!(out, "| {label} | {} | {:.2} |", human(value), ratio(value));
    }
    let abi_ratio = ratio(cost.abi);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "ABI call {abi_ratio:.2}× the statically linked call (target ≤ {TARGET_ABI_RATIO:.0}×: {}); through `start_v2`/`resume_v2`, in the same run: {:.2}×; before `start_v2`/`resume_v2`: {:.2}×, of which the dynamic call itself {:.2}× (ABI whole JSON ÷ static JSON entry points).",
        met(abi_ratio <= TARGET_ABI_RATIO),
        ratio(cost.abi_pieces),
        ratio(cost.abi_whole_json),
        cost.abi_whole_json.as_nanos() as f64 / cost.static_json.as_nanos().max(1) as f64
    );
    summary.push((
        "ABI call ÷ static call".into(),
        format!("≤ {TARGET_ABI_RATIO:.0}×"),
        format!("{abi_ratio:.2}×"),
        met(abi_ratio <= TARGET_ABI_RATIO),
    ));

    // Hot reload.
    let reload = &mut report.reload;
    let mut swaps = gatehouse_bench::stats::Latencies::default();
    for value in &reload.rename_to_first_served {
        swaps.push(*value);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "## Hot reload: {RELOAD_SWAPS} swaps 1.0.0 ⇄ 1.1.0 (copy to a hidden name, rename over the live file), library dispatches at {RELOAD_LOAD_RATE}/s meanwhile, default debounce"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| figure | value | target |");
    let _ = writeln!(out, "|---|---:|---|");
    let reload_max = swaps.quantile(1.0);
    let _ = writeln!(
        out,
        "| rename → first answer served by the new version: min / p50 / max | {} / {} / {} | < 250 ms {} |",
        human(swaps.quantile(0.0)),
        human(swaps.quantile(0.5)),
        human(reload_max),
        met(reload.swaps_not_seen == 0 && reload_max < TARGET_RELOAD)
    );
    let _ = writeln!(
        out,
        "| swaps whose new version was never seen (5 s) | {} | 0 |",
        reload.swaps_not_seen
    );
    let _ = writeln!(
        out,
        "| requests failed during the swaps | {} of {} | 0 {} |",
        reload.requests_failed,
        reload.requests_served + reload.requests_failed,
        met(reload.requests_failed == 0)
    );
    if let Some(error) = &reload.first_error {
        let _ = writeln!(out, "| first failure | {error} | |");
    }
    let describe = |samples: &[Duration]| {
        samples
            .iter()
            .map(|sample| human(*sample))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "| of which the scan: `reload_plugins()` right after a rename, loading the changed file | {} | |",
        describe(&reload.scan_with_change)
    );
    let _ = writeln!(
        out,
        "| `reload_plugins()` when nothing changed (every watcher event pays it) | {} | |",
        describe(&reload.scan_without_change)
    );
    summary.push((
        "new version serving after rename (max of swaps)".into(),
        "< 250 ms".into(),
        human(reload_max),
        met(reload.swaps_not_seen == 0 && reload_max < TARGET_RELOAD),
    ));
    summary.push((
        "requests failed during swaps".into(),
        "0".into(),
        reload.requests_failed.to_string(),
        met(reload.requests_failed == 0),
    ));

    // Memory.
    let memory = &report.memory;
    let reloads = reload
        .libraries_after
        .saturating_sub(reload.libraries_before)
        .max(1) as u64;
    let growth_per_reload = reload.rss_after_kib.saturating_sub(reload.rss_before_kib) / reloads;
    let _ = writeln!(out);
    let _ = writeln!(out, "## Memory (VmRSS)");
    let _ = writeln!(out);
    let _ = writeln!(out, "| state | RSS |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| bench process at start (before runtime, host, clients) | {} |",
        mib(memory.process_start_kib)
    );
    let _ = writeln!(
        out,
        "| bench process, host embedded, five plugins loaded, idle (before any traffic) | {} |",
        mib(memory.idle_five_plugins_kib)
    );
    let _ = writeln!(
        out,
        "| bench process under load (highest sample) | {} |",
        mib(memory.under_load_kib)
    );
    let _ = writeln!(
        out,
        "| bench process idle after load | {} |",
        mib(memory.idle_after_load_kib)
    );
    let _ = writeln!(
        out,
        "| after {} reloads ({} → {} libraries mapped) | {} → {} |",
        reloads,
        reload.libraries_before,
        reload.libraries_after,
        mib(reload.rss_before_kib),
        mib(reload.rss_after_kib)
    );
    let _ = writeln!(out, "| growth per reload | {} KiB |", growth_per_reload);
    match memory.gatehouse_serve_idle_kib {
        Some(kib) => {
            let _ = writeln!(
                out,
                "| **real `gatehouse serve`, five plugins, idle** | {} (target < 40 MiB {}) |",
                mib(kib),
                met(kib < TARGET_IDLE_RSS_KIB)
            );
            summary.push((
                "RSS idle, five plugins (`gatehouse serve`)".into(),
                "< 40 MiB".into(),
                mib(kib),
                met(kib < TARGET_IDLE_RSS_KIB),
            ));
        }
        None => {
            let _ = writeln!(
                out,
                "| real `gatehouse serve`, five plugins, idle | not measured |"
            );
        }
    }
    summary.push((
        "RSS idle, five plugins (host embedded in the bench process)".into(),
        "< 40 MiB".into(),
        mib(memory.idle_five_plugins_kib),
        met(memory.idle_five_plugins_kib < TARGET_IDLE_RSS_KIB),
    ));

    // Ledger.
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "## Ledger: idempotent charges, {CONCURRENT_CLIENTS} clients, {ROUNDS} interleaved rounds of {:.1} s (SQLite WAL, synchronous=FULL, on disk)",
        THROUGHPUT_WINDOW.as_secs_f64()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| variant | charges/s | × ledger off | failed | CPU µs/call, bench process | CPU µs/call, simulator |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let ledger_off = report
        .ledger
        .first()
        .map_or(0.0, |(_, run)| run.per_second());
    for (label, run) in &report.ledger {
        let ratio = if ledger_off > 0.0 {
            run.per_second() / ledger_off
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {ratio:.2} | {} | {:.0} | {:.0} |",
            run.per_second(),
            run.failed,
            run.cpu_micros_per_call(run.bench_cpu),
            run.cpu_micros_per_call(run.simulator_cpu)
        );
        if let Some(error) = &run.first_error {
            let _ = writeln!(out, "|  first error: {error} | | | | | |");
        }
    }

    if let Some(served) = &mut report.served {
        summary.extend(served_section::render(served, &mut out));
    }

    // Summary.
    let _ = writeln!(out);
    let _ = writeln!(out, "## Targets");
    let _ = writeln!(out);
    let _ = writeln!(out, "| target | wanted | measured | |");
    let _ = writeln!(out, "|---|---|---:|---|");
    for (name, wanted, measured, verdict) in summary {
        let _ = writeln!(out, "| {name} | {wanted} | {measured} | {verdict} |");
    }
    out
}
