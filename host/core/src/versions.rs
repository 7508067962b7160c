//! Plugin versions kept side by side, and which one is active.
//!
//! Layout, inside the plugins folder (a hidden folder, so the registry's scan never treats it
//! as plugins, and not watched: the watcher watches the plugins folder non-recursively):
//!
//! ```text
//! <plugins>/.versions/.lock                                  held while anything changes
//! <plugins>/.versions/<provider>/history.json                versions kept, activations, last refusal
//! <plugins>/.versions/<provider>/<version>-<sha256[..12]>/<slot>           the library
//! <plugins>/.versions/<provider>/<version>-<sha256[..12]>/<slot>.minisig   its signature, if any
//! <plugins>/.versions/<provider>/<version>-<sha256[..12]>/version.json     what was stored, when
//! ```
//!
//! The *slot* is the file name the provider's library has in the plugins folder
//! (`libacme.so`); it is chosen at the first install and never changes.
//!
//! Activating a version reuses the path every reload takes: the stored library is copied to a
//! hidden temporary name in the plugins folder and renamed over the slot, so the watcher loads it
//! and the registry swaps it in atomically (requests that started keep the version they started
//! with). The signature is renamed into place *before* the library, so a scan in between sees the
//! old library (unchanged, not loaded again) beside the new signature, never the new library
//! beside the old signature.
//!
//! Architecture Invariant: the activation is recorded in `history.json` before the rename (the
//! record is the intent), so a crash in between is repaired at the next start by
//! [`Versions::restore`], which puts the active version back into its slot: on restart the host
//! serves what was active, not whatever file is in the folder.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::loader::sha256_hex;
use crate::signature::SignaturePolicy;

/// The versions folder's name inside the plugins folder.
pub const VERSIONS_DIR: &str = ".versions";
/// How many versions per provider are kept unless `[plugins] keep_versions` says otherwise.
pub const DEFAULT_KEEP_VERSIONS: usize = 5;
/// How many activations per provider `history.json` remembers.
const MAX_ACTIVATIONS: usize = 100;

/// What made a version active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivatedBy {
    /// `gatehouse plugin install` or `POST /v1/plugins/{provider}/install`.
    Install,
    /// `gatehouse plugin rollback` or `POST /v1/plugins/{provider}/rollback`.
    Rollback,
    /// The running host loaded a file put into the slot by hand; it was stored and recorded so
    /// that a restart serves it too.
    Adopted,
    /// An API install the host then refused to load: the previous version was put back.
    Reverted,
}

/// Which surface asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Cli,
    Api,
    Host,
}

/// One version kept in the versions folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    /// The folder's name: `<version>-<sha256 prefix>`.
    pub entry: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    pub stored_at_unix: u64,
    /// The minisign key id that signed it, when it came with a signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// One activation: a version made active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub entry: String,
    pub version: String,
    pub sha256: String,
    pub at_unix: u64,
    pub by: ActivatedBy,
    pub via: Via,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// An install or rollback that was refused, for `/v1/plugins` and `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub at_unix: u64,
    pub file: String,
    pub reason: String,
    pub via: Via,
}

/// A provider's `history.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub provider: String,
    /// The library's file name in the plugins folder.
    pub slot: String,
    /// Kept versions, oldest stored first.
    pub versions: Vec<StoredVersion>,
    /// Activations, oldest first; the last is the active one.
    pub activations: Vec<Activation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<Refusal>,
}

impl History {
    /// The active activation, if any.
    pub fn active(&self) -> Option<&Activation> {
        self.activations.last()
    }

    fn stored(&self, entry: &str) -> Option<&StoredVersion> {
        self.versions.iter().find(|stored| stored.entry == entry)
    }
}

