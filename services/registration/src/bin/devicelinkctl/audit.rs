//! `devicelinkctl audit list` and `audit tail`: audit events, one line
//! each, `time type key=value...`, the event id (the cursor) last.

use std::fmt::Write as _;
use std::str::FromStr;

use devicelink_shared::pb;
use devicelink_shared::pb::audit_actor::Actor;

use crate::args::AuditOptions;
use crate::output::rfc3339;

/// The page size when `--limit` is not given.
const DEFAULT_LIMIT: u32 = 50;

/// The filter of `options`; a bad type, time or number is a usage error.
pub(crate) fn filter(options: &AuditOptions) -> Result<pb::AuditEventFilter, String> {
    let types = options
        .types
        .iter()
        .map(|name| event_type(name).map(|event_type| event_type as i32))
        .collect::<Result<_, _>>()?;
    Ok(pb::AuditEventFilter {
        app_id: options.app_id.clone().unwrap_or_default(),
        types,
        user_id: options.user_id.clone().unwrap_or_default(),
        since: options.since.as_deref().map(time).transpose()?,
        until: options.until.as_deref().map(time).transpose()?,
    })
}

/// `--limit`, or the default page size.
pub(crate) fn limit(options: &AuditOptions) -> Result<u32, String> {
    options.limit.as_deref().map_or(Ok(DEFAULT_LIMIT), |text| {
        text.parse()
            .ok()
            .filter(|limit| (1..=1000).contains(limit))
            .ok_or_else(|| format!("--limit wants 1 to 1000, not {text:?}"))
    })
}

fn event_type(name: &str) -> Result<pb::AuditEventType, String> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("AUDIT_EVENT_TYPE_") {
        upper
    } else {
        format!("AUDIT_EVENT_TYPE_{upper}")
    };
    pb::AuditEventType::from_str_name(&full)
        .filter(|event_type| *event_type != pb::AuditEventType::Unspecified)
        .ok_or_else(|| format!("unknown audit event type {name:?} (e.g. code_redeemed)"))
}

fn time(text: &str) -> Result<prost_types::Timestamp, String> {
    prost_types::Timestamp::from_str(text)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time (2026-11-30T05:00:00Z)"))
}

/// One event as a line: time, type, then what is set of app, user,
/// install, key, actor, outcome, reason, client, SDK, trace and the
/// subject's hash, and the event id last (the cursor to resume from).
pub(crate) fn event_line(event: &pb::AuditEvent) -> String {
    let event_type = pb::AuditEventType::try_from(event.r#type)
        .map(|event_type| {
            event_type
                .as_str_name()
                .trim_start_matches("AUDIT_EVENT_TYPE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| event.r#type.to_string());
    let mut line = format!("{} {event_type}", rfc3339(event.time.as_ref()));
    let actor = match event.actor.as_ref().and_then(|actor| actor.actor.as_ref()) {
        Some(Actor::ApiKeyId(key)) => format!("key:{key}"),
        Some(Actor::InstallId(install)) => format!("install:{install}"),
        Some(Actor::Operator(name)) => format!("operator:{name}"),
        Some(Actor::System(_)) => "system".into(),
        None => String::new(),
    };
    for (name, value) in [
        ("app", event.app_id.as_str()),
        ("user", &event.user_id),
        ("install", &event.install_id),
        ("key", &event.api_key_id),
        ("actor", &actor),
        ("reason", &event.reason),
        ("client", &event.client_address),
        ("sdk", &event.sdk_version),
        ("trace", &event.trace_id),
        ("subject", &event.external_id_hash),
        ("id", &event.event_id),
    ] {
        if !value.is_empty() {
            let _ = write!(line, " {name}={value}");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_taken_short_or_whole_and_unknown_ones_refused() {
        let options = AuditOptions {
            types: vec![
                "code_redeemed".into(),
                "AUDIT_EVENT_TYPE_USER_ERASED".into(),
            ],
            since: Some("2026-11-30T05:00:00Z".into()),
            ..Default::default()
        };
        let filter = filter(&options).unwrap();
        assert_eq!(
            filter.types,
            vec![
                pb::AuditEventType::CodeRedeemed as i32,
                pb::AuditEventType::UserErased as i32
            ]
        );
        assert!(filter.since.is_some());
        for bad in [
            AuditOptions {
                types: vec!["unspecified".into()],
                ..Default::default()
            },
            AuditOptions {
                until: Some("yesterday".into()),
                ..Default::default()
            },
        ] {
            assert!(super::filter(&bad).is_err());
        }
        assert!(
            limit(&AuditOptions {
                limit: Some("0".into()),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn a_line_names_what_is_set_and_ends_with_the_id() {
        let event = pb::AuditEvent {
            event_id: "e1".into(),
            r#type: pb::AuditEventType::InstallDeactivated as i32,
            install_id: "i1".into(),
            reason: "superseded".into(),
            actor: Some(pb::AuditActor {
                actor: Some(Actor::Operator("alice".into())),
            }),
            ..Default::default()
        };
        assert_eq!(
            event_line(&event),
            "- install_deactivated install=i1 actor=operator:alice reason=superseded id=e1"
        );
    }
}
