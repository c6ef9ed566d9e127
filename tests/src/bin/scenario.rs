//! Drives a demo scenario through a running nepxy-api over HTTP.
//!
//! The scenario bootstraps the first admin, creates a client, funds its
//! wallet, sends payouts, repeats the payouts marked `"repeat": true` to
//! show the idempotent replay, reads everything back and checks the
//! balance. Every step prints one line starting with `ok` or `FAIL`, and the
//! program exits with status 1 at the first failure.
//!
//! When a payout names an `expect` status, the runner also acts as the
//! client's notification receiver. It serves HTTP on 127.0.0.1, registers that
//! URL as the client's notification endpoint before the payouts, and checks
//! that a signed notification of the final status arrives for each payout
//! with an `expect` status. The service accepts such a loopback `http` URL only
//! when it runs with APP_ENV=dev or staging.
//!
//! Because bootstrap succeeds only while the database has no admin, each run
//! needs a fresh database, which `scripts/run.sh` creates.
//!
//! Scenario file (JSON, see examples/scenario.json). Amounts are integers in
//! the currency's minor unit, as in the API, and every payout uses the
//! deposit's currency:
//!
//! ```json
//! {
//!   "client": { "name": "Nepxy app" },
//!   "deposit": { "idempotency_key": "…", "amount": 1000000, "currency": "XOF" },
//!   "payouts": [
//!     { "idempotency_key": "…", "provider": "tmoney", "amount": 25000,
//!       "recipient": { "msisdn": "+22890112233", "name": "…" },
//!       "reference": "…", "repeat": true }
//!   ]
//! }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use hmac::{Hmac, KeyInit, Mac};
use nepxy_ledger::Currency;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

/// Pause between two GET /health attempts while waiting for the service.
const HEALTH_RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// Upper bound on GET /v1/payouts pages read while looking for the
/// scenario's payouts, so that a cursor that never ends cannot loop forever.
const MAX_LIST_PAGES: usize = 100;
/// Maximum number of characters of a non-JSON error body shown in a FAIL line.
const MAX_BODY_EXCERPT_CHARS: usize = 300;

#[derive(Parser)]
#[command(
    name = "nepxy-scenario",
    version,
    about = "Run a demo scenario (admin, client, deposit, payouts, idempotent replay, balance, signed notifications) against a running nepxy-api"
)]
struct Cli {
    /// Base URL of the running nepxy-api.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    base_url: String,

    /// Scenario file (JSON). A relative path starts from the current directory.
    #[arg(long, default_value = "examples/scenario.json")]
    scenario: PathBuf,

    /// The service's BOOTSTRAP_ADMIN_SECRET, sent as the X-Bootstrap-Secret header.
    #[arg(long, env = "BOOTSTRAP_ADMIN_SECRET", hide_env_values = true)]
    bootstrap_secret: String,

    /// Seconds to wait for GET /health to return 200 before the first step.
    #[arg(long, default_value_t = 30)]
    wait_seconds: u64,

    /// Timeout of each HTTP request, in seconds.
    #[arg(long, default_value_t = 10)]
    request_timeout_seconds: u64,

    /// Seconds to wait for the payouts that name an `expect` status to reach
    /// it, through the provider and its callback.
    #[arg(long, default_value_t = 60)]
    final_wait_seconds: u64,

    /// Seconds to wait, after the payouts reached their final statuses, for
    /// a notification of each payout that names an `expect` status.
    #[arg(long, default_value_t = 30)]
    notification_wait_seconds: u64,

