//! The set of active plugins, one per provider, and the scan that keeps it in step with the
//! plugins folder.
//!
//! Architecture Invariant: the active set is swapped atomically as a whole. A request takes an
//! `Arc<LoadedPlugin>` when it starts and keeps it until its flow ends, so requests that started
//! before a swap finish on the version they started with, and new ones get the new version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::loader::{LoadError, LoadedPlugin, load_plugin, sha256_hex};
use crate::signature::{SignaturePolicy, Signed};

/// What the plugins folder looked like to the last scan, file by file.
#[derive(Debug, Clone)]
struct FileRecord {
    sha256: String,
    /// The file's identity and metadata when it was last hashed (see [`FileStamp`]).
    stamp: Option<FileStamp>,
    /// The provider this file serves, when it loaded.
    provider: Option<String>,
    error: Option<LoadError>,
    /// When the error was recorded.
    refused_at: Option<SystemTime>,
}

/// What `stat` says of a file: when none of it changed, the scan does not read and hash the file
/// again. Every watcher event (and every file copied into the folder) triggers a scan of the
/// whole folder, and reading and hashing five plugins of ~10 MB each cost ~50 ms per scan.
/// An update arrives by rename (new inode) or by rewrite (new size, mtime and ctime, with
/// nanosecond precision on the file systems a host runs on), so an unchanged stamp means an
/// unchanged file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
    #[cfg(unix)]
    changed: (i64, i64),
}

impl FileStamp {
    fn of(file: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(file).ok()?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Some(Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            inode: (metadata.dev(), metadata.ino()),
            #[cfg(unix)]
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        })
    }
}

/// An event of a scan, for logs, metrics and tests.
#[derive(Debug, Clone)]
pub enum ScanEvent {
    Loaded {
        provider: String,
        version: String,
        file: PathBuf,
        replaced: Option<String>,
    },
    Failed {
        file: PathBuf,
        error: LoadError,
        /// The provider still served by its previous version, if any.
        still_serving: Option<String>,
    },
    Retired {
        provider: String,
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub provider: String,
    pub display_name: String,
    pub plugin_version: String,
    pub contract_version: String,
    pub file: String,
    pub sha256: String,
    pub operations: Vec<String>,
    pub reports: Vec<String>,
    pub loaded_at_unix: u64,
    /// The minisign key id of the trusted key that signed the file, when it was signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    pub file: String,
    pub error: String,
    /// When the file was refused (seconds since the epoch).
    pub at_unix: u64,
}

pub struct Registry {
    plugins_dir: PathBuf,
    copy_parent: PathBuf,
    max_loaded_libraries: usize,
    signatures: ArcSwap<SignaturePolicy>,
    active: ArcSwap<BTreeMap<String, Arc<LoadedPlugin>>>,
    scan_state: Mutex<ScanState>,
}

#[derive(Default)]
struct ScanState {
    files: BTreeMap<PathBuf, FileRecord>,
    libraries_loaded: usize,
}

impl Registry {
    pub fn new(plugins_dir: PathBuf, max_loaded_libraries: usize) -> Self {
        Self {
            plugins_dir,
            // Each load makes (and removes) a private folder of its own in here.
            copy_parent: std::env::temp_dir(),
            max_loaded_libraries,
            signatures: ArcSwap::from_pointee(SignaturePolicy::default()),
            active: ArcSwap::from_pointee(BTreeMap::new()),
            scan_state: Mutex::new(ScanState::default()),
        }
    }

    pub fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    /// The active version of `provider`'s plugin.
    pub fn get(&self, provider: &str) -> Option<Arc<LoadedPlugin>> {
        self.active.load().get(provider).cloned()
    }

    /// Every active plugin, by provider.
    pub fn active(&self) -> Arc<BTreeMap<String, Arc<LoadedPlugin>>> {
        self.active.load_full()
    }

    /// How many plugin libraries this process has mapped (they are never unmapped).
    pub fn libraries_loaded(&self) -> usize {
        self.lock_state().libraries_loaded
    }

