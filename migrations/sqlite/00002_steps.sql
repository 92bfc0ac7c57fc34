-- idemsql: the progress of multi-step operations (RunSteps).
-- +goose Up
-- JSON text, NULL for a key that is not a RunSteps key. ADD COLUMN changes
-- only the schema: SQLite rewrites no row.
ALTER TABLE idempotency_keys ADD COLUMN steps TEXT;

-- +goose Down
ALTER TABLE idempotency_keys DROP COLUMN steps;
