//! Deliveries that fail verification get a 401, are stored as rejected and
//! are never applied. Also: size limits, unknown providers and credential
//! headers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use nepxy_api::webhooks::ReportStatus;
use nepxy_tests::{
    Caller, MomoStatusStub, Reply, TEST_MOMO_SECRET, TEST_THUNES_KEY, TEST_THUNES_SECRET,
    TEST_TMONEY_SECRET, TestApp, assert_problem, momo_path, momo_report, spawn_app, spawn_app_with,
    spawn_app_with_momo, thunes_headers, thunes_report, thunes_signature, tmoney_headers,
    tmoney_report, tmoney_signature, unique_id, unix_now, webhook_id_of,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const AMOUNT: i64 = 2_500;
const TMONEY_PATH: &str = "/v1/webhooks/tmoney";
const THUNES_PATH: &str = "/v1/webhooks/thunes";
/// Largest webhook body the server reads, 64 KiB.
const MAX_BODY_BYTES: usize = 64 * 1024;

type Headers = Vec<(String, String)>;
/// Signs a body with the test secret, a new id and the current time.
type Signer = fn(&[u8]) -> Headers;

/// A server with one pending payout per provider, the targets of the
/// deliveries under test.
struct Target {
    app: TestApp,
    client: Caller,
    tmoney_payout: Uuid,
    thunes_payout: Uuid,
    momo_payout: Uuid,
}

async fn setup_on(app: TestApp) -> Target {
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let tmoney_payout = app
        .create_payout(&client, "tmoney-1", AMOUNT, "tmoney")
        .await;
    let thunes_payout = app
        .create_payout(&client, "thunes-1", AMOUNT, "thunes")
        .await;
    let momo_payout = app.create_payout(&client, "momo-1", AMOUNT, "momo").await;
    Target {
        app,
        client,
        tmoney_payout,
        thunes_payout,
        momo_payout,
    }
}

async fn setup() -> Target {
    setup_on(spawn_app().await).await
}

impl Target {
    fn tmoney_body(&self) -> String {
        tmoney_report(&self.tmoney_payout.to_string(), "SUCCESS", AMOUNT, "XOF")
    }

    fn thunes_body(&self) -> String {
        thunes_report(
            &self.thunes_payout.to_string(),
            json!("70000"),
            json!("7"),
            AMOUNT,
            "XOF",
        )
    }

    fn momo_body(&self) -> String {
        momo_report(&self.momo_payout.to_string(), "SUCCESSFUL", AMOUNT, "XOF")
    }

    /// Asserts that a delivery got a 401 response, was stored as rejected, and
    /// left every payout pending with no new event.
    async fn assert_rejected(&self, reply: &Reply, events_before: i64, context: &str) {
        assert_problem(
            reply,
            StatusCode::UNAUTHORIZED,
            "/problems/unauthorized",
            context,
        );
        let stored = self.app.latest_delivery().await;
        assert_eq!(stored.verdict, "rejected", "{context}: stored verdict");
        assert!(
            stored.reason.is_some(),
            "{context}: stored delivery has no reason"
        );
        assert_eq!(
            self.app.event_count().await,
            events_before,
            "{context}: no new events"
        );
        for payout_id in [self.tmoney_payout, self.thunes_payout, self.momo_payout] {
            assert_eq!(
                self.app.payout_status(&self.client, payout_id).await,
                "pending",
                "{context}: payout {payout_id} status"
            );
        }
    }
}

/// TMoney headers for `body` with the given secret, timestamp and nonce.
fn tmoney_signed(secret: &[u8], timestamp: i64, nonce: &str, body: &[u8]) -> Headers {
    let timestamp = timestamp.to_string();
    let signature = tmoney_signature(secret, &timestamp, nonce, body);
    vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-timestamp".to_owned(), timestamp),
        ("x-nonce".to_owned(), nonce.to_owned()),
        ("x-signature".to_owned(), signature),
    ]
}

/// Thunes headers for `body` with the given key, event id and timestamp.
fn thunes_signed(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Headers {
    let timestamp = timestamp.to_string();
    let signature = thunes_signature(key, id, &timestamp, body);
    vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("webhook-id".to_owned(), id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp),
        ("webhook-signature".to_owned(), format!("v1,{signature}")),
    ]
}

fn without(headers: &Headers, name: &str) -> Headers {
    headers
        .iter()
        .filter(|(existing, _)| existing != name)
        .cloned()
        .collect()
}