/// Why a version could not be stored, activated or found.
#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: unreadable version record: {message}")]
    Record { path: PathBuf, message: String },
    #[error("`{0}` is not a provider id (lower case letters, digits, `-`, `_`)")]
    BadProvider(String),
    #[error("no version of `{0}` was installed here (no `.versions/{0}/history.json`)")]
    NotInstalled(String),
    #[error(
        "`{provider}` has no version `{wanted}` kept; kept: {kept}",
        kept = kept.join(", ")
    )]
    UnknownVersion {
        provider: String,
        wanted: String,
        kept: Vec<String>,
    },
    #[error(
        "`{provider}` version `{wanted}` is ambiguous: kept as {candidates}; name one of them",
        candidates = candidates.join(", ")
    )]
    Ambiguous {
        provider: String,
        wanted: String,
        candidates: Vec<String>,
    },
    #[error("`{provider}` has no version kept from before the active {active}")]
    NothingEarlier { provider: String, active: String },
    #[error("`{provider}` {entry} is already the active version")]
    AlreadyActive { provider: String, entry: String },
    #[error("{path}: the stored file no longer matches its SHA-256 (changed on disk); refused")]
    Corrupted { path: PathBuf },
    #[error("{file}: refused: {reason}")]
    Signature {
        file: String,
        reason: crate::signature::SignatureError,
    },
}

impl VersionsError {
    /// Whether the caller asked for something that cannot be done (exit 5, HTTP 422), as opposed
    /// to the host failing to do it (an I/O error).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Io { .. } | Self::Record { .. })
    }
}

/// A library to install, already checked by the caller (conformance and signature).
pub struct Candidate<'a> {
    pub provider: &'a str,
    pub version: &'a str,
    pub bytes: &'a [u8],
    /// The `.minisig` file's contents, when it came with one.
    pub signature: Option<&'a [u8]>,
    pub signed_by: Option<String>,
    /// The slot's file name if this is the provider's first install (the file already serving
    /// the provider, else `lib<provider>.<ext>`); ignored afterwards.
    pub first_slot: String,
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct Installed {
    pub stored: StoredVersion,
    pub activation: Activation,
    /// The library's path in the plugins folder.
    pub slot_path: PathBuf,
    /// Entries dropped by the retention bound.
    pub dropped: Vec<String>,
    /// The version was kept already (same version and SHA-256): not stored twice.
    pub already_kept: bool,
}

/// The versions folder of one plugins folder.
#[derive(Debug, Clone)]
pub struct Versions {
    plugins_dir: PathBuf,
    keep: usize,
}

impl Versions {
    /// `keep` is the retention bound (at least 2, so there is always a version to roll back to).
    pub fn new(plugins_dir: &Path, keep: usize) -> Self {
        Self {
            plugins_dir: plugins_dir.to_path_buf(),
            keep: keep.max(2),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.plugins_dir.join(VERSIONS_DIR)
    }

    fn provider_dir(&self, provider: &str) -> PathBuf {
        self.root().join(provider)
    }

    /// A provider's history, if it was ever installed here.
    pub fn history(&self, provider: &str) -> Result<Option<History>, VersionsError> {
        check_provider(provider)?;
        let path = self.provider_dir(provider).join("history.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let history: History =
                    serde_json::from_slice(&bytes).map_err(|error| VersionsError::Record {
                        path: path.clone(),
                        message: error.to_string(),
                    })?;
                // The names in the record become paths: each must be one plain file name.
                let names = std::iter::once(&history.slot)
                    .chain(history.versions.iter().map(|stored| &stored.entry));
                for name in names {
                    if !is_plain_name(name) {
                        return Err(VersionsError::Record {
                            path,
                            message: format!("`{name}` is not a plain file name"),
                        });
                    }
                }
                Ok(Some(history))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io(&path, &error)),
        }
    }

