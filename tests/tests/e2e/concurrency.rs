//! Many payouts at once from one wallet: every request is served, the read
//! models agree with the events and the wallet never goes below zero.

use std::collections::HashMap;
use std::sync::Arc;

use nepxy_tests::{Caller, Reply, TestApp, assert_problem, payout_body, spawn_app};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Semaphore;

/// Sends `count` payouts of `amount` XOF with distinct keys, at most
/// `parallel` at a time, and returns the replies in key order.
async fn send_payouts(
    app: &Arc<TestApp>,
    client: &Caller,
    count: usize,
    amount: i64,
    parallel: usize,
) -> Vec<Reply> {
    let permits = Arc::new(Semaphore::new(parallel));
    let client = Arc::new(client.clone());
    let mut requests = tokio::task::JoinSet::new();
    for index in 0..count {
        let (app, client, permits) = (Arc::clone(app), Arc::clone(&client), Arc::clone(&permits));
        requests.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore is open");
            let key = format!("parallel-{index}");
            let reply = app
                .post_payout(&client, &key, &payout_body(amount, "tmoney"))
                .await;
            (index, reply)
        });
    }
    let mut replies = requests.join_all().await;
    replies.sort_by_key(|(index, _)| *index);
    replies.into_iter().map(|(_, reply)| reply).collect()
}

/// Reads the wallet's events in sequence order as (sequence, event type,
/// payload).
async fn wallet_events(app: &TestApp, wallet_id: &str) -> Vec<(i64, String, Value)> {
    sqlx::query_as(
        "SELECT sequence, event_type, payload::jsonb FROM events \
         WHERE aggregate_type = 'Wallet' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(wallet_id)
    .fetch_all(&app.pool)
    .await
    .expect("read wallet events")
}

/// Replays wallet events into `(available, held)`, failing if either ever
/// drops below zero.
fn balance_from_events(events: &[(i64, String, Value)]) -> (i64, i64) {
    let (mut available, mut held) = (0_i64, 0_i64);
    for (sequence, event_type, payload) in events {
        let amount = payload[event_type.as_str()]["amount_minor"]
            .as_i64()
            .unwrap_or_else(|| panic!("event {sequence} has no amount_minor: {payload}"));
        match event_type.as_str() {
            "FundsDeposited" => available += amount,
            "FundsReserved" => {
                available -= amount;
                held += amount;
            }
            "FundsSettled" => held -= amount,
            "FundsReleased" => {
                held -= amount;
                available += amount;
            }
            "FundsRefunded" => available += amount,
            other => panic!("event {sequence} has an unknown type {other}"),
        }
        assert!(
            available >= 0,
            "available is {available} after event {sequence}"
        );
        assert!(held >= 0, "held is {held} after event {sequence}");
    }
    (available, held)
}

/// Reads the client's XOF row of `wallet_balances` as (available, held,
/// last_sequence).
async fn balance_row(app: &TestApp, client: &Caller) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT available_minor, held_minor, last_sequence FROM wallet_balances \
         WHERE client_id = $1 AND currency = 'XOF'",
    )
    .bind(client.client_id)
    .fetch_one(&app.pool)
    .await
    .expect("wallet_balances row")
}

/// Lists the client's payouts in pages of 7 and returns their ids, checking
/// that each page is ordered newest first.
async fn list_ids(app: &TestApp, client: &Caller) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = "/v1/payouts?limit=7".to_owned();
    loop {
        let reply = app.get(&path, &client.token).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "list {path}: {:?}",
            reply.body
        );
        let items = reply.body["items"].as_array().expect("items array");
        let created_at: Vec<&str> = items
            .iter()
            .map(|item| item["created_at"].as_str().expect("created_at"))
            .collect();
        let parsed: Vec<chrono::DateTime<chrono::Utc>> = created_at
            .iter()
            .map(|text| text.parse().expect("created_at is RFC 3339"))
            .collect();
        assert!(
            parsed.windows(2).all(|pair| pair[0] >= pair[1]),
            "page {path} is newest first: {created_at:?}"
        );
        ids.extend(
            items
                .iter()
                .map(|item| item["id"].as_str().expect("id").to_owned()),
        );
        match reply.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/payouts?limit=7&cursor={cursor}"),
            None => return ids,
        }
        assert!(ids.len() <= 1_000, "listing does not end");
    }
}

