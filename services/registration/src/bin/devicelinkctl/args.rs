//! The command line, read into a [`Command`] without touching the network.

/// What was asked on the command line. No `Debug`: it holds the token.
pub(crate) struct Invocation {
    pub(crate) addr: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) command: Command,
}

/// One admin operation with its operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Help,
    CreateApp {
        name: String,
    },
    CreateKey {
        app_id: String,
        scopes: Vec<String>,
        ttl_seconds: u64,
    },
    ListKeys {
        app_id: String,
    },
    RevokeKey {
        key_id: String,
    },
    /// `config` is the JSON text, or `@path`, or `@-` for standard input.
    SetSdkConfig {
        app_id: String,
        config: String,
    },
    GetUser {
        app_id: String,
        external_id: String,
    },
    DeleteUser {
        app_id: String,
        external_id: String,
    },
    GetApp {
        app_id: String,
    },
    /// A limit left out returns to the deployment's default.
    SetAppLimits {
        app_id: String,
        limits: LimitOptions,
    },
    SetAppSecurity {
        app_id: String,
        require_code_challenge: bool,
    },
    /// `audit list` or `audit tail`.
    Audit {
        tail: bool,
        options: AuditOptions,
    },
}

/// `audit`'s options: the filter and where to start, checked by the
/// service (which names the field it refuses), but for the numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AuditOptions {
    pub(crate) app_id: Option<String>,
    pub(crate) user_id: Option<String>,
    /// Type names as the proto spells them without their prefix
    /// (`code_redeemed`), or whole.
    pub(crate) types: Vec<String>,
    /// RFC 3339 times.
    pub(crate) since: Option<String>,
    pub(crate) until: Option<String>,
    pub(crate) cursor: Option<String>,
    pub(crate) limit: Option<String>,
}

impl AuditOptions {
    fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// `set-app-limits`' options, each a rate as `RATE_LIMIT_*` writes it or
/// `off`; checked by the service, which names the field it refuses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LimitOptions {
    pub(crate) mint_per_key: Option<String>,
    pub(crate) mint_per_external_id: Option<String>,
    pub(crate) redeem_per_device: Option<String>,
}

impl LimitOptions {
    fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// Reads `--addr`, `--token`, the command and its operands. Options may come
/// anywhere, as `--name value` or `--name=value`; after `--` all is operands.
pub(crate) fn parse_args(args: &[String]) -> Result<Invocation, String> {
    let (mut addr, mut token, mut scopes, mut ttl_days) = (None, None, Vec::new(), None);
    let mut limits = LimitOptions::default();
    let mut require_code_challenge = None;
    let mut audit = AuditOptions::default();
    let (mut help, mut operands) = (false, Vec::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            operands.extend(args.by_ref().cloned());
            break;
        }
        if arg == "-h" || arg == "--help" {
            help = true;
            continue;
        }
        let Some(option) = arg.strip_prefix("--") else {
            operands.push(arg.clone());
            continue;
        };
        let (name, inline_value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (option, None),
        };
        let value = inline_value
            .or_else(|| args.next().cloned())
            .ok_or_else(|| format!("--{name} needs a value"))?;
        match name {
            "addr" => addr = Some(value),
            "token" => token = Some(value),
            "scope" => scopes.push(value),
            "ttl-days" => ttl_days = Some(value),
            "mint-per-key" => limits.mint_per_key = Some(value),
            "mint-per-external-id" => limits.mint_per_external_id = Some(value),
            "redeem-per-device" => limits.redeem_per_device = Some(value),
            "require-code-challenge" => require_code_challenge = Some(value),
            "app" => audit.app_id = Some(value),
            "user" => audit.user_id = Some(value),
            "type" => audit.types.push(value),
            "since" => audit.since = Some(value),
            "until" => audit.until = Some(value),
            "cursor" => audit.cursor = Some(value),
            "limit" => audit.limit = Some(value),
            _ => return Err(format!("unknown option --{name}")),
        }
    }
    let command = match operands.split_first() {
        _ if help => Command::Help,
        None => return Err("no command given".into()),
        Some((name, rest)) => {
            if name != "create-key" && (!scopes.is_empty() || ttl_days.is_some()) {
                return Err("--scope and --ttl-days belong to create-key".into());
            }
            if name != "set-app-limits" && limits.any() {
                return Err(
                    "--mint-per-key, --mint-per-external-id and --redeem-per-device belong to set-app-limits"
                        .into(),
                );
            }
            if name != "audit" && audit.any() {
                return Err(
                    "--app, --user, --type, --since, --until, --cursor and --limit belong to audit"
                        .into(),
                );
            }
            if name != "set-app-security" && require_code_challenge.is_some() {
                return Err("--require-code-challenge belongs to set-app-security".into());
            }
            if name == "set-app-security" {
                set_app_security(rest, require_code_challenge.as_deref())?
            } else if name == "audit" {
                parse_audit(rest, audit)?
            } else {
                parse_command(name, rest, scopes, ttl_days.as_deref(), limits)?
            }
        }
    };
    Ok(Invocation {
        addr,
        token,
        command,
    })
}

