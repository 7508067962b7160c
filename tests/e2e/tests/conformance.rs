//! The conformance check (`gatehouse plugin check`) against real plugin libraries: the template
//! and every provider plugin of the repository pass it; each deliberately broken plugin fails it
//! with the message that names its fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse::conformance::{
    CHECK_CONTRACT, CHECK_ERRORS_WELL_FORMED, CHECK_MANIFEST, CHECK_NO_SECRET_IN_ERRORS,
    CHECK_NO_SECRET_IN_URLS, CHECK_SAME_ORIGIN, CHECK_SENSITIVE_HEADERS, ConformanceReport,
    check_plugin_file, operation_check_name,
};
use gatehouse_e2e::library;
use gatehouse_plugin_api::Operation;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The package of every plugin crate under `plugins/`, the template included.
fn repository_plugins() -> Vec<String> {
    let mut packages: Vec<String> = std::fs::read_dir(workspace_root().join("plugins"))
        .expect("plugins folder")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .map(|entry| format!("gatehouse-plugin-{}", entry.file_name().to_string_lossy()))
        .collect();
    packages.sort();
    packages
}

fn check(package: &str) -> ConformanceReport {
    check_plugin_file(&library(package))
}

/// The failed check called `name`, or a test failure showing the whole report.
fn failed_check<'a>(report: &'a ConformanceReport, name: &str) -> &'a str {
    let check = report
        .check(name)
        .unwrap_or_else(|| panic!("no check `{name}` in:\n{}", report.render()));
    assert!(
        !check.passed,
        "`{name}` passed, expected a failure:\n{}",
        report.render()
    );
    assert!(!report.passed());
    &check.detail
}

#[test]
fn the_template_and_every_provider_plugin_pass() {
    let packages = repository_plugins();
    assert!(
        packages
            .iter()
            .any(|package| package == "gatehouse-plugin-template"),
        "{packages:?}"
    );
    assert!(
        packages.len() >= 6,
        "the template and the five providers: {packages:?}"
    );
    for package in &packages {
        let report = check(package);
        assert!(
            report.passed(),
            "{package} fails the conformance check:\n{}",
            report.render()
        );
        let manifest = report
            .manifest
            .as_ref()
            .expect("a passing report has the manifest");
        for &operation in &manifest.operations {
            assert!(
                report.check(&operation_check_name(operation)).is_some(),
                "{package}: {operation}"
            );
        }
        let rendered = report.render();
        assert!(rendered.contains("result: PASSED"), "{rendered}");
        assert!(
            !rendered.contains("conformance-secret-"),
            "the report shows no secret value"
        );
    }
}

#[test]
fn the_template_report_is_readable() {
    let report = check("gatehouse-plugin-template");
    assert_eq!(report.provider.as_deref(), Some("template"));
    assert_eq!(report.plugin_version.as_deref(), Some("0.1.0"));
    assert_eq!(
        report.contract_version.as_deref(),
        Some(gatehouse_plugin_api::CONTRACT_VERSION)
    );
    let names: Vec<&str> = report
        .checks
        .iter()
        .map(|check| check.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec![
            CHECK_CONTRACT,
            CHECK_MANIFEST,
            "operation balance",
            "operation charge",
            CHECK_ERRORS_WELL_FORMED,
            CHECK_NO_SECRET_IN_ERRORS,
            CHECK_SAME_ORIGIN,
            CHECK_NO_SECRET_IN_URLS,
            CHECK_SENSITIVE_HEADERS,
        ]
    );
    let rendered = report.render();
    for line in [
        "plugin:   template 0.1.0",
        "operations: balance, charge",
        "config keys: api_key (required, secret), merchant_id (optional)",
        "PASS  operation charge",
        "result: PASSED (9 checks)",
    ] {
        assert!(
            rendered.contains(line),
            "`{line}` missing from:\n{rendered}"
        );
    }
    // Both operations reached the provider with every canned answer.
    let charge = report.check("operation charge").expect("charge check");
    assert!(
        charge.detail.contains("ended with an outcome"),
        "{}",
        charge.detail
    );
    assert!(
        !charge.detail.contains(" 0 request(s)"),
        "{}",
        charge.detail
    );
}

