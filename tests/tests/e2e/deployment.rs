//! Checks that the Fly.io deployment files agree with the server: the app
//! name, the environment, the port, the health check route, and the commands
//! that Fly runs from the image. Reads fly.toml and its Dockerfile from the
//! workspace root and needs no database or network.
//!
//! The subcommand checks run `nepxy-api <subcommand> --help`, so build the
//! binary first with `cargo build --workspace --bins` (scripts/test.sh does).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nepxy_api::Config;
use nepxy_api::config::{AppEnv, ConfigError, LogFormat};
use nepxy_tests::{TEST_JWT_SECRET, TEST_THUNES_SECRET, TEST_TMONEY_SECRET, binary_path};
use serde::Deserialize;

const APP_NAME: &str = "nepxy-api-prod";
const HEALTH_PATH: &str = "/health";
const RELEASE_COMMAND: &str = "nepxy-api migrate";
/// Directory that the runtime image installs the binaries into. It is on the
/// PATH of debian:bookworm-slim, so fly.toml and CMD name the binaries alone.
const BINARY_DIRECTORY: &str = "/usr/local/bin";
/// Placeholders for the secrets that every environment requires. Reading the
/// configuration does not connect to the database.
const REQUIRED_SECRETS: [(&str, &str); 2] = [
    ("DATABASE_URL", "postgres://nepxy@localhost:5432/nepxy"),
    ("JWT_SECRET", TEST_JWT_SECRET),
];
/// Placeholders for the secrets that APP_ENV=prod requires as well, with no
/// MTN MoMo variables set.
const PROD_SECRETS: [(&str, &str); 2] = [
    ("TMONEY_WEBHOOK_SECRET", TEST_TMONEY_SECRET),
    ("THUNES_WEBHOOK_SECRET", TEST_THUNES_SECRET),
];

/// The parts of fly.toml that these tests check. Other keys are ignored.
#[derive(Debug, Deserialize)]
struct FlyConfig {
    app: String,
    build: FlyBuild,
    deploy: FlyDeploy,
    #[serde(default)]
    env: BTreeMap<String, String>,
    http_service: HttpService,
}

#[derive(Debug, Deserialize)]
struct FlyBuild {
    dockerfile: String,
}

#[derive(Debug, Deserialize)]
struct FlyDeploy {
    release_command: String,
}

#[derive(Debug, Deserialize)]
struct HttpService {
    internal_port: u16,
    force_https: Option<bool>,
    /// Fly accepts a string (`"off"`, `"stop"`, `"suspend"`) or a boolean.
    auto_stop_machines: Option<toml::Value>,
    min_machines_running: Option<u32>,
    concurrency: Option<Concurrency>,
    #[serde(default)]
    checks: Vec<HttpCheck>,
}

#[derive(Debug, Deserialize)]
struct Concurrency {
    soft_limit: u32,
    hard_limit: u32,
}

#[derive(Debug, Deserialize)]
struct HttpCheck {
    method: Option<String>,
    path: Option<String>,
    grace_period: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
}

/// One Dockerfile instruction, with its continuation lines joined.
#[derive(Debug)]
struct Instruction {
    /// Upper-case keyword such as `FROM` or `CMD`.
    keyword: String,
    arguments: String,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_workspace_file(name: &str) -> String {
    let path = workspace_root().join(name);
    fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()))
}

fn fly_config() -> FlyConfig {
    let text = read_workspace_file("fly.toml");
    toml::from_str(&text).unwrap_or_else(|error| panic!("fly.toml is invalid: {error}"))
}

/// Reads the server configuration from `secrets`, which fly.toml never
/// holds, and then from `env`.
fn server_config(
    secrets: &[(&str, &str)],
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    Config::from_lookup(|name| {
        secrets
            .iter()
            .find(|(secret, _)| *secret == name)
            .map(|(_, value)| (*value).to_owned())
            .or_else(|| env.get(name).cloned())
    })
}

/// Returns true when the server variable `name` is a secret, which belongs in
/// `flyctl secrets set` rather than in fly.toml.
fn is_secret_name(name: &str) -> bool {
    name == "DATABASE_URL"
        || name.ends_with("_SECRET")
        || name.ends_with("_SECRET_OLD")
        || name.ends_with("_KEY")
}

