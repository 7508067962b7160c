//! Micro-benchmarks of the hot path: routing, a plugin step through the ABI, money conversion,
//! signing and a ledger write.
//!
//! ```sh
//! cargo bench -p gatehouse-bench                 # all of them
//! cargo bench -p gatehouse-bench -- plugin_step  # one group
//! ```
//!
//! The plugin libraries are built in release first (cargo does nothing when they are current).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gatehouse_bench::artifacts::build_release_libraries;
use gatehouse_bench::host::{ACCOUNT, PROVIDER, prepare_folder, work_dir};
use gatehouse_bench::scenarios::{
    abi_flow, abi_whole_json_flow, account_json, charge_invocation, pay_answer, static_json_flow,
    static_typed_flow,
};
use gatehouse_bench::targets::{balance_command, charge_command};
use gatehouse_core::new_reference;
use gatehouse_core::resolve::resolve_account;
use gatehouse_core::transport::same_origin;
use gatehouse_core::{Config, Gateway};
use gatehouse_ledger::{Ledger, NewEntry, SqliteLedger, request_hash};
use gatehouse_plugin_api::ffi::FfiHttpResponse;
use gatehouse_plugin_api::{Currency, Invocation, Money, Operation, Outcome};
use md5::Md5;
use sha1::{Digest, Sha1};
use tempfile::TempDir;

const SIMULATOR_BASE_URL: &str = "http://127.0.0.1:9";

/// A gateway with the five release plugins loaded (no simulator: nothing here sends).
fn gateway() -> (Gateway, TempDir) {
    if let Err(error) = build_release_libraries() {
        panic!("building the plugin libraries: {error:#}");
    }
    let dir = work_dir().unwrap_or_else(|error| panic!("{error:#}"));
    let config_path = prepare_folder(dir.path(), SIMULATOR_BASE_URL, "127.0.0.1:0")
        .unwrap_or_else(|error| panic!("{error:#}"));
    let config = Config::load(&config_path).unwrap_or_else(|error| panic!("{error}"));
    let gateway = Gateway::new(config);
    gateway.reload_plugins();
    assert!(
        gateway.registry().get(PROVIDER).is_some(),
        "paygateglobal did not load"
    );
    (gateway, dir)
}

fn routing(criterion: &mut Criterion) {
    let (gateway, _dir) = gateway();
    let charge = charge_command();
    let balance = balance_command();
    let mut group = criterion.benchmark_group("routing");
    // `prepare` is every check of a command, made once (the command is cloned in: `prepare`
    // takes it by value, as the service hands it over).
    group.bench_function("prepare_charge", |bencher| {
        bencher.iter(|| {
            black_box(
                gateway
                    .prepare(PROVIDER, ACCOUNT, black_box(charge.clone()))
                    .is_ok(),
            )
        })
    });
    group.bench_function("prepare_balance", |bencher| {
        bencher.iter(|| {
            black_box(
                gateway
                    .prepare(PROVIDER, ACCOUNT, black_box(balance.clone()))
                    .is_ok(),
            )
        })
    });
    group.finish();
}

/// Per-dispatch work of the gateway outside the plugin, which the profile
/// points at: account resolution, the origin check, metrics.
fn dispatch_parts(criterion: &mut Criterion) {
    let (gateway, _dir) = gateway();
    let plugin = gateway
        .registry()
        .get(PROVIDER)
        .unwrap_or_else(|| panic!("paygateglobal is not loaded"));
    let config = gateway.config();
    let section = config
        .account(PROVIDER, ACCOUNT)
        .unwrap_or_else(|| panic!("the benchmark account is missing"));
    let request_url = format!("{SIMULATOR_BASE_URL}/api/v1/pay");
    let mut group = criterion.benchmark_group("dispatch_parts");
    group.bench_function("resolve_account", |bencher| {
        bencher.iter(|| resolve_account(&plugin.manifest, ACCOUNT, black_box(section)).is_ok())
    });
    // As a flow checks a request: its URL parsed (once, for the check, the log and the client)
    // against the account's base URL parsed when the account was resolved.
    let base_url = reqwest::Url::parse(SIMULATOR_BASE_URL).expect("the simulator's URL");
    group.bench_function("same_origin", |bencher| {
        bencher.iter(|| {
            reqwest::Url::parse(black_box(&request_url))
                .is_ok_and(|url| same_origin(&url, black_box(&base_url)))
        })
    });
    group.bench_function("metrics_increment", |bencher| {
        bencher.iter(|| {
            gateway.metrics().increment(
                "gatehouse_requests_total",
                &[("provider", black_box(PROVIDER)), ("operation", "charge")],
            )
        })
    });
    group.finish();
}