    /// Every provider's history (an absent versions folder: none).
    pub fn histories(&self) -> Vec<History> {
        let Ok(entries) = std::fs::read_dir(self.root()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
            .filter(|name| is_provider_id(name))
            .collect();
        names.sort();
        names
            .iter()
            .filter_map(|name| match self.history(name) {
                Ok(history) => history,
                Err(error) => {
                    tracing::warn!(%error, "plugin version history unreadable");
                    None
                }
            })
            .collect()
    }

    /// Stores `candidate` (unless that version and SHA-256 are kept already), records it as
    /// active and renames it into its slot; then drops the oldest versions past the bound.
    pub fn install(&self, candidate: &Candidate<'_>, via: Via) -> Result<Installed, VersionsError> {
        check_provider(candidate.provider)?;
        let _lock = self.lock()?;
        let sha256 = sha256_hex(candidate.bytes);
        let mut history = self
            .history(candidate.provider)?
            .unwrap_or_else(|| History {
                provider: candidate.provider.to_string(),
                slot: candidate.first_slot.clone(),
                versions: Vec::new(),
                activations: Vec::new(),
                last_refusal: None,
            });
        let entry = entry_name(candidate.version, &sha256);
        let already_kept = history.stored(&entry).is_some();
        if !already_kept {
            let folder = self.provider_dir(candidate.provider).join(&entry);
            create_dir_all(&folder)?;
            write_atomically(&folder.join(&history.slot), candidate.bytes)?;
            let signature_file = folder.join(format!("{}.minisig", history.slot));
            match candidate.signature {
                Some(signature) => write_atomically(&signature_file, signature)?,
                None => remove_if_present(&signature_file)?,
            }
            let stored = StoredVersion {
                entry: entry.clone(),
                version: candidate.version.to_string(),
                sha256: sha256.clone(),
                size: candidate.bytes.len() as u64,
                stored_at_unix: now_unix(),
                signed_by: candidate.signed_by.clone(),
            };
            write_atomically(&folder.join("version.json"), &to_json(&stored))?;
            history.versions.push(stored);
        }
        let stored = history
            .stored(&entry)
            .cloned()
            .expect("stored just above or before");
        if history.active().is_some_and(|active| active.entry == entry)
            && self.slot_holds(&history, &stored)
        {
            let activation = history.active().cloned().expect("checked");
            return Ok(Installed {
                stored,
                activation,
                slot_path: self.plugins_dir.join(&history.slot),
                dropped: Vec::new(),
                already_kept: true,
            });
        }
        let activation = self.activate(&mut history, &stored, ActivatedBy::Install, via)?;
        let dropped = self.retain(&mut history)?;
        Ok(Installed {
            stored,
            activation,
            slot_path: self.plugins_dir.join(&history.slot),
            dropped,
            already_kept,
        })
    }

    /// Activates the version before the active one in install order, or the one `to` names (a
    /// version, or an entry `<version>-<sha prefix>`). The stored bytes are checked against
    /// their SHA-256 and against `policy` first.
    pub fn rollback(
        &self,
        provider: &str,
        to: Option<&str>,
        policy: &SignaturePolicy,
        by: ActivatedBy,
        via: Via,
    ) -> Result<Activation, VersionsError> {
        check_provider(provider)?;
        if self.history(provider)?.is_none() {
            return Err(VersionsError::NotInstalled(provider.to_string()));
        }
        let _lock = self.lock()?;
        let mut history = self
            .history(provider)?
            .ok_or_else(|| VersionsError::NotInstalled(provider.to_string()))?;
        let active = history.active().cloned();
        let target = match to {
            Some(wanted) => find_version(&history, wanted)?,
            None => {
                let active = active
                    .as_ref()
                    .ok_or_else(|| VersionsError::NotInstalled(provider.to_string()))?;
                let position = history
                    .versions
                    .iter()
                    .position(|stored| stored.entry == active.entry);
                match position {
                    Some(position) if position > 0 => history.versions[position - 1].clone(),
                    _ => {
                        return Err(VersionsError::NothingEarlier {
                            provider: provider.to_string(),
                            active: active.entry.clone(),
                        });
                    }
                }
            }
        };
        if active
            .as_ref()
            .is_some_and(|active| active.entry == target.entry)
            && self.slot_holds(&history, &target)
        {
            return Err(VersionsError::AlreadyActive {
                provider: provider.to_string(),
                entry: target.entry,
            });
        }
        self.check_stored(&history, &target, policy)?;
        self.activate(&mut history, &target, by, via)
    }

    /// Puts every provider's active version back into its slot where the slot holds something
    /// else (a crash between the record and the rename, or a file copied over it while the host
    /// was down). The file found there is kept as `.versions/<provider>/displaced-<slot>`.
    /// Returns what it put back, for the log. Run before the first scan.
    pub fn restore(&self) -> Vec<String> {
        let mut restored = Vec::new();
        if !self.root().is_dir() {
            return restored;
        }
        let Ok(_lock) = self.lock() else {
            tracing::error!(folder = %self.root().display(), "cannot lock the versions folder; active versions not checked");
            return restored;
        };
        for history in self.histories() {
            let Some(active) = history.active().cloned() else {
                continue;
            };
            let Some(stored) = history.stored(&active.entry).cloned() else {
                tracing::error!(provider = %history.provider, entry = %active.entry, "the active version is missing from the versions folder; the slot is left as it is");
                continue;
            };
            if self.slot_holds(&history, &stored) {
                continue;
            }
            let slot = self.plugins_dir.join(&history.slot);
            if slot.exists() {
                let displaced = self
                    .provider_dir(&history.provider)
                    .join(format!("displaced-{}", history.slot));
                if let Err(error) = std::fs::copy(&slot, &displaced) {
                    tracing::warn!(file = %slot.display(), %error, "cannot keep the displaced file");
                }
            }
            match self.place(&history, &stored) {
                Ok(()) => {
                    tracing::warn!(provider = %history.provider, entry = %stored.entry, slot = %slot.display(), "the slot did not hold the active version; it was put back");
                    restored.push(format!("{}: {}", history.provider, stored.entry));
                }
                Err(error) => {
                    tracing::error!(provider = %history.provider, %error, "cannot put the active version back")
                }
            }
        }
        restored
    }

    /// Records a file the running host loaded into a managed slot by other means than an install
    /// (copied there by hand): stored as a version and recorded active, so a restart serves it.
    /// A slot holding the recorded active version, or a provider never installed, is left alone.
    pub fn adopt(
        &self,
        provider: &str,
        version: &str,
        file: &Path,
        sha256: &str,
        key_id: Option<String>,
    ) -> Result<Option<Activation>, VersionsError> {
        check_provider(provider)?;
        let Some(history) = self.history(provider)? else {
            return Ok(None);
        };
        if file != self.plugins_dir.join(&history.slot)
            || history
                .active()
                .is_some_and(|active| active.sha256 == sha256)
        {
            return Ok(None);
        }
        let _lock = self.lock()?;
        // Read under the lock: an install may have renamed something new meanwhile.
        let mut history = self
            .history(provider)?
            .ok_or_else(|| VersionsError::NotInstalled(provider.to_string()))?;
        if history
            .active()
            .is_some_and(|active| active.sha256 == sha256)
        {
            return Ok(None);
        }
        let bytes = std::fs::read(file).map_err(|error| io(file, &error))?;
        if sha256_hex(&bytes) != sha256 {
            // Changed again since it was loaded: the next scan sees the new file.
            return Ok(None);
        }
        let signature = std::fs::read(SignaturePolicy::signature_path(file)).ok();
        let entry = entry_name(version, sha256);
        if history.stored(&entry).is_none() {
            let folder = self.provider_dir(provider).join(&entry);
            create_dir_all(&folder)?;
            write_atomically(&folder.join(&history.slot), &bytes)?;
            if let Some(signature) = &signature {
                write_atomically(&folder.join(format!("{}.minisig", history.slot)), signature)?;
            }
            let stored = StoredVersion {
                entry: entry.clone(),
                version: version.to_string(),
                sha256: sha256.to_string(),
                size: bytes.len() as u64,
                stored_at_unix: now_unix(),
                signed_by: key_id.clone(),
            };
            write_atomically(&folder.join("version.json"), &to_json(&stored))?;
            history.versions.push(stored);
        }
        let activation = Activation {
            entry,
            version: version.to_string(),
            sha256: sha256.to_string(),
            at_unix: now_unix(),
            by: ActivatedBy::Adopted,
            via: Via::Host,
            key_id,
        };
        push_activation(&mut history, activation.clone());
        self.write_history(&history)?;
        self.retain(&mut history)?;
        Ok(Some(activation))
    }

    /// Records why an install or rollback of `provider` was refused (shown by `/v1/plugins` and
    /// `history`). Only for a provider installed here before; otherwise nothing is written.
    pub fn record_refusal(&self, provider: &str, file: &str, reason: &str, via: Via) {
        // A provider never installed here gets no versions folder from a refusal.
        if !is_provider_id(provider) || !matches!(self.history(provider), Ok(Some(_))) {
            return;
        }
        let result = self.lock().and_then(|_lock| {
            let Some(mut history) = self.history(provider)? else {
                return Ok(());
            };
            history.last_refusal = Some(Refusal {
                at_unix: now_unix(),
                file: file.to_string(),
                reason: reason.to_string(),
                via,
            });
            self.write_history(&history)
        });
        if let Err(error) = result {
            tracing::warn!(%error, "cannot record the refusal in the version history");
        }
    }

    /// Records `stored` active, then renames it into the slot; undoes the record if the rename
    /// fails.
    fn activate(
        &self,
        history: &mut History,
        stored: &StoredVersion,
        by: ActivatedBy,
        via: Via,
    ) -> Result<Activation, VersionsError> {
        let activation = Activation {
            entry: stored.entry.clone(),
            version: stored.version.clone(),
            sha256: stored.sha256.clone(),
            at_unix: now_unix(),
            by,
            via,
            key_id: stored.signed_by.clone(),
        };
        let before = history.clone();
        push_activation(history, activation.clone());
        self.write_history(history)?;
        if let Err(error) = self.place(history, stored) {
            *history = before;
            if let Err(undo) = self.write_history(history) {
                tracing::error!(error = %undo, "cannot undo the activation record; the next start puts the recorded version in place");
            }
            return Err(error);
        }
        Ok(activation)
    }

    /// Copies a stored version into the plugins folder under a hidden name and renames it over
    /// the slot: the signature first, then the library.
    fn place(&self, history: &History, stored: &StoredVersion) -> Result<(), VersionsError> {
        let folder = self.provider_dir(&history.provider).join(&stored.entry);
        let slot = self.plugins_dir.join(&history.slot);
        let slot_signature = SignaturePolicy::signature_path(&slot);
        let stored_signature = folder.join(format!("{}.minisig", history.slot));
        match std::fs::read(&stored_signature) {
            Ok(signature) => self.rename_in(&slot_signature, &signature)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                remove_if_present(&slot_signature)?;
            }
            Err(error) => return Err(io(&stored_signature, &error)),
        }
        let library = folder.join(&history.slot);
        let bytes = std::fs::read(&library).map_err(|error| io(&library, &error))?;
        if sha256_hex(&bytes) != stored.sha256 {
            return Err(VersionsError::Corrupted { path: library });
        }
        self.rename_in(&slot, &bytes)
    }

