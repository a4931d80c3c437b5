//! Which Redis the services use and how they reach it: one server or a
//! cluster's seed nodes, TLS files, and a password kept out of the URL.
//!
//! Read from the environment by [`RedisSettings::from_env`], checked by
//! [`RedisSettings::validate`] (exit 64 naming the variable), and turned
//! into redis-rs clients by [`RedisSettings::clients`], which reads the
//! files: a file that is missing or holds no PEM is a start-up error naming
//! its variable, never a connection failure discovered at the first call.
//! No message here ever carries a password: URLs are never echoed.

use std::path::{Path, PathBuf};

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use redis::{RedisError, TlsCertificates};

use super::{CONNECT_TIMEOUT, REDIS_RESPONSE_TIMEOUT};
use crate::config::{
    ConfigError, REDIS_CA_FILE, REDIS_CLIENT_CERT_FILE, REDIS_CLIENT_KEY_FILE, REDIS_CLUSTER_URLS,
    REDIS_KEY_PREFIX, REDIS_PASSWORD_FILE, REDIS_URL, optional, required,
};

/// One Redis server, or the seed nodes of a Redis Cluster.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisServers {
    /// `REDIS_URL`.
    Single(String),
    /// `REDIS_CLUSTER_URLS`: any reachable node finds the others.
    Cluster(Vec<String>),
}

/// How to reach Redis. URLs and files may hold secrets: the `Debug` output
/// shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Which server(s).
    pub servers: RedisServers,
    /// `REDIS_CA_FILE`: the CA to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// `REDIS_CLIENT_CERT_FILE` and `REDIS_CLIENT_KEY_FILE`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `REDIS_PASSWORD_FILE`: replaces the URLs' password.
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers = match &self.servers {
            RedisServers::Single(_) => "single".to_owned(),
            RedisServers::Cluster(nodes) => format!("cluster of {} seed nodes", nodes.len()),
        };
        f.debug_struct("RedisSettings")
            .field("servers", &servers)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// The redis-rs client for [`RedisSettings`], nothing connected yet.
#[allow(
    clippy::large_enum_variant,
    reason = "made once at start-up and consumed at once"
)]
pub(super) enum RedisClient {
    Single(Client),
    Cluster(ClusterClient),
}

