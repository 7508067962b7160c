//! Turning an account's section of `plugins.toml` into what a plugin receives, checked against
//! the plugin's manifest.

use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse_plugin_api::ffi::encode_account;
use gatehouse_plugin_api::{AccountConfig, Manifest, Secret};
use sha2::{Digest, Sha256};

use crate::config::AccountSection;
use crate::scrub::Scrubber;

/// An account ready to be handed to its plugin.
pub struct ResolvedAccount {
    pub config: AccountConfig,
    /// `config` encoded for the plugin boundary once, shared by every flow to the account until
    /// it is resolved again (`gatehouse_plugin_api::ffi::FfiInvocation::account`).
    pub config_json: Arc<str>,
    pub scrubber: Scrubber,
    /// Changes whenever the policy or any credential changes.
    pub fingerprint: String,
    /// The client for the account's outbound proxy (`None`: the gateway's shared client).
    pub client: Option<reqwest::Client>,
    /// `config.base_url` parsed once, for the origin check of every provider request (`None`:
    /// it is not a URL, so every request is refused as outside it).
    pub base_url: Option<url::Url>,
}

/// Checks `section` against `manifest` and resolves its secrets. Every problem is reported,
/// each naming the key.
pub fn resolve_account(
    manifest: &Manifest,
    account: &str,
    section: &AccountSection,
) -> Result<ResolvedAccount, Vec<String>> {
    let mut problems = Vec::new();
    let base_url = section
        .base_url
        .clone()
        .or_else(|| manifest.default_base_url.clone());
    if base_url.is_none() {
        problems.push("base_url is not set and the plugin has no default".to_string());
    }
    let mut settings = BTreeMap::new();
    for (key, value) in &section.settings {
        match manifest.config_key(key) {
            None => problems.push(format!(
                "settings.{key} is not a configuration key of `{}` (known: {})",
                manifest.provider,
                known_keys(manifest)
            )),
            Some(declared) if declared.secret => problems.push(format!(
                "settings.{key} is a secret: move it to `secrets` and reference it as \"${{ENV_VAR}}\""
            )),
            Some(_) => {
                settings.insert(key.clone(), value.get_ref().clone());
            }
        }
    }
    let mut secrets = BTreeMap::new();
    for (key, value) in &section.secrets {
        match manifest.config_key(key) {
            None => problems.push(format!(
                "secrets.{key} is not a configuration key of `{}` (known: {})",
                manifest.provider,
                known_keys(manifest)
            )),
            Some(_) => match value.resolve() {
                Ok(resolved) => {
                    secrets.insert(key.clone(), resolved.value);
                }
                Err(message) => problems.push(format!("secrets.{key}: {message}")),
            },
        }
    }
    for key in manifest.config_keys.iter().filter(|key| key.required) {
        if !settings.contains_key(&key.name) && !secrets.contains_key(&key.name) {
            let table = if key.secret { "secrets" } else { "settings" };
            problems.push(format!(
                "{table}.{} is required: {}",
                key.name, key.description
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut hasher = Sha256::new();
    hasher.update(format!("{:?}", section.policy()));
    hasher.update(base_url.as_deref().unwrap_or_default());
    for (key, value) in &settings {
        hasher.update(format!("{key}={value};"));
    }
    for (key, value) in &secrets {
        hasher.update(format!("{key}={};", Secret::expose(value)));
    }
    let scrubber = Scrubber::new(secrets.values().map(|secret| secret.expose().to_string()));
    let config = AccountConfig {
        account: account.to_string(),
        base_url: base_url.unwrap_or_default(),
        settings,
        secrets,
    };
    // Strings in string maps: serializing cannot fail, and says nothing of the values if it did.
    let config_json = encode_account(&config).map_err(|_| {
        vec!["the account's configuration cannot be encoded for the plugin".to_string()]
    })?;
    Ok(ResolvedAccount {
        base_url: url::Url::parse(&config.base_url).ok(),
        config,
        config_json,
        scrubber,
        fingerprint: hex::encode(hasher.finalize()),
        client: None,
    })
}

fn known_keys(manifest: &Manifest) -> String {
    manifest
        .config_keys
        .iter()
        .map(|key| key.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
