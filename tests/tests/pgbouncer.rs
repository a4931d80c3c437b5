//! The services behind a real PgBouncer (Debian's 1.18) in transaction
//! pooling mode: statements go through it (`DATABASE_URL`), LISTEN and the
//! migration lock straight to Postgres (`DATABASE_DIRECT_URL`). Its pools
//! are smaller than the services', so their connections' statements are
//! spread over several server connections, as in production.

use devicelink_e2e::stores::flow::every_statement;
use devicelink_e2e::stores::pgbouncer::PgBouncer;
use devicelink_e2e::*;
use futures_util::future::join_all;

/// The Postgres the tests share, which the PgBouncer fronts.
fn test_database_url() -> String {
    std::env::var("DEVICELINK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://devicelink:devicelink@127.0.0.1:5432/devicelink".to_owned())
}

async fn behind_pgbouncer() -> (PgBouncer, TestEnv) {
    let url = test_database_url();
    let pgbouncer = tokio::task::spawn_blocking(move || PgBouncer::start(&url))
        .await
        .expect("start pgbouncer");
    let env = TestEnv::start_with(TestOptions {
        pgbouncer: Some(pgbouncer.addr()),
        ..TestOptions::default()
    })
    .await;
    (pgbouncer, env)
}

/// The test database's name, as pgbouncer logs the logins to it.
fn database_name(env: &TestEnv) -> String {
    let config: tokio_postgres::Config = env.database_url.parse().expect("the test URL");
    config.get_dbname().expect("a database name").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_and_the_watch_stream_work_through_pgbouncer() {
    let (pgbouncer, env) = behind_pgbouncer().await;
    // The change a restoring redemption makes through PgBouncer reaches the
    // watcher, and the status cache, through the direct LISTEN session.
    every_statement(&env).await;
    let login = format!("db={}", database_name(&env));
    assert!(
        pgbouncer.log().contains(&login),
        "the services' statements went through pgbouncer:\n{}",
        pgbouncer.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_redemptions_through_pgbouncer_all_succeed() {
    let (pgbouncer, env) = behind_pgbouncer().await;
    let (app_id, api_key) = env.app_with_key().await;
    // Half for users linked already (the transaction that arbitrates),
    // half for new ones (one statement).
    let mut codes = Vec::new();
    for user in 0..25 {
        let external_id = format!("existing-{user}");
        env.link(
            &app_id,
            &api_key,
            &external_id,
            phone(&format!("old-{user}")),
        )
        .await;
        codes.push((
            env.mint(&api_key, &external_id).await,
            format!("new-{user}"),
        ));
        let new_user = format!("new-user-{user}");
        codes.push((env.mint(&api_key, &new_user).await, format!("first-{user}")));
    }
    let redemptions = codes.iter().map(|(code, device)| {
        let env = &env;
        let app_id = &app_id;
        async move {
            env.registration()
                .await
                .create_user(create_user_request(code, app_id, phone(device)))
                .await
        }
    });
    let failures: Vec<_> = join_all(redemptions)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 50 failed: {failures:?}\n{}",
        failures.len(),
        pgbouncer.log()
    );
    assert_eq!(
        env.count("SELECT count(*) FROM redeemed_codes").await,
        75,
        "25 first links, then 50 redemptions"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM installs WHERE state = 'active'")
            .await,
        50
    );
}