fn replaced(headers: &Headers, name: &str, value: &str) -> Headers {
    let mut changed = without(headers, name);
    changed.push((name.to_owned(), value.to_owned()));
    changed
}

fn value_of<'a>(headers: &'a Headers, name: &str) -> &'a str {
    headers
        .iter()
        .find(|(existing, _)| existing == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no header {name}"))
}

/// Appends a second copy of header `name` with the same value.
fn duplicated(headers: &Headers, name: &str) -> Headers {
    let mut changed = headers.clone();
    changed.push((name.to_owned(), value_of(headers, name).to_owned()));
    changed
}

#[tokio::test]
async fn wrong_secret_rejected() {
    let target = setup().await;
    let events_before = target.app.event_count().await;

    let body = target.tmoney_body();
    let headers = tmoney_signed(b"not-the-tmoney-secret", unix_now(), "n-1", body.as_bytes());
    let reply = target
        .app
        .send_webhook(TMONEY_PATH, &headers, body.into_bytes())
        .await;
    target
        .assert_rejected(&reply, events_before, "TMoney, wrong secret")
        .await;

    let body = target.thunes_body();
    let headers = thunes_signed(b"not-the-thunes-key", "msg-1", unix_now(), body.as_bytes());
    let reply = target
        .app
        .send_webhook(THUNES_PATH, &headers, body.into_bytes())
        .await;
    target
        .assert_rejected(&reply, events_before, "Thunes, wrong key")
        .await;

    // The whsec_ text itself is not the key; its base64 part decodes to it.
    let body = target.thunes_body();
    let headers = thunes_signed(
        TEST_THUNES_SECRET.as_bytes(),
        "msg-2",
        unix_now(),
        body.as_bytes(),
    );
    let reply = target
        .app
        .send_webhook(THUNES_PATH, &headers, body.into_bytes())
        .await;
    target
        .assert_rejected(&reply, events_before, "Thunes, signed with the whsec_ text")
        .await;
}

#[tokio::test]
async fn flipped_byte_rejected() {
    let target = setup().await;
    let events_before = target.app.event_count().await;
    let cases: [(&str, &str, String, Signer); 2] = [
        ("TMoney", TMONEY_PATH, target.tmoney_body(), tmoney_headers),
        ("Thunes", THUNES_PATH, target.thunes_body(), thunes_headers),
    ];

    for (provider, path, body, sign) in cases {
        // Sign the body, then change its amount from 2500 to 2501.
        let headers = sign(body.as_bytes());
        let mut body = body.into_bytes();
        let amount = br#""amount":2500"#;
        let position = body
            .windows(amount.len())
            .position(|window| window == amount)
            .expect("body contains the amount")
            + amount.len()
            - 1;
        body[position] = b'1';

        let reply = target.app.send_webhook(path, &headers, body).await;

        target
            .assert_rejected(
                &reply,
                events_before,
                &format!("{provider}, one byte changed"),
            )
            .await;
    }
}

#[tokio::test]
async fn reserialized_json_rejected() {
    let target = setup().await;
    let events_before = target.app.event_count().await;
    let compact = target.tmoney_body();
    let parsed: Value = serde_json::from_str(&compact).expect("report is JSON");
    let pretty = serde_json::to_vec_pretty(&parsed).expect("pretty JSON");
    let reserialized = serde_json::to_vec(&parsed).expect("compact JSON");
    assert_ne!(pretty, reserialized, "the two serializations differ");

    let headers = tmoney_headers(&reserialized);
    let reply = target
        .app
        .send_webhook(TMONEY_PATH, &headers, pretty.clone())
        .await;

    target
        .assert_rejected(&reply, events_before, "signature over re-serialized JSON")
        .await;
    let stored = target.app.latest_delivery().await;
    assert_eq!(
        stored.body.as_deref(),
        Some(pretty.as_slice()),
        "the bytes sent are stored, not a re-serialization"
    );
}

