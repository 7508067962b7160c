//! Where a server's CPU per request goes, as the kernel accounts it: user time, system time and
//! context switches per request under the served paths' closed loop.
//!
//! `gatehouse-bench server-cpu [seconds]` runs each server of [`server_callgrind::servers`]
//! (the reference, this build, the baseline) on its own, 16 clients for `seconds` (default 6)
//! after a one-second warm-up, and reads `/proc/<pid>/stat` and each thread's `status` before
//! and after. Callgrind counts user-space instructions only; this says how much of the gap is
//! the kernel's: thread hand-offs (each a futex wake and a context switch), socket calls and
//! fsyncs.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::process::KernelAccount;
use crate::served::{LedgerChoice, ServedPath, closed_loop, spawn_gatehouse_with, spawn_refsvc};
use crate::server_callgrind::{CALLS, Server};

const CLIENTS: usize = 16;

/// One server's account for one call.
#[derive(Debug, Clone)]
pub struct CpuRow {
    pub server: String,
    pub call: &'static str,
    pub completed: u64,
    pub failed: u64,
    pub per_second: f64,
    pub account: KernelAccount,
}

impl CpuRow {
    fn per_request(&self, value: f64) -> f64 {
        value / self.completed.max(1) as f64
    }
}

/// Measures every call on every server, one server at a time.
pub async fn measure(
    servers: &[Server],
    simulator_base_url: &str,
    window: Duration,
) -> anyhow::Result<Vec<CpuRow>> {
    let sequence = Arc::new(AtomicU64::new(u64::from(std::process::id()) << 40));
    let mut rows = Vec::new();
    for (call_name, call) in CALLS {
        for server in servers {
            eprintln!("server-cpu: {}, {call_name}...", server.label());
            let process = match server {
                Server::Reference(binary) => spawn_refsvc(binary, simulator_base_url).await?,
                Server::Gatehouse {
                    executable,
                    host_settings,
                    ..
                } => {
                    spawn_gatehouse_with(
                        executable,
                        simulator_base_url,
                        &LedgerChoice::Sqlite,
                        host_settings,
                    )
                    .await?
                }
            };
            let pid = process.pid();
            let path = ServedPath {
                label: server.label().to_string(),
                servers: vec![process],
                database_server: None,
            };
            closed_loop(
                &path,
                call,
                CLIENTS,
                Duration::from_secs(1),
                sequence.clone(),
            )
            .await;
            let before = KernelAccount::of(pid);
            let run = closed_loop(&path, call, CLIENTS, window, sequence.clone()).await;
            let account = KernelAccount::of(pid).since(&before);
            rows.push(CpuRow {
                server: server.label().to_string(),
                call: call_name,
                completed: run.completed,
                failed: run.failed,
                per_second: run.per_second(),
                account,
            });
            drop(path);
        }
    }
    Ok(rows)
}

/// The report: per request, user and system CPU and context switches, and the call rate.
pub fn render(rows: &[CpuRow], out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n## Server CPU per request, user and system ({CLIENTS} clients, closed loop)\n"
    );
    let _ = writeln!(
        out,
        "| call | server | requests/s | failed | user µs | system µs | system share | voluntary switches | involuntary switches |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let user = row.per_request(row.account.user.as_secs_f64() * 1e6);
        let system = row.per_request(row.account.system.as_secs_f64() * 1e6);
        let share = if user + system > 0.0 {
            system / (user + system)
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {user:.0} | {system:.0} | {:.0} % | {:.1} | {:.1} |",
            row.call,
            row.server,
            row.per_second,
            row.failed,
            share * 100.0,
            row.per_request(row.account.voluntary_switches as f64),
            row.per_request(row.account.involuntary_switches as f64),
        );
    }
}
