//! Loading one plugin library: copy, open, check, read the manifest.
//!
//! Architecture Invariant: every file is loaded as its own module through
//! `lib_header_from_path(..)` and `check_layout`, never through `RootModule::load_from_*`, which
//! keeps one module per type per process (a second plugin would come back as the first).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use abi_stable::library::{LibraryError, RootModule, lib_header_from_path};
use abi_stable::std_types::{RSlice, RStr};
use gatehouse_plugin_api::ffi::{EncodedInvocation, FfiHttpResponse, HostStep, PluginModuleRef};
use gatehouse_plugin_api::{CONTRACT_VERSION, Manifest, contract_compatible};
use sha2::{Digest, Sha256};

/// Why a plugin file was refused. Every message names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read: {message}")]
    Read { file: String, message: String },
    #[error(
        "{file}: refused: {what} is writable by other users (mode {mode:o}); loading code from it would hand the host to whoever can write there"
    )]
    InsecurePermissions {
        file: String,
        what: String,
        mode: u32,
    },
    #[error("{file}: not a loadable library: {message}")]
    NotALibrary { file: String, message: String },
    #[error("{file}: not a Gatehouse plugin: it exports no abi_stable root module")]
    NotAPlugin { file: String },
    #[error("{file}: built with an incompatible abi_stable: {message}")]
    AbiStableIncompatible { file: String, message: String },
    #[error(
        "{file}: built against gatehouse-plugin-api {plugin_version}, incompatible with this host's {host_version} (a different 0.MINOR / MAJOR)"
    )]
    ContractVersion {
        file: String,
        plugin_version: String,
        host_version: String,
    },
    #[error("{file}: its plugin-api types differ from this host's: {details}")]
    LayoutMismatch { file: String, details: String },
    #[error("{file}: refused: {reason}")]
    Signature {
        file: String,
        reason: crate::signature::SignatureError,
    },
    #[error("{file}: the plugin's manifest is unusable: {message}")]
    Manifest { file: String, message: String },
    #[error(
        "{file}: not loaded: {loaded} plugin libraries are mapped already (host.max_loaded_libraries); libraries are never unloaded, restart the host to reclaim them"
    )]
    TooManyLibraries { file: String, loaded: usize },
}

impl LoadError {
    /// Whether the refusal came before anything was mapped into the process (so it spends none
    /// of `host.max_loaded_libraries`).
    pub fn mapped_nothing(&self) -> bool {
        matches!(
            self,
            Self::Read { .. }
                | Self::InsecurePermissions { .. }
                | Self::Signature { .. }
                | Self::NotALibrary { .. }
                | Self::TooManyLibraries { .. }
        )
    }
}

/// The generations of a plugin's flow entry points, oldest first. A host drives each plugin
/// through the newest its library has; each is appended to the root module after the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryPoints {
    /// `start`/`resume`: the whole invocation as one JSON text (the first release).
    Whole,
    /// `start_v2`/`resume_v2`: the invocation in pieces, the account's text kept by both sides.
    Pieces,
    /// `start_v3`/`resume_v3`: `Pieces` with a charge command and a plain outcome typed.
    Typed,
}

/// A plugin library, loaded and checked.
pub struct LoadedPlugin {
    module: PluginModuleRef,
    pub manifest: Manifest,
    /// The plugin-api version the plugin was built against.
    pub contract_version: String,
    /// The file in the plugins folder it was loaded from.
    pub file: PathBuf,
    /// SHA-256 of the file's contents, hex.
    pub sha256: String,
    pub loaded_at: SystemTime,
    /// A number unique to this load within the process.
    pub generation: u64,
    /// The trusted key that signed the file, when it was signed.
    pub signed_by: Option<String>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("provider", &self.manifest.provider)
            .field("plugin_version", &self.manifest.plugin_version)
            .field("file", &self.file)
            .field("generation", &self.generation)
            .finish()
    }
}

impl LoadedPlugin {
    /// The plugin's root module, for reading the functions a later minor version appended
    /// (each reads as `None` from a plugin built before it).
    pub fn module(&self) -> PluginModuleRef {
        self.module
    }

    /// Starts a flow the way the plugin takes it best: the invocation in pieces (`start_v2`)
    /// when the plugin has that entry point, as one JSON text (`start`) when it was built before
    /// it. The plugin's entry points catch their own panics.
    pub fn start_flow(&self, invocation: &EncodedInvocation, inbound_body: &[u8]) -> HostStep {
        self.start_flow_through(self.entry_points(), invocation, inbound_body)
    }

