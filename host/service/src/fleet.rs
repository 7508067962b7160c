//! The fleet view: each `gatehouse serve` on a shared ledger registers what it is and what it
//! serves (instance id, listen address, version, plugins with their versions and SHA-256), the
//! ledger's heartbeat keeps its lease fresh, and `GET /v1/fleet` / `gatehouse fleet` show every
//! host, live or gone, and which instance serves which version of each plugin — a rolling
//! deploy, host by host, is visible there.
//!
//! A host re-registers whenever what it serves changes (a plugin swapped, added, retired): it
//! compares every [`REGISTRATION_CHECK`] and writes only a change. With a SQLite ledger there is
//! no fleet: the view is this host alone.

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_core::Gateway;
use gatehouse_ledger::{FleetHost, HostRegistration, ServedPlugin};
use serde_json::{Value, json};

use crate::Service;

/// How often a host compares what it serves with what it registered.
pub const REGISTRATION_CHECK: Duration = Duration::from_millis(500);

/// The Gatehouse version a host reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What this host serves now, as it registers it.
pub fn registration(gateway: &Gateway, listen_address: &str) -> HostRegistration {
    let plugins = gateway
        .registry()
        .active()
        .values()
        .map(|plugin| ServedPlugin {
            provider: plugin.manifest.provider.clone(),
            version: plugin.manifest.plugin_version.clone(),
            sha256: plugin.sha256.clone(),
        })
        .collect();
    HostRegistration {
        listen_address: listen_address.to_string(),
        version: VERSION.to_string(),
        plugins,
    }
}

/// Registers this host (a shared ledger only) and keeps its registration current until the
/// task is aborted. The first registration is written before this returns, so a host is in the
/// fleet view by the time it serves.
pub async fn spawn_registration(
    service: Service,
    listen_address: String,
) -> Option<tokio::task::JoinHandle<()>> {
    let _ = service
        .instance()
        .listen_address
        .set(listen_address.clone());
    if !service.instance().shared {
        return None;
    }
    let mut written = write(&service, &listen_address, None).await;
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(REGISTRATION_CHECK).await;
            written = write(&service, &listen_address, written).await;
        }
    }))
}

/// Writes the registration if it differs from `written`; returns what the ledger now holds.
async fn write(
    service: &Service,
    listen_address: &str,
    written: Option<HostRegistration>,
) -> Option<HostRegistration> {
    let current = registration(service.gateway(), listen_address);
    if written.as_ref() == Some(&current) {
        return written;
    }
    let writing = current.clone();
    match service
        .ledger()
        .call(move |ledger| ledger.register_host(&writing))
        .await
    {
        Ok(()) => {
            tracing::info!(plugins = ?current.plugins, "registered in the fleet");
            Some(current)
        }
        Err(error) => {
            // Tried again at the next check.
            tracing::warn!(%error, "fleet registration not written");
            written
        }
    }
}

/// What `GET /v1/fleet` answers, as the service sees it: the shared ledger's hosts, or this
/// host alone with a SQLite ledger.
pub async fn view(service: &Service) -> Result<Value, gatehouse_ledger::LedgerError> {
    let instance = service.instance();
    let hosts = match service.ledger().call(|ledger| ledger.fleet()).await? {
        Some(hosts) => hosts,
        None => {
            let listen = instance.listen_address.get().cloned().unwrap_or_default();
            let registration = registration(service.gateway(), &listen);
            vec![FleetHost {
                instance_id: instance.id.clone(),
                listen_address: registration.listen_address,
                version: registration.version,
                started_at_unix: instance.started_at_unix,
                heartbeat_at_unix: unix_now(),
                live: true,
                plugins: registration.plugins,
            }]
        }
    };
    Ok(render_json(&hosts, instance.shared, Some(&instance.id)))
}

/// The fleet as JSON: every host, and per provider and version the live instances serving it.
/// `this_instance` marks the host that answers (none when the CLI reads the database).
pub fn render_json(hosts: &[FleetHost], shared: bool, this_instance: Option<&str>) -> Value {
    let mut versions: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for host in hosts.iter().filter(|host| host.live) {
        for plugin in &host.plugins {
            versions
                .entry((
                    plugin.provider.clone(),
                    plugin.version.clone(),
                    plugin.sha256.clone(),
                ))
                .or_default()
                .push(host.instance_id.clone());
        }
    }
    json!({
        "shared": shared,
        "this_instance": this_instance,
        "hosts": hosts.iter().map(|host| json!({
            "instance_id": host.instance_id,
            "listen_address": host.listen_address,
            "version": host.version,
            "started_at_unix": host.started_at_unix,
            "heartbeat_at_unix": host.heartbeat_at_unix,
            "state": if host.live { "live" } else { "gone" },
            "this_host": this_instance == Some(host.instance_id.as_str()),
            "plugins": host.plugins,
        })).collect::<Vec<_>>(),
        "versions": versions.into_iter().map(|((provider, version, sha256), instances)| json!({
            "provider": provider, "version": version, "sha256": sha256, "instances": instances,
        })).collect::<Vec<_>>(),
    })
}

/// The fleet as a table, for `gatehouse fleet`.
pub fn render_text(fleet: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let hosts = fleet["hosts"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "{:<38} {:<22} {:<8} {:<5} {:>10}  plugins",
        "instance", "listen", "version", "state", "heartbeat"
    );
    let now = unix_now();
    for host in &hosts {
        let plugins: Vec<String> = host["plugins"]
            .as_array()
            .map(|plugins| {
                plugins
                    .iter()
                    .map(|plugin| {
                        let sha = plugin["sha256"].as_str().unwrap_or("");
                        format!(
                            "{} {} ({})",
                            plugin["provider"].as_str().unwrap_or(""),
                            plugin["version"].as_str().unwrap_or(""),
                            &sha[..sha.len().min(12)]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let age = now.saturating_sub(host["heartbeat_at_unix"].as_i64().unwrap_or(now));
        let _ = writeln!(
            out,
            "{:<38} {:<22} {:<8} {:<5} {:>9}s  {}",
            host["instance_id"].as_str().unwrap_or(""),
            host["listen_address"].as_str().unwrap_or(""),
            host["version"].as_str().unwrap_or(""),
            host["state"].as_str().unwrap_or(""),
            format!("{age}"),
            plugins.join(", ")
        );
    }
    if hosts.is_empty() {
        let _ = writeln!(out, "(no host has registered)");
    }
    out
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}
