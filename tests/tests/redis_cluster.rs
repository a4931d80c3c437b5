//! devicelink on a real Redis Cluster of 3 masters and 3 replicas
//! (`deploy/local/ensure-redis-cluster.sh`, made once per test run).
//!
//! The whole flow runs on it with its limits (a mint's limits and its code
//! in one slot, the client address's failures in another); and during a
//! mint-and-redeem loop a replica is promoted (`CLUSTER FAILOVER`) and then
//! a master is killed: calls fail with UNAVAILABLE at most for the failover
//! window, recover without restarting the services, and no code minted is
//! lost or redeemed twice.

mod rate_limits_support;

use std::time::{Duration, Instant};

use devicelink_e2e::stores::redis_cluster;
use devicelink_e2e::{TestEnv, TestOptions, create_user_request, phone, status_of_token};
use devicelink_shared::limits::app_hash_tag;
use devicelink_shared::limits::write_behind::FLUSH_INTERVAL;
use devicelink_shared::pb;
use rate_limits_support::{
    FAILED_AUTH_PER_ADDRESS, MINT_PER_EXTERNAL_ID, MINT_PER_KEY, REDEEM_PER_DEVICE, assert_limited,
    limits, made_up_code, mint,
};
use tonic::Code;

/// The longest a failover may leave calls failing. The cluster's nodes
/// time out after 1 s (`cluster-node-timeout`), a replica then takes
/// over within a few more, and the client refreshes its view of the slots
/// on the first failure: measured at a few seconds here, asserted with a
/// wide margin for a loaded CI machine.
const FAILOVER_WINDOW_BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_runs_on_the_cluster_with_its_limits() {
    let _cluster = redis_cluster::shared().await;
    let env = TestEnv::start_with(TestOptions {
        redis: Some(redis_cluster::settings()),
        limits: limits(&[
            (MINT_PER_KEY, "100/s,burst=200"),
            (MINT_PER_EXTERNAL_ID, "10/min,burst=3"),
            (REDEEM_PER_DEVICE, "10/min,burst=5"),
            (FAILED_AUTH_PER_ADDRESS, "30/min,burst=3"),
        ]),
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let created = env
        .link(&app_id, &api_key, "cluster-user", phone("p1"))
        .await;
    let status = status_of_token(&mut env.registration().await, &created.install_token)
        .await
        .expect("status");
    assert_eq!(
        pb::InstallState::try_from(status.state),
        Ok(pb::InstallState::Active)
    );

    // The code went to the master serving its app's slot.
    let seed = redis_cluster::urls()[0]
        .rsplit(':')
        .next()
        .and_then(|port| port.parse::<u16>().ok())
        .expect("a seed port");
    let tag = app_hash_tag(
        app_id
            .parse()
            .map(devicelink_shared::validate::AppId)
            .expect("uuid"),
    );
    let slot = redis_cluster::slot_of(seed, &tag).await.expect("keyslot");
    let nodes = redis_cluster::nodes(seed).await.expect("nodes");
    let master = nodes
        .iter()
        .find(|node| node.master && node.serves(slot))
        .expect("a master serves the app's slot");
    let code = env.mint(&api_key, "second-user").await;
    let keys: Vec<String> = redis_cluster::node_command(
        master.port,
        &["KEYS", &format!("{}authcode:{tag}:*", env.redis_key_prefix)],
    )
    .await
    .expect("keys");
    assert_eq!(keys.len(), 1, "the unredeemed code, on its app's master");

    // Limits are reached and reported: per external id (in the app's slot,
    // decided in the mint's own script).
    let mut authcode = env.authcode().await;
    for _ in 0..2 {
        mint(&mut authcode, &api_key, "cluster-user")
            .await
            .expect("within the burst");
    }
    assert_limited(
        mint(&mut authcode, &api_key, "cluster-user").await,
        "mint_per_external_id",
    );

    // Failed credentials per address (in the address's own slot): made-up
    // codes until the address is blocked, then even a valid code from it
    // is refused, and a mint with a valid key too, within a flush.
    let mut registration = env.registration().await;
    for _ in 0..3 {
        let refused = registration
            .create_user(create_user_request(&made_up_code(), &app_id, phone("p2")))
            .await
            .expect_err("a made-up code");
        assert_eq!(refused.code(), Code::NotFound);
    }
    assert_limited(
        registration
            .create_user(create_user_request(&code, &app_id, phone("p2")))
            .await,
        "failed_auth_per_address",
    );
    // authcode saw none of those failures: a mint with its cached key goes
    // on until its next flush reads the address (in the address's slot).
    let _allowed_or_refused = mint(&mut authcode, &api_key, "third-user").await;
    tokio::time::sleep(FLUSH_INTERVAL * 3).await;
    assert_limited(
        mint(&mut authcode, &api_key, "third-user").await,
        "failed_auth_per_address",
    );
}

/// What the mint-and-redeem loop saw.
#[derive(Debug, Default)]
struct LoopRecord {
    /// Codes whose mint returned, with their app and device.
    minted: Vec<(usize, String, String)>,
    /// Redemptions that succeeded (one per minted code, retried through
    /// UNAVAILABLE).
    redeemed: usize,
    /// When each call failed with UNAVAILABLE.
    unavailable_at: Vec<Instant>,
    /// When each call succeeded.
    succeeded_at: Vec<Instant>,
}

impl LoopRecord {
    /// The longest stretch from a failure to the next success.
    fn longest_outage(&self) -> Duration {
        self.unavailable_at
            .iter()
            .map(|failed| {
                let recovered = self
                    .succeeded_at
                    .iter()
                    .find(|succeeded| *succeeded > failed)
                    .copied()
                    .unwrap_or_else(Instant::now);
                let started = self
                    .unavailable_at
                    .iter()
                    .filter(|earlier| *earlier <= failed)
                    .filter(|earlier| {
                        !self
                            .succeeded_at
                            .iter()
                            .any(|succeeded| succeeded > *earlier && succeeded < failed)
                    })
                    .min()
                    .copied()
                    .unwrap_or(*failed);
                recovered - started
            })
            .max()
            .unwrap_or_default()
    }
}

/// Mints and redeems, one code after another over `apps`, until `stop`;
/// an UNAVAILABLE call is retried (a mint with a new external id is not
/// needed: a failed mint returned nothing), any other failure fails the
/// test.
async fn mint_and_redeem(
    env: &TestEnv,
    apps: &[(String, String)],
    stop: tokio::sync::watch::Receiver<bool>,
) -> LoopRecord {
    let mut record = LoopRecord::default();
    let mut authcode = env.authcode().await;
    let mut registration = env.registration().await;
    let mut round = 0usize;
    while !*stop.borrow() {
        let app = round % apps.len();
        let (app_id, api_key) = &apps[app];
        let external_id = format!("loop-user-{round}");
        let code = loop {
            match mint(&mut authcode, api_key, &external_id).await {
                Ok(minted) => break minted.auth_code,
                Err(status) if status.code() == Code::Unavailable => {
                    record.unavailable_at.push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("mint: {status:?}"),
            }
        };
        record.succeeded_at.push(Instant::now());
        let device = format!("loop-phone-{round}");
        record.minted.push((app, code.clone(), device.clone()));
        loop {
            let request = create_user_request(&code, app_id, phone(&device));
            match registration.create_user(request).await {
                Ok(_) => break,
                Err(status) if status.code() == Code::Unavailable => {
                    record.unavailable_at.push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("redeem of a minted code: {status:?}"),
            }
        }
        record.succeeded_at.push(Instant::now());
        record.redeemed += 1;
        round += 1;
    }
    record
}

/// Waits until `check` holds, at most `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_no_code_and_redeems_none_twice() {
    let _cluster = redis_cluster::exclusive().await;
    // Restarts the node killed below (it rejoins as a replica) for later
    // tests and later runs, even if this test fails half-way.
    let repair = redis_cluster::RepairOnDrop;
    let env = TestEnv::start_with(TestOptions {
        redis: Some(redis_cluster::settings()),
        ..Default::default()
    })
    .await;
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(env.app_with_key().await);
    }
    // The master of the first app's slot, and its replica.
    let seed = 7100;
    let tag = app_hash_tag(
        apps[0]
            .0
            .parse()
            .map(devicelink_shared::validate::AppId)
            .expect("uuid"),
    );
    let slot = redis_cluster::slot_of(seed, &tag).await.expect("keyslot");
    let nodes = redis_cluster::nodes(seed).await.expect("nodes");
    let master = nodes
        .iter()
        .find(|node| node.master && node.serves(slot))
        .expect("a master serves the slot")
        .clone();
    let replica = nodes
        .iter()
        .find(|node| node.master_id.as_deref() == Some(&master.id))
        .expect("the master has a replica")
        .clone();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let looping = mint_and_redeem(&env, &apps, stopped);
    let disrupt = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A planned failover: the replica takes over its master.
        let _: String = redis_cluster::node_command(replica.port, &["CLUSTER", "FAILOVER"])
            .await
            .expect("CLUSTER FAILOVER");
        wait_for(
            Duration::from_secs(20),
            "the replica is promoted",
            || async {
                redis_cluster::nodes(replica.port).await.is_ok_and(|nodes| {
                    nodes
                        .iter()
                        .any(|node| node.port == replica.port && node.master)
                })
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        // A crash: the new master dies (SIGKILL), the old one, now its
        // replica, is elected in its place.
        let pid = redis_cluster::process_id(replica.port)
            .await
            .expect("the new master's pid");
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        wait_for(
            Duration::from_secs(30),
            "the old master takes over again",
            || async {
                redis_cluster::nodes(master.port).await.is_ok_and(|nodes| {
                    nodes
                        .iter()
                        .any(|node| node.port == master.port && node.master)
                })
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = stop.send(true);
    };
    let (record, ()) = tokio::join!(looping, disrupt);
    drop(repair);

    let outage = record.longest_outage();
    println!(
        "failover: {} codes minted and redeemed, {} UNAVAILABLE calls, longest outage {outage:?}",
        record.minted.len(),
        record.unavailable_at.len()
    );
    assert!(
        outage <= FAILOVER_WINDOW_BOUND,
        "calls failed for {outage:?}, longer than {FAILOVER_WINDOW_BOUND:?}"
    );
    assert!(
        record.minted.len() >= 10,
        "the loop made progress: {record:?}"
    );
    assert_eq!(
        record.redeemed,
        record.minted.len(),
        "every minted code redeemed"
    );
    // None twice: each code again, from another device, is refused, and
    // Postgres holds one redemption per code.
    let mut registration = env.registration().await;
    for (app, code, _device) in &record.minted {
        let again = registration
            .create_user(create_user_request(code, &apps[*app].0, phone("intruder")))
            .await
            .expect_err("a used code");
        assert_eq!(again.code(), Code::NotFound, "{again:?}");
    }
    assert_eq!(
        env.count("SELECT count(*) FROM redeemed_codes").await,
        i64::try_from(record.minted.len()).expect("small"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_fall_back_to_memory_while_the_cluster_is_away_and_it_is_used_once_back() {
    use devicelink_shared::limits::{Decision, Limit, LimitKey, Rate, RateLimiter};
    use devicelink_shared::stores::{RedisConnection, STORE_TIMEOUT};

    let _cluster = redis_cluster::shared().await;
    // The only seed node, behind a proxy that refuses connections: the
    // cluster is away when the connection is made.
    let seed = redis_cluster::urls()[0]
        .trim_start_matches("redis://")
        .to_owned();
    let proxy = devicelink_e2e::proxy::TcpProxy::start(seed).await;
    proxy.cut();
    let settings = devicelink_shared::config::RedisSettings {
        servers: devicelink_shared::config::RedisServers::Cluster(vec![format!(
            "redis://{}",
            proxy.addr()
        )]),
        ..redis_cluster::settings()
    };
    let redis = RedisConnection::connect(&settings).expect("settings");
    let limiter = RateLimiter::new(redis.clone(), format!("dltest:{}:", uuid::Uuid::new_v4()));
    let limit: Vec<Limit> = Limit::new(
        LimitKey::install_per_token(b"a token"),
        Rate::parse_setting("1/min").expect("parses"),
    )
    .into_iter()
    .collect();
    let started = Instant::now();
    assert_eq!(limiter.check(&limit).await, Decision::Allowed);
    assert!(
        !limiter.check(&limit).await.is_allowed(),
        "the in-memory fallback holds the limit"
    );
    assert!(
        started.elapsed() < STORE_TIMEOUT + Duration::from_secs(1),
        "decided within the store timeout: {:?}",
        started.elapsed()
    );
    assert!(!redis.reachable().await);
    // The cluster comes back: the same connection finds it.
    proxy.restore();
    wait_for(
        Duration::from_secs(15),
        "the connection reaches the cluster",
        || {
            let redis = redis.clone();
            async move { redis.reachable().await }
        },
    )
    .await;
}
