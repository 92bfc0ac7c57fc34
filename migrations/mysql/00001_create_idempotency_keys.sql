-- idemsql: the idempotency table, one row per key. MySQL 8 and MariaDB 10.6+.
-- +goose Up
CREATE TABLE IF NOT EXISTS idempotency_keys (
    -- VARBINARY: keys compare byte for byte. A _ci or PAD SPACE collation
    -- would make 'ABC' = 'abc' and 'a' = 'a ': false duplicates.
    idem_key      VARBINARY(255) NOT NULL,
    fingerprint   VARBINARY(32) NULL,
    status        VARCHAR(16) NOT NULL,
    -- JSON text kept byte for byte, not MySQL 8's JSON type: that keeps a
    -- binary form and gives back a re-serialised text (large or fractional
    -- numbers as doubles, object keys reordered), so a replay could differ
    -- from the first answer. The check keeps it JSON; JSON_EXTRACT and ->>
    -- read it. (MariaDB's JSON is this LONGTEXT with such a check.)
    result        LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    error_class   VARCHAR(255) NULL,
    error_message TEXT NULL,
    attempt       BIGINT NOT NULL DEFAULT 1,
    owner         VARCHAR(255) NULL,
    -- DATETIME(6) in UTC, written with UTC_TIMESTAMP(6).
    lease_until   DATETIME(6) NULL,
    created_at    DATETIME(6) NOT NULL,
    updated_at    DATETIME(6) NOT NULL,
    completed_at  DATETIME(6) NULL,
    expires_at    DATETIME(6) NOT NULL,
    -- The progress of a RunSteps operation, as JSON text; NULL for other keys.
    steps         LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    PRIMARY KEY (idem_key),
    KEY idempotency_keys_expires_at_idx (expires_at),
    KEY idempotency_keys_lease_idx (status, lease_until),
    CONSTRAINT idempotency_keys_status_chk CHECK (status IN ('in_progress', 'completed', 'failed')),
    CONSTRAINT idempotency_keys_result_json_chk CHECK (result IS NULL OR JSON_VALID(result))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE IF EXISTS idempotency_keys;
