//! The statements of a redemption.
//!
//! A redemption takes these steps ([`steps`], one statement each): create
//! or lock the user, lock the installs in play, read the app's SDK
//! configuration, supersede the user's active install, bind the device's
//! install, set the user's epoch, claim the code, announce what changed.
//! The service sends fewer statements than steps. A user that does not
//! exist yet needs no arbitration, so all of its steps are one statement
//! ([`CREATE_USER`]). Otherwise, where steps touch different tables they are
//! merged ([`UPSERT_USER`] also reads the SDK configuration;
//! [`INSERT_INSTALL`] and [`REBIND_INSTALL`] also claim the code and set the
//! user's epoch), and what is left is pipelined. Each statement saved is a
//! `Bind`/`Execute`/`Sync` exchange and an executor run less for Postgres.
//! The benchmark's SQL floor issues [`steps`] one after another, as a
//! service that neither merges nor pipelines would.
//!
//! The shared parts of a step and the statement it is merged into are
//! written once, in the macros below.

/// Creates the user or finds the existing one, locking its row.
macro_rules! upsert_user {
    () => {
        "INSERT INTO users (id, app_id, external_id, epoch) VALUES ($1, $2, $3, $4)
     ON CONFLICT (app_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
     RETURNING id, epoch, (xmax = 0) AS created"
    };
}

/// The columns of an install, in the order of its fifteen parameters.
macro_rules! install_columns {
    () => {
        "INSERT INTO installs (id, app_id, user_id, device_id, platform, form_factor, model,
         os_version, app_version, sdk_version, bundle_id, token_hash, state, reason, epoch)"
    };
}

/// A new install, from its fifteen parameters.
macro_rules! insert_install {
    () => {
        concat!(
            install_columns!(),
            "
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        )
    };
}

/// What the `install` CTE of the statements that bind an install returns
/// to the rest of the statement.
macro_rules! install_written {
    () => {
        " RETURNING id, app_id, user_id, device_id, changed_at)"
    };
}

/// The columns of a claimed code.
macro_rules! claim_columns {
    () => {
        "INSERT INTO redeemed_codes (code_hash, app_id, device_id, token_nonce, user_id, install_id, restored,
         code_expires_at, code_challenge)"
    };
}

