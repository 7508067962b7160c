//! `gatehouse plugins`: what is served, asked of the running server when one serves this
//! configuration, read from the disk otherwise — and the answer says which.
//!
//! A listing read from the disk is what a server started now would load; it cannot know which
//! accounts a running server has paused (pauses live in the server), nor a version the server
//! kept serving because a newer file was refused. So the command first asks `GET /v1/plugins` on
//! `host.listen` with the first API key of the configuration, and uses the answer only if the
//! server reports the same configuration fingerprint (see `Config::fingerprint`): another
//! gateway on the same port is not this one.

use std::time::Duration;

use gatehouse_core::config::Config;
use serde_json::Value;

/// Where a listing came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The running server answered at this URL.
    Server { url: String },
    /// Read from the plugins folder; `why` says why no server was asked or believed.
    Disk { why: String },
}

impl Source {
    pub fn to_json(&self) -> Value {
        match self {
            Source::Server { url } => serde_json::json!({"kind": "server", "url": url}),
            Source::Disk { why } => serde_json::json!({"kind": "disk", "why": why}),
        }
    }
}

/// The URL of `GET /v1/plugins` on the configured listener: a wildcard address is reached on
/// loopback; `https` when the listener has TLS.
pub fn plugins_url(config: &Config) -> String {
    let listen = config.host.listen.trim();
    let local = if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    };
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{local}/v1/plugins")
}

/// Asks the running server for its listing. `Err` says, in words, why the disk must be read.
pub async fn ask_server(config: &Config) -> Result<(Value, Source), String> {
    let url = plugins_url(config);
    // A key that sees the whole listing: `read` on every account.
    let Some(key) = config.api.api_keys().into_iter().find(|key| {
        key.grant.allows_scope(gatehouse_core::access::Scope::Read) && key.grant.is_unlimited()
    }) else {
        return Err("no API key with the read scope on every account in the configuration to ask a server with".into());
    };
    let client = client(config)?;
    let answer = client
        .get(&url)
        .bearer_auth(key.secret.expose())
        .send()
        .await
        .map_err(|error| {
            if error.is_connect() {
                format!("no server answers at {url}")
            } else if error.is_timeout() {
                format!("the server at {url} did not answer in time")
            } else {
                format!(
                    "the server at {url} could not be asked: {}",
                    error_chain(&error)
                )
            }
        })?;
    let status = answer.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(format!(
            "a server answers at {url} but refused the configuration's first API key ({status})"
        ));
    }
    if !status.is_success() {
        return Err(format!("the server at {url} answered {status}"));
    }
    let listing: Value = answer.json().await.map_err(|error| {
        format!("the server at {url} answered something that is not a listing: {error}")
    })?;
    let theirs = listing.get("config_fingerprint").and_then(Value::as_str);
    if theirs.is_none() || theirs != config.fingerprint().as_deref() {
        return Err(format!(
            "the server at {url} runs another configuration file than this one"
        ));
    }
    Ok((listing, Source::Server { url }))
}

/// Lifts an account's pause on the running server (pauses live in the server's memory, so
/// there is nothing to change on disk). The server must serve this configuration (checked as
/// for the listing) and a configured key must have `operate` on the account. `Ok` is the
/// server's answer; `Err` says why nothing was lifted, and whether the server was reached.
pub async fn resume_on_server(
    config: &Config,
    provider: &str,
    account: &str,
) -> Result<Value, ResumeError> {
    let (_, source) = ask_server(config).await.map_err(ResumeError::NoServer)?;
    let Source::Server { url } = source else {
        unreachable!("ask_server answers only from a server")
    };
    let Some(key) = config.api.api_keys().into_iter().find(|key| {
        key.grant
            .allows_scope(gatehouse_core::access::Scope::Operate)
            && key.grant.allows_account(provider, account)
    }) else {
        return Err(ResumeError::Refused(format!(
            "no API key in the configuration has the operate scope on {provider}/{account}"
        )));
    };
    let base = url.trim_end_matches("/v1/plugins");
    let answer = client(config)
        .map_err(ResumeError::NoServer)?
        .post(format!("{base}/v1/{provider}/{account}/resume"))
        .bearer_auth(key.secret.expose())
        .send()
        .await
        .map_err(|error| ResumeError::NoServer(error_chain(&error)))?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        let message = body["error"]["message"]
            .as_str()
            .map_or_else(|| status.to_string(), str::to_string);
        Err(ResumeError::Refused(message))
    }
}

/// Why `gatehouse resume` lifted nothing.
#[derive(Debug)]
pub enum ResumeError {
    /// No server serving this configuration could be reached.
    NoServer(String),
    /// The server (or the configuration's keys) refused it.
    Refused(String),
}

