-- idemsql: keep stored results exactly as written. MySQL 8.
-- +goose Up
-- MySQL 8's JSON type keeps a binary form and gives back a re-serialised
-- text: large or fractional numbers become doubles, object keys are
-- reordered, so a replay could differ from the first answer. LONGTEXT keeps
-- the bytes; the CHECK keeps it JSON, and JSON_EXTRACT and ->> still read
-- it. (MariaDB's JSON was already LONGTEXT with such a check.)
ALTER TABLE idempotency_keys
    MODIFY result LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD CONSTRAINT idempotency_keys_result_json_chk CHECK (result IS NULL OR JSON_VALID(result));

-- +goose Down
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_result_json_chk,
    MODIFY result JSON NULL;