/// The `claim` CTE behind an `install` CTE: claims the code for the install
/// written, so that it is never claimed without one, keeping the code's
/// expiry (`$20`) to bound how long a retry is answered and its challenge
/// (`$21`, NULL for a code not bound to a device) to hold a retry to the
/// same proof of possession.
macro_rules! claim {
    () => {
        concat!(
            ",
     claim AS (",
            claim_columns!(),
            " SELECT $16, app_id, device_id, $17, user_id, id, $18, $20, $21 FROM install)"
        )
    };
}

/// The tail of [`INSERT_INSTALL`] and [`REBIND_INSTALL`], behind their
/// `install` CTE: claims the code and sets the user's epoch (when it moved)
/// for the install written, writes the redemption's events (`$22` the
/// external id's keyed hash, `$23` to `$25` the events' pack), and answers
/// the install's `changed_at`.
macro_rules! claim_and_set_epoch {
    () => {
        concat!(
            claim!(),
            ",
     user_epoch AS (UPDATE users SET epoch = $19
         WHERE id = (SELECT user_id FROM install) AND epoch <> $19),
     audit AS (",
            audit_install_events!("install", "$22", "$23", "$24", "$25"),
            ")
     SELECT changed_at FROM install"
        )
    };
}

/// Writes the events of a change with the change (the audit outbox): one
/// `audit_event_packs` row ([`crate::audit::ChangePack`]: `$types` its
/// events' types, `$count` how many, `$pack` the events) for each row of
/// the CTE `$from`, which names the changed install as `id`, with its
/// `app_id` and `user_id`; `$hash` is the external id's keyed hash (NULL
/// for none), which the pack's `code_redeemed` event carries. A CTE that
/// wrote nothing writes no event.
///
/// One row for the change's two or three events, rather than a row each:
/// the new-user statement cost Postgres and the machine about 37 µs less
/// (`pgbench`, 16 clients, whole-machine CPU per statement: 467 against
/// 504 µs, medians of three alternating runs). The first id is a UUIDv7
/// from one clock reading, written out here (calling the PL/pgSQL
/// `audit_uuidv7()` cost Postgres about 14 µs).
macro_rules! audit_install_events {
    ($from:literal, $hash:literal, $types:literal, $count:literal, $pack:literal) => {
        concat!(
            "INSERT INTO audit_event_packs (first_event_id, types, app_id, user_id, install_id,
             external_id_hash, event_count, first_occurred_at, last_occurred_at, pack)
         SELECT encode(substring(int8send(floor(c.now_ms)::bigint) FROM 3)
                || int2send((28672 + floor((c.now_ms - floor(c.now_ms)) * 4096))::smallint)
                || ",
            devicelink_shared::audit_pack_first_id_tail!(),
            ", 'hex')::uuid, ",
            $types,
            "::text[], ",
            $from,
            ".app_id, ",
            $from,
            ".user_id, ",
            $from,
            ".id, ",
            $hash,
            "::bytea, ",
            $count,
            "::int4, c.at, c.at, ",
            $pack,
            "::bytea
         FROM ",
            $from,
            ", (SELECT at, date_part('epoch', at) * 1000 AS now_ms
               FROM (SELECT clock_timestamp() AS at) AS clock) AS c"
        )
    };
}

/// The constraint a code's claim violates when the code was redeemed
/// already.
pub const CODE_ALREADY_CLAIMED: &str = "redeemed_codes_pkey";

/// A new user's first redemption always activates its install (no other
/// install of the user exists to keep), so the user row is born with that
/// activation's epoch instead of being written twice.
pub const NEW_USER_EPOCH: i64 = 1;

/// Redeems a code whose user does not exist yet, the common case, in one
/// statement that is its own transaction (one round trip, no `BEGIN` or
/// `COMMIT`): creates the user, binds its first install and claims the
/// code. Nothing needs arbitrating: a new user has no install to keep, so
/// the install is active with the user's first epoch, and a device that
/// holds another user's live install fails the statement on
/// `installs_one_live_per_device`. When the user exists, `ON CONFLICT DO
/// NOTHING` leaves every part empty and the statement answers no row: the
/// redemption then runs as a transaction that arbitrates. (A concurrent
/// first redemption of the same user makes this one wait for its commit,
/// then find the user.) Parameters: `$1` to `$21` those of
/// [`INSERT_INSTALL`], then `$22` the external id, `$23` its keyed hash,
/// `$24` to `$26` the events of the redemption (their pack), written only
/// with it.
pub const CREATE_USER: &str = concat!(
    "WITH new_user AS (INSERT INTO users (id, app_id, external_id, epoch) VALUES ($3, $2, $22, $19)
     ON CONFLICT (app_id, external_id) DO NOTHING
     RETURNING id),
     install AS (",
    install_columns!(),
    "
     SELECT $1, $2, id, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM new_user",
    install_written!(),
    claim!(),
    ",
     audit AS (",
    audit_install_events!("install", "$23", "$24", "$25", "$26"),
    ")
     SELECT changed_at, (SELECT sdk_config FROM apps WHERE id = $2) FROM install"
);

/// Creates the user or finds the existing one, and locks its row so that
/// redemptions of one user arbitrate one at a time; also reads the app's
/// SDK configuration. A new user is inserted with [`NEW_USER_EPOCH`].
/// `xmax = 0` holds for a row this statement inserted.
pub const UPSERT_USER: &str = concat!(
    upsert_user!(),
    ", (SELECT sdk_config FROM apps WHERE id = $2)"
);

/// The user's active install and the device's live install, locked. The
/// user is found by external id, so this runs in the same round trip as
/// [`UPSERT_USER`], whose row it sees (a statement of its own: it must see
/// rows that a concurrent redemption committed while the upsert waited on
/// the user's lock).
pub const INSTALLS_IN_PLAY: &str =
    "SELECT id, user_id, device_id, form_factor, state, epoch FROM installs
     WHERE (user_id = (SELECT id FROM users WHERE app_id = $1 AND external_id = $2) AND state = 'active')
        OR (app_id = $1 AND device_id = $3 AND state <> 'reset')
     FOR UPDATE";

/// Deactivates the install a new activation replaces. A statement of its
/// own, sent before the new install is bound: one statement cannot retire
/// one active install and write another without tripping the one-active
/// index.
pub const SUPERSEDE: &str =
    "UPDATE installs SET state = 'inactive', reason = 'superseded', changed_at = now()
     WHERE id = $1";

/// [`SUPERSEDE`] with its event (`install_deactivated`, which carries no
/// external id hash): `$2` to `$4` its pack. The benchmark's floor keeps
/// [`SUPERSEDE`] without it.
pub const SUPERSEDE_AUDITED: &str = concat!(
    "WITH superseded AS (UPDATE installs SET state = 'inactive', reason = 'superseded', changed_at = now()
     WHERE id = $1 RETURNING id, app_id, user_id) ",
    audit_install_events!("superseded", "NULL", "$2", "$3", "$4")
);

/// Binds a new install, claims the code and sets the user's epoch.
/// Parameters: `$1` install id, `$2` app id, `$3` user id, `$4` device id,
/// `$5`–`$15` what the device and arbitration set (in `INSERT INTO
/// installs` order), `$16` code hash, `$17` token nonce, `$18` restored,
/// `$19` the user's epoch, `$20` when the code expires, `$21` the code's
/// challenge, `$22` the external id's keyed hash, `$23` to `$25` the events
/// of the redemption (their pack).
///
/// The claim has no `ON CONFLICT`: a code redeemed already fails the
/// statement ([`CODE_ALREADY_CLAIMED`]), so the `COMMIT` behind it rolls the
/// whole attempt back.
pub const INSERT_INSTALL: &str = concat!(
    "WITH install AS (",
    insert_install!(),
    install_written!(),
    claim_and_set_epoch!()
);

/// Re-binds the device's own install, claims the code and sets the user's
/// epoch; the parameters of [`INSERT_INSTALL`]. `changed_at` moves only
/// when the status does.
pub const REBIND_INSTALL: &str = concat!(
    "WITH install AS (UPDATE installs SET
         platform = $5, form_factor = $6, model = $7, os_version = $8, app_version = $9,
         sdk_version = $10, bundle_id = $11, token_hash = $12,
         changed_at = CASE WHEN (state, reason, epoch) IS DISTINCT FROM ($13::text, $14::text, $15::bigint)
                           THEN now() ELSE changed_at END,
         state = $13, reason = $14, epoch = $15
     WHERE id = $1 AND app_id = $2 AND user_id = $3 AND device_id = $4",
    install_written!(),
    claim_and_set_epoch!()
);

/// The app's SDK configuration, on its own (answering a retry reads it so).
pub const SDK_CONFIG: &str = "SELECT sdk_config FROM apps WHERE id = $1";

/// Announces status changes; delivered by Postgres on commit.
pub const NOTIFY: &str = "SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id";

/// The steps of a redemption, one statement each, for a client that sends
/// them one by one (the benchmark's SQL floor).
pub mod steps {
    pub use super::{INSTALLS_IN_PLAY, NOTIFY, SDK_CONFIG, SUPERSEDE};

    /// Creates or locks the user: [`super::UPSERT_USER`] without the SDK
    /// configuration.
    pub const UPSERT_USER: &str = upsert_user!();

    /// Binds a new install: the first fifteen parameters of
    /// [`super::INSERT_INSTALL`].
    pub const INSERT_INSTALL: &str = concat!(insert_install!(), " RETURNING changed_at");

    /// Sets the user's epoch.
    pub const SET_USER_EPOCH: &str = "UPDATE users SET epoch = $2 WHERE id = $1";

    /// Claims the code, with its expiry as `$8` (the floor's codes are not
    /// device-bound).
    pub const CLAIM_CODE: &str = concat!(
        claim_columns!(),
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)"
    );
}
