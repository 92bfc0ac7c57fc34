-- idemsql: the idempotency table, one row per key.
-- +goose Up
-- Times are INTEGER unix milliseconds (UTC). TEXT keys compare with the
-- BINARY collation: byte for byte. STRICT rejects a value of the wrong type
-- instead of storing it under another type that would never compare equal.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    idem_key      TEXT NOT NULL PRIMARY KEY,
    fingerprint   BLOB,
    status        TEXT NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed')),
    -- JSON text: json_extract(result, '$.id') and ->> work on it.
    result        TEXT,
    error_class   TEXT,
    error_message TEXT,
    attempt       INTEGER NOT NULL DEFAULT 1,
    owner         TEXT,
    lease_until   INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    completed_at  INTEGER,
    expires_at    INTEGER NOT NULL,
    -- The progress of a RunSteps operation, as JSON text; NULL for other keys.
    steps         TEXT
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
CREATE INDEX IF NOT EXISTS idempotency_keys_lease_idx ON idempotency_keys (lease_until) WHERE status = 'in_progress';

-- +goose Down
DROP TABLE IF EXISTS idempotency_keys;
