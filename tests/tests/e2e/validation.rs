//! Input checks of POST /v1/payouts and the HTTP-level errors: body format,
//! size, headers, unknown routes and X-Request-ID handling.

use nepxy_tests::{Caller, TestApp, assert_problem, payout_body, spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Deposit made before each payout in these tests; it must not exceed the
/// MAX_AMOUNT_MINOR of any server below.
const FUNDING: i64 = 5_000;

/// Returns `payout_body(1_000, "tmoney")` with `path` (dot-separated) set to
/// `value`, or removed when `value` is `None`.
fn body_with(path: &str, value: Option<Value>) -> Value {
    let mut body = payout_body(1_000, "tmoney");
    let (parent, name) = match path.split_once('.') {
        Some((parent, name)) => (&mut body[parent], name),
        None => (&mut body, path),
    };
    let object = parent.as_object_mut().expect("parent is an object");
    match value {
        Some(value) => object.insert(name.to_owned(), value),
        None => object.remove(name),
    };
    body
}

/// Returns `body_with(path, value)` paid through Thunes, which takes numbers
/// of any country.
fn thunes_body_with(path: &str, value: Option<Value>) -> Value {
    let mut body = body_with(path, value);
    body["provider"] = json!("thunes");
    body
}

/// Asserts that nothing but the initial deposit is stored.
async fn assert_nothing_stored(app: &TestApp, case: &str) {
    let payouts = app.count("SELECT count(*) FROM payouts").await;
    assert_eq!(payouts, 0, "{case}: payouts rows");
    // The ClientCreated events of the admin and the client do not count.
    let events = app
        .count("SELECT count(*) FROM events WHERE aggregate_type <> 'Client'")
        .await;
    assert_eq!(events, 1, "{case}: events rows, expected the deposit only");
    let keys = app.count("SELECT count(*) FROM idempotency_keys").await;
    assert_eq!(
        keys, 1,
        "{case}: idempotency_keys rows, expected the deposit only"
    );
}

async fn funded_app(extra: &[(&str, &str)]) -> (TestApp, Caller) {
    let app = spawn_app_with(extra).await;
    let (_admin, client) = app.funded_client(FUNDING, "XOF").await;
    (app, client)
}

#[tokio::test]
async fn invalid_fields_name_the_field() {
    let (app, client) = funded_app(&[]).await;

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "amount with a fraction",
            body_with("amount", Some(json!(12.5))),
            "amount",
        ),
        (
            "amount with a decimal point",
            body_with("amount", Some(json!(100.0))),
            "amount",
        ),
        (
            "amount as a string",
            body_with("amount", Some(json!("100"))),
            "amount",
        ),
        ("zero amount", body_with("amount", Some(json!(0))), "amount"),
        (
            "negative amount",
            body_with("amount", Some(json!(-1))),
            "amount",
        ),
        (
            "amount above the maximum",
            body_with("amount", Some(json!(1_000_000_001_i64))),
            "amount",
        ),
        (
            "amount above i64",
            body_with("amount", Some(json!(u64::MAX))),
            "amount",
        ),
        (
            "null amount",
            body_with("amount", Some(Value::Null)),
            "amount",
        ),
        ("missing amount", body_with("amount", None), "amount"),
        (
            "unknown currency",
            body_with("currency", Some(json!("BTC"))),
            "currency",
        ),
        (
            "lowercase currency",
            body_with("currency", Some(json!("xof"))),
            "currency",
        ),
        ("missing currency", body_with("currency", None), "currency"),
        (
            "msisdn without +",
            body_with("recipient.msisdn", Some(json!("22890123456"))),
            "recipient.msisdn",
        ),
        (
            "msisdn with spaces",
            body_with("recipient.msisdn", Some(json!("+228 90 12 34 56"))),
            "recipient.msisdn",
        ),
        (
            "msisdn with leading zero",
            body_with("recipient.msisdn", Some(json!("+0123456789"))),
            "recipient.msisdn",
        ),
        (
            "msisdn of 7 digits",
            body_with("recipient.msisdn", Some(json!("+2289012"))),
            "recipient.msisdn",
        ),
        (
            "msisdn of 16 digits",
            body_with("recipient.msisdn", Some(json!("+2289012345678901"))),
            "recipient.msisdn",
        ),
        (
            "missing msisdn",
            body_with("recipient.msisdn", None),
            "recipient.msisdn",
        ),
        (
            "tmoney to a number of Benin",
            body_with("recipient.msisdn", Some(json!("+22990123456"))),
            "recipient.msisdn",
        ),
        (
            "tmoney to a Togolese number of 7 digits",
            body_with("recipient.msisdn", Some(json!("+2289012345"))),
            "recipient.msisdn",
        ),
        (
            "tmoney to a Togolese number of 9 digits",
            body_with("recipient.msisdn", Some(json!("+228901234567"))),
            "recipient.msisdn",
        ),
        (
            "unknown provider",
            body_with("provider", Some(json!("paypal"))),
            "provider",
        ),
        ("missing provider", body_with("provider", None), "provider"),
        (
            "missing recipient",
            body_with("recipient", None),
            "recipient",
        ),
        (
            "name of 101 characters",
            body_with("recipient.name", Some(json!("a".repeat(101)))),
            "recipient.name",
        ),
        (
            "blank name",
            body_with("recipient.name", Some(json!("   "))),
            "recipient.name",
        ),
        (
            "name with a control character",
            body_with("recipient.name", Some(json!("Ama\u{0007}"))),
            "recipient.name",
        ),
        (
            "empty reference",
            body_with("reference", Some(json!(""))),
            "reference",
        ),
        (
            "reference of 141 characters",
            body_with("reference", Some(json!("r".repeat(141)))),
            "reference",
        ),
        (
            "unknown top-level field",
            body_with("client_id", Some(json!(Uuid::new_v4()))),
            "client_id",
        ),
        (
            "unknown recipient field",
            body_with(
                "recipient.iban",
                Some(json!("TG53TG0090604310346500400070")),
            ),
            "recipient.iban",
        ),
    ];
    for (index, (case, body, field)) in cases.iter().enumerate() {
        let key = format!("invalid-{index}");
        let reply = app.post_payout(&client, &key, body).await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-error",
            case,
        );
        assert_eq!(
            reply.body["field"], *field,
            "{case}: field, body {:?}",
            reply.body
        );
    }
    assert_nothing_stored(&app, "after every invalid field").await;
}

