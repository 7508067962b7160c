//! `gatehouse plugin new <name>`: a new provider plugin crate, copied from the template.
//!
//! The template's files (`plugins/template`) are compiled into the host, so an installed
//! `gatehouse` binary can create a plugin without the repository at hand. The copy renames what
//! names the template (crate, provider id, type, display name, example URL) and nothing else: the
//! result builds, passes its own tests and passes the conformance check as it stands, and the
//! author then replaces Template Pay's wire format with their provider's. The sources are then
//! formatted with rustfmt when it is installed, since renaming changes line lengths and the order
//! of imports.

use std::path::{Path, PathBuf};

/// The template's files, by path inside the crate.
pub const TEMPLATE_FILES: [(&str, &str); 6] = [
    (
        "Cargo.toml",
        include_str!("../../../plugins/template/Cargo.toml"),
    ),
    (
        "README.md",
        include_str!("../../../plugins/template/README.md"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../plugins/template/src/lib.rs"),
    ),
    (
        "src/account.rs",
        include_str!("../../../plugins/template/src/account.rs"),
    ),
    (
        "src/transformers.rs",
        include_str!("../../../plugins/template/src/transformers.rs"),
    ),
    (
        "src/tests.rs",
        include_str!("../../../plugins/template/src/tests.rs"),
    ),
];

/// Why a plugin could not be created. Nothing is left behind when creation fails.
#[derive(Debug, thiserror::Error)]
pub enum NewPluginError {
    #[error(
        "`{name}` cannot be a provider id: {reason} (use lower-case letters, digits, `-` and `_`, starting with a letter, as in `acme-pay`)"
    )]
    InvalidName { name: String, reason: &'static str },
    #[error("{path} exists already: choose another name or folder, or remove it first")]
    AlreadyExists { path: PathBuf },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// Creates the crate of a new plugin for provider `name` in `destination/<name>` and returns that
/// folder. In a Gatehouse checkout, `destination` is `plugins/`: the workspace picks the crate up
/// as `gatehouse-plugin-<name>`.
pub fn new_plugin(name: &str, destination: &Path) -> Result<PathBuf, NewPluginError> {
    check_name(name)?;
    let folder = destination.join(name);
    if folder.exists() {
        return Err(NewPluginError::AlreadyExists { path: folder });
    }
    let names = Names::new(name);
    let standalone = !inside_a_gatehouse_workspace(destination);
    let write = |relative: &str, text: &str| -> Result<(), NewPluginError> {
        let path = folder.join(relative);
        let write_error = |error: std::io::Error| NewPluginError::Write {
            path: path.clone(),
            message: error.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_error)?;
        }
        // What the template says of itself is not true of the new plugin.
        let mut text = names
            .apply(text)
            .replace(
                ", an imaginary JSON provider: the template new plugins start from",
                "",
            )
            .replace(", an imaginary JSON provider.", ".");
        if relative == "README.md" {
            text = describe_new_plugin(&text, name);
        }
        if standalone && relative == "Cargo.toml" {
            text = standalone_manifest(&text);
        }
        std::fs::write(&path, text).map_err(write_error)
    };
    for (relative, text) in TEMPLATE_FILES {
        if let Err(error) = write(relative, text) {
            let _ = std::fs::remove_dir_all(&folder);
            return Err(error);
        }
    }
    format_sources(&folder);
    Ok(folder)
}

/// Where the scaffolding binary was built from: a Gatehouse checkout, whose `plugin-api` a crate
/// made outside the workspace depends on by path.
const BUILT_FROM: &str = env!("CARGO_MANIFEST_DIR");

/// Whether `destination` lies in a Gatehouse workspace (an ancestor holds a `Cargo.toml` with a
/// `[workspace]` table and `plugin-api/`): there the new crate joins it (`plugins/*` is globbed)
/// and inherits its edition, license and dependencies.
pub fn inside_a_gatehouse_workspace(destination: &Path) -> bool {
    let start = std::fs::canonicalize(destination)
        .or_else(|_| std::env::current_dir().map(|current| current.join(destination)))
        .unwrap_or_else(|_| destination.to_path_buf());
    start.ancestors().any(|folder| {
        folder.join("plugin-api").join("Cargo.toml").is_file()
            && std::fs::read_to_string(folder.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.contains("[workspace]"))
    })
}

