//! The gRPC certificate rotates without a restart. The certificate and key
//! are published as Kubernetes mounts a Secret that cert-manager renews:
//! the files are symlinks through `..data`, which is swapped to a new
//! directory in one rename. New connections must get the new certificate
//! (read from the handshake itself), connections already open must keep
//! working, and a new pair that does not belong together must be refused
//! with an error log while the one in use is kept.
//!
//! This binary records every log line ([`recorded_logs`]), so it holds one
//! test only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use devicelink_e2e::logs::recorded_logs;
use devicelink_e2e::*;
use devicelink_shared::config::TlsFiles;
use devicelink_shared::tls_reload::RELOAD_INTERVAL;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// How long a new certificate may take to reach new connections: the
/// reload period and slack for a loaded machine.
const SERVED_WITHIN: Duration = RELOAD_INTERVAL.saturating_mul(4);

/// A certificate and its key, in PEM.
#[derive(Clone)]
struct Pair {
    certificate: Vec<u8>,
    key: Vec<u8>,
}

impl Pair {
    /// The certificate as a handshake presents it.
    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(&self.certificate).expect("a PEM certificate")
    }
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test CA in `dir`; returns its certificate.
fn make_ca(dir: &Path) -> Vec<u8> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=devicelink rotation CA",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext.cnf");
    std::fs::read(dir.join("ca.pem")).expect("read the CA")
}

/// A fresh `localhost` key and certificate signed by the CA in `dir`.
fn issue(dir: &Path, name: &str) -> Pair {
    let (key, csr, certificate) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &certificate,
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
    Pair {
        certificate: std::fs::read(dir.join(certificate)).expect("read the certificate"),
        key: std::fs::read(dir.join(key)).expect("read the key"),
    }
}

/// A directory laid out as the kubelet mounts a Secret: `tls.crt` and
/// `tls.key` link through `..data` to the current version's directory.
struct MountedSecret {
    dir: PathBuf,
    versions: u32,
}

impl MountedSecret {
    fn new(dir: PathBuf, first: &Pair) -> Self {
        std::fs::create_dir_all(&dir).expect("the secret's directory");
        let mut secret = Self { dir, versions: 0 };
        secret.publish(first);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), secret.dir.join(file))
                .expect("link the file through ..data");
        }
        secret
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert_path: self.dir.join("tls.crt"),
            key_path: self.dir.join("tls.key"),
        }
    }

    /// Writes `pair` into a new version's directory and points `..data` at
    /// it in one rename, as the kubelet does.
    fn publish(&mut self, pair: &Pair) {
        self.versions += 1;
        let version = format!("..version-{}", self.versions);
        let version_dir = self.dir.join(&version);
        std::fs::create_dir(&version_dir).expect("a version directory");
        std::fs::write(version_dir.join("tls.crt"), &pair.certificate).expect("write tls.crt");
        std::fs::write(version_dir.join("tls.key"), &pair.key).expect("write tls.key");
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).expect("stage the new ..data");
        std::fs::rename(&staged, self.dir.join("..data")).expect("swap ..data");
    }
}

/// A TLS client trusting only `ca`, speaking HTTP/2 as gRPC does.
fn connector(ca: &[u8]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca).expect("the CA in PEM"))
        .expect("trust the CA");
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A new TLS connection to `addr` and the certificate the server presented.
async fn handshake(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let stream = connector
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await
        .expect("a TLS handshake");
    let presented = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presents a certificate")
        .clone()
        .into_owned();
    (stream, presented)
}

/// An HTTP/2 connection over `stream`, for gRPC calls by hand.
async fn h2_over(stream: TlsStream<TcpStream>) -> h2::client::SendRequest<Bytes> {
    let (sender, connection) = h2::client::handshake(stream)
        .await
        .expect("an HTTP/2 connection");
    tokio::spawn(connection);
    sender
}