#[tokio::test]
async fn parallel_payouts_keep_ledger_consistent() {
    let app = Arc::new(spawn_app().await);
    let (_admin, client) = app.funded_client(1_000_000, "XOF").await;
    let wallet_id = format!("{}:XOF", client.client_id);

    let replies = send_payouts(&app, &client, 200, 1_000, 32).await;

    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for reply in &replies {
        *statuses.entry(reply.status.as_u16()).or_default() += 1;
    }
    assert_eq!(
        statuses.get(&201),
        Some(&200),
        "answers by status: {statuses:?}"
    );

    let events = wallet_events(&app, &wallet_id).await;
    let sequences: Vec<i64> = events.iter().map(|(sequence, _, _)| *sequence).collect();
    let expected: Vec<i64> = (1..=201).collect();
    assert_eq!(
        sequences, expected,
        "wallet sequences are 1..=201 without gaps"
    );

    let from_events = balance_from_events(&events);
    assert_eq!(
        from_events,
        (800_000, 200_000),
        "balance replayed from events"
    );
    let (available, held, last_sequence) = balance_row(&app, &client).await;
    assert_eq!(
        (available, held),
        from_events,
        "wallet_balances row equals the events"
    );
    assert_eq!(last_sequence, 201, "wallet_balances last_sequence");
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (800_000, 200_000),
        "balance reported by the API"
    );

    assert_eq!(
        app.count("SELECT count(*) FROM payouts").await,
        200,
        "payouts rows"
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT payout_id) FROM payouts WHERE status = 'pending'")
            .await,
        200,
        "distinct pending payouts"
    );
    let mut created: Vec<String> = replies
        .iter()
        .map(|reply| reply.body["id"].as_str().expect("id").to_owned())
        .collect();
    let mut listed = list_ids(&app, &client).await;
    assert_eq!(listed.len(), 200, "payouts listed in pages of 7");
    created.sort();
    listed.sort();
    assert_eq!(listed, created, "every payout is listed exactly once");

    let unbalanced: Vec<(String, i64)> = sqlx::query_as(
        "SELECT currency, (sum(debit_minor) - sum(credit_minor))::bigint FROM journal_postings \
         GROUP BY currency HAVING sum(debit_minor) <> sum(credit_minor)",
    )
    .fetch_all(&app.pool)
    .await
    .expect("sum journal postings");
    assert!(
        unbalanced.is_empty(),
        "debits minus credits per currency: {unbalanced:?}"
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT (aggregate_id, sequence)) FROM journal_postings")
            .await,
        201,
        "one journal entry per wallet event"
    );
}

#[tokio::test]
async fn overdraft_race_stops_at_zero() {
    let app = Arc::new(spawn_app().await);
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let wallet_id = format!("{}:XOF", client.client_id);

    let replies = send_payouts(&app, &client, 30, 1_000, 30).await;

    let created = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 10, "payouts accepted");
    for reply in replies
        .iter()
        .filter(|reply| reply.status != StatusCode::CREATED)
    {
        assert_problem(
            reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/insufficient-funds",
            "payout beyond the balance",
        );
    }

    let events = wallet_events(&app, &wallet_id).await;
    assert_eq!(
        events.len(),
        11,
        "wallet events: one deposit and ten reserves"
    );
    assert_eq!(
        balance_from_events(&events),
        (0, 10_000),
        "balance replayed from events"
    );
    let (available, held, _) = balance_row(&app, &client).await;
    assert_eq!((available, held), (0, 10_000), "wallet_balances row");
    assert_eq!(
        app.count("SELECT count(*) FROM payouts").await,
        10,
        "payouts rows"
    );
}

/// Holds the write locks of the given wallets in a transaction of its own,
/// so that the payouts sent meanwhile queue behind a batch that waits for
/// them.
async fn hold_wallets(
    app: &TestApp,
    wallet_ids: &[String],
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = app.pool.begin().await.expect("begin the holder");
    for wallet_id in wallet_ids {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(nepxy_api::store::lock_key("Wallet", wallet_id))
            .execute(&mut *holder)
            .await
            .expect("lock the wallet");
    }
    holder
}

/// Waits until a batch waits for a held wallet lock, then a little longer,
/// so that the requests sent meanwhile have queued behind it.
async fn wait_for_queue(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = app
            .count(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event = 'advisory'",
            )
            .await;
        if waiting > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no batch waits for the held wallet lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}

/// Sends each (key, body) pair at once and returns the replies in order.
async fn send_all(
    app: &Arc<TestApp>,
    client: &Caller,
    requests: Vec<(String, Value)>,
) -> Vec<Reply> {
    let client = Arc::new(client.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (key, body)) in requests.into_iter().enumerate() {
        let (app, client) = (Arc::clone(app), Arc::clone(&client));
        tasks.spawn(async move { (index, app.post_payout(&client, &key, &body).await) });
    }
    let mut replies = tasks.join_all().await;
    replies.sort_by_key(|(index, _)| *index);
    replies.into_iter().map(|(_, reply)| reply).collect()
}

