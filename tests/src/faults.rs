//! Support of the fault proofs. It starts the real `nepxy-api` binary, which
//! a test kills with SIGKILL and starts again on the same port and database.
//! It also runs a private PostgreSQL instance that a test may stop and start,
//! and reads the scale factor that makes the same tests heavier on demand.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::Connection;
use uuid::Uuid;

use crate::{
    TEST_BOOTSTRAP_SECRET, TEST_JWT_SECRET, TEST_MOMO_SECRET, TEST_THUNES_SECRET,
    TEST_TMONEY_SECRET, TestApp, binary_path, test_config,
};

/// Maximum wait for a started `nepxy-api` to respond to /health.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the service log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// Largest accepted FAULT_SCALE.
const MAX_FAULT_SCALE: u32 = 1000;

/// Returns the scale factor of the fault tests: FAULT_SCALE, 1 when unset.
/// Each test multiplies its number of keys, clients and requests by it.
pub fn fault_scale() -> u32 {
    let Some(raw) = std::env::var_os("FAULT_SCALE") else {
        return 1;
    };
    let raw = raw.to_string_lossy();
    match raw.trim().parse::<u32>() {
        Ok(scale) if (1..=MAX_FAULT_SCALE).contains(&scale) => scale,
        _ => panic!("FAULT_SCALE must be a whole number from 1 to {MAX_FAULT_SCALE}, not {raw:?}"),
    }
}

/// Returns a loopback port that was free a moment ago. Another process may
/// take it before the caller binds it, which makes the caller fail to start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

/// A scratch directory, removed when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(prefix: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create scratch directory");
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `nepxy-api` binary serving on 127.0.0.1, killed when dropped. Every
/// start uses the same environment, port and database, so a restart is the
/// same deployment coming back after a crash.
pub struct ApiProcess {
    pub base_url: String,
    pub database_url: String,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<tokio::process::Child>,
    _dir: ScratchDir,
}

