//! What a first run needs explained, in plain words, before anything is created (the ledger
//! file, its folder, the plugin copies): the commands that load plugins check here first.

use std::path::Path;

use gatehouse_core::config::Config;

/// A reason the command cannot start, or `None`. Checked before the ledger is opened, so a
/// mistyped folder leaves nothing behind.
pub fn problem(config: &Config) -> Option<String> {
    let folder = &config.host.plugins_dir;
    let file = config
        .source
        .as_deref()
        .unwrap_or(Path::new("plugins.toml"))
        .display();
    match std::fs::metadata(folder) {
        Ok(metadata) if metadata.is_dir() => None,
        Ok(_) => Some(format!(
            "gatehouse: the plugins folder {} (host.plugins_dir in {file}) is a file, not a folder.\n\
             Point host.plugins_dir at the folder that holds the plugin libraries (lib<provider>.so).",
            folder.display()
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "gatehouse: the plugins folder {} (host.plugins_dir in {file}) does not exist, so there is no plugin to serve; nothing was created.\n\
             - In a checkout of this repository, `cargo build --workspace` builds the plugins into target/debug; \
             copy (or link) the lib*.so files you want served into {}, or point host.plugins_dir at another folder.\n\
             - To try the gateway without credentials or plugins set up, run `gatehouse sandbox`: it makes its own folder.",
            folder.display(),
            folder.display()
        )),
        Err(error) => Some(format!(
            "gatehouse: the plugins folder {} (host.plugins_dir in {file}) cannot be read: {error}",
            folder.display()
        )),
    }
}

/// The warning `serve` prints when no API key is configured: the API then answers 401 to every
/// route but health, the document, webhooks (and `/metrics` with a scrape key).
pub fn no_api_key_warning(config: &Config) -> Option<String> {
    if config.api.has_keys() {
        return None;
    }
    Some(
        "gatehouse: warning: no API key is configured, so every API route except /healthz, /readyz, \
         /openapi.json and the webhooks answers 401 (and /metrics too, unless api.metrics_keys has one).\n\
         Add one to plugins.toml, as a reference to a secret rather than the secret itself:\n\
         [[api.key]]\n\
         name = \"platform\"\n\
         secret = \"${GATEHOUSE_API_KEY}\"\n\
         scopes = [\"read\", \"move_money\", \"operate\"]"
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(folder: &Path, text: &str) -> Config {
        Config::parse(text, &folder.join("plugins.toml")).expect("config")
    }

    #[test]
    fn a_missing_plugins_folder_is_explained_and_nothing_is_created() {
        let dir = tempfile::tempdir().expect("folder");
        let config = config_in(
            dir.path(),
            "[host]\nplugins_dir = \"nowhere/plugins\"\nledger = \"data/ledger.sqlite\"\n",
        );
        let problem = problem(&config).expect("a problem");
        assert!(problem.contains("does not exist"), "{problem}");
        assert!(problem.contains("host.plugins_dir"), "{problem}");
        assert!(problem.contains("gatehouse sandbox"), "{problem}");
        assert!(!dir.path().join("data").exists());
    }

    #[test]
    fn a_file_where_the_folder_should_be_is_named() {
        let dir = tempfile::tempdir().expect("folder");
        std::fs::write(dir.path().join("plugins"), b"").expect("file");
        let config = config_in(dir.path(), "[host]\nplugins_dir = \"plugins\"\n");
        assert!(
            problem(&config)
                .expect("a problem")
                .contains("is a file, not a folder")
        );
        std::fs::remove_file(dir.path().join("plugins")).expect("rm");
        std::fs::create_dir(dir.path().join("plugins")).expect("mkdir");
        assert_eq!(problem(&config), None);
    }

    #[test]
    fn serving_without_a_key_is_warned_in_words() {
        let dir = tempfile::tempdir().expect("folder");
        let warning = no_api_key_warning(&config_in(dir.path(), "")).expect("warning");
        assert!(
            warning.contains("401") && warning.contains("[[api.key]]"),
            "{warning}"
        );
        assert_eq!(
            no_api_key_warning(&config_in(dir.path(), "[api]\nkeys = [\"k\"]\n")),
            None
        );
        assert_eq!(
            no_api_key_warning(&config_in(
                dir.path(),
                "[[api.key]]\nname = \"a\"\nsecret = \"k\"\nscopes = [\"read\"]\n"
            )),
            None
        );
    }
}
