-- Change: creates the webhook inbox (every delivery's raw bytes, headers,
-- peer address and verdict), the provider nonces and event ids already
-- accepted, and the record of operator replays.
-- Rollback: forward-only. The inbox is the only copy of what providers sent,
-- so it is never dropped; the previous binary ignores these tables.

CREATE TABLE webhook_deliveries
(
    webhook_id    uuid PRIMARY KEY,
    provider      text        NOT NULL,
    received_at   timestamptz NOT NULL,
    peer_addr     text,
    method        text        NOT NULL,
    path          text        NOT NULL,
    -- [[name, value], ...] in arrival order, without credentials.
    headers       jsonb       NOT NULL,
    -- The body exactly as received; NULL only for an oversized delivery.
    body          bytea,
    body_size     bigint      NOT NULL,
    -- received, applied, duplicate, pending, orphan, conflict, unconfirmed,
    -- rejected, malformed or oversized.
    verdict       text        NOT NULL,
    reason        text,
    replay_key    text,
    payout_id     uuid,
    report        jsonb,
    updated_at    timestamptz NOT NULL
);

CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at DESC, webhook_id DESC);
CREATE INDEX webhook_deliveries_verdict ON webhook_deliveries (verdict, received_at);
CREATE INDEX webhook_deliveries_payout ON webhook_deliveries (payout_id) WHERE payout_id IS NOT NULL;

-- A nonce or event id is accepted once per provider until it expires; a
-- replayed delivery older than the expiry is already stale by its timestamp.
CREATE TABLE webhook_replay_keys
(
    provider   text        NOT NULL,
    replay_key text        NOT NULL,
    webhook_id uuid        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (provider, replay_key)
);

CREATE INDEX webhook_replay_keys_expiry ON webhook_replay_keys (expires_at);

CREATE TABLE webhook_replays
(
    replay_id     uuid PRIMARY KEY,
    webhook_id    uuid        NOT NULL REFERENCES webhook_deliveries (webhook_id),
    actor         text        NOT NULL,
    reason        text        NOT NULL,
    dry_run       boolean     NOT NULL,
    verdict       text        NOT NULL,
    detail        text,
    replayed_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_replays_webhook ON webhook_replays (webhook_id, replayed_at);