#[test]
fn a_panicking_plugin_fails_with_the_panic_message() {
    let report = check("gatehouse-fixture-broken-panicking");
    assert!(
        report
            .check(CHECK_CONTRACT)
            .is_some_and(|check| check.passed)
    );
    assert!(
        report
            .check(CHECK_MANIFEST)
            .is_some_and(|check| check.passed)
    );
    let balance = failed_check(&report, &operation_check_name(Operation::Balance));
    assert!(
        balance.contains(
            "panicked: plugin panicked in start: deliberate panic while starting balance"
        ),
        "{balance}"
    );
    let charge = failed_check(&report, &operation_check_name(Operation::Charge));
    assert!(
        charge.contains(
            "plugin panicked in resume: deliberate panic while reading the charge answer"
        ),
        "{charge}"
    );
    assert!(report.render().contains("FAIL  operation balance"));
}

#[test]
fn a_plugin_with_an_unusable_manifest_fails_with_the_loaders_reasons() {
    let report = check("gatehouse-fixture-broken-manifest");
    assert!(
        report
            .check(CHECK_CONTRACT)
            .is_some_and(|check| check.passed),
        "{}",
        report.render()
    );
    let manifest = failed_check(&report, CHECK_MANIFEST);
    assert!(
        manifest.contains("the plugin's manifest is unusable"),
        "{manifest}"
    );
    assert!(
        manifest.contains("provider id `Broken Manifest` must be 1-64 characters"),
        "{manifest}"
    );
    assert!(
        manifest.contains("operation `balance` is listed twice"),
        "{manifest}"
    );
    assert!(report.manifest.is_none());
}

#[test]
fn a_plugin_that_echoes_its_secret_fails_for_that_alone() {
    let report = check("gatehouse-fixture-broken-secret-echo");
    let echo = failed_check(&report, CHECK_NO_SECRET_IN_ERRORS);
    assert!(
        echo.contains("the `balance` error contains the value of secret `api_key`"),
        "{echo}"
    );
    assert!(
        echo.contains("the `charge` outcome's error contains the value of secret `api_key`"),
        "{echo}"
    );
    assert!(
        !echo.contains("conformance-secret-"),
        "the report does not repeat the value: {echo}"
    );
    let failed: Vec<&str> = report.failures().map(|check| check.name.as_str()).collect();
    assert_eq!(
        failed,
        vec![CHECK_NO_SECRET_IN_ERRORS],
        "{}",
        report.render()
    );
}

#[test]
fn plugins_built_against_another_contract_fail_the_contract_check() {
    for (package, message) in [
        (
            "gatehouse-fixture-contract-old-version",
            "built against gatehouse-plugin-api 0.0.9, incompatible with this host's",
        ),
        (
            "gatehouse-fixture-contract-other-layout",
            "its plugin-api types differ from this host's",
        ),
        ("gatehouse-fixture-not-a-plugin", "not a Gatehouse plugin"),
    ] {
        let report = check(package);
        let contract = failed_check(&report, CHECK_CONTRACT);
        assert!(contract.contains(message), "{package}: {contract}");
        assert_eq!(
            report.checks.len(),
            1,
            "nothing else can be checked:\n{}",
            report.render()
        );
        assert!(
            report
                .render()
                .contains("result: FAILED (1 of 1 checks failed)")
        );
    }
}

#[test]
fn a_misbehaving_plugin_fails_every_way_it_misbehaves() {
    // balance panics, report never returns, status asks for another host, payment_page puts the
    // key in its error; refund is correct.
    let report = check("gatehouse-fixture-misbehaving-plugin");
    let balance = failed_check(&report, "operation balance");
    assert!(balance.contains("deliberate panic in balance"), "{balance}");
    let report_check = failed_check(&report, "operation report");
    assert!(
        report_check.contains("`start` did not return within 2 s"),
        "{report_check}"
    );
    let origin = failed_check(&report, CHECK_SAME_ORIGIN);
    assert!(
        origin.contains("`status` asked for http://198.51.100.7/exfiltrate"),
        "{origin}"
    );
    let echo = failed_check(&report, CHECK_NO_SECRET_IN_ERRORS);
    assert!(
        echo.contains("`payment_page` error contains the value of secret `api_key`"),
        "{echo}"
    );
    assert!(
        report
            .check("operation refund")
            .is_some_and(|check| check.passed),
        "{}",
        report.render()
    );
}

