//! Redemptions already made: answering a retry, recording a replay, and
//! purging records that no longer protect anything.
//!
//! A retry is answered only while the code would still have been live in
//! Redis (`code_expires_at`): past that, whoever holds a used code and the
//! device id gets nothing back. Replays are one row per (code, device) with
//! a count, and go with their redemption record (`ON DELETE CASCADE`),
//! whether the janitor purges it or the user is erased.

use crate::audit::AuditRow;
use devicelink_shared::code_challenge::CodeChallenge;
use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::Sql;
use devicelink_shared::validate::AppId;
use tokio_postgres::types::Type;

use super::pipelined_tx::PipelinedTransaction;
use super::redeem::Redeemed;
use super::redeem_sql::SDK_CONFIG;
use super::{STATUS_BY_ID, Store, status_from_row};
use crate::domain::{InstallId, UserId};
use crate::error::StoreError;
use crate::install_token::TokenNonce;

/// A redemption already made, while its code would still be live: to
/// answer a retry or refuse a replay.
#[derive(Debug)]
pub struct PastRedemption {
    /// The app it was made with.
    pub app_id: AppId,
    /// The device that made it.
    pub device_id: String,
    /// Its user.
    pub user_id: UserId,
    /// Its install.
    pub install_id: InstallId,
    /// Whether the user was restored.
    pub restored: bool,
    /// The nonce its install token was derived with.
    pub token_nonce: TokenNonce,
    /// The challenge its code was minted with, if it was device-bound: a
    /// retry must prove possession as the redemption did.
    pub code_challenge: Option<CodeChallenge>,
}

const FIND_REDEMPTION: Sql = Sql::new(
    "SELECT app_id, device_id, user_id, install_id, restored, token_nonce, code_challenge
     FROM redeemed_codes
     WHERE code_hash = $1 AND user_id IS NOT NULL AND code_expires_at > now()",
    &[Type::BYTEA],
);

/// Counts a replay on the (code, device) row. Selected from the redemption
/// so that a record purged or erased meanwhile leaves nothing behind. The
/// replay's audit event (`$4` its type, `$5` its encoding) is written with
/// it, naming the user the code was redeemed for.
const RECORD_REPLAY: Sql = Sql::new(
    "WITH replay AS (INSERT INTO code_replays (code_hash, device_id, app_id)
         SELECT code_hash, $3, $2 FROM redeemed_codes WHERE code_hash = $1
         ON CONFLICT (code_hash, device_id) DO UPDATE
             SET count = code_replays.count + 1, last_seen_at = now(), app_id = EXCLUDED.app_id
         RETURNING code_hash)
     INSERT INTO audit_events (app_id, type, user_id, event)
     SELECT $2, $4, redeemed.user_id, $5 FROM replay JOIN redeemed_codes redeemed USING (code_hash)",
    &[Type::BYTEA, Type::UUID, Type::TEXT, Type::TEXT, Type::BYTEA],
);

/// [`SDK_CONFIG`]: `$1` the app id.
const SDK_CONFIG_SQL: Sql = Sql::new(SDK_CONFIG, &[Type::UUID]);

impl Store {
    /// The completed redemption of a code, if there is one and the code
    /// has not expired yet.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.find_redemption", skip_all, fields(db.system = "postgresql"))]
    pub async fn find_redemption(
        &self,
        code_hash: &SecretHash,
    ) -> Result<Option<PastRedemption>, StoreError> {
        let row = self
            .connection()
            .await?
            .call(async |client| {
                FIND_REDEMPTION
                    .query_opt(client, &[&code_hash.as_bytes().as_slice()])
                    .await
            })
            .await??;
        let Some(row) = row else {
            return Ok(None);
        };
        let nonce: Vec<u8> = row.try_get(5)?;
        let code_challenge: Option<Vec<u8>> = row.try_get(6)?;
        Ok(Some(PastRedemption {
            app_id: AppId(row.try_get(0)?),
            device_id: row.try_get(1)?,
            user_id: UserId(row.try_get(2)?),
            install_id: InstallId(row.try_get(3)?),
            restored: row.try_get(4)?,
            token_nonce: nonce
                .try_into()
                .map_err(|_| StoreError::internal("stored token nonce has the wrong length"))?,
            code_challenge: CodeChallenge::from_stored(&code_challenge.unwrap_or_default())
                .map_err(|error| StoreError::internal(error.to_string()))?,
        }))
    }

