//! Runs the `nepxy-scenario` binary against the real `nepxy-api` binary, each
//! started as a process on a free loopback port with its own database.
//!
//! Both binaries must be built first (`cargo build --workspace --bins`,
//! which scripts/test.sh runs).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nepxy_tests::{
    SandboxProcess, TEST_BOOTSTRAP_SECRET, TEST_JWT_SECRET, TEST_MOMO_SECRET, TEST_THUNES_SECRET,
    TEST_TMONEY_SECRET, binary_path, fresh_database, sandbox_provider_env,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// Upper bound on one scenario run. The scenario's own default waits (30 s for
/// /health, 60 s for final statuses, 30 s for notifications) and its request
/// timeouts end a run sooner, so this only catches a hang.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);
/// Lines of the service log shown when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// A scratch directory for one test, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> ScratchDir {
        let path = std::env::temp_dir().join(format!("nepxy-scenario-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create scratch directory");
        ScratchDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `nepxy-api` process, killed when dropped so that a failed assertion
/// does not leave it running.
struct Service {
    child: Child,
    base_url: String,
    log_path: PathBuf,
    /// The provider sandbox the service's dispatcher sends payouts to.
    _sandbox: SandboxProcess,
}

impl Service {
    /// Starts `nepxy-api` on a free loopback port against a fresh database,
    /// with its providers pointed at a fresh provider sandbox and its output
    /// in `dir`/nepxy-api.log.
    async fn start(dir: &Path) -> Service {
        Service::start_with(dir, &[]).await
    }

    /// Starts `nepxy-api` as [`Service::start`] does, with `extra_env` set
    /// after the test settings so that it can override them.
    async fn start_with(dir: &Path, extra_env: &[(&str, &str)]) -> Service {
        let database_url = fresh_database().await;
        let port = free_port();
        let base_url = format!("http://127.0.0.1:{port}");
        let sandbox = SandboxProcess::start(&base_url).await;
        let log_path = dir.join("nepxy-api.log");
        let log = File::create(&log_path).expect("create service log");
        let child = Command::new(binary_path("nepxy-api"))
            .envs(sandbox_provider_env(&sandbox.base_url, &base_url))
            .env("TMONEY_WEBHOOK_SECRET", TEST_TMONEY_SECRET)
            .env("THUNES_WEBHOOK_SECRET", TEST_THUNES_SECRET)
            .env("MOMO_CALLBACK_SECRET", TEST_MOMO_SECRET)
            .env("DATABASE_URL", &database_url)
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("BOOTSTRAP_ADMIN_SECRET", TEST_BOOTSTRAP_SECRET)
            .env("PORT", port.to_string())
            .env("APP_ENV", "dev")
            .env("LOG_FORMAT", "text")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start nepxy-api");
        Service {
            child,
            base_url,
            log_path,
            _sandbox: sandbox,
        }
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns a loopback port that was free a moment ago. Another process may
/// take it before the service binds it, which makes the service exit and the
/// scenario's wait for /health fail.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn example_scenario_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scenario.json")
}

/// Runs `nepxy-scenario` with the test bootstrap secret and `args`.
async fn run_scenario(base_url: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(binary_path("nepxy-scenario"));
    command
        .arg("--base-url")
        .arg(base_url)
        .args(args)
        .env("BOOTSTRAP_ADMIN_SECRET", TEST_BOOTSTRAP_SECRET)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(SCENARIO_TIMEOUT, command.output())
        .await
        .expect("nepxy-scenario finished within the timeout")
        .expect("run nepxy-scenario")
}

/// Standard output and error of a run, followed by the service log, for
/// assertion messages.
fn describe(output: &Output, service_log: &str) -> String {
    format!(
        "status: {}\n--- stdout:\n{}\n--- stderr:\n{}\n--- service log (last lines):\n{service_log}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    )
}

fn write_scenario(dir: &Path, scenario: &Value) -> PathBuf {
    let path = dir.join("scenario.json");
    std::fs::write(&path, scenario.to_string()).expect("write scenario file");
    path
}

#[tokio::test]
async fn example_scenario_passes() {
    let dir = ScratchDir::new();
    let service = Service::start(dir.path()).await;
    let scenario_path = example_scenario_path();
    let credentials_dir = dir.path().join("credentials");

    let output = run_scenario(
        &service.base_url,
        &[
            "--scenario",
            scenario_path.to_str().expect("UTF-8 path"),
            "--credentials-dir",
            credentials_dir.to_str().expect("UTF-8 path"),
        ],
    )
    .await;
    let context = describe(&output, &service.log_tail());
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert!(output.status.success(), "scenario failed\n{context}");
    assert!(!stdout.contains("FAIL"), "a step failed\n{context}");
    assert!(
        stdout.contains("Idempotent-Replayed: true"),
        "no line reports the idempotent replay\n{context}"
    );
    assert!(
        stdout.contains("none created by the repeats"),
        "no line reports the payout list check\n{context}"
    );
    assert!(
        stdout.contains("held equals the payouts in flight"),
        "no line reports the balance check\n{context}"
    );

    let scenario: Value = serde_json::from_str(
        &std::fs::read_to_string(&scenario_path).expect("read examples/scenario.json"),
    )
    .expect("examples/scenario.json is JSON");
    let payouts = scenario["payouts"].as_array().expect("payouts array");
    assert!(payouts.len() >= 5, "the example has at least five payouts");
    let receiver_line = stdout
        .lines()
        .find(|line| line.starts_with("ok   register notification endpoint http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no line reports the endpoint registration\n{context}"));
    assert!(
        !receiver_line.contains("whsec_"),
        "the endpoint secret was printed\n{context}"
    );
    let report_start = stdout
        .find("Verified notifications to endpoint")
        .unwrap_or_else(|| panic!("the report has no notifications table\n{context}"));
    let notification_report = &stdout[report_start..];

    let mut notified = Vec::new();
    for (index, payout) in payouts.iter().enumerate() {
        let provider = payout["provider"].as_str().expect("provider");
        let msisdn = payout["recipient"]["msisdn"].as_str().expect("msisdn");
        let step = format!("ok   payout {}/{}:", index + 1, payouts.len());
        let line = stdout
            .lines()
            .find(|line| line.starts_with(&step))
            .unwrap_or_else(|| panic!("no line starts with {step:?}\n{context}"));
        assert!(
            line.contains(provider),
            "{step} does not name provider {provider}\n{context}"
        );
        assert!(
            line.contains(msisdn),
            "{step} does not name {msisdn}\n{context}"
        );

        let Some(expected) = payout["expect"].as_str() else {
            continue;
        };
        let payout_id = line
            .rsplit_once(", id ")
            .map(|(_, id)| id.trim())
            .unwrap_or_else(|| panic!("{step} does not end with the payout id\n{context}"));
        let event_type = format!("payout.{expected}");
        let verified =
            format!("ok   notification {event_type} for {payout_id}: signature verified");
        assert!(
            stdout.lines().any(|line| line == verified),
            "no line {verified:?}\n{context}"
        );
        assert!(
            notification_report
                .lines()
                .any(|row| row.contains(payout_id)
                    && row.contains(&event_type)
                    && row.contains("msg_")),
            "the notifications table has no {event_type} row with a webhook-id for {payout_id}\n{context}"
        );
        notified.push((provider.to_owned(), expected.to_owned()));
    }
    for provider in ["tmoney", "thunes", "momo"] {
        assert!(
            stdout.contains(provider),
            "provider {provider} missing from the output\n{context}"
        );
        for status in ["succeeded", "failed"] {
            let reached = format!("{status} via {provider}");
            assert!(
                stdout.contains(&reached),
                "no payout {reached} through the sandbox\n{context}"
            );
            assert!(
                notified.contains(&(provider.to_owned(), status.to_owned())),
                "no verified notification of a payout {reached}\n{context}"
            );
        }
    }

    let metrics = reqwest::get(format!("{}/metrics", service.base_url))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let created = metric_sum(
        &metrics,
        "nepxy_http_requests_total",
        &[
            r#"method="POST""#,
            r#"route="/v1/payouts""#,
            r#"status="201""#,
        ],
    );
    assert!(
        created >= payouts.len() as f64,
        "/metrics counts {created} created payouts, fewer than the scenario's {}\n{metrics}",
        payouts.len()
    );
    for provider in ["tmoney", "thunes", "momo"] {
        let label = format!(r#"provider="{provider}""#);
        let attempts = metric_sum(&metrics, "nepxy_provider_attempts_total", &[&label]);
        assert!(
            attempts >= 1.0,
            "no {provider} attempt in /metrics\n{metrics}"
        );
    }
    let applied = metric_sum(
        &metrics,
        "nepxy_webhook_deliveries_total",
        &[r#"verdict="applied""#],
    );
    assert!(applied >= 1.0, "no applied webhook in /metrics\n{metrics}");
    assert!(
        metrics.contains("\nnepxy_projection_lag_seconds "),
        "no projection lag gauge\n{metrics}"
    );
    assert!(
        metrics.contains("nepxy_http_request_duration_seconds_bucket{"),
        "no latency histogram\n{metrics}"
    );

    let token_request = std::fs::read_to_string(credentials_dir.join("client-token-request.json"))
        .expect("client-token-request.json was written");
    let token_request: Value = serde_json::from_str(&token_request).expect("token request is JSON");
    assert_eq!(token_request["grant_type"], json!("client_credentials"));
    assert!(token_request["client_secret"].is_string());
}

/// Sum of the samples of metric `name` whose labels include every entry of
/// `labels` (each written `key="value"`).
fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let label_text = series.strip_prefix(name)?.strip_prefix('{')?;
            let matches = labels.iter().all(|label| {
                label_text
                    .trim_end_matches('}')
                    .split(',')
                    .any(|pair| pair == *label)
            });
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[tokio::test]
async fn scenario_stops_at_rejected_payout() {
    let dir = ScratchDir::new();
    let service = Service::start(dir.path()).await;
    // The second payout requests more than the 6,000 XOF left after the first.
    let scenario_path = write_scenario(
        dir.path(),
        &json!({
            "client": { "name": "Overdraft demo" },
            "deposit": { "idempotency_key": "deposit-1", "amount": 10_000, "currency": "XOF" },
            "payouts": [
                {
                    "idempotency_key": "payout-1",
                    "provider": "tmoney",
                    "amount": 4_000,
                    "recipient": { "msisdn": "+22890112233", "name": "Afi Mensah" }
                },
                {
                    "idempotency_key": "payout-2",
                    "provider": "momo",
                    "amount": 50_000,
                    "recipient": { "msisdn": "+22891234567" }
                }
            ]
        }),
    );

    let output = run_scenario(
        &service.base_url,
        &["--scenario", scenario_path.to_str().expect("UTF-8 path")],
    )
    .await;
    let context = describe(&output, &service.log_tail());
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(1), "exit status\n{context}");
    assert!(
        stdout.contains("ok   payout 1/2:"),
        "the first payout did not pass\n{context}"
    );
    let failure = stdout
        .lines()
        .find(|line| line.starts_with("FAIL "))
        .unwrap_or_else(|| panic!("no FAIL line\n{context}"));
    assert!(
        failure.starts_with("FAIL payout 2/2:"),
        "wrong failing step\n{context}"
    );
    assert!(failure.contains("HTTP 422"), "status missing\n{context}");
    assert!(
        failure.contains("Insufficient funds"),
        "problem title missing\n{context}"
    );
    assert!(
        !stdout.contains("Payouts of client"),
        "the report was printed after a failure\n{context}"
    );
    assert!(
        !stdout.contains("register notification endpoint"),
        "an endpoint was registered although no payout names an expect status\n{context}"
    );
}

#[tokio::test]
async fn scenario_fails_without_notifications() {
    let dir = ScratchDir::new();
    // The service's notification worker is off, so the payout reaches its
    // final status but its notification is never sent.
    let service = Service::start_with(dir.path(), &[("NOTIFICATIONS", "off")]).await;
    let scenario_path = write_scenario(
        dir.path(),
        &json!({
            "client": { "name": "Silent endpoint demo" },
            "deposit": { "idempotency_key": "deposit-1", "amount": 100_000, "currency": "XOF" },
            "payouts": [
                {
                    "idempotency_key": "payout-1",
                    "provider": "tmoney",
                    "amount": 25_000,
                    "recipient": { "msisdn": "+22890112233", "name": "Afi Mensah" },
                    "expect": "succeeded"
                }
            ]
        }),
    );

    let output = run_scenario(
        &service.base_url,
        &[
            "--scenario",
            scenario_path.to_str().expect("UTF-8 path"),
            "--notification-wait-seconds",
            "2",
        ],
    )
    .await;
    let context = describe(&output, &service.log_tail());
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(1), "exit status\n{context}");
    assert!(
        stdout.contains("ok   payout 1/1 reaches succeeded"),
        "the payout did not reach its final status\n{context}"
    );
    let failure = stdout
        .lines()
        .find(|line| line.starts_with("FAIL "))
        .unwrap_or_else(|| panic!("no FAIL line\n{context}"));
    assert!(
        failure.starts_with("FAIL wait for notifications at http://127.0.0.1:"),
        "wrong failing step\n{context}"
    );
    assert!(
        failure.contains("timed out after 2 s"),
        "the timeout is not named\n{context}"
    );
    assert!(
        failure.contains("(payout.succeeded): pending, 0 attempts"),
        "the service's view of the notification is missing\n{context}"
    );
    assert!(
        !stdout.contains("Payouts of client"),
        "the report was printed after a failure\n{context}"
    );
}

#[tokio::test]
async fn scenario_stops_at_wrong_bootstrap_secret() {
    let dir = ScratchDir::new();
    let service = Service::start(dir.path()).await;
    let scenario_path = example_scenario_path();

    let output = run_scenario(
        &service.base_url,
        &[
            "--scenario",
            scenario_path.to_str().expect("UTF-8 path"),
            "--bootstrap-secret",
            "not-the-bootstrap-secret",
        ],
    )
    .await;
    let context = describe(&output, &service.log_tail());
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(1), "exit status\n{context}");
    let failure = stdout
        .lines()
        .find(|line| line.starts_with("FAIL "))
        .unwrap_or_else(|| panic!("no FAIL line\n{context}"));
    assert!(
        failure.starts_with("FAIL bootstrap admin: HTTP 401"),
        "wrong failing step or status\n{context}"
    );
    assert!(
        !stdout.contains("not-the-bootstrap-secret"),
        "the secret was printed\n{context}"
    );
}

#[tokio::test]
async fn scenario_fails_without_service() {
    let base_url = format!("http://127.0.0.1:{}", free_port());
    let scenario_path = example_scenario_path();

    let output = run_scenario(
        &base_url,
        &[
            "--scenario",
            scenario_path.to_str().expect("UTF-8 path"),
            "--wait-seconds",
            "1",
        ],
    )
    .await;
    let context = describe(&output, "(no service)");
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(1), "exit status\n{context}");
    assert!(
        stdout.contains("FAIL GET /health: no 200 from"),
        "the wait for /health did not fail\n{context}"
    );
}
