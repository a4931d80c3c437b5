//! Housekeeping that keeps the database from growing without bound.

use devicelink_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_redemption_records_are_purged_and_young_ones_kept() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    for device in ["a", "b"] {
        registration
            .create_user(create_user_request(
                &env.mint(&api_key, device).await,
                &app_id,
                phone(device),
            ))
            .await
            .expect("create");
    }
    let db = env.database().await;
    db.execute(
        "UPDATE redeemed_codes SET redeemed_at = now() - interval '2 days' WHERE device_id = 'a'",
        &[],
    )
    .await
    .expect("age one record");
    let postgres =
        devicelink_shared::stores::Postgres::new(&env.database_url, 1).expect("a Postgres handle");
    let store = devicelink_registration::store::Store::new(postgres);
    let purged = store
        .purge_redemptions(devicelink_registration::janitor::REDEMPTION_RETENTION)
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    let left: String = db
        .query_one("SELECT device_id FROM redeemed_codes", &[])
        .await
        .expect("one left")
        .get(0);
    assert_eq!(left, "b");
}