impl ApiProcess {
    /// Starts `nepxy-api` on `port` against `database_url` with the test
    /// secrets, and waits until it responds to /health. `extra_env` is set last,
    /// so it can override the test settings.
    pub async fn start(
        database_url: &str,
        port: u16,
        extra_env: &[(String, String)],
    ) -> ApiProcess {
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", database_url),
            ("JWT_SECRET", TEST_JWT_SECRET),
            ("BOOTSTRAP_ADMIN_SECRET", TEST_BOOTSTRAP_SECRET),
            ("TMONEY_WEBHOOK_SECRET", TEST_TMONEY_SECRET),
            ("THUNES_WEBHOOK_SECRET", TEST_THUNES_SECRET),
            ("MOMO_CALLBACK_SECRET", TEST_MOMO_SECRET),
            ("BIND_ADDRESS", "127.0.0.1"),
            ("APP_ENV", "dev"),
            ("LOG_FORMAT", "text"),
            ("RUST_LOG", "info,sqlx=warn"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        env.push(("PORT".to_owned(), port.to_string()));
        env.extend(extra_env.iter().cloned());

        let dir = ScratchDir::new("nepxy-api-process");
        let mut process = ApiProcess {
            base_url: format!("http://127.0.0.1:{port}"),
            database_url: database_url.to_owned(),
            log_path: dir.path().join("nepxy-api.log"),
            env,
            child: None,
            _dir: dir,
        };
        process.spawn().await;
        process
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "nepxy-api is already running");
        // Every start appends to the same log, so a failure shows both lives.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the service log");
        let child = tokio::process::Command::new(binary_path("nepxy-api"))
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start nepxy-api");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits until /health responds with any status: a 503 means the server
    /// runs and reports its database, which the PostgreSQL test expects.
    async fn wait_ready(&mut self) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                panic!(
                    "nepxy-api exited with {status} before it served; log:\n{}",
                    self.log_tail()
                );
            }
            if http
                .get(format!("{}/health", self.base_url))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nepxy-api did not answer /health within {READY_TIMEOUT:?}; log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGKILL and waits for the process to end: no shutdown hook,
    /// no graceful drain, as in a crash or an out-of-memory kill.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("nepxy-api is running");
        // tokio sends SIGKILL on Unix.
        child.kill().await.expect("SIGKILL nepxy-api");
        tracing::info!("nepxy-api killed");
    }

    /// Sets an environment variable for the next start.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(existing, _)| existing != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// Starts the binary again with the same environment.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// Returns the last lines of the service log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Returns a [`TestApp`] that sends its requests to this process and
    /// reads its database, so the harness helpers (bootstrap, payouts,
    /// counts) work against the binary.
    pub async fn test_app(&self) -> TestApp {
        let config = test_config(&self.database_url, &[]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&self.database_url)
            .await
            .expect("connect to the service's database");
        let state = nepxy_api::AppState::new(config, pool.clone()).expect("state");
        TestApp {
            base_url: self.base_url.clone(),
            database_url: self.database_url.clone(),
            pool,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            switches: state.switches.clone(),
            state,
            shutdown: None,
        }
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Runs `nepxy-replay verify` against `database_url` and returns its exit
/// status with its output.
pub async fn replay_verify(database_url: &str) -> (bool, String) {
    let output = tokio::process::Command::new(binary_path("nepxy-replay"))
        .arg("verify")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .output()
        .await
        .expect("start nepxy-replay");
    let text = format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A PostgreSQL instance of one test, in a temporary directory on a free
/// loopback port. Dropping it stops the server (immediate shutdown) and
/// removes its files, also when the test panics.
///
/// initdb and postgres refuse to run as root, so as root every server
/// program runs as the `postgres` user, as `scripts/pg.sh` does.
pub struct PrivatePostgres {
    pub port: u16,
    bin_dir: PathBuf,
    dir: PathBuf,
}

/// Superuser role of the private instance, with trust authentication.
const PRIVATE_SUPERUSER: &str = "nepxy";
/// Database that the service under test uses.
const PRIVATE_DATABASE: &str = "nepxy";

impl PrivatePostgres {
    /// Creates the cluster with initdb, starts it and creates the database.
    pub async fn start() -> PrivatePostgres {
        let bin_dir = postgres_bin_dir();
        let dir =
            std::env::temp_dir().join(format!("nepxy-private-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL directory");
        let instance = PrivatePostgres {
            port: free_port(),
            bin_dir,
            dir,
        };
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&instance.dir)
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown of {} to postgres failed",
                instance.dir.display()
            );
        }
        instance.run(
            "initdb",
            &[
                "-D",
                &instance.data_dir(),
                "-U",
                PRIVATE_SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        instance.start_server();

        let mut admin = sqlx::PgConnection::connect(&instance.url_of("postgres"))
            .await
            .expect("connect to the private PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {PRIVATE_DATABASE}"))
            .execute(&mut admin)
            .await
            .expect("create the database");
        instance
    }

    /// URL of the service's database.
    pub fn database_url(&self) -> String {
        self.url_of(PRIVATE_DATABASE)
    }

    fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://{PRIVATE_SUPERUSER}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// Starts the server and waits until it accepts connections. fsync is
    /// off because the instance only lives for one test and every stop in
    /// these tests is a clean shutdown.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server with a fast shutdown: open sessions are ended and
    /// their transactions rolled back.
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin_dir.join(program);
        let mut command = if is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        };
        // The server programs must not read the caller's connection settings,
        // and `postgres` may not be able to enter the caller's directory.
        command
            .current_dir("/")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGDATA");
        command
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("start {program}: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed with {}:\n{}{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let stopped = self
            .command("pg_ctl")
            .args([
                "-D",
                &self.data_dir(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
                "stop",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(stopped, Ok(status) if status.success()) {
            // pg_ctl fails when the server is already stopped, which is
            // fine; the directory is removed either way.
            tracing::debug!(dir = %self.dir.display(), "pg_ctl stop of the private PostgreSQL did not succeed");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Returns whether this process runs as root: /proc/self belongs to the
/// effective user of the process that reads it.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// Finds the directory of initdb and pg_ctl as `scripts/pg.sh` does:
/// NEPXY_PG_BIN, then the newest /usr/lib/postgresql/<version>/bin, then the
/// directory of pg_ctl on PATH.
fn postgres_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NEPXY_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("pg_ctl").exists())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL server programs not found: set NEPXY_PG_BIN to the directory of initdb and pg_ctl"
            )
        })
}
