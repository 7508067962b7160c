//! The report's "served paths" section: the disk's floor, then the reference service and
//! `gatehouse serve` on SQLite, on PostgreSQL, and three of them on one PostgreSQL, ledgered
//! charges and reads, interleaved in one run.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gatehouse_pg_cluster::{Cluster, Database};

use crate::floor::{self, DiskFloor};
use crate::host::work_dir;
use crate::served::{
    LedgerChoice, ServedCall, ServedPath, ServedRun, build_refsvc, interleaved, spawn_gatehouse,
    spawn_refsvc,
};
use crate::stats::{human, human_micros};

/// Clients of the served runs (as `bench/compare.py` of the reference uses).
pub const CLIENTS: usize = 16;
pub const CHARGE_WINDOW: Duration = Duration::from_secs(2);
pub const READ_WINDOW: Duration = Duration::from_millis(1500);
pub const ROUNDS: usize = 3;
/// Hosts of the fleet path.
pub const FLEET_HOSTS: usize = 3;

pub const REFERENCE: &str = "reference service (refsvc, SQLite)";
pub const SQLITE_HOST: &str = "gatehouse serve, SQLite";
pub const BASELINE_HOST: &str = "baseline gatehouse serve ($GATEHOUSE_BENCH_BASELINE), SQLite";
/// Names a second `gatehouse` executable to measure beside this tree's.
pub const BASELINE_VARIABLE: &str = "GATEHOUSE_BENCH_BASELINE";
pub const POSTGRES_HOST: &str = "gatehouse serve, PostgreSQL";
pub const POSTGRES_FLEET: &str = "3 × gatehouse serve, one PostgreSQL";
pub const BASELINE_POSTGRES_HOST: &str = "baseline gatehouse serve, PostgreSQL";
pub const BASELINE_POSTGRES_FLEET: &str = "baseline 3 × gatehouse serve, one PostgreSQL";

/// What the section measured.
pub struct ServedSection {
    pub floor: DiskFloor,
    /// Labels and runs, in the order measured; a path that could not start is absent (its
    /// reason in `notes`).
    pub charges: Vec<(String, ServedRun)>,
    pub reads: Vec<(String, ServedRun)>,
    pub notes: Vec<String>,
}

impl ServedSection {
    pub fn charge(&self, label: &str) -> Option<&ServedRun> {
        find(&self.charges, label)
    }

    pub fn read(&self, label: &str) -> Option<&ServedRun> {
        find(&self.reads, label)
    }
}

fn find<'a>(runs: &'a [(String, ServedRun)], label: &str) -> Option<&'a ServedRun> {
    runs.iter()
        .find(|(name, _)| name == label)
        .map(|(_, run)| run)
}

