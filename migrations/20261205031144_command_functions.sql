-- Change: adds two functions that let a command run in four round trips
-- (BEGIN, open, write, COMMIT) instead of about twenty. nepxy_open_command
-- takes the Idempotency-Key's lock, reads its stored answer, waits for the
-- aggregates' locks and loads their snapshots and events. nepxy_apply_writes
-- runs a list of writes (events, read-model rows, outbox rows, snapshots,
-- the idempotency record) one after another, as the service sent them.
-- Rollback: forward-only. The previous binary does not call the functions and
-- runs its own statements against the same tables; they can stay.

-- Each query of a VOLATILE function takes a new snapshot under READ
-- COMMITTED, so every read below sees what committed before the lock it
-- follows was granted. A plain statement would read with the snapshot taken
-- when it started, before it waited for the lock.
--
-- Keys are (lock, client, key) triples at the same index of the three key
-- arrays. A key whose lock another transaction holds gets a 'busy' row and
-- one with a stored response a 'stored' row, both with the key's index as
-- r_part. If any key got one, nothing is locked or loaded. Otherwise the
-- aggregate locks are taken in array order, each wait limited to
-- p_lock_timeout for the rest of the transaction when it is not NULL (the
-- error is SQLSTATE 55P03), and each aggregate in p_types and
-- p_ids is loaded ('snapshot' and 'event' rows, r_part its index), then the
-- deposit and hold of each id in p_record_ids on the wallet at the same index
-- of p_record_wallets ('deposit' and 'hold' rows, r_part the id's index).
-- Indexes start at 1.
CREATE FUNCTION nepxy_open_command(
    p_key_locks bigint[],
    p_key_clients uuid[],
    p_keys text[],
    p_locks bigint[],
    p_types text[],
    p_ids text[],
    p_record_wallets text[],
    p_record_ids uuid[],
    p_lock_timeout text)
    RETURNS TABLE (r_part integer, r_kind text, r_number bigint, r_text text, r_payload text)
    LANGUAGE plpgsql VOLATILE AS
$$
DECLARE
    lock_key bigint;
    key_taken boolean := false;
    snapshot_sequence bigint;
    snapshot_payload text;
BEGIN
    FOR part IN 1 .. coalesce(array_length(p_key_locks, 1), 0) LOOP
        IF NOT pg_try_advisory_xact_lock(p_key_locks[part]) THEN
            RETURN QUERY SELECT part, 'busy', NULL::bigint, NULL::text, NULL::text;
            key_taken := true;
        ELSE
            RETURN QUERY
                SELECT part, 'stored', k.status_code::bigint, encode(k.fingerprint, 'hex'),
                       k.response_body::text
                FROM idempotency_keys k
                WHERE k.client_id = p_key_clients[part] AND k.key = p_keys[part];
            IF FOUND THEN
                key_taken := true;
            END IF;
        END IF;
    END LOOP;
    IF key_taken THEN
        RETURN;
    END IF;

    IF p_lock_timeout IS NOT NULL THEN
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    -- In the caller's order, so that callers that agree on an order never
    -- deadlock.
    FOREACH lock_key IN ARRAY coalesce(p_locks, ARRAY[]::bigint[]) LOOP
        PERFORM pg_advisory_xact_lock(lock_key);
    END LOOP;

    FOR part IN 1 .. coalesce(array_length(p_types, 1), 0) LOOP
        SELECT s.last_sequence, s.payload::text
        INTO snapshot_sequence, snapshot_payload
        FROM snapshots s
        WHERE s.aggregate_type = p_types[part] AND s.aggregate_id = p_ids[part]
        ORDER BY s.last_sequence DESC
        LIMIT 1;
        IF FOUND THEN
            RETURN QUERY SELECT part, 'snapshot', snapshot_sequence, NULL::text, snapshot_payload;
        ELSE
            snapshot_sequence := 0;
        END IF;
        RETURN QUERY
            SELECT part, 'event', e.sequence, e.event_version, e.payload::text
            FROM events e
            WHERE e.aggregate_type = p_types[part] AND e.aggregate_id = p_ids[part]
              AND e.sequence > snapshot_sequence
            ORDER BY e.sequence;
    END LOOP;

    FOR part IN 1 .. coalesce(array_length(p_record_ids, 1), 0) LOOP
        RETURN QUERY
            SELECT part, 'deposit', d.amount_minor, NULL::text, NULL::text
            FROM wallet_deposits d
            WHERE d.wallet_id = p_record_wallets[part] AND d.deposit_id = p_record_ids[part];
        RETURN QUERY
            SELECT part, 'hold', h.amount_minor, h.state, h.provider
            FROM wallet_holds h
            WHERE h.wallet_id = p_record_wallets[part] AND h.payout_id = p_record_ids[part];
    END LOOP;
END;
$$;

-- Tables are named without a schema, so the rebuild's search path sends the
-- read-model writes to its shadow tables.
CREATE FUNCTION nepxy_apply_writes(p_writes jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE AS
$$
DECLARE
    w jsonb;
BEGIN
    FOR w IN SELECT value FROM jsonb_array_elements(p_writes) LOOP
        CASE w->>'write'
        WHEN 'events' THEN
            INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                payload, metadata, recorded_at)
            SELECT w->>'aggregate_type', w->>'aggregate_id', r.sequence, r.event_type,
                   r.event_version, r.payload::json, (w->>'metadata')::json,
                   (w->>'recorded_at')::timestamptz
            FROM jsonb_to_recordset(w->'events')
                AS r(sequence bigint, event_type text, event_version text, payload text);
        WHEN 'balance' THEN
            -- A row that already saw this sequence is left alone, and a
            -- missing row is created.
            UPDATE wallet_balances SET
                available_minor = available_minor + (w->>'available_delta')::bigint,
                held_minor = held_minor + (w->>'held_delta')::bigint,
                last_sequence = (w->>'sequence')::bigint,
                updated_at = (w->>'recorded_at')::timestamptz
            WHERE client_id = (w->>'client_id')::uuid AND currency = w->>'currency'
              AND last_sequence < (w->>'sequence')::bigint;
            -- Inserted only when no row exists: a row that saw this
            -- sequence keeps its sums, and the CHECK constraints run before
            -- ON CONFLICT could skip the insert.
            IF NOT FOUND THEN
                INSERT INTO wallet_balances
                    (client_id, currency, available_minor, held_minor, last_sequence, updated_at)
                SELECT (w->>'client_id')::uuid, w->>'currency', (w->>'available_delta')::bigint,
                       (w->>'held_delta')::bigint, (w->>'sequence')::bigint,
                       (w->>'recorded_at')::timestamptz
                WHERE NOT EXISTS (
                    SELECT 1 FROM wallet_balances
                    WHERE client_id = (w->>'client_id')::uuid AND currency = w->>'currency');
            END IF;
        WHEN 'postings' THEN
            INSERT INTO journal_postings (aggregate_type, aggregate_id, sequence, account, currency,
                                          debit_minor, credit_minor, recorded_at)
            SELECT w->>'aggregate_type', w->>'aggregate_id', (w->>'sequence')::bigint, p.account,
                   p.currency, p.debit_minor, p.credit_minor, (w->>'recorded_at')::timestamptz
            FROM jsonb_to_recordset(w->'postings')
                AS p(account text, currency text, debit_minor bigint, credit_minor bigint)
            ON CONFLICT DO NOTHING;
        WHEN 'deposit' THEN
            INSERT INTO wallet_deposits (wallet_id, deposit_id, amount_minor, sequence)
            VALUES (w->>'wallet_id', (w->>'deposit_id')::uuid, (w->>'amount_minor')::bigint,
                    (w->>'sequence')::bigint)
            ON CONFLICT DO NOTHING;
        WHEN 'hold' THEN
            -- An UPDATE skips a row that already saw this sequence without
            -- locking it. ON CONFLICT DO UPDATE would lock it first, and the
            -- catch-up projector, which re-applies events without the
            -- aggregate locks, then deadlocked with live commands.
            UPDATE wallet_holds SET
                state = w->>'state',
                provider = COALESCE(w->>'provider', provider),
                last_sequence = (w->>'sequence')::bigint
            WHERE wallet_id = w->>'wallet_id' AND payout_id = (w->>'payout_id')::uuid
              AND last_sequence < (w->>'sequence')::bigint;
            IF NOT FOUND AND NOT EXISTS (
                SELECT 1 FROM wallet_holds
                WHERE wallet_id = w->>'wallet_id' AND payout_id = (w->>'payout_id')::uuid) THEN
                INSERT INTO wallet_holds (wallet_id, payout_id, amount_minor, state, provider, last_sequence)
                VALUES (w->>'wallet_id', (w->>'payout_id')::uuid, (w->>'amount_minor')::bigint,
                        w->>'state', w->>'provider', (w->>'sequence')::bigint)
                ON CONFLICT (wallet_id, payout_id) DO UPDATE SET
                    state = EXCLUDED.state,
                    provider = COALESCE(EXCLUDED.provider, wallet_holds.provider),
                    last_sequence = EXCLUDED.last_sequence
                WHERE wallet_holds.last_sequence < EXCLUDED.last_sequence;
            END IF;
        WHEN 'payout' THEN
            INSERT INTO payouts (payout_id, client_id, status, amount_minor, currency, provider,
                                 msisdn, recipient_name, reference, created_at, updated_at,
                                 last_sequence, country_code)
            VALUES ((w->>'payout_id')::uuid, (w->>'client_id')::uuid, 'pending',
                    (w->>'amount_minor')::bigint, w->>'currency', w->>'provider', w->>'msisdn',
                    w->>'recipient_name', w->>'reference', (w->>'created_at')::timestamptz,
                    (w->>'updated_at')::timestamptz, (w->>'sequence')::bigint,
                    (w->>'country_code')::integer)
            ON CONFLICT (payout_id) DO NOTHING;
        WHEN 'dispatch_queued' THEN
            INSERT INTO dispatch_queue (payout_id, provider, state, next_attempt_at, updated_at)
            VALUES ((w->>'payout_id')::uuid, w->>'provider', 'ready',
                    (w->>'at')::timestamptz, (w->>'at')::timestamptz)
            ON CONFLICT (payout_id) DO NOTHING;
        WHEN 'payout_status' THEN
            UPDATE payouts SET
                status = COALESCE(w->>'status', status),
                provider_ref = COALESCE(w->>'provider_ref', provider_ref),
                failure_code = COALESCE(w->>'failure_code', failure_code),
                updated_at = (w->>'recorded_at')::timestamptz,
                last_sequence = (w->>'sequence')::bigint
            WHERE payout_id = (w->>'payout_id')::uuid AND last_sequence < (w->>'sequence')::bigint;
        WHEN 'dispatch_state' THEN
            -- A row never moves back from done.
            UPDATE dispatch_queue SET state = w->>'state', updated_at = now()
            WHERE payout_id = (w->>'payout_id')::uuid AND state <> 'done';
        WHEN 'notification' THEN
            -- One row per endpoint that the payout's client registered
            -- before the event, with the payout as the writes before this
            -- one left it.
            INSERT INTO notifications (notification_id, endpoint_id, client_id, payout_id,
                                       event_type, payout, retry_window_start, next_attempt_at,
                                       created_at, updated_at)
            SELECT gen_random_uuid(), e.endpoint_id, e.client_id, p.payout_id, w->>'event_type',
                   to_jsonb(p), (w->>'at')::timestamptz, (w->>'at')::timestamptz,
                   (w->>'at')::timestamptz, (w->>'at')::timestamptz
            FROM payouts p JOIN notification_endpoints e ON e.client_id = p.client_id
            WHERE p.payout_id = (w->>'payout_id')::uuid AND e.deleted_at IS NULL
              AND e.disabled_at IS NULL AND e.created_at <= (w->>'at')::timestamptz
            ON CONFLICT (endpoint_id, payout_id, event_type) DO NOTHING;
        WHEN 'history' THEN
            INSERT INTO event_history (aggregate_type, aggregate_id, sequence, event_type,
                                       event_version, payout_id, client_id, request_id, source,
                                       recorded_at)
            VALUES (w->>'aggregate_type', w->>'aggregate_id', (w->>'sequence')::bigint,
                    w->>'event_type', w->>'event_version', (w->>'payout_id')::uuid,
                    (w->>'client_id')::uuid, w->>'request_id', w->>'source',
                    (w->>'recorded_at')::timestamptz)
            ON CONFLICT DO NOTHING;
        WHEN 'snapshot' THEN
            -- One row per aggregate, as postgres-es keeps it.
            DELETE FROM snapshots
            WHERE aggregate_type = w->>'aggregate_type' AND aggregate_id = w->>'aggregate_id';
            INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
            VALUES (w->>'aggregate_type', w->>'aggregate_id', (w->>'sequence')::bigint,
                    (w->>'sequence')::bigint, (w->>'payload')::json);
        WHEN 'response' THEN
            INSERT INTO idempotency_keys (client_id, key, fingerprint, status_code, response_body)
            VALUES ((w->>'client_id')::uuid, w->>'key', decode(w->>'fingerprint', 'hex'),
                    (w->>'status_code')::smallint, w->'body');
        ELSE
            RAISE EXCEPTION 'unknown write %', w->>'write' USING ERRCODE = 'invalid_parameter_value';
        END CASE;
    END LOOP;
END;
$$;
