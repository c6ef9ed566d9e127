-- Change: creates the tables of signed status notifications to clients:
-- notification_endpoints (where a client wants them, with the signing
-- secret), notifications (the outbox, one row per endpoint and final payout
-- event, written in the same transaction as the event) and
-- notification_attempts (every delivery attempt and its result).
-- Rollback: forward-only. The previous binary ignores these tables, so a bad
-- release is rolled back by deploying it; pending rows are delivered once a
-- binary with the delivery worker runs again. Dropping the tables would lose
-- the registered endpoints and their secrets, so they are never dropped.

CREATE TABLE notification_endpoints
(
    endpoint_id                uuid PRIMARY KEY,
    client_id                  uuid        NOT NULL REFERENCES clients (client_id),
    url                        text        NOT NULL,
    description                text,
    -- Standard Webhooks secret (`whsec_` and base64) that signs deliveries.
    -- It is returned only by the request that creates or rotates it.
    secret                     text        NOT NULL,
    -- The secret before the last rotation, which also signs deliveries
    -- until previous_secret_expires_at.
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL,
    secret_rotated_at          timestamptz,
    -- Set when the endpoint answered 410 Gone; it gets no more deliveries.
    disabled_at                timestamptz,
    -- Set by DELETE; the row stays because notifications refer to it.
    deleted_at                 timestamptz
);

-- The outbox insert looks up the active endpoints of one client, and cursor
-- pages list them newest first.
CREATE INDEX notification_endpoints_client
    ON notification_endpoints (client_id, created_at DESC, endpoint_id DESC)
    WHERE deleted_at IS NULL;

CREATE TABLE notifications
(
    -- Shown as `msg_` and the UUID's 32 hex digits, the `webhook-id` of
    -- every attempt.
    notification_id    uuid PRIMARY KEY,
    endpoint_id        uuid        NOT NULL REFERENCES notification_endpoints (endpoint_id),
    client_id          uuid        NOT NULL,
    payout_id          uuid        NOT NULL,
    event_type         text        NOT NULL
        CHECK (event_type IN ('payout.succeeded', 'payout.failed', 'payout.reversed')),
    -- The payouts row as it was when the event committed; the payload's
    -- `data` is built from it, so every attempt describes that change.
    payout             jsonb       NOT NULL,
    -- pending: to deliver; delivered: a 2xx arrived; failed: the retry window
    -- ended without a 2xx; disabled: the endpoint answered 410 or was deleted.
    status             text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'disabled')),
    -- Attempts so far, across redeliveries; the number of the last attempt.
    attempts           integer     NOT NULL DEFAULT 0,
    -- Attempts since retry_window_start, which sets the next backoff delay.
    attempts_in_window integer     NOT NULL DEFAULT 0,
    -- Start of the current retry window: the event, or the last redelivery.
    retry_window_start timestamptz NOT NULL,
    next_attempt_at    timestamptz,
    -- A worker holds the notification until this time; after a crash the
    -- lease runs out and another worker delivers it.
    lease_until        timestamptz,
    created_at         timestamptz NOT NULL,
    delivered_at       timestamptz,
    updated_at         timestamptz NOT NULL,
    -- One notification per endpoint, payout and event type, so projecting
    -- the same event again adds nothing.
    UNIQUE (endpoint_id, payout_id, event_type)
);

CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_client ON notifications (client_id, created_at DESC, notification_id DESC);
CREATE INDEX notifications_payout ON notifications (payout_id);

CREATE TABLE notification_attempts
(
    notification_id uuid        NOT NULL REFERENCES notifications (notification_id),
    attempt         integer     NOT NULL CHECK (attempt > 0),
    started_at      timestamptz NOT NULL,
    -- The HTTP status, or NULL when no response arrived.
    status_code     smallint,
    -- Why the attempt failed without a response (timeout, connection,
    -- rejected destination), or NULL.
    error           text,
    duration_ms     integer     NOT NULL,
    -- When the next attempt is due, or NULL when this one was the last.
    next_attempt_at timestamptz,
    PRIMARY KEY (notification_id, attempt)
);