    /// Continues a flow started with [`start_flow`](Self::start_flow), through the same generation
    /// of entry points.
    pub fn resume_flow(
        &self,
        invocation: &EncodedInvocation,
        state: &str,
        response: &FfiHttpResponse,
    ) -> HostStep {
        self.resume_flow_through(self.entry_points(), invocation, state, response)
    }

    /// The newest generation of flow entry points the plugin has (both halves of it).
    pub fn entry_points(&self) -> EntryPoints {
        let module = &self.module;
        if module.start_v3().is_some() && module.resume_v3().is_some() {
            EntryPoints::Typed
        } else if module.start_v2().is_some() && module.resume_v2().is_some() {
            EntryPoints::Pieces
        } else {
            EntryPoints::Whole
        }
    }

    /// [`start_flow`](Self::start_flow) through a chosen generation of entry points (the
    /// equivalence tests and the benchmark drive one plugin through each); one the plugin lacks
    /// falls back to the first release's.
    pub fn start_flow_through(
        &self,
        entry_points: EntryPoints,
        invocation: &EncodedInvocation,
        inbound_body: &[u8],
    ) -> HostStep {
        let body = RSlice::from_slice(inbound_body);
        match entry_points {
            EntryPoints::Typed => {
                if let Some(start_v3) = self.module.start_v3() {
                    return start_v3(&invocation.as_ffi_v3(), body).into_host_step();
                }
            }
            EntryPoints::Pieces => {
                if let Some(start_v2) = self.module.start_v2() {
                    return start_v2(&invocation.as_ffi(), body).into_host_step();
                }
            }
            EntryPoints::Whole => {}
        }
        self.start(invocation.whole_json(), inbound_body)
    }

    /// [`resume_flow`](Self::resume_flow) through a chosen generation of entry points: the one
    /// the flow was started through.
    pub fn resume_flow_through(
        &self,
        entry_points: EntryPoints,
        invocation: &EncodedInvocation,
        state: &str,
        response: &FfiHttpResponse,
    ) -> HostStep {
        let state_text = RStr::from_str(state);
        match entry_points {
            EntryPoints::Typed => {
                if let Some(resume_v3) = self.module.resume_v3() {
                    return resume_v3(&invocation.as_ffi_v3(), state_text, response)
                        .into_host_step();
                }
            }
            EntryPoints::Pieces => {
                if let Some(resume_v2) = self.module.resume_v2() {
                    return resume_v2(&invocation.as_ffi(), state_text, response).into_host_step();
                }
            }
            EntryPoints::Whole => {}
        }
        self.resume(invocation.whole_json(), state, response)
    }

    /// Whether the plugin takes the invocation in pieces (`start_v2`/`resume_v2` or newer).
    pub fn takes_invocation_in_pieces(&self) -> bool {
        self.entry_points() != EntryPoints::Whole
    }

    /// Starts a flow through the first release's entry point, the invocation as one JSON text.
    /// The plugin's entry point catches its own panics.
    pub fn start(&self, invocation_json: &str, inbound_body: &[u8]) -> HostStep {
        (self.module.start())(
            RStr::from_str(invocation_json),
            RSlice::from_slice(inbound_body),
        )
        .into_host_step()
    }