/// Why a Redis client could not be set up. Each message names the variable
/// to fix and never holds a URL or a password.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// A file named by a variable cannot be read.
    #[error("{variable}: cannot read {}", .path.display())]
    Read {
        /// The variable naming the file.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is read but is not what the variable asks for.
    #[error("{variable}: {} {problem}", .path.display())]
    Invalid {
        /// The variable naming the file.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// redis-rs refused the URL or the TLS material.
    #[error("{variable}: not usable by the Redis client")]
    Client {
        /// The variable at fault.
        variable: &'static str,
        /// What redis-rs said (it names no password).
        #[source]
        source: RedisError,
    },
}

impl RedisSettings {
    /// One server at `url`, with the system's roots for `rediss://`: for
    /// tests and tools.
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            servers: RedisServers::Single(url.into()),
            ca_file: None,
            client_cert: None,
            password_file: None,
        }
    }

    /// `REDIS_CLUSTER_URLS` when set, else `REDIS_URL` (then required), and
    /// the TLS and password files.
    pub fn from_env() -> Result<Self, ConfigError> {
        let servers = match optional(REDIS_CLUSTER_URLS) {
            Some(list) => RedisServers::Cluster(
                list.split(',')
                    .map(str::trim)
                    .filter(|node| !node.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            None => RedisServers::Single(required(REDIS_URL)?),
        };
        let client_cert = match (
            optional(REDIS_CLIENT_CERT_FILE),
            optional(REDIS_CLIENT_KEY_FILE),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    REDIS_CLIENT_KEY_FILE,
                    "must be set with REDIS_CLIENT_CERT_FILE",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    REDIS_CLIENT_CERT_FILE,
                    "must be set with REDIS_CLIENT_KEY_FILE",
                ));
            }
        };
        Ok(Self {
            servers,
            ca_file: optional(REDIS_CA_FILE).map(PathBuf::from),
            client_cert,
            password_file: optional(REDIS_PASSWORD_FILE).map(PathBuf::from),
        })
    }

    /// The variable the server URL(s) came from.
    pub fn url_variable(&self) -> &'static str {
        match self.servers {
            RedisServers::Single(_) => REDIS_URL,
            RedisServers::Cluster(_) => REDIS_CLUSTER_URLS,
        }
    }

    /// Checks what can be checked without reading files: the URLs parse,
    /// TLS files come with `rediss://` URLs, and (for a cluster) the key
    /// prefix leaves the keys' hash tags alone.
    pub fn validate(&self, key_prefix: &str) -> Result<(), ConfigError> {
        let variable = self.url_variable();
        let infos = self
            .connection_infos()
            .map_err(|_| ConfigError::new(variable, "is not a Redis connection URL"))?;
        if infos.is_empty() {
            return Err(ConfigError::new(variable, "names no Redis node"));
        }
        let tls = infos.iter().filter(|info| is_tls(info)).count();
        if tls != 0 && tls != infos.len() {
            return Err(ConfigError::new(
                variable,
                "mixes redis:// and rediss:// nodes",
            ));
        }
        if tls == 0 {
            let tls_files = [
                (REDIS_CA_FILE, self.ca_file.is_some()),
                (REDIS_CLIENT_CERT_FILE, self.client_cert.is_some()),
            ];
            if let Some((file_variable, _)) = tls_files.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(
                    file_variable,
                    format!("is set but {variable} is not a rediss:// (TLS) URL"),
                ));
            }
        }
        if matches!(self.servers, RedisServers::Cluster(_)) && key_prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                REDIS_KEY_PREFIX,
                "must not contain { or } with a Redis Cluster: keys carry their own hash tags",
            ));
        }
        Ok(())
    }

    /// Whether the servers form a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.servers, RedisServers::Cluster(_))
    }

    fn connection_infos(&self) -> Result<Vec<ConnectionInfo>, RedisError> {
        match &self.servers {
            RedisServers::Single(url) => Ok(vec![url.as_str().into_connection_info()?]),
            RedisServers::Cluster(nodes) => nodes
                .iter()
                .map(|node| node.as_str().into_connection_info())
                .collect(),
        }
    }

    /// The client, its files read; nothing connects yet.
    pub(super) fn client(&self) -> Result<RedisClient, RedisSetupError> {
        let variable = self.url_variable();
        let client_error = |source| RedisSetupError::Client { variable, source };
        let password = self
            .password_file
            .as_deref()
            .map(read_password)
            .transpose()?;
        let infos = self
            .connection_infos()
            .map_err(client_error)?
            .into_iter()
            .map(|info| match &password {
                Some(password) => {
                    let redis = info.redis_settings().clone().set_password(password);
                    info.set_redis_settings(redis)
                }
                None => info,
            })
            .collect::<Vec<_>>();
        let certificates = self.certificates()?;
        match &self.servers {
            RedisServers::Single(_) => {
                let info = infos.into_iter().next().ok_or_else(|| {
                    client_error(RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "no URL",
                    )))
                })?;
                let client = match certificates {
                    Some(certificates) if is_tls(&info) => {
                        Client::build_with_tls(info, certificates)
                    }
                    _ => Client::open(info),
                };
                client.map(RedisClient::Single).map_err(client_error)
            }
            RedisServers::Cluster(_) => {
                let mut builder = ClusterClientBuilder::new(infos)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(REDIS_RESPONSE_TIMEOUT)
                    // Reads go to masters (the default routing): a replica
                    // may not have a fresh code yet, or still hold a
                    // redeemed one.
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(50)
                    .max_retry_wait(250);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                builder
                    .build()
                    .map(RedisClient::Cluster)
                    .map_err(client_error)
            }
        }
    }

    /// The CA and client certificate, read and checked; `None` for the
    /// system's roots and no client certificate.
    fn certificates(&self) -> Result<Option<TlsCertificates>, RedisSetupError> {
        let root_cert = self
            .ca_file
            .as_deref()
            .map(|path| read_pem(REDIS_CA_FILE, path, "CERTIFICATE"))
            .transpose()?;
        let client_tls = self
            .client_cert
            .as_ref()
            .map(|(cert, key)| {
                Ok::<_, RedisSetupError>(ClientTlsConfig {
                    client_cert: read_pem(REDIS_CLIENT_CERT_FILE, cert, "CERTIFICATE")?,
                    client_key: read_pem(REDIS_CLIENT_KEY_FILE, key, "PRIVATE KEY")?,
                })
            })
            .transpose()?;
        if root_cert.is_none() && client_tls.is_none() {
            return Ok(None);
        }
        let certificates = TlsCertificates {
            client_tls,
            root_cert,
        };
        // redis-rs parses the PEM when a TLS client is built: try it now,
        // on a placeholder address, so that a bad file is reported as its
        // variable.
        Client::build_with_tls("rediss://localhost", certificates.clone()).map_err(|source| {
            RedisSetupError::Client {
                variable: if certificates.client_tls.is_some() {
                    REDIS_CLIENT_CERT_FILE
                } else {
                    REDIS_CA_FILE
                },
                source,
            }
        })?;
        Ok(Some(certificates))
    }
}

