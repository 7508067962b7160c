//! TLS on the listener: rustls with its safe defaults (TLS 1.2 and 1.3 only, its default cipher
//! suites), serving a certificate read from PEM files that is read again when the files change,
//! so a rotated certificate reaches new connections without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use gatehouse_core::config::TlsSettings;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate files are checked for a change.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why the certificate files cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the key in {key} does not belong to the certificate in {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// The certificate in force and the files it came from. Handshakes read the current one without
/// touching the disk; [`CertificateFiles::reload_if_changed`] swaps in a new one.
pub struct CertificateFiles {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// What the files looked like when last read (modification time, length, of both).
    seen: Mutex<FileStamps>,
}

type FileStamps = [(Option<SystemTime>, u64); 2];

impl std::fmt::Debug for CertificateFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateFiles")
            .field("cert_file", &self.settings.cert_file)
            .field("key_file", &self.settings.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertificateFiles {
    /// Reads the files once; an error here keeps `serve` from starting.
    pub fn load(settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = stamps(settings);
        let key = read_certified_key(settings, &provider)?;
        Ok(Arc::new(Self {
            settings: settings.clone(),
            provider,
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(seen),
        }))
    }

    /// The rustls configuration serving these files: rustls' safe defaults, HTTP/2 and
    /// HTTP/1.1 offered by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Invalid {
                path: self.settings.cert_file.clone(),
                message: error.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reads the files again if either changed since they were last read. A pair that cannot be
    /// served (half written, the key of another certificate) leaves the current certificate in
    /// force; the next change is tried again. Returns whether a new certificate is in force.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.settings);
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match read_certified_key(&self.settings, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(
                    cert_file = %self.settings.cert_file.display(),
                    "TLS certificate reloaded"
                );
                true
            }
            Err(error) => {
                tracing::warn!(%error, "TLS certificate files changed but cannot be served; the previous certificate stays in force");
                false
            }
        }
    }

    /// Checks the files every second for as long as the task runs.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let files = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RELOAD_CHECK_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let files = files.clone();
                // File reads stay off the async workers.
                let _ = tokio::task::spawn_blocking(move || files.reload_if_changed()).await;
            }
        })
    }
}

fn stamps(settings: &TlsSettings) -> FileStamps {
    let stamp = |path: &Path| match std::fs::metadata(path) {
        Ok(metadata) => (metadata.modified().ok(), metadata.len()),
        Err(_) => (None, 0),
    };
    [stamp(&settings.cert_file), stamp(&settings.key_file)]
}

fn read_certified_key(
    settings: &TlsSettings,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_text = read(&settings.cert_file)?;
    let key_text = read(&settings.key_file)?;
    let invalid = |path: &Path, message: String| TlsError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            invalid(
                &settings.cert_file,
                format!("not PEM certificates: {error}"),
            )
        })?;
    if chain.is_empty() {
        return Err(invalid(
            &settings.cert_file,
            "holds no certificate".to_string(),
        ));
    }
    // The key's own parse error is not repeated: it could quote key material.
    let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|_| {
        invalid(
            &settings.key_file,
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_string(),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| TlsError::Mismatch {
        cert: settings.cert_file.clone(),
        key: settings.key_file.clone(),
        message: error.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}
