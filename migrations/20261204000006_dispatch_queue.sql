-- Change: creates dispatch_queue, the outbox of payouts to submit to their
-- provider and of submitted payouts whose status is polled. A row is written
-- in the same transaction as the PayoutRequested event, so the dispatcher
-- never scans every payout and never misses one.
-- Rollback: forward-only. The previous binary ignores the table; rows of
-- payouts requested meanwhile are picked up again once dispatch is back.

CREATE TABLE dispatch_queue
(
    payout_id       uuid PRIMARY KEY,
    provider        text        NOT NULL,
    -- ready: to submit; submitted: accepted, status polled until final;
    -- done: final status known.
    state           text        NOT NULL CHECK (state IN ('ready', 'submitted', 'done')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- A dispatcher holds a payout until this time; another one may take it
    -- over afterwards, which is how a crashed dispatcher's work resumes.
    lease_until     timestamptz,
    last_error      text,
    updated_at      timestamptz NOT NULL
);

CREATE INDEX dispatch_queue_due ON dispatch_queue (next_attempt_at) WHERE state <> 'done';
