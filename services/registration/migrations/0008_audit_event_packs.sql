-- Audit events that name no person, user or install (mints, most
-- refusals, rate-limit counts) are written by a buffer in batches: stored
-- as one row per batch, app and type (a pack) rather than one row per
-- event. A mint's own row and its two indexes cost Postgres about 9 µs of
-- CPU; its share of a pack about 1 µs.
--
-- A pack's events have consecutive ids: the pack's first_event_id plus
-- their position in the last 7 bytes. Every first_event_id is the first of
-- an aligned block of 2^56 ids (its last 7 bytes are zero) that no other
-- pack shares (the primary key), so packs never interleave: ordering packs
-- by first_event_id orders their events.
CREATE TABLE audit_event_packs (
    first_event_id     uuid PRIMARY KEY,
    -- The AuditEventType's name without its prefix, as audit_events.type.
    type               text NOT NULL,
    app_id             uuid,
    event_count        integer NOT NULL CHECK (event_count > 0),
    -- The earliest and latest `time` of its events, so that a read by time
    -- skips a pack without opening it.
    first_occurred_at  timestamptz NOT NULL,
    last_occurred_at   timestamptz NOT NULL,
    -- The events: devicelink_shared::audit_pack::AuditPack, encoded. Stored
    -- uncompressed: it is mostly random bytes (ids, hashes), which
    -- compression only spends CPU on.
    pack               bytea NOT NULL
);
ALTER TABLE audit_event_packs ALTER pack SET STORAGE EXTERNAL;
CREATE INDEX audit_event_packs_by_app ON audit_event_packs (app_id, first_event_id);