    /// Writes `bytes` under a hidden temporary name beside `target` (which the scan skips),
    /// flushes it, and renames it over `target`.
    fn rename_in(&self, target: &Path, bytes: &[u8]) -> Result<(), VersionsError> {
        let name = target
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        let temporary = self.plugins_dir.join(format!(".{name}.activating"));
        write_file(&temporary, bytes)?;
        std::fs::rename(&temporary, target).map_err(|error| {
            let _ = std::fs::remove_file(&temporary);
            io(target, &error)
        })?;
        sync_folder(&self.plugins_dir);
        Ok(())
    }

    /// Whether the slot holds `stored`'s bytes now.
    fn slot_holds(&self, history: &History, stored: &StoredVersion) -> bool {
        std::fs::read(self.plugins_dir.join(&history.slot))
            .is_ok_and(|bytes| sha256_hex(&bytes) == stored.sha256)
    }

    /// Checks a stored version before it is activated again: its bytes still hash to what was
    /// stored, and it passes today's signature policy.
    fn check_stored(
        &self,
        history: &History,
        stored: &StoredVersion,
        policy: &SignaturePolicy,
    ) -> Result<(), VersionsError> {
        let library = self
            .provider_dir(&history.provider)
            .join(&stored.entry)
            .join(&history.slot);
        let bytes = std::fs::read(&library).map_err(|error| io(&library, &error))?;
        if sha256_hex(&bytes) != stored.sha256 {
            return Err(VersionsError::Corrupted { path: library });
        }
        policy
            .check(&library, &bytes)
            .map_err(|reason| VersionsError::Signature {
                file: library.display().to_string(),
                reason,
            })?;
        Ok(())
    }