/// Measures the section. A missing reference service or PostgreSQL leaves its path out with a
/// note; `gatehouse serve` itself must start.
pub async fn measure(gatehouse: &Path, simulator_base_url: &str) -> anyhow::Result<ServedSection> {
    let floor_dir = work_dir()?;
    let mut notes = Vec::new();
    eprintln!("served paths: the disk's floor (fsync, SQLite commits)...");
    let first_floor = floor::measure(floor_dir.path(), Duration::from_secs(1))?;

    let mut paths = Vec::new();
    eprintln!("served paths: building and starting the reference service...");
    match build_refsvc() {
        Ok(binary) => paths.push(ServedPath {
            label: REFERENCE.into(),
            servers: vec![spawn_refsvc(&binary, simulator_base_url).await?],
            database_server: None,
        }),
        Err(error) => notes.push(format!("reference service not measured: {error:#}")),
    }
    paths.push(ServedPath {
        label: SQLITE_HOST.into(),
        servers: vec![spawn_gatehouse(gatehouse, simulator_base_url, &LedgerChoice::Sqlite).await?],
        database_server: None,
    });
    // Another build of `gatehouse` (the previous code, say) beside this one, for a change's
    // before and after in one run.
    if let Some(baseline) = std::env::var_os(BASELINE_VARIABLE) {
        paths.push(ServedPath {
            label: BASELINE_HOST.into(),
            servers: vec![
                spawn_gatehouse(
                    Path::new(&baseline),
                    simulator_base_url,
                    &LedgerChoice::Sqlite,
                )
                .await
                .context("starting the baseline gatehouse")?,
            ],
            database_server: None,
        });
    }
    eprintln!("served paths: a durable PostgreSQL cluster (fsync on)...");
    let cluster = match tokio::task::spawn_blocking(Cluster::start_durable)
        .await
        .context("starting the cluster")?
    {
        Ok(cluster) => Some(Arc::new(cluster)),
        Err(error) => {
            notes.push(format!("PostgreSQL paths not measured: {error}"));
            None
        }
    };
    if let Some(cluster) = &cluster {
        let database_server = cluster.server_pid();
        // This tree's gatehouse, then the baseline's (when given), each on databases of its own.
        let mut builds = vec![(gatehouse.to_path_buf(), POSTGRES_HOST, POSTGRES_FLEET)];
        if let Some(baseline) = std::env::var_os(BASELINE_VARIABLE) {
            builds.push((
                baseline.into(),
                BASELINE_POSTGRES_HOST,
                BASELINE_POSTGRES_FLEET,
            ));
        }
        for (executable, single_label, fleet_label) in builds {
            let cluster = cluster.clone();
            let (single, fleet) = tokio::task::spawn_blocking(move || {
                (cluster.create_database(), cluster.create_database())
            })
            .await
            .context("creating the databases")?;
            let choice = |database: &Database| LedgerChoice::Postgres {
                url: database.url(),
                password: database.password.clone(),
            };
            paths.push(ServedPath {
                label: single_label.into(),
                servers: vec![
                    spawn_gatehouse(&executable, simulator_base_url, &choice(&single)).await?,
                ],
                database_server,
            });
            let mut servers = Vec::new();
            // One after another: the first applies the schema, the others find it applied.
            for _ in 0..FLEET_HOSTS {
                servers
                    .push(spawn_gatehouse(&executable, simulator_base_url, &choice(&fleet)).await?);
            }
            paths.push(ServedPath {
                label: fleet_label.into(),
                servers,
                database_server,
            });
        }
    }

    let all: Vec<&ServedPath> = paths.iter().collect();
    eprintln!("served paths: warming up...");
    for call in [ServedCall::LedgeredCharge, ServedCall::Balance] {
        let warm = interleaved(&all, call, 4, Duration::from_millis(400), 1).await;
        for (path, run) in paths.iter().zip(&warm) {
            if run.completed == 0 {
                anyhow::bail!(
                    "warm-up of {} failed: {}",
                    path.label,
                    run.first_error.clone().unwrap_or_default()
                );
            }
        }
    }
    eprintln!(
        "served paths: ledgered charges, {CLIENTS} clients, {ROUNDS} rounds of {:.1} s per path...",
        CHARGE_WINDOW.as_secs_f64()
    );
    let charges = interleaved(
        &all,
        ServedCall::LedgeredCharge,
        CLIENTS,
        CHARGE_WINDOW,
        ROUNDS,
    )
    .await;
    // Reads: the reference and one SQLite host (a read touches no ledger).
    let read_paths: Vec<&ServedPath> = paths
        .iter()
        .filter(|path| [REFERENCE, SQLITE_HOST, BASELINE_HOST].contains(&path.label.as_str()))
        .collect();
    eprintln!("served paths: balance reads...");
    let reads = interleaved(
        &read_paths,
        ServedCall::Balance,
        CLIENTS,
        READ_WINDOW,
        ROUNDS,
    )
    .await;
    eprintln!("served paths: the disk's floor again...");
    let second_floor = floor::measure(floor_dir.path(), Duration::from_secs(1))?;

    let labels: Vec<String> = paths.iter().map(|path| path.label.clone()).collect();
    let read_labels: Vec<String> = read_paths.iter().map(|path| path.label.clone()).collect();
    drop(read_paths);
    drop(all);
    drop(paths);
    if let Some(cluster) = cluster {
        let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
    }
    Ok(ServedSection {
        floor: floor::merge(first_floor, second_floor),
        charges: labels.into_iter().zip(charges).collect(),
        reads: read_labels.into_iter().zip(reads).collect(),
        notes,
    })
}

/// One line of the report's targets table: name, wanted, measured, verdict.
pub type TargetRow = (String, String, String, &'static str);

fn verdict(condition: bool) -> &'static str {
    if condition { "**met**" } else { "**missed**" }
}

