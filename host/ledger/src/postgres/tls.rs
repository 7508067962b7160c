//! TLS to the database. A ledger with a CA file talks TLS only (`sslmode=require`) and checks the
//! server's certificate against that CA and the host name of the URL, through rustls like the
//! rest of the host (no OpenSSL); without one, the connection is plain TCP (or a Unix socket),
//! for a database on the same machine or a private network.

use std::path::Path;
use std::sync::Arc;

use postgres::config::SslMode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::LedgerError;

/// How every connection of a ledger is made: the pool's and the migration's.
pub(crate) type Connector = MakeRustlsConnect;

/// Sets `config`'s TLS mode and returns the connector that goes with it. With `ca_file`, TLS is
/// required and verified; without it, TLS is off (a connector with no roots, never used).
pub(crate) fn connector(
    config: &mut postgres::Config,
    ca_file: Option<&Path>,
    location: &str,
) -> Result<Connector, LedgerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| {
            LedgerError::Storage(format!("ledger {location}: TLS is unavailable: {error}"))
        })?;
    let Some(ca_file) = ca_file else {
        // A URL asking for TLS without a CA to check the server against is refused: TLS that
        // trusts any certificate proves nothing, and ignoring the ask would hide it.
        if config.get_ssl_mode() == SslMode::Require {
            return Err(LedgerError::Storage(format!(
                "ledger {location}: ledger.url asks for sslmode=require: give ledger.ca_file, \
                 the CA the database's certificate is checked against"
            )));
        }
        config.ssl_mode(SslMode::Disable);
        return Ok(MakeRustlsConnect::new(
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ));
    };
    let roots = read_roots(ca_file, location)?;
    config.ssl_mode(SslMode::Require);
    Ok(MakeRustlsConnect::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// The CA certificates of a PEM file; an unreadable file, or one without a certificate, is an
/// error naming the file.
fn read_roots(ca_file: &Path, location: &str) -> Result<rustls::RootCertStore, LedgerError> {
    let failed = |reason: String| {
        LedgerError::Storage(format!(
            "ledger {location}: ledger.ca_file {}: {reason}",
            ca_file.display()
        ))
    };
    let text = std::fs::read(ca_file).map_err(|error| failed(error.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&text) {
        let certificate =
            certificate.map_err(|error| failed(format!("not a PEM certificate: {error}")))?;
        roots
            .add(certificate)
            .map_err(|error| failed(format!("not a usable CA certificate: {error}")))?;
    }
    if roots.is_empty() {
        return Err(failed("holds no PEM certificate".into()));
    }
    Ok(roots)
}