/// A gRPC health check over `sender`'s connection; `Ok` when it answered
/// with grpc-status 0.
async fn health_check(sender: &h2::client::SendRequest<Bytes>) -> Result<(), String> {
    let mut sender = sender.clone().ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::builder()
        .method("POST")
        .uri("https://localhost/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut body) = sender
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    // An empty HealthCheckRequest: uncompressed, zero bytes long.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .map_err(|e| e.to_string())?;
    let mut response = response.await.map_err(|e| e.to_string())?.into_body();
    while let Some(chunk) = response.data().await {
        chunk.map_err(|e| e.to_string())?;
    }
    let trailers = response
        .trailers()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no trailers")?;
    match trailers.get("grpc-status").map(|status| status.as_bytes()) {
        Some(b"0") => Ok(()),
        other => Err(format!("grpc-status {other:?}")),
    }
}

/// Waits until new connections to `addr` get `wanted`; returns how long
/// that took. Until then every connection must present `previous`.
async fn await_served(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
    previous: &CertificateDer<'static>,
    wanted: &CertificateDer<'static>,
) -> Duration {
    let started = Instant::now();
    loop {
        let (_, presented) = handshake(connector, addr).await;
        if presented == *wanted {
            return started.elapsed();
        }
        assert_eq!(
            presented, *previous,
            "{addr} presented a certificate that is neither the old nor the new one"
        );
        assert!(
            started.elapsed() < SERVED_WITHIN,
            "{addr} still presents the old certificate {SERVED_WITHIN:?} after the swap"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_reaches_new_connections_without_a_restart() {
    let logs = recorded_logs("info,h2=warn,hyper=warn,tower=warn,rustls=warn");
    let dir = std::env::temp_dir().join(format!(
        "devicelink-rotation-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let ca = make_ca(&dir);
    let (old, new) = (issue(&dir, "old"), issue(&dir, "new"));
    let mut secret = MountedSecret::new(dir.join("secret"), &old);
    let env = TestEnv::start_with(TestOptions {
        tls: Some(secret.files()),
        ..Default::default()
    })
    .await;
    let connector = connector(&ca);
    let listeners = [
        env.authcode_addr,
        env.registration_addrs[0],
        env.registration_admin_addrs[0],
    ];

    // A connection per listener made before the renewal, in use.
    let mut before = Vec::new();
    for addr in listeners {
        let (stream, presented) = handshake(&connector, addr).await;
        assert_eq!(presented, old.der(), "{addr} serves the first certificate");
        let sender = h2_over(stream).await;
        health_check(&sender)
            .await
            .unwrap_or_else(|error| panic!("{addr}: {error}"));
        before.push(sender);
    }

    secret.publish(&new);
    let mut slowest = Duration::ZERO;
    for addr in listeners {
        slowest = slowest.max(await_served(&connector, addr, &old.der(), &new.der()).await);
        let (stream, _) = handshake(&connector, addr).await;
        health_check(&h2_over(stream).await)
            .await
            .unwrap_or_else(|error| panic!("{addr} with the new certificate: {error}"));
    }
    // The connections made with the old certificate go on serving.
    for (addr, sender) in listeners.iter().zip(&before) {
        health_check(sender)
            .await
            .unwrap_or_else(|error| panic!("{addr}, the connection from before: {error}"));
    }

    // A pair that does not belong together (the old certificate with the
    // new key) is refused, and the new certificate stays.
    secret.publish(&Pair {
        certificate: old.certificate.clone(),
        key: new.key.clone(),
    });
    tokio::time::sleep(RELOAD_INTERVAL.saturating_mul(2) + Duration::from_millis(500)).await;
    for addr in listeners {
        let (stream, presented) = handshake(&connector, addr).await;
        assert_eq!(presented, new.der(), "{addr} kept the certificate in use");
        health_check(&h2_over(stream).await)
            .await
            .unwrap_or_else(|error| panic!("{addr} after a bad pair: {error}"));
    }
    let text = logs.text();
    assert!(
        text.contains("new TLS certificate and key refused"),
        "no error log for the bad pair"
    );
    assert!(
        !text.contains("BEGIN PRIVATE KEY") && !text.contains("BEGIN RSA PRIVATE KEY"),
        "a key in the logs"
    );
    println!("rotation figures: new connections got the renewed certificate within {slowest:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
