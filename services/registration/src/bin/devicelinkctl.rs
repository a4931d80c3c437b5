//! `devicelinkctl`: the operator's command line over `AdminService`.
//!
//! Every call carries the admin token as `authorization: Bearer <token>`;
//! the token itself is never printed. Output is for people and for scripts
//! alike: `create-app` prints only the app id, `create-key` prints the key
//! text alone on its first line, and other values come as `name: value`
//! lines. A failed call prints `error: <grpc code>: <message>` on stderr and
//! exits with 1; a wrong invocation exits with 64 (`EX_USAGE`).

// The crate root lives at the `[[bin]]` path in Cargo.toml; its modules sit
// beside it in `devicelinkctl/`, where `src/bin/*.rs` discovery leaves them be.
#[path = "devicelinkctl/args.rs"]
mod args;
#[path = "devicelinkctl/audit.rs"]
mod audit;
#[path = "devicelinkctl/output.rs"]
mod output;
#[path = "devicelinkctl/sdk_config.rs"]
mod sdk_config;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use devicelink_registration::config::DEVICELINK_ADMIN_TOKEN;
use devicelink_shared::config::EXIT_BAD_CONFIG;
use devicelink_shared::pb;
use devicelink_shared::pb::admin_service_client::AdminServiceClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::args::{Command, parse_args};
use crate::output::{
    app_report, code_name, key_table, limits_report, rfc3339, security_report, user_report,
};
use crate::sdk_config::read_sdk_config;

/// Where `AdminService` listens, when `--addr` is not given.
const ADMIN_ADDR: &str = "DEVICELINK_ADMIN_ADDR";
/// registration's private admin listener (`ADMIN_LISTEN_ADDR`) on this
/// host: in a cluster, reached through `kubectl port-forward`.
const DEFAULT_ADMIN_ADDR: &str = "http://127.0.0.1:50053";

const USAGE: &str = "\
devicelinkctl: manage devicelink apps, API keys, SDK configuration, rate
limits, security settings and users

usage: devicelinkctl [--addr URL] [--token TOKEN] <command> [args]

  --addr URL       registration's admin listener, ADMIN_LISTEN_ADDR (default:
                   $DEVICELINK_ADMIN_ADDR, else http://127.0.0.1:50053)
  --token TOKEN    your operator token (default: $DEVICELINK_ADMIN_TOKEN;
                   prefer the variable, which other users cannot see in `ps`)

commands:
  create-app NAME                     create an app; prints its id
  create-key APP_ID [--scope S]... [--ttl-days N]
                                      create an API key; prints the key (shown
                                      only this once), then key_id, expires_at
  list-keys APP_ID                    list an app's API keys, newest first
  revoke-key KEY_ID                   revoke an API key; prints revoked_at
  set-sdk-config APP_ID JSON|@FILE    replace the app's SDK configuration with
                                      a JSON object (@- reads standard input)
  get-app APP_ID                      show an app, its SDK configuration and
                                      its rate limits (own and effective)
  set-app-limits APP_ID [--mint-per-key R] [--mint-per-external-id R]
                 [--redeem-per-device R]
                                      replace the app's own rate limits; R is
                                      a rate like 50/s,burst=100, or off; a
                                      limit left out returns to the default
  set-app-security APP_ID --require-code-challenge on|off
                                      on: every code must be minted with a
                                      code_challenge (device-bound codes)
  get-user APP_ID EXTERNAL_ID         show a user and its installs
  delete-user APP_ID EXTERNAL_ID      erase a user, its installs and its links
  audit list [FILTER] [--limit N] [--cursor C]
                                      audit events, newest first, one a line
                                      (the id last); then `next_cursor: C`
                                      when older ones remain
  audit tail [FILTER] [--cursor C]    stream audit events as they settle
                                      (about 11 s after they happen), oldest
                                      first; resume with the last id seen
     FILTER: [--app APP_ID] [--user USER_ID] [--type T]... [--since TIME]
             [--until TIME], T a type such as code_redeemed, TIME RFC 3339
  help                                show this text

exit status: 0 done, 1 the call failed, 64 usage error
";

/// Writes the command's output. A reader that went away (`devicelinkctl
/// ... | head`) ends the command quietly with success, as it would any Unix
/// tool, instead of the panic `print!` gives; another write failure is an
/// error on standard error.
fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let Err(error) = std::io::stdout().lock().write_fmt(text) else {
        return;
    };
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write the output: {error}");
    std::process::exit(1);
}

