//! The rustls connector every Postgres connection is made with, checking
//! the server's certificate as far as `sslmode` asks.
//!
//! tokio-postgres-rustls verifies chain and host name, like any rustls
//! client. libpq's weaker modes are verifiers of their own here:
//! `verify-ca` checks the chain but accepts any host name (a certificate
//! issued for the cluster's internal name reached through a load balancer,
//! say); `require` and `prefer` check nothing, as libpq, and only encrypt.
//! The handshake's signatures are always checked, so that the certificate
//! shown is at least the peer's own.
//!
//! Trusted roots: the Mozilla bundle (`webpki-roots`, compiled in, so the
//! distroless image needs no CA store) plus the PEM file `sslrootcert`
//! names, which is where a managed database's CA (RDS, Azure, Cloud SQL)
//! or a private one goes.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::postgres_url::{PostgresUrl, Verification};

/// Why the connector could not be made: the CA file, mostly.
#[derive(Debug, thiserror::Error)]
pub enum PostgresTlsError {
    /// `sslrootcert` cannot be read or holds no certificate.
    #[error("sslrootcert {path}: {problem}")]
    RootCert {
        /// The file named.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the settings (it should not: they are fixed).
    #[error("cannot set up TLS")]
    Rustls(#[source] rustls::Error),
}

/// The connector for `url`'s TLS settings. Reads `sslrootcert`, so a
/// missing or unreadable CA file is reported at start-up, not at the first
/// connection.
pub fn connector(url: &PostgresUrl) -> Result<MakeRustlsConnect, PostgresTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &url.root_cert {
        for certificate in read_certificates(path)? {
            roots
                .add(certificate)
                .map_err(|error| root_cert_error(path, error))?;
        }
    }
    let chain_and_host_name =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|error| PostgresTlsError::Rustls(rustls::Error::General(error.to_string())))?;
    let verifier: Arc<dyn ServerCertVerifier> = match url.verification() {
        Verification::ChainAndHostName => chain_and_host_name,
        Verification::Chain => Arc::new(ChainOnly(chain_and_host_name)),
        Verification::None => Arc::new(Unverified(provider.clone())),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(PostgresTlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Every certificate in the PEM file at `path`; at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PostgresTlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| root_cert_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| root_cert_error(path, error))?;
    if certificates.is_empty() {
        return Err(root_cert_error(path, "no PEM certificate in it"));
    }
    Ok(certificates)
}

fn root_cert_error(path: &Path, problem: impl std::fmt::Display) -> PostgresTlsError {
    PostgresTlsError::RootCert {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name the
/// certificate was issued for does not matter. WebPKI checks the name last,
/// once the chain has passed, so a name mismatch is the one error to
/// forgive.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` and `prefer` without a CA: encrypted, not authenticated, as
/// libpq. The handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_refused_naming_it() {
        let missing = PostgresUrl::parse(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
        )
        .expect("parses");
        let error = connector(&missing).err().expect("refused");
        assert!(
            error
                .to_string()
                .starts_with("sslrootcert /nonexistent/ca.crt: "),
            "{error}"
        );

        let empty =
            std::env::temp_dir().join(format!("devicelink-empty-ca-{}", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let url = PostgresUrl::parse(&format!(
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ))
        .expect("parses");
        let error = connector(&url).err().expect("refused");
        let _ = std::fs::remove_file(&empty);
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
    }

    #[test]
    fn every_mode_without_a_ca_file_makes_a_connector() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let url =
                PostgresUrl::parse(&format!("postgres://u@h/db?sslmode={mode}")).expect("parses");
            assert!(connector(&url).is_ok(), "{mode}");
        }
    }
}