/// Splits a Dockerfile into instructions. Handles full-line comments and
/// lines continued with a trailing backslash. Parser directives such as
/// `# escape=` and heredocs are not supported.
fn parse_dockerfile(text: &str) -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                instructions.push(instruction_from(&pending));
                pending.clear();
            }
        }
    }
    if !pending.trim().is_empty() {
        instructions.push(instruction_from(&pending));
    }
    instructions
}

fn instruction_from(line: &str) -> Instruction {
    let line = line.trim();
    let (keyword, arguments) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    Instruction {
        keyword: keyword.to_ascii_uppercase(),
        arguments: arguments.trim().to_owned(),
    }
}

/// Instructions of the Dockerfile's last stage, the one that becomes the
/// image, starting with its `FROM`.
fn final_stage(fly: &FlyConfig) -> Vec<Instruction> {
    let name = &fly.build.dockerfile;
    let instructions = parse_dockerfile(&read_workspace_file(name));
    let start = instructions
        .iter()
        .rposition(|instruction| instruction.keyword == "FROM")
        .unwrap_or_else(|| panic!("{name}: no FROM instruction"));
    instructions.into_iter().skip(start).collect()
}

/// Arguments of the last `keyword` instruction of `stage`, the one that
/// takes effect.
fn last_arguments<'a>(stage: &'a [Instruction], keyword: &str) -> Option<&'a str> {
    stage
        .iter()
        .rev()
        .find(|instruction| instruction.keyword == keyword)
        .map(|instruction| instruction.arguments.as_str())
}

/// Parses the exec form of CMD or ENTRYPOINT, a JSON array of strings.
fn exec_form(arguments: &str, keyword: &str) -> Vec<String> {
    serde_json::from_str(arguments).unwrap_or_else(|error| {
        panic!(
            "Dockerfile: {keyword} {arguments} is not in exec form (a JSON array of strings), \
             so a shell instead of nepxy-api would receive the stop signal: {error}"
        )
    })
}

/// ENTRYPOINT of the final stage. A stage without one gets the base image's,
/// which is empty for debian:bookworm-slim.
fn entrypoint(stage: &[Instruction]) -> Vec<String> {
    last_arguments(stage, "ENTRYPOINT")
        .map(|arguments| exec_form(arguments, "ENTRYPOINT"))
        .unwrap_or_default()
}

/// Returns true when `instruction` copies a file named `binary` into
/// `directory`.
fn copies_into(instruction: &Instruction, binary: &str, directory: &str) -> bool {
    if instruction.keyword != "COPY" {
        return false;
    }
    let operands: Vec<&str> = instruction
        .arguments
        .split_whitespace()
        .filter(|word| !word.starts_with("--"))
        .collect();
    let Some((destination, sources)) = operands.split_last() else {
        return false;
    };
    let into_directory = destination.trim_end_matches('/') == directory;
    let suffix = format!("/{binary}");
    let copies_binary = sources
        .iter()
        .any(|source| *source == binary || source.ends_with(&suffix));
    into_directory && copies_binary
}

/// Paths registered with `.route("...", ...)` in api/src/app.rs. Routes under
/// `.nest(...)` or with a path that is not a string literal are not found.
fn router_paths() -> Vec<String> {
    let source = read_workspace_file("api/src/app.rs");
    source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('"')?;
            let end = rest.find('"')?;
            Some(rest[..end].to_owned())
        })
        .collect()
}