/// `print!` through [`write_out`].
macro_rules! out {
    ($($arg:tt)*) => {
        write_out(format_args!($($arg)*))
    };
}

/// `println!` through [`write_out`].
macro_rules! outln {
    ($($arg:tt)*) => {
        write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Why the command did not complete.
enum Failure {
    /// The invocation was wrong; nothing was sent.
    Usage(String),
    /// The service (or the way to it) refused.
    Call(Status),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Self::Call(status)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}\n(see `devicelinkctl help`)");
            ExitCode::from(EXIT_BAD_CONFIG as u8)
        }
        Err(Failure::Call(status)) => {
            eprintln!("error: {}: {}", code_name(status.code()), status.message());
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Failure> {
    let args = std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Failure::Usage("arguments must be UTF-8".into()))?;
    let invocation = parse_args(&args).map_err(Failure::Usage)?;
    if invocation.command == Command::Help {
        out!("{USAGE}");
        return Ok(());
    }
    let token = invocation
        .token
        .filter(|token| !token.is_empty())
        .or_else(|| devicelink_shared::config::optional(DEVICELINK_ADMIN_TOKEN))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "no admin token: set {DEVICELINK_ADMIN_TOKEN} or pass --token"
            ))
        })?;
    let mut authorization: AsciiMetadataValue = format!("Bearer {token}")
        .parse()
        .map_err(|_| Failure::Usage("the admin token must be printable ASCII".into()))?;
    authorization.set_sensitive(true);
    let addr = invocation
        .addr
        .or_else(|| devicelink_shared::config::optional(ADMIN_ADDR))
        .unwrap_or_else(|| DEFAULT_ADMIN_ADDR.into());
    let addr = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(addr.clone())
        .map_err(|_| Failure::Usage(format!("{addr} is not a URL")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    // Lazy, so that a bad argument is reported before the network is touched.
    let client = AdminServiceClient::new(endpoint.connect_lazy());
    let mut admin = Admin {
        client,
        authorization,
    };
    admin
        .execute(invocation.command)
        .await
        .map_err(|failure| match failure {
            // tonic's message for a failed connection is terse ("tcp connect
            // error"); say where, and add the root cause (e.g. "Connection
            // refused") from the error's chain.
            Failure::Call(status) if status.code() == Code::Unavailable => {
                let mut root: Option<&dyn std::error::Error> = std::error::Error::source(&status);
                while let Some(cause) = root.and_then(std::error::Error::source) {
                    root = Some(cause);
                }
                let cause = root.map(|root| format!(": {root}")).unwrap_or_default();
                let message = format!("{addr}: {}{cause}", status.message());
                Failure::Call(Status::unavailable(message))
            }
            // The public listener does not serve AdminService.
            Failure::Call(status) if status.code() == Code::Unimplemented => {
                let message = format!(
                    "{addr} does not serve AdminService; point --addr at registration's admin listener (ADMIN_LISTEN_ADDR)"
                );
                Failure::Call(Status::unimplemented(message))
            }
            other => other,
        })
}

impl Admin {
    /// Prints events as the watch sends them, until it ends: an error (the
    /// service drained, Postgres failed) says where to resume.
    async fn tail_audit(
        &mut self,
        filter: Option<pb::AuditEventFilter>,
        cursor: String,
    ) -> Result<(), Failure> {
        let request = self.request(pb::WatchAuditEventsRequest { filter, cursor });
        let mut stream = self.client.watch_audit_events(request).await?.into_inner();
        let mut last = String::new();
        loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    if let Some(event) = &response.event {
                        outln!("{}", audit::event_line(event));
                    }
                    last = response.cursor;
                }
                Ok(None) => return Ok(()),
                Err(status) if !last.is_empty() => {
                    let message = format!("{} (resume with --cursor {last})", status.message());
                    return Err(Failure::Call(Status::new(status.code(), message)));
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
}

/// The client and the credential every request carries.
struct Admin {
    client: AdminServiceClient<Channel>,
    authorization: AsciiMetadataValue,
}

impl Admin {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    async fn execute(&mut self, command: Command) -> Result<(), Failure> {
        match command {
            Command::Help => out!("{USAGE}"),
            Command::CreateApp { name } => {
                let request = self.request(pb::CreateAppRequest { name });
                outln!(
                    "{}",
                    self.client.create_app(request).await?.into_inner().app_id
                );
            }
            Command::CreateKey {
                app_id,
                scopes,
                ttl_seconds,
            } => {
                let request = self.request(pb::CreateApiKeyRequest {
                    app_id,
                    scopes,
                    ttl_seconds,
                });
                let created = self.client.create_api_key(request).await?.into_inner();
                outln!("{}", created.api_key);
                outln!("key_id: {}", created.key_id);
                outln!("expires_at: {}", rfc3339(created.expires_at.as_ref()));
                if std::io::stdout().is_terminal() {
                    eprintln!("(store the key now: it cannot be shown again)");
                }
            }
            Command::ListKeys { app_id } => {
                let request = self.request(pb::ListApiKeysRequest { app_id });
                let listed = self.client.list_api_keys(request).await?.into_inner();
                out!("{}", key_table(&listed.api_keys));
            }
            Command::RevokeKey { key_id } => {
                let request = self.request(pb::RevokeApiKeyRequest { key_id });
                let revoked = self.client.revoke_api_key(request).await?.into_inner();
                outln!("revoked_at: {}", rfc3339(revoked.revoked_at.as_ref()));
            }
            Command::SetSdkConfig { app_id, config } => {
                let sdk_config = Some(read_sdk_config(&config).map_err(Failure::Usage)?);
                let request = self.request(pb::SetSdkConfigRequest { app_id, sdk_config });
                self.client.set_sdk_config(request).await?;
                outln!("stored");
            }
            Command::GetApp { app_id } => {
                let request = self.request(pb::GetAppRequest { app_id });
                let found = self.client.get_app(request).await?.into_inner();
                let app = found
                    .app
                    .ok_or_else(|| Status::internal("the response holds no app"))?;
                out!("{}", app_report(&app));
            }
            Command::SetAppLimits { app_id, limits } => {
                let request = self.request(pb::SetAppLimitsRequest {
                    app_id,
                    limits: Some(pb::AppLimits {
                        mint_per_key: limits.mint_per_key,
                        mint_per_external_id: limits.mint_per_external_id,
                        redeem_per_device: limits.redeem_per_device,
                    }),
                });
                let stored = self.client.set_app_limits(request).await?.into_inner();
                out!("{}", limits_report(&stored.limits.unwrap_or_default()));
            }
            Command::SetAppSecurity {
                app_id,
                require_code_challenge,
            } => {
                let request = self.request(pb::SetAppSecurityRequest {
                    app_id,
                    security: Some(pb::AppSecurity {
                        require_code_challenge,
                    }),
                });
                let stored = self.client.set_app_security(request).await?.into_inner();
                out!("{}", security_report(&stored.security.unwrap_or_default()));
            }
            Command::GetUser {
                app_id,
                external_id,
            } => {
                let request = self.request(pb::GetUserRequest {
                    app_id,
                    external_id,
                });
                let found = self.client.get_user(request).await?.into_inner();
                let user = found
                    .user
                    .ok_or_else(|| Status::internal("the response holds no user"))?;
                out!("{}", user_report(&user));
            }
            Command::DeleteUser {
                app_id,
                external_id,
            } => {
                let request = self.request(pb::DeleteUserRequest {
                    app_id,
                    external_id,
                });
                self.client.delete_user(request).await?;
                outln!("erased");
            }
            Command::Audit { tail, options } => {
                let filter = Some(audit::filter(&options).map_err(Failure::Usage)?);
                let cursor = options.cursor.clone().unwrap_or_default();
                if tail {
                    self.tail_audit(filter, cursor).await?;
                } else {
                    let page_size = audit::limit(&options).map_err(Failure::Usage)?;
                    let request = self.request(pb::ListAuditEventsRequest {
                        filter,
                        page_size,
                        cursor,
                    });
                    let page = self.client.list_audit_events(request).await?.into_inner();
                    for event in &page.events {
                        outln!("{}", audit::event_line(event));
                    }
                    if !page.next_cursor.is_empty() {
                        outln!("next_cursor: {}", page.next_cursor);
                    }
                }
            }
        }
        Ok(())
    }
}