/// The guide's commands, run as written (PLUGIN_GUIDE.md sections 2 and 4 to 8): create a plugin
/// from the template, test, format, lint, build, check, deploy it to a running host, call it,
/// upgrade it and roll it back, all without a restart.
///
/// It runs in a scratch workspace that mirrors the repository's (same dependencies, lints and
/// profiles), because creating `plugins/acme-pay` in the repository itself would change the
/// workspace under every other build. It builds into a target folder of its own, kept between
/// runs, so that its library never sits beside the repository's plugins (where `gatehouse
/// sandbox` would install it). The one liberty taken: `--release` builds are made with the dev
/// profile, to save build time; the commands are otherwise the guide's own text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_walkthrough() {
    let guide = Guide::read();
    let scratch = tempfile::tempdir().expect("scratch folder");
    // The scratch workspace keeps one path from run to run, so cargo rebuilds the new crate in
    // place instead of piling up a copy per run in the target folder.
    let workspace = walkthrough_target_dir().join("workspace");
    let _ = std::fs::remove_dir_all(&workspace);
    let previous = scratch.path().join("previous");
    std::fs::create_dir_all(workspace.join("plugins")).expect("scratch workspace");
    std::fs::create_dir_all(&previous).expect("folder for kept versions");
    write_scratch_workspace(&workspace);

    // A provider that answers the balance request, and a running host with an account for it.
    let provider = OneAnswerProvider::start(
        r#"{"balances": [{"wallet": "main", "amount": "125.50", "currency": "USD"}]}"#,
    );
    let mut host = gatehouse_e2e::TestHost::start(
        &[],
        &format!(
            "[providers.acme-pay.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ api_key = \"sk_walkthrough_1\" }}\n",
            provider.base_url
        ),
    )
    .await;
    host.watch();
    let shell = Shell {
        cwd: workspace.clone(),
        substitutions: vec![
            ("cargo build --release".into(), "cargo build".into()),
            (
                "target/release/".into(),
                format!("{}/debug/", walkthrough_target_dir().display()),
            ),
            (
                "/srv/gatehouse/plugins".into(),
                host.plugins_dir().display().to_string(),
            ),
            (
                "/srv/gatehouse/previous".into(),
                previous.display().to_string(),
            ),
            (
                "gatehouse plugins".into(),
                format!(
                    "gatehouse --config {} plugins",
                    host.config_path().display()
                ),
            ),
        ],
    };

    // 2. Create the crate.
    shell.run_block(&guide.block("gatehouse plugin new acme-pay"));
    assert!(workspace.join("plugins/acme-pay/src/lib.rs").exists());

    // 4. Test it (tests, format, lint): the new crate is clean as it stands, formatting included
    // (renaming changes line lengths and import order; `plugin new` formats what it wrote).
    shell.run("cargo fmt -p gatehouse-plugin-acme-pay -- --check");
    shell.run_block(&guide.block("cargo test -p gatehouse-plugin-acme-pay"));

    // 5. and 6. Build it and check it.
    shell.run_block(&guide.block("cargo build --release -p gatehouse-plugin-acme-pay"));
    let check = shell.run_block(
        &guide.block("gatehouse plugin check target/release/libgatehouse_plugin_acme_pay.so"),
    );
    assert!(
        check.contains("plugin:   acme-pay 0.1.0") && check.contains("result: PASSED"),
        "{check}"
    );

    // 7. Deploy it: the running host picks it up and serves it.
    let listing = shell.run_block(&guide.block("gatehouse plugins"));
    assert!(
        listing.contains("acme-pay") && listing.contains("0.1.0"),
        "{listing}"
    );
    let version = |host: &gatehouse_e2e::TestHost| {
        host.gateway
            .registry()
            .get("acme-pay")
            .map(|plugin| plugin.manifest.plugin_version.clone())
    };
    assert!(
        host.wait_until(Duration::from_secs(10), |gateway| gateway
            .registry()
            .get("acme-pay")
            .is_some())
            .await,
        "the host did not load the deployed plugin: {:?}",
        host.gateway.registry().failures()
    );
    assert_eq!(version(&host).as_deref(), Some("0.1.0"));
    let outcome = host
        .call(
            "acme-pay",
            "main",
            serde_json::json!({"operation": "balance"}),
        )
        .await
        .expect("balance through the deployed plugin");
    assert_eq!(
        outcome.status,
        gatehouse_plugin_api::OutcomeStatus::Succeeded
    );
    assert!(
        provider
            .requests()
            .iter()
            .any(|head| head.contains("authorization: Bearer sk_walkthrough_1"))
    );

    // 8. Upgrade: bump the version, rebuild, keep the running file, deploy the new one.
    let manifest_path = workspace.join("plugins/acme-pay/Cargo.toml");
    let cargo_toml = std::fs::read_to_string(&manifest_path).expect("Cargo.toml");
    std::fs::write(
        &manifest_path,
        cargo_toml.replacen("version = \"0.1.0\"", "version = \"0.2.0\"", 1),
    )
    .expect("bump");
    shell.run_block(&guide.block("cargo build --release -p gatehouse-plugin-acme-pay"));
    shell.run_block(&guide.block(
        "cp /srv/gatehouse/plugins/libacme-pay.so /srv/gatehouse/previous/libacme-pay-0.1.0.so",
    ));
    assert!(
        host.wait_until(Duration::from_secs(10), |_| version(&host).as_deref()
            == Some("0.2.0"))
            .await,
        "the upgrade was not picked up: {:?}",
        version(&host)
    );

    // 8. Roll back to the kept file.
    shell.run_block(&guide.block("cp /srv/gatehouse/previous/libacme-pay-0.1.0.so /srv/gatehouse/plugins/.libacme-pay.so.tmp"));
    assert!(
        host.wait_until(Duration::from_secs(10), |_| version(&host).as_deref()
            == Some("0.1.0"))
            .await,
        "the roll-back was not picked up: {:?}",
        version(&host)
    );
    let outcome = host
        .call(
            "acme-pay",
            "main",
            serde_json::json!({"operation": "balance"}),
        )
        .await
        .expect("balance after the roll-back");
    assert_eq!(
        outcome.status,
        gatehouse_plugin_api::OutcomeStatus::Succeeded
    );

    // Every command block of the guide was run above.
    assert_eq!(
        guide.unused(),
        Vec::<Vec<String>>::new(),
        "sh blocks of PLUGIN_GUIDE.md that no test runs"
    );
}

