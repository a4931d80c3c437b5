//! A `redis-server` over TLS only, with an ACL user, for one test.
//!
//! Its CA, server certificate (for `localhost` and `127.0.0.1`) and a
//! client certificate are generated at start with `rcgen`, along with a
//! second CA that signed nothing, for tests of a wrong CA. The server
//! listens on a free loopback port for TLS (`--port 0`: no plaintext), the
//! `default` user is off and one ACL user may run what devicelink runs.
//! Debian's redis-server 7.0 has TLS built in. The server and its files go
//! when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devicelink_shared::config::{RedisServers, RedisSettings};
use devicelink_shared::stores::RedisConnection;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// The ACL user the services log in as.
pub const REDIS_USER: &str = "devicelink-app";

/// The commands the services' ACL user needs (README, "Redis over TLS with
/// an ACL user").
pub const ACL_COMMANDS: &[&str] = &[
    "+get",
    "+set",
    "+del",
    "+exists",
    "+pttl",
    "+evalsha",
    "+eval",
    "+script|load",
    "+time",
    "+ping",
    "+wait",
    "+cluster|slots",
];

/// A running TLS Redis; dropping it stops the server and removes its files.
pub struct TlsRedis {
    child: Child,
    dir: PathBuf,
    port: u16,
    password: String,
}

/// The files of one test's certificates.
struct Certificates {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsRedis {
    /// Starts the server with `client_certificates` `yes` (a client must
    /// present a certificate signed by the CA) or `optional`.
    pub async fn start(client_certificates: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "devicelink-redis-tls-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let certificates = Certificates::generate(&dir);
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&certificates.server_cert)
            .arg("--tls-key-file")
            .arg(&certificates.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&certificates.ca)
            .args(["--tls-auth-clients", client_certificates])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--user", "default", "off"])
            // Exactly the commands the README's ACL names.
            .args(["--user", REDIS_USER, "on", &format!(">{password}"), "~*"])
            .args(ACL_COMMANDS)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let redis = Self {
            child,
            dir,
            port,
            password,
        };
        redis.wait_until_ready(&certificates).await;
        redis
    }

    /// `rediss://user:password@127.0.0.1:port/0`.
    pub fn url(&self) -> String {
        self.url_with_password(&self.password)
    }

    /// The URL with another password.
    pub fn url_with_password(&self, password: &str) -> String {
        format!("rediss://{REDIS_USER}:{password}@127.0.0.1:{}/0", self.port)
    }

    /// The ACL user's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The settings the services need: the URL, the test CA, the client
    /// certificate.
    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            servers: RedisServers::Single(self.url()),
            ca_file: Some(self.file("ca.pem")),
            client_cert: Some((self.file("client.pem"), self.file("client.key"))),
            password_file: None,
        }
    }

    /// The path of one of the generated files: `ca.pem`, `other-ca.pem`,
    /// `client.pem`, `client.key`, `server.pem`, `server.key`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file in the server's temporary directory holding `text`.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write a file");
        path
    }

    async fn wait_until_ready(&self, certificates: &Certificates) {
        let settings = RedisSettings {
            ca_file: Some(certificates.ca.clone()),
            client_cert: Some((
                certificates.client_cert.clone(),
                certificates.client_key.clone(),
            )),
            ..RedisSettings::single(self.url())
        };
        let redis = RedisConnection::connect(&settings).expect("valid settings");
        let started = Instant::now();
        while !redis.reachable().await {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the TLS redis-server on port {} does not answer",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Certificates {
    fn generate(dir: &Path) -> Self {
        let ca = certificate_authority("devicelink test CA");
        let other_ca = certificate_authority("a CA that signed nothing here");
        std::fs::write(dir.join("other-ca.pem"), other_ca.pem()).expect("write a CA");
        let (server_cert, server_key) = leaf(&ca, &["localhost", "127.0.0.1"]);
        let (client_cert, client_key) = leaf(&ca, &["devicelink-client"]);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a certificate file");
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA")
}

/// A certificate for `names` signed by `ca`: its PEM and its key's.
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    let key = KeyPair::generate().expect("a key");
    let certificate = params.signed_by(&key, &**ca).expect("a certificate");
    (certificate.pem(), key.serialize_pem())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
