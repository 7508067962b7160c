//! Watching the plugins folder and the configuration file, so that a new plugin version or a
//! changed `plugins.toml` takes effect without a restart.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::config::Config;
use crate::gateway::Gateway;

mod config_file;

/// Keeps the watch alive; dropping it stops watching.
pub struct WatchHandle {
    _plugins: RecommendedWatcher,
    _config: Option<config_file::ConfigWatch>,
}

/// Starts watching. Changes are debounced (`host.reload_debounce_ms`), then the plugins folder is
/// rescanned on the watcher's own thread: loading never runs on the request path.
pub fn watch(gateway: &Gateway) -> notify::Result<WatchHandle> {
    let config = gateway.config();
    let debounce = Duration::from_millis(config.host.reload_debounce_ms.max(10));
    let plugins_dir = gateway.registry().plugins_dir().to_path_buf();

    let scanner = gateway.clone();
    let plugins = debounced_watch(
        &plugins_dir,
        debounce,
        // The safety net for an event the kernel dropped (an inotify queue overflow in a storm
        // of writes) or a file unreadable when its event came; a scan that finds nothing changed
        // costs a `stat` per file.
        (config.host.plugins_rescan_secs > 0)
            .then(|| Duration::from_secs(config.host.plugins_rescan_secs)),
        |_| true,
        move || {
            scanner.reload_plugins();
        },
    )?;

    let config_watch = match config.source.clone() {
        Some(path) => {
            // Editors replace files by renaming over them, which ends a watch on the file itself,
            // so the folder is watched and events are filtered by name.
            let folder = path
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let file_name = path.file_name().map(|name| name.to_os_string());
            let reloader = gateway.clone();
            Some(config_file::watch(
                &folder,
                file_name,
                debounce,
                move || reload_config(&reloader, &path),
            )?)
        }
        None => None,
    };
    Ok(WatchHandle {
        _plugins: plugins,
        _config: config_watch,
    })
}

/// Watches `folder` (not recursively) and calls `on_change` once things have been quiet for
/// `debounce` after a change to a path `relevant` accepts. Access events are ignored: the host
/// reads the files it watches, and reacting to its own reads would loop forever.
fn debounced_watch(
    folder: &Path,
    debounce: Duration,
    every: Option<Duration>,
    relevant: impl Fn(&Path) -> bool + Send + 'static,
    on_change: impl Fn() + Send + 'static,
) -> notify::Result<RecommendedWatcher> {
    let (changes, changed) = channel::<()>();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        // An error (a dropped event queue, say) may hide a change: look again.
        let Ok(event) = result else {
            let _ = changes.send(());
            return;
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|path| relevant(path)) {
            let _ = changes.send(());
        }
    })?;
    watcher.watch(folder, RecursiveMode::NonRecursive)?;
    spawn_debouncer(changed, debounce, every, on_change)
        .map_err(|error| notify::Error::generic(&error.to_string()))?;
    Ok(watcher)
}

/// The thread that turns a stream of "something changed" into one `on_change` per quiet
/// `debounce`; it ends when every sender of `changed` is gone.
fn spawn_debouncer(
    changed: Receiver<()>,
    debounce: Duration,
    every: Option<Duration>,
    on_change: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("gatehouse-watch".into())
        .spawn(move || {
            // Wait for a change (or, with `every`, at most that long), then for quiet, then
            // act; stop when the watcher is dropped.
            loop {
                let waited = match every {
                    Some(every) => changed.recv_timeout(every),
                    None => changed.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match waited {
                    Ok(()) => {}
                    Err(RecvTimeoutError::Timeout) => {
                        on_change();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                loop {
                    match changed.recv_timeout(debounce) {
                        Ok(()) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                on_change();
            }
        })
        .map(|_| ())
}

/// Reads the configuration again; a refused file leaves the previous configuration in force.
/// Besides a file that does not parse, a file that would close the gateway is refused: one with
/// no API key when the previous had some, or with no account when the previous had some. A
/// truncating, non-atomic write (`: > plugins.toml`, an editor saving in place) is caught
/// half-way as exactly such a file, and must not answer every request with 401.
pub fn reload_config(gateway: &Gateway, path: &Path) {
    let loaded = Config::load(path)
        .map_err(|error| error.to_string())
        .and_then(
            |new_config| match closes_the_gateway(&gateway.config(), &new_config) {
                Some(reason) => Err(format!("{}: refused: {reason}", path.display())),
                None => Ok(new_config),
            },
        );
    match loaded {
        Ok(new_config) => {
            let plugins_dir_changed =
                new_config.host.plugins_dir != gateway.config().host.plugins_dir;
            gateway.set_config(new_config);
            gateway.set_config_error(None);
            gateway
                .metrics()
                .increment("gatehouse_config_reloads_total", &[("result", "applied")]);
            tracing::info!(file = %path.display(), "configuration reloaded");
            if plugins_dir_changed {
                tracing::warn!("host.plugins_dir changed: it takes effect at the next restart");
            }
        }
        Err(error) => {
            gateway
                .metrics()
                .increment("gatehouse_config_reloads_total", &[("result", "refused")]);
            tracing::error!(%error, "configuration refused; the previous one stays in force");
            gateway.set_config_error(Some(error));
        }
    }
}

/// Why `new` would leave a serving gateway unable to serve where `previous` could, if it would.
fn closes_the_gateway(previous: &Config, new: &Config) -> Option<String> {
    if previous.api.has_keys() && !new.api.has_keys() {
        return Some(
            "it has no API key (`[api] keys` or `[[api.key]]`), so every API route would answer 401; write the file atomically (a temporary file, then rename)".into(),
        );
    }
    if previous.accounts().next().is_some() && new.accounts().next().is_none() {
        return Some(
            "it has no provider account, so every command would be refused; write the file atomically (a temporary file, then rename)".into(),
        );
    }
    None
}