/// The walkthrough's own target folder, inside the repository's.
fn walkthrough_target_dir() -> PathBuf {
    target_dir().join("guide-walkthrough")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A workspace like the repository's, holding only `plugins/*`: the root manifest with its
/// members replaced and its paths made absolute, and the repository's lock file.
fn write_scratch_workspace(folder: &Path) {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("root Cargo.toml");
    let members_start = manifest.find("members = [").expect("workspace members");
    let members_end =
        members_start + manifest[members_start..].find(']').expect("end of members") + 1;
    let manifest = format!(
        "{}members = [\"plugins/*\"]{}",
        &manifest[..members_start],
        &manifest[members_end..]
    )
    .replace(
        "path = \"plugin-api\"",
        &format!("path = {:?}", root.join("plugin-api").display().to_string()),
    )
    .replace(
        "path = \"host\"",
        &format!("path = {:?}", root.join("host").display().to_string()),
    );
    std::fs::write(folder.join("Cargo.toml"), manifest).expect("scratch Cargo.toml");
    std::fs::copy(root.join("Cargo.lock"), folder.join("Cargo.lock")).expect("scratch Cargo.lock");
}

/// The fenced `sh` blocks of PLUGIN_GUIDE.md, and which of them the walkthrough ran.
struct Guide {
    blocks: Vec<Vec<String>>,
    used: std::cell::RefCell<std::collections::BTreeSet<usize>>,
}

impl Guide {
    fn read() -> Self {
        let text = std::fs::read_to_string(workspace_root().join("PLUGIN_GUIDE.md"))
            .expect("PLUGIN_GUIDE.md");
        let mut blocks = Vec::new();
        let mut current: Option<Vec<String>> = None;
        // The deploy walkthrough (install, history, rollback) is run as written by
        // `deploy::the_guide_walkthrough_runs_as_written`, against a host of its own.
        let mut in_deploy_walkthrough = false;
        for line in text.lines() {
            if line.trim() == "<!-- deploy-walkthrough:begin -->" {
                in_deploy_walkthrough = true;
            } else if line.trim() == "<!-- deploy-walkthrough:end -->" {
                in_deploy_walkthrough = false;
            }
            if in_deploy_walkthrough {
                continue;
            }
            match (&mut current, line.trim_end()) {
                (None, "```sh") => current = Some(Vec::new()),
                (Some(_), "```") => blocks.extend(current.take()),
                (Some(block), command) => {
                    // A trailing `# comment` explains; it is not part of the command.
                    let command = command.split(" # ").next().unwrap_or(command).trim();
                    if !command.is_empty() && !command.starts_with('#') {
                        block.push(command.to_string());
                    }
                }
                (None, _) => {}
            }
        }
        Self {
            blocks,
            used: Default::default(),
        }
    }

    /// The blocks the walkthrough did not run: the guide must have none.
    fn unused(&self) -> Vec<Vec<String>> {
        let used = self.used.borrow();
        (0..self.blocks.len())
            .filter(|index| !used.contains(index))
            .map(|index| self.blocks[index].clone())
            .collect()
    }

    /// The one block with a line that is exactly `command`.
    fn block(&self, command: &str) -> Vec<String> {
        let found: Vec<usize> = (0..self.blocks.len())
            .filter(|&index| {
                self.blocks[index]
                    .iter()
                    .any(|line| line == command || line.starts_with(&format!("{command} ")))
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "PLUGIN_GUIDE.md must have exactly one sh block with `{command}`"
        );
        self.used.borrow_mut().insert(found[0]);
        self.blocks[found[0]].clone()
    }
}

/// Runs the guide's command lines with `sh`, the built `gatehouse` first on the PATH.
struct Shell {
    cwd: PathBuf,
    substitutions: Vec<(String, String)>,
}

impl Shell {
    fn run_block(&self, lines: &[String]) -> String {
        lines
            .iter()
            .map(|line| self.run(line))
            .collect::<Vec<_>>()
            .join("")
    }

    fn run(&self, line: &str) -> String {
        let mut command = line.to_string();
        for (from, to) in &self.substitutions {
            command = command.replace(from.as_str(), to);
        }
        let binary = gatehouse_e2e::gatehouse_binary();
        let cargo = PathBuf::from(env!("CARGO"));
        let path = std::env::join_paths(
            [binary.parent(), cargo.parent()]
                .into_iter()
                .flatten()
                .map(Path::to_path_buf)
                .chain(std::env::split_paths(
                    &std::env::var_os("PATH").unwrap_or_default(),
                )),
        )
        .expect("PATH");
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .current_dir(&self.cwd)
            .env("PATH", path)
            .env("CARGO_TARGET_DIR", walkthrough_target_dir())
            .env("CARGO_NET_OFFLINE", "true")
            .env("CARGO_INCREMENTAL", "0")
            .output()
            .expect("sh runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`{line}` failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

/// A provider on loopback that answers every request with one JSON body and records each
/// request's head (lower-cased header names).
struct OneAnswerProvider {
    base_url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl OneAnswerProvider {
    fn start(body: &'static str) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(&stream);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&match line.split_once(':') {
                        Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
                        None => line,
                    });
                }
                log.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(head);
                let mut stream = &stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { base_url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
