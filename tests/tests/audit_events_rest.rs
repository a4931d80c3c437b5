//! `ListAuditEvents` over REST through the real Envoy's admin listener
//! (`GET /v1/admin/audit-events`), filter and cursor as query parameters.

use devicelink_e2e::gateway::*;
use devicelink_e2e::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_listed_over_rest_a_page_at_a_time() {
    let env = TestEnv::start().await;
    let gateway = Gateway::start(&env).await;
    let app_id = gateway
        .call_admin(
            "POST",
            "/v1/admin/apps",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "rest audit"})),
        )
        .await
        .ok()["app_id"]
        .as_str()
        .expect("an app id")
        .to_owned();
    let api_key = gateway
        .call_admin(
            "POST",
            &format!("/v1/admin/apps/{app_id}/api-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({})),
        )
        .await
        .ok()["api_key"]
        .as_str()
        .expect("a key")
        .to_owned();
    for n in 0..2 {
        env.link(
            &app_id,
            &api_key,
            &format!("rest-{n}"),
            phone(&format!("d-{n}")),
        )
        .await;
    }

    let query = format!(
        "filter.app_id={app_id}&filter.types=AUDIT_EVENT_TYPE_CODE_REDEEMED&filter.types=AUDIT_EVENT_TYPE_API_KEY_CREATED&page_size=2"
    );
    let first = gateway
        .call_admin(
            "GET",
            &format!("/v1/admin/audit-events?{query}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await
        .ok();
    let events = first["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{first}");
    assert!(
        events
            .iter()
            .all(|event| event["type"] == "AUDIT_EVENT_TYPE_CODE_REDEEMED")
    );
    let cursor = first["next_cursor"].as_str().expect("a next cursor");
    let second = gateway
        .call_admin(
            "GET",
            &format!("/v1/admin/audit-events?{query}&cursor={cursor}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await
        .ok();
    let events = second["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{second}");
    assert_eq!(events[0]["type"], "AUDIT_EVENT_TYPE_API_KEY_CREATED");
    assert!(second.get("next_cursor").is_none_or(|cursor| cursor == ""));

    let refused = gateway
        .call_admin("GET", "/v1/admin/audit-events", None, None)
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text());
}
