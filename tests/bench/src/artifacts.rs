//! The release builds the benchmarks load: the five provider plugins, the 1.1.0 fixture used for
//! hot reload, and the `gatehouse` executable.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The five provider plugins, by package.
pub const PROVIDER_PLUGINS: [&str; 5] = [
    "gatehouse-plugin-paygateglobal",
    "gatehouse-plugin-xsolla",
    "gatehouse-plugin-kolmisoft",
    "gatehouse-plugin-ccbill",
    "gatehouse-plugin-paysitecash",
];

/// PayGateGlobal's own source built as version 1.1.0 (the hot-reload fixture).
pub const PAYGATEGLOBAL_NEXT: &str = "gatehouse-fixture-paygateglobal-next";

pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| manifest_dir.join("../.."))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds, in release, every plugin library the benchmarks load (cargo does nothing when they
/// are up to date). Benchmarks compare optimized code only: a debug plugin would be measured as
/// the host's cost.
pub fn build_release_libraries() -> anyhow::Result<()> {
    let mut command = Command::new(cargo());
    command
        .current_dir(workspace_root())
        .args(["build", "--release", "--quiet"]);
    for package in PROVIDER_PLUGINS.iter().chain([&PAYGATEGLOBAL_NEXT]) {
        command.args(["-p", package]);
    }
    let status = command
        .status()
        .context("running cargo to build the plugin libraries")?;
    if !status.success() {
        bail!("building the plugin libraries in release failed");
    }
    Ok(())
}

/// Builds the release `gatehouse` executable (for the idle-memory figure of the real binary).
pub fn build_release_gatehouse() -> anyhow::Result<PathBuf> {
    let status = Command::new(cargo())
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "gatehouse",
            "--bin",
            "gatehouse",
        ])
        .status()
        .context("running cargo to build the gatehouse executable")?;
    if !status.success() {
        bail!("building the gatehouse executable in release failed");
    }
    let path = target_dir()
        .join("release")
        .join(format!("gatehouse{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}

/// The release build of a plugin library, by package name. Call
/// [`build_release_libraries`] first.
pub fn release_library(package: &str) -> anyhow::Result<PathBuf> {
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let path = target_dir().join("release").join(file);
    if !path.exists() {
        bail!(
            "{} was not built (run build_release_libraries first)",
            path.display()
        );
    }
    Ok(path)
}

/// The provider a plugin package serves (`gatehouse-plugin-xsolla` → `xsolla`).
pub fn provider_of(package: &str) -> &str {
    package
        .strip_prefix("gatehouse-plugin-")
        .or_else(|| package.strip_prefix("gatehouse-fixture-"))
        .unwrap_or(package)
}

/// The file name a provider's plugin gets in the plugins folder.
pub fn plugin_file_name(provider: &str) -> String {
    format!(
        "{}{provider}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Installs a library the way operators are told to: a hidden temporary file, then a rename.
/// Returns when the rename is done.
pub fn install(library: &Path, plugins_dir: &Path, file_name: &str) -> anyhow::Result<()> {
    let temporary = plugins_dir.join(format!(".{file_name}.tmp"));
    std::fs::copy(library, &temporary).with_context(|| format!("copying {}", library.display()))?;
    std::fs::rename(&temporary, plugins_dir.join(file_name))
        .context("renaming the plugin into place")?;
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string())
}
