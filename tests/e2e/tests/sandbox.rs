//! `gatehouse sandbox`, the README's first command: the real executable, every provider's real
//! plugin, every simulator.

use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse_e2e::gatehouse_binary;
use serde_json::{Value, json};

#[tokio::test]
async fn the_sandbox_serves_every_provider_without_credentials() {
    let binary = gatehouse_binary();
    let folder = tempfile::tempdir().expect("folder");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port");
    let mut sandbox = Command::new(binary)
        .args(["sandbox", "--folder"])
        .arg(folder.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandbox starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut plugins = Value::Null;
    // Up to a minute: five debug-built plugins load slowly on a busy machine.
    for _ in 0..1200 {
        if let Ok(response) = client
            .get(format!("{base}/v1/plugins"))
            .bearer_auth("sandbox-key")
            .send()
            .await
            && response.status() == 200
        {
            plugins = response.json().await.expect("json");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut providers: Vec<String> = plugins["plugins"]
        .as_array()
        .expect("plugins listed")
        .iter()
        .map(|plugin| plugin["provider"].as_str().unwrap_or_default().to_string())
        .collect();
    providers.sort();
    assert_eq!(
        providers,
        [
            "ccbill",
            "kolmisoft",
            "paygateglobal",
            "paysitecash",
            "xsolla"
        ]
    );
    assert_eq!(plugins["load_errors"], json!([]));

    let charge = client
        .post(format!("{base}/v1/paygateglobal/main/charges"))
        .bearer_auth("sandbox-key")
        .json(&json!({"amount": {"minor_units": 1500, "currency": "XOF"},
                      "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}))
        .send()
        .await
        .expect("charge");
    assert_eq!(charge.status(), 200);
    let charge: Value = charge.json().await.expect("json");
    assert_eq!(charge["status"], "pending");
    let report = client
        .post(format!("{base}/v1/kolmisoft/main/reports"))
        .bearer_auth("sandbox-key")
        .json(&json!({"report": "payments"}))
        .send()
        .await
        .expect("report");
    assert_eq!(report.status(), 200);
    let report: Value = report.json().await.expect("json");
    assert_eq!(
        report["details"]["records"].as_array().map(Vec::len),
        Some(3)
    );
    // The generated configuration holds the simulators' secrets inline: owner-only.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(folder.path().join("plugins.toml"))
            .expect("the sandbox wrote its configuration")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let _ = sandbox.kill();
    let _ = sandbox.wait();
}
