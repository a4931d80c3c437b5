//! A real Envoy, configured by deploy/envoy/envoy.yaml with only its
//! addresses and descriptor path swapped for a test's, in front of the
//! test's services. Envoy comes from `DEVICELINK_ENVOY_BIN`, else `envoy` on
//! `PATH`; `deploy/gateway/install-tools.sh` installs the pinned one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use serde_json::Value;

use super::http::{Response, http, http_raw};
use crate::TestEnv;

/// The Envoy binary to run, or a failure that says how to get one.
fn envoy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("DEVICELINK_ENVOY_BIN").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "DEVICELINK_ENVOY_BIN is {}, which is not a file; run deploy/gateway/install-tools.sh",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("envoy"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Envoy not found: set DEVICELINK_ENVOY_BIN or put `envoy` on PATH. \
                 `source deploy/gateway/install-tools.sh` installs the pinned Envoy and sets it \
                 (deploy/local/test.sh does this)"
            )
        })
}

/// `text` with the single line holding `from` (trimmed) replaced by `to`,
/// kept at the same indentation. Fails unless exactly one line matches, so
/// an edit of envoy.yaml cannot silently send the test elsewhere.
fn replace_line(text: &str, from: &str, to: &str) -> String {
    replace_lines(text, from, to, 1)
}

