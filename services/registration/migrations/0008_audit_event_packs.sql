-- Audit events stored several to a row (a pack) rather than one row each:
-- a row and its index entries cost Postgres far more than the event's
-- bytes. Two kinds of packs:
--   * the events of one change, written by the statement that makes it
--     (a new user's redemption: `code_redeemed` and `install_activated`),
--     which all concern one user and install;
--   * the events a service's buffer writes in a batch that name no user,
--     install or person (mints, most refusals, rate-limit counts), one
--     pack per batch, app and type.
-- See devicelink_shared::audit_pack.
--
-- A pack's events have consecutive ids: its first_event_id plus their
-- place in the pack (below 256). A first_event_id is a UUIDv7 from
-- Postgres's clock whose last byte is zero, so a pack's ids fill an
-- aligned block of 256 that no other pack shares (62 random bits less the
-- last byte's 8; the primary key rejects the same block twice): packs never
-- interleave, and ordering packs by first_event_id orders their events.
CREATE TABLE audit_event_packs (
    first_event_id     uuid PRIMARY KEY,
    -- The types of its events, each once (as audit_events.type).
    types              text[] NOT NULL,
    app_id             uuid,
    -- The user and install every event of the pack concerns, if any.
    user_id            uuid,
    install_id         uuid,
    -- HMAC-SHA256 of the external id, for the events of the pack that name
    -- the person (`code_redeemed`); cleared when the user is erased.
    external_id_hash   bytea CHECK (length(external_id_hash) = 32),
    event_count        integer NOT NULL CHECK (event_count BETWEEN 1 AND 256),
    -- The earliest and latest `time` of its events, so that a read by time
    -- skips a pack without opening it.
    first_occurred_at  timestamptz NOT NULL,
    last_occurred_at   timestamptz NOT NULL,
    -- The events: devicelink_shared::audit_pack::AuditPack, encoded. Stored
    -- uncompressed: it is mostly random bytes (ids, hashes), on which
    -- compression only spends CPU.
    pack               bytea NOT NULL
);
ALTER TABLE audit_event_packs ALTER pack SET STORAGE EXTERNAL;
CREATE INDEX audit_event_packs_by_app ON audit_event_packs (app_id, first_event_id);
CREATE INDEX audit_event_packs_by_user ON audit_event_packs (user_id, first_event_id)
    WHERE user_id IS NOT NULL;
