-- idemsql: the idempotency table, one row per key.
-- +goose Up
CREATE TABLE IF NOT EXISTS idempotency_keys (
    -- COLLATE "C": keys compare byte for byte, and the index is the cheapest.
    idem_key      text COLLATE "C" NOT NULL PRIMARY KEY,
    fingerprint   bytea,
    status        text NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed')),
    -- json, not jsonb: stored exactly as written (no re-parse on the hot
    -- path, \u0000 accepted) and still queryable with ->, ->> and casts.
    result        json,
    error_class   text,
    error_message text,
    attempt       bigint NOT NULL DEFAULT 1,
    owner         text,
    lease_until   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at  timestamptz,
    expires_at    timestamptz NOT NULL,
    -- The progress of a RunSteps operation, as JSON text; NULL for other keys.
    steps         text
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
CREATE INDEX IF NOT EXISTS idempotency_keys_lease_idx ON idempotency_keys (lease_until) WHERE status = 'in_progress';

-- +goose Down
DROP TABLE IF EXISTS idempotency_keys;