    /// Brings the active set in step with the folder: loads new and changed files, keeps
    /// unchanged ones, retires removed ones. Blocking (file I/O and `dlopen`): run it off the
    /// request path.
    /// The signature policy scans apply from now on (`plugins.toml`'s `[signatures]`).
    pub fn set_signature_policy(&self, policy: SignaturePolicy) {
        self.signatures.store(Arc::new(policy));
    }

    pub fn scan(&self) -> Vec<ScanEvent> {
        let signatures = self.signatures.load_full();
        let mut state = self.lock_state();
        let mut events = Vec::new();
        let present = match plugin_files(&self.plugins_dir) {
            Ok(files) => files,
            Err(error) => {
                events.push(ScanEvent::Failed {
                    file: self.plugins_dir.clone(),
                    error: LoadError::Read {
                        file: self.plugins_dir.display().to_string(),
                        message: error.to_string(),
                    },
                    still_serving: None,
                });
                return events;
            }
        };
        let mut active = (**self.active.load()).clone();

        let removed: Vec<PathBuf> = state
            .files
            .keys()
            .filter(|file| !present.contains(file))
            .cloned()
            .collect();
        for file in removed {
            if let Some(record) = state.files.remove(&file)
                && let Some(provider) = record.provider
                && active
                    .get(&provider)
                    .is_some_and(|plugin| plugin.file == file)
            {
                active.remove(&provider);
                events.push(ScanEvent::Retired { provider, file });
            }
        }

        for file in present {
            let stamp = FileStamp::of(&file);
            let record = state.files.get(&file);
            // A file refused for its signature is checked again at every scan: the operator may
            // add or fix the `.minisig` without touching the library.
            let refused_for_signature = record
                .is_some_and(|record| matches!(record.error, Some(LoadError::Signature { .. })));
            if stamp.is_some()
                && record.is_some_and(|record| record.stamp == stamp)
                && !refused_for_signature
            {
                continue;
            }
            let bytes = match std::fs::read(&file) {
                Ok(bytes) => bytes,
                Err(error) => {
                    // Nothing is recorded, so the next scan (an event's, or the watcher's periodic
                    // one) reads it again. A file that vanished between listing and reading is
                    // expected; any other error is worth a warning.
                    if error.kind() == std::io::ErrorKind::NotFound {
                        tracing::debug!(file = %file.display(), %error, "plugin file vanished during scan");
                    } else {
                        tracing::warn!(file = %file.display(), %error, "plugin file unreadable; tried again at the next scan");
                    }
                    continue;
                }
            };
            let sha256 = sha256_hex(&bytes);
            if let Some(record) = state
                .files
                .get_mut(&file)
                .filter(|record| record.sha256 == sha256)
                .filter(|record| {
                    // A file refused for its permissions is tried again once they change, and
                    // one refused for its signature at every scan.
                    !matches!(
                        record.error,
                        Some(LoadError::InsecurePermissions { .. } | LoadError::Signature { .. })
                    )
                })
            {
                // Touched, or copied over with the same content: nothing to load.
                record.stamp = stamp;
                continue;
            }
            let previous_provider = state
                .files
                .get(&file)
                .and_then(|record| record.provider.clone());
            let outcome = if state.libraries_loaded >= self.max_loaded_libraries {
                Err(LoadError::TooManyLibraries {
                    file: file.display().to_string(),
                    loaded: state.libraries_loaded,
                })
            } else {
                // The signature is checked over the bytes just read, which are the bytes the
                // loader copies and maps: a file changed after this read is not what was checked,
                // and not what is loaded.
                match signatures.check(&file, &bytes) {
                    Err(reason) => Err(LoadError::Signature {
                        file: file.display().to_string(),
                        reason,
                    }),
                    Ok(signed) => {
                        let loaded = load_plugin(&file, &bytes, &self.copy_parent);
                        if !loaded.as_ref().is_err_and(LoadError::mapped_nothing) {
                            state.libraries_loaded += 1;
                        }
                        loaded.map(|mut plugin| {
                            if let Signed::By { key_id } = signed {
                                plugin.signed_by = Some(key_id);
                            }
                            plugin
                        })
                    }
                }
            };
            let outcome = outcome.and_then(|plugin| {
                let provider = plugin.manifest.provider.clone();
                match active.get(&provider) {
                    Some(other) if other.file != file => Err(LoadError::Manifest {
                        file: file.display().to_string(),
                        message: format!(
                            "provider `{provider}` is already served by {}; replace that file instead of adding a second one",
                            other.file.display()
                        ),
                    }),
                    _ => Ok(plugin),
                }
            });
            match outcome {
                Ok(plugin) => {
                    let provider = plugin.manifest.provider.clone();
                    let version = plugin.manifest.plugin_version.clone();
                    // A file that used to serve another provider stops serving it.
                    if let Some(old) = previous_provider.filter(|old| *old != provider)
                        && active.get(&old).is_some_and(|plugin| plugin.file == file)
                    {
                        active.remove(&old);
                        events.push(ScanEvent::Retired {
                            provider: old,
                            file: file.clone(),
                        });
                    }
                    let replaced = active
                        .insert(provider.clone(), Arc::new(plugin))
                        .map(|old| old.manifest.plugin_version.clone());
                    state.files.insert(
                        file.clone(),
                        FileRecord {
                            sha256,
                            stamp,
                            provider: Some(provider.clone()),
                            error: None,
                            refused_at: None,
                        },
                    );
                    events.push(ScanEvent::Loaded {
                        provider,
                        version,
                        file,
                        replaced,
                    });
                }
                Err(error) => {
                    let still_serving = previous_provider.clone().filter(|provider| {
                        active
                            .get(provider)
                            .is_some_and(|plugin| plugin.file == file)
                    });
                    state.files.insert(
                        file.clone(),
                        FileRecord {
                            sha256,
                            stamp,
                            provider: still_serving.clone(),
                            error: Some(error.clone()),
                            refused_at: Some(SystemTime::now()),
                        },
                    );
                    events.push(ScanEvent::Failed {
                        file,
                        error,
                        still_serving,
                    });
                }
            }
        }
        self.active.store(Arc::new(active));
        for event in &events {
            log_event(event);
        }
        events
    }