    /// Records a used code presented again by another device: one row per
    /// device, counting its attempts.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.record_replay", skip_all, fields(db.system = "postgresql"))]
    pub async fn record_replay(
        &self,
        code_hash: &SecretHash,
        app_id: AppId,
        device_id: &str,
        event: &AuditRow,
    ) -> Result<(), StoreError> {
        self.connection()
            .await?
            .call(async |client| {
                RECORD_REPLAY
                    .execute(
                        client,
                        &[
                            &code_hash.as_bytes().as_slice(),
                            &app_id.0,
                            &device_id,
                            &event.type_name,
                            &event.event,
                        ],
                    )
                    .await
            })
            .await??;
        Ok(())
    }

    /// The install status and SDK configuration a retried redemption is
    /// answered with.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.redemption_result", skip_all, fields(db.system = "postgresql"))]
    pub async fn redemption_result(
        &self,
        past: &PastRedemption,
    ) -> Result<Option<Redeemed>, StoreError> {
        let mut tx = PipelinedTransaction::begin(
            self.connection().await?,
            PipelinedTransaction::BEGIN_READ_ONLY,
        )
        .await?;
        let read = read_result(&mut tx, past).await;
        match read {
            Ok(Some(result)) => {
                tx.commit().await?;
                Ok(Some(result))
            }
            other => {
                tx.rollback().await;
                other
            }
        }
    }
}

/// The install's status and the app's SDK configuration, in one snapshot
/// (each statement a round trip of its own).
async fn read_result(
    tx: &mut PipelinedTransaction,
    past: &PastRedemption,
) -> Result<Option<Redeemed>, StoreError> {
    let status = tx
        .call(async |client| STATUS_BY_ID.query_opt(client, &[&past.install_id.0]).await)
        .await??;
    let Some(status) = status.map(|row| status_from_row(&row)).transpose()? else {
        return Ok(None);
    };
    let sdk_config = tx
        .call(async |client| SDK_CONFIG_SQL.query_opt(client, &[&past.app_id.0]).await)
        .await??
        .map(|row| row.try_get(0))
        .transpose()?
        .ok_or_else(|| StoreError::internal("the app vanished"))?;
    Ok(Some(Redeemed {
        user_id: past.user_id,
        install_id: past.install_id,
        restored: past.restored,
        status,
        sdk_config,
        superseded: None,
    }))
}

/// Deletes up to 1,000 redemption records older than the retention at a
/// time, and with them their replays (`ON DELETE CASCADE`).
const PURGE_REDEMPTIONS: Sql = Sql::new(
    "DELETE FROM redeemed_codes WHERE code_hash IN (
         SELECT code_hash FROM redeemed_codes WHERE redeemed_at < now() - make_interval(secs => $1)
         LIMIT 1000
     )",
    &[Type::FLOAT8],
);

impl Store {
    /// Deletes redemption records older than `retention`, with their
    /// replays; returns how many redemption records.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.purge_redemptions", skip_all, fields(db.system = "postgresql"))]
    pub async fn purge_redemptions(
        &self,
        retention: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let mut connection = self.connection().await?;
        let mut purged = 0;
        loop {
            // Each batch is a call of its own, under the store deadline.
            let deleted = connection
                .call(async |client| {
                    PURGE_REDEMPTIONS
                        .execute(client, &[&retention.as_secs_f64()])
                        .await
                })
                .await??;
            purged += deleted;
            if deleted < 1000 {
                return Ok(purged);
            }
        }
    }
}
