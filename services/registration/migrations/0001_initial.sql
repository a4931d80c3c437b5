-- devicelink's schema. registration owns it and migrates it on start-up;
-- authcode only reads `api_keys` (and writes `last_used_at`).

CREATE TABLE apps (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    sdk_config  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys: only the hash of the secret is kept. The key id is public.
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,
    app_id        uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    secret_hash   bytea NOT NULL CHECK (length(secret_hash) = 32),
    scopes        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_by_app ON api_keys (app_id, created_at DESC);

-- One user per (app, external id): restoration relies on this constraint.
CREATE TABLE users (
    id           uuid PRIMARY KEY,
    app_id       uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    external_id  text NOT NULL,
    -- The number of the user's latest activation; each one adds one.
    epoch        bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_one_per_external_id UNIQUE (app_id, external_id)
);

-- A user bound to a device. Reset installs stay, without a token, as history.
CREATE TABLE installs (
    id           uuid PRIMARY KEY,
    app_id       uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id    text NOT NULL,
    platform     text NOT NULL CHECK (platform IN ('ios', 'android')),
    form_factor  text NOT NULL CHECK (form_factor IN ('phone', 'tablet')),
    model        text NOT NULL,
    os_version   text NOT NULL,
    app_version  text NOT NULL,
    sdk_version  text NOT NULL,
    bundle_id    text NOT NULL,
    state        text NOT NULL CHECK (state IN ('active', 'inactive', 'reset')),
    reason       text CHECK (reason IN ('superseded', 'phone_preferred', 'reset', 'erased')),
    -- The user epoch this install was last activated in; 0 if never.
    epoch        bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    -- SHA-256 of the install token; NULL once the install is reset.
    token_hash   bytea UNIQUE CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    changed_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT installs_reason_matches_state CHECK ((state = 'active') = (reason IS NULL)),
    CONSTRAINT installs_no_token_after_reset CHECK (state <> 'reset' OR token_hash IS NULL)
);
-- The invariant "at most one ACTIVE install per user", held by the database
-- whatever the code does and however many replicas run.
CREATE UNIQUE INDEX installs_one_active_per_user ON installs (user_id) WHERE state = 'active';
-- A device holds at most one live (not reset) install, hence one user.
CREATE UNIQUE INDEX installs_one_live_per_device ON installs (app_id, device_id) WHERE state <> 'reset';
CREATE INDEX installs_by_user ON installs (user_id, created_at DESC);

-- Codes that were redeemed. The primary key makes a code single-use across
-- replicas: a second redemption waits for the first transaction and then
-- conflicts. The row also answers a retry from the same device.
CREATE TABLE redeemed_codes (
    code_hash    bytea PRIMARY KEY CHECK (length(code_hash) = 32),
    app_id       uuid NOT NULL,
    device_id    text NOT NULL,
    user_id      uuid REFERENCES users (id) ON DELETE CASCADE,
    install_id   uuid,
    restored     boolean NOT NULL DEFAULT false,
    -- Mixed with the code to derive the install token, so a retry can be
    -- answered with the same token without storing it.
    token_nonce  bytea NOT NULL CHECK (length(token_nonce) = 16),
    redeemed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX redeemed_codes_by_time ON redeemed_codes (redeemed_at);

-- A used code presented again from another device.
CREATE TABLE code_replays (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code_hash  bytea NOT NULL,
    app_id     uuid NOT NULL,
    device_id  text NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now()
);
