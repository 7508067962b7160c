//! The API keys resolved once per configuration, not once per request.
//!
//! A key written as `"${ENV_VAR}"` or `{ file = … }` is a read of the environment or of a file;
//! every request paid it (all keys, plus the scrape keys on `/metrics`) before this cache. The
//! keys are resolved again when the configuration changes (a new `Arc<Config>`) and at most a
//! second apart, like every secret of the host (`RESOLVED_ACCOUNT_TTL` in the gateway), so a key
//! file rotated in place is honoured within a second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_core::Config;
use gatehouse_core::config::ApiKey;
use gatehouse_plugin_api::Secret;

/// How long resolved keys are used before the references are read again.
const RESOLVED_KEYS_TTL: Duration = Duration::from_secs(1);

/// The keys of one configuration, resolved.
pub struct ResolvedKeys {
    /// `api.keys` and `[[api.key]]` whose secret resolved.
    pub keys: Vec<ApiKey>,
    /// `api.metrics_keys` whose secret resolved.
    pub scrape: Vec<Secret>,
}

/// The router's one cache, shared by every route.
#[derive(Default)]
pub struct KeyCache {
    slot: Mutex<Option<Cached>>,
}

struct Cached {
    config: Arc<Config>,
    resolved_at: Instant,
    keys: Arc<ResolvedKeys>,
}

impl KeyCache {
    /// The keys of `config`, resolved at most [`RESOLVED_KEYS_TTL`] ago.
    pub fn keys(&self, config: &Arc<Config>) -> Arc<ResolvedKeys> {
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = slot.as_ref()
            && Arc::ptr_eq(&cached.config, config)
            && cached.resolved_at.elapsed() < RESOLVED_KEYS_TTL
        {
            return cached.keys.clone();
        }
        let keys = Arc::new(resolve(config));
        *slot = Some(Cached {
            config: config.clone(),
            resolved_at: Instant::now(),
            keys: keys.clone(),
        });
        keys
    }
}

fn resolve(config: &Config) -> ResolvedKeys {
    ResolvedKeys {
        keys: config.api.api_keys(),
        scrape: config
            .api
            .metrics_keys
            .iter()
            .filter_map(|key| key.resolve().ok())
            .map(|key| key.value)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_key_file(path: &std::path::Path) -> Arc<Config> {
        let text = format!("[api]\nkeys = [{{ file = \"{}\" }}]\n", path.display());
        Arc::new(Config::parse(&text, &path.with_file_name("plugins.toml")).expect("config"))
    }

    #[test]
    fn a_new_configuration_resolves_its_keys_again() {
        let dir = tempfile::tempdir().expect("dir");
        let key_file = dir.path().join("api-key");
        std::fs::write(&key_file, "first-key-0123456789abcdef\n").expect("key");
        let cache = KeyCache::default();
        let first = config_with_key_file(&key_file);
        let keys = cache.keys(&first);
        assert_eq!(keys.keys.len(), 1);
        assert_eq!(keys.keys[0].secret.expose(), "first-key-0123456789abcdef");

        // The file rotated and the configuration reloaded (a new `Arc`): the new key is used
        // at once, whatever the cache's age.
        std::fs::write(&key_file, "second-key-0123456789abcdef\n").expect("key");
        let second = config_with_key_file(&key_file);
        let keys = cache.keys(&second);
        assert_eq!(keys.keys[0].secret.expose(), "second-key-0123456789abcdef");
    }

    #[test]
    fn a_key_that_does_not_resolve_is_left_out() {
        let dir = tempfile::tempdir().expect("dir");
        let key_file = dir.path().join("api-key");
        std::fs::write(&key_file, "gone-key-0123456789abcdef\n").expect("key");
        let config = config_with_key_file(&key_file);
        std::fs::remove_file(&key_file).expect("remove");
        let cache = KeyCache::default();
        assert!(cache.keys(&config).keys.is_empty());
    }
}
