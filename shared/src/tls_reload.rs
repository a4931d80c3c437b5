//! The gRPC listeners' TLS certificate, reloaded when its files change.
//!
//! In Kubernetes the certificate and key come from a Secret that
//! cert-manager renews in place: the kubelet writes the new pair into a
//! fresh directory and swaps the `..data` symlink the mounted files point
//! through, so both change at once and the paths stay the same. tonic's own
//! TLS settings are fixed when the server is built, so the listeners do
//! their handshakes themselves ([`crate::tls_incoming`]) with a rustls
//! configuration whose certificate comes from [`ReloadingCertificate`]:
//! every [`RELOAD_INTERVAL`] it reads both files, and when their content
//! changed and makes a usable pair, new connections get the new
//! certificate. Connections already open keep the session they have.
//!
//! Polling, not file notifications: two small reads every few seconds cost
//! nothing, need no extra crate, and see a symlink swap, an in-place
//! rewrite and a bind-mounted file alike. A pair that does not load (a key
//! that does not match the certificate, a file half written, a file gone)
//! is refused with an error log and the certificate in use is kept; the
//! same content is not reported again until it changes.

use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::{TLS_CERT_FILE, TLS_KEY_FILE, TlsFiles};
use crate::serve::TlsSetupError;

/// How often the certificate and key files are read for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// The ALPN protocol gRPC speaks over TLS.
const ALPN_H2: &[u8] = b"h2";

/// TLS for the gRPC listeners, with a certificate that follows its files.
/// Cheap to clone; every clone serves the same, current certificate.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks the certificate and key in `files` now, so that an
    /// unusable pair stops the service at start-up, and watches the files
    /// from then on (on the current tokio runtime, for as long as a clone
    /// of the returned value lives).
    pub fn load(files: &TlsFiles) -> Result<Self, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (certificate, key) = read_pair(files)?;
        let loaded = certified_key(&certificate, &key, &provider)
            .map_err(|cause| TlsSetupError::Invalid(cause.into()))?;
        let resolver = Arc::new(ReloadingCertificate {
            files: files.clone(),
            provider: provider.clone(),
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(Seen {
                digest: digest(&certificate, &key),
                read_error: None,
            }),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|cause| TlsSetupError::Invalid(cause.into()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watch_files(Arc::downgrade(&resolver)));
        }
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// An acceptor for one connection's handshake, with the certificate
    /// current when the client says hello.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

/// The certificate and key files' content as last read.
struct Seen {
    /// SHA-256 of both files: a change is noticed without keeping a copy
    /// of the private key around.
    digest: [u8; 32],
    /// The last failure to read the files, reported once.
    read_error: Option<String>,
}

/// Hands every handshake the current certificate; replaced by
/// [`Self::reload_if_changed`].
struct ReloadingCertificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl ReloadingCertificate {
    /// Reads the files; when their content changed, serves them if they
    /// make a usable pair, or says why not and keeps the current one.
    fn reload_if_changed(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (certificate, key) = match read_pair(&self.files) {
            Ok(pair) => pair,
            Err(error) => {
                let error = crate::status::error_chain(&error);
                if seen.read_error.as_ref() != Some(&error) {
                    tracing::error!(%error, "cannot read the new TLS certificate; still serving the previous one");
                    seen.read_error = Some(error);
                }
                return;
            }
        };
        seen.read_error = None;
        let digest = digest(&certificate, &key);
        if digest == seen.digest {
            return;
        }
        seen.digest = digest;
        match certified_key(&certificate, &key, &self.provider) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
                tracing::info!(
                    cert = %self.files.cert_path.display(),
                    "TLS certificate reloaded; new connections get it"
                );
            }
            Err(error) => tracing::error!(
                cert = %self.files.cert_path.display(),
                key = %self.files.key_path.display(),
                %error,
                "new TLS certificate and key refused; still serving the previous ones"
            ),
        }
    }
}

/// Reloads `resolver`'s certificate every [`RELOAD_INTERVAL`] until the
/// servers using it are gone.
async fn watch_files(resolver: Weak<ReloadingCertificate>) {
    loop {
        tokio::time::sleep(RELOAD_INTERVAL).await;
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        // Two small files, but blocking reads all the same.
        let reloaded = tokio::task::spawn_blocking(move || resolver.reload_if_changed()).await;
        if reloaded.is_err() {
            tracing::error!("the TLS certificate reload failed; retrying");
        }
    }
}

/// The certificate chain's and key's files, as bytes.
fn read_pair(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), TlsSetupError> {
    let read = |variable: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| TlsSetupError::Read {
            variable,
            path: path.to_owned(),
            source,
        })
    };
    Ok((
        read(TLS_CERT_FILE, &files.cert_path)?,
        read(TLS_KEY_FILE, &files.key_path)?,
    ))
}

fn digest(certificate: &[u8], key: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((certificate.len() as u64).to_be_bytes());
    hasher.update(certificate);
    hasher.update(key);
    hasher.finalize().into()
}

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The certificate file holds no PEM certificate.
    #[error("{TLS_CERT_FILE}: no PEM certificate")]
    NoCertificate,
    /// A PEM block does not parse.
    #[error("not PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refused the pair: an unsupported key, or a key that is not
    /// the certificate's.
    #[error("{TLS_CERT_FILE}, {TLS_KEY_FILE}: {0}")]
    Refused(#[from] rustls::Error),
}

/// The PEM `certificate` chain and `key` as rustls serves them, checked to
/// belong together.
fn certified_key(
    certificate: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, PairError> {
    let chain = CertificateDer::pem_slice_iter(certificate).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(PairError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key)?;
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}
