-- Change: creates projection_checkpoints, the position in the event feed up
-- to which the catch-up projector has applied events to the read models.
-- Rollback: forward-only. The previous binary ignores the table; deleting a
-- row makes the projector start over, which is safe because every read-model
-- write is guarded by the event's (aggregate id, sequence).

CREATE TABLE projection_checkpoints
(
    name            text PRIMARY KEY,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