/// The HTTP client that asks the configured listener: short timeouts, no redirects, and the
/// listener's own certificate as the only root when it has TLS.
fn client(config: &Config) -> Result<reqwest::Client, String> {
    let mut client = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(tls) = &config.server.tls {
        let pem = std::fs::read(&tls.cert_file).map_err(|error| {
            format!(
                "cannot read the listener's certificate {} to reach it: {error}",
                tls.cert_file.display()
            )
        })?;
        let certificate = reqwest::Certificate::from_pem(&pem).map_err(|error| {
            format!(
                "the listener's certificate {} is not PEM: {error}",
                tls.cert_file.display()
            )
        })?;
        client = client.add_root_certificate(certificate);
    }
    client
        .build()
        .map_err(|error| format!("cannot make an HTTP client: {error}"))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The listing as text, first line saying where it came from.
pub fn render(listing: &Value, source: &Source) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match source {
        Source::Server { url } => {
            let _ = writeln!(out, "served by the running server ({url})");
        }
        Source::Disk { why } => {
            let _ = writeln!(
                out,
                "read from the plugins folder, not from a server ({why}): this is what a server started now would load; paused accounts are known only to a running server"
            );
        }
    }
    let text = |value: &Value, key: &str| value[key].as_str().unwrap_or("?").to_string();
    let _ = writeln!(out, "plugins folder: {}", text(listing, "plugins_dir"));
    let plugins = listing["plugins"].as_array().cloned().unwrap_or_default();
    if plugins.is_empty() {
        let _ = writeln!(out, "no plugin loaded");
    }
    for plugin in &plugins {
        let operations: Vec<String> = plugin["operations"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|op| op.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<14} {:<8} contract {:<6} {}\n{:<14} operations: {}",
            text(plugin, "provider"),
            text(plugin, "plugin_version"),
            text(plugin, "contract_version"),
            text(plugin, "file"),
            "",
            operations.join(", ")
        );
        // Installed through the versions folder (`gatehouse plugin install`): what is kept.
        if let Some(active) = plugin["active_version"].as_str() {
            let kept: Vec<&str> = plugin["kept_versions"]
                .as_array()
                .map(|list| list.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<14} active {active}; kept: {} (`gatehouse plugin history {}`)",
                "",
                kept.join(", "),
                text(plugin, "provider")
            );
        }
    }
    for failure in listing["load_errors"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "load error: {}", text(failure, "error"));
    }
    for pause in listing["paused_accounts"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "paused: {}/{} until {} — {}",
            text(pause, "provider"),
            text(pause, "account"),
            pause["until_unix"],
            text(pause, "reason")
        );
    }
    if let Some(error) = listing["config_error"].as_str() {
        let _ = writeln!(
            out,
            "configuration refused (the previous one serves): {error}"
        );
    }
    out
}

/// Whether the listing shows a refused plugin file (the command then exits 5).
pub fn has_load_errors(listing: &Value) -> bool {
    listing["load_errors"]
        .as_array()
        .is_some_and(|errors| !errors.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("/etc/gatehouse/plugins.toml")).expect("config")
    }

    #[test]
    fn a_wildcard_listener_is_asked_on_loopback() {
        assert_eq!(
            plugins_url(&config("[host]\nlisten = \"0.0.0.0:9000\"\n")),
            "http://127.0.0.1:9000/v1/plugins"
        );
        assert_eq!(
            plugins_url(&config("[host]\nlisten = \"[::]:9000\"\n")),
            "http://[::1]:9000/v1/plugins"
        );
        assert_eq!(
            plugins_url(&config("[host]\nlisten = \"10.0.0.5:8443\"\n")),
            "http://10.0.0.5:8443/v1/plugins"
        );
    }

    #[test]
    fn the_rendering_says_where_the_listing_came_from() {
        let listing = serde_json::json!({
            "plugins_dir": "/srv/plugins",
            "plugins": [{"provider": "xsolla", "plugin_version": "1.0.0", "contract_version": "0.7", "file": "libxsolla.so", "operations": ["charge"]}],
            "load_errors": [{"file": "libx.so", "error": "libx.so: not a library"}],
            "paused_accounts": [{"provider": "xsolla", "account": "main", "until_unix": 5, "reason": "authentication failed"}],
        });
        let served = render(
            &listing,
            &Source::Server {
                url: "http://127.0.0.1:8080/v1/plugins".into(),
            },
        );
        assert!(
            served.starts_with("served by the running server (http://127.0.0.1:8080/v1/plugins)")
        );
        assert!(served.contains("paused: xsolla/main until 5 — authentication failed"));
        assert!(served.contains("load error: libx.so: not a library"));
        let disk = render(
            &listing,
            &Source::Disk {
                why: "no server answers at http://127.0.0.1:8080/v1/plugins".into(),
            },
        );
        assert!(
            disk.starts_with("read from the plugins folder, not from a server (no server answers")
        );
        assert!(has_load_errors(&listing));
        assert!(!has_load_errors(&serde_json::json!({"load_errors": []})));
    }
}