/// [`replace_line`] for a line that appears exactly `expected` times.
fn replace_lines(text: &str, from: &str, to: &str, expected: usize) -> String {
    let matching = text.lines().filter(|line| line.trim() == from).count();
    assert_eq!(
        matching, expected,
        "deploy/envoy/envoy.yaml must hold exactly {expected} line(s) `{from}`"
    );
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.trim() == from {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(indent);
            out.push_str(to);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// deploy/envoy/envoy.yaml pointed at this test's services, descriptor and
/// loopback ports: both listeners and Envoy's admin interface on port 0,
/// the `registration-admin` cluster at registration's admin listener.
fn test_config(env: &TestEnv, descriptor: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/envoy/envoy.yaml");
    let config = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    let socket = |addr: SocketAddr| {
        format!(
            "socket_address: {{ address: {}, port_value: {} }}",
            addr.ip(),
            addr.port()
        )
    };
    let config = replace_line(
        &config,
        "socket_address: { address: 127.0.0.1, port_value: 9901 }",
        "socket_address: { address: 127.0.0.1, port_value: 0 }",
    );
    let config = replace_line(
        &config,
        "socket_address: { address: 0.0.0.0, port_value: 8080 }",
        "socket_address: { address: 127.0.0.1, port_value: 0 }",
    );
    let config = replace_line(
        &config,
        "socket_address: { address: authcode, port_value: 50051 }",
        &socket(env.authcode_addr),
    );
    let config = replace_line(
        &config,
        "socket_address: { address: 127.0.0.1, port_value: 8081 }",
        "socket_address: { address: 127.0.0.1, port_value: 0 }",
    );
    let config = replace_line(
        &config,
        "socket_address: { address: registration, port_value: 50052 }",
        &socket(env.registration_addrs[0]),
    );
    let config = replace_line(
        &config,
        "socket_address: { address: registration-admin, port_value: 50053 }",
        &socket(env.registration_admin_addrs[0]),
    );
    // One transcoder per listener, both over the same descriptor.
    replace_lines(
        &config,
        "proto_descriptor: /etc/envoy/devicelink.pb",
        &format!("proto_descriptor: {}", descriptor.display()),
        2,
    )
}

/// A running Envoy in front of a test's services. Dropping it kills Envoy
/// and removes its files.
pub struct Gateway {
    /// The public listener (`rest`): where REST requests go.
    pub addr: SocketAddr,
    /// The private listener (`admin`): AdminService, REST and gRPC.
    pub admin_addr: SocketAddr,
    dir: PathBuf,
    envoy: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    pub async fn start(env: &TestEnv) -> Self {
        let binary = envoy_binary();
        let dir = std::env::temp_dir().join(format!(
            "devicelink-envoy-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create Envoy's directory");
        let descriptor = dir.join("devicelink.pb");
        std::fs::write(&descriptor, devicelink_shared::pb::FILE_DESCRIPTOR_SET)
            .expect("write the descriptor set");
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, test_config(env, &descriptor)).expect("write Envoy's config");
        let admin_address_path = dir.join("admin-address");
        let log_path = dir.join("envoy.log");
        let log = std::fs::File::create(&log_path).expect("create Envoy's log");

        let mut envoy = Command::new(&binary)
            .arg("--config-path")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_address_path)
            // Several tests may run Envoys at once: no shared memory between
            // them.
            .arg("--disable-hot-restart")
            .args(["--concurrency", "1", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start Envoy ({}): {error}", binary.display()));

        let fail = |why: String| -> ! {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("Envoy is not ready: {why}\n--- Envoy's log ---\n{log}")
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut admin: Option<SocketAddr> = None;
        let mut last = String::from("no answer yet");
        let (addr, admin_addr) = loop {
            if Instant::now() > deadline {
                fail(format!("not ready after 30 s ({last})"));
            }
            if let Ok(Some(status)) = envoy.try_wait() {
                fail(format!("Envoy exited with {status}"));
            }
            if admin.is_none() {
                admin = std::fs::read_to_string(&admin_address_path)
                    .ok()
                    .and_then(|text| text.trim().parse().ok());
            }
            if let Some(admin) = admin {
                match http(admin, "GET", "/ready", None, None).await {
                    Ok(ready) if ready.status == 200 => {
                        // The listener's real port, from Envoy itself: no
                        // race for a port picked in advance.
                        let listeners = http(admin, "GET", "/listeners?format=json", None, None)
                            .await
                            .unwrap_or_else(|error| fail(format!("GET /listeners: {error}")));
                        let port = |name: &str| {
                            listeners.json()["listener_statuses"]
                                .as_array()
                                .and_then(|all| {
                                    all.iter().find(|l| l["name"] == name).and_then(|l| {
                                        l["local_address"]["socket_address"]["port_value"].as_u64()
                                    })
                                })
                                .and_then(|port| u16::try_from(port).ok())
                                .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
                                .unwrap_or_else(|| {
                                    fail(format!("no `{name}` listener in {}", listeners.text()))
                                })
                        };
                        break (port("rest"), port("admin"));
                    }
                    Ok(other) => last = format!("/ready answered {}", other.status),
                    Err(error) => last = error,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            addr,
            admin_addr,
            dir,
            envoy,
        }
    }

    /// What Envoy has logged so far (warnings and worse), and how it exited
    /// if it did: for a failing test's message.
    pub fn log(&mut self) -> String {
        let log = std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        match self.envoy.try_wait() {
            Ok(Some(status)) => format!("{log}\n(Envoy exited: {status})"),
            _ => log,
        }
    }

    /// An HTTP/1.1 call to the public listener.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        http(self.addr, method, path, token, body.as_ref())
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    }

    /// An HTTP/1.1 call to the private admin listener.
    pub async fn call_admin(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        http(self.admin_addr, method, path, token, body.as_ref())
            .await
            .unwrap_or_else(|error| panic!("admin listener: {method} {path}: {error}"))
    }

    /// `GET /v1/admin/apps/{app_id}` as the quickstart's operator: the
    /// app, as the gateway shows it.
    pub async fn admin_get_app(&self, app_id: &str) -> Value {
        self.call_admin(
            "GET",
            &format!("/v1/admin/apps/{app_id}"),
            Some(crate::ADMIN_TOKEN),
            None,
        )
        .await
        .ok()
    }

    /// [`Self::call`] with a body sent as given, JSON or not.
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Response {
        http_raw(self.addr, method, path, token, body)
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    }

    /// [`Self::call_admin`] with a body sent as given, JSON or not.
    pub async fn call_admin_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Response {
        http_raw(self.admin_addr, method, path, token, body)
            .await
            .unwrap_or_else(|error| panic!("admin listener: {method} {path}: {error}"))
    }
}

// ---------------------------------------------------------------------------
