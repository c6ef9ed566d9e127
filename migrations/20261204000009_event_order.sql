-- Change: records on every event the id of the transaction that wrote it
-- (xid8), so readers can page through all events in an order in which an
-- event committed late by a concurrent transaction is never skipped.
-- Rollback: forward-only. The previous binary ignores the column; events
-- written before this migration all carry the migration's transaction id,
-- which keeps them ahead of every later event.

ALTER TABLE events
    ADD COLUMN transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX events_transaction_order ON events (transaction_id, global_position);
