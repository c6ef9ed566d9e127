-- Change: adds automatic retries of stored webhook deliveries that could not
-- be applied for a transient reason (a database error, an unconfirmed MoMo
-- report, a payout not yet visible): the next retry time, the retry count, a
-- lease for the retry worker, and one row per retry attempt.
-- Rollback: forward-only. The previous binary ignores the new columns and
-- table; deliveries waiting for a retry can be replayed by hand meanwhile.

ALTER TABLE webhook_deliveries
    ADD COLUMN retry_attempts    integer NOT NULL DEFAULT 0,
    ADD COLUMN next_retry_at     timestamptz,
    ADD COLUMN retry_lease_until timestamptz;

CREATE INDEX webhook_deliveries_retry_due ON webhook_deliveries (next_retry_at)
    WHERE next_retry_at IS NOT NULL;

CREATE TABLE webhook_retry_attempts
(
    webhook_id   uuid        NOT NULL REFERENCES webhook_deliveries (webhook_id),
    attempt      integer     NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    verdict      text        NOT NULL,
    detail       text,
    PRIMARY KEY (webhook_id, attempt)
);
