//! Audit events stored in packs (mints, most refusals, rate-limit counts:
//! `devicelink_shared::audit_pack`) read as if each were a row: every
//! event once, in id order, through pages and watch polls that start and
//! end inside packs, interleaved with events stored as rows; filters by
//! app, type, user and time; retention by pack.

use std::time::{Duration, SystemTime};

use devicelink_e2e::env::{connect_postgres, create_database};
use devicelink_registration::migrate;
use devicelink_registration::store::{AuditFilter, Store, StoredAuditEvent};
use devicelink_shared::audit::AuditRow;
use devicelink_shared::audit_writer::{AuditWriter, PendingAuditEvent};
use devicelink_shared::serving::drain_channel;
use devicelink_shared::stores::Postgres;
use uuid::Uuid;

const MINTS_OF_A: usize = 600;
const MINTS_OF_B: usize = 100;
/// One event naming a user (so stored as a row) after every this many
/// mints of app A.
const ROW_EVERY: usize = 50;

struct Written {
    store: Store,
    database_url: String,
    app_a: Uuid,
    app_b: Uuid,
    user: Uuid,
    /// The `time` of app A's first mint; the others follow a millisecond
    /// apart.
    start: SystemTime,
}

fn event(app_id: Uuid, type_name: &str, occurred_at: SystemTime) -> PendingAuditEvent {
    PendingAuditEvent {
        occurred_at,
        api_key_id: Some("key-1".into()),
        ..PendingAuditEvent::new(
            Some(app_id),
            AuditRow {
                type_name: type_name.into(),
                event: vec![7; 40],
            },
        )
    }
}

