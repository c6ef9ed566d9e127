-- Tables of the pgbench baseline that nepxy-bench compares the service with.
--
-- They copy the columns and indexes of the service's idempotency_keys,
-- events and wallet_balances tables, so that one row costs PostgreSQL about
-- what it costs the service. They live in a schema of their own, and
-- nepxy-bench runs this file before every pgbench run so each run starts
-- from empty tables.
--
-- Run it in a database of its own: psql -v ON_ERROR_STOP=1 -f setup.sql URL

DROP SCHEMA IF EXISTS nepxy_baseline CASCADE;
CREATE SCHEMA nepxy_baseline;

CREATE TABLE nepxy_baseline.idempotency_keys
(
    client_id     bigint      NOT NULL,
    key           text        NOT NULL,
    fingerprint   bytea       NOT NULL,
    status_code   smallint    NOT NULL,
    response_body jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, key)
);
CREATE INDEX idempotency_keys_created ON nepxy_baseline.idempotency_keys (created_at);

CREATE TABLE nepxy_baseline.events
(
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         json        NOT NULL,
    metadata        json        NOT NULL,
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX events_global_position ON nepxy_baseline.events (global_position);
CREATE INDEX events_recorded_at ON nepxy_baseline.events (recorded_at);

CREATE TABLE nepxy_baseline.wallet_balances
(
    wallet_id       bigint      NOT NULL PRIMARY KEY,
    available_minor bigint      NOT NULL CHECK (available_minor >= 0),
    held_minor      bigint      NOT NULL CHECK (held_minor >= 0),
    last_sequence   bigint      NOT NULL,
    updated_at      timestamptz NOT NULL
);
