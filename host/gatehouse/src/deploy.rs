//! `gatehouse plugin install`, `history` and `rollback`: deploying plugin versions through the
//! versions folder (`gatehouse_core::versions`).
//!
//! An install checks first and stores after: the signature (`[signatures]` in `plugins.toml`)
//! over the file's bytes, before any of its code is mapped; then the conformance check
//! (`gatehouse plugin check`); only a library that passes both is stored under
//! `.versions/<provider>/<version>-<sha256 prefix>/` and renamed into the plugins folder, where a
//! running host's watcher loads it like any new file (and a stopped host loads it at its start).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gatehouse_core::Config;
use gatehouse_core::registry::Registry;
use gatehouse_core::signature::{SignaturePolicy, Signed};
use gatehouse_core::versions::{
    ActivatedBy, Activation, Candidate, Checked, History, InstallCheck, Installed, Versions,
    VersionsError, Via, default_slot,
};

use crate::conformance;

/// Why an install or rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Refused: the file or the request is not acceptable (exit 5).
    #[error("{file}: refused: {reason}")]
    Refused { file: String, reason: String },
    /// The versions folder refused (an unknown version, nothing earlier) or failed.
    #[error(transparent)]
    Versions(#[from] VersionsError),
}

impl DeployError {
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Refused { .. } => true,
            Self::Versions(error) => error.is_refusal(),
        }
    }
}

/// The conformance check as the API's install check: `gatehouse serve` installs it, so an API
/// install passes the same check as `gatehouse plugin install`.
pub fn conformance_check() -> InstallCheck {
    Arc::new(|library: &Path| {
        let report = conformance::check_plugin_file(library);
        if report.passed() {
            Ok(Checked {
                provider: report.provider.clone().unwrap_or_default(),
                version: report.plugin_version.clone().unwrap_or_default(),
            })
        } else {
            let failures: Vec<String> = report
                .failures()
                .map(|check| format!("{}: {}", check.name, check.detail))
                .collect();
            Err(format!(
                "the conformance check failed ({})",
                failures.join("; ")
            ))
        }
    })
}

/// Checks `file` (signature, then conformance) and installs it: stored in the versions folder
/// of `config`'s plugins folder and made active.
pub fn install(config: &Config, file: &Path) -> Result<Installed, DeployError> {
    let name = file.display().to_string();
    let refused = |reason: String| DeployError::Refused {
        file: name.clone(),
        reason,
    };
    let bytes = std::fs::read(file).map_err(|error| refused(format!("cannot read: {error}")))?;
    // The signature first: an unsigned or tampered library is never mapped, not even to be
    // checked.
    let signed = config
        .signatures
        .policy()
        .check(file, &bytes)
        .map_err(|reason| refused(reason.to_string()))?;
    let signature = match signed {
        Signed::Unsigned => None,
        Signed::By { .. } => Some(
            std::fs::read(SignaturePolicy::signature_path(file))
                .map_err(|error| refused(format!("cannot read its signature: {error}")))?,
        ),
    };
    let checked = conformance_check()(file).map_err(&refused)?;
    let versions = Versions::new(&config.host.plugins_dir, config.plugins.keep_versions);
    // The check above read the file once more; what is stored must be what was checked.
    let again = std::fs::read(file).map_err(|error| refused(format!("cannot read: {error}")))?;
    if again != bytes {
        let reason = "the file changed while it was being checked".to_string();
        versions.record_refusal(&checked.provider, &name, &reason, Via::Cli);
        return Err(refused(reason));
    }
    let first_slot = match versions.history(&checked.provider)? {
        Some(history) => history.slot,
        None => serving_slot(config, &checked.provider),
    };
    let candidate = Candidate {
        provider: &checked.provider,
        version: &checked.version,
        bytes: &bytes,
        signature: signature.as_deref(),
        signed_by: match signed {
            Signed::By { key_id } => Some(key_id),
            Signed::Unsigned => None,
        },
        first_slot,
    };
    Ok(versions.install(&candidate, Via::Cli)?)
}

/// The slot a provider's first install takes: the file already serving it in the plugins folder
/// (a second file for one provider would be refused by the host), else `lib<provider>.<ext>`.
/// Finding it loads the folder as a host would (only at a provider's first install).
fn serving_slot(config: &Config, provider: &str) -> String {
    let registry = Registry::new(
        config.host.plugins_dir.clone(),
        config.host.max_loaded_libraries,
    );
    registry.set_signature_policy(config.signatures.policy());
    if config.host.plugins_dir.is_dir() {
        registry.scan();
    }
    registry
        .get(provider)
        .and_then(|plugin| {
            plugin
                .file
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| default_slot(provider))
}

/// Activates the version before the active one, or `to`.
pub fn rollback(
    config: &Config,
    provider: &str,
    to: Option<&str>,
) -> Result<Activation, DeployError> {
    let versions = Versions::new(&config.host.plugins_dir, config.plugins.keep_versions);
    versions
        .rollback(
            provider,
            to,
            &config.signatures.policy(),
            ActivatedBy::Rollback,
            Via::Cli,
        )
        .inspect_err(|error| {
            if error.is_refusal() {
                versions.record_refusal(
                    provider,
                    &format!("rollback to {}", to.unwrap_or("the previous version")),
                    &error.to_string(),
                    Via::Cli,
                );
            }
        })
        .map_err(DeployError::from)
}

/// A provider's history, refused when it was never installed here.
pub fn history(config: &Config, provider: &str) -> Result<History, DeployError> {
    let versions = Versions::new(&config.host.plugins_dir, config.plugins.keep_versions);
    versions
        .history(provider)?
        .ok_or_else(|| VersionsError::NotInstalled(provider.to_string()).into())
}

/// `history` for people: the versions kept (the active one starred), then the activations,
/// newest first.
pub fn render_history(history: &History, plugins_dir: &Path) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let active = history.active().map(|active| active.entry.as_str());
    let _ = writeln!(
        out,
        "{} — slot {}",
        history.provider,
        PathBuf::from(plugins_dir).join(&history.slot).display()
    );
    let _ = writeln!(out, "versions kept (oldest first; * active):");
    for stored in &history.versions {
        let _ = writeln!(
            out,
            "{} {:<28} {:<10} sha256 {}  signed by {:<16}  stored {}",
            if Some(stored.entry.as_str()) == active {
                "*"
            } else {
                " "
            },
            stored.entry,
            stored.version,
            &stored.sha256[..16.min(stored.sha256.len())],
            stored.signed_by.as_deref().unwrap_or("(unsigned)"),
            rfc3339(stored.stored_at_unix)
        );
    }
    let _ = writeln!(out, "activations (newest first):");
    for activation in history.activations.iter().rev() {
        let _ = writeln!(
            out,
            "  {}  {:<28} {} via {}{}",
            rfc3339(activation.at_unix),
            activation.entry,
            word(&activation.by),
            word(&activation.via),
            activation
                .key_id
                .as_deref()
                .map(|key| format!(", key {key}"))
                .unwrap_or_default()
        );
    }
    if let Some(refusal) = &history.last_refusal {
        let _ = writeln!(
            out,
            "last refusal: {} {}: {}",
            rfc3339(refusal.at_unix),
            refusal.file,
            refusal.reason
        );
    }
    out
}

/// An enum as its JSON spells it (`install`, `cli`).
fn word(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|unix| time::OffsetDateTime::from_unix_timestamp(unix).ok())
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
