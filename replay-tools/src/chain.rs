//! Tamper evidence: the SHA-256 chain of every aggregate's events and the
//! signed checkpoints of all aggregate heads.
//!
//! A trigger in the database chains each event to the previous one of its
//! aggregate: chain_hash = SHA-256(previous hash, or 32 zero bytes for the
//! first event, followed by the canonical encoding of the event). The
//! canonical encoding writes each field as its byte length, a colon, the text
//! and a semicolon; the sequence and the commit time (UTC, microseconds) are
//! plain text followed by a semicolon. The verifier rebuilds those bytes from
//! the stored fields, so an edited payload, a reordered or a removed event
//! breaks the chain at that point.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// Events read per query while walking the chains.
const PAGE_SIZE: i64 = 5_000;
/// Hash before the first event of every aggregate.
const GENESIS: [u8; 32] = [0; 32];

#[derive(FromRow)]
struct ChainRow {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    recorded_at: String,
    chain_hash: Vec<u8>,
}

/// The first place where the stored history disagrees with its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub reason: String,
}

fn field(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(text.as_bytes());
    out.push(b';');
}

fn canonical(row: &ChainRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.payload.len() + row.metadata.len() + 128);
    field(&mut out, &row.aggregate_type);
    field(&mut out, &row.aggregate_id);
    out.extend_from_slice(row.sequence.to_string().as_bytes());
    out.push(b';');
    field(&mut out, &row.event_type);
    field(&mut out, &row.event_version);
    field(&mut out, &row.payload);
    field(&mut out, &row.metadata);
    out.extend_from_slice(row.recorded_at.as_bytes());
    out.push(b';');
    out
}

/// Walks every aggregate's chain in sequence order. Returns the number of
/// events checked and the first broken link, if any.
pub async fn verify_chains(pool: &PgPool) -> anyhow::Result<(u64, Option<BrokenLink>)> {
    let mut checked = 0_u64;
    let mut after: (String, String, i64) = (String::new(), String::new(), 0);
    let mut previous_hash = GENESIS.to_vec();
    let mut previous_key: Option<(String, String)> = None;
    let mut expected_sequence = 1_i64;
    loop {
        let rows = sqlx::query_as::<_, ChainRow>(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload::text AS payload, \
                    metadata::text AS metadata, \
                    to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at, \
                    chain_hash \
             FROM events WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
             ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4",
        )
        .bind(&after.0)
        .bind(&after.1)
        .bind(after.2)
        .bind(PAGE_SIZE)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else {
            return Ok((checked, None));
        };
        after = (
            last.aggregate_type.clone(),
            last.aggregate_id.clone(),
            last.sequence,
        );

        for row in &rows {
            let key = (row.aggregate_type.clone(), row.aggregate_id.clone());
            if previous_key.as_ref() != Some(&key) {
                previous_hash = GENESIS.to_vec();
                expected_sequence = 1;
                previous_key = Some(key);
            }
            let broken = |reason: String| BrokenLink {
                aggregate_type: row.aggregate_type.clone(),
                aggregate_id: row.aggregate_id.clone(),
                sequence: row.sequence,
                reason,
            };
            if row.sequence != expected_sequence {
                return Ok((
                    checked,
                    Some(broken(format!(
                        "expected sequence {expected_sequence}, found {}",
                        row.sequence
                    ))),
                ));
            }
            let computed = Sha256::new()
                .chain_update(&previous_hash)
                .chain_update(canonical(row))
                .finalize()
                .to_vec();
            if computed != row.chain_hash {
                return Ok((
                    checked,
                    Some(broken(
                        "the stored event does not match its chain hash; it was altered".to_owned(),
                    )),
                ));
            }
            checked += 1;
            previous_hash = computed;
            expected_sequence += 1;
        }
    }
}

fn heads_digest(heads: &[(String, String, i64, Vec<u8>)]) -> Vec<u8> {
    let mut digest = Sha256::new();
    for (aggregate_type, aggregate_id, sequence, hash) in heads {
        let mut encoded = Vec::new();
        field(&mut encoded, aggregate_type);
        field(&mut encoded, aggregate_id);
        encoded.extend_from_slice(sequence.to_string().as_bytes());
        encoded.push(b';');
        digest.update(&encoded);
        digest.update(hash);
    }
    digest.finalize().to_vec()
}

fn sign(key: &[u8], digest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|error| anyhow::anyhow!("CHECKPOINT_KEY is unusable: {error}"))?;
    mac.update(digest);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Records a checkpoint of every aggregate head, signed with `key`.
pub async fn checkpoint(pool: &PgPool, key: &[u8]) -> anyhow::Result<(Uuid, usize)> {
    let mut tx = pool.begin().await?;
    // Repeatable read: the heads and their digest describe one moment.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    let heads: Vec<(String, String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT DISTINCT ON (aggregate_type, aggregate_id) aggregate_type, aggregate_id, sequence, chain_hash \
         FROM events ORDER BY aggregate_type, aggregate_id, sequence DESC",
    )
    .fetch_all(&mut *tx)
    .await?;
    let digest = heads_digest(&heads);
    let signature = sign(key, &digest)?;
    let checkpoint_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO chain_checkpoints (checkpoint_id, aggregate_count, heads_digest, signature) VALUES ($1, $2, $3, $4)",
    )
    .bind(checkpoint_id)
    .bind(heads.len() as i64)
    .bind(&digest)
    .bind(&signature)
    .execute(&mut *tx)
    .await?;
    for (aggregate_type, aggregate_id, sequence, hash) in &heads {
        sqlx::query(
            "INSERT INTO chain_checkpoint_heads (checkpoint_id, aggregate_type, aggregate_id, sequence, chain_hash) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(checkpoint_id)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((checkpoint_id, heads.len()))
}

/// Checks every checkpoint: its digest against its stored heads, its
/// signature when `key` is given, and each head against the events now
/// stored. Returns one line per problem.
pub async fn verify_checkpoints(
    pool: &PgPool,
    key: Option<&[u8]>,
) -> anyhow::Result<(usize, Vec<String>)> {
    let checkpoints: Vec<(Uuid, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT checkpoint_id, heads_digest, signature FROM chain_checkpoints ORDER BY created_at",
    )
    .fetch_all(pool)
    .await?;
    let mut problems = Vec::new();
    for (checkpoint_id, stored_digest, signature) in &checkpoints {
        let heads: Vec<(String, String, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, sequence, chain_hash FROM chain_checkpoint_heads \
             WHERE checkpoint_id = $1 ORDER BY aggregate_type, aggregate_id",
        )
        .bind(checkpoint_id)
        .fetch_all(pool)
        .await?;
        if heads_digest(&heads) != *stored_digest {
            problems.push(format!(
                "checkpoint {checkpoint_id}: its heads do not match its digest"
            ));
        }
        if let Some(key) = key
            && sign(key, stored_digest)? != *signature
        {
            problems.push(format!(
                "checkpoint {checkpoint_id}: signature does not match CHECKPOINT_KEY"
            ));
        }
        for (aggregate_type, aggregate_id, sequence, hash) in &heads {
            let current: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT chain_hash FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
            )
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(sequence)
            .fetch_optional(pool)
            .await?;
            if current.as_ref() != Some(hash) {
                problems.push(format!(
                    "checkpoint {checkpoint_id}: aggregate {aggregate_type} {aggregate_id} sequence {sequence} differs from the checkpoint"
                ));
            }
        }
    }
    Ok((checkpoints.len(), problems))
}