/// The template's manifest for a crate of its own: concrete edition, license and dependency
/// versions instead of the workspace's, `plugin-api` by path to the checkout this binary was
/// built from (by version when that checkout is gone), and an empty `[workspace]` so no parent
/// workspace claims it.
fn standalone_manifest(manifest: &str) -> String {
    let plugin_api = Path::new(BUILT_FROM).join("../../plugin-api");
    let plugin_api = std::fs::canonicalize(&plugin_api)
        .ok()
        .filter(|path| path.join("Cargo.toml").is_file())
        .map_or_else(
            || "version = \"0.1.0\"".to_string(),
            |path| {
                format!(
                    "version = \"0.1.0\", path = {:?}",
                    path.display().to_string()
                )
            },
        );
    let mut out = manifest
        .replace("edition.workspace = true", "edition = \"2024\"")
        .replace("license.workspace = true", "license = \"Apache-2.0\"")
        .replace("publish.workspace = true", "publish = false")
        .replace(
            "gatehouse-plugin-api.workspace = true",
            &format!("gatehouse-plugin-api = {{ {plugin_api} }}"),
        )
        .replace(
            "gatehouse-plugin-api = { workspace = true, features = [\"testkit\"] }",
            &format!("gatehouse-plugin-api = {{ {plugin_api}, features = [\"testkit\"] }}"),
        )
        .replace(
            "serde.workspace = true",
            "serde = { version = \"1\", features = [\"derive\"] }",
        )
        .replace("serde_json.workspace = true", "serde_json = \"1\"")
        .replace(
            "[lints]\nworkspace = true\n",
            "[lints.clippy]\nunwrap_used = \"warn\"\n",
        );
    out.push_str(
        "\n# A crate of its own, outside the Gatehouse workspace (`gatehouse plugin new` made it there).\n[workspace]\n",
    );
    out
}

/// The template's README, about the new plugin instead of the template: its first paragraph
/// (which says it is the template) becomes one that says what the crate is and what to do next.
fn describe_new_plugin(readme: &str, name: &str) -> String {
    let Some(start) = readme.find("It is the template new plugins") else {
        return readme.to_string();
    };
    let end = readme[start..]
        .find("\n\n")
        .map_or(readme.len(), |offset| start + offset);
    let description = format!(
        "It was created by `gatehouse plugin new {name}` from the Gatehouse plugin template: it\nbuilds, passes its tests and passes `gatehouse plugin check` as it stands, still speaking the\ntemplate's imaginary wire format. Replace the requests and answers in `src/transformers.rs` and\nthe flows in `src/lib.rs` with the provider's, keeping the shape (see `PLUGIN_GUIDE.md` in the\nGatehouse repository)."
    );
    format!("{}{description}{}", &readme[..start], &readme[end..])
}