    /// Drops the oldest versions past the bound; the active version is never dropped. A dropped
    /// version that is still mapped keeps running: the host maps a private copy, never the file
    /// here, and in-flight requests hold it until they end.
    fn retain(&self, history: &mut History) -> Result<Vec<String>, VersionsError> {
        let mut dropped = Vec::new();
        let active = history.active().map(|active| active.entry.clone());
        while history.versions.len() > self.keep {
            let Some(position) = history
                .versions
                .iter()
                .position(|stored| Some(&stored.entry) != active.as_ref())
            else {
                break;
            };
            let stored = history.versions.remove(position);
            dropped.push(stored.entry);
        }
        if dropped.is_empty() {
            return Ok(dropped);
        }
        self.write_history(history)?;
        for entry in &dropped {
            let folder = self.provider_dir(&history.provider).join(entry);
            if let Err(error) = std::fs::remove_dir_all(&folder) {
                tracing::warn!(folder = %folder.display(), %error, "cannot remove a dropped plugin version");
            }
        }
        Ok(dropped)
    }

    fn write_history(&self, history: &History) -> Result<(), VersionsError> {
        let folder = self.provider_dir(&history.provider);
        create_dir_all(&folder)?;
        write_atomically(&folder.join("history.json"), &to_json(history))
    }

