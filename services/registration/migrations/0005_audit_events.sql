-- The audit event stream (devicelink.v1.AuditEvent), written as a
-- transactional outbox: an event that records a Postgres change is
-- inserted by the statement or transaction that makes the change.

-- A UUIDv7 from Postgres's clock (Postgres 17 and older have no
-- uuidv7()): 48 bits of Unix milliseconds, version 7, 12 bits of the
-- millisecond's fraction (a microsecond's precision, as Postgres 18's own
-- uuidv7() does, so events written a microsecond apart sort in order),
-- then the variant and 62 random bits. Sorting by it sorts by time.
CREATE FUNCTION audit_uuidv7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        substring(int8send(floor(now_ms)::bigint) FROM 3)
        || int2send((28672 + floor((now_ms - floor(now_ms)) * 4096))::smallint)
        || substring(uuid_send(gen_random_uuid()) FROM 9),
        'hex')::uuid
    FROM (SELECT extract(epoch FROM clock_timestamp()) * 1000 AS now_ms) AS clock
$$;

-- The smallest UUIDv7 of the millisecond `at` falls in: the bound below
-- which every event id was given before `at`.
CREATE FUNCTION audit_uuidv7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(
        substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
        || '\x70000000000000000000'::bytea,
        'hex')::uuid
$$;

CREATE TABLE audit_events (
    event_id          uuid PRIMARY KEY DEFAULT audit_uuidv7(),
    occurred_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The AuditEventType's name without its prefix (`code_redeemed`).
    type              text NOT NULL,
    -- No foreign keys: events outlive the app, user, install or key they
    -- name (they record that it was erased, among other things).
    app_id            uuid,
    user_id           uuid,
    install_id        uuid,
    api_key_id        text,
    -- HMAC-SHA256 of the external id; cleared when the user is erased.
    external_id_hash  bytea CHECK (length(external_id_hash) = 32),
    -- The encoded AuditEvent, without what the columns above hold.
    event             bytea NOT NULL
);
CREATE INDEX audit_events_by_app ON audit_events (app_id, event_id);
CREATE INDEX audit_events_by_user ON audit_events (user_id, event_id) WHERE user_id IS NOT NULL;
CREATE INDEX audit_events_by_subject ON audit_events (app_id, external_id_hash) WHERE external_id_hash IS NOT NULL;
-- Retention purges by age.
CREATE INDEX audit_events_by_time ON audit_events (occurred_at);