/// Renaming changes the length of lines and the order of imports, which `cargo fmt --check`
/// notices; rustfmt (when installed) puts the new crate back in shape. Without it the crate still
/// builds, and the guide's next step, `cargo fmt`, does the same.
fn format_sources(folder: &Path) {
    // Formatting the crate root follows its `mod` declarations to every source file.
    let _ = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .arg(folder.join("src/lib.rs"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The provider-id rules of the manifest, plus a leading letter so the name also makes a Rust
/// type name (`acme-pay` → `AcmePayPlugin`) and a crate name.
fn check_name(name: &str) -> Result<(), NewPluginError> {
    let invalid = |reason| {
        Err(NewPluginError::InvalidName {
            name: name.chars().take(64).collect(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return invalid("it must be 1 to 64 characters long");
    }
    if !name.bytes().all(|byte| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
    }) {
        return invalid("it has a character other than a-z, 0-9, `-` and `_`");
    }
    if !name.starts_with(|first: char| first.is_ascii_lowercase()) {
        return invalid("it must start with a letter");
    }
    if name.ends_with(['-', '_']) || name.contains("--") || name.contains("__") {
        return invalid("`-` and `_` must separate words");
    }
    Ok(())
}

/// What the template calls itself, and what the new plugin is called instead.
struct Names {
    replacements: Vec<(&'static str, String)>,
}

impl Names {
    fn new(name: &str) -> Self {
        let words: Vec<String> = name
            .split(['-', '_'])
            .map(|word| {
                let mut characters = word.chars();
                characters
                    .next()
                    .map(|first| first.to_ascii_uppercase().to_string() + characters.as_str())
                    .unwrap_or_default()
            })
            .collect();
        let snake = name.replace('-', "_");
        let host_label = name.replace('_', "-");
        Self {
            // Longest first, so that no replacement eats part of a longer one.
            replacements: vec![
                (
                    "gatehouse-plugin-template",
                    format!("gatehouse-plugin-{name}"),
                ),
                (
                    "gatehouse_plugin_template",
                    format!("gatehouse_plugin_{snake}"),
                ),
                ("api.template.example", format!("api.{host_label}.example")),
                ("plugins/template", format!("plugins/{name}")),
                ("providers.template.", format!("providers.{name}.")),
                (
                    "TEMPLATE_API_KEY",
                    format!("{}_API_KEY", snake.to_ascii_uppercase()),
                ),
                ("TemplatePlugin", format!("{}Plugin", words.concat())),
                ("Template Pay", words.join(" ")),
                ("\"template\"", format!("\"{name}\"")),
            ],
        }
    }

    fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (from, to) in &self.replacements {
            out = out.replace(from, to);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What must not survive the renaming anywhere in the new crate.
    const TEMPLATE_NAMES: [&str; 9] = [
        "gatehouse-plugin-template",
        "gatehouse_plugin_template",
        "api.template.example",
        "plugins/template",
        "providers.template.",
        "TEMPLATE_API_KEY",
        "TemplatePlugin",
        "Template Pay",
        "\"template\"",
    ];

    fn read(folder: &Path, relative: &str) -> String {
        std::fs::read_to_string(folder.join(relative))
            .unwrap_or_else(|error| panic!("{relative}: {error}"))
    }

    #[test]
    fn creates_a_renamed_copy_of_the_template() {
        let destination = tempfile::tempdir().expect("temporary folder");
        let folder = new_plugin("acme-pay", destination.path()).expect("created");
        assert_eq!(folder, destination.path().join("acme-pay"));
        for (relative, _) in TEMPLATE_FILES {
            let text = read(&folder, relative);
            for name in TEMPLATE_NAMES {
                assert!(!text.contains(name), "{relative} still says {name}");
            }
            // The display name is never cut across lines, where the renaming would miss it.
            assert!(!text.contains("Template"), "{relative} still says Template");
        }
        let cargo = read(&folder, "Cargo.toml");
        assert!(
            cargo.contains("name = \"gatehouse-plugin-acme-pay\""),
            "{cargo}"
        );
        assert!(cargo.contains("version = \"0.1.0\""));
        assert!(cargo.contains("crate-type = [\"cdylib\", \"rlib\"]"));
        let lib = read(&folder, "src/lib.rs");
        assert!(lib.contains("pub const PROVIDER: &str = \"acme-pay\";"));
        assert!(lib.contains("pub struct AcmePayPlugin;"));
        assert!(lib.contains("export_plugin!(AcmePayPlugin);"));
        assert!(lib.contains("display_name: \"Acme Pay\".into()"));
        assert!(lib.contains("Some(\"https://api.acme-pay.example\".into())"));
        let tests = read(&folder, "src/tests.rs");
        assert!(
            tests.contains("use crate::{AcmePayPlugin, PROVIDER};"),
            "{tests}"
        );
        let readme = read(&folder, "README.md");
        assert!(readme.contains("# gatehouse-plugin-acme-pay"), "{readme}");
        assert!(
            readme.contains("[providers.acme-pay.accounts.main]"),
            "{readme}"
        );
        assert!(readme.contains("${ACME_PAY_API_KEY}"), "{readme}");
    }

    #[test]
    fn underscores_make_a_crate_name_and_a_host_name_that_work() {
        let destination = tempfile::tempdir().expect("temporary folder");
        let folder = new_plugin("mega_bank2", destination.path()).expect("created");
        let lib = read(&folder, "src/lib.rs");
        assert!(lib.contains("pub struct MegaBank2Plugin;"));
        assert!(lib.contains("https://api.mega-bank2.example"));
        assert!(read(&folder, "Cargo.toml").contains("name = \"gatehouse-plugin-mega_bank2\""));
    }

    #[test]
    fn refuses_names_that_cannot_be_provider_ids() {
        let destination = tempfile::tempdir().expect("temporary folder");
        for name in [
            "",
            "Acme",
            "acme pay",
            "9lives",
            "-acme",
            "acme-",
            "a--b",
            "acme/../x",
            &"a".repeat(65),
        ] {
            let error = new_plugin(name, destination.path()).expect_err(name);
            assert!(
                matches!(error, NewPluginError::InvalidName { .. }),
                "{name}: {error}"
            );
        }
        assert_eq!(
            std::fs::read_dir(destination.path()).expect("list").count(),
            0,
            "nothing written"
        );
    }

    #[test]
    fn never_overwrites() {
        let destination = tempfile::tempdir().expect("temporary folder");
        std::fs::create_dir(destination.path().join("acme")).expect("folder");
        std::fs::write(destination.path().join("acme/keep.txt"), "mine").expect("file");
        let error = new_plugin("acme", destination.path()).expect_err("exists");
        assert!(
            matches!(error, NewPluginError::AlreadyExists { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("exists already"));
        assert_eq!(read(&destination.path().join("acme"), "keep.txt"), "mine");
    }

    #[test]
    fn embedded_files_are_the_templates_files() {
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/template");
        for (relative, text) in TEMPLATE_FILES {
            assert_eq!(read(&template, relative), text, "{relative}");
        }
        // Every source file of the template is embedded: a new file there must be added here.
        let mut sources: Vec<String> = std::fs::read_dir(template.join("src"))
            .expect("template sources")
            .filter_map(Result::ok)
            .map(|entry| format!("src/{}", entry.file_name().to_string_lossy()))
            .collect();
        sources.sort();
        let mut embedded: Vec<&str> = TEMPLATE_FILES
            .iter()
            .map(|(relative, _)| *relative)
            .filter(|relative| relative.starts_with("src/"))
            .collect();
        embedded.sort_unstable();
        assert_eq!(sources, embedded);
    }
}