#[tokio::test]
async fn missing_headers_rejected() {
    let target = setup().await;
    let events_before = target.app.event_count().await;

    let body = target.tmoney_body();
    let signed = tmoney_headers(body.as_bytes());
    for name in ["x-timestamp", "x-nonce", "x-signature"] {
        let reply = target
            .app
            .send_webhook(
                TMONEY_PATH,
                &without(&signed, name),
                body.clone().into_bytes(),
            )
            .await;
        target
            .assert_rejected(&reply, events_before, &format!("TMoney without {name}"))
            .await;
    }

    let body = target.thunes_body();
    let signed = thunes_headers(body.as_bytes());
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let reply = target
            .app
            .send_webhook(
                THUNES_PATH,
                &without(&signed, name),
                body.clone().into_bytes(),
            )
            .await;
        target
            .assert_rejected(&reply, events_before, &format!("Thunes without {name}"))
            .await;
    }
}

#[tokio::test]
async fn malformed_headers_rejected() {
    let target = setup().await;
    let events_before = target.app.event_count().await;
    let body = target.tmoney_body();
    let signed = tmoney_headers(body.as_bytes());
    let signature = value_of(&signed, "x-signature").to_owned();
    let long_value = "a".repeat(10 * 1024);

    let cases: Vec<(&str, Headers)> = vec![
        ("empty signature", replaced(&signed, "x-signature", "")),
        (
            "non-hex signature",
            replaced(&signed, "x-signature", &"zz".repeat(32)),
        ),
        (
            "signature one digit short",
            replaced(&signed, "x-signature", &signature[..63]),
        ),
        (
            "signature with a wrong prefix",
            replaced(&signed, "x-signature", &format!("sha1={signature}")),
        ),
        (
            "10 KB signature",
            replaced(&signed, "x-signature", &long_value),
        ),
        ("10 KB nonce", replaced(&signed, "x-nonce", &long_value)),
        (
            "10 KB timestamp",
            replaced(&signed, "x-timestamp", &"1".repeat(10 * 1024)),
        ),
        ("empty timestamp", replaced(&signed, "x-timestamp", "")),
        ("empty nonce", replaced(&signed, "x-nonce", "")),
        (
            "timestamp with a sign",
            replaced(
                &signed,
                "x-timestamp",
                &format!("+{}", value_of(&signed, "x-timestamp")),
            ),
        ),
        ("duplicated signature", duplicated(&signed, "x-signature")),
        ("duplicated nonce", duplicated(&signed, "x-nonce")),
        ("duplicated timestamp", duplicated(&signed, "x-timestamp")),
    ];
    for (case, headers) in cases {
        let reply = target
            .app
            .send_webhook(TMONEY_PATH, &headers, body.clone().into_bytes())
            .await;
        target
            .assert_rejected(&reply, events_before, &format!("TMoney, {case}"))
            .await;
    }

    // A nonce with a '.' could shift the boundary between the signed parts,
    // so it is rejected even with a matching signature.
    let headers = tmoney_signed(
        TEST_TMONEY_SECRET.as_bytes(),
        unix_now(),
        "n.1",
        body.as_bytes(),
    );
    let reply = target
        .app
        .send_webhook(TMONEY_PATH, &headers, body.into_bytes())
        .await;
    target
        .assert_rejected(&reply, events_before, "TMoney, nonce containing '.'")
        .await;

    let body = target.thunes_body();
    let signed = thunes_headers(body.as_bytes());
    let cases: Vec<(&str, Headers)> = vec![
        (
            "empty signature",
            replaced(&signed, "webhook-signature", ""),
        ),
        (
            "10 KB signature",
            replaced(&signed, "webhook-signature", &long_value),
        ),
        (
            "duplicated signature",
            duplicated(&signed, "webhook-signature"),
        ),
        ("duplicated id", duplicated(&signed, "webhook-id")),
    ];
    for (case, headers) in cases {
        let reply = target
            .app
            .send_webhook(THUNES_PATH, &headers, body.clone().into_bytes())
            .await;
        target
            .assert_rejected(&reply, events_before, &format!("Thunes, {case}"))
            .await;
    }
}

#[tokio::test]
async fn stale_timestamps_rejected() {
    let target = setup().await;
    let events_before = target.app.event_count().await;

    // 302 s ahead rather than 301: if a second boundary passes between
    // signing and the server's check, the server still measures more than 300 s.
    for (case, offset) in [("301 s old", -301), ("302 s ahead", 302)] {
        let body = target.tmoney_body();
        let headers = tmoney_signed(
            TEST_TMONEY_SECRET.as_bytes(),
            unix_now() + offset,
            &unique_id("nonce"),
            body.as_bytes(),
        );
        let reply = target
            .app
            .send_webhook(TMONEY_PATH, &headers, body.into_bytes())
            .await;
        target
            .assert_rejected(&reply, events_before, &format!("TMoney, {case}"))
            .await;

        let body = target.thunes_body();
        let headers = thunes_signed(
            TEST_THUNES_KEY,
            &unique_id("msg"),
            unix_now() + offset,
            body.as_bytes(),
        );
        let reply = target
            .app
            .send_webhook(THUNES_PATH, &headers, body.into_bytes())
            .await;
        target
            .assert_rejected(&reply, events_before, &format!("Thunes, {case}"))
            .await;
    }
}