const SET_APP_SECURITY: &str = "set-app-security APP_ID --require-code-challenge on|off";

/// `set-app-security`, whose one switch is required.
fn set_app_security(rest: &[String], switch: Option<&str>) -> Result<Command, String> {
    let [app_id] = operands(rest, SET_APP_SECURITY)?;
    Ok(Command::SetAppSecurity {
        app_id,
        require_code_challenge: on_or_off(switch)?,
    })
}

/// `on` or `off`, the value of a switch the command cannot do without.
fn on_or_off(value: Option<&str>) -> Result<bool, String> {
    match value {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => Err(format!("usage: {SET_APP_SECURITY}")),
    }
}

fn parse_command(
    name: &str,
    rest: &[String],
    scopes: Vec<String>,
    ttl_days: Option<&str>,
    limits: LimitOptions,
) -> Result<Command, String> {
    Ok(match name {
        "help" => Command::Help,
        "create-app" => {
            let [name] = operands(rest, "create-app NAME")?;
            Command::CreateApp { name }
        }
        "create-key" => {
            let [app_id] = operands(rest, "create-key APP_ID [--scope S]... [--ttl-days N]")?;
            let ttl_seconds = match ttl_days {
                None => 0, // the service's default, one year
                Some(days) => days
                    .parse::<u64>()
                    .ok()
                    .filter(|days| *days > 0)
                    .and_then(|days| days.checked_mul(86_400))
                    .ok_or_else(|| {
                        format!("--ttl-days wants a whole number of days, not {days:?}")
                    })?,
            };
            Command::CreateKey {
                app_id,
                scopes,
                ttl_seconds,
            }
        }
        "list-keys" => {
            let [app_id] = operands(rest, "list-keys APP_ID")?;
            Command::ListKeys { app_id }
        }
        "revoke-key" => {
            let [key_id] = operands(rest, "revoke-key KEY_ID")?;
            Command::RevokeKey { key_id }
        }
        "set-sdk-config" => {
            let [app_id, config] = operands(rest, "set-sdk-config APP_ID JSON|@FILE")?;
            Command::SetSdkConfig { app_id, config }
        }
        "get-user" => {
            let [app_id, external_id] = operands(rest, "get-user APP_ID EXTERNAL_ID")?;
            Command::GetUser {
                app_id,
                external_id,
            }
        }
        "delete-user" => {
            let [app_id, external_id] = operands(rest, "delete-user APP_ID EXTERNAL_ID")?;
            Command::DeleteUser {
                app_id,
                external_id,
            }
        }
        "get-app" => {
            let [app_id] = operands(rest, "get-app APP_ID")?;
            Command::GetApp { app_id }
        }
        "set-app-limits" => {
            let [app_id] = operands(
                rest,
                "set-app-limits APP_ID [--mint-per-key R] [--mint-per-external-id R] [--redeem-per-device R]",
            )?;
            Command::SetAppLimits { app_id, limits }
        }
        other => return Err(format!("unknown command {other:?}")),
    })
}

fn parse_audit(rest: &[String], options: AuditOptions) -> Result<Command, String> {
    let [subcommand] = operands(
        rest,
        "audit list|tail [--app APP_ID] [--user USER_ID] [--type T]... [--since TIME] [--until TIME] [--cursor C] [--limit N]",
    )?;
    let tail = match subcommand.as_str() {
        "list" => false,
        "tail" => true,
        other => return Err(format!("unknown audit command {other:?}: list or tail")),
    };
    if tail && options.limit.is_some() {
        return Err("--limit belongs to audit list".into());
    }
    Ok(Command::Audit { tail, options })
}

