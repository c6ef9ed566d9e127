use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nepxy_api::dispatch::Settings;
use nepxy_api::notifications::{Notifier, Settings as NotifierSettings};
use nepxy_api::webhooks::retry::{RetryWorker, Settings as RetrySettings};
use nepxy_api::{AppState, Config, telemetry};
use nepxy_projections::catchup::CatchUp;
use sqlx::PgPool;
use tokio::net::TcpListener;

/// Events the catch-up projector applies per transaction.
const CATCH_UP_BATCH_SIZE: i64 = 500;
/// Wait of the catch-up projector when the feed has nothing new.
const CATCH_UP_IDLE_WAIT: Duration = Duration::from_secs(1);

/// How long startup keeps trying to reach the database before giving up.
const DATABASE_STARTUP_WAIT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "nepxy-api",
    version,
    about = "HTTP service of the Nepxy payout ledger"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve on 0.0.0.0:$PORT (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Run only the dispatcher, which sends payouts to providers (for
    /// deployments that serve HTTP with DISPATCHER=off).
    Dispatch,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("nepxy-api: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);

    match run(cli.command.unwrap_or(Command::Serve), config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "nepxy-api stopped with an error");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let pool = connect_with_retry(&config).await?;
    tracing::info!("applying database migrations");
    nepxy_api::migrate(&pool).await?;
    if let Command::Migrate = command {
        tracing::info!("migrations applied");
        return Ok(());
    }

    if let Command::Dispatch = command {
        let state = AppState::new(config, pool)?;
        state
            .dispatcher(Settings::default())
            .run(shutdown_signal())
            .await;
        return Ok(());
    }

    let address = SocketAddr::from((config.bind_address, config.port));
    let listener = TcpListener::bind(address).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        app_env = config.app_env.as_str(),
        version = env!("CARGO_PKG_VERSION"),
        "nepxy-api listening"
    );
    let state = AppState::new(config, pool)?;
    let (stop_dispatcher, dispatcher_stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = state.config.dispatcher_in_process.then(|| {
        let dispatcher = state.dispatcher(Settings::default());
        tokio::spawn(dispatcher.run(async move {
            let _ = dispatcher_stopped.await;
        }))
    });
    let (stop_notifier, notifier_stopped) = tokio::sync::oneshot::channel::<()>();
    let notifier = if state.config.notifications_in_process {
        let notifier = Notifier::new(
            state.pool.clone(),
            state.config.app_env,
            NotifierSettings::default(),
        )?;
        Some(tokio::spawn(notifier.run(async move {
            let _ = notifier_stopped.await;
        })))
    } else {
        None
    };
    // Stored webhook deliveries that could not be applied are retried here.
    let (stop_retries, retries_stopped) = tokio::sync::oneshot::channel::<()>();
    let retries = tokio::spawn(
        RetryWorker {
            intake: state.intake.clone(),
            settings: RetrySettings::default(),
        }
        .run(async move {
            let _ = retries_stopped.await;
        }),
    );
    // The catch-up projector re-applies the event feed to the read models;
    // one instance in the deployment is active at a time.
    let (stop_catch_up, catch_up_stopped) = tokio::sync::oneshot::channel::<()>();
    let catch_up = tokio::spawn(
        CatchUp {
            pool: state.pool.clone(),
            batch_size: CATCH_UP_BATCH_SIZE,
            idle_wait: CATCH_UP_IDLE_WAIT,
            lag_seconds: Arc::clone(&state.projection_lag_seconds),
        }
        .run(async move {
            let _ = catch_up_stopped.await;
        }),
    );
    nepxy_api::serve(listener, state, shutdown_signal()).await?;
    drop(stop_catch_up);
    drop(stop_dispatcher);
    drop(stop_notifier);
    drop(stop_retries);
    if let Some(dispatcher) = dispatcher {
        let _ = dispatcher.await;
    }
    if let Some(notifier) = notifier {
        let _ = notifier.await;
    }
    let _ = retries.await;
    let _ = catch_up.await;
    tracing::info!("nepxy-api stopped");
    Ok(())
}

async fn connect_with_retry(config: &Config) -> anyhow::Result<PgPool> {
    let deadline = tokio::time::Instant::now() + DATABASE_STARTUP_WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match nepxy_api::connect(config).await {
            Ok(pool) => return Ok(pool),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(attempt, error = %error, "database not reachable yet; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                return Err(anyhow::anyhow!(
                    "could not connect to DATABASE_URL after {attempt} attempts: {error}"
                ));
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "could not listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}