    /// Directory where the admin's and the client's POST /v1/auth/token
    /// bodies (with their secrets) are written, readable by the owner only.
    #[arg(long)]
    credentials_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            println!("{failure}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), StepFailure> {
    let scenario = load_scenario(&cli.scenario)?;
    let repeated = scenario.payouts.iter().filter(|p| p.repeat).count();
    pass(format!(
        "read scenario {}: payouts {}, to repeat {repeated}",
        cli.scenario.display(),
        scenario.payouts.len()
    ));

    let api = Api::new(
        &cli.base_url,
        Duration::from_secs(cli.request_timeout_seconds),
    )?;
    wait_for_health(&api, Duration::from_secs(cli.wait_seconds)).await?;

    let admin = bootstrap_admin(&api, &cli.bootstrap_secret).await?;
    let client = create_client(&api, &admin, &scenario.client.name).await?;
    if let Some(dir) = &cli.credentials_dir {
        write_credentials(dir, &admin, &client)?;
    }

    // The receiver runs only as long as this program, so it is registered
    // only when the run waits for notifications.
    // NOTE: the endpoint stays registered after the run, so the service
    // retries any later notification of this client (a reversal, say)
    // against the closed port until its retry window of 3 days ends.
    let notification_receiver = if scenario.payouts.iter().any(|p| p.expect.is_some()) {
        let receiver = NotificationReceiver::start().await?;
        let endpoint = register_notification_endpoint(&api, &client, &receiver.url).await?;
        Some((receiver, endpoint))
    } else {
        None
    };

    deposit(&api, &admin, &client, &scenario.deposit).await?;
    let currency = &scenario.deposit.currency;
    let mut payouts = Vec::new();
    for (index, spec) in scenario.payouts.iter().enumerate() {
        let label = format!("payout {}/{}", index + 1, scenario.payouts.len());
        payouts.push(create_payout(&api, &client, currency, spec, label).await?);
    }
    for payout in payouts.iter().filter(|payout| payout.spec.repeat) {
        repeat_payout(&api, &client, currency, payout).await?;
    }

    wait_for_final_statuses(
        &api,
        &client,
        &payouts,
        Duration::from_secs(cli.final_wait_seconds),
    )
    .await?;
    for payout in &mut payouts {
        read_payout(&api, &client, currency, payout).await?;
    }
    let notifications = match &notification_receiver {
        Some((receiver, endpoint)) => {
            check_notifications(
                &api,
                &client,
                receiver,
                endpoint,
                &payouts,
                Duration::from_secs(cli.notification_wait_seconds),
            )
            .await?
        }
        None => Vec::new(),
    };
    check_payout_list(&api, &client, &payouts).await?;
    let balances = check_balance(&api, &client, &scenario.deposit, &payouts).await?;

    let endpoint = notification_receiver.as_ref().map(|(_, endpoint)| endpoint);
    print_report(&client, &payouts, &balances, &notifications, endpoint);
    Ok(())
}

// ---------------------------------------------------------------------------
// Scenario file

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    client: ClientSpec,
    deposit: DepositSpec,
    payouts: Vec<PayoutSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientSpec {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepositSpec {
    idempotency_key: String,
    amount: i64,
    currency: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutSpec {
    idempotency_key: String,
    provider: String,
    amount: i64,
    recipient: RecipientSpec,
    reference: Option<String>,
    /// Send the request a second time with the same Idempotency-Key and body.
    #[serde(default)]
    repeat: bool,
    /// Final status the payout must reach (succeeded or failed), when the
    /// service runs beside a provider sandbox.
    expect: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipientSpec {
    msisdn: String,
    name: Option<String>,
}

/// Reads and checks the scenario file. Amounts, providers and numbers are
/// left to the service to validate, because the scenario shows how it responds.
fn load_scenario(path: &Path) -> Result<Scenario, StepFailure> {
    let step = format!("read scenario {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|error| {
        StepFailure::local(
            &step,
            format!("cannot read the file: {error}. Pass an existing file with --scenario"),
        )
    })?;
    let scenario: Scenario = serde_json::from_str(&text)
        .map_err(|error| StepFailure::local(&step, format!("invalid scenario JSON: {error}")))?;

    if scenario.payouts.is_empty() {
        return Err(StepFailure::local(
            &step,
            "the payouts list is empty. Add at least one payout",
        ));
    }
    // A duplicate key would turn the second payout into a replay of the
    // first, which the scenario would then report as a failed payout.
    let mut keys = HashSet::new();
    for payout in &scenario.payouts {
        if !keys.insert(payout.idempotency_key.as_str()) {
            return Err(StepFailure::local(
                &step,
                format!(
                    "idempotency_key {:?} is used by more than one payout. Give each payout its own key, and mark a payout with \"repeat\": true to replay it",
                    payout.idempotency_key
                ),
            ));
        }
    }
    Ok(scenario)
}

// ---------------------------------------------------------------------------
// Steps

/// A client of the service with its secret and access token.
struct Caller {
    client_id: String,
    secret: String,
    token: String,
}

/// A payout as created by the scenario and last read back from the service.
struct Payout<'a> {
    spec: &'a PayoutSpec,
    label: String,
    request_body: Value,
    created_body: Value,
    id: String,
    status: String,
}

async fn wait_for_health(api: &Api, max_wait: Duration) -> Result<(), StepFailure> {
    let step = "GET /health";
    let started = Instant::now();
    let last_problem = loop {
        let problem = match api
            .send(step, Method::GET, "/health", None, &[], None)
            .await
        {
            Ok(reply) if reply.status == StatusCode::OK => {
                pass(format!(
                    "{step}: service is up, database {}, version {} (after {:.1} s)",
                    text_field(&reply.body, "database"),
                    text_field(&reply.body, "version"),
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            Ok(reply) => format!("HTTP {}: {}", reply.status, summarize_body(&reply.body)),
            Err(failure) => failure.detail,
        };
        if started.elapsed() + HEALTH_RETRY_INTERVAL > max_wait {
            break problem;
        }
        tokio::time::sleep(HEALTH_RETRY_INTERVAL).await;
    };
    Err(StepFailure::local(
        step,
        format!(
            "no 200 from {} within {} s, last result: {last_problem}. Check that nepxy-api is running there, or raise --wait-seconds",
            api.url("/health"),
            max_wait.as_secs()
        ),
    ))
}

async fn bootstrap_admin(api: &Api, bootstrap_secret: &str) -> Result<Caller, StepFailure> {
    let step = "bootstrap admin";
    let reply = api
        .send(
            step,
            Method::POST,
            "/v1/admin/bootstrap",
            None,
            &[("x-bootstrap-secret", bootstrap_secret)],
            Some(&json!({ "name": "scenario admin" })),
        )
        .await?;
    let reply = match reply.status {
        StatusCode::CONFLICT => {
            return Err(StepFailure::http(step, &reply).with_hint(
                "The database already has an admin, so run the scenario against a fresh database. scripts/run.sh creates one when DATABASE_URL is unset",
            ));
        }
        StatusCode::UNAUTHORIZED => {
            return Err(StepFailure::http(step, &reply).with_hint(
                "Pass the service's BOOTSTRAP_ADMIN_SECRET with --bootstrap-secret or the BOOTSTRAP_ADMIN_SECRET variable",
            ));
        }
        StatusCode::NOT_FOUND => {
            return Err(StepFailure::http(step, &reply)
                .with_hint("Bootstrap is off because the service has no BOOTSTRAP_ADMIN_SECRET, so restart it with one set"));
        }
        _ => reply.expect(step, StatusCode::CREATED)?,
    };
    let client_id = required_text(step, &reply.body, "client_id")?;
    let secret = required_text(step, &reply.body, "client_secret")?;
    pass(format!("{step}: created admin {client_id}"));

    let token = issue_token(api, "admin", &client_id, &secret).await?;
    Ok(Caller {
        client_id,
        secret,
        token,
    })
}

async fn issue_token(
    api: &Api,
    role: &str,
    client_id: &str,
    secret: &str,
) -> Result<String, StepFailure> {
    let step = format!("token for {role}");
    let reply = api
        .send(
            &step,
            Method::POST,
            "/v1/auth/token",
            None,
            &[],
            Some(&token_request_body(client_id, secret)),
        )
        .await?
        .expect(&step, StatusCode::OK)?;
    let token = required_text(&step, &reply.body, "access_token")?;
    pass(format!(
        "{step}: expires in {} s",
        text_field(&reply.body, "expires_in")
    ));
    Ok(token)
}

fn token_request_body(client_id: &str, secret: &str) -> Value {
    json!({
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
    })
}

async fn create_client(api: &Api, admin: &Caller, name: &str) -> Result<Caller, StepFailure> {
    let step = format!("create client {name:?}");
    let reply = api
        .send(
            &step,
            Method::POST,
            "/v1/admin/clients",
            Some(&admin.token),
            &[],
            Some(&json!({ "name": name, "role": "client" })),
        )
        .await?
        .expect(&step, StatusCode::CREATED)?;
    let client_id = required_text(&step, &reply.body, "client_id")?;
    let secret = required_text(&step, &reply.body, "client_secret")?;
    pass(format!("{step}: created client {client_id}"));

    let token = issue_token(api, "client", &client_id, &secret).await?;
    Ok(Caller {
        client_id,
        secret,
        token,
    })
}

/// Writes the POST /v1/auth/token bodies of both callers, so that a person
/// can get tokens with curl without the secrets appearing in any output.
fn write_credentials(dir: &Path, admin: &Caller, client: &Caller) -> Result<(), StepFailure> {
    let step = format!("write token request bodies to {}", dir.display());
    std::fs::create_dir_all(dir).map_err(|error| {
        StepFailure::local(&step, format!("cannot create the directory: {error}"))
    })?;
    for (file_name, caller) in [
        ("admin-token-request.json", admin),
        ("client-token-request.json", client),
    ] {
        let path = dir.join(file_name);
        let body = token_request_body(&caller.client_id, &caller.secret);
        write_private_file(&path, format!("{body:#}\n").as_bytes()).map_err(|error| {
            StepFailure::local(&step, format!("cannot write {}: {error}", path.display()))
        })?;
    }
    pass(format!(
        "{step}: admin-token-request.json, client-token-request.json"
    ));
    Ok(())
}

/// Writes `contents` to `path`, readable and writable by the owner only.
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // The mode above applies only when the file is created.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)
    }
    #[cfg(not(unix))]
    {
        options.open(path)?.write_all(contents)
    }
}

async fn deposit(
    api: &Api,
    admin: &Caller,
    client: &Caller,
    spec: &DepositSpec,
) -> Result<(), StepFailure> {
    let step = format!(
        "deposit {} to client {}",
        format_amount(spec.amount, &spec.currency),
        client.client_id
    );
    let reply = api
        .send(
            &step,
            Method::POST,
            &format!("/v1/accounts/{}/deposits", client.client_id),
            Some(&admin.token),
            &[("idempotency-key", &spec.idempotency_key)],
            Some(&json!({ "amount": spec.amount, "currency": spec.currency })),
        )
        .await?
        .expect(&step, StatusCode::CREATED)?;

    // The client was created by this run, so the deposit is its only money.
    let available = reply.body["balance"]["available"].as_i64();
    let held = reply.body["balance"]["held"].as_i64();
    if available != Some(spec.amount) || held != Some(0) {
        return Err(StepFailure::local(
            &step,
            format!(
                "expected balance available {} and held 0 for a new client, got {}",
                spec.amount, reply.body["balance"]
            ),
        ));
    }
    pass(format!(
        "{step}: deposit {}, available {}",
        text_field(&reply.body, "deposit_id"),
        format_amount(spec.amount, &spec.currency)
    ));
    Ok(())
}

async fn create_payout<'a>(
    api: &Api,
    client: &Caller,
    currency: &str,
    spec: &'a PayoutSpec,
    label: String,
) -> Result<Payout<'a>, StepFailure> {
    let step = format!(
        "{label}: {} to {} via {}",
        format_amount(spec.amount, currency),
        spec.recipient.msisdn,
        spec.provider
    );
    let mut request_body = json!({
        "amount": spec.amount,
        "currency": currency,
        "provider": spec.provider,
        "recipient": { "msisdn": spec.recipient.msisdn },
    });
    if let Some(name) = &spec.recipient.name {
        request_body["recipient"]["name"] = json!(name);
    }
    if let Some(reference) = &spec.reference {
        request_body["reference"] = json!(reference);
    }

    let reply = api
        .send(
            &step,
            Method::POST,
            "/v1/payouts",
            Some(&client.token),
            &[("idempotency-key", &spec.idempotency_key)],
            Some(&request_body),
        )
        .await?
        .expect(&step, StatusCode::CREATED)?;
    if reply.header("idempotent-replayed").is_some() {
        return Err(StepFailure::local(
            &step,
            format!(
                "the first request with Idempotency-Key {:?} came back as a replay, so the database already has this payout. Run the scenario against a fresh database",
                spec.idempotency_key
            ),
        ));
    }
    check_payout_fields(&step, &reply.body, currency, spec)?;
    let id = required_text(&step, &reply.body, "id")?;
    let status = required_text(&step, &reply.body, "status")?;
    pass(format!("{step}: {status}, id {id}"));

    Ok(Payout {
        spec,
        label,
        request_body,
        created_body: reply.body,
        id,
        status,
    })
}

/// Checks that a payout returned by the service matches what was requested.
fn check_payout_fields(
    step: &str,
    body: &Value,
    currency: &str,
    spec: &PayoutSpec,
) -> Result<(), StepFailure> {
    let expected = [
        ("amount", json!(spec.amount)),
        ("currency", json!(currency)),
        ("provider", json!(spec.provider)),
    ];
    for (field, expected) in expected {
        if body[field] != expected {
            return Err(StepFailure::local(
                step,
                format!("{field} is {}, expected {expected}", body[field]),
            ));
        }
    }
    if body["recipient"]["msisdn"] != json!(spec.recipient.msisdn) {
        return Err(StepFailure::local(
            step,
            format!(
                "recipient.msisdn is {}, expected {:?}",
                body["recipient"]["msisdn"], spec.recipient.msisdn
            ),
        ));
    }
    Ok(())
}

/// Sends a payout request again with the same key and body, and checks that
/// the service returns the stored response instead of creating a second payout.
async fn repeat_payout(
    api: &Api,
    client: &Caller,
    currency: &str,
    payout: &Payout<'_>,
) -> Result<(), StepFailure> {
    let step = format!(
        "repeat {} (Idempotency-Key {})",
        payout.label, payout.spec.idempotency_key
    );
    let reply = api
        .send(
            &step,
            Method::POST,
            "/v1/payouts",
            Some(&client.token),
            &[("idempotency-key", &payout.spec.idempotency_key)],
            Some(&payout.request_body),
        )
        .await?
        .expect(&step, StatusCode::CREATED)?;

    match reply.header("idempotent-replayed") {
        Some("true") => {}
        other => {
            return Err(StepFailure::local(
                &step,
                format!("expected header Idempotent-Replayed: true, got {other:?}"),
            ));
        }
    }
    check_payout_fields(&step, &reply.body, currency, payout.spec)?;
    let replayed_id = required_text(&step, &reply.body, "id")?;
    if replayed_id != payout.id {
        return Err(StepFailure::local(
            &step,
            format!(
                "the replay returned payout {replayed_id}, but the first request created {}",
                payout.id
            ),
        ));
    }
    if reply.body != payout.created_body {
        return Err(StepFailure::local(
            &step,
            format!(
                "the replayed body differs from the first response: first {}, replay {}",
                payout.created_body, reply.body
            ),
        ));
    }
    pass(format!(
        "{step}: Idempotent-Replayed: true, same id {replayed_id} and body"
    ));
    Ok(())
}

async fn read_payout(
    api: &Api,
    client: &Caller,
    currency: &str,
    payout: &mut Payout<'_>,
) -> Result<(), StepFailure> {
    let step = format!("GET /v1/payouts/{}", payout.id);
    let reply = api
        .send(
            &step,
            Method::GET,
            &format!("/v1/payouts/{}", payout.id),
            Some(&client.token),
            &[],
            None,
        )
        .await?
        .expect(&step, StatusCode::OK)?;
    let id = required_text(&step, &reply.body, "id")?;
    if id != payout.id {
        return Err(StepFailure::local(
            &step,
            format!("returned payout {id} instead of {}", payout.id),
        ));
    }
    check_payout_fields(&step, &reply.body, currency, payout.spec)?;
    payout.status = required_text(&step, &reply.body, "status")?;
    pass(format!(
        "{step}: {}, {}",
        payout.spec.provider, payout.status
    ));
    Ok(())
}

/// Polls each payout that names an `expect` status until it has it. The
/// payouts go to the provider (the sandbox in the demo), which reports the
/// outcome by webhook or answers the dispatcher's status poll.
async fn wait_for_final_statuses(
    api: &Api,
    client: &Caller,
    payouts: &[Payout<'_>],
    max_wait: Duration,
) -> Result<(), StepFailure> {
    let started = tokio::time::Instant::now();
    for payout in payouts {
        let Some(expected) = payout.spec.expect.as_deref() else {
            continue;
        };
        let step = format!("{} reaches {expected}", payout.label);
        loop {
            let reply = api
                .send(
                    &step,
                    Method::GET,
                    &format!("/v1/payouts/{}", payout.id),
                    Some(&client.token),
                    &[],
                    None,
                )
                .await?
                .expect(&step, StatusCode::OK)?;
            let status = required_text(&step, &reply.body, "status")?;
            if status == expected {
                let detail = reply.body["failure_code"]
                    .as_str()
                    .map(|code| format!(" ({code})"))
                    .unwrap_or_default();
                pass(format!(
                    "{step}: {} via {} after {:.1} s{detail}",
                    status,
                    payout.spec.provider,
                    started.elapsed().as_secs_f64()
                ));
                break;
            }
            let settled = matches!(status.as_str(), "succeeded" | "failed" | "reversed");
            if settled || started.elapsed() >= max_wait {
                return Err(StepFailure::local(
                    &step,
                    format!(
                        "status is {status} after {:.0} s; is the provider sandbox running and the dispatcher on?",
                        started.elapsed().as_secs_f64()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Checks that GET /v1/payouts lists each payout of the scenario exactly
/// once, so the repeated requests created nothing.
async fn check_payout_list(
    api: &Api,
    client: &Caller,
    payouts: &[Payout<'_>],
) -> Result<(), StepFailure> {
    let step = "GET /v1/payouts";
    let mut listed: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_LIST_PAGES {
        let path = match &cursor {
            Some(cursor) => format!("/v1/payouts?limit=200&cursor={cursor}"),
            None => "/v1/payouts?limit=200".to_owned(),
        };
        let reply = api
            .send(step, Method::GET, &path, Some(&client.token), &[], None)
            .await?
            .expect(step, StatusCode::OK)?;
        let Some(items) = reply.body["items"].as_array() else {
            return Err(StepFailure::local(
                step,
                format!("the response has no items array: {}", reply.body),
            ));
        };
        for item in items {
            listed.push(required_text(step, item, "id")?);
        }
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }

    if listed.len() != payouts.len() {
        return Err(StepFailure::local(
            step,
            format!(
                "listed {} payouts, but the scenario created {}, so a repeated request may have created a second payout",
                listed.len(),
                payouts.len()
            ),
        ));
    }
    for payout in payouts {
        if !listed.contains(&payout.id) {
            return Err(StepFailure::local(
                step,
                format!(
                    "payout {} ({}) is missing from the list",
                    payout.id, payout.label
                ),
            ));
        }
    }
    pass(format!(
        "{step}: {} payouts listed, none created by the repeats",
        listed.len()
    ));
    Ok(())
}

/// One row of GET /v1/accounts/{client_id}/balance.
struct Balance {
    currency: String,
    available: i64,
    held: i64,
}

/// Checks the wallet against the deposit and the payouts: money of pending
/// and submitted payouts is held, money of succeeded payouts has left the
/// wallet, and failed or reversed payouts have released theirs.
// NOTE: the check uses the statuses read just before the balance. A payout
// that changes status between the two reads (once a dispatcher runs) makes
// it fail although the ledger is right.
async fn check_balance(
    api: &Api,
    client: &Caller,
    deposit: &DepositSpec,
    payouts: &[Payout<'_>],
) -> Result<Vec<Balance>, StepFailure> {
    let step = format!("GET /v1/accounts/{}/balance", client.client_id);
    let reply = api
        .send(
            &step,
            Method::GET,
            &format!("/v1/accounts/{}/balance", client.client_id),
            Some(&client.token),
            &[],
            None,
        )
        .await?
        .expect(&step, StatusCode::OK)?;
    let Some(rows) = reply.body["balances"].as_array() else {
        return Err(StepFailure::local(
            &step,
            format!("the response has no balances array: {}", reply.body),
        ));
    };
    let mut balances = Vec::new();
    for row in rows {
        let (Some(currency), Some(available), Some(held)) = (
            row["currency"].as_str(),
            row["available"].as_i64(),
            row["held"].as_i64(),
        ) else {
            return Err(StepFailure::local(
                &step,
                format!("a balance lacks currency, available or held: {row}"),
            ));
        };
        balances.push(Balance {
            currency: currency.to_owned(),
            available,
            held,
        });
    }

    let Some(wallet) = balances
        .iter()
        .find(|balance| balance.currency == deposit.currency)
    else {
        return Err(StepFailure::local(
            &step,
            format!("no {} balance in {}", deposit.currency, reply.body),
        ));
    };
    let sum_with_status = |statuses: &[&str]| -> i64 {
        payouts
            .iter()
            .filter(|payout| statuses.contains(&payout.status.as_str()))
            .map(|payout| payout.spec.amount)
            .sum()
    };
    let expected_held = sum_with_status(&["pending", "submitted"]);
    let expected_total = deposit.amount - sum_with_status(&["succeeded"]);
    let currency = deposit.currency.as_str();
    if wallet.held != expected_held {
        return Err(StepFailure::local(
            &step,
            format!(
                "held is {}, expected {} (the sum of pending and submitted payouts)",
                format_amount(wallet.held, currency),
                format_amount(expected_held, currency)
            ),
        ));
    }
    if wallet.available + wallet.held != expected_total {
        return Err(StepFailure::local(
            &step,
            format!(
                "available {} + held {} = {}, expected {} (the deposit less succeeded payouts)",
                format_amount(wallet.available, currency),
                format_amount(wallet.held, currency),
                format_amount(wallet.available + wallet.held, currency),
                format_amount(expected_total, currency)
            ),
        ));
    }
    pass(format!(
        "{step}: available {} + held {} = {}, held equals the payouts in flight",
        format_amount(wallet.available, currency),
        format_amount(wallet.held, currency),
        format_amount(expected_total, currency)
    ));
    Ok(balances)
}

// ---------------------------------------------------------------------------
// Notifications

/// Path on the receiver that the service sends notifications to.
const RECEIVER_PATH: &str = "/notifications";
/// Prefix of notification endpoint secrets, as Standard Webhooks defines it.
const SECRET_PREFIX: &str = "whsec_";
/// Maximum difference between `webhook-timestamp` and the time a request
/// arrived, in seconds. Standard Webhooks receivers reject older or newer
/// timestamps to stop replays.
const TIMESTAMP_TOLERANCE_SECONDS: i64 = 5 * 60;
/// Pause between two reads of the received requests while waiting.
const NOTIFICATION_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// One request that the receiver got: its headers, its raw body, which the
/// signature covers byte for byte, and the Unix time in seconds when it arrived.
#[derive(Clone)]
struct ReceivedRequest {
    headers: HeaderMap,
    body: Bytes,
    received_at: i64,
}

type ReceivedRequests = Arc<Mutex<Vec<ReceivedRequest>>>;

/// An HTTP server on 127.0.0.1 that acts as the client's notification endpoint.
/// It records every POST to [`RECEIVER_PATH`] and responds 200, so the service
/// does not retry, and it runs until the program exits.
struct NotificationReceiver {
    url: String,
    received: ReceivedRequests,
}

impl NotificationReceiver {
    async fn start() -> Result<NotificationReceiver, StepFailure> {
        let step = "start notification receiver";
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|error| StepFailure::local(step, format!("cannot bind 127.0.0.1: {error}")))?;
        let address = listener.local_addr().map_err(|error| {
            StepFailure::local(step, format!("cannot read the bound address: {error}"))
        })?;
        let received = ReceivedRequests::default();
        let router = axum::Router::new()
            .route(RECEIVER_PATH, axum::routing::post(record_request))
            .with_state(Arc::clone(&received));
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("notification receiver on {address} stopped: {error}");
            }
        });
        Ok(NotificationReceiver {
            url: format!("http://{address}{RECEIVER_PATH}"),
            received,
        })
    }

    fn received(&self) -> Vec<ReceivedRequest> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn record_request(
    State(received): State<ReceivedRequests>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let request = ReceivedRequest {
        headers,
        body,
        received_at: chrono::Utc::now().timestamp(),
    };
    received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(request);
    StatusCode::OK
}

/// A notification endpoint of the client, with the HMAC key decoded from its
/// secret. The secret is never printed.
struct NotificationEndpoint {
    id: String,
    url: String,
    key: Vec<u8>,
}

async fn register_notification_endpoint(
    api: &Api,
    client: &Caller,
    url: &str,
) -> Result<NotificationEndpoint, StepFailure> {
    let step = format!("register notification endpoint {url}");
    let reply = api
        .send(
            &step,
            Method::POST,
            "/v1/notification-endpoints",
            Some(&client.token),
            &[],
            Some(&json!({ "url": url, "description": "nepxy-scenario receiver" })),
        )
        .await?;
    if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
        return Err(StepFailure::http(&step, &reply).with_hint(
            "The service accepts http://127.0.0.1 URLs only with APP_ENV=dev or staging, so run the scenario against such a service",
        ));
    }
    let reply = reply.expect(&step, StatusCode::CREATED)?;
    let id = required_text(&step, &reply.body, "id")?;
    let secret = required_text(&step, &reply.body, "secret")?;
    let key = decode_endpoint_secret(&secret).map_err(|problem| {
        StepFailure::local(&step, format!("the returned secret is {problem}"))
    })?;
    pass(format!("{step}: endpoint {id}"));
    Ok(NotificationEndpoint {
        id,
        url: url.to_owned(),
        key,
    })
}

/// Decodes the HMAC key of a `whsec_<base64>` secret. The error names the
/// problem without the secret.
fn decode_endpoint_secret(secret: &str) -> Result<Vec<u8>, &'static str> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or("not of the form whsec_<base64>")?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| "invalid base64 after whsec_")?;
    if key.is_empty() {
        return Err("empty after whsec_");
    }
    Ok(key)
}

/// A notification whose signature and timestamp passed the checks.
struct VerifiedNotification {
    webhook_id: String,
    event_type: String,
    payout_id: String,
    payout_status: String,
}

/// Waits until a notification arrived for every payout that names an
/// `expect` status, verifies every request the receiver got, and checks that
/// each of those payouts was notified of its final status. Returns the
/// verified notifications, one per webhook-id, in the order of the payouts.
async fn check_notifications(
    api: &Api,
    client: &Caller,
    receiver: &NotificationReceiver,
    endpoint: &NotificationEndpoint,
    payouts: &[Payout<'_>],
    max_wait: Duration,
) -> Result<Vec<VerifiedNotification>, StepFailure> {
    let expected: Vec<&Payout<'_>> = payouts
        .iter()
        .filter(|payout| payout.spec.expect.is_some())
        .collect();
    let received =
        wait_for_notifications(api, client, receiver, endpoint, &expected, max_wait).await?;

    let mut verified: Vec<VerifiedNotification> = Vec::new();
    for (index, request) in received.iter().enumerate() {
        let notification = verify_request(index + 1, request, &endpoint.key)?;
        if !payouts
            .iter()
            .any(|payout| payout.id == notification.payout_id)
        {
            return Err(StepFailure::local(
                "check notifications",
                format!(
                    "notification {} is about payout {}, which this scenario did not create",
                    notification.webhook_id, notification.payout_id
                ),
            ));
        }
        // The service may deliver a notification more than once, under the
        // same webhook-id, so each copy is verified but listed once.
        if !verified
            .iter()
            .any(|seen| seen.webhook_id == notification.webhook_id)
        {
            verified.push(notification);
        }
    }

    for payout in &expected {
        check_payout_notifications(payout, &verified)?;
    }
    verified.sort_by_key(|notification| {
        payouts
            .iter()
            .position(|payout| payout.id == notification.payout_id)
    });
    Ok(verified)
}

/// Polls the receiver until each of `expected` has at least one request
/// whose body names it in `data.id`, and returns all requests received.
async fn wait_for_notifications(
    api: &Api,
    client: &Caller,
    receiver: &NotificationReceiver,
    endpoint: &NotificationEndpoint,
    expected: &[&Payout<'_>],
    max_wait: Duration,
) -> Result<Vec<ReceivedRequest>, StepFailure> {
    let started = Instant::now();
    loop {
        let received = receiver.received();
        let notified: HashSet<String> = received
            .iter()
            .filter_map(|request| serde_json::from_slice::<Value>(&request.body).ok())
            .filter_map(|body| body["data"]["id"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<&Payout<'_>> = expected
            .iter()
            .copied()
            .filter(|payout| !notified.contains(&payout.id))
            .collect();
        let Some(first_missing) = missing.first() else {
            return Ok(received);
        };
        if started.elapsed() >= max_wait {
            let missing_ids: Vec<&str> = missing.iter().map(|payout| payout.id.as_str()).collect();
            let service_view = describe_service_notifications(api, client, &first_missing.id).await;
            return Err(StepFailure::local(
                &format!("wait for notifications at {}", endpoint.url),
                format!(
                    "timed out after {} s without a notification for payout {} ({} requests received). {service_view}. Check that nepxy-api runs the notification worker (NOTIFICATIONS=on, the default), or raise --notification-wait-seconds",
                    max_wait.as_secs(),
                    missing_ids.join(", "),
                    received.len()
                ),
            ));
        }
        tokio::time::sleep(NOTIFICATION_POLL_INTERVAL).await;
    }
}

/// Summarizes what GET /v1/notifications lists for a payout, to explain why
/// no notification arrived. Returns a description of the failure when the
/// list cannot be read, because this only adds detail to another failure.
async fn describe_service_notifications(api: &Api, client: &Caller, payout_id: &str) -> String {
    let path = format!("/v1/notifications?payout_id={payout_id}");
    let reply = match api
        .send(
            "GET /v1/notifications",
            Method::GET,
            &path,
            Some(&client.token),
            &[],
            None,
        )
        .await
    {
        Ok(reply) if reply.status == StatusCode::OK => reply,
        Ok(reply) => {
            return format!(
                "GET {path} returned HTTP {}: {}",
                reply.status,
                summarize_body(&reply.body)
            );
        }
        Err(failure) => return failure.detail,
    };
    let items = reply.body["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return format!("GET {path} lists no notification");
    }
    let summaries: Vec<String> = items
        .iter()
        .map(|item| {
            let attempts = item["attempts"].as_array().cloned().unwrap_or_default();
            let last_attempt = match attempts.last() {
                Some(attempt) => match attempt["error"].as_str() {
                    Some(error) => format!(", last attempt failed: {error}"),
                    None => format!(
                        ", last attempt got HTTP {}",
                        text_field(attempt, "status_code")
                    ),
                },
                None => String::new(),
            };
            format!(
                "{} ({}): {}, {} attempts{last_attempt}",
                text_field(item, "id"),
                text_field(item, "type"),
                text_field(item, "status"),
                attempts.len()
            )
        })
        .collect();
    format!("GET {path} lists {}", summaries.join("; "))
}

/// Verifies one received request the Standard Webhooks way: the three
/// `webhook-*` headers are present, the timestamp is within
/// [`TIMESTAMP_TOLERANCE_SECONDS`] of the arrival, and one `v1` entry of
/// `webhook-signature` is the HMAC-SHA256 of `{id}.{timestamp}.{body}` with
/// the endpoint's key. Then it reads the body's type and payout.
fn verify_request(
    number: usize,
    request: &ReceivedRequest,
    key: &[u8],
) -> Result<VerifiedNotification, StepFailure> {
    let step = format!("verify notification request {number}");
    let webhook_id = required_header(&step, &request.headers, "webhook-id")?;
    let timestamp_text = required_header(&step, &request.headers, "webhook-timestamp")?;
    let signature = required_header(&step, &request.headers, "webhook-signature")?;
    let step = format!("verify notification {webhook_id}");

    let timestamp: i64 = timestamp_text.parse().map_err(|_| {
        StepFailure::local(
            &step,
            format!("webhook-timestamp {timestamp_text:?} is not Unix seconds"),
        )
    })?;
    let skew = request.received_at - timestamp;
    if skew.abs() > TIMESTAMP_TOLERANCE_SECONDS {
        return Err(StepFailure::local(
            &step,
            format!(
                "webhook-timestamp {timestamp} is {skew} s from the time the request arrived, more than the {TIMESTAMP_TOLERANCE_SECONDS} s a receiver accepts. Check the clocks of both machines"
            ),
        ));
    }

    let expected = signature_base64(key, webhook_id, timestamp_text, &request.body);
    let matches = signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|entry| entry == expected);
    if !matches {
        return Err(StepFailure::local(
            &step,
            format!(
                "no v1 entry of webhook-signature {signature:?} matches the HMAC-SHA256 of the request with the endpoint secret"
            ),
        ));
    }

    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|error| StepFailure::local(&step, format!("the body is not JSON: {error}")))?;
    let event_type = required_text(&step, &body, "type")?;
    let body_id = required_text(&step, &body, "id")?;
    if body_id != webhook_id {
        return Err(StepFailure::local(
            &step,
            format!("the body's id {body_id} differs from webhook-id {webhook_id}"),
        ));
    }
    let payout_id = required_text(&step, &body["data"], "id")?;
    let payout_status = required_text(&step, &body["data"], "status")?;
    Ok(VerifiedNotification {
        webhook_id: webhook_id.to_owned(),
        event_type,
        payout_id,
        payout_status,
    })
}

fn required_header<'a>(
    step: &str,
    headers: &'a HeaderMap,
    name: &str,
) -> Result<&'a str, StepFailure> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| StepFailure::local(step, format!("header {name} is missing or not ASCII")))
}

/// Returns the base64 of the HMAC-SHA256 of `{id}.{timestamp}.{body}`, the
/// value of a `v1` signature entry.
fn signature_base64(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks that every verified notification of a payout is of its final
/// status, and prints one line for the payout.
fn check_payout_notifications(
    payout: &Payout<'_>,
    verified: &[VerifiedNotification],
) -> Result<(), StepFailure> {
    let expected_type = format!("payout.{}", payout.status);
    let step = format!("notification {expected_type} for {}", payout.id);
    let notifications: Vec<&VerifiedNotification> = verified
        .iter()
        .filter(|notification| notification.payout_id == payout.id)
        .collect();
    for notification in &notifications {
        if notification.event_type != expected_type {
            return Err(StepFailure::local(
                &step,
                format!(
                    "notification {} has type {}, but the payout's final status is {}",
                    notification.webhook_id, notification.event_type, payout.status
                ),
            ));
        }
        if notification.payout_status != payout.status {
            return Err(StepFailure::local(
                &step,
                format!(
                    "notification {} carries data.status {}, but the payout's final status is {}",
                    notification.webhook_id, notification.payout_status, payout.status
                ),
            ));
        }
    }
    pass(format!("{step}: signature verified"));
    Ok(())
}

// ---------------------------------------------------------------------------
// Report

fn print_report(
    client: &Caller,
    payouts: &[Payout<'_>],
    balances: &[Balance],
    notifications: &[VerifiedNotification],
    endpoint: Option<&NotificationEndpoint>,
) {
    let mut payout_rows = vec![[
        "id".to_owned(),
        "provider".to_owned(),
        "msisdn".to_owned(),
        "recipient".to_owned(),
        "amount".to_owned(),
        "status".to_owned(),
    ]];
    for payout in payouts {
        let currency = payout.created_body["currency"].as_str().unwrap_or("");
        payout_rows.push([
            payout.id.clone(),
            payout.spec.provider.clone(),
            payout.spec.recipient.msisdn.clone(),
            payout.spec.recipient.name.clone().unwrap_or_default(),
            format_amount(payout.spec.amount, currency),
            payout.status.clone(),
        ]);
    }
    println!();
    println!("Payouts of client {}", client.client_id);
    print_table(&payout_rows, &[4]);

    let mut balance_rows = vec![[
        "currency".to_owned(),
        "available".to_owned(),
        "held".to_owned(),
    ]];
    for balance in balances {
        balance_rows.push([
            balance.currency.clone(),
            format_amount(balance.available, &balance.currency),
            format_amount(balance.held, &balance.currency),
        ]);
    }
    println!();
    println!("Balances of client {}", client.client_id);
    print_table(&balance_rows, &[1, 2]);

    let Some(endpoint) = endpoint else {
        return;
    };
    let mut notification_rows = vec![[
        "payout id".to_owned(),
        "type".to_owned(),
        "webhook-id".to_owned(),
    ]];
    for notification in notifications {
        notification_rows.push([
            notification.payout_id.clone(),
            notification.event_type.clone(),
            notification.webhook_id.clone(),
        ]);
    }
    println!();
    println!("Verified notifications to endpoint {}", endpoint.id);
    print_table(&notification_rows, &[]);
}

/// Prints rows as aligned columns. The first row is the header, and the
/// columns listed in `right_aligned` are aligned to the right.
fn print_table<const N: usize>(rows: &[[String; N]], right_aligned: &[usize]) {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(column, cell)| {
                if right_aligned.contains(&column) {
                    format!("{cell:>width$}", width = widths[column])
                } else {
                    format!("{cell:<width$}", width = widths[column])
                }
            })
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
}

/// Formats minor units as an amount in the currency, with thousands
/// separators: 1000000 XOF as "1,000,000 XOF", 1250 EUR as "12.50 EUR".
/// A currency unknown to the ledger is shown in minor units.
fn format_amount(amount_minor: i64, currency: &str) -> String {
    let exponent = currency
        .parse::<Currency>()
        .map(Currency::exponent)
        .unwrap_or(0);
    let sign = if amount_minor < 0 { "-" } else { "" };
    let magnitude = amount_minor.unsigned_abs();
    let scale = 10_u64.pow(exponent);
    let whole = group_thousands(magnitude / scale);
    if exponent == 0 {
        format!("{sign}{whole} {currency}")
    } else {
        let fraction = magnitude % scale;
        let digits = exponent as usize;
        format!("{sign}{whole}.{fraction:0digits$} {currency}")
    }
}

fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

// ---------------------------------------------------------------------------
// HTTP

struct Api {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
}

/// Status, headers and body of one response. A body that is not JSON is kept
/// as a string.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Api {
    fn new(base_url: &str, timeout: Duration) -> Result<Api, StepFailure> {
        // Proxy variables are ignored because the service is reached
        // directly, usually on loopback.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|error| {
                StepFailure::local(
                    "create HTTP client",
                    format!("failed: {}", error_chain(&error)),
                )
            })?;
        Ok(Api {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends one request, with `body` as JSON when present. Fails only
    /// when no response arrives, whatever its status.
    async fn send(
        &self,
        step: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply, StepFailure> {
        let url = self.url(path);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }

        let transport_failure = |error: reqwest::Error| {
            let detail = if error.is_timeout() {
                format!(
                    "{method} {url} timed out after {} s",
                    self.timeout.as_secs()
                )
            } else {
                format!("{method} {url} failed: {}", error_chain(&error))
            };
            StepFailure::local(step, detail)
        };
        let response = request.send().await.map_err(transport_failure)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport_failure)?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Returns the reply when its status is `expected`, or the failure that
    /// shows the status and the problem details.
    fn expect(self, step: &str, expected: StatusCode) -> Result<Reply, StepFailure> {
        if self.status == expected {
            Ok(self)
        } else {
            Err(StepFailure::http(step, &self).with_hint(format!("Expected HTTP {expected}")))
        }
    }
}

/// Formats an error with its chain of sources, which for reqwest contains the
/// useful part, such as "Connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Step results

fn pass(message: impl fmt::Display) {
    println!("ok   {message}");
}

/// A step that failed: its name, the HTTP status when the service responded,
/// and what went wrong.
struct StepFailure {
    step: String,
    status: Option<StatusCode>,
    detail: String,
}

impl StepFailure {
    /// Creates a failure found by the scenario itself, not reported by the service.
    fn local(step: &str, detail: impl Into<String>) -> StepFailure {
        StepFailure {
            step: step.to_owned(),
            status: None,
            detail: detail.into(),
        }
    }

    /// Creates a failure reported by the service, with its problem details.
    fn http(step: &str, reply: &Reply) -> StepFailure {
        StepFailure {
            step: step.to_owned(),
            status: Some(reply.status),
            detail: summarize_body(&reply.body),
        }
    }

    fn with_hint(mut self, hint: impl fmt::Display) -> StepFailure {
        self.detail = format!("{}. {hint}", self.detail);
        self
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(
                formatter,
                "FAIL {}: HTTP {status}: {}",
                self.step, self.detail
            ),
            None => write!(formatter, "FAIL {}: {}", self.step, self.detail),
        }
    }
}

/// Summarizes an error body: "title: detail [field …, request_id …]" for
/// problem details, otherwise the start of the body.
fn summarize_body(body: &Value) -> String {
    if let (Some(title), Some(detail)) = (body["title"].as_str(), body["detail"].as_str()) {
        let mut extras = Vec::new();
        if let Some(field) = body["field"].as_str() {
            extras.push(format!("field {field}"));
        }
        if let Some(request_id) = body["request_id"].as_str() {
            extras.push(format!("request_id {request_id}"));
        }
        if extras.is_empty() {
            return format!("{title}: {detail}");
        }
        return format!("{title}: {detail} [{}]", extras.join(", "));
    }
    let text = match body {
        Value::Null => return "empty body".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_BODY_EXCERPT_CHARS {
        let excerpt: String = text.chars().take(MAX_BODY_EXCERPT_CHARS).collect();
        format!("{excerpt}…")
    } else {
        text
    }
}

/// Formats a field for a message: strings without quotes, other values as JSON.
fn text_field(body: &Value, field: &str) -> String {
    match &body[field] {
        Value::String(text) => text.clone(),
        Value::Null => "(missing)".to_owned(),
        other => other.to_string(),
    }
}

/// Returns a string field that the step needs, or a failure naming the field.
fn required_text(step: &str, body: &Value, field: &str) -> Result<String, StepFailure> {
    body[field].as_str().map(str::to_owned).ok_or_else(|| {
        StepFailure::local(
            step,
            format!("the response has no string field {field:?}: {body}"),
        )
    })
}
