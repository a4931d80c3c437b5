//! The statements of a redemption, in the order they are sent.
//!
//! Public so that the benchmark's SQL floor issues exactly these statements,
//! one after another, beside the service that pipelines them.

/// Records the redemption. No `ON CONFLICT`: a code redeemed already must
/// fail the statement, so that the `COMMIT` sent right behind it in the same
/// round trip rolls the whole attempt back.
pub const CLAIM_CODE: &str =
    "INSERT INTO redeemed_codes (code_hash, app_id, device_id, token_nonce, user_id, install_id, restored)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The constraint [`CLAIM_CODE`] violates when the code was redeemed already.
pub const CODE_ALREADY_CLAIMED: &str = "redeemed_codes_pkey";

/// Creates the user or finds the existing one, and locks its row so that
/// redemptions of one user arbitrate one at a time. A new user is inserted
/// with [`NEW_USER_EPOCH`], the epoch of its first activation. `xmax = 0`
/// holds for a row this statement inserted.
pub const UPSERT_USER: &str =
    "INSERT INTO users (id, app_id, external_id, epoch) VALUES ($1, $2, $3, $4)
     ON CONFLICT (app_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
     RETURNING id, epoch, (xmax = 0) AS created";

/// A new user's first redemption always activates its install (no other
/// install of the user exists to keep), so the user row is born with that
/// activation's epoch instead of being written twice.
pub const NEW_USER_EPOCH: i64 = 1;

/// The user's active install and the device's live install, locked. The
/// user is found by external id, so this runs in the same round trip as
/// [`UPSERT_USER`], whose row it sees.
pub const INSTALLS_IN_PLAY: &str =
    "SELECT id, user_id, device_id, form_factor, state, epoch FROM installs
     WHERE (user_id = (SELECT id FROM users WHERE app_id = $1 AND external_id = $2) AND state = 'active')
        OR (app_id = $1 AND device_id = $3 AND state <> 'reset')
     FOR UPDATE";

/// The app's SDK configuration, returned to the device.
pub const SDK_CONFIG: &str = "SELECT sdk_config FROM apps WHERE id = $1";

pub const SUPERSEDE: &str =
    "UPDATE installs SET state = 'inactive', reason = 'superseded', changed_at = now()
     WHERE id = $1";

/// Binds a new install. From `platform` on, its parameters are those of
/// [`REBIND_INSTALL`] from `$2` on, in the same order.
pub const INSERT_INSTALL: &str =
    "INSERT INTO installs (id, app_id, user_id, device_id, platform, form_factor, model,
         os_version, app_version, sdk_version, bundle_id, token_hash, state, reason, epoch)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
     RETURNING changed_at";

/// Re-binds the device's own install; `changed_at` moves only when the
/// status does.
pub const REBIND_INSTALL: &str = "UPDATE installs SET
         platform = $2, form_factor = $3, model = $4, os_version = $5, app_version = $6,
         sdk_version = $7, bundle_id = $8, token_hash = $9,
         changed_at = CASE WHEN (state, reason, epoch) IS DISTINCT FROM ($10::text, $11::text, $12::bigint)
                           THEN now() ELSE changed_at END,
         state = $10, reason = $11, epoch = $12
     WHERE id = $1
     RETURNING changed_at";

pub const SET_USER_EPOCH: &str = "UPDATE users SET epoch = $2 WHERE id = $1";

/// Announces status changes; delivered by Postgres on commit.
pub const NOTIFY: &str = "SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id";

/// Every statement of the transaction, prepared together (one round trip on
/// a new connection, none once cached).
pub const STATEMENTS: [&str; 9] = [
    UPSERT_USER,
    INSTALLS_IN_PLAY,
    SDK_CONFIG,
    SUPERSEDE,
    INSERT_INSTALL,
    REBIND_INSTALL,
    SET_USER_EPOCH,
    CLAIM_CODE,
    NOTIFY,
];
