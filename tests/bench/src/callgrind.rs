//! Instructions per request under callgrind: stable where seconds are not (a shared machine, no
//! hardware counters in the virtual machine).
//!
//! `gatehouse-bench callgrind [N]` runs, for each path, this executable under
//! `valgrind --tool=callgrind` twice, once making `N` requests and once `2N` (one client, one
//! request at a time, after the same warm-up), reads each run's instruction total, and reports
//! `(total(2N) - total(N)) / N`: start-up (plugin loading, the runtime, the simulator's child is
//! not traced) cancels out, what is left is the cost of one request. The count is of the whole
//! bench process: the client's work is in every path, so "host-added" is a path minus `direct`.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::targets::{Call, Path as BenchPath};

/// The argument of the child that makes the requests under valgrind.
pub const RUN_ARGUMENT: &str = "callgrind-run";

/// The paths counted, by name on the child's command line.
pub const CASES: [(&str, BenchPath, Call); 6] = [
    ("direct-charge", BenchPath::Direct, Call::Charge),
    ("library-charge", BenchPath::Library, Call::Charge),
    ("direct-balance", BenchPath::Direct, Call::Balance),
    ("library-balance", BenchPath::Library, Call::Balance),
    ("http-read", BenchPath::HttpApi, Call::Balance),
    ("http-ledgered-charge", BenchPath::HttpApi, Call::Charge),
];

/// The case named `name`.
pub fn case(name: &str) -> Option<(BenchPath, Call)> {
    CASES
        .iter()
        .find(|(case, _, _)| *case == name)
        .map(|(_, path, call)| (*path, *call))
}

/// One path's count.
#[derive(Debug, Clone)]
pub struct Count {
    pub case: &'static str,
    pub requests: u64,
    pub total_small: u64,
    pub total_large: u64,
}

impl Count {
    pub fn per_request(&self) -> f64 {
        self.total_large.saturating_sub(self.total_small) as f64 / self.requests.max(1) as f64
    }
}

/// Runs every case under callgrind (N and 2N requests) and returns the counts.
pub fn count_all(executable: &Path, requests: u64, work: &Path) -> anyhow::Result<Vec<Count>> {
    let mut counts = Vec::new();
    for (case, _, _) in CASES {
        eprintln!(
            "callgrind: {case}, {requests} and {} requests...",
            2 * requests
        );
        let total_small = one_run(executable, case, requests, work)?;
        let total_large = one_run(executable, case, 2 * requests, work)?;
        counts.push(Count {
            case,
            requests,
            total_small,
            total_large,
        });
    }
    Ok(counts)
}

fn one_run(executable: &Path, case: &str, requests: u64, work: &Path) -> anyhow::Result<u64> {
    let out_file = work.join(format!("callgrind.{case}.{requests}.out"));
    instructions(
        executable,
        &[RUN_ARGUMENT, case, &requests.to_string()],
        &out_file,
    )
}

/// The instructions `executable` run with `arguments` executes under callgrind.
pub fn instructions(executable: &Path, arguments: &[&str], out_file: &Path) -> anyhow::Result<u64> {
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(executable)
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running valgrind (is it installed? Debian: apt-get install valgrind)")?;
    if !status.success() {
        bail!("the callgrind run of {arguments:?} failed: {status}");
    }
    let text = std::fs::read_to_string(out_file)
        .with_context(|| format!("reading {}", out_file.display()))?;
    let _ = std::fs::remove_file(out_file);
    total_instructions(&text)
        .with_context(|| format!("no instruction total in {}", out_file.display()))
}

/// The `summary:` (or `totals:`) line of a callgrind output file: instructions executed.
pub fn total_instructions(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}