/// Returns the largest number of reserves on the wallet that one
/// transaction wrote.
async fn largest_batch(app: &TestApp, wallet_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM events \
         WHERE aggregate_type = 'Wallet' AND aggregate_id = $1 AND event_type = 'FundsReserved' \
         GROUP BY transaction_id) AS batches",
    )
    .bind(wallet_id)
    .fetch_one(&app.pool)
    .await
    .expect("count reserves per transaction")
}

#[tokio::test]
async fn one_wallet_payouts_share_commits() {
    let app = Arc::new(spawn_app().await);
    let (_admin, client) = app.funded_client(1_000_000, "XOF").await;
    let wallet_id = format!("{}:XOF", client.client_id);

    let holder = hold_wallets(&app, std::slice::from_ref(&wallet_id)).await;
    let sending = {
        let (app, client) = (Arc::clone(&app), client.clone());
        tokio::spawn(async move { send_payouts(&app, &client, 48, 1_000, 48).await })
    };
    wait_for_queue(&app).await;
    holder.commit().await.expect("release the wallet");
    let replies = sending.await.expect("send the payouts");

    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    assert!(
        largest_batch(&app, &wallet_id).await > 1,
        "queued payouts of one wallet commit together"
    );
    let events = wallet_events(&app, &wallet_id).await;
    let sequences: Vec<i64> = events.iter().map(|(sequence, _, _)| *sequence).collect();
    assert_eq!(
        sequences,
        (1..=49).collect::<Vec<i64>>(),
        "no gap, no repeat"
    );
    assert_eq!(balance_from_events(&events), (952_000, 48_000));
    let (available, held, _) = balance_row(&app, &client).await;
    assert_eq!((available, held), (952_000, 48_000), "wallet_balances row");
}

#[tokio::test]
async fn repeated_key_in_batch_pays_once() {
    let app = Arc::new(spawn_app().await);
    let (_admin, client) = app.funded_client(1_000_000, "XOF").await;
    let wallet_id = format!("{}:XOF", client.client_id);
    let body = payout_body(1_000, "tmoney");

    // The repeats are spread among other payouts of the same wallet, so that
    // several of them queue for the same batch.
    let mut requests = Vec::new();
    for index in 0..36 {
        let key = if index % 3 == 0 {
            "repeated".to_owned()
        } else {
            format!("other-{index}")
        };
        requests.push((key, body.clone()));
    }
    let replies = send_all(&app, &client, requests).await;

    let mut first = 0;
    for (index, reply) in replies.iter().enumerate() {
        if index % 3 != 0 {
            assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
            continue;
        }
        match (reply.status, reply.header("idempotent-replayed")) {
            (StatusCode::CREATED, Some("true")) => {}
            (StatusCode::CREATED, _) => first += 1,
            (StatusCode::CONFLICT, _) => assert_problem(
                reply,
                StatusCode::CONFLICT,
                "/problems/conflict",
                "repeat while the first runs",
            ),
            (status, _) => panic!("repeat got {status}: {:?}", reply.body),
        }
    }
    assert_eq!(
        first, 1,
        "one repeat ran the payout, the others replayed it"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM payouts").await,
        25,
        "one payout per key"
    );
    let events = wallet_events(&app, &wallet_id).await;
    assert_eq!(balance_from_events(&events), (975_000, 25_000));
}

#[tokio::test]
async fn failing_payout_fails_alone() {
    let app = Arc::new(spawn_app().await);
    let (_admin, client) = app.funded_client(1_000_000, "XOF").await;
    let wallet_id = format!("{}:XOF", client.client_id);
    // A database error for one payout only: its read-model row is rejected.
    sqlx::raw_sql(
        "CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
             IF NEW.reference = 'poison' THEN RAISE EXCEPTION 'poisoned payout'; END IF; \
             RETURN NEW; \
         END $$; \
         CREATE TRIGGER payouts_reject_poison BEFORE INSERT ON payouts \
             FOR EACH ROW EXECUTE FUNCTION reject_poison();",
    )
    .execute(&app.pool)
    .await
    .expect("create the poison trigger");

    let mut requests = Vec::new();
    for index in 0..40 {
        let mut body = payout_body(1_000, "tmoney");
        if index == 20 {
            body["reference"] = Value::from("poison");
        }
        requests.push((format!("batch-{index}"), body));
    }
    let replies = send_all(&app, &client, requests).await;

    for (index, reply) in replies.iter().enumerate() {
        if index == 20 {
            assert_eq!(
                reply.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{:?}",
                reply.body
            );
        } else {
            assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        }
    }
    let events = wallet_events(&app, &wallet_id).await;
    assert_eq!(events.len(), 40, "the deposit and 39 reserves");
    assert_eq!(balance_from_events(&events), (961_000, 39_000));
    let (available, held, _) = balance_row(&app, &client).await;
    assert_eq!((available, held), (961_000, 39_000), "wallet_balances row");
}