    /// Holds the versions folder's lock (an advisory `flock`): the CLI and a running host may
    /// both change it.
    fn lock(&self) -> Result<std::fs::File, VersionsError> {
        let root = self.root();
        create_dir_all(&root)?;
        let path = root.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| io(&path, &error))?;
        file.lock().map_err(|error| io(&path, &error))?;
        Ok(file)
    }
}

/// The kept version `wanted` names: an entry name, else a version kept once.
fn find_version(history: &History, wanted: &str) -> Result<StoredVersion, VersionsError> {
    if let Some(stored) = history.stored(wanted) {
        return Ok(stored.clone());
    }
    let candidates: Vec<&StoredVersion> = history
        .versions
        .iter()
        .filter(|stored| stored.version == wanted)
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(VersionsError::UnknownVersion {
            provider: history.provider.clone(),
            wanted: wanted.to_string(),
            kept: history
                .versions
                .iter()
                .map(|stored| stored.entry.clone())
                .collect(),
        }),
        several => Err(VersionsError::Ambiguous {
            provider: history.provider.clone(),
            wanted: wanted.to_string(),
            candidates: several.iter().map(|stored| stored.entry.clone()).collect(),
        }),
    }
}

fn push_activation(history: &mut History, activation: Activation) {
    history.activations.push(activation);
    let excess = history.activations.len().saturating_sub(MAX_ACTIVATIONS);
    history.activations.drain(..excess);
}

/// `<version>-<sha256 prefix>`, the version reduced to characters safe in a folder name.
pub fn entry_name(version: &str, sha256: &str) -> String {
    let version: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{version}-{}", &sha256[..12.min(sha256.len())])
}

