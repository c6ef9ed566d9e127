-- One payout as PostgreSQL alone would record it, in one transaction:
-- store the idempotency record with its response, append one event and
-- upsert the wallet's balance row.
--
-- Set the variable `distinct` with pgbench -D: distinct=1 gives each pgbench
-- client a wallet of its own, distinct=0 sends every transaction to wallet 0,
-- so all clients wait for the same row lock, as payouts from one wallet do.
-- Tables come from setup.sql.

\set key random(1, 9223372036854775807)
\set wallet :client_id * :distinct
BEGIN;
INSERT INTO nepxy_baseline.idempotency_keys (client_id, key, fingerprint, status_code, response_body)
    VALUES (:wallet::bigint, 'bench-' || :key::text, sha256(('POST /v1/payouts ' || :key::text)::bytea), 201,
            jsonb_build_object('id', :key::text, 'status', 'pending', 'amount', 1000,
                               'currency', 'XOF', 'provider', 'tmoney',
                               'recipient', jsonb_build_object('msisdn', '+22890000000')));
INSERT INTO nepxy_baseline.events
        (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    VALUES ('payout', :key::text, 1, 'PayoutRequested', '1',
            json_build_object('payout_id', :key::text, 'wallet_id', :wallet::bigint, 'amount', 1000,
                              'currency', 'XOF', 'provider', 'tmoney'),
            json_build_object('actor', :wallet::bigint, 'request_id', 'bench-' || :key::text));
INSERT INTO nepxy_baseline.wallet_balances
        (wallet_id, available_minor, held_minor, last_sequence, updated_at)
    VALUES (:wallet::bigint, 900000000 - 1000, 1000, 1, now())
    ON CONFLICT (wallet_id) DO UPDATE
        SET available_minor = nepxy_baseline.wallet_balances.available_minor - 1000,
            held_minor = nepxy_baseline.wallet_balances.held_minor + 1000,
            last_sequence = nepxy_baseline.wallet_balances.last_sequence + 1,
            updated_at = now();
END;