/// The section in Markdown, and its rows of the targets table.
pub fn render(section: &mut ServedSection, out: &mut String) -> Vec<TargetRow> {
    let mut rows = Vec::new();
    let floor = &mut section.floor;
    let fsync_p99 = floor.fsync.quantile(0.99);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "## The disk's floor (the ledgers' disk, measured at the start and the end of the served paths)"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| figure | samples | p50 | p90 | p99 | p99.9 | max |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, latencies) in [
        (
            "`write(4 KiB) + fsync`, one after another",
            &mut floor.fsync,
        ),
        (
            "SQLite single-row transaction (WAL, `synchronous=FULL`), one after another",
            &mut floor.sqlite_commits,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            latencies.len(),
            human(latencies.quantile(0.5)),
            human(latencies.quantile(0.9)),
            human(latencies.quantile(0.99)),
            human(latencies.quantile(0.999)),
            human(latencies.quantile(1.0)),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "SQLite serial commit rate: **{:.0} commits/s**.",
        floor.sqlite_commits_per_second()
    );

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "## Served paths: ledgered charges through the HTTP API, {CLIENTS} clients, closed loop, {ROUNDS} interleaved rounds of {:.1} s per path (each server its own process)",
        CHARGE_WINDOW.as_secs_f64()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| path | charges/s | × reference | × 1 SQLite host | failed | p50 | p90 | p99 | p99.9 | max | server CPU µs/charge | PostgreSQL CPU µs/charge |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let reference = section.charge(REFERENCE).map(ServedRun::per_second);
    let reference_cpu = section
        .charge(REFERENCE)
        .map(ServedRun::server_cpu_micros_per_call);
    let sqlite = section.charge(SQLITE_HOST).map(ServedRun::per_second);
    let ratio = |value: f64, base: Option<f64>| {
        base.filter(|base| *base > 0.0)
            .map_or_else(|| "–".to_string(), |base| format!("{:.2}", value / base))
    };
    for (label, run) in &mut section.charges {
        let per_second = run.per_second();
        let _ = writeln!(
            out,
            "| {label} | {per_second:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |",
            ratio(per_second, reference),
            ratio(per_second, sqlite),
            run.failed,
            human(run.latencies.quantile(0.5)),
            human(run.latencies.quantile(0.9)),
            human(run.latencies.quantile(0.99)),
            human(run.latencies.quantile(0.999)),
            human(run.latencies.quantile(1.0)),
            run.server_cpu_micros_per_call(),
            if run.database_cpu.is_zero() {
                "–".to_string()
            } else {
                format!("{:.0}", run.database_cpu_micros_per_call())
            },
        );
        if let Some(error) = &run.first_error {
            let _ = writeln!(out, "|  first error: {error} | | | | | | | | | | | |");
        }
    }

    // Where each server's CPU went, by thread (µs per charge): a worker pool that does the
    // ledger's work, or a watcher woken by every write, shows here.
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Server CPU per charge by thread (µs; threads under 1 µs left out):"
    );
    let _ = writeln!(out);
    for (label, run) in &section.charges {
        let mut parts: Vec<(f64, &String)> = run
            .threads
            .iter()
            .map(|(name, cpu)| (cpu.as_secs_f64() * 1e6 / run.completed.max(1) as f64, name))
            .filter(|(micros, _)| *micros >= 1.0)
            .collect();
        parts.sort_by(|a, b| b.0.total_cmp(&a.0));
        let text: Vec<String> = parts
            .iter()
            .map(|(micros, name)| format!("`{name}` {micros:.0}"))
            .collect();
        let _ = writeln!(out, "- {label}: {}", text.join(", "));
    }

    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "## Served paths: balance reads through the HTTP API, {CLIENTS} clients, {ROUNDS} interleaved rounds of {:.1} s",
        READ_WINDOW.as_secs_f64()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| path | reads/s | × reference | failed | p50 | p99 | server CPU µs/read |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    let reference_reads = section.read(REFERENCE).map(ServedRun::per_second);
    for (label, run) in &mut section.reads {
        let per_second = run.per_second();
        let _ = writeln!(
            out,
            "| {label} | {per_second:.0} | {} | {} | {} | {} | {:.0} |",
            ratio(per_second, reference_reads),
            run.failed,
            human(run.latencies.quantile(0.5)),
            human(run.latencies.quantile(0.99)),
            run.server_cpu_micros_per_call(),
        );
    }
    for note in &section.notes {
        let _ = writeln!(out);
        let _ = writeln!(out, "Note: {note}");
    }

    // The targets of issue 20 and issue 15 item 10 that these figures decide.
    if let (Some(host), Some(reference)) = (section.charge(SQLITE_HOST), reference) {
        let ratio = host.per_second() / reference.max(f64::MIN_POSITIVE);
        rows.push((
            "HTTP ledgered charge throughput × reference (served)".into(),
            "≥ 1.0×".into(),
            format!("{ratio:.2}×"),
            verdict(ratio >= 1.0),
        ));
    }
    if let (Some(host), Some(reference_cpu)) = (section.charge(SQLITE_HOST), reference_cpu) {
        let cpu = host.server_cpu_micros_per_call();
        rows.push((
            "HTTP ledgered charge, server CPU per charge".into(),
            format!(
                "≤ reference + 30 µs ({})",
                human_micros(reference_cpu + 30.0)
            ),
            human_micros(cpu),
            verdict(cpu <= reference_cpu + 30.0),
        ));
    }
    if let Some(host) = section.charge(SQLITE_HOST) {
        let mut latencies = host.latencies.clone();
        let p99 = latencies.quantile(0.99);
        rows.push((
            "HTTP ledgered charge p99 under 16 clients (served) vs 2 × fsync p99".into(),
            format!("≤ {}", human(fsync_p99 * 2)),
            human(p99),
            verdict(p99 <= fsync_p99 * 2),
        ));
    }
    if let (Some(host), Some(reference)) = (section.read(SQLITE_HOST), reference_reads) {
        let ratio = host.per_second() / reference.max(f64::MIN_POSITIVE);
        rows.push((
            "HTTP read throughput × reference (served)".into(),
            "≥ 0.9×".into(),
            format!("{ratio:.2}×"),
            verdict(ratio >= 0.9),
        ));
    }
    if let (Some(fleet), Some(sqlite)) = (section.charge(POSTGRES_FLEET), sqlite) {
        let ratio = fleet.per_second() / sqlite.max(f64::MIN_POSITIVE);
        rows.push((
            "3 hosts on PostgreSQL × 1 SQLite host, ledgered charges (issue 15)".into(),
            "≥ 0.8×, 0 failed".into(),
            format!("{ratio:.2}×, {} failed", fleet.failed),
            verdict(ratio >= 0.8 && fleet.failed == 0),
        ));
    }
    rows
}