/// The slot a provider gets when nothing serves it yet: `lib<provider>.<ext>`.
pub fn default_slot(provider: &str) -> String {
    format!(
        "{}{provider}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Provider ids as manifests and paths use them: they become folder names here.
pub fn is_provider_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// One path component, not hidden: no separator, no `..`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255
}

fn check_provider(provider: &str) -> Result<(), VersionsError> {
    if is_provider_id(provider) {
        Ok(())
    } else {
        Err(VersionsError::BadProvider(provider.to_string()))
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn io(path: &Path, error: &std::io::Error) -> VersionsError {
    VersionsError::Io {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

fn create_dir_all(folder: &Path) -> Result<(), VersionsError> {
    std::fs::create_dir_all(folder).map_err(|error| io(folder, &error))
}

fn remove_if_present(path: &Path) -> Result<(), VersionsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io(path, &error)),
    }
}

/// Writes a new file, mode 0644 (the loader refuses files others can write), flushed to disk.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), VersionsError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o644);
    }
    let mut file = options.open(path).map_err(|error| io(path, &error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| io(path, &error))?;
    #[cfg(unix)]
    {
        // `mode` applies only to a file created now; an earlier leftover keeps its own.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|error| io(path, &error))?;
    }
    Ok(())
}

/// Writes `path` whole or not at all: a temporary file beside it, then a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), VersionsError> {
    let mut temporary = path.as_os_str().to_os_string();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    write_file(&temporary, bytes)?;
    std::fs::rename(&temporary, path).map_err(|error| io(path, &error))?;
    if let Some(folder) = path.parent() {
        sync_folder(folder);
    }
    Ok(())
}

/// Makes a rename in `folder` durable (best effort: not every file system allows it).
fn sync_folder(folder: &Path) {
    if let Ok(handle) = std::fs::File::open(folder) {
        let _ = handle.sync_all();
    }
}

/// What an install check found in a library that passed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub provider: String,
    pub version: String,
}

/// The check a library passes before the API's install stores it: `gatehouse serve` sets the
/// conformance check (`gatehouse plugin check`); an embedding platform gets [`loader_check`]
/// unless it sets its own (`Gateway::set_install_check`). The error is the reason, for the
/// refusal's message.
pub type InstallCheck = std::sync::Arc<dyn Fn(&Path) -> Result<Checked, String> + Send + Sync>;

/// The loader's own checks (object file, contract version, type layout, manifest), as the
/// registry would apply them, without driving any flow. The library is mapped into this process
/// to be checked (and, like every mapped library, stays mapped).
pub fn loader_check(library: &Path) -> Result<Checked, String> {
    let bytes =
        std::fs::read(library).map_err(|error| format!("{}: {error}", library.display()))?;
    let copies = tempfile::Builder::new()
        .prefix("gatehouse-check-")
        .tempdir()
        .map_err(|error| error.to_string())?;
    let plugin = crate::loader::load_plugin(library, &bytes, copies.path())
        .map_err(|error| error.to_string())?;
    Ok(Checked {
        provider: plugin.manifest.provider.clone(),
        version: plugin.manifest.plugin_version.clone(),
    })
}

/// A library received by the API, written to a private folder of its own (with its signature
/// beside it, as the signature check expects) so the checks can read it as a file.
pub struct Staged {
    _dir: tempfile::TempDir,
    pub library: PathBuf,
}

