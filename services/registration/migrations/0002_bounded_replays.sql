-- Redemption records that a caller cannot grow, and that end with the code
-- and the user they are about.

-- When the code would have expired in Redis: a retry from the redeeming
-- device is answered only until then. The default covers rows written by
-- replicas of the previous version during a rollout: a code is minted
-- before it is redeemed and lives at most an hour, so an hour after the
-- redemption is never earlier than its real expiry. Rows already there get
-- the same bound from their own redemption time.
ALTER TABLE redeemed_codes
    ADD COLUMN code_expires_at timestamptz NOT NULL DEFAULT now() + interval '1 hour';
UPDATE redeemed_codes SET code_expires_at = redeemed_at + interval '1 hour';

-- A used code presented again from another device: one row per (code,
-- device), however often it comes, so a caller repeating a replay adds
-- nothing. The row goes with the code's redemption record, which the
-- janitor purges and which goes with its user when the user is erased
-- (device ids are personal data).
ALTER TABLE code_replays RENAME TO code_replays_unfolded;
ALTER INDEX code_replays_pkey RENAME TO code_replays_unfolded_pkey;

CREATE TABLE code_replays (
    code_hash      bytea NOT NULL REFERENCES redeemed_codes (code_hash) ON DELETE CASCADE,
    device_id      text NOT NULL,
    -- The app the latest replay named.
    app_id         uuid NOT NULL,
    count          bigint NOT NULL DEFAULT 1 CHECK (count > 0),
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code_hash, device_id)
);

-- Existing replays, folded; those whose redemption is gone were kept past
-- their purpose and are dropped.
INSERT INTO code_replays (code_hash, device_id, app_id, count, first_seen_at, last_seen_at)
SELECT replay.code_hash, replay.device_id,
       (array_agg(replay.app_id ORDER BY replay.seen_at DESC))[1],
       count(*), min(replay.seen_at), max(replay.seen_at)
FROM code_replays_unfolded replay
JOIN redeemed_codes redeemed ON redeemed.code_hash = replay.code_hash
GROUP BY replay.code_hash, replay.device_id;

DROP TABLE code_replays_unfolded;