/// Asserts that `nepxy-api <subcommand> --help` succeeds, which clap allows
/// only for a defined subcommand. `--help` exits before the configuration is
/// read, so no database is needed. `source` names where the subcommand is
/// configured, for the failure message.
fn assert_nepxy_api_subcommand(subcommand: &str, source: &str) {
    let output = Command::new(binary_path("nepxy-api"))
        .args([subcommand, "--help"])
        .env_clear()
        .output()
        .expect("failed to run nepxy-api");
    assert!(
        output.status.success(),
        "{source}: `{subcommand}` is not a nepxy-api subcommand: exit {:?}, stderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn fly_app_name_is_production() {
    let fly = fly_config();

    assert_eq!(fly.app, APP_NAME, "fly.toml: app");
}

#[test]
fn fly_build_dockerfile_exists() {
    let fly = fly_config();
    let path = workspace_root().join(&fly.build.dockerfile);

    assert!(
        path.is_file(),
        "fly.toml: build.dockerfile {} is not a file at the workspace root",
        fly.build.dockerfile
    );
}

#[test]
fn fly_env_sets_production_mode() {
    let fly = fly_config();

    assert_eq!(
        fly.env.get("APP_ENV").map(String::as_str),
        Some("prod"),
        "fly.toml: env.APP_ENV"
    );
}

#[test]
fn fly_env_contains_no_secrets() {
    let fly = fly_config();

    for name in fly.env.keys() {
        assert!(
            !is_secret_name(name),
            "fly.toml: env.{name} is a secret; remove it and set it with \
             `flyctl secrets set {name}=... --app {APP_NAME}`"
        );
    }
}

#[test]
fn fly_env_is_valid_server_config() {
    let fly = fly_config();

    let secrets = [REQUIRED_SECRETS, PROD_SECRETS].concat();

    let config = server_config(&secrets, &fly.env).unwrap_or_else(|error| {
        panic!(
            "fly.toml: [env], with placeholders for the secrets that prod requires, \
             is an invalid server configuration: {error}"
        )
    });

    assert_eq!(
        config.app_env,
        AppEnv::Prod,
        "fly.toml: env.APP_ENV as the server reads it"
    );
    assert_eq!(
        config.log_format,
        LogFormat::Text,
        "fly.toml: env.LOG_FORMAT as the server reads it"
    );
    assert_eq!(
        config.port, fly.http_service.internal_port,
        "fly.toml: http_service.internal_port differs from the port that [env] makes the server bind"
    );
}

#[test]
fn internal_port_matches_default_port() {
    let fly = fly_config();

    let config = server_config(&REQUIRED_SECRETS, &BTreeMap::new()).unwrap_or_else(|error| {
        panic!("server configuration with only DATABASE_URL and JWT_SECRET is invalid: {error}")
    });

    assert_eq!(
        fly.http_service.internal_port, config.port,
        "fly.toml: http_service.internal_port differs from the server's default PORT"
    );
}

#[test]
fn http_service_keeps_machines_running() {
    let service = fly_config().http_service;

    assert_eq!(
        service.force_https,
        Some(true),
        "fly.toml: http_service.force_https"
    );
    let auto_stop = service.auto_stop_machines;
    let stops_never = matches!(
        &auto_stop,
        Some(toml::Value::String(mode)) if mode == "off"
    ) || matches!(&auto_stop, Some(toml::Value::Boolean(false)));
    assert!(
        stops_never,
        "fly.toml: http_service.auto_stop_machines is {auto_stop:?}; set it to \"off\", because \
         the dispatcher and the webhook retry worker run inside the service"
    );
    assert!(
        service.min_machines_running.is_some_and(|count| count >= 1),
        "fly.toml: http_service.min_machines_running is {:?}, expected at least 1",
        service.min_machines_running
    );
}

#[test]
fn http_service_concurrency_limits_are_ordered() {
    let service = fly_config().http_service;

    let concurrency = service
        .concurrency
        .expect("fly.toml: http_service.concurrency is missing");

    assert!(
        concurrency.soft_limit <= concurrency.hard_limit,
        "fly.toml: http_service.concurrency.soft_limit {} is above hard_limit {}",
        concurrency.soft_limit,
        concurrency.hard_limit
    );
}

#[test]
fn health_checks_probe_health_route() {
    let checks = fly_config().http_service.checks;

    assert!(
        !checks.is_empty(),
        "fly.toml: http_service.checks is empty; add a GET {HEALTH_PATH} check"
    );
    for (index, check) in checks.iter().enumerate() {
        let key = format!("http_service.checks[{index}]");
        assert_eq!(
            check.path.as_deref(),
            Some(HEALTH_PATH),
            "fly.toml: {key}.path"
        );
        assert!(
            check
                .method
                .as_deref()
                .is_some_and(|method| method.eq_ignore_ascii_case("GET")),
            "fly.toml: {key}.method is {:?}, expected GET",
            check.method
        );
        assert!(
            check.grace_period.is_some(),
            "fly.toml: {key}.grace_period is missing"
        );
        assert!(
            check.interval.is_some(),
            "fly.toml: {key}.interval is missing"
        );
        assert!(
            check.timeout.is_some(),
            "fly.toml: {key}.timeout is missing"
        );
    }

    let paths = router_paths();
    assert!(
        paths.iter().any(|path| path == HEALTH_PATH),
        "api/src/app.rs: no .route(\"{HEALTH_PATH}\", ...) for the fly.toml health checks; \
         routes found: {paths:?}"
    );
}

#[test]
fn release_command_runs_migrate() {
    let fly = fly_config();
    let stage = final_stage(&fly);

    assert_eq!(
        fly.deploy.release_command, RELEASE_COMMAND,
        "fly.toml: deploy.release_command"
    );

    // Fly replaces the image's CMD with the release command and keeps its
    // ENTRYPOINT. flyctl splits the command with shell quoting rules, and
    // this one has no quotes, so splitting on whitespace gives the same words.
    let entrypoint = entrypoint(&stage);
    let mut command = entrypoint.clone();
    command.extend(
        fly.deploy
            .release_command
            .split_whitespace()
            .map(str::to_owned),
    );
    assert_eq!(
        command,
        ["nepxy-api", "migrate"],
        "fly.toml: deploy.release_command as Fly runs it, after the Dockerfile ENTRYPOINT {entrypoint:?}"
    );

    assert_nepxy_api_subcommand("migrate", "fly.toml: deploy.release_command");
}

#[test]
fn dockerfile_starts_nepxy_api_serve() {
    let fly = fly_config();
    let stage = final_stage(&fly);
    let name = &fly.build.dockerfile;

    let cmd = last_arguments(&stage, "CMD")
        .unwrap_or_else(|| panic!("{name}: the final stage has no CMD"));
    let mut command = entrypoint(&stage);
    command.extend(exec_form(cmd, "CMD"));

    assert_eq!(
        command,
        ["nepxy-api", "serve"],
        "{name}: ENTRYPOINT followed by CMD of the final stage"
    );
    assert_nepxy_api_subcommand("serve", &format!("{name}: CMD"));
}

#[test]
fn dockerfile_runs_as_non_root_user() {
    let fly = fly_config();
    let stage = final_stage(&fly);
    let name = &fly.build.dockerfile;

    let user = last_arguments(&stage, "USER")
        .unwrap_or_else(|| panic!("{name}: the final stage has no USER, so it runs as root"));
    let user_name = user.split(':').next().unwrap_or_default().trim();

    assert!(!user_name.is_empty(), "{name}: USER is empty");
    assert_ne!(user_name, "root", "{name}: USER");
    assert_ne!(user_name, "0", "{name}: USER");
}

#[test]
fn dockerfile_exposes_internal_port() {
    let fly = fly_config();
    let stage = final_stage(&fly);
    let name = &fly.build.dockerfile;

    let exposed: Vec<&str> = stage
        .iter()
        .filter(|instruction| instruction.keyword == "EXPOSE")
        .flat_map(|instruction| instruction.arguments.split_whitespace())
        .map(|port| port.split('/').next().unwrap_or(port))
        .collect();
    let internal_port = fly.http_service.internal_port.to_string();

    assert!(
        exposed.contains(&internal_port.as_str()),
        "{name}: EXPOSE {exposed:?} of the final stage does not include \
         fly.toml http_service.internal_port {internal_port}"
    );
}

#[test]
fn dockerfile_installs_both_binaries() {
    let fly = fly_config();
    let stage = final_stage(&fly);
    let name = &fly.build.dockerfile;

    for binary in ["nepxy-api", "nepxy-replay"] {
        let installed = stage
            .iter()
            .any(|instruction| copies_into(instruction, binary, BINARY_DIRECTORY));
        assert!(
            installed,
            "{name}: the final stage has no COPY of {binary} into {BINARY_DIRECTORY}/"
        );
    }
}