#[tokio::test]
async fn tmoney_outside_togo_names_fix() {
    let (app, client) = funded_app(&[]).await;
    let body = body_with("recipient.msisdn", Some(json!("+22990123456")));
    let reply = app.post_payout(&client, "benin-by-tmoney", &body).await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/validation-error",
        "tmoney to Benin",
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    for needed in ["recipient.msisdn", "tmoney", "+228", "thunes"] {
        assert!(
            detail.contains(needed),
            "detail lacks {needed:?}: {detail:?}"
        );
    }
    assert!(
        !detail.contains("+22990123456"),
        "detail repeats the number: {detail:?}"
    );
    assert_nothing_stored(&app, "after tmoney to Benin").await;

    // The same body through Thunes is accepted.
    let body = thunes_body_with("recipient.msisdn", Some(json!("+22990123456")));
    let reply = app.post_payout(&client, "benin-by-thunes", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.body["recipient"]["country_code"], 229);
}

#[tokio::test]
async fn boundary_values_are_accepted() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(1_000_000_000, "XOF").await;
    let deposit = app
        .deposit(&admin, client.client_id, 1_000_000, "XOF")
        .await;
    assert_eq!(
        deposit.status,
        StatusCode::CREATED,
        "second deposit: {:?}",
        deposit.body
    );

    // 100 two-byte characters: the limit counts characters, not bytes.
    let long_name = "é".repeat(100);
    let cases: Vec<(&str, Value, &str, Value)> = vec![
        (
            "amount of 1",
            body_with("amount", Some(json!(1))),
            "amount",
            json!(1),
        ),
        (
            "amount at the default maximum",
            body_with("amount", Some(json!(1_000_000_000))),
            "amount",
            json!(1_000_000_000),
        ),
        (
            "msisdn of 8 digits, through thunes",
            thunes_body_with("recipient.msisdn", Some(json!("+22890123"))),
            "recipient",
            json!({ "msisdn": "+22890123", "name": "Kossi Mensah", "country_code": 228 }),
        ),
        (
            "msisdn of 15 digits, through thunes",
            thunes_body_with("recipient.msisdn", Some(json!("+228901234567890"))),
            "recipient",
            json!({ "msisdn": "+228901234567890", "name": "Kossi Mensah", "country_code": 228 }),
        ),
        (
            "name of 100 characters",
            body_with("recipient.name", Some(json!(long_name))),
            "recipient",
            json!({ "msisdn": "+22890123456", "name": long_name, "country_code": 228 }),
        ),
        (
            "name with surrounding spaces",
            body_with("recipient.name", Some(json!("  Ama  "))),
            "recipient",
            json!({ "msisdn": "+22890123456", "name": "Ama", "country_code": 228 }),
        ),
        (
            "name omitted",
            body_with("recipient.name", None),
            "recipient",
            json!({ "msisdn": "+22890123456", "name": null, "country_code": 228 }),
        ),
        (
            "reference of 140 characters",
            body_with("reference", Some(json!("r".repeat(140)))),
            "reference",
            json!("r".repeat(140)),
        ),
        (
            "reference omitted",
            body_with("reference", None),
            "reference",
            Value::Null,
        ),
        (
            "provider thunes",
            body_with("provider", Some(json!("thunes"))),
            "provider",
            json!("thunes"),
        ),
        (
            "provider momo",
            body_with("provider", Some(json!("momo"))),
            "provider",
            json!("momo"),
        ),
        (
            "number of Ghana through thunes",
            thunes_body_with("recipient.msisdn", Some(json!("+233241234567"))),
            "recipient",
            json!({ "msisdn": "+233241234567", "name": "Kossi Mensah", "country_code": 233 }),
        ),
    ];
    for (index, (case, body, field, expected)) in cases.iter().enumerate() {
        let reply = app
            .post_payout(&client, &format!("boundary-{index}"), body)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{case}: {:?}",
            reply.body
        );
        assert_eq!(
            reply.body[*field], *expected,
            "{case}: {field} in the answer"
        );
    }
}