impl Staged {
    pub fn new(
        file_name: &str,
        bytes: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Self, VersionsError> {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-install-")
            .tempdir()
            .map_err(|error| io(&std::env::temp_dir(), &error))?;
        let library = dir.path().join(file_name);
        write_file(&library, bytes)?;
        if let Some(signature) = signature {
            write_file(&SignaturePolicy::signature_path(&library), signature)?;
        }
        Ok(Self { _dir: dir, library })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate<'a>(version: &'a str, bytes: &'a [u8]) -> Candidate<'a> {
        Candidate {
            provider: "acme",
            version,
            bytes,
            signature: None,
            signed_by: None,
            first_slot: default_slot("acme"),
        }
    }

    #[test]
    fn install_rollback_retention_and_restore() {
        let dir = tempfile::tempdir().expect("folder");
        let versions = Versions::new(dir.path(), 2);
        let slot = dir.path().join(default_slot("acme"));
        versions
            .install(&candidate("1.0.0", b"one"), Via::Cli)
            .expect("install");
        versions
            .install(&candidate("1.1.0", b"two"), Via::Cli)
            .expect("install");
        assert_eq!(std::fs::read(&slot).expect("slot"), b"two");
        let policy = SignaturePolicy::default();
        let back = versions
            .rollback("acme", None, &policy, ActivatedBy::Rollback, Via::Cli)
            .expect("rollback");
        assert_eq!(back.version, "1.0.0");
        assert_eq!(std::fs::read(&slot).expect("slot"), b"one");
        assert!(matches!(
            versions.rollback("acme", None, &policy, ActivatedBy::Rollback, Via::Cli),
            Err(VersionsError::NothingEarlier { .. })
        ));
        assert!(matches!(
            versions.rollback(
                "acme",
                Some("9.9.9"),
                &policy,
                ActivatedBy::Rollback,
                Via::Cli
            ),
            Err(VersionsError::UnknownVersion { .. })
        ));
        // A third version with the bound at 2 drops the oldest that is not active.
        let installed = versions
            .install(&candidate("1.2.0", b"three"), Via::Cli)
            .expect("install");
        assert_eq!(
            installed.dropped,
            vec![entry_name("1.0.0", &sha256_hex(b"one"))]
        );
        // Something else copied into the slot while the host is down: put back at the start.
        std::fs::write(&slot, b"stray").expect("stray");
        assert_eq!(versions.restore().len(), 1);
        assert_eq!(std::fs::read(&slot).expect("slot"), b"three");
        let history = versions.history("acme").expect("read").expect("history");
        assert_eq!(history.versions.len(), 2);
        assert_eq!(history.activations.len(), 4);
        assert!(matches!(
            versions.history("../etc"),
            Err(VersionsError::BadProvider(_))
        ));
        // A record naming a path outside its folder is refused, not followed.
        let record = dir
            .path()
            .join(VERSIONS_DIR)
            .join("acme")
            .join("history.json");
        let text = std::fs::read_to_string(&record).expect("record");
        std::fs::write(
            &record,
            text.replace(&default_slot("acme"), "../../escape.so"),
        )
        .expect("edit");
        assert!(matches!(
            versions.history("acme"),
            Err(VersionsError::Record { .. })
        ));
    }

    #[test]
    fn two_builds_of_one_version_are_named_by_entry() {
        let dir = tempfile::tempdir().expect("folder");
        let versions = Versions::new(dir.path(), 5);
        versions
            .install(&candidate("1.0.0", b"first build"), Via::Cli)
            .expect("install");
        versions
            .install(&candidate("1.0.0", b"second build"), Via::Api)
            .expect("install");
        // The same bytes again: kept already, active already, nothing stored twice.
        let again = versions
            .install(&candidate("1.0.0", b"second build"), Via::Cli)
            .expect("install");
        assert!(again.already_kept);
        let policy = SignaturePolicy::default();
        assert!(matches!(
            versions.rollback(
                "acme",
                Some("1.0.0"),
                &policy,
                ActivatedBy::Rollback,
                Via::Cli
            ),
            Err(VersionsError::Ambiguous { .. })
        ));
        let first = entry_name("1.0.0", &sha256_hex(b"first build"));
        let back = versions
            .rollback(
                "acme",
                Some(&first),
                &policy,
                ActivatedBy::Rollback,
                Via::Cli,
            )
            .expect("by entry");
        assert_eq!(back.entry, first);
        assert!(matches!(
            versions.rollback(
                "acme",
                Some(&first),
                &policy,
                ActivatedBy::Rollback,
                Via::Cli
            ),
            Err(VersionsError::AlreadyActive { .. })
        ));
        // A stored file changed on disk is refused, not activated.
        let second = entry_name("1.0.0", &sha256_hex(b"second build"));
        std::fs::write(
            dir.path()
                .join(VERSIONS_DIR)
                .join("acme")
                .join(&second)
                .join(default_slot("acme")),
            b"changed",
        )
        .expect("tamper");
        assert!(matches!(
            versions.rollback(
                "acme",
                Some(&second),
                &policy,
                ActivatedBy::Rollback,
                Via::Cli
            ),
            Err(VersionsError::Corrupted { .. })
        ));
        let history = versions.history("acme").expect("read").expect("history");
        assert_eq!(history.versions.len(), 2);
        assert_eq!(
            history.active().map(|active| active.entry.clone()),
            Some(first)
        );
    }
}
