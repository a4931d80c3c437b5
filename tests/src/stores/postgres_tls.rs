//! A Postgres of a test's own that speaks only TLS, with a CA and a server
//! certificate made at test time.
//!
//! `initdb` into a scratch directory, then `postgres` on a free loopback
//! port with `ssl=on`; `pg_hba.conf` admits TLS connections (with a
//! password) and rejects plaintext ones, so that a client that does not
//! negotiate TLS is refused as a managed database refuses it. Stopped, and
//! its files removed, when dropped. The binaries are Debian's
//! (`/usr/lib/postgresql/<version>/bin`), which `deploy/local/ensure-stores.sh`
//! installs.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::{ScratchDir, free_port, run, server_command};

/// The role the server is made with (its superuser), and its password.
pub const ROLE: &str = "devicelink";
const PASSWORD: &str = "devicelink";

/// The names the server's certificate is issued for.
pub const CERTIFICATE_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate authority made for one test.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

impl Authority {
    /// A new CA called `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).expect("a self-signed CA");
        Self {
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (host names or IP addresses) and
    /// its key, both PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("a server key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("server parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "devicelink test Postgres");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("a server certificate");
        (certificate.pem(), key.serialize_pem())
    }
}

/// A running TLS-only Postgres; stopped when dropped.
pub struct TlsPostgres {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
    /// The CA that issued the server's certificate, PEM, for `sslrootcert`.
    pub ca_file: PathBuf,
    /// A CA that issued nothing the server shows.
    pub unrelated_ca_file: PathBuf,
    // Last: removed once the server has stopped.
    dir: ScratchDir,
}

impl TlsPostgres {
    /// Makes and starts one; takes a few seconds.
    pub fn start() -> Self {
        let bindir = postgres_bindir();
        let dir = ScratchDir::new("pg-tls");
        let authority = Authority::new("devicelink test CA");
        let (certificate, key) = authority.issue(&CERTIFICATE_NAMES);
        let ca_file = dir.write_private("ca.crt", &authority.pem);
        let unrelated_ca_file =
            dir.write_private("unrelated-ca.crt", &Authority::new("someone else").pem);
        let cert_file = dir.write_private("server.crt", &certificate);
        let key_file = dir.write_private("server.key", &key);
        let password_file = dir.write_private("password", PASSWORD);
        dir.hand_to_server_user();

        let data = dir.path().join("data");
        let mut initdb = server_command(&bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", ROLE, "-E", "UTF8", "--no-sync", "--auth-local=trust"])
            .arg(format!("--pwfile={}", password_file.display()));
        run(initdb, "initdb");
        // TLS with a password, or nothing: plaintext is rejected outright.
        let hba = "local all all trust\n\
                   hostssl all all 127.0.0.1/32 scram-sha-256\n\
                   hostnossl all all 127.0.0.1/32 reject\n";
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");

        let port = free_port();
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} \
             -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir = dir.path().display(),
            cert = cert_file.display(),
            key = key_file.display(),
        );
        let mut start = server_command(&bindir.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .args(["-w", "-t", "30", "-o", &options, "start"]);
        run(start, "starting the TLS Postgres");
        Self {
            bindir,
            data,
            port,
            ca_file,
            unrelated_ca_file,
            dir,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of database `postgres` as the superuser, with `query` (TLS
    /// settings, say) appended.
    pub fn url(&self, query: &str) -> String {
        format!(
            "postgres://{ROLE}:{PASSWORD}@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }

    /// [`Self::url`] with `sslmode=verify-full` and the server's CA.
    pub fn verify_full_url(&self) -> String {
        self.url(&format!(
            "sslmode=verify-full&sslrootcert={}",
            self.ca_file.display()
        ))
    }

    /// The server's log so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let mut stop = server_command(&self.bindir.join("pg_ctl"));
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}

/// The newest Postgres's binaries: Debian's versioned directory, else
/// where `pg_config` says.
pub fn postgres_bindir() -> PathBuf {
    let debian = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(debian)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bindir = entry.path().join("bin");
            bindir.join("initdb").exists().then_some((version, bindir))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bindir)| bindir);
    if let Some(bindir) = newest {
        return bindir;
    }
    let output = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("Postgres server binaries (run deploy/local/test.sh, which installs them)");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}