#[tokio::test]
async fn configured_maximum_amount_applies() {
    let (app, client) = funded_app(&[("MAX_AMOUNT_MINOR", "5000")]).await;

    let reply = app
        .post_payout(&client, "above-max", &payout_body(5_001, "tmoney"))
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/validation-error",
        "5001 with a maximum of 5000",
    );
    assert_eq!(reply.body["field"], "amount", "field");
    assert_nothing_stored(&app, "after the amount above the maximum").await;

    let reply = app
        .post_payout(&client, "at-max", &payout_body(5_000, "tmoney"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "an amount equal to the maximum is accepted: {:?}",
        reply.body
    );
}

#[tokio::test]
async fn rejected_body_leaves_key_unused() {
    let (app, client) = funded_app(&[]).await;

    let reply = app
        .post_payout(
            &client,
            "retry-me",
            &body_with("currency", Some(json!("BTC"))),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid body"
    );

    let reply = app
        .post_payout(&client, "retry-me", &payout_body(1_000, "tmoney"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "the key of a rejected request is still free: {:?}",
        reply.body
    );
    assert!(
        reply.header("idempotent-replayed").is_none(),
        "the corrected request is not a replay"
    );
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (app, client) = funded_app(&[]).await;

    let cases: [(&str, &[u8]); 4] = [
        ("truncated object", br#"{"amount": 1000, "currency": "XOF""#),
        ("trailing comma", br#"{"amount": 1000,}"#),
        ("not JSON", b"amount=1000&currency=XOF"),
        ("empty body", b""),
    ];
    for (index, (case, bytes)) in cases.iter().enumerate() {
        let key = format!("malformed-{index}");
        let reply = app
            .send_raw(
                Method::POST,
                "/v1/payouts",
                Some(&client.token),
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", &key),
                ],
                bytes.to_vec(),
            )
            .await;
        assert_problem(
            &reply,
            StatusCode::BAD_REQUEST,
            "/problems/bad-request",
            case,
        );
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("JSON"),
            "{case}: the detail blames the JSON, got {detail:?}"
        );
    }
    assert_nothing_stored(&app, "after malformed bodies").await;
}

#[tokio::test]
async fn body_of_wrong_shape_is_422() {
    let (app, client) = funded_app(&[]).await;

    let cases: [(&str, Value); 3] = [
        ("array body", json!([1, 2, 3])),
        ("string body", json!("payout")),
        (
            "recipient as a string",
            body_with("recipient", Some(json!("+22890123456"))),
        ),
    ];
    for (index, (case, body)) in cases.iter().enumerate() {
        let reply = app
            .post_payout(&client, &format!("shape-{index}"), body)
            .await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-error",
            case,
        );
        assert!(reply.body["field"].is_string(), "{case}: field is missing");
    }
    assert_nothing_stored(&app, "after bodies of the wrong shape").await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let (app, client) = funded_app(&[]).await;
    let body = payout_body(1_000, "tmoney").to_string().into_bytes();

    let cases: [(&str, Option<&str>); 3] = [
        ("text/plain", Some("text/plain")),
        ("form", Some("application/x-www-form-urlencoded")),
        ("no content type", None),
    ];
    for (index, (case, content_type)) in cases.into_iter().enumerate() {
        let key = format!("media-type-{index}");
        let mut headers = vec![("idempotency-key", key.as_str())];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let reply = app
            .send_raw(
                Method::POST,
                "/v1/payouts",
                Some(&client.token),
                &headers,
                body.clone(),
            )
            .await;
        assert_problem(
            &reply,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "/problems/unsupported-media-type",
            case,
        );
    }

    let reply = app
        .send_raw(
            Method::POST,
            "/v1/payouts",
            Some(&client.token),
            &[
                ("idempotency-key", "charset"),
                ("content-type", "application/json; charset=utf-8"),
            ],
            body,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "a charset parameter is accepted: {:?}",
        reply.body
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (app, client) = funded_app(&[]).await;
    let body = body_with("reference", Some(json!("x".repeat(70 * 1024))));

    let reply = app.post_payout(&client, "oversized", &body).await;

    assert_problem(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "/problems/payload-too-large",
        "70 KiB body",
    );
    assert_nothing_stored(&app, "after the oversized body").await;
}

#[tokio::test]
async fn idempotency_key_header_is_checked() {
    let (app, client) = funded_app(&[]).await;
    let body = payout_body(1_000, "tmoney");
    let too_long = "k".repeat(256);

    let reply = app
        .send(
            Method::POST,
            "/v1/payouts",
            Some(&client.token),
            &[],
            Some(&body),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::BAD_REQUEST,
        "/problems/bad-request",
        "missing Idempotency-Key",
    );

    let cases = [
        ("256 characters", too_long.as_str()),
        ("empty", ""),
        ("contains a space", "two words"),
    ];
    for (case, key) in cases {
        let reply = app.post_payout(&client, key, &body).await;
        assert_problem(
            &reply,
            StatusCode::BAD_REQUEST,
            "/problems/bad-request",
            case,
        );
    }
    assert_nothing_stored(&app, "after invalid keys").await;

    let longest = "k".repeat(255);
    let reply = app.post_payout(&client, &longest, &body).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "a key of 255 characters is accepted: {:?}",
        reply.body
    );
}

