//! nepxy-provider-sandbox: the MTN MoMo, Thunes and TMoney payout APIs on
//! 127.0.0.1, with scripted outcomes and callbacks, so that the whole payout
//! loop runs on one machine.
//!
//! The first line on stdout is `listening on 127.0.0.1:PORT`. Logs go to
//! stderr (RUST_LOG sets the filter, `info` by default).
//!
//! Endpoints:
//!
//! - MTN MoMo: `POST /disbursement/token/`, `POST /disbursement/v1_0/transfer`,
//!   `GET /disbursement/v1_0/transfer/{reference}`. Callbacks go unsigned to
//!   each transfer's X-Callback-Url.
//! - Thunes: `POST /v2/money-transfer/quotations`,
//!   `GET /v2/money-transfer/quotations/{id}`,
//!   `POST /v2/money-transfer/quotations/{id}/transactions`,
//!   `POST /v2/money-transfer/transactions/{id}/confirm`,
//!   `GET /v2/money-transfer/transactions/{id}`, where `{id}` may also be
//!   `ext-{external_id}`. Callbacks are signed the Standard Webhooks way and
//!   go to the transaction's callback_url, or to
//!   `{--callback-base-url}/v1/webhooks/thunes` when it has none.
//! - TMoney: `POST /tmoney/v1/disburse`,
//!   `GET /tmoney/v1/transactions/{reference}`. Callbacks carry
//!   x-timestamp, x-nonce and a hex HMAC x-signature and go to
//!   `{--callback-base-url}/v1/webhooks/tmoney`.
//! - `GET /sandbox/transactions`, `GET /sandbox/transactions/{reference}`
//!   (each with its number of create requests) and `POST /sandbox/reset`.
//!
//! Callbacks go to loopback URLs only (127.0.0.1, localhost, [::1]); any
//! other target is refused with a log line. Each callback gets up to 3
//! attempts with a 5 s timeout each.
//!
//! The outcome of a payout follows the last two digits of the recipient's
//! number, as [`OUTCOMES`] lists (also printed by `--help`).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use nepxy_tests::sandbox::callback::loopback_url;
use nepxy_tests::sandbox::{Sandbox, Settings};
use reqwest::Method;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// The scripted outcomes, printed after the options by `--help`.
const OUTCOMES: &str = "\
Outcomes, chosen by the last two digits of the recipient's number (MoMo
payee.partyId, Thunes credit_party_identifier.msisdn, TMoney phone_number),
the same for every provider:

  00  success: the status becomes final and the callback is sent after
      --callback-delay-ms
  01  failure: PAYEE_NOT_FOUND (Thunes: status 90201, class 9)
  02  slow: the create request is answered after 3 s, then success
  03  HTTP 500 INTERNAL_PROCESSING_ERROR, but the transaction is created
      and succeeds, so the status endpoint shows it
  04  HTTP 429 with Retry-After: 1 on the first create request for the
      reference, then success
  05  no answer: the request is held until the client gives up, at most
      60 s (then HTTP 503), and nothing is created
  06  HTTP 500 NOT_ENOUGH_FUNDS, and nothing is created
  07  success, and the callback is sent twice (Thunes: same webhook-id;
      TMoney: a new nonce each time)
  08  success, but the callback is sent 5 s after acceptance, while the
      status endpoint shows success after --callback-delay-ms
  09  success without any callback: poll the status endpoint
  any other ending: success, as 00

Thunes plays 02 to 06 on the transaction request. Its success or failure,
and the callback, follow the confirmation. A repeated reference (MoMo
X-Reference-Id, Thunes external_id, TMoney reference) never creates a second
transaction: MoMo answers 409 RESOURCE_ALREADY_EXIST, Thunes 400 with error
1007001, TMoney 409 DUPLICATE_REFERENCE.";

#[derive(Parser)]
#[command(
    name = "nepxy-provider-sandbox",
    version,
    about = "Serve the MTN MoMo, Thunes and TMoney payout APIs on 127.0.0.1 with scripted outcomes and signed callbacks",
    after_help = OUTCOMES
)]
struct Cli {
    /// TCP port on 127.0.0.1. 0 picks a free port. Either way the first
    /// stdout line is `listening on 127.0.0.1:PORT`.
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// Secret of the TMoney callback HMAC (the ledger's
    /// TMONEY_WEBHOOK_SECRET). Prefer the environment variable, because
    /// other local users can read command-line arguments. Without it no
    /// TMoney callback is sent.
    #[arg(long, env = "TMONEY_WEBHOOK_SECRET", hide_env_values = true)]
    tmoney_secret: Option<String>,