/// How often the cluster client retries a command (following MOVED, ASK or
/// a failed node) before failing it; each call stays bounded by
/// [`super::STORE_TIMEOUT`] whatever the count.
const CLUSTER_RETRIES: u32 = 6;

fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

/// The file's bytes, refused unless it holds a PEM block of `kind`
/// (`CERTIFICATE`, or any `… PRIVATE KEY`): redis-rs would otherwise accept
/// an empty CA file and fail every connection later.
fn read_pem(variable: &'static str, path: &Path, kind: &str) -> Result<Vec<u8>, RedisSetupError> {
    let bytes = std::fs::read(path).map_err(|source| RedisSetupError::Read {
        variable,
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let holds_kind = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.contains(kind));
    if !holds_kind {
        return Err(RedisSetupError::Invalid {
            variable,
            path: path.to_owned(),
            problem: if kind == "CERTIFICATE" {
                "holds no PEM certificate"
            } else {
                "holds no PEM private key"
            },
        });
    }
    Ok(bytes)
}

/// The password in `path` (a mounted Secret), without its final newline.
fn read_password(path: &Path) -> Result<String, RedisSetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| RedisSetupError::Read {
        variable: REDIS_PASSWORD_FILE,
        path: path.to_owned(),
        source,
    })?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(RedisSetupError::Invalid {
            variable: REDIS_PASSWORD_FILE,
            path: path.to_owned(),
            problem: "is empty",
        });
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nodes: &[&str]) -> RedisSettings {
        RedisSettings {
            servers: RedisServers::Cluster(nodes.iter().map(|node| (*node).to_owned()).collect()),
            ..RedisSettings::single("")
        }
    }

    #[test]
    fn urls_are_checked_and_never_echoed() {
        let bad = RedisSettings::single("http://user:hunter2@host");
        let error = bad.validate("p:").expect_err("not a Redis URL");
        assert_eq!(error.variable, REDIS_URL);
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error = cluster(&["redis://a:7000", "nope://b"])
            .validate("p:")
            .expect_err("one bad node");
        assert_eq!(error.variable, REDIS_CLUSTER_URLS);
        assert!(
            RedisSettings::single("rediss://app:pw@host:6380/2")
                .validate("p:")
                .is_ok()
        );
    }

    #[test]
    fn tls_files_need_a_tls_url_and_nodes_agree() {
        let mut settings = RedisSettings::single("redis://host:6379");
        settings.ca_file = Some("/ca.pem".into());
        let error = settings.validate("p:").expect_err("CA without TLS");
        assert_eq!(error.variable, REDIS_CA_FILE);
        let error = cluster(&["redis://a:7000", "rediss://b:7001"])
            .validate("p:")
            .expect_err("mixed");
        assert_eq!(error.variable, REDIS_CLUSTER_URLS);
    }

    #[test]
    fn a_cluster_refuses_a_prefix_that_would_move_the_hash_tags() {
        let settings = cluster(&["redis://a:7000"]);
        assert!(settings.validate("devicelink:").is_ok());
        let error = settings.validate("{dl}:").expect_err("braces");
        assert_eq!(error.variable, REDIS_KEY_PREFIX);
    }

    #[test]
    fn missing_or_empty_files_name_their_variable() {
        let dir = std::env::temp_dir().join(format!("dl-redis-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let mut settings = RedisSettings::single("rediss://host:6380");
        settings.ca_file = Some(dir.join("missing.pem"));
        let error = settings.client().err().expect("missing CA");
        assert!(error.to_string().starts_with("REDIS_CA_FILE: "), "{error}");
        settings.ca_file = Some(empty.clone());
        let error = settings.client().err().expect("empty CA");
        assert!(error.to_string().starts_with("REDIS_CA_FILE: "), "{error}");
        settings.ca_file = None;
        settings.password_file = Some(empty);
        let error = settings.client().err().expect("empty password");
        assert!(
            error.to_string().starts_with("REDIS_PASSWORD_FILE: "),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