#[tokio::test]
async fn timestamps_within_tolerance_accepted() {
    let target = setup().await;

    let body = target.tmoney_body();
    let headers = tmoney_signed(
        TEST_TMONEY_SECRET.as_bytes(),
        unix_now() - 299,
        "n-old",
        body.as_bytes(),
    );
    let reply = target
        .app
        .send_webhook(TMONEY_PATH, &headers, body.into_bytes())
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "TMoney 299 s old: {:?}",
        reply.body
    );
    assert_eq!(
        reply.body["verdict"], "applied",
        "TMoney 299 s old: verdict"
    );

    let body = target.thunes_body();
    let headers = thunes_signed(
        TEST_THUNES_KEY,
        "msg-ahead",
        unix_now() + 299,
        body.as_bytes(),
    );
    let reply = target
        .app
        .send_webhook(THUNES_PATH, &headers, body.into_bytes())
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "Thunes 299 s ahead: {:?}",
        reply.body
    );
    assert_eq!(
        reply.body["verdict"], "applied",
        "Thunes 299 s ahead: verdict"
    );
}

#[tokio::test]
async fn reused_nonce_rejected() {
    let target = setup().await;
    let body = target.tmoney_body();
    let headers = tmoney_headers(body.as_bytes());

    let first = target
        .app
        .send_webhook(TMONEY_PATH, &headers, body.clone().into_bytes())
        .await;
    assert_eq!(
        first.status,
        StatusCode::OK,
        "first delivery: {:?}",
        first.body
    );
    assert_eq!(first.body["verdict"], "applied", "first delivery: verdict");
    let events_after_first = target.app.event_count().await;

    let second = target
        .app
        .send_webhook(TMONEY_PATH, &headers, body.clone().into_bytes())
        .await;

    assert_problem(
        &second,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "same delivery again",
    );
    let stored = target.app.latest_delivery().await;
    assert_eq!(
        stored.verdict, "rejected",
        "second delivery: stored verdict"
    );
    assert!(
        stored
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("already used")),
        "second delivery: reason names the reused nonce: {:?}",
        stored.reason
    );
    assert_eq!(
        target.app.event_count().await,
        events_after_first,
        "second delivery: no new events"
    );

    let third = target.app.send_tmoney(&body).await;

    assert_eq!(third.status, StatusCode::OK, "new nonce: {:?}", third.body);
    assert_eq!(third.body["verdict"], "duplicate", "new nonce: verdict");
    assert_eq!(
        target.app.event_count().await,
        events_after_first,
        "new nonce: no new events"
    );
    assert_eq!(
        target
            .app
            .payout_status(&target.client, target.tmoney_payout)
            .await,
        "succeeded",
        "payout status"
    );
}

#[tokio::test]
async fn reused_event_id_rejected() {
    let target = setup().await;
    let body = target.thunes_body();
    let headers = thunes_headers(body.as_bytes());
    let first = target
        .app
        .send_webhook(THUNES_PATH, &headers, body.clone().into_bytes())
        .await;
    assert_eq!(
        first.status,
        StatusCode::OK,
        "first delivery: {:?}",
        first.body
    );
    let events_after_first = target.app.event_count().await;

    // Same event id, fresh timestamp and a valid signature over them.
    let retimed = thunes_signed(
        TEST_THUNES_KEY,
        value_of(&headers, "webhook-id"),
        unix_now() + 1,
        body.as_bytes(),
    );
    let second = target
        .app
        .send_webhook(THUNES_PATH, &retimed, body.into_bytes())
        .await;

    assert_problem(
        &second,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "reused webhook-id",
    );
    assert_eq!(
        target.app.latest_delivery().await.verdict,
        "rejected",
        "reused webhook-id: stored verdict"
    );
    assert_eq!(
        target.app.event_count().await,
        events_after_first,
        "reused webhook-id: no new events"
    );
}

