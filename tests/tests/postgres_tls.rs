//! Postgres over TLS, against a server of the test's own that refuses
//! plaintext, with a CA and certificate made at test time
//! (`devicelink_e2e::stores::postgres_tls`): what `sslmode` promises is
//! what a connection gets, for every connection the services make.

use std::time::Duration;

use devicelink_e2e::stores::flow::every_statement;
use devicelink_e2e::stores::postgres_tls::{ROLE, TlsPostgres};
use devicelink_e2e::{TestEnv, TestOptions};
use devicelink_shared::status::error_chain;
use devicelink_shared::stores::Postgres;
use tokio_postgres::error::SqlState;

/// A TLS-only Postgres, started off the test's runtime threads.
async fn tls_postgres() -> TlsPostgres {
    tokio::task::spawn_blocking(TlsPostgres::start)
        .await
        .expect("start the TLS Postgres")
}

/// A session to `url` made as the services make theirs, or why not.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let postgres = Postgres::new(url, 1).map_err(|error| error_chain(&error))?;
    let (client, connection) = postgres
        .connect_session()
        .await
        .map_err(|error| error_chain(&error))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Whether the session's own connection is encrypted, as the server sees it.
async fn is_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

/// `url` naming the server by a host name its certificate was not issued
/// for, while connecting to it all the same (`hostaddr`).
fn by_another_name(server: &TlsPostgres, query: &str) -> String {
    format!(
        "postgres://{ROLE}:devicelink@db.elsewhere.example:{}/postgres?hostaddr=127.0.0.1&{query}",
        server.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_verify_full_the_whole_flow_runs_with_every_connection_encrypted() {
    let server = tls_postgres().await;
    let env = TestEnv::start_with(TestOptions {
        admin_database_url: Some(server.verify_full_url()),
        ..TestOptions::default()
    })
    .await;
    // Migrations ran at start-up; the flow uses the pool of both services
    // and registration's LISTEN session.
    every_statement(&env).await;

    let row = env
        .database()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'devicelink'",
            &[],
        )
        .await
        .expect("the services' connections");
    let (encrypted, plaintext): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        encrypted >= 3,
        "the services' pools and the listener: {encrypted}"
    );
    assert_eq!(plaintext, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_statement_is_cancelled_over_tls() {
    let server = tls_postgres().await;
    let postgres = Postgres::new(&server.verify_full_url(), 1).expect("a pool");
    let client = postgres.pool().get().await.expect("a pooled connection");
    assert!(is_tls(&client).await);
    let token = client.cancel_token();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    postgres
        .cancel(token)
        .await
        .unwrap_or_else(|error| panic!("the cancel request: {}", error_chain(&error)));
    let answer = tokio::time::timeout(Duration::from_secs(5), sleeping)
        .await
        .expect("cancelled well before its thirty seconds")
        .expect("the statement's task");
    let error = answer.expect_err("cancelled");
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_name_is_refused_by_verify_full_and_accepted_by_verify_ca() {
    let server = tls_postgres().await;
    let ca = format!("sslrootcert={}", server.ca_file.display());

    let refused = connect(&by_another_name(
        &server,
        &format!("sslmode=verify-full&{ca}"),
    ))
    .await
    .expect_err("the name does not match");
    assert!(
        refused.contains("certificate not valid for name \"db.elsewhere.example\""),
        "{refused}"
    );

    let accepted = connect(&by_another_name(
        &server,
        &format!("sslmode=verify-ca&{ca}"),
    ))
    .await
    .unwrap_or_else(|error| panic!("verify-ca ignores the name: {error}"));
    assert!(is_tls(&accepted).await);

    // verify-ca still verifies the chain: a certificate some other CA
    // vouches for is refused.
    let unrelated = format!(
        "sslmode=verify-ca&sslrootcert={}",
        server.unrelated_ca_file.display()
    );
    let refused = connect(&by_another_name(&server, &unrelated))
        .await
        .expect_err("issued by a CA not trusted");
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    // require checks nothing, as libpq's, but still encrypts.
    let required = connect(&by_another_name(&server, "sslmode=require"))
        .await
        .unwrap_or_else(|error| panic!("require: {error}"));
    assert!(is_tls(&required).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_disable_against_a_server_that_requires_tls_fails_clearly() {
    let server = tls_postgres().await;
    let refused = connect(&server.url("sslmode=disable"))
        .await
        .expect_err("plaintext is rejected");
    assert!(
        refused.contains("pg_hba.conf rejects connection") && refused.contains("no encryption"),
        "{refused}\n{}",
        server.log()
    );
    // Without sslmode, TLS is preferred, as libpq prefers it.
    let preferred = connect(&server.url(""))
        .await
        .unwrap_or_else(|error| panic!("prefer: {error}"));
    assert!(is_tls(&preferred).await);
}
