//! Signed plugins: a detached minisign signature (`<library>.minisig`, Ed25519) beside each
//! plugin library, checked against the public keys `plugins.toml` trusts
//! (`[signatures] trusted_keys`), over the exact bytes the host is about to copy and map — the
//! bytes it read once, not the path, which can change underneath.
//!
//! Policy: with `require_signatures = true` an unsigned library is refused. A signature that is
//! present is always checked, required or not: a signature by an unknown key, a tampered byte,
//! or a signature made for another file is a refusal, never a silent fallback to "unsigned".
//! minisign's format is used so operators can sign with the `minisign` tool they may already
//! have (`minisign -S -s key -m libacme.so`) or with `gatehouse plugin sign`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use minisign_verify::{PublicKey, Signature};

/// The trusted keys and the policy, checked when `plugins.toml` is read.
#[derive(Clone, Default)]
pub struct SignaturePolicy {
    pub require_signatures: bool,
    trusted: Vec<TrustedKey>,
}

#[derive(Clone)]
struct TrustedKey {
    id: String,
    key: PublicKey,
}

/// How a library passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signed {
    /// No signature file, and none required.
    Unsigned,
    /// Signed by the trusted key with this id (minisign's key id, 16 hex digits).
    By { key_id: String },
}

/// Why a library was refused. The messages name the reason; the loader's error names the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unsigned, and signatures are required (expected {0})")]
    Missing(PathBuf),
    #[error("its signature file {path} is unreadable: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("signed by key {key_id}, which plugins.toml does not trust")]
    UntrustedKey { key_id: String },
    #[error(
        "the signature by key {key_id} does not match the file's bytes (tampered, or a signature made for another file)"
    )]
    Mismatch { key_id: String },
}

impl SignaturePolicy {
    /// A policy from `plugins.toml`'s keys (minisign public keys in base64, `RW…`). Returns the
    /// index and the reason of the first key that is not one.
    pub fn new(require_signatures: bool, keys: &[String]) -> Result<Self, (usize, String)> {
        let trusted = keys
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let text = text.trim();
                let key = PublicKey::from_base64(text)
                    .map_err(|error| (index, format!("not a minisign public key: {error}")))?;
                let id = key_id_of(text)
                    .ok_or_else(|| (index, "not a minisign public key".to_string()))?;
                Ok(TrustedKey { id, key })
            })
            .collect::<Result<Vec<_>, (usize, String)>>()?;
        Ok(Self {
            require_signatures,
            trusted,
        })
    }

    /// Requires a signature and trusts no key: nothing loads.
    pub fn refuse_all() -> Self {
        Self {
            require_signatures: true,
            trusted: Vec::new(),
        }
    }

    /// The signature file that belongs to `library`.
    pub fn signature_path(library: &Path) -> PathBuf {
        let mut name = library.as_os_str().to_os_string();
        name.push(".minisig");
        PathBuf::from(name)
    }

    /// Checks `bytes`, read from `library`, against its signature file.
    pub fn check(&self, library: &Path, bytes: &[u8]) -> Result<Signed, SignatureError> {
        let path = Self::signature_path(library);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return if self.require_signatures {
                    Err(SignatureError::Missing(path))
                } else {
                    Ok(Signed::Unsigned)
                };
            }
            Err(error) => {
                return Err(SignatureError::Unreadable {
                    path,
                    message: error.to_string(),
                });
            }
        };
        let unreadable = |message: String| SignatureError::Unreadable {
            path: path.clone(),
            message,
        };
        let signature = Signature::decode(&text)
            .map_err(|error| unreadable(format!("not a minisign signature: {error}")))?;
        // The key id sits in bytes 2..10 of the signature line (the second line).
        let key_id = text
            .lines()
            .nth(1)
            .and_then(|line| key_id_of(line.trim()))
            .ok_or_else(|| unreadable("not a minisign signature".into()))?;
        let Some(trusted) = self.trusted.iter().find(|trusted| trusted.id == key_id) else {
            return Err(SignatureError::UntrustedKey { key_id });
        };
        trusted
            .key
            .verify(bytes, &signature, false)
            .map_err(|_| SignatureError::Mismatch {
                key_id: key_id.clone(),
            })?;
        Ok(Signed::By { key_id })
    }
}

/// minisign's key id (as its tools print it: the 8 bytes after the 2-byte algorithm, read as a
/// little-endian number, in upper-case hex) of a base64 key or signature line.
fn key_id_of(base64_text: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_text)
        .ok()?;
    let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_minisign_keys_are_named() {
        assert_eq!(
            SignaturePolicy::new(true, &["RWQ not base64 !!".into()])
                .err()
                .map(|(index, _)| index),
            Some(0)
        );
        assert!(SignaturePolicy::new(false, &[]).is_ok());
    }

    #[test]
    fn unsigned_files_pass_only_when_signatures_are_optional() {
        let dir = tempfile::tempdir().expect("folder");
        let library = dir.path().join("libx.so");
        std::fs::write(&library, b"bytes").expect("write");
        let optional = SignaturePolicy::new(false, &[]).expect("policy");
        assert_eq!(optional.check(&library, b"bytes"), Ok(Signed::Unsigned));
        let required = SignaturePolicy::new(true, &[]).expect("policy");
        assert!(matches!(
            required.check(&library, b"bytes"),
            Err(SignatureError::Missing(_))
        ));
        // A signature file that is garbage is a refusal even when signatures are optional.
        std::fs::write(SignaturePolicy::signature_path(&library), "garbage\n").expect("write");
        assert!(matches!(
            optional.check(&library, b"bytes"),
            Err(SignatureError::Unreadable { .. })
        ));
    }
}
