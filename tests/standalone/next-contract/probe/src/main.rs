//! A host of the next minor contract: the real loader (`gatehouse_core::loader::load_plugin`),
//! compiled against a plugin-api whose root module has one more function. It loads the files it
//! is given, in one process, and prints a line each:
//! `loaded <provider> <version>; next_contract_probe: <42|absent>`. A plugin built before the function existed must load and read as
//! `absent` (the host falls back to what every plugin has); a refusal prints the loader's reason
//! and makes the exit code 1.

use std::process::ExitCode;

fn main() -> ExitCode {
    let files: Vec<std::path::PathBuf> = std::env::args().skip(1).map(Into::into).collect();
    if files.is_empty() {
        eprintln!("usage: next-contract-host <plugin file>...");
        return ExitCode::from(2);
    }
    // The loader makes (and removes) a private copy folder of its own in here for each load.
    let copies = std::env::temp_dir();
    let mut refused = false;
    for file in &files {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(error) => {
                eprintln!("cannot read {}: {error}", file.display());
                return ExitCode::from(2);
            }
        };
        match gatehouse_core::loader::load_plugin(file, &bytes, &copies) {
            Ok(plugin) => {
                let probe = plugin
                    .module()
                    .next_contract_probe()
                    .map_or_else(|| "absent".to_string(), |function| function().to_string());
                println!(
                    "loaded {} {}; next_contract_probe: {probe}",
                    plugin.manifest.provider, plugin.manifest.plugin_version
                );
            }
            Err(error) => {
                println!("refused: {error}");
                refused = true;
            }
        }
    }
    if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
