-- Change: creates API clients (secrets stored only as SHA-256 hashes) and the
-- idempotency records of payout and deposit requests.
-- Rollback: forward-only. Dropping `clients` would lock every client out and
-- dropping `idempotency_keys` would let a retried request pay twice, so a bad
-- release is rolled back by deploying the previous binary, never by dropping.

CREATE TABLE clients
(
    client_id   uuid PRIMARY KEY,
    name        text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('client', 'auditor', 'operator', 'admin')),
    secret_hash bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  uuid REFERENCES clients (client_id)
);

CREATE TABLE idempotency_keys
(
    client_id     uuid        NOT NULL,
    key           text        NOT NULL,
    -- SHA-256 of the method, the path and the canonical JSON body.
    fingerprint   bytea       NOT NULL,
    status_code   smallint    NOT NULL,
    response_body jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
