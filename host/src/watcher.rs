//! Watching the plugins folder and the configuration file, so that a new plugin version or a
//! changed `plugins.toml` takes effect without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};

use crate::config::Config;
use crate::gateway::Gateway;

/// Keeps the watch alive; dropping it stops watching.
pub struct WatchHandle {
    _plugins: notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>,
    _config: Option<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>>,
}

/// The last configuration reload error, if the newest file was refused.
static CONFIG_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// The error that kept the newest `plugins.toml` from taking effect, if any.
pub fn config_error() -> Option<String> {
    CONFIG_ERROR.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
}

/// Starts watching. Changes are debounced (`host.reload_debounce_ms`), then the plugins folder is
/// rescanned on the watcher's own thread: loading never runs on the request path.
pub fn watch(gateway: &Gateway) -> notify::Result<WatchHandle> {
    let config = gateway.config();
    let debounce = Duration::from_millis(config.host.reload_debounce_ms.max(10));
    let plugins_dir = gateway.registry().plugins_dir().to_path_buf();

    let scanner = gateway.clone();
    let mut plugins = new_debouncer(debounce, move |result: DebounceEventResult| {
        if result.is_ok() {
            scanner.reload_plugins();
        }
    })?;
    plugins.watcher().watch(&plugins_dir, RecursiveMode::NonRecursive)?;

    let config_watch = match config.source.clone() {
        Some(path) => Some(watch_config(gateway.clone(), path, debounce)?),
        None => None,
    };
    Ok(WatchHandle {
        _plugins: plugins,
        _config: config_watch,
    })
}

fn watch_config(
    gateway: Gateway,
    path: PathBuf,
    debounce: Duration,
) -> notify::Result<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>> {
    // Editors replace files by renaming over them, which ends a watch on the file itself, so the
    // folder is watched and events are filtered by name.
    let folder = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let file_name = path.file_name().map(|name| name.to_os_string());
    let mut debouncer = new_debouncer(debounce, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        if !events
            .iter()
            .any(|event| event.path.file_name().map(|name| name.to_os_string()) == file_name)
        {
            return;
        }
        reload_config(&gateway, &path);
    })?;
    debouncer.watcher().watch(&folder, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

/// Reads the configuration again; a refused file leaves the previous configuration in force.
pub fn reload_config(gateway: &Gateway, path: &Path) {
    match Config::load(path) {
        Ok(new_config) => {
            let plugins_dir_changed = new_config.host.plugins_dir != gateway.config().host.plugins_dir;
            gateway.set_config(new_config);
            *CONFIG_ERROR.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
            gateway.metrics().increment("gatehouse_config_reloads_total", &[("result", "applied")]);
            tracing::info!(file = %path.display(), "configuration reloaded");
            if plugins_dir_changed {
                tracing::warn!("host.plugins_dir changed: it takes effect at the next restart");
            }
        }
        Err(error) => {
            gateway.metrics().increment("gatehouse_config_reloads_total", &[("result", "refused")]);
            tracing::error!(%error, "configuration refused; the previous one stays in force");
            *CONFIG_ERROR.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error.to_string());
        }
    }
}
