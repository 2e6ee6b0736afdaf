//! HTTPS on the S3 listener: rustls (the aws-lc-rs provider the cloud
//! backends' HTTP client already links), HTTP/2 and HTTP/1.1 offered
//! through ALPN, the certificate chain and private key read from PEM files.
//!
//! Certificates are renewed on disk (certbot, cert-manager, a secret
//! mount): every handshake checks both files' modification times and
//! sizes (two `stat`s, nothing next to a handshake's cost) and loads them
//! anew when they changed, so the next connection gets the new
//! certificate without a restart. A pair that does not load (half written,
//! key and certificate that do not match) is logged once and the previous
//! one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// The PEM files of the listener's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// What identifies a version of a file on disk: inode, change time (set
/// by every write and rename, and not by `cp -p` or `touch`), modification
/// time and length. Any of them differing means "read it again".
type FileStamp = Option<(u64, i64, i64, Option<SystemTime>, u64)>;
type Stamp = [FileStamp; 2];

fn stamp(files: &TlsFiles) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let one = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| {
            (
                m.ino(),
                m.ctime(),
                m.ctime_nsec(),
                m.modified().ok(),
                m.len(),
            )
        })
    };
    [one(&files.cert_file), one(&files.key_file)]
}

/// Reads and checks the pair: a chain of at least one certificate, a key
/// the provider can sign with, and a key that belongs to the first
/// certificate.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| file_error(&files.cert_file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&files.cert_file, e))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert_file, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| file_error(&files.key_file, e))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(&files.key_file, e))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        file_error(
            &files.key_file,
            format!("does not match the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(certified))
}

/// The certificate served, reloaded when its files change.
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let now = stamp(&self.files);
        let mut current = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.0 != now {
            // Once per change, good or bad: a bad pair is not retried on
            // every handshake.
            current.0 = now;
            match load(&self.files, &self.provider) {
                Ok(key) => {
                    tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded");
                    current.1 = key;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed on disk but cannot be used; still serving the previous one");
                }
            }
        }
        Some(current.1.clone())
    }
}

/// The listener's TLS, ready to accept connections.
#[derive(Clone)]
pub struct Tls(pub(crate) TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Loads `files` (checked now: a gateway does not start with a
    /// certificate it cannot serve).
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        acceptor(files).map(Self)
    }
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let now = stamp(files);
    let key = load(files, &provider)?;
    let resolver = Reloading {
        files: files.clone(),
        provider: provider.clone(),
        current: Mutex::new((now, key)),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