/// Writes app A's mints with a row after every [`ROW_EVERY`], and app B's
/// mints, through the real writer, in bursts that make several batches;
/// waits until every event is stored.
async fn write_events() -> Written {
    let database_url = create_database().await;
    // A short call timeout: a watch's settling time follows it.
    let postgres = Postgres::with_call_timeout(&database_url, 2, Duration::from_millis(200))
        .expect("a Postgres handle");
    migrate::run(&postgres).await.expect("migrate");
    let (writer, task) = AuditWriter::new();
    let (trigger, drain) = drain_channel();
    task.spawn(postgres.clone(), drain);
    let (app_a, app_b, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let start = SystemTime::now() - Duration::from_secs(3600);
    for n in 0..MINTS_OF_A {
        let at = start + Duration::from_millis(n as u64);
        writer.append(event(app_a, "code_minted", at));
        if n % ROW_EVERY == 0 {
            writer.append(PendingAuditEvent {
                user_id: Some(user),
                ..event(app_a, "install_reset", at)
            });
        }
        if n < MINTS_OF_B {
            writer.append(event(app_b, "code_minted", at));
        }
        if n % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    trigger.fire();
    drop(writer);
    let total = (MINTS_OF_A + MINTS_OF_A / ROW_EVERY + MINTS_OF_B) as i64;
    let store = Store::new(postgres);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stored_count(&database_url).await < total {
        assert!(std::time::Instant::now() < deadline, "every event written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Written {
        store,
        database_url,
        app_a,
        app_b,
        user,
        start,
    }
}

async fn stored_count(database_url: &str) -> i64 {
    connect_postgres(database_url)
        .await
        .expect("connect")
        .query_one(
            "SELECT (SELECT count(*) FROM audit_events)
                  + (SELECT coalesce(sum(event_count), 0) FROM audit_event_packs)::int8",
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

/// Every event matching `filter`, newest first, in pages of `page_size`.
async fn paged(store: &Store, filter: &AuditFilter, page_size: u32) -> Vec<StoredAuditEvent> {
    let mut events = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_audit_events(filter, cursor, page_size)
            .await
            .expect("a page");
        assert!(page.events.len() <= page_size as usize);
        events.extend(page.events);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return events,
        }
    }
}

fn ids(events: &[StoredAuditEvent]) -> Vec<Uuid> {
    events.iter().map(|event| event.event_id).collect()
}

fn of_app(app_id: Uuid) -> AuditFilter {
    AuditFilter {
        app_id: Some(app_id),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_through_packs_and_rows_give_every_event_once_newest_first() {
    let written = write_events().await;
    let db = connect_postgres(&written.database_url)
        .await
        .expect("connect");
    let packs: i64 = db
        .query_one("SELECT count(*) FROM audit_event_packs", &[])
        .await
        .expect("count packs")
        .get(0);
    assert!(packs >= 4, "the mints went into packs, several: {packs}");
    let minted_rows: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_events WHERE type = 'code_minted'",
            &[],
        )
        .await
        .expect("count rows")
        .get(0);
    assert_eq!(minted_rows, 0, "no mint is a row of its own");

    let store = &written.store;
    let whole = paged(store, &of_app(written.app_a), 1000).await;
    assert_eq!(whole.len(), MINTS_OF_A + MINTS_OF_A / ROW_EVERY);
    assert!(
        ids(&whole).windows(2).all(|pair| pair[0] > pair[1]),
        "newest first, no id twice"
    );
    // Pages of 7 start and end inside packs; the same events come out.
    assert_eq!(
        ids(&paged(store, &of_app(written.app_a), 7).await),
        ids(&whole)
    );
    // The mints keep their own fields.
    let mint = whole
        .iter()
        .find(|event| event.type_name == "code_minted")
        .expect("a mint");
    assert_eq!(mint.app_id, Some(written.app_a));
    assert_eq!(mint.api_key_id.as_deref(), Some("key-1"));
    assert_eq!(mint.user_id, None);
    assert_eq!(mint.event, vec![7; 40]);

    let of_b = paged(store, &of_app(written.app_b), 9).await;
    assert_eq!(of_b.len(), MINTS_OF_B, "app B's events only");
    let minted = AuditFilter {
        types: vec!["code_minted".into()],
        ..of_app(written.app_a)
    };
    assert_eq!(paged(store, &minted, 50).await.len(), MINTS_OF_A);
    let of_user = AuditFilter {
        user_id: Some(written.user),
        ..Default::default()
    };
    let users = paged(store, &of_user, 5).await;
    assert_eq!(
        users.len(),
        MINTS_OF_A / ROW_EVERY,
        "a user's events are rows"
    );
    // Mints 100 to 299 of app A, and the rows among them.
    let window = AuditFilter {
        since: Some(written.start + Duration::from_millis(100)),
        until: Some(written.start + Duration::from_millis(300)),
        ..of_app(written.app_a)
    };
    assert_eq!(paged(store, &window, 11).await.len(), 200 + 200 / ROW_EVERY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_polled_in_small_batches_gets_every_settled_event_once_in_order() {
    let written = write_events().await;
    let store = &written.store;
    let newest_first = ids(&paged(store, &of_app(written.app_a), 1000).await);
    // Every event settles once the longest transaction that could still
    // be open has ended (`watch_settle`).
    let settle = devicelink_registration::store::watch_settle(Duration::from_millis(200));
    tokio::time::sleep(settle + Duration::from_millis(500)).await;
    let mut watched = Vec::new();
    let mut cursor = Uuid::nil();
    loop {
        let batch = store
            .settled_audit_events(&of_app(written.app_a), cursor, 13)
            .await
            .expect("a poll");
        assert!(batch.len() <= 13);
        let Some(last) = batch.last() else {
            break;
        };
        cursor = last.event_id;
        watched.extend(ids(&batch));
    }
    let oldest_first: Vec<Uuid> = newest_first.into_iter().rev().collect();
    assert_eq!(watched, oldest_first, "each event once, oldest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_whole_packs_that_are_older_and_counts_their_events() {
    let written = write_events().await;
    let db = connect_postgres(&written.database_url)
        .await
        .expect("connect");
    let aged: i32 = db
        .query_one(
            "UPDATE audit_event_packs
             SET first_event_id = audit_uuidv7_floor(now() - interval '91 days')
             WHERE first_event_id = (SELECT first_event_id FROM audit_event_packs ORDER BY first_event_id LIMIT 1)
             RETURNING event_count",
            &[],
        )
        .await
        .expect("age the oldest pack")
        .get(0);
    let retention = devicelink_registration::janitor::DEFAULT_AUDIT_RETENTION;
    let purged = written
        .store
        .purge_audit_events(retention, 10)
        .await
        .expect("purge");
    assert_eq!(purged, aged as u64, "the aged pack's events, nothing else");
    assert_eq!(
        written
            .store
            .purge_audit_events(retention, 10)
            .await
            .expect("purge"),
        0
    );
    let total = (MINTS_OF_A + MINTS_OF_A / ROW_EVERY + MINTS_OF_B) as i64;
    assert_eq!(
        stored_count(&written.database_url).await,
        total - i64::from(aged)
    );
}
