-- idemsql: the progress of multi-step operations (RunSteps). MySQL 8.0.12+,
-- MariaDB 10.3+.
-- +goose Up
-- ALGORITHM=INSTANT changes the data dictionary only: no table copy, no
-- rebuild, and on Galera a short total-order DDL; a server that could not
-- add the column this way refuses the statement instead of copying the
-- table. The column is LONGTEXT (JSON text, kept byte for byte, like
-- result); the library writes only valid JSON into it.
ALTER TABLE idempotency_keys
    ADD COLUMN steps LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ALGORITHM=INSTANT;

-- +goose Down
ALTER TABLE idempotency_keys DROP COLUMN steps;