#[tokio::test]
async fn thunes_signature_lists() {
    let target = setup().await;
    let events_before = target.app.event_count().await;
    let body = target.thunes_body();
    let signed = thunes_headers(body.as_bytes());
    let good = value_of(&signed, "webhook-signature")
        .strip_prefix("v1,")
        .expect("v1 entry")
        .to_owned();
    let id = value_of(&signed, "webhook-id");
    let timestamp = value_of(&signed, "webhook-timestamp");
    let wrong = thunes_signature(b"another-key", id, timestamp, body.as_bytes());
    let short = STANDARD.encode(&STANDARD.decode(&good).expect("base64")[..31]);

    let rejected = [
        ("only a wrong v1 entry", format!("v1,{wrong}")),
        ("right MAC under v2", format!("v1,{wrong} v2,{good}")),
        ("right MAC without a version", format!("v1,{wrong} ,{good}")),
        ("v1 entry that is not base64", "v1,@@@@".to_owned()),
        ("v1 entry of 31 bytes", format!("v1,{short}")),
        ("no entry at all", "garbage".to_owned()),
        ("bare MAC", good.clone()),
    ];
    for (case, list) in rejected {
        let headers = replaced(&signed, "webhook-signature", &list);
        let reply = target
            .app
            .send_webhook(THUNES_PATH, &headers, body.clone().into_bytes())
            .await;
        target
            .assert_rejected(&reply, events_before, &format!("Thunes, {case}"))
            .await;
    }

    // During a rotation the list has one entry per key; any match verifies.
    let headers = replaced(
        &signed,
        "webhook-signature",
        &format!("v2,xyz v1,{wrong} v1,{good}"),
    );
    let reply = target
        .app
        .send_webhook(THUNES_PATH, &headers, body.into_bytes())
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "matching second entry: {:?}",
        reply.body
    );
    assert_eq!(
        reply.body["verdict"], "applied",
        "matching second entry: verdict"
    );
}

#[tokio::test]
async fn momo_bad_tokens_rejected() {
    let target = setup().await;
    let events_before = target.app.event_count().await;
    let body = target.momo_body();
    let own_token = momo_path(target.momo_payout)
        .rsplit('/')
        .next()
        .expect("token")
        .to_owned();
    let other_token = momo_path(target.tmoney_payout)
        .rsplit('/')
        .next()
        .expect("token")
        .to_owned();
    let (own_id, _) = own_token.split_once('.').expect("id.mac");
    let (_, other_mac) = other_token.split_once('.').expect("id.mac");
    let foreign_secret_token =
        nepxy_api::webhooks::momo::callback_token(b"another-momo-secret", target.momo_payout);

    let cases = [
        ("garbage token", "not-a-callback-token".to_owned()),
        (
            "payout id with another payout's MAC",
            format!("{own_id}.{other_mac}"),
        ),
        ("token made with another secret", foreign_secret_token),
        ("uppercase payout id", own_token.to_uppercase()),
        (
            "token without its last character",
            own_token[..own_token.len() - 1].to_owned(),
        ),
        ("token with an extra character", format!("{own_token}A")),
    ];
    for (case, token) in cases {
        let reply = target
            .app
            .send_webhook(
                &format!("/v1/webhooks/momo/{token}"),
                &[("content-type".to_owned(), "application/json".to_owned())],
                body.clone().into_bytes(),
            )
            .await;
        target
            .assert_rejected(&reply, events_before, &format!("MoMo, {case}"))
            .await;
    }
}

/// A valid callback token of one payout, posted with a body whose externalId
/// names another payout. The token binds the callback to its own payout, so
/// a body that disagrees with it is not that payout's report.
#[tokio::test]
async fn momo_token_of_other_payout() {
    let stub = MomoStatusStub::answering(Some(ReportStatus::Succeeded));
    let target = setup_on(spawn_app_with_momo(&[], Some(stub)).await).await;
    let token_payout = target
        .app
        .create_payout(&target.client, "momo-2", AMOUNT, "momo")
        .await;
    let events_before = target.app.event_count().await;
    let body = target.momo_body();

    let reply = target
        .app
        .send_webhook(
            &momo_path(token_payout),
            &[("content-type".to_owned(), "application/json".to_owned())],
            body.into_bytes(),
        )
        .await;

    target
        .assert_rejected(&reply, events_before, "MoMo, body names another payout")
        .await;
    assert_eq!(
        target.app.payout_status(&target.client, token_payout).await,
        "pending",
        "the payout of the token is unchanged"
    );
}

