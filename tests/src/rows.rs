//! What the tables of redemption hold, read straight from Postgres, to
//! check that a refused or failed call wrote nothing.

use std::collections::BTreeMap;

/// The tables a redemption writes: users, their installs, claimed codes
/// and recorded replays.
pub const REDEMPTION_TABLES: &[&str] = &["users", "installs", "redeemed_codes", "code_replays"];

/// Every row of [`REDEMPTION_TABLES`], as Postgres prints it, sorted: two
/// snapshots are equal exactly when nothing was inserted, changed or
/// deleted in between.
pub async fn redemption_rows(db: &tokio_postgres::Client) -> BTreeMap<&'static str, Vec<String>> {
    let mut snapshot = BTreeMap::new();
    for &table in REDEMPTION_TABLES {
        let rows = db
            .query(&format!("SELECT t::text FROM {table} t ORDER BY 1"), &[])
            .await
            .unwrap_or_else(|error| panic!("read {table}: {error}"));
        snapshot.insert(table, rows.iter().map(|row| row.get(0)).collect());
    }
    snapshot
}

/// How many rows a redemption of `code` for `external_id` left: users of
/// that external id, their installs, and claims of the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedemptionCounts {
    /// Users with the external id.
    pub users: i64,
    /// Installs of those users.
    pub installs: i64,
    /// Claims of the code.
    pub redeemed_codes: i64,
}

/// Counts what a redemption of `code` for `external_id` wrote.
pub async fn redemption_counts(
    db: &tokio_postgres::Client,
    code: &str,
    external_id: &str,
) -> RedemptionCounts {
    let code_hash = devicelink_shared::auth_code::AuthCode::parse(code)
        .expect("an auth code")
        .hash();
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM users WHERE external_id = $1),
                    (SELECT count(*) FROM installs i JOIN users u ON u.id = i.user_id
                      WHERE u.external_id = $1),
                    (SELECT count(*) FROM redeemed_codes WHERE code_hash = $2)",
            &[&external_id, &code_hash.as_bytes().as_slice()],
        )
        .await
        .expect("count a redemption's rows");
    RedemptionCounts {
        users: row.get(0),
        installs: row.get(1),
        redeemed_codes: row.get(2),
    }
}