    /// The active plugins, for `gatehouse plugins` and `/v1/plugins`.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.active
            .load()
            .values()
            .map(|plugin| PluginStatus {
                provider: plugin.manifest.provider.clone(),
                display_name: plugin.manifest.display_name.clone(),
                plugin_version: plugin.manifest.plugin_version.clone(),
                contract_version: plugin.contract_version.clone(),
                file: plugin.file.display().to_string(),
                sha256: plugin.sha256.clone(),
                operations: plugin
                    .manifest
                    .operations
                    .iter()
                    .map(|operation| operation.as_str().to_string())
                    .collect(),
                reports: plugin.manifest.reports.clone(),
                signed_by: plugin.signed_by.clone(),
                loaded_at_unix: plugin
                    .loaded_at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs()),
            })
            .collect()
    }

    /// Files whose latest content failed to load.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.lock_state()
            .files
            .iter()
            .filter_map(|(file, record)| {
                record.error.as_ref().map(|error| LoadFailure {
                    file: file.display().to_string(),
                    error: error.to_string(),
                    at_unix: record
                        .refused_at
                        .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map_or(0, |since| since.as_secs()),
                })
            })
            .collect()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, ScanState> {
        // A panic while scanning leaves nothing half-updated that matters: recover the state.
        self.scan_state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The library files directly in `folder`. Hidden files and names ending in `.tmp` or `.part`
/// are skipped: operators write those first and rename them into place when complete.
pub fn plugin_files(folder: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type()?.is_file() {
            continue;
        }
        if path.extension().and_then(|ext| ext.to_str()) == Some(std::env::consts::DLL_EXTENSION) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn log_event(event: &ScanEvent) {
    match event {
        ScanEvent::Loaded {
            provider,
            version,
            file,
            replaced,
        } => {
            tracing::info!(%provider, %version, file = %file.display(), replaced = ?replaced, "plugin loaded")
        }
        ScanEvent::Failed {
            file,
            error,
            still_serving,
        } => {
            tracing::error!(file = %file.display(), %error, still_serving = ?still_serving, "plugin refused")
        }
        ScanEvent::Retired { provider, file } => {
            tracing::info!(%provider, file = %file.display(), "plugin retired")
        }
    }
}
