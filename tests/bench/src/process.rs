//! What the kernel says about a process: resident memory and CPU time.

use std::time::Duration;

/// Which process to read: this one, or another by id.
#[derive(Debug, Clone, Copy)]
pub enum Process {
    This,
    Other(u32),
}

impl Process {
    fn proc_dir(self) -> String {
        match self {
            Self::This => "/proc/self".to_string(),
            Self::Other(pid) => format!("/proc/{pid}"),
        }
    }

    /// Resident memory (`VmRSS` of `/proc/<pid>/status`) in KiB.
    pub fn rss_kib(self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("{}/status", self.proc_dir())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// User plus system CPU time consumed so far (`/proc/<pid>/stat`, clock-tick resolution).
    pub fn cpu_time(self) -> Duration {
        let Ok(stat) = std::fs::read_to_string(format!("{}/stat", self.proc_dir())) else {
            return Duration::ZERO;
        };
        // The command name (field 2) may contain spaces: fields are counted after its `)`.
        let Some((_, after_name)) = stat.rsplit_once(')') else {
            return Duration::ZERO;
        };
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
        let ticks = |index: usize| {
            fields
                .get(index)
                .and_then(|text| text.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let total_ticks = ticks(11) + ticks(12);
        Duration::from_nanos(total_ticks.saturating_mul(1_000_000_000 / clock_ticks_per_second()))
    }
}

/// CPU time on each thread of process `pid` so far, summed by thread name (`comm`, digits
/// removed so that numbered threads of one pool add up), in nanoseconds from
/// `/proc/<pid>/task/<tid>/schedstat` (the scheduler's own clock, not 10 ms ticks).
pub fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, Duration> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm"))
            .unwrap_or_default()
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_string();
        let nanos = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        *by_name.entry(name).or_insert(Duration::ZERO) += Duration::from_nanos(nanos);
    }
    by_name
}

/// CPU time the children of process `parent` used so far, summed (`/proc/<pid>/schedstat` of
/// every process whose parent it is): a database server's connections and background workers.
pub fn children_cpu(parent: u32) -> Duration {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for process in processes.flatten() {
        let path = process.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // After the command name's `)`: state, then the parent's id.
        let parent_of = stat
            .rsplit_once(')')
            .and_then(|(_, after)| after.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent_of != Some(parent) {
            continue;
        }
        let nanos = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        total += Duration::from_nanos(nanos);
    }
    total
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// KiB as MiB with one decimal, for tables.
pub fn mib(kib: u64) -> String {
    format!("{}.{} MiB", kib / 1024, (kib % 1024) * 10 / 1024)
}

/// What a process has spent so far, split as the kernel accounts it: user and system CPU
/// (`/proc/<pid>/stat`, clock ticks) and context switches summed over its live threads
/// (`/proc/<pid>/task/*/status`; a thread that has exited takes its count with it).
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelAccount {
    pub user: Duration,
    pub system: Duration,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

impl KernelAccount {
    pub fn of(pid: u32) -> Self {
        let mut account = Self::default();
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((_, after_name)) = stat.rsplit_once(')')
        {
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let ticks = |index: usize| -> Duration {
                let ticks = fields
                    .get(index)
                    .and_then(|text| text.parse::<u64>().ok())
                    .unwrap_or(0);
                Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / clock_ticks_per_second()))
            };
            account.user = ticks(11);
            account.system = ticks(12);
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let status =
                    std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
                for line in status.lines() {
                    let count = |prefix: &str| {
                        line.strip_prefix(prefix)
                            .and_then(|rest| rest.trim().parse::<u64>().ok())
                    };
                    if let Some(count) = count("voluntary_ctxt_switches:") {
                        account.voluntary_switches += count;
                    } else if let Some(count) = count("nonvoluntary_ctxt_switches:") {
                        account.involuntary_switches += count;
                    }
                }
            }
        }
        account
    }

    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            voluntary_switches: self
                .voluntary_switches
                .saturating_sub(earlier.voluntary_switches),
            involuntary_switches: self
                .involuntary_switches
                .saturating_sub(earlier.involuntary_switches),
        }
    }
}
