//! The watch on `plugins.toml`'s folder.
//!
//! The folder often holds the SQLite ledger too (`host.ledger = "ledger.sqlite"` beside the
//! file, the layout `gatehouse init` and the sandbox write). A general-purpose watch (notify's)
//! asks the kernel for every modification and open in the folder, so each ledger write (the
//! database, its `-wal` and `-shm`) woke the watcher's thread to be filtered out by name: about
//! 28 µs of CPU per ledgered charge in issue 20's profile. On Linux this watch asks inotify
//! only for what can change a file's contents as a reader sees them once written — a close after
//! writing (an in-place save, a truncation), a rename into the folder (an atomic save), a
//! creation, a removal or a rename away — so the kernel never queues the ledger's writes, which
//! keep their files open. Elsewhere, notify's watch is used as before.

use std::ffi::OsString;
use std::path::Path;
use std::sync::mpsc::channel;
use std::time::Duration;

use super::spawn_debouncer;

/// Keeps the watch alive; dropping it stops the watch and its threads.
pub struct ConfigWatch {
    #[cfg(target_os = "linux")]
    stop: Option<(inotify::Watches, inotify::WatchDescriptor)>,
    #[cfg(not(target_os = "linux"))]
    _watcher: notify::RecommendedWatcher,
}

#[cfg(target_os = "linux")]
impl Drop for ConfigWatch {
    fn drop(&mut self) {
        // Removing the watch makes the kernel queue IN_IGNORED, which wakes the reading thread
        // blocked in `read`: it sees its watch gone and ends, and the debouncer after it.
        if let Some((mut watches, descriptor)) = self.stop.take() {
            let _ = watches.remove(descriptor);
        }
    }
}

/// Watches `folder` for changes to the file named `file_name`, calling `on_change` once things
/// have been quiet for `debounce`.
#[cfg(target_os = "linux")]
pub fn watch(
    folder: &Path,
    file_name: Option<OsString>,
    debounce: Duration,
    on_change: impl Fn() + Send + 'static,
) -> notify::Result<ConfigWatch> {
    use inotify::{EventMask, Inotify, WatchMask};

    let io_error = |error: std::io::Error| notify::Error::io(error);
    let mut inotify = Inotify::init().map_err(io_error)?;
    let mask = WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF;
    let mut watches = inotify.watches();
    let descriptor = watches.add(folder, mask).map_err(io_error)?;
    let (changes, changed) = channel::<()>();
    std::thread::Builder::new()
        .name("gatehouse-config-watch".into())
        .spawn(move || {
            let mut buffer = [0_u8; 4096];
            loop {
                let events = match inotify.read_events_blocking(&mut buffer) {
                    Ok(events) => events,
                    // A failed read may hide a change: look again, then stop watching.
                    Err(_) => {
                        let _ = changes.send(());
                        return;
                    }
                };
                let mut relevant = false;
                let mut ended = false;
                for event in events {
                    if event.mask.contains(EventMask::IGNORED) {
                        ended = true;
                    } else if event.mask.contains(EventMask::Q_OVERFLOW)
                        || event.name.map(|name| name.to_os_string()) == file_name
                    {
                        // An overflowed queue may have dropped the file's event: look again.
                        relevant = true;
                    }
                }
                if relevant && changes.send(()).is_err() {
                    return;
                }
                if ended {
                    return;
                }
            }
        })
        .map_err(io_error)?;
    spawn_debouncer(changed, debounce, None, on_change).map_err(io_error)?;
    Ok(ConfigWatch {
        stop: Some((watches, descriptor)),
    })
}

/// Watches `folder` for changes to the file named `file_name` (notify's watch, filtered by name).
#[cfg(not(target_os = "linux"))]
pub fn watch(
    folder: &Path,
    file_name: Option<OsString>,
    debounce: Duration,
    on_change: impl Fn() + Send + 'static,
) -> notify::Result<ConfigWatch> {
    let watcher = super::debounced_watch(
        folder,
        debounce,
        None,
        move |changed: &Path| changed.file_name().map(|name| name.to_os_string()) == file_name,
        on_change,
    )?;
    Ok(ConfigWatch { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::mpsc::{RecvTimeoutError, channel};
    use std::time::Duration;

    use super::watch;

    /// Long enough for a loaded machine; a pass returns as soon as the event is seen.
    const WITHIN: Duration = Duration::from_secs(20);

    #[test]
    fn in_place_writes_renames_and_truncations_are_seen_and_the_watch_stops_when_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("plugins.toml");
        std::fs::write(&config, "[host]\n").expect("config");
        let (seen, changes) = channel::<()>();
        let watch = watch(
            dir.path(),
            Some("plugins.toml".into()),
            Duration::from_millis(10),
            move || {
                let _ = seen.send(());
            },
        )
        .expect("watch");
        // A database's writes beside the file, on files it keeps open.
        let mut wal = std::fs::File::create(dir.path().join("ledger.sqlite-wal")).expect("wal");
        for _ in 0..100 {
            wal.write_all(b"frame").expect("write");
        }

        std::fs::write(&config, "[host]\n# saved in place\n").expect("in place");
        changes
            .recv_timeout(WITHIN)
            .expect("an in-place save is seen");

        let temporary = dir.path().join(".plugins.toml.tmp");
        std::fs::write(&temporary, "[host]\n# renamed over\n").expect("temporary");
        std::fs::rename(&temporary, &config).expect("rename");
        changes
            .recv_timeout(WITHIN)
            .expect("a rename over the file is seen");

        drop(std::fs::File::create(&config).expect("truncate"));
        changes.recv_timeout(WITHIN).expect("a truncation is seen");

        drop(watch);
        // The reading thread and the debouncer end, dropping the callback and its sender.
        loop {
            match changes.recv_timeout(WITHIN) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the watch's threads did not stop"),
            }
        }
        drop(wal);
    }
}