#[tokio::test]
async fn unknown_route_is_404_problem() {
    let app = spawn_app().await;

    let reply = app
        .send(Method::GET, "/v1/no-such-resource", None, &[], None)
        .await;

    assert_problem(
        &reply,
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "GET /v1/no-such-resource",
    );
}

#[tokio::test]
async fn wrong_method_is_405_problem() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;

    let cases = [
        (Method::DELETE, "/v1/payouts"),
        (Method::PUT, "/v1/auth/token"),
        (Method::GET, "/v1/admin/bootstrap"),
    ];
    for (method, path) in cases {
        let case = format!("{method} {path}");
        let reply = app.send(method, path, Some(&admin.token), &[], None).await;
        assert_problem(
            &reply,
            StatusCode::METHOD_NOT_ALLOWED,
            "/problems/method-not-allowed",
            &case,
        );
    }
}

#[tokio::test]
async fn valid_request_id_is_echoed() {
    let app = spawn_app().await;
    let longest = "r".repeat(128);

    for id in ["req-1.A_b", longest.as_str()] {
        let reply = app
            .send(
                Method::GET,
                "/v1/no-such-resource",
                None,
                &[("x-request-id", id)],
                None,
            )
            .await;
        assert_eq!(
            reply.header("x-request-id"),
            Some(id),
            "X-Request-ID of {id}"
        );
        assert_eq!(reply.body["request_id"], id, "problem request_id of {id}");
    }

    let reply = app
        .send(
            Method::GET,
            "/health",
            None,
            &[("x-request-id", "health-1")],
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "health");
    assert_eq!(
        reply.header("x-request-id"),
        Some("health-1"),
        "X-Request-ID on a success"
    );
}

#[tokio::test]
async fn invalid_request_id_is_replaced() {
    let app = spawn_app().await;
    let too_long = "r".repeat(129);

    let cases = [
        ("129 characters", too_long.as_str()),
        ("contains spaces", "my request id"),
        ("contains a slash", "a/b"),
        ("contains a colon", "a:b"),
    ];
    for (case, id) in cases {
        let reply = app
            .send(
                Method::GET,
                "/v1/no-such-resource",
                None,
                &[("x-request-id", id)],
                None,
            )
            .await;
        let replaced = reply.header("x-request-id").expect("X-Request-ID header");
        assert_ne!(replaced, id, "{case}: the invalid id is not echoed");
        assert!(
            Uuid::parse_str(replaced).is_ok(),
            "{case}: the new id {replaced:?} is a UUID"
        );
        assert_eq!(
            reply.body["request_id"], replaced,
            "{case}: problem request_id equals the new header"
        );
    }

    let reply = app.send(Method::GET, "/health", None, &[], None).await;
    let generated = reply.header("x-request-id").expect("X-Request-ID header");
    assert!(
        Uuid::parse_str(generated).is_ok(),
        "a request without an id gets a UUID, got {generated:?}"
    );
}
