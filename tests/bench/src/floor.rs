//! The physical floor under a ledgered charge, measured on the ledger's own disk in the same run
//! as the paths: how long a bare `write + fsync` takes, and how many single-row transactions
//! SQLite commits per second in the ledger's mode (WAL, `synchronous=FULL`), one after another.
//!
//! A ledgered charge needs its entry durable before the provider call and its outcome durable
//! before the answer; group commit shares one flush among a batch, but no charge can be answered
//! faster than the flush it waits for. These figures turn the ledgered targets into ratios to
//! the disk, which moves from run to run on a shared machine.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::stats::Latencies;

/// What the disk did.
#[derive(Debug, Clone, Default)]
pub struct DiskFloor {
    /// `write(4 KiB) + fsync` on a file of the ledger's folder, one after another.
    pub fsync: Latencies,
    /// One `INSERT` per transaction, `COMMIT` waited for, one after another.
    pub sqlite_commits: Latencies,
    pub sqlite_elapsed: Duration,
}

impl DiskFloor {
    pub fn sqlite_commits_per_second(&self) -> f64 {
        if self.sqlite_elapsed.is_zero() {
            0.0
        } else {
            self.sqlite_commits.len() as f64 / self.sqlite_elapsed.as_secs_f64()
        }
    }
}

/// Measures both, in `dir` (a folder of the disk the ledgers live on), for about `each` apiece.
pub fn measure(dir: &Path, each: Duration) -> anyhow::Result<DiskFloor> {
    let fsync = fsync_latencies(dir, each)?;
    let (sqlite_commits, sqlite_elapsed) = sqlite_commit_latencies(dir, each)?;
    Ok(DiskFloor {
        fsync,
        sqlite_commits,
        sqlite_elapsed,
    })
}

/// Merges two measurements (the floor is taken at the start and at the end of a run).
pub fn merge(mut first: DiskFloor, second: DiskFloor) -> DiskFloor {
    first.fsync.extend(second.fsync);
    first.sqlite_commits.extend(second.sqlite_commits);
    first.sqlite_elapsed += second.sqlite_elapsed;
    first
}

fn fsync_latencies(dir: &Path, duration: Duration) -> anyhow::Result<Latencies> {
    let path = dir.join("floor-fsync.bin");
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = [0x5a_u8; 4096];
    let mut latencies = Latencies::default();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let started = Instant::now();
        file.write_all(&block).context("writing the fsync probe")?;
        file.sync_all().context("fsync of the probe")?;
        latencies.push(started.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(latencies)
}

fn sqlite_commit_latencies(
    dir: &Path,
    duration: Duration,
) -> anyhow::Result<(Latencies, Duration)> {
    let path = dir.join("floor-sqlite.db");
    let connection =
        rusqlite::Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // The ledger's own settings (gatehouse_ledger::SqliteLedger): WAL, a flush per commit.
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .context("journal_mode")?;
    connection
        .pragma_update(None, "synchronous", "FULL")
        .context("synchronous")?;
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        )
        .context("creating the probe table")?;
    let mut insert = connection
        .prepare("INSERT INTO probe (body) VALUES (?1)")
        .context("preparing the insert")?;
    let body = "x".repeat(200);
    let mut latencies = Latencies::default();
    let started = Instant::now();
    let deadline = started + duration;
    while Instant::now() < deadline {
        let one = Instant::now();
        // Autocommit: one statement, one transaction, one commit.
        insert.execute([&body]).context("inserting a probe row")?;
        latencies.push(one.elapsed());
    }
    let elapsed = started.elapsed();
    drop(insert);
    drop(connection);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("floor-sqlite.db{suffix}")));
    }
    Ok((latencies, elapsed))
}