#[tokio::test]
async fn rotation_accepts_both_secrets() {
    let new_thunes_key = b"thunes-rotated-key-0123456789abc";
    let new_thunes_secret = format!("whsec_{}", STANDARD.encode(new_thunes_key));
    let app = spawn_app_with(&[
        ("TMONEY_WEBHOOK_SECRET", "tmoney-rotated-secret"),
        ("TMONEY_WEBHOOK_SECRET_OLD", TEST_TMONEY_SECRET),
        ("THUNES_WEBHOOK_SECRET", &new_thunes_secret),
        ("THUNES_WEBHOOK_SECRET_OLD", TEST_THUNES_SECRET),
        ("MOMO_CALLBACK_SECRET", "momo-rotated-secret"),
        ("MOMO_CALLBACK_SECRET_OLD", TEST_MOMO_SECRET),
    ])
    .await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;

    let tmoney_cases: [(&str, &[u8]); 2] = [
        ("old", TEST_TMONEY_SECRET.as_bytes()),
        ("new", b"tmoney-rotated-secret"),
    ];
    for (which, secret) in tmoney_cases {
        let payout_id = app
            .create_payout(&client, &format!("tmoney-{which}"), AMOUNT, "tmoney")
            .await;
        let body = tmoney_report(&payout_id.to_string(), "SUCCESS", AMOUNT, "XOF");
        let headers = tmoney_signed(secret, unix_now(), &unique_id("n"), body.as_bytes());
        let reply = app
            .send_webhook(TMONEY_PATH, &headers, body.into_bytes())
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "TMoney {which} secret: {:?}",
            reply.body
        );
        assert_eq!(
            reply.body["verdict"], "applied",
            "TMoney {which} secret: verdict"
        );
    }

    let thunes_cases: [(&str, &[u8]); 2] = [("old", TEST_THUNES_KEY), ("new", new_thunes_key)];
    for (which, key) in thunes_cases {
        let payout_id = app
            .create_payout(&client, &format!("thunes-{which}"), AMOUNT, "thunes")
            .await;
        let body = thunes_report(
            &payout_id.to_string(),
            json!(70000),
            json!(7),
            AMOUNT,
            "XOF",
        );
        let headers = thunes_signed(key, &unique_id("msg"), unix_now(), body.as_bytes());
        let reply = app
            .send_webhook(THUNES_PATH, &headers, body.into_bytes())
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "Thunes {which} key: {:?}",
            reply.body
        );
        assert_eq!(
            reply.body["verdict"], "applied",
            "Thunes {which} key: verdict"
        );
    }

    // MoMo callbacks are confirmed before they apply, and no lookup is
    // configured here, so the response to a verified token is 202 unconfirmed.
    let momo_cases: [(&str, &[u8]); 2] = [
        ("old", TEST_MOMO_SECRET.as_bytes()),
        ("new", b"momo-rotated-secret"),
    ];
    for (which, secret) in momo_cases {
        let payout_id = app
            .create_payout(&client, &format!("momo-{which}"), AMOUNT, "momo")
            .await;
        let token = nepxy_api::webhooks::momo::callback_token(secret, payout_id);
        let body = momo_report(&payout_id.to_string(), "SUCCESSFUL", AMOUNT, "XOF");
        let reply = app
            .send_webhook(
                &format!("/v1/webhooks/momo/{token}"),
                &[("content-type".to_owned(), "application/json".to_owned())],
                body.into_bytes(),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "MoMo {which} secret: {:?}",
            reply.body
        );
        assert_eq!(
            reply.body["verdict"], "unconfirmed",
            "MoMo {which} secret: verdict"
        );
    }

    let payout_id = app
        .create_payout(&client, "tmoney-third", AMOUNT, "tmoney")
        .await;
    let body = tmoney_report(&payout_id.to_string(), "SUCCESS", AMOUNT, "XOF");
    let headers = tmoney_signed(
        b"tmoney-third-secret",
        unix_now(),
        "n-third",
        body.as_bytes(),
    );
    let reply = app
        .send_webhook(TMONEY_PATH, &headers, body.into_bytes())
        .await;
    assert_problem(
        &reply,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "TMoney signed with neither secret",
    );
}

