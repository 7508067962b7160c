//! Tidy checks, run as ordinary tests so `cargo test` is the one gate.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn rust_files(folder: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).expect("readable folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The contract crate is what plugin authors build against alone: it must not pull in the host
/// or anything else of this workspace.
#[test]
fn plugin_api_depends_on_no_workspace_crate() {
    let manifest = std::fs::read_to_string(root().join("plugin-api/Cargo.toml")).expect("manifest");
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("a dependencies table");
    assert!(
        !dependencies.contains("path ="),
        "plugin-api must have no path dependencies"
    );
    assert!(
        !dependencies.contains("gatehouse-"),
        "plugin-api must not depend on another gatehouse crate"
    );
}

/// A panic in a plugin becomes a plugin-fault error, but it is still a bug: plugin code (outside
/// its tests) handles every input with errors. Lines marked `// tidy: allow-panic` carry a reason.
#[test]
fn plugin_code_does_not_unwrap() {
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(root().join("plugins")).expect("plugins") {
        let source = entry.expect("entry").path().join("src");
        if !source.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&source, &mut files);
        for file in files {
            let relative = file
                .strip_prefix(&source)
                .unwrap_or(&file)
                .to_string_lossy()
                .into_owned();
            if relative.starts_with("tests/")
                || relative.contains("/tests/")
                || relative.ends_with("tests.rs")
            {
                continue;
            }
            let contents = std::fs::read_to_string(&file).expect("source");
            // Stop at an in-file test module.
            let code = contents.split("#[cfg(test)]").next().unwrap_or("");
            for (number, line) in code.lines().enumerate() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") || line.contains("tidy: allow-panic") {
                    continue;
                }
                if [
                    ".unwrap()",
                    ".expect(",
                    "panic!(",
                    "unimplemented!(",
                    "todo!(",
                ]
                .iter()
                .any(|pattern| line.contains(pattern))
                {
                    offenders.push(format!("{}:{}: {}", file.display(), number + 1, trimmed));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "plugin code that can panic:\n{}",
        offenders.join("\n")
    );
}

/// The host's crates are layered: plugin-api, then the ledger, the core, the service, and the
/// `gatehouse` binary on top. A crate depends only on the layers below it (no upward or circular
/// edge), and the libraries a platform embeds pull in no CLI or test machinery.
#[test]
fn the_host_crates_depend_only_downward() {
    let layers = [
        ("host/ledger", "gatehouse-ledger"),
        ("host/core", "gatehouse-core"),
        ("host/service", "gatehouse-service"),
        ("host/gatehouse", "gatehouse"),
    ];
    let workspace_crates = [
        "gatehouse-plugin-api",
        "gatehouse-ledger",
        "gatehouse-core",
        "gatehouse-service",
        "gatehouse",
    ];
    for (level, (folder, name)) in layers.iter().enumerate() {
        let manifest: toml::Table = std::fs::read_to_string(root().join(folder).join("Cargo.toml"))
            .expect("manifest")
            .parse()
            .expect("manifest is TOML");
        assert_eq!(manifest["package"]["name"].as_str(), Some(*name));
        let dependencies = manifest
            .get("dependencies")
            .and_then(|table| table.as_table())
            .cloned()
            .unwrap_or_default();
        // Below this crate: plugin-api and the layers before it.
        let allowed: Vec<&str> = std::iter::once("gatehouse-plugin-api")
            .chain(layers[..level].iter().map(|(_, below)| *below))
            .collect();
        for dependency in dependencies.keys() {
            if workspace_crates.contains(&dependency.as_str()) {
                assert!(
                    allowed.contains(&dependency.as_str()),
                    "{name} depends on {dependency}, which is not below it"
                );
            }
        }
        if *name != "gatehouse" {
            for forbidden in ["clap", "anyhow", "tracing-subscriber"] {
                assert!(
                    !dependencies.contains_key(forbidden),
                    "{name} (a library platforms embed) depends on {forbidden}"
                );
            }
            assert!(
                !dependencies
                    .keys()
                    .any(|key| key.starts_with("gatehouse-sim-")),
                "{name} depends on a simulator"
            );
        }
    }
}

/// The `next-contract-fixture` and `previous-contract-fixture` features of plugin-api grow and
/// shrink the contract for the evolution tests only: no crate of the workspace may turn them on
/// (cargo would unify them into every plugin and the host); only the standalone fixtures
/// `tests/standalone/next-contract` and `tests/standalone/previous-contract` do.
#[test]
fn no_workspace_crate_enables_the_next_contract_fixture() {
    let mut manifests = Vec::new();
    for folder in [
        "host",
        "plugins",
        "tests/e2e",
        "tests/bench",
        "tests/fixtures",
        "tests/simulators",
    ] {
        let mut stack = vec![root().join(folder)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("readable folder") {
                let path = entry.expect("entry").path();
                if path.is_dir() && !path.ends_with("target") && !path.ends_with("src") {
                    stack.push(path);
                } else if path.file_name().is_some_and(|name| name == "Cargo.toml") {
                    manifests.push(path);
                }
            }
        }
    }
    manifests.push(root().join("Cargo.toml"));
    assert!(
        manifests.len() > 10,
        "found the workspace's manifests: {manifests:?}"
    );
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest).expect("manifest");
        for feature in ["next-contract-fixture", "previous-contract-fixture"] {
            assert!(
                !text.contains(feature),
                "{} enables plugin-api's {feature}",
                manifest.display()
            );
        }
    }
}

/// deny.toml allows openmetrics-parser's LGPL-3.0 as a test-only exception: no crate but the
/// end-to-end tests may depend on it.
#[test]
fn only_the_e2e_tests_use_the_lgpl_metrics_parser() {
    let mut offenders = Vec::new();
    for folder in [
        "host/ledger",
        "host/core",
        "host/service",
        "host/gatehouse",
        "plugin-api",
    ] {
        let manifest =
            std::fs::read_to_string(root().join(folder).join("Cargo.toml")).expect("manifest");
        if manifest.contains("openmetrics-parser") {
            offenders.push(folder);
        }
    }
    for entry in std::fs::read_dir(root().join("plugins")).expect("plugins") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        if std::fs::read_to_string(&manifest).is_ok_and(|text| text.contains("openmetrics-parser"))
        {
            offenders.push("a plugin");
        }
    }
    assert!(
        offenders.is_empty(),
        "openmetrics-parser used by {offenders:?}"
    );
}