    /// Thunes Standard Webhooks secret, `whsec_` followed by the base64 key
    /// (the ledger's THUNES_WEBHOOK_SECRET). Prefer the environment
    /// variable. Without it no Thunes callback is sent.
    #[arg(long, env = "THUNES_WEBHOOK_SECRET", hide_env_values = true)]
    thunes_secret: Option<String>,

    /// Loopback base URL of the ledger, such as http://127.0.0.1:8001.
    /// TMoney callbacks go to {URL}/v1/webhooks/tmoney, and Thunes callbacks
    /// of transactions without a callback_url to {URL}/v1/webhooks/thunes.
    #[arg(long)]
    callback_base_url: Option<String>,

    /// Time in milliseconds from acceptance (Thunes: confirmation) to the
    /// final status and its callback.
    #[arg(long, default_value_t = 200)]
    callback_delay_ms: u64,

    /// HTTP method of MoMo callbacks. MTN documents both.
    #[arg(long, value_enum, default_value_t = CallbackMethod::Post)]
    momo_callback_method: CallbackMethod,
}

#[derive(Clone, Copy, ValueEnum)]
enum CallbackMethod {
    Post,
    Put,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();

    let settings = match settings_from(&cli) {
        Ok(settings) => settings,
        Err(message) => {
            tracing::error!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(cli.port, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Checks the options and decodes the secrets. The error names the option
/// and never contains a secret.
fn settings_from(cli: &Cli) -> Result<Settings, String> {
    let callback_base_url = cli
        .callback_base_url
        .as_deref()
        .map(|text| {
            loopback_url(text).map_err(|reason| format!("--callback-base-url is invalid: {reason}"))
        })
        .transpose()?;
    let tmoney_secret = match cli.tmoney_secret.as_deref() {
        Some("") => return Err("--tmoney-secret (TMONEY_WEBHOOK_SECRET) is empty".to_owned()),
        Some(secret) => Some(secret.as_bytes().to_vec()),
        None => None,
    };
    let thunes_key = cli
        .thunes_secret
        .as_deref()
        .map(|secret| {
            nepxy_api::webhooks::thunes::decode_secret(secret).map_err(|reason| {
                format!("--thunes-secret (THUNES_WEBHOOK_SECRET) is invalid: {reason}")
            })
        })
        .transpose()?;
    let momo_callback_method = match cli.momo_callback_method {
        CallbackMethod::Post => Method::POST,
        CallbackMethod::Put => Method::PUT,
    };
    Ok(Settings {
        callback_base_url,
        callback_delay: Duration::from_millis(cli.callback_delay_ms),
        tmoney_secret,
        thunes_key,
        momo_callback_method,
    })
}

async fn run(port: u16, settings: Settings) -> Result<(), String> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|error| format!("failed to bind 127.0.0.1:{port}: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("failed to read the bound address: {error}"))?;

    tracing::info!(
        %address,
        callback_base_url = settings.callback_base_url.as_ref().map(|url| url.as_str()),
        callback_delay_ms = settings.callback_delay.as_millis(),
        tmoney_secret_set = settings.tmoney_secret.is_some(),
        thunes_secret_set = settings.thunes_key.is_some(),
        "provider sandbox starting"
    );
    if settings.callback_base_url.is_none() {
        tracing::warn!(
            "--callback-base-url is not set, so TMoney callbacks and Thunes callbacks without a callback_url are not sent"
        );
    }
    let sandbox = Sandbox::new(settings)
        .map_err(|error| format!("failed to build the callback HTTP client: {error}"))?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {address}")
        .and_then(|()| stdout.flush())
        .map_err(|error| format!("failed to write the listening line to stdout: {error}"))?;
    drop(stdout);

    tokio::select! {
        result = axum::serve(listener, sandbox.router()) => {
            result.map_err(|error| format!("server failed: {error}"))?;
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, "provider sandbox stopping");
        }
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM and returns its name. In-flight requests,
/// held ones included, are dropped.
async fn shutdown_signal() -> &'static str {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => "SIGINT",
        () = terminate => "SIGTERM",
    }
}
