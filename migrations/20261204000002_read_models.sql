-- Change: creates the read models built from events: payouts, wallet
-- balances, journal postings and event history. Each row remembers the last
-- event sequence applied to it, so applying an event twice changes nothing.
-- Rollback: forward-only. These tables can be dropped and rebuilt from the
-- events at any time, so a bad release is rolled back by deploying the
-- previous binary, which ignores tables it does not know.

CREATE TABLE payouts
(
    payout_id      uuid PRIMARY KEY,
    client_id      uuid        NOT NULL,
    status         text        NOT NULL,
    amount_minor   bigint      NOT NULL CHECK (amount_minor > 0),
    currency       text        NOT NULL,
    provider       text        NOT NULL,
    msisdn         text        NOT NULL,
    recipient_name text,
    reference      text,
    provider_ref   text,
    failure_code   text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    last_sequence  bigint      NOT NULL
);

-- Cursor pages list a client's payouts newest first.
CREATE INDEX payouts_client_created ON payouts (client_id, created_at DESC, payout_id DESC);
CREATE INDEX payouts_created ON payouts (created_at DESC, payout_id DESC);

CREATE TABLE wallet_balances
(
    client_id       uuid        NOT NULL,
    currency        text        NOT NULL,
    available_minor bigint      NOT NULL CHECK (available_minor >= 0),
    held_minor      bigint      NOT NULL CHECK (held_minor >= 0),
    last_sequence   bigint      NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (client_id, currency)
);

CREATE TABLE journal_postings
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    account        text        NOT NULL,
    currency       text        NOT NULL,
    debit_minor    bigint      NOT NULL CHECK (debit_minor >= 0),
    credit_minor   bigint      NOT NULL CHECK (credit_minor >= 0),
    recorded_at    timestamptz NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence, account)
);

CREATE INDEX journal_postings_account ON journal_postings (account, currency);

CREATE TABLE event_history
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_type     text        NOT NULL,
    event_version  text        NOT NULL,
    payout_id      uuid,
    client_id      uuid,
    request_id     text,
    source         text        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX event_history_payout ON event_history (payout_id, recorded_at) WHERE payout_id IS NOT NULL;
CREATE INDEX event_history_client ON event_history (client_id, recorded_at) WHERE client_id IS NOT NULL;
