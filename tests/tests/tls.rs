//! Optional TLS: with a certificate and key, both services speak only TLS.

use std::path::Path;
use std::process::Command;

use devicelink_e2e::*;
use devicelink_shared::config::TlsFiles;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A CA and a `localhost` certificate it signed, made with the `openssl`
/// command in `dir`; returns the server's files and the CA certificate.
fn make_certificates(dir: &Path) -> (TlsFiles, Vec<u8>) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            status.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    run(&[
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
        "/CN=devicelink test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    let files = TlsFiles {
        cert_path: dir.join("server.pem"),
        key_path: dir.join("server.key"),
    };
    (
        files,
        std::fs::read(dir.join("ca.pem")).expect("read the CA"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_serve_tls_with_the_configured_certificate() {
    let dir =
        std::env::temp_dir().join(format!("devicelink-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let (files, ca) = make_certificates(&dir);
    let env = TestEnv::start_with(TestOptions {
        tls: Some(files),
        ..Default::default()
    })
    .await;

    for addr in [env.authcode_addr, env.registration_addrs[0]] {
        let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .expect("a URI")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&ca))
                    .domain_name("localhost"),
            )
            .expect("client TLS")
            .connect()
            .await
            .expect("a TLS connection");
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .expect("a health check over TLS");

        let plaintext = Channel::from_shared(format!("http://{addr}"))
            .expect("a URI")
            .connect()
            .await;
        if let Ok(channel) = plaintext {
            let refused = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await;
            assert!(refused.is_err(), "plaintext is refused");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
