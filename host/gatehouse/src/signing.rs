//! `gatehouse plugin keygen` and `gatehouse plugin sign`: minisign keys and detached signatures
//! (`<library>.minisig`), compatible with the `minisign` tool, for the host's signature check
//! (`plugins.toml` `[signatures]`).
//!
//! The secret key is written unencrypted (mode 0600): keep it off the hosts, on the machine that
//! builds releases. Operators who want a password on it can use `minisign -G` and `minisign -S`
//! instead; the files are the same format.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use minisign::{KeyPair, SecretKey, SecretKeyBox};

/// Why a key could not be made or a file signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{path} exists already: choose another name or remove it first")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} is not a usable minisign secret key: {message}")]
    Key { path: PathBuf, message: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// What `keygen` made.
pub struct NewKey {
    pub public_key_file: PathBuf,
    pub secret_key_file: PathBuf,
    /// The public key's base64 line, as `[signatures] trusted_keys` takes it.
    pub public_key: String,
}

/// Makes a key pair: `<base>.pub` and `<base>.key` (0600).
pub fn keygen(base: &Path) -> Result<NewKey, SigningError> {
    let public_key_file = with_suffix(base, ".pub");
    let secret_key_file = with_suffix(base, ".key");
    for path in [&public_key_file, &secret_key_file] {
        if path.exists() {
            return Err(SigningError::Exists { path: path.clone() });
        }
    }
    let pair = KeyPair::generate_unencrypted_keypair()
        .map_err(|error| SigningError::Sign(error.to_string()))?;
    let public_box = pair
        .pk
        .to_box()
        .map_err(|error| SigningError::Sign(error.to_string()))?;
    let secret_box = pair
        .sk
        .to_box(Some("gatehouse plugin signing key"))
        .map_err(|error| SigningError::Sign(error.to_string()))?;
    write_new(&secret_key_file, secret_box.to_string().as_bytes(), 0o600)?;
    write_new(&public_key_file, public_box.to_string().as_bytes(), 0o644)?;
    Ok(NewKey {
        public_key_file,
        secret_key_file,
        public_key: pair.pk.to_base64(),
    })
}

/// Signs `library` with the secret key in `secret_key_file`; writes and returns
/// `<library>.minisig`. The trusted comment names the file, for the operator's eyes.
pub fn sign(library: &Path, secret_key_file: &Path) -> Result<PathBuf, SigningError> {
    let key_text =
        std::fs::read_to_string(secret_key_file).map_err(|error| SigningError::Read {
            path: secret_key_file.to_path_buf(),
            message: error.to_string(),
        })?;
    let key_error = |message: String| SigningError::Key {
        path: secret_key_file.to_path_buf(),
        message,
    };
    let secret_box =
        SecretKeyBox::from_string(&key_text).map_err(|error| key_error(error.to_string()))?;
    let secret = SecretKey::from_unencrypted_box(secret_box).map_err(|error| {
        key_error(format!(
            "{error} (an encrypted key: sign with `minisign -S -s KEY -m FILE` instead)"
        ))
    })?;
    let bytes = std::fs::read(library).map_err(|error| SigningError::Read {
        path: library.to_path_buf(),
        message: error.to_string(),
    })?;
    let name = library
        .file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    let signature = minisign::sign(
        None,
        &secret,
        std::io::Cursor::new(bytes),
        Some(&format!("file:{name}")),
        Some("signature from gatehouse plugin sign"),
    )
    .map_err(|error| SigningError::Sign(error.to_string()))?;
    let path = with_suffix(library, ".minisig");
    // Written whole under a temporary name, then renamed: a host scanning meanwhile never reads
    // half a signature.
    let temporary = with_suffix(library, ".minisig.tmp");
    std::fs::write(&temporary, signature.to_string()).map_err(|error| SigningError::Write {
        path: temporary.clone(),
        message: error.to_string(),
    })?;
    std::fs::rename(&temporary, &path).map_err(|error| SigningError::Write {
        path: path.clone(),
        message: error.to_string(),
    })?;
    Ok(path)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SigningError> {
    let write_error = |error: std::io::Error| SigningError::Write {
        path: path.to_path_buf(),
        message: error.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(write_error)?;
    file.write_all(bytes).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_file_verifies_with_the_host_check_and_a_changed_byte_does_not() {
        let dir = tempfile::tempdir().expect("folder");
        let key = keygen(&dir.path().join("release")).expect("keygen");
        assert!(matches!(
            keygen(&dir.path().join("release")),
            Err(SigningError::Exists { .. })
        ));
        let library = dir.path().join("libacme.so");
        std::fs::write(&library, b"pretend library bytes").expect("write");
        sign(&library, &key.secret_key_file).expect("sign");
        let policy = gatehouse_core::signature::SignaturePolicy::new(true, &[key.public_key])
            .expect("policy");
        assert!(matches!(
            policy.check(&library, b"pretend library bytes"),
            Ok(gatehouse_core::signature::Signed::By { .. })
        ));
        assert!(matches!(
            policy.check(&library, b"pretend library byteS"),
            Err(gatehouse_core::signature::SignatureError::Mismatch { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key.secret_key_file)
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