/// Exactly `N` operands, or the command's synopsis as the complaint.
fn operands<const N: usize>(rest: &[String], synopsis: &str) -> Result<[String; N], String> {
    <[String; N]>::try_from(rest.to_vec()).map_err(|_| format!("usage: devicelinkctl {synopsis}"))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, String> {
        parse_args(&args.iter().map(|arg| arg.to_string()).collect::<Vec<_>>())
    }

    fn command(args: &[&str]) -> Command {
        parse(args).unwrap().command
    }

    #[test]
    fn global_options_come_before_after_or_inline() {
        let invocation =
            parse(&["--addr", "http://h:1", "--token=t0k", "create-app", "demo"]).unwrap();
        assert_eq!(invocation.addr.as_deref(), Some("http://h:1"));
        assert_eq!(invocation.token.as_deref(), Some("t0k"));
        assert_eq!(
            invocation.command,
            Command::CreateApp {
                name: "demo".into()
            }
        );
        let invocation = parse(&["list-keys", "app", "--addr=http://h:2"]).unwrap();
        assert_eq!(invocation.addr.as_deref(), Some("http://h:2"));
        assert_eq!(invocation.token, None);
    }

    #[test]
    fn create_key_takes_scopes_and_days() {
        assert_eq!(
            command(&[
                "create-key",
                "app",
                "--scope",
                "user_link",
                "--scope=admin",
                "--ttl-days",
                "30"
            ]),
            Command::CreateKey {
                app_id: "app".into(),
                scopes: vec!["user_link".into(), "admin".into()],
                ttl_seconds: 30 * 86_400,
            }
        );
        assert_eq!(
            command(&["create-key", "app"]),
            Command::CreateKey {
                app_id: "app".into(),
                scopes: vec![],
                ttl_seconds: 0
            }
        );
        for days in ["0", "-1", "1.5", "ten", "999999999999999999"] {
            assert!(
                parse(&["create-key", "app", "--ttl-days", days]).is_err(),
                "{days}"
            );
        }
        assert!(parse(&["list-keys", "app", "--scope", "x"]).is_err());
    }

    #[test]
    fn each_command_wants_its_operands() {
        assert_eq!(
            command(&["revoke-key", "k1"]),
            Command::RevokeKey {
                key_id: "k1".into()
            }
        );
        assert_eq!(
            command(&["get-user", "app", "user-1"]),
            Command::GetUser {
                app_id: "app".into(),
                external_id: "user-1".into()
            }
        );
        assert_eq!(
            command(&["delete-user", "app", "--", "--odd-id"]),
            Command::DeleteUser {
                app_id: "app".into(),
                external_id: "--odd-id".into()
            }
        );
        assert_eq!(
            command(&["set-sdk-config", "app", "@cfg.json"]),
            Command::SetSdkConfig {
                app_id: "app".into(),
                config: "@cfg.json".into()
            }
        );
        for args in [
            &[][..],
            &["create-app"],
            &["create-app", "a", "b"],
            &["get-user", "app"],
            &["frobnicate"],
            &["create-app", "x", "--colour", "red"],
            &["create-app", "x", "--token"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn set_app_limits_takes_a_rate_per_scope() {
        assert_eq!(
            command(&[
                "set-app-limits",
                "app",
                "--mint-per-key",
                "50/s,burst=100",
                "--redeem-per-device=off"
            ]),
            Command::SetAppLimits {
                app_id: "app".into(),
                limits: LimitOptions {
                    mint_per_key: Some("50/s,burst=100".into()),
                    mint_per_external_id: None,
                    redeem_per_device: Some("off".into()),
                },
            }
        );
        assert_eq!(
            command(&["get-app", "app"]),
            Command::GetApp {
                app_id: "app".into()
            }
        );
        assert!(parse(&["get-app", "app", "--mint-per-key", "1/s"]).is_err());
    }

    #[test]
    fn set_app_security_takes_an_on_or_off_switch() {
        assert_eq!(
            command(&["set-app-security", "app", "--require-code-challenge", "on"]),
            Command::SetAppSecurity {
                app_id: "app".into(),
                require_code_challenge: true,
            }
        );
        assert_eq!(
            command(&["set-app-security", "app", "--require-code-challenge=off"]),
            Command::SetAppSecurity {
                app_id: "app".into(),
                require_code_challenge: false,
            }
        );
        assert!(parse(&["set-app-security", "app"]).is_err());
        assert!(parse(&["set-app-security", "app", "--require-code-challenge", "yes"]).is_err());
        assert!(parse(&["get-app", "app", "--require-code-challenge", "on"]).is_err());
    }

    #[test]
    fn audit_takes_list_or_tail_and_its_filter() {
        assert_eq!(
            command(&[
                "audit",
                "list",
                "--app",
                "a",
                "--type",
                "code_redeemed",
                "--type=user_erased",
                "--limit",
                "5"
            ]),
            Command::Audit {
                tail: false,
                options: AuditOptions {
                    app_id: Some("a".into()),
                    types: vec!["code_redeemed".into(), "user_erased".into()],
                    limit: Some("5".into()),
                    ..Default::default()
                },
            }
        );
        assert_eq!(
            command(&["audit", "tail", "--cursor", "c"]),
            Command::Audit {
                tail: true,
                options: AuditOptions {
                    cursor: Some("c".into()),
                    ..Default::default()
                },
            }
        );
        assert!(parse(&["audit", "tail", "--limit", "5"]).is_err());
        assert!(parse(&["audit", "follow"]).is_err());
        assert!(parse(&["list-keys", "a", "--app", "a"]).is_err());
    }

    #[test]
    fn help_wins_over_everything() {
        assert_eq!(command(&["help"]), Command::Help);
        assert_eq!(command(&["--help"]), Command::Help);
        assert_eq!(command(&["get-user", "-h"]), Command::Help);
    }
}
