//! The PayGateGlobal simulator in a child process (this same executable, `simulate`), so that
//! the provider's memory and CPU are never counted as the host's.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use crate::process::Process;

/// The merchant token the simulator accepts.
pub const AUTH_TOKEN: &str = "bench-auth-token-0123456789";

/// The argument that makes the executable serve the simulator instead of benchmarking.
pub const SIMULATE_ARGUMENT: &str = "simulate";

/// A simulator child process; dropping it stops the child.
pub struct SimulatorProcess {
    child: Child,
    pub base_url: String,
}

impl SimulatorProcess {
    /// Starts `executable simulate` and waits for it to say where it listens.
    pub fn spawn(executable: &std::path::Path) -> anyhow::Result<Self> {
        let mut child = Command::new(executable)
            .arg(SIMULATE_ARGUMENT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the simulator ({})", executable.display()))?;
        let stdout = child.stdout.take().context("simulator stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the simulator's address")?;
        let Some(base_url) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            bail!("the simulator did not start: {line:?}");
        };
        Ok(Self {
            base_url: base_url.to_string(),
            child,
        })
    }

    pub fn process(&self) -> Process {
        Process::Other(self.child.id())
    }
}

impl Drop for SimulatorProcess {
    fn drop(&mut self) {
        // Closing stdin asks the child to stop; the kill covers a child that does not.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: serve the simulator on loopback until stdin closes.
pub fn run_child() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("simulator runtime")?;
    runtime.block_on(async {
        let (_simulator, running) =
            gatehouse_sim_paygateglobal::PayGateSimulator::start(AUTH_TOKEN)
                .await
                .context("serving the simulator")?;
        println!("listening {}", running.base_url());
        // The parent holds our stdin; when it closes (or the parent dies) we stop.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .context("waiting for stdin")?;
        drop(running);
        anyhow::Ok(())
    })
}
