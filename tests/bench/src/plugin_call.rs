//! The plugin boundary alone (issue 20 item 5): one PayGateGlobal charge flow by each way of
//! calling the same plugin code, timed and counted in instructions, without the simulator or the
//! host around it.
//!
//! ```sh
//! cargo run --release -p gatehouse-bench -- plugin-call            # times, the variants interleaved
//! cargo run --release -p gatehouse-bench -- plugin-call 2000       # and instructions per flow (callgrind)
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use gatehouse_core::loader::{EntryPoints, LoadedPlugin, load_plugin};
use gatehouse_plugin_api::ffi::FfiHttpResponse;

use crate::artifacts::release_library;
use crate::scenarios::{
    abi_flow, abi_whole_json_account_kept_flow, abi_whole_json_flow, account_json,
    charge_invocation, pay_answer, static_json_flow, static_typed_flow,
};

/// The argument of the child that runs flows under valgrind.
pub const RUN_ARGUMENT: &str = "plugin-call-run";

/// No request is sent: the flows only build requests and read a canned answer.
const BASE_URL: &str = "http://127.0.0.1:9";

/// The ways of calling, by name on the child's command line, with what each is.
pub const CASES: [(&str, &str); 6] = [
    (
        "static-typed",
        "static, direct trait calls (typed values, no JSON)",
    ),
    (
        "static-json",
        "static, the first release's `extern \"C\"` entry points (whole invocation as JSON)",
    ),
    (
        "abi-whole-json",
        "ABI before: `start`/`resume`, the whole invocation serialized per dispatch",
    ),
    (
        "abi-whole-json-account-kept",
        "ABI, `start`/`resume`, the account's text kept by the host",
    ),
    (
        "abi-pieces",
        "ABI, `start_v2`/`resume_v2`: the invocation in pieces, command and outcome as JSON",
    ),
    (
        "abi-typed",
        "ABI after: `start_v3`/`resume_v3`, the charge and the outcome typed",
    ),
];

/// The release PayGateGlobal library, loaded by the host's loader.
pub fn load_paygateglobal() -> anyhow::Result<Arc<LoadedPlugin>> {
    let file = release_library("gatehouse-plugin-paygateglobal")?;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let plugin = load_plugin(&file, &bytes, &std::env::temp_dir())
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(Arc::new(plugin))
}

/// Runs `flows` charge flows of `case` (after 50 to warm up): the child under valgrind.
pub fn run_flows(case: &str, flows: u64) -> anyhow::Result<()> {
    let plugin = load_paygateglobal()?;
    let invocation = charge_invocation(BASE_URL);
    let account = account_json(&invocation);
    let answer = pay_answer();
    let ffi_answer = FfiHttpResponse::from(answer.clone());
    let flow: Box<dyn Fn()> = match case {
        "static-typed" => Box::new(|| static_typed_flow(&invocation, &answer)),
        "static-json" => Box::new(|| static_json_flow(&invocation, &ffi_answer)),
        "abi-whole-json" => Box::new(|| abi_whole_json_flow(&plugin, &invocation, &ffi_answer)),
        "abi-whole-json-account-kept" => Box::new(|| {
            abi_whole_json_account_kept_flow(&plugin, &invocation, &account, &ffi_answer)
        }),
        "abi-pieces" => Box::new(|| {
            abi_flow(
                &plugin,
                EntryPoints::Pieces,
                &invocation,
                &account,
                &ffi_answer,
            )
        }),
        "abi-typed" => Box::new(|| {
            abi_flow(
                &plugin,
                EntryPoints::Typed,
                &invocation,
                &account,
                &ffi_answer,
            )
        }),
        other => bail!("unknown plugin-call case `{other}`"),
    };
    for _ in 0..50 + flows {
        flow();
    }
    Ok(())
}

/// Instructions per flow of every case: `(total(2N) - total(N)) / N` under callgrind.
pub fn count_all(
    executable: &Path,
    flows: u64,
    work: &Path,
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let mut counts = Vec::new();
    for (case, _) in CASES {
        eprintln!("callgrind: {case}, {flows} and {} flows...", 2 * flows);
        let small = crate::callgrind::instructions(
            executable,
            &[RUN_ARGUMENT, case, &flows.to_string()],
            &work.join(format!("callgrind.{case}.{flows}.out")),
        )?;
        let large = crate::callgrind::instructions(
            executable,
            &[RUN_ARGUMENT, case, &(2 * flows).to_string()],
            &work.join(format!("callgrind.{case}.{}.out", 2 * flows)),
        )?;
        counts.push((
            case,
            large.saturating_sub(small) as f64 / flows.max(1) as f64,
        ));
    }
    Ok(counts)
}

/// Times of every case, interleaved over `rounds` windows.
pub fn time_all(window: Duration, rounds: u32) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    let plugin = load_paygateglobal()?;
    let invocation = charge_invocation(BASE_URL);
    let account = account_json(&invocation);
    let answer = pay_answer();
    let ffi_answer = FfiHttpResponse::from(answer.clone());
    let flows: [Box<dyn Fn()>; 6] = [
        Box::new(|| static_typed_flow(&invocation, &answer)),
        Box::new(|| static_json_flow(&invocation, &ffi_answer)),
        Box::new(|| abi_whole_json_flow(&plugin, &invocation, &ffi_answer)),
        Box::new(|| abi_whole_json_account_kept_flow(&plugin, &invocation, &account, &ffi_answer)),
        Box::new(|| {
            abi_flow(
                &plugin,
                EntryPoints::Pieces,
                &invocation,
                &account,
                &ffi_answer,
            )
        }),
        Box::new(|| {
            abi_flow(
                &plugin,
                EntryPoints::Typed,
                &invocation,
                &account,
                &ffi_answer,
            )
        }),
    ];
    for flow in &flows {
        flow();
    }
    let mut totals = [Duration::ZERO; 6];
    for _ in 0..rounds {
        for (total, flow) in totals.iter_mut().zip(&flows) {
            *total += crate::measure::time_per_iteration(window, flow);
        }
    }
    Ok(CASES
        .iter()
        .zip(totals)
        .map(|((case, _), total)| (*case, total / rounds.max(1)))
        .collect())
}
