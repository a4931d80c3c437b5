//! Guarantees under concurrency, tested with real concurrent clients against
//! two registration replicas sharing one database and one Redis. (The status
//! cache across replicas is tested in `status_cache.rs`, a binary of its
//! own so that it can read the process-wide cache-hit counter.)

use std::collections::HashSet;
use std::time::Duration;

use devicelink_e2e::pg_activity::await_lock_waiters;
use devicelink_e2e::*;
use devicelink_registration::migrate::{self, MIGRATION_LOCK_ID};
use devicelink_shared::pb;
use devicelink_shared::stores::Postgres;
use futures_util::StreamExt;
use tonic::Code;

fn two_replicas() -> TestOptions {
    TestOptions {
        registration_replicas: 2,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_redemptions_of_one_code_make_exactly_one_success() {
    let env = TestEnv::start_with(two_replicas()).await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "contended").await;
    let clients = [
        env.registration_replica(0).await,
        env.registration_replica(1).await,
    ];

    let attempts = (0..50).map(|n| {
        let mut client = clients[n % 2].clone();
        let request = create_user_request(&code, &app_id, phone(&format!("device-{n}")));
        tokio::spawn(async move { client.create_user(request).await })
    });
    let outcomes = futures_util::future::join_all(attempts).await;

    let mut successes = 0;
    for outcome in outcomes {
        match outcome.expect("the task ran") {
            Ok(_) => successes += 1,
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        }
    }
    assert_eq!(successes, 1);
    let db = env.database().await;
    let users: i64 = db
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("count")
        .get(0);
    let installs: i64 = db
        .query_one("SELECT count(*) FROM installs", &[])
        .await
        .expect("count")
        .get(0);
    let replays: i64 = db
        .query_one("SELECT count(*) FROM code_replays", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!((users, installs, replays), (1, 1, 49));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_devices_redeeming_for_one_external_id_make_one_user_and_one_active_install() {
    let env = TestEnv::start_with(two_replicas()).await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(env.mint(&api_key, "one-person").await);
    }
    let clients = [
        env.registration_replica(0).await,
        env.registration_replica(1).await,
    ];
    let attempts = codes.into_iter().enumerate().map(|(n, code)| {
        let mut client = clients[n % 2].clone();
        let device = if n % 3 == 0 {
            tablet(&format!("d{n}"))
        } else {
            phone(&format!("d{n}"))
        };
        let request = create_user_request(&code, &app_id, device);
        tokio::spawn(async move { client.create_user(request).await })
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let user_ids: HashSet<String> = outcomes
        .into_iter()
        .map(|outcome| {
            outcome
                .expect("the task ran")
                .expect("every redemption succeeds")
                .into_inner()
                .user_id
        })
        .collect();
    assert_eq!(user_ids.len(), 1, "one user for one external id");

    let db = env.database().await;
    let users: i64 = db
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("count")
        .get(0);
    let active: i64 = db
        .query_one("SELECT count(*) FROM installs WHERE state = 'active'", &[])
        .await
        .expect("count")
        .get(0);
    let installs: i64 = db
        .query_one("SELECT count(*) FROM installs", &[])
        .await
        .expect("count")
        .get(0);
    let epoch: i64 = db
        .query_one("SELECT epoch FROM users", &[])
        .await
        .expect("epoch")
        .get(0);
    let active_epoch: i64 = db
        .query_one("SELECT epoch FROM installs WHERE state = 'active'", &[])
        .await
        .expect("active epoch")
        .get(0);
    assert_eq!((users, active, installs), (1, 1, 20));
    assert_eq!(
        active_epoch, epoch,
        "the active install holds the current epoch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_a_second_active_install_whatever_the_code_does() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let created = env
        .registration()
        .await
        .create_user(create_user_request(
            &env.mint(&api_key, "u").await,
            &app_id,
            phone("p"),
        ))
        .await
        .expect("create")
        .into_inner();
    let db = env.database().await;
    let error = db
        .execute(
            "INSERT INTO installs (id, app_id, user_id, device_id, platform, form_factor, model, os_version,
                 app_version, sdk_version, bundle_id, state, epoch)
             SELECT gen_random_uuid(), app_id, user_id, 'other', platform, form_factor, model, os_version,
                 app_version, sdk_version, bundle_id, 'active', 1
             FROM installs WHERE id = $1::text::uuid",
            &[&created.install_id],
        )
        .await
        .expect_err("a second active install violates the constraint");
    let constraint = error
        .as_db_error()
        .and_then(|db_error| db_error.constraint())
        .map(str::to_owned);
    assert_eq!(constraint.as_deref(), Some("installs_one_active_per_user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_replica_sees_a_takeover_made_on_another() {
    let env = TestEnv::start_with(two_replicas()).await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut first_replica = env.registration_replica(0).await;
    let mut second_replica = env.registration_replica(1).await;
    let first = first_replica
        .create_user(create_user_request(
            &env.mint(&api_key, "u").await,
            &app_id,
            phone("a"),
        ))
        .await
        .expect("first")
        .into_inner();
    let mut stream = first_replica
        .watch_install_status(authorized(
            pb::WatchInstallStatusRequest {},
            &first.install_token,
        ))
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        state_of(&stream.next().await.expect("first").expect("ok").status),
        ACTIVE
    );

    second_replica
        .create_user(create_user_request(
            &env.mint(&api_key, "u").await,
            &app_id,
            phone("b"),
        ))
        .await
        .expect("second");
    let change = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the change crosses replicas promptly")
        .expect("a change")
        .expect("ok");
    assert_eq!(state_of(&change.status), SUPERSEDED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_once() {
    // Three replicas' migration steps against one fresh database, each with
    // its own pool, as three processes would run them. The test holds the
    // migration lock until all three queue behind it, so they truly start
    // at once, whatever the scheduling.
    let database_url = devicelink_e2e::env::create_database().await;
    let (holder, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_ID])
        .await
        .expect("hold the migration lock");
    let replicas = (0..3).map(|_| {
        let postgres = Postgres::new(&database_url, 1).expect("a pool");
        tokio::spawn(async move { migrate::run_reporting(&postgres).await })
    });
    let replicas: Vec<_> = replicas.collect();

    let waiters = await_lock_waiters(&holder, 3).await;
    assert!(
        waiters.iter().all(|waiter| waiter.wait_event == "advisory"),
        "the three replicas queue on the migration lock: {waiters:?}"
    );
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_ID])
        .await
        .expect("release the migration lock");

    let mut applied = Vec::new();
    for replica in replicas {
        applied.push(
            replica
                .await
                .expect("the task ran")
                .expect("each replica's migration step succeeds"),
        );
    }
    applied.sort();
    assert_eq!(
        applied,
        [vec![], vec![], migrate::versions()],
        "one replica applied every migration; the others found nothing to do"
    );
    let recorded: i64 = holder
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(recorded, migrate::versions().len() as i64);
}
