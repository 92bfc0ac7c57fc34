-- idemsql: the progress of multi-step operations (RunSteps).
-- +goose Up
-- A nullable column without a default: PostgreSQL adds it to the catalog
-- only, without rewriting the table or holding its lock for long.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS steps text;

-- +goose Down
ALTER TABLE idempotency_keys DROP COLUMN IF EXISTS steps;
