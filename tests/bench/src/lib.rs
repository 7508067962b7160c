//! Support for Gatehouse's benchmarks: the `gatehouse-bench` binary (the host against the direct
//! call, side by side in one run) and the criterion micro-benchmarks in `benches/`.
//!
//! Everything here uses the real parts: plugin `cdylib`s built by cargo in release, loaded by the
//! real host from a plugins folder, talking real HTTP on loopback to the PayGateGlobal simulator,
//! which runs in a child process so that its memory and CPU are not counted as the host's.

pub mod artifacts;
pub mod callgrind;
pub mod floor;
pub mod host;
pub mod measure;
pub mod plugin_call;
pub mod process;
pub mod scenarios;
pub mod served;
pub mod served_section;
pub mod server_callgrind;
pub mod server_cpu;
pub mod simulator;
pub mod soak;
pub mod stats;
pub mod targets;
