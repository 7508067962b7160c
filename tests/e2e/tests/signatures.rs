//! Signed plugins: with `[signatures] require_signatures = true`, only a library whose
//! `<file>.minisig` was made by a trusted key over its exact bytes loads. Keys and signatures are
//! made with the real `gatehouse plugin keygen` / `gatehouse plugin sign`. Every refusal (unsigned,
//! another key, a tampered byte, a signature made for another file) names the file and the
//! reason, and the previous version keeps serving.

use std::path::{Path, PathBuf};
use std::process::Command;

use gatehouse_core::registry::ScanEvent;
use gatehouse_e2e::{TestHost, gatehouse_binary, install, library, plugin_file_name};
use gatehouse_plugin_api::OutcomeStatus;
use gatehouse_sim_paygateglobal::PayGateSimulator;
use serde_json::json;

const TOKEN: &str = "token-for-signature-tests";

fn gatehouse(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(gatehouse_binary())
        .args(args)
        .output()
        .expect("gatehouse runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {text}");
    text
}

/// Makes a key pair with the CLI; returns (secret key file, public key line).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let base = dir.join(name);
    gatehouse(&[
        "plugin".as_ref(),
        "keygen".as_ref(),
        "--out".as_ref(),
        base.as_os_str(),
    ]);
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("public key");
    let line = public
        .lines()
        .nth(1)
        .expect("the key line")
        .trim()
        .to_string();
    (dir.join(format!("{name}.key")), line)
}

/// Copies `library` to `staging/<plugin file name>` and signs it there with `key`; returns the
/// staged library and its signature.
fn signed_copy(staging: &Path, library: &Path, key: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(staging).expect("staging folder");
    let staged = staging.join(plugin_file_name("paygateglobal"));
    std::fs::copy(library, &staged).expect("stage");
    gatehouse(&[
        "plugin".as_ref(),
        "sign".as_ref(),
        staged.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ]);
    let signature = PathBuf::from(format!("{}.minisig", staged.display()));
    assert!(signature.exists());
    (staged, signature)
}

fn deploy_signature(signature: &Path, plugins: &Path) {
    install(
        signature,
        plugins,
        &format!("{}.minisig", plugin_file_name("paygateglobal")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_plugins_signed_by_a_trusted_key_load() {
    let (_simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let keys = tempfile::tempdir().expect("folder");
    let (trusted_key, trusted_public) = keygen(keys.path(), "release");
    let (other_key, _) = keygen(keys.path(), "someone-else");
    let host = TestHost::start(
        &[],
        &format!(
            "[signatures]\nrequire_signatures = true\ntrusted_keys = [\"{trusted_public}\"]\n\n\
             [providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
            running.base_url()
        ),
    )
    .await;
    let plugins = host.plugins_dir();
    let target = plugin_file_name("paygateglobal");
    let current = library("gatehouse-plugin-paygateglobal");
    let next = library("gatehouse-fixture-paygateglobal-next");
    let version = || {
        host.gateway
            .registry()
            .get("paygateglobal")
            .map(|plugin| plugin.manifest.plugin_version.clone())
    };

    // Signed by the trusted key: loaded, and /v1/plugins says by which key.
    let (staged, signature) = signed_copy(&keys.path().join("v1"), &current, &trusted_key);
    deploy_signature(&signature, &plugins);
    install(&staged, &plugins, &target);
    let events = host.gateway.reload_plugins();
    assert!(
        events
            .iter()
            .any(|event| matches!(event, ScanEvent::Loaded { .. })),
        "{events:?}"
    );
    assert_eq!(version().as_deref(), Some("1.0.0"));
    let status = host
        .gateway
        .registry()
        .statuses()
        .into_iter()
        .find(|status| status.provider == "paygateglobal")
        .expect("status");
    assert!(
        status.signed_by.as_deref().is_some_and(|id| id.len() == 16),
        "{:?}",
        status.signed_by
    );

    // Each refusal: the file and the reason named, the signed version still serving.
    let tampered = keys.path().join("tampered.so");
    let mut bytes = std::fs::read(&next).expect("next bytes");
    let (next_staged, next_signature) = signed_copy(&keys.path().join("next"), &next, &trusted_key);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&tampered, &bytes).expect("tampered copy");
    let (_, other_signature) = signed_copy(&keys.path().join("other"), &next, &other_key);
    let cases: Vec<(&str, Option<&Path>, &Path, &str)> = vec![
        (
            "a signature made for another file",
            Some(&signature),
            &next,
            "does not match the file's bytes",
        ),
        (
            "a tampered byte",
            Some(&next_signature),
            &tampered,
            "does not match the file's bytes",
        ),
        (
            "another key",
            Some(&other_signature),
            &next,
            "which plugins.toml does not trust",
        ),
        (
            "unsigned",
            None,
            &next,
            "unsigned, and signatures are required",
        ),
    ];
    for (label, signature, library_file, expected) in cases {
        let signature_path = plugins.join(format!("{target}.minisig"));
        match signature {
            Some(signature) => deploy_signature(signature, &plugins),
            None => std::fs::remove_file(&signature_path).expect("remove the signature"),
        }
        install(library_file, &plugins, &target);
        let events = host.gateway.reload_plugins();
        let refusal = events
            .iter()
            .find_map(|event| match event {
                ScanEvent::Failed {
                    error,
                    still_serving,
                    ..
                } => Some((error.to_string(), still_serving.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{label}: not refused: {events:?}"));
        assert!(refusal.0.contains(expected), "{label}: {}", refusal.0);
        assert!(
            refusal.0.contains(&target),
            "{label}: names the file: {}",
            refusal.0
        );
        assert_eq!(refusal.1.as_deref(), Some("paygateglobal"), "{label}");
        assert_eq!(version().as_deref(), Some("1.0.0"), "{label}");
        let outcome = host
            .call("paygateglobal", "main", json!({"operation": "balance"}))
            .await
            .expect("the signed version keeps serving");
        assert_eq!(outcome.status, OutcomeStatus::Succeeded, "{label}");
    }

    // The signature comes right, the library untouched: the next scan loads it.
    deploy_signature(&next_signature, &plugins);
    install(&next_staged, &plugins, &target);
    host.gateway.reload_plugins();
    assert_eq!(version().as_deref(), Some("1.1.0"));
}

/// A configuration that requires signatures but trusts no key, or names a key that is not one,
/// is refused when it is read, naming the key.
#[test]
fn a_signature_policy_that_cannot_work_is_refused() {
    let path = std::path::Path::new("/tmp/plugins.toml");
    let error = gatehouse_core::Config::parse("[signatures]\nrequire_signatures = true\n", path)
        .expect_err("no trusted key");
    assert!(
        error.to_string().contains("trusted_keys is empty"),
        "{error}"
    );
    let error =
        gatehouse_core::Config::parse("[signatures]\ntrusted_keys = [\"RWQnot-a-key\"]\n", path)
            .expect_err("a bad key");
    assert!(
        error.to_string().contains("signatures.trusted_keys[0]"),
        "{error}"
    );
}
