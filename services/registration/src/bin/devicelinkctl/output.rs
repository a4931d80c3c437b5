//! How responses are printed: `name: value` lines and one table, with
//! timestamps in RFC 3339 UTC.

use devicelink_shared::pb;
use tonic::Code;

/// RFC 3339 in UTC to the second, or `-` when unset.
pub(crate) fn rfc3339(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp.map_or_else(
        || "-".into(),
        |timestamp| {
            let mut timestamp = *timestamp;
            timestamp.normalize();
            // prost-types prints Timestamps as RFC 3339 UTC; drop the fraction.
            prost_types::Timestamp {
                seconds: timestamp.seconds,
                nanos: 0,
            }
            .to_string()
        },
    )
}

/// `FORM_FACTOR_PHONE` as `phone`; the unspecified value as `-`.
fn label(name: &str, prefix: &str) -> String {
    match name.strip_prefix(prefix).unwrap_or(name) {
        "UNSPECIFIED" => "-".into(),
        short => short.to_ascii_lowercase(),
    }
}

pub(crate) fn key_table(keys: &[pb::ApiKey]) -> String {
    let header = [
        "KEY_ID",
        "STATE",
        "CREATED",
        "EXPIRES",
        "LAST_USED",
        "REVOKED",
        "SCOPES",
    ];
    let mut rows = vec![header.map(String::from)];
    rows.extend(keys.iter().map(|key| {
        [
            key.key_id.clone(),
            label(key.state().as_str_name(), "API_KEY_STATE_"),
            rfc3339(key.created_at.as_ref()),
            rfc3339(key.expires_at.as_ref()),
            rfc3339(key.last_used_at.as_ref()),
            rfc3339(key.revoked_at.as_ref()),
            key.scopes.join(","),
        ]
    }));
    let mut widths = [0; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

pub(crate) fn user_report(user: &pb::User) -> String {
    let mut lines = vec![
        format!("user_id: {}", user.user_id),
        format!("app_id: {}", user.app_id),
        format!("external_id: {}", user.external_id),
        format!("epoch: {}", user.epoch),
        format!("created_at: {}", rfc3339(user.created_at.as_ref())),
        format!("installs: {}", user.installs.len()),
    ];
    for install in &user.installs {
        let status = install.status.clone().unwrap_or_default();
        lines.extend([
            format!("- install_id: {}", status.install_id),
            format!(
                "  state: {}",
                label(status.state().as_str_name(), "INSTALL_STATE_")
            ),
            format!(
                "  reason: {}",
                label(status.reason().as_str_name(), "INSTALL_STATE_REASON_")
            ),
            format!("  epoch: {}", status.epoch),
            format!("  changed_at: {}", rfc3339(status.changed_at.as_ref())),
            format!("  device_id: {}", install.device_id),
            format!(
                "  form_factor: {}",
                label(install.form_factor().as_str_name(), "FORM_FACTOR_")
            ),
            format!(
                "  platform: {}",
                label(install.platform().as_str_name(), "PLATFORM_")
            ),
            format!("  model: {}", install.model),
            format!("  os_version: {}", install.os_version),
            format!("  app_version: {}", install.app_version),
            format!("  sdk_version: {}", install.sdk_version),
            format!("  created_at: {}", rfc3339(install.created_at.as_ref())),
        ]);
    }
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// An app's own limits and the ones in force, one line per scope:
/// `mint_per_key: 50/s,burst=100 (own)` or `... (default)`.
pub(crate) fn app_report(app: &pb::App) -> String {
    let sdk_config = devicelink_registration::service::sdk_config::struct_to_json(
        &app.sdk_config.clone().unwrap_or_default(),
    );
    let own = app.limits.clone().unwrap_or_default();
    let effective = app.effective_limits.clone().unwrap_or_default();
    let mut lines = vec![
        format!("app_id: {}", app.app_id),
        format!("name: {}", app.name),
        format!("created_at: {}", rfc3339(app.created_at.as_ref())),
        format!("sdk_config: {sdk_config}"),
        "limits:".to_owned(),
    ];
    for ((scope, own), effective) in limit_fields(&own).into_iter().zip(limit_fields(&effective)) {
        let source = if own.is_some() { "own" } else { "default" };
        let rate = effective.1.unwrap_or("-");
        lines.push(format!("  {scope}: {rate} ({source})"));
    }
    let mut report: String = lines.iter().map(|line| format!("{line}\n")).collect();
    report.push_str(&security_report(&app.security.unwrap_or_default()));
    report
}

/// An app's security settings, one line each.
pub(crate) fn security_report(security: &pb::AppSecurity) -> String {
    let switch = |on: bool| if on { "on" } else { "off" };
    format!(
        "require_code_challenge: {}\n",
        switch(security.require_code_challenge)
    )
}

/// Limits as stored: each scope's own rate, or `default`.
pub(crate) fn limits_report(limits: &pb::AppLimits) -> String {
    limit_fields(limits)
        .into_iter()
        .map(|(scope, rate)| format!("{scope}: {}\n", rate.unwrap_or("default")))
        .collect()
}

fn limit_fields(limits: &pb::AppLimits) -> [(&'static str, Option<&str>); 3] {
    [
        ("mint_per_key", limits.mint_per_key.as_deref()),
        (
            "mint_per_external_id",
            limits.mint_per_external_id.as_deref(),
        ),
        ("redeem_per_device", limits.redeem_per_device.as_deref()),
    ]
}

/// The canonical name of a gRPC status code, as in the gRPC docs.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        let at = |seconds, nanos| rfc3339(Some(&prost_types::Timestamp { seconds, nanos }));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400, 999_999_999), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_767_225_599, 0), "2025-12-31T23:59:59Z");
        assert_eq!(rfc3339(None), "-");
    }

    #[test]
    fn key_table_aligns_columns() {
        let key = pb::ApiKey {
            key_id: "k1".into(),
            state: pb::ApiKeyState::Revoked.into(),
            scopes: vec!["user_link".into()],
            created_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        };
        let table = key_table(&[key]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("KEY_ID  STATE    CREATED               EXPIRES"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("k1      revoked  1970-01-01T00:00:00Z  -      "),
            "{table}"
        );
        assert!(lines[1].ends_with("user_link"), "{table}");
    }
}
