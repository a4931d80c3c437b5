//! Migration 0007: SDK configurations stored with empty object keys (before
//! SetSdkConfig refused them; Envoy's transcoder crashes printing one) lose
//! those keys, at any depth, and nothing else.

use devicelink_e2e::*;
use serde_json::{Value, json};

/// The migration, run again on a database where the service applied it
/// already: it ends by dropping the function it makes, so it can.
const CLEANUP: &str =
    include_str!("../../services/registration/migrations/0007_sdk_configs_without_empty_keys.sql");

async fn stored_config(db: &tokio_postgres::Client, app_id: &str) -> Value {
    let text: String = db
        .query_one(
            "SELECT sdk_config::text FROM apps WHERE id = $1::text::uuid",
            &[&app_id],
        )
        .await
        .expect("the app's configuration")
        .get(0);
    serde_json::from_str(&text).expect("JSON")
}

async fn store_config(db: &tokio_postgres::Client, app_id: &str, config: &Value) {
    db.execute(
        "UPDATE apps SET sdk_config = $2::text::jsonb WHERE id = $1::text::uuid",
        &[&app_id, &config.to_string()],
    )
    .await
    .expect("store a configuration as it was stored before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_configs_lose_their_empty_keys_and_nothing_else() {
    let env = TestEnv::start().await;
    let (unnamed_keys, _) = env.app_with_key().await;
    let (clean, _) = env.app_with_key().await;
    let db = env.database().await;
    store_config(
        &db,
        &unnamed_keys,
        &json!({"": 1, "a": {"": 2, "b": [{"": 3, "c": 4}, 5, [{"": null}]]}, "d": "x"}),
    )
    .await;
    let untouched = json!({"e": [[], {}], "f": {"g": null, "h": [1.5, true]}});
    store_config(&db, &clean, &untouched).await;

    db.batch_execute(CLEANUP).await.expect("the migration runs");

    assert_eq!(
        stored_config(&db, &unnamed_keys).await,
        json!({"a": {"b": [{"c": 4}, 5, [{}]]}, "d": "x"})
    );
    assert_eq!(stored_config(&db, &clean).await, untouched);
}
