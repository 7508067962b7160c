#![no_main]
//! The configuration parser (`plugins.toml`): any text parses or is refused with file:line; never
//! a panic. Secret references point at variables and files that do not exist.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) =
        gatehouse_core::Config::parse(text, std::path::Path::new("/nonexistent/fuzz/plugins.toml"))
    {
        let message = error.to_string();
        assert!(
            message.starts_with("/nonexistent/fuzz/plugins.toml"),
            "an error that does not name the file: {message}"
        );
    }
});