/// Payouts of wallets that share a lane commit in one transaction. With nine
/// wallets in four lanes one lane has at least three. Its first batch waits
/// for a held lock while the rest queue, and each wallet can pay one of its
/// two payouts, so some later batch reserves on at least two wallets.
#[tokio::test]
async fn batches_across_wallets_keep_each_balance() {
    const CLIENTS: usize = 9;
    let app = Arc::new(spawn_app().await);
    let admin = app.bootstrap_admin().await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = app.create_client(&admin, "client").await;
        let reply = app.deposit(&admin, client.client_id, 1_000, "XOF").await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "deposit: {:?}",
            reply.body
        );
        clients.push(client);
    }
    let wallet_ids: Vec<String> = clients
        .iter()
        .map(|client| format!("{}:XOF", client.client_id))
        .collect();

    let holder = hold_wallets(&app, &wallet_ids).await;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        for payout in 0..2 {
            let (app, client) = (Arc::clone(&app), client.clone());
            tasks.spawn(async move {
                let body = payout_body(1_000, "tmoney");
                let reply = app
                    .post_payout(&client, &format!("mixed-{payout}"), &body)
                    .await;
                (index, reply)
            });
        }
    }
    wait_for_queue(&app).await;
    holder.commit().await.expect("release the wallets");
    let mut created = [0_usize; CLIENTS];
    for (index, reply) in tasks.join_all().await {
        match reply.status {
            StatusCode::CREATED => created[index] += 1,
            _ => assert_problem(
                &reply,
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/insufficient-funds",
                "payout beyond the client's balance",
            ),
        }
    }

    for (index, client) in clients.iter().enumerate() {
        assert_eq!(created[index], 1, "payouts accepted for client {index}");
        let events = wallet_events(&app, &wallet_ids[index]).await;
        assert_eq!(
            balance_from_events(&events),
            (0, 1_000),
            "client {index} replayed from events"
        );
        let (available, held, _) = balance_row(&app, client).await;
        assert_eq!((available, held), (0, 1_000), "client {index} row");
    }
    let shared: i64 = app
        .count(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(DISTINCT aggregate_id) AS n FROM events \
             WHERE aggregate_type = 'Wallet' AND event_type = 'FundsReserved' \
             GROUP BY transaction_id) AS batches",
        )
        .await;
    assert!(shared > 1, "one transaction reserved on several wallets");
}

/// A wallet whose lock another transaction keeps delays only its own
/// payouts: a batch waits for a lock at most two seconds and then leaves
/// its payouts to wait on their own, so the rest of the lane goes on.
#[tokio::test]
async fn stuck_wallet_spares_its_lane() {
    let app = Arc::new(spawn_app().await);
    let admin = app.bootstrap_admin().await;
    // Two clients whose XOF wallets share a lane.
    let mut by_lane: HashMap<u64, Caller> = HashMap::new();
    let (stuck, other) = loop {
        let client = app.create_client(&admin, "client").await;
        let lane = nepxy_api::commands::payouts::lane(&format!("{}:XOF", client.client_id));
        if let Some(first) = by_lane.remove(&lane) {
            break (first, client);
        }
        by_lane.insert(lane, client);
    };
    for client in [&stuck, &other] {
        let reply = app.deposit(&admin, client.client_id, 10_000, "XOF").await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "deposit: {:?}",
            reply.body
        );
    }

    let stuck_wallet = format!("{}:XOF", stuck.client_id);
    let holder = hold_wallets(&app, std::slice::from_ref(&stuck_wallet)).await;
    let stuck_payout = {
        let (app, stuck) = (Arc::clone(&app), stuck.clone());
        tokio::spawn(async move {
            app.post_payout(&stuck, "stuck", &payout_body(1_000, "tmoney"))
                .await
        })
    };
    wait_for_queue(&app).await;

    let other_reply = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        app.post_payout(&other, "free", &payout_body(1_000, "tmoney")),
    )
    .await
    .expect("the other wallet's payout completes while the lock is kept");
    assert_eq!(
        other_reply.status,
        StatusCode::CREATED,
        "{:?}",
        other_reply.body
    );
    assert!(
        !stuck_payout.is_finished(),
        "the stuck wallet's payout still waits"
    );

    holder.commit().await.expect("release the wallet");
    let stuck_reply = stuck_payout.await.expect("stuck payout task");
    assert_eq!(
        stuck_reply.status,
        StatusCode::CREATED,
        "{:?}",
        stuck_reply.body
    );
    for client in [&stuck, &other] {
        let (available, held, _) = balance_row(&app, client).await;
        assert_eq!(
            (available, held),
            (9_000, 1_000),
            "balance of {}",
            client.client_id
        );
    }
}