#[tokio::test]
async fn oversized_body_413() {
    let target = setup().await;
    let events_before = target.app.event_count().await;
    let body = vec![b' '; MAX_BODY_BYTES + 1];
    let headers = tmoney_headers(&body);

    let reply = target.app.send_webhook(TMONEY_PATH, &headers, body).await;

    assert_problem(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "/problems/payload-too-large",
        "64 KiB + 1 byte",
    );
    let stored = target.app.latest_delivery().await;
    assert_eq!(stored.verdict, "oversized", "stored verdict");
    assert_eq!(stored.body, None, "the body is not stored");
    assert_eq!(
        stored.body_size,
        (MAX_BODY_BYTES + 1) as i64,
        "the declared size is stored"
    );
    assert_eq!(stored.provider, "tmoney", "stored provider");
    assert_eq!(
        target.app.event_count().await,
        events_before,
        "no new events"
    );
}

#[tokio::test]
async fn body_at_limit_accepted() {
    let target = setup().await;
    let mut body = target.tmoney_body().into_bytes();
    body.resize(MAX_BODY_BYTES, b' ');
    let headers = tmoney_headers(&body);

    let reply = target
        .app
        .send_webhook(TMONEY_PATH, &headers, body.clone())
        .await;

    assert_eq!(
        reply.status,
        StatusCode::OK,
        "64 KiB body: {:?}",
        reply.body
    );
    assert_eq!(reply.body["verdict"], "applied", "64 KiB body: verdict");
    let stored = target.app.stored_delivery(webhook_id_of(&reply)).await;
    assert_eq!(stored.body.as_deref(), Some(body.as_slice()), "body stored");
}

#[tokio::test]
async fn unknown_provider_404() {
    let target = setup().await;
    let deliveries_before = target
        .app
        .count("SELECT count(*) FROM webhook_deliveries")
        .await;
    let body = target.tmoney_body();

    for path in [
        "/v1/webhooks/paypal",
        "/v1/webhooks/momo",
        "/v1/webhooks/TMONEY",
    ] {
        let headers = tmoney_headers(body.as_bytes());
        let reply = target
            .app
            .send_webhook(path, &headers, body.clone().into_bytes())
            .await;
        assert_problem(&reply, StatusCode::NOT_FOUND, "/problems/not-found", path);
    }
    assert_eq!(
        target
            .app
            .count("SELECT count(*) FROM webhook_deliveries")
            .await,
        deliveries_before,
        "nothing is stored for an unknown provider"
    );
}

#[tokio::test]
async fn credential_headers_not_stored() {
    let target = setup().await;
    let body = target.tmoney_body();
    let mut headers = tmoney_headers(body.as_bytes());
    headers.extend([
        (
            "authorization".to_owned(),
            "Bearer provider-token".to_owned(),
        ),
        ("cookie".to_owned(), "session=abc".to_owned()),
        (
            "proxy-authorization".to_owned(),
            "Basic cHJveHk6cHc=".to_owned(),
        ),
        ("X-Provider-Trace".to_owned(), "trace-42".to_owned()),
    ]);

    let reply = target
        .app
        .send_webhook(TMONEY_PATH, &headers, body.into_bytes())
        .await;

    assert_eq!(reply.status, StatusCode::OK, "delivery: {:?}", reply.body);
    let stored = target.app.stored_delivery(webhook_id_of(&reply)).await;
    let pairs: Vec<(String, String)> =
        serde_json::from_value(stored.headers.clone()).expect("headers are [name, value] pairs");
    let stored_value = |name: &str| {
        pairs
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.clone())
    };
    for credential in ["authorization", "cookie", "proxy-authorization"] {
        assert_eq!(stored_value(credential), None, "{credential} is not stored");
    }
    assert_eq!(
        stored_value("x-provider-trace").as_deref(),
        Some("trace-42"),
        "other headers are stored, with lowercase names"
    );
    for signed in ["x-timestamp", "x-nonce", "x-signature"] {
        assert_eq!(
            stored_value(signed).as_deref(),
            Some(value_of(&headers, signed)),
            "{signed} is stored as sent"
        );
    }
    let serialized = stored.headers.to_string();
    assert!(
        !serialized.contains("provider-token") && !serialized.contains("session=abc"),
        "no credential value appears in the stored headers: {serialized}"
    );
}
