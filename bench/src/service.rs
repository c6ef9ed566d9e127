//! Requests to the service: setup of the paying clients, and the resident
//! memory and CPU time of the service process from /proc.

use anyhow::{Context, bail};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

/// A paying client with its wallet and access token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client_id: String,
    pub token: String,
}

/// The callers of a run: one client per worker for distinct wallets, and one
/// client whose single wallet every worker pays from.
#[derive(Debug, Clone)]
pub struct Callers {
    pub distinct: Vec<Caller>,
    pub single: Caller,
}

/// Status, headers and JSON body (null when the body is not JSON) of a reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Sends a JSON POST with an optional bearer token and Idempotency-Key.
pub async fn post_json(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Result<Reply> {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    read_reply(request.send().await?).await
}

pub async fn read_reply(response: reqwest::Response) -> reqwest::Result<Reply> {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        body,
    })
}

async fn token(http: &reqwest::Client, base: &str, created: &Value) -> anyhow::Result<String> {
    let reply = post_json(
        http,
        format!("{base}/v1/auth/token"),
        None,
        None,
        &json!({
            "grant_type": "client_credentials",
            "client_id": created["client_id"],
            "client_secret": created["client_secret"],
        }),
    )
    .await?;
    if reply.status != StatusCode::OK {
        bail!("token request failed with {}: {}", reply.status, reply.body);
    }
    Ok(reply.body["access_token"]
        .as_str()
        .context("access_token missing from the token response")?
        .to_owned())
}

/// Bootstraps the admin, then creates `distinct` clients plus one more for
/// the single-wallet runs, each with `deposit_minor` XOF in its wallet.
pub async fn setup(
    http: &reqwest::Client,
    base: &str,
    bootstrap_secret: &str,
    distinct: usize,
    deposit_minor: i64,
) -> anyhow::Result<Callers> {
    let response = http
        .post(format!("{base}/v1/admin/bootstrap"))
        .header("x-bootstrap-secret", bootstrap_secret)
        .header("content-type", "application/json")
        .send()
        .await
        .with_context(|| format!("service not reachable at {base}"))?;
    let admin = read_reply(response).await?;
    if admin.status != StatusCode::CREATED {
        bail!(
            "bootstrap failed with {}: {}; the driver needs an empty database",
            admin.status,
            admin.body
        );
    }
    let admin_token = token(http, base, &admin.body).await?;

    let mut callers = Vec::with_capacity(distinct + 1);
    for index in 0..=distinct {
        let created = post_json(
            http,
            format!("{base}/v1/admin/clients"),
            Some(&admin_token),
            None,
            &json!({ "name": format!("bench client {index}"), "role": "client" }),
        )
        .await?;
        if created.status != StatusCode::CREATED {
            bail!(
                "client creation failed with {}: {}",
                created.status,
                created.body
            );
        }
        let client_id = created.body["client_id"]
            .as_str()
            .context("client_id missing from the created client")?
            .to_owned();
        let deposit = post_json(
            http,
            format!("{base}/v1/accounts/{client_id}/deposits"),
            Some(&admin_token),
            Some(&Uuid::new_v4().to_string()),
            &json!({ "amount": deposit_minor, "currency": "XOF" }),
        )
        .await?;
        if deposit.status != StatusCode::CREATED {
            bail!("deposit failed with {}: {}", deposit.status, deposit.body);
        }
        callers.push(Caller {
            client_id,
            token: token(http, base, &created.body).await?,
        });
    }
    let single = callers.pop().context("no caller created")?;
    Ok(Callers {
        distinct: callers,
        single,
    })
}

/// Resident set size (VmRSS) of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmRSS:")
}

/// Peak resident set size (VmHWM) of a process in KiB, from /proc.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmHWM:")
}

fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Clock ticks per second of the utime and stime fields of /proc/PID/stat.
/// Linux fixes USER_HZ at 100 on x86 and arm64.
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of a process in seconds, threads that have
/// exited included, from /proc/PID/stat.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_seconds(&stat)
}

fn parse_stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name in field 2 is in parentheses and may contain spaces,
    // so fields are counted after the last ')'. utime and stime are fields
    // 14 and 15, the 12th and 13th after the name.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_in_kib() {
        let status = "Name:\tnepxy-api\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn stat_cpu_time_after_name_with_spaces() {
        let stat =
            "1234 (tokio (worker) 1) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_stat_cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_seconds("self").is_some());
    }
}
