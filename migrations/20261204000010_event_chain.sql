-- Change: chains every event to the previous event of its aggregate with
-- SHA-256 (chain_hash), computed by a trigger on insert so that no writer can
-- skip it, and adds signed checkpoints of all aggregate heads. Existing
-- events are chained here in sequence order.
-- Rollback: forward-only. The previous binary ignores the column, the
-- trigger and the checkpoint tables; dropping them would only remove the
-- tamper evidence, never data.

-- The canonical encoding of an event: each field as its length in bytes, a
-- colon, the text and a semicolon, so no two events encode alike. The
-- verifier in nepxy-replay builds the same bytes.
CREATE FUNCTION event_canonical(e events) RETURNS bytea
    LANGUAGE sql IMMUTABLE AS
$$
SELECT convert_to(
    octet_length(e.aggregate_type)::text || ':' || e.aggregate_type || ';' ||
    octet_length(e.aggregate_id)::text || ':' || e.aggregate_id || ';' ||
    e.sequence::text || ';' ||
    octet_length(e.event_type)::text || ':' || e.event_type || ';' ||
    octet_length(e.event_version)::text || ':' || e.event_version || ';' ||
    octet_length(e.payload::text)::text || ':' || e.payload::text || ';' ||
    octet_length(e.metadata::text)::text || ':' || e.metadata::text || ';' ||
    to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || ';',
    'UTF8')
$$;

ALTER TABLE events ADD COLUMN chain_hash bytea;

-- Backfill in sequence order; the append-only trigger is paused for it.
ALTER TABLE events DISABLE TRIGGER events_append_only;
DO
$$
DECLARE
    event_row events;
    previous  bytea;
    last_key  text := NULL;
BEGIN
    FOR event_row IN SELECT * FROM events ORDER BY aggregate_type, aggregate_id, sequence LOOP
        IF last_key IS DISTINCT FROM event_row.aggregate_type || '/' || event_row.aggregate_id THEN
            previous := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
            last_key := event_row.aggregate_type || '/' || event_row.aggregate_id;
        END IF;
        previous := sha256(previous || event_canonical(event_row));
        UPDATE events SET chain_hash = previous
        WHERE aggregate_type = event_row.aggregate_type
          AND aggregate_id = event_row.aggregate_id
          AND sequence = event_row.sequence;
    END LOOP;
END;
$$;
ALTER TABLE events ENABLE TRIGGER events_append_only;

ALTER TABLE events ALTER COLUMN chain_hash SET NOT NULL;

CREATE FUNCTION chain_event() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    previous bytea;
BEGIN
    SELECT chain_hash INTO previous FROM events
    WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id
      AND sequence = NEW.sequence - 1;
    IF previous IS NULL THEN
        previous := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    END IF;
    NEW.chain_hash := sha256(previous || event_canonical(NEW));
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_chain
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION chain_event();

-- A checkpoint signs the set of aggregate heads (last sequence and hash of
-- every aggregate) at one moment, with a key that operators keep outside
-- the database.
CREATE TABLE chain_checkpoints
(
    checkpoint_id   uuid PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    aggregate_count bigint      NOT NULL,
    -- SHA-256 over the heads in (aggregate_type, aggregate_id) order.
    heads_digest    bytea       NOT NULL,
    -- HMAC-SHA256 of heads_digest with CHECKPOINT_KEY.
    signature       bytea       NOT NULL
);

CREATE TABLE chain_checkpoint_heads
(
    checkpoint_id  uuid   NOT NULL REFERENCES chain_checkpoints (checkpoint_id),
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    chain_hash     bytea  NOT NULL,
    PRIMARY KEY (checkpoint_id, aggregate_type, aggregate_id)
);