fn plugin_step(criterion: &mut Criterion) {
    let (gateway, _dir) = gateway();
    let plugin = gateway
        .registry()
        .get(PROVIDER)
        .unwrap_or_else(|| panic!("paygateglobal is not loaded"));
    let invocation = charge_invocation(SIMULATOR_BASE_URL);
    let answer = pay_answer();
    let ffi_answer = FfiHttpResponse::from(answer.clone());
    let mut group = criterion.benchmark_group("plugin_step");
    let account = account_json(&invocation);
    group.bench_function("charge_flow_abi_cdylib", |bencher| {
        bencher.iter(|| {
            abi_flow(
                &plugin,
                plugin.entry_points(),
                black_box(&invocation),
                &account,
                &ffi_answer,
            )
        })
    });
    group.bench_function("charge_flow_abi_cdylib_whole_json", |bencher| {
        bencher.iter(|| abi_whole_json_flow(&plugin, black_box(&invocation), &ffi_answer))
    });
    group.bench_function("charge_flow_static_json_entry_points", |bencher| {
        bencher.iter(|| static_json_flow(black_box(&invocation), &ffi_answer))
    });
    group.bench_function("charge_flow_static_typed", |bencher| {
        bencher.iter(|| static_typed_flow(black_box(&invocation), &answer))
    });
    group.bench_function("invocation_to_json", |bencher| {
        bencher.iter(|| serde_json::to_string(black_box(&invocation)).map(|json| json.len()))
    });
    // What each entry point of the plugin does first (twice per charge flow).
    let invocation_json =
        serde_json::to_string(&invocation).unwrap_or_else(|error| panic!("{error}"));
    group.bench_function("invocation_from_json", |bencher| {
        bencher.iter(|| serde_json::from_str::<Invocation>(black_box(&invocation_json)).is_ok())
    });
    group.finish();
}

fn money(criterion: &mut Criterion) {
    let usd = Currency::from_code("USD").unwrap_or_else(|error| panic!("{error}"));
    let xof = Currency::from_code("XOF").unwrap_or_else(|error| panic!("{error}"));
    let mut group = criterion.benchmark_group("money");
    group.bench_function("parse_decimal_usd_14.95", |bencher| {
        bencher
            .iter(|| Money::parse_decimal(black_box("14.95"), usd).map(|money| money.minor_units))
    });
    group.bench_function("parse_decimal_xof_1500", |bencher| {
        bencher.iter(|| Money::parse_decimal(black_box("1500"), xof).map(|money| money.minor_units))
    });
    let amount = Money::new(1_495, usd);
    group.bench_function("to_decimal_string_usd", |bencher| {
        bencher.iter(|| black_box(&amount).to_decimal_string())
    });
    group.finish();
}

fn signing(criterion: &mut Criterion) {
    // Kolmisoft's `payments_get` hash: SHA1 over the hashed parameters' values in the document's
    // order, then the API secret key, as lower-case hex (plugins/kolmisoft signing.rs).
    let values = [
        "7",
        "1767225600",
        "1767311999",
        "alice",
        "Alice",
        "Liddell",
        "0.01",
        "99999",
        "USD",
    ];
    let secret_key = "kolmisoft-api-secret-key-0123456789";
    let mut group = criterion.benchmark_group("signing");
    group.bench_function("kolmisoft_sha1_hex", |bencher| {
        bencher.iter(|| {
            let mut hasher = Sha1::new();
            for value in black_box(&values) {
                hasher.update(value.as_bytes());
            }
            hasher.update(secret_key.as_bytes());
            hex::encode(hasher.finalize())
        })
    });
    // Paysite Cash sends md5(password) as lower-case hex (plugins/paysitecash `md5_hex`).
    group.bench_function("paysitecash_md5_hex", |bencher| {
        bencher.iter(|| hex::encode(Md5::digest(black_box("s3cret-Passw0rd").as_bytes())))
    });
    group.finish();
}

fn ledger(criterion: &mut Criterion) {
    let dir = work_dir().unwrap_or_else(|error| panic!("{error:#}"));
    let on_disk = SqliteLedger::open(&dir.path().join("ledger.sqlite"))
        .unwrap_or_else(|error| panic!("{error}"));
    // The same in memory: no fsync, so what is left is the ledger's CPU (SQL, JSON, history).
    let in_memory = SqliteLedger::open_in_memory().unwrap_or_else(|error| panic!("{error}"));
    let mut group = criterion.benchmark_group("ledger");
    // Every write is fsynced (synchronous=FULL): milliseconds, so fewer samples.
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (name, ledger) in [
        ("begin_and_record_outcome_on_disk", &on_disk),
        ("begin_and_record_outcome_in_memory", &in_memory),
    ] {
        bench_begin_and_record_outcome(&mut group, name, ledger);
    }
    group.finish();
}

/// One idempotent charge's ledger writes: the entry before sending, the outcome after.
fn bench_begin_and_record_outcome(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    ledger: &SqliteLedger,
) {
    let command = charge_command();
    let hash = request_hash(PROVIDER, ACCOUNT, &command);
    let outcome = Outcome::pending();
    group.bench_function(name, |bencher| {
        bencher.iter_batched(
            || NewEntry {
                id: new_reference(),
                provider: PROVIDER.to_string(),
                account: ACCOUNT.to_string(),
                operation: Operation::Charge,
                idempotency_key: Some(new_reference()),
                request_hash: hash.clone(),
                command: command.clone(),
                actor: None,
            },
            |entry| {
                let id = entry.id.clone();
                black_box(
                    ledger
                        .begin(entry)
                        .unwrap_or_else(|error| panic!("{error}")),
                );
                ledger
                    .record_outcome(&id, &outcome)
                    .unwrap_or_else(|error| panic!("{error}"))
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    hot_path,
    routing,
    dispatch_parts,
    plugin_step,
    money,
    signing,
    ledger
);
criterion_main!(hot_path);