    /// Continues a flow with the provider's answer, through the first release's entry point.
    pub fn resume(
        &self,
        invocation_json: &str,
        state: &str,
        response: &FfiHttpResponse,
    ) -> HostStep {
        (self.module.resume())(
            RStr::from_str(invocation_json),
            RStr::from_str(state),
            response,
        )
        .into_host_step()
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Loads the plugin in `file` from a private copy in a folder of its own inside `copy_parent`
/// (the system temporary folder for the host).
///
/// The copy gives each version its own path (and inode), so `dlopen` maps it anew instead of
/// returning an already-loaded library, and an operator overwriting the original in place cannot
/// change code that is mapped and running. The folder has a random name and mode 0700, is
/// created exclusively (an existing folder, whoever owns it, is never reused: another local user
/// cannot plant a library where the host will `dlopen` it) and is removed once the copy is
/// mapped, so no run of the host leaves a folder behind.
pub fn load_plugin(
    file: &Path,
    bytes: &[u8],
    copy_parent: &Path,
) -> Result<LoadedPlugin, LoadError> {
    let name = file.display().to_string();
    check_permissions(file)?;
    check_object_file(&name, bytes)?;
    let sha256 = sha256_hex(bytes);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    let copy_dir = private_folder(copy_parent).map_err(|message| LoadError::Read {
        file: name.clone(),
        message,
    })?;
    let stem = file.file_stem().map_or_else(
        || "plugin".into(),
        |stem| stem.to_string_lossy().into_owned(),
    );
    let copy = copy_dir.path().join(format!(
        "{stem}-{generation}-{}.{}",
        &sha256[..12],
        std::env::consts::DLL_EXTENSION
    ));
    std::fs::write(&copy, bytes).map_err(|error| LoadError::Read {
        file: name.clone(),
        message: format!("cannot write the private copy {}: {error}", copy.display()),
    })?;
    let result = open_and_check(&name, &copy);
    // Once mapped, the copy is no longer needed on disk (the mapping outlives the name).
    let _ = std::fs::remove_file(&copy);
    drop(copy_dir);
    let (module, contract_version) = result?;
    let manifest = read_manifest(&name, module)?;
    Ok(LoadedPlugin {
        module,
        manifest,
        contract_version,
        file: file.to_path_buf(),
        sha256,
        loaded_at: SystemTime::now(),
        generation,
        signed_by: None,
    })
}

fn open_and_check(name: &str, copy: &Path) -> Result<(PluginModuleRef, String), LoadError> {
    let header = lib_header_from_path(copy).map_err(|error| match error {
        LibraryError::OpenError { .. } => LoadError::NotALibrary {
            file: name.to_string(),
            message: first_line(&error.to_string()),
        },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin {
            file: name.to_string(),
        },
        // A library built with another abi_stable: say which, in a line (abi_stable's own
        // message dumps both headers byte by byte).
        LibraryError::InvalidAbiHeader(found) => {
            let ours = abi_stable::library::AbiHeader::VALUE;
            LoadError::AbiStableIncompatible {
                file: name.to_string(),
                message: format!(
                    "its abi_stable ABI is {}.{}, this host's is {}.{} (rebuild the plugin against this host's gatehouse-plugin-api)",
                    found.abi_major, found.abi_minor, ours.abi_major, ours.abi_minor
                ),
            }
        }
        other => LoadError::AbiStableIncompatible {
            file: name.to_string(),
            message: bounded(&other.to_string()),
        },
    })?;
    // The contract version is compared by this host's rules (see plugin-api's crate docs)
    // instead of abi_stable's, which would refuse an older plugin of the same 0.MINOR.
    let plugin_version = header
        .root_mod_consts()
        .version_strings()
        .version
        .to_string();
    if !contract_compatible(CONTRACT_VERSION, &plugin_version) {
        return Err(LoadError::ContractVersion {
            file: name.to_string(),
            plugin_version,
            host_version: CONTRACT_VERSION.to_string(),
        });
    }
    if header.root_mod_consts().name() != PluginModuleRef::NAME {
        return Err(LoadError::NotAPlugin {
            file: name.to_string(),
        });
    }
    let module = match header.check_layout::<PluginModuleRef>() {
        Ok(module) => module,
        // abi_stable accepts a library whose root module has *more* fields than the host's (a
        // newer plugin), never fewer: its checker treats the host's layout as the interface.
        // The contract's rule is append-only both ways, so an older plugin whose root module is
        // a prefix of ours is accepted too — checked by running abi_stable's checker the other
        // way round (every field the plugin has must be ours, field by field). The functions it
        // lacks then read as `None` through the prefix accessors, which consult the plugin's own
        // field count at run time (`#[sabi(missing_field(option))]`).
        Err(LibraryError::AbiInstability(details)) => {
            if !is_older_prefix(header) {
                return Err(LoadError::LayoutMismatch {
                    file: name.to_string(),
                    details: bounded(&details.to_string()),
                });
            }
            // SAFETY: `is_older_prefix` checked, with abi_stable's own layout checker, that the
            // plugin's root module is a prefix of this host's: every field it has is ours, with
            // the same type; the ones it lacks are only reached through accessors that return
            // `None` for a field past the plugin's field count.
            unsafe { header.unchecked_layout::<PluginModuleRef>() }.map_err(|error| {
                LoadError::AbiStableIncompatible {
                    file: name.to_string(),
                    message: bounded(&error.to_string()),
                }
            })?
        }
        Err(other) => {
            return Err(LoadError::AbiStableIncompatible {
                file: name.to_string(),
                message: bounded(&other.to_string()),
            });
        }
    };
    let contract_version = (module.contract_version())().into_string();
    Ok((module, contract_version))
}

/// Whether the library's root module is a prefix of this host's: what a plugin built against an
/// earlier release of the same contract has, before functions were appended.
fn is_older_prefix(header: &abi_stable::library::LibHeader) -> bool {
    let Some(plugin_layout) = header.layout() else {
        return false;
    };
    abi_stable::abi_stability::abi_checking::check_layout_compatibility(
        plugin_layout,
        <PluginModuleRef as abi_stable::StableAbi>::LAYOUT,
    )
    .is_ok()
}

fn read_manifest(name: &str, module: PluginModuleRef) -> Result<Manifest, LoadError> {
    let json = (module.manifest())()
        .into_result()
        .map_err(|message| LoadError::Manifest {
            file: name.to_string(),
            message: bounded(&message),
        })?;
    let manifest: Manifest = serde_json::from_str(&json).map_err(|error| LoadError::Manifest {
        file: name.to_string(),
        message: format!("not a readable manifest: {error}"),
    })?;
    manifest
        .validate()
        .map_err(|problems| LoadError::Manifest {
            file: name.to_string(),
            message: problems.join("; "),
        })?;
    Ok(manifest)
}

/// Checks the file is a complete shared library before it is mapped. `dlopen` accepts a file cut
/// short as long as its headers are intact, and the first touch of a page past the end would then
/// kill the process (SIGBUS); a parse of the whole structure refuses it instead.
fn check_object_file(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    use object::{Object, ObjectSegment};
    let not_a_library = |message: String| LoadError::NotALibrary {
        file: name.to_string(),
        message,
    };
    let parsed = object::File::parse(bytes)
        .map_err(|error| not_a_library(format!("not a complete object file: {error}")))?;
    let length = bytes.len() as u64;
    for segment in parsed.segments() {
        let (offset, size) = segment.file_range();
        if offset.checked_add(size).is_none_or(|end| end > length) {
            return Err(not_a_library(format!(
                "a segment ends past the end of the file ({} bytes): the file is truncated",
                length
            )));
        }
    }
    if parsed.kind() != object::ObjectKind::Dynamic {
        return Err(not_a_library(format!(
            "it is a {:?} object, not a shared library",
            parsed.kind()
        )));
    }
    Ok(())
}

/// A fresh folder for private copies: random name, created exclusively (so it is this process's
/// own, whoever could write to the parent), mode 0700 — checked, not assumed.
fn private_folder(parent: &Path) -> Result<tempfile::TempDir, String> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("gatehouse-plugins-");
    // Created with this mode (tempfile's default follows the umask, 0755 on most systems).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    let folder = builder.tempdir_in(parent).map_err(|error| {
        format!(
            "cannot create a private copy folder in {}: {error}",
            parent.display()
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::symlink_metadata(folder.path())
            .map_err(|error| format!("cannot inspect {}: {error}", folder.path().display()))?;
        let mode = metadata.permissions().mode() & 0o777;
        if !metadata.is_dir() || mode != 0o700 {
            return Err(format!(
                "the private copy folder {} has mode {mode:o}, not 0700",
                folder.path().display()
            ));
        }
    }
    Ok(folder)
}

#[cfg(unix)]
fn check_permissions(file: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::PermissionsExt;
    let name = file.display().to_string();
    // A bare file name's parent is the empty path, which `metadata` cannot read: it is `.`.
    let folder = file
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for (path, what) in [(file, "the file"), (folder, "its folder")] {
        let metadata = std::fs::metadata(path).map_err(|error| LoadError::Read {
            file: name.clone(),
            message: error.to_string(),
        })?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(LoadError::InsecurePermissions {
                file: name.clone(),
                what: what.to_string(),
                mode,
            });
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_file: &Path) -> Result<(), LoadError> {
    Ok(())
}

fn first_line(text: &str) -> String {
    bounded(text.lines().next().unwrap_or(text))
}

/// Layout reports can run to pages; a status line needs the start of it.
fn bounded(text: &str) -> String {
    const LIMIT: usize = 1_500;
    if text.len() <= LIMIT {
        text.to_string()
    } else {
        let mut end = LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_folders_are_fresh_owner_only_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().expect("parent");
        let first = private_folder(parent.path()).expect("folder");
        let second = private_folder(parent.path()).expect("folder");
        assert_ne!(first.path(), second.path(), "random names");
        let mode = std::fs::metadata(first.path())
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let (first_path, second_path) = (first.path().to_path_buf(), second.path().to_path_buf());
        drop((first, second));
        assert!(!first_path.exists() && !second_path.exists());
        assert_eq!(std::fs::read_dir(parent.path()).expect("parent").count(), 0);
    }
}
