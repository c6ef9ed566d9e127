//! The request mixes and the loop that runs one of them from many workers.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::service::{self, Caller, Callers, Reply};
use crate::signing::{self, WebhookKeys};
use crate::stats::{Class, Summary, Tally};

/// Amount of every payout, in XOF (no minor unit).
pub const PAYOUT_AMOUNT: i64 = 1_000;

/// Kind of requests that the workers of a run send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// New payouts, each with a new Idempotency-Key.
    Payouts,
    /// Payouts of which a share repeats an earlier key with the same body.
    Duplicates,
    /// Signed TMoney and Thunes reports that created payouts succeeded.
    Webhooks,
    /// GET of a created payout and GET of its client's balance, alternately.
    Reads,
}

/// Source wallets of the payouts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wallets {
    /// Worker `n` pays from the wallet of client `n`.
    Distinct,
    /// Every worker pays from one client's single wallet.
    One,
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Phase {
    pub mix: Mix,
    pub wallets: Wallets,
    pub clients: usize,
    /// Maximum requests of the run.
    pub requests: usize,
    /// Maximum duration of the run.
    pub max_duration: Duration,
    /// Requests per second over all workers. `None` sends each request as
    /// soon as the worker's previous one has its response.
    pub rate: Option<f64>,
    /// Share of requests, in percent, that repeat an earlier key (Duplicates).
    pub duplicate_percent: u32,
}

/// A payout created by the run, with the caller that owns it.
#[derive(Debug, Clone)]
pub struct PayoutRef {
    pub id: String,
    pub provider: &'static str,
    pub caller: Arc<Caller>,
}

/// State shared by every run of the driver.
pub struct Driver {
    pub http: reqwest::Client,
    pub base_url: String,
    pub distinct: Vec<Arc<Caller>>,
    pub single: Arc<Caller>,
    pub msisdn: String,
    pub keys: Option<WebhookKeys>,
    /// Created payouts that no webhook of this driver has reported yet.
    pub unreported: Mutex<Vec<PayoutRef>>,
    /// Every payout created so far, for the reads.
    pub created: Mutex<Vec<PayoutRef>>,
    pub service_pid: Option<u32>,
}

impl Driver {
    pub fn new(
        http: reqwest::Client,
        base_url: String,
        callers: Callers,
        msisdn: String,
        keys: Option<WebhookKeys>,
        service_pid: Option<u32>,
    ) -> Self {
        let distinct = callers
            .distinct
            .iter()
            .cloned()
            .map(Arc::new)
            .collect::<Vec<_>>();
        let single = Arc::new(callers.single.clone());
        Self {
            http,
            base_url,
            distinct,
            single,
            msisdn,
            keys,
            unreported: Mutex::new(Vec::new()),
            created: Mutex::new(Vec::new()),
            service_pid,
        }
    }

    fn caller(&self, wallets: Wallets, worker: usize) -> Arc<Caller> {
        match wallets {
            Wallets::One => Arc::clone(&self.single),
            Wallets::Distinct => Arc::clone(&self.distinct[worker % self.distinct.len()]),
        }
    }
}

/// Figures of one finished run.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub summary: Summary,
    pub tally: Tally,
    pub started: Instant,
    pub elapsed: Duration,
    pub created: Vec<PayoutRef>,
    /// Highest VmRSS of the service seen during the run, in KiB.
    pub service_rss_kib: Option<u64>,
    /// CPU time the service spent during the run, in seconds.
    pub service_cpu_seconds: Option<f64>,
    /// CPU time this driver spent during the run, in seconds.
    pub driver_cpu_seconds: Option<f64>,
}

/// Interval between two samples of the service's resident memory.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// Runs `phase` and waits for every worker to stop.
pub async fn run_phase(driver: &Arc<Driver>, phase: &Phase) -> anyhow::Result<PhaseResult> {
    let reads: Arc<Vec<PayoutRef>> =
        Arc::new(driver.created.lock().expect("created payouts lock").clone());
    let next = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = driver.service_pid.map(|pid| {
        let running = Arc::clone(&running);
        let peak_rss = Arc::clone(&peak_rss);
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                if let Some(kib) = service::rss_kib(pid) {
                    peak_rss.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(RSS_SAMPLE_INTERVAL).await;
            }
        })
    });
    let service_cpu_before = driver
        .service_pid
        .and_then(|pid| service::cpu_seconds(&pid.to_string()));
    let driver_cpu_before = service::cpu_seconds("self");

    let wall_start = unix_seconds_f64();
    let started = Instant::now();
    let deadline = started + phase.max_duration;
    let mut workers = Vec::with_capacity(phase.clients);
    for worker in 0..phase.clients {
        let driver = Arc::clone(driver);
        let phase = phase.clone();
        let next = Arc::clone(&next);
        let reads = Arc::clone(&reads);
        workers.push(tokio::spawn(async move {
            run_worker(&driver, &phase, worker, &next, &reads, started, deadline).await
        }));
    }
    let mut latencies_us = Vec::new();
    let mut tally = Tally::default();
    let mut created_by_worker = Vec::with_capacity(workers.len());
    for worker in workers {
        let output = worker.await.context("worker panicked")?;
        latencies_us.extend(output.latencies_us);
        tally.merge(output.tally);
        created_by_worker.push(output.created);
    }
    let created = interleave(created_by_worker);
    let elapsed = started.elapsed();
    // Unix times let a reader match the run with the service's log.
    eprintln!(
        "{:?} run, {:?} wallets, {} clients: unix time {wall_start:.3} to {:.3}",
        phase.mix,
        phase.wallets,
        phase.clients,
        unix_seconds_f64()
    );

    running.store(false, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        sampler.await.context("memory sampler panicked")?;
    }
    let service_cpu_after = driver
        .service_pid
        .and_then(|pid| service::cpu_seconds(&pid.to_string()));
    let driver_cpu_after = service::cpu_seconds("self");

    driver
        .unreported
        .lock()
        .expect("unreported payouts lock")
        .extend(created.iter().cloned());
    driver
        .created
        .lock()
        .expect("created payouts lock")
        .extend(created.iter().cloned());
    let peak = peak_rss.load(Ordering::Relaxed);
    Ok(PhaseResult {
        summary: Summary::from_latencies(latencies_us, elapsed),
        tally,
        started,
        elapsed,
        created,
        service_rss_kib: (peak > 0).then_some(peak),
        service_cpu_seconds: difference(service_cpu_before, service_cpu_after),
        driver_cpu_seconds: difference(driver_cpu_before, driver_cpu_after),
    })
}

/// Merges the workers' lists round-robin, so that consecutive payouts of
/// the result come from different workers and, with distinct wallets, from
/// different wallets. The webhooks mix takes payouts from the end of this
/// order, and concatenated lists would send it one wallet's payouts in a row.
fn interleave<T>(lists: Vec<Vec<T>>) -> Vec<T> {
    let total = lists.iter().map(Vec::len).sum();
    let mut iterators: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut merged = Vec::with_capacity(total);
    while merged.len() < total {
        for iterator in &mut iterators {
            if let Some(item) = iterator.next() {
                merged.push(item);
            }
        }
    }
    merged
}

fn difference(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

struct WorkerOutput {
    latencies_us: Vec<u64>,
    tally: Tally,
    created: Vec<PayoutRef>,
}

/// Takes tickets until the run's request count or deadline is reached.
/// With a rate, ticket `n` is due at `started + n / rate` and its latency
/// counts from that moment, so a slow response also counts against the
/// requests queued behind it.
async fn run_worker(
    driver: &Driver,
    phase: &Phase,
    worker: usize,
    next: &AtomicUsize,
    reads: &[PayoutRef],
    started: Instant,
    deadline: Instant,
) -> WorkerOutput {
    let mut output = WorkerOutput {
        latencies_us: Vec::new(),
        tally: Tally::default(),
        created: Vec::new(),
    };
    let mut duplicates = DuplicateKeys::new(phase.duplicate_percent);
    let caller = driver.caller(phase.wallets, worker);
    let mut sent = 0_usize;
    loop {
        let ticket = next.fetch_add(1, Ordering::Relaxed);
        // A paced worker that falls behind still stops at the deadline, and
        // the tickets it did not send are missing from the request count.
        if ticket >= phase.requests || Instant::now() >= deadline {
            break;
        }
        let due = match phase.rate {
            Some(rate) => {
                let due = started + Duration::from_secs_f64(ticket as f64 / rate);
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        let class = match phase.mix {
            Mix::Payouts => {
                let provider = provider_for(worker + sent);
                send_payout(driver, &caller, provider, &Uuid::new_v4().to_string())
                    .await
                    .map(|(class, created)| {
                        output.created.extend(created);
                        class
                    })
            }
            Mix::Duplicates => send_duplicate_mix(driver, &caller, &mut duplicates, worker + sent)
                .await
                .map(|(class, created)| {
                    output.created.extend(created);
                    class
                }),
            Mix::Webhooks => {
                let Some(payout) = driver
                    .unreported
                    .lock()
                    .expect("unreported payouts lock")
                    .pop()
                else {
                    break;
                };
                send_webhook(driver, &payout).await
            }
            Mix::Reads => {
                if reads.is_empty() {
                    break;
                }
                let payout = &reads[(worker * 7_919 + sent * 31) % reads.len()];
                send_read(driver, payout, sent.is_multiple_of(2)).await
            }
        };
        output
            .latencies_us
            .push(due.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
        output
            .tally
            .record(class.unwrap_or_else(|_| Class::Error("transport".to_owned())));
        sent += 1;
    }
    output
}

/// Alternates the payouts' provider so that the webhook mix sends both
/// TMoney and Thunes reports.
fn provider_for(sequence: usize) -> &'static str {
    if sequence.is_multiple_of(2) {
        "tmoney"
    } else {
        "thunes"
    }
}

fn payout_body(driver: &Driver, provider: &str) -> Value {
    json!({
        "amount": PAYOUT_AMOUNT,
        "currency": "XOF",
        "provider": provider,
        "recipient": { "msisdn": driver.msisdn },
    })
}

async fn send_payout(
    driver: &Driver,
    caller: &Arc<Caller>,
    provider: &'static str,
    key: &str,
) -> reqwest::Result<(Class, Option<PayoutRef>)> {
    let reply = service::post_json(
        &driver.http,
        format!("{}/v1/payouts", driver.base_url),
        Some(&caller.token),
        Some(key),
        &payout_body(driver, provider),
    )
    .await?;
    Ok(classify_new_payout(&reply, provider, caller))
}

fn classify_new_payout(
    reply: &Reply,
    provider: &'static str,
    caller: &Arc<Caller>,
) -> (Class, Option<PayoutRef>) {
    match (reply.status, reply.body["id"].as_str()) {
        (StatusCode::CREATED, Some(id)) => (
            Class::Ok,
            Some(PayoutRef {
                id: id.to_owned(),
                provider,
                caller: Arc::clone(caller),
            }),
        ),
        (status, _) => (Class::Error(status.as_u16().to_string()), None),
    }
}

async fn send_duplicate_mix(
    driver: &Driver,
    caller: &Arc<Caller>,
    duplicates: &mut DuplicateKeys,
    sequence: usize,
) -> reqwest::Result<(Class, Option<PayoutRef>)> {
    match duplicates.plan() {
        Plan::New => {
            let key = Uuid::new_v4().to_string();
            let provider = provider_for(sequence);
            let reply = service::post_json(
                &driver.http,
                format!("{}/v1/payouts", driver.base_url),
                Some(&caller.token),
                Some(&key),
                &payout_body(driver, provider),
            )
            .await?;
            let (class, created) = classify_new_payout(&reply, provider, caller);
            if class == Class::Ok {
                duplicates.remember(key, provider, &reply);
            }
            Ok((class, created))
        }
        Plan::Reuse(index) => {
            let first = duplicates.answered(index);
            let reply = service::post_json(
                &driver.http,
                format!("{}/v1/payouts", driver.base_url),
                Some(&caller.token),
                Some(&first.key),
                &payout_body(driver, first.provider),
            )
            .await?;
            Ok((check_replay(first, &reply), None))
        }
    }
}

fn unix_seconds_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or_default()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}

async fn send_webhook(driver: &Driver, payout: &PayoutRef) -> reqwest::Result<Class> {
    let Some(keys) = &driver.keys else {
        return Ok(Class::Error("no-webhook-secrets".to_owned()));
    };
    let unique = Uuid::new_v4().simple().to_string();
    let delivery = match payout.provider {
        "thunes" => signing::thunes_success(
            &keys.thunes,
            &payout.id,
            PAYOUT_AMOUNT,
            &format!("msg_{unique}"),
            unix_now(),
        ),
        _ => signing::tmoney_success(&keys.tmoney, &payout.id, PAYOUT_AMOUNT, &unique, unix_now()),
    };
    let mut request = driver
        .http
        .post(format!("{}{}", driver.base_url, delivery.path))
        .header("content-type", "application/json")
        .body(delivery.body);
    for (name, value) in &delivery.headers {
        request = request.header(*name, value);
    }
    let reply = service::read_reply(request.send().await?).await?;
    Ok(classify_webhook(&reply))
}

/// Classifies a webhook response: `Ok` only for 200 with verdict `applied`,
/// which the service returns after it verified, stored and applied it.
fn classify_webhook(reply: &Reply) -> Class {
    let verdict = reply.body["verdict"].as_str().unwrap_or("none");
    if reply.status == StatusCode::OK && verdict == "applied" {
        Class::Ok
    } else {
        Class::Error(format!("{}-{verdict}", reply.status.as_u16()))
    }
}

async fn send_read(
    driver: &Driver,
    payout: &PayoutRef,
    payout_read: bool,
) -> reqwest::Result<Class> {
    let url = if payout_read {
        format!("{}/v1/payouts/{}", driver.base_url, payout.id)
    } else {
        format!(
            "{}/v1/accounts/{}/balance",
            driver.base_url, payout.caller.client_id
        )
    };
    let response = driver
        .http
        .get(url)
        .bearer_auth(&payout.caller.token)
        .send()
        .await?;
    let status = response.status();
    // The body is read so that the connection can be reused.
    response.bytes().await?;
    Ok(if status == StatusCode::OK {
        Class::Ok
    } else {
        Class::Error(status.as_u16().to_string())
    })
}

/// Choice of key for the next request of the duplicate mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A new key.
    New,
    /// The key of the `n`th payout created with a new key, and the same body.
    Reuse(usize),
}

/// The first response to a key of the duplicate mix.
#[derive(Debug, Clone)]
pub struct Answered {
    pub key: String,
    pub provider: &'static str,
    pub status: StatusCode,
    pub body: Value,
}

/// One worker's keys in the duplicate mix. Of every 100 requests,
/// `percent` repeat the key of a payout the worker created before, spread
/// evenly, and the rest use new keys. A repeat that falls due before the
/// worker has created any payout is sent with a new key instead.
#[derive(Debug, Clone)]
pub struct DuplicateKeys {
    percent: u32,
    planned: u64,
    reuses: usize,
    answered: Vec<Answered>,
}

impl DuplicateKeys {
    pub fn new(percent: u32) -> Self {
        Self {
            percent: percent.min(100),
            planned: 0,
            reuses: 0,
            answered: Vec::new(),
        }
    }

    /// Chooses the next request: a repeat when the running count of
    /// repeats due, `planned * percent / 100`, goes up by one.
    pub fn plan(&mut self) -> Plan {
        let index = self.planned;
        self.planned += 1;
        let percent = u64::from(self.percent);
        let due = (index + 1) * percent / 100 > index * percent / 100;
        if due && !self.answered.is_empty() {
            let pick = self.reuses % self.answered.len();
            self.reuses += 1;
            Plan::Reuse(pick)
        } else {
            Plan::New
        }
    }

    /// Keeps the first response to a new key so that repeats can be compared
    /// with it.
    pub fn remember(&mut self, key: String, provider: &'static str, reply: &Reply) {
        self.answered.push(Answered {
            key,
            provider,
            status: reply.status,
            body: reply.body.clone(),
        });
    }

    pub fn answered(&self, index: usize) -> &Answered {
        &self.answered[index]
    }
}

/// Classifies the response to a repeated key: `Replayed` only when it carries
/// `Idempotent-Replayed: true` with the first response's status and body.
pub fn check_replay(first: &Answered, reply: &Reply) -> Class {
    let marked = reply
        .headers
        .get("idempotent-replayed")
        .and_then(|value| value.to_str().ok())
        == Some("true");
    if !reply.status.is_success() && reply.status != first.status {
        return Class::Error(reply.status.as_u16().to_string());
    }
    if !marked {
        return Class::Error("replay-unmarked".to_owned());
    }
    if reply.status != first.status || reply.body != first.body {
        return Class::Error("replay-mismatch".to_owned());
    }
    Class::Replayed
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn reply(status: StatusCode, replayed: bool, body: Value) -> Reply {
        let mut headers = HeaderMap::new();
        if replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    fn first_answer() -> Answered {
        Answered {
            key: "k1".to_owned(),
            provider: "tmoney",
            status: StatusCode::CREATED,
            body: json!({ "id": "p1", "status": "pending" }),
        }
    }

    #[test]
    fn interleave_alternates_workers() {
        let merged = interleave(vec![vec![1, 2, 3], vec![10], vec![], vec![20, 21]]);
        assert_eq!(merged, vec![1, 10, 20, 2, 21, 3]);
    }

    #[test]
    fn interleave_of_nothing() {
        assert!(interleave::<u8>(Vec::new()).is_empty());
        assert!(interleave::<u8>(vec![Vec::new(), Vec::new()]).is_empty());
    }

    #[test]
    fn quarter_of_requests_repeat_keys() {
        let mut keys = DuplicateKeys::new(25);
        let created = reply(StatusCode::CREATED, false, json!({ "id": "p" }));
        let mut repeats = 0;
        for index in 0..400 {
            match keys.plan() {
                Plan::New => keys.remember(format!("k{index}"), "tmoney", &created),
                Plan::Reuse(_) => repeats += 1,
            }
        }
        assert_eq!(repeats, 100);
    }

    #[test]
    fn repeat_waits_for_first_answer() {
        let mut keys = DuplicateKeys::new(100);
        assert_eq!(keys.plan(), Plan::New, "nothing answered yet");
        keys.remember(
            "k0".to_owned(),
            "tmoney",
            &reply(StatusCode::CREATED, false, json!({})),
        );
        assert_eq!(keys.plan(), Plan::Reuse(0));
        assert_eq!(keys.plan(), Plan::Reuse(0));
    }

    #[test]
    fn repeats_rotate_over_answered_keys() {
        let mut keys = DuplicateKeys::new(50);
        let created = reply(StatusCode::CREATED, false, json!({}));
        let mut picks = Vec::new();
        for index in 0..8 {
            match keys.plan() {
                Plan::New => keys.remember(format!("k{index}"), "thunes", &created),
                Plan::Reuse(pick) => picks.push(pick),
            }
        }
        // Requests 1, 3, 5 and 7 repeat; 1 key is answered at the first
        // repeat, then 2, 3 and 4.
        assert_eq!(picks, vec![0, 1, 2, 3]);
    }

    #[test]
    fn zero_percent_never_repeats() {
        let mut keys = DuplicateKeys::new(0);
        keys.remember(
            "k".to_owned(),
            "tmoney",
            &reply(StatusCode::CREATED, false, json!({})),
        );
        assert!((0..100).all(|_| keys.plan() == Plan::New));
    }

    #[test]
    fn identical_marked_replay_counts_as_replayed() {
        let first = first_answer();
        let answer = reply(StatusCode::CREATED, true, first.body.clone());
        assert_eq!(check_replay(&first, &answer), Class::Replayed);
    }

    #[test]
    fn replay_with_other_body_is_error() {
        let first = first_answer();
        let answer = reply(StatusCode::CREATED, true, json!({ "id": "p2" }));
        assert_eq!(
            check_replay(&first, &answer),
            Class::Error("replay-mismatch".to_owned())
        );
    }

    #[test]
    fn unmarked_repeat_is_error() {
        let first = first_answer();
        let answer = reply(StatusCode::CREATED, false, first.body.clone());
        assert_eq!(
            check_replay(&first, &answer),
            Class::Error("replay-unmarked".to_owned())
        );
    }

    #[test]
    fn failed_repeat_counts_by_status() {
        let first = first_answer();
        let answer = reply(StatusCode::CONFLICT, false, json!({}));
        assert_eq!(
            check_replay(&first, &answer),
            Class::Error("409".to_owned())
        );
    }

    #[test]
    fn webhook_counts_only_applied() {
        let applied = reply(StatusCode::OK, false, json!({ "verdict": "applied" }));
        assert_eq!(classify_webhook(&applied), Class::Ok);
        let duplicate = reply(StatusCode::OK, false, json!({ "verdict": "duplicate" }));
        assert_eq!(
            classify_webhook(&duplicate),
            Class::Error("200-duplicate".to_owned())
        );
        let rejected = reply(StatusCode::UNAUTHORIZED, false, json!({}));
        assert_eq!(
            classify_webhook(&rejected),
            Class::Error("401-none".to_owned())
        );
    }

    #[test]
    fn new_payout_needs_created_and_id() {
        let caller = Arc::new(Caller {
            client_id: "c".to_owned(),
            token: "t".to_owned(),
        });
        let created = reply(StatusCode::CREATED, false, json!({ "id": "p9" }));
        let (class, payout) = classify_new_payout(&created, "thunes", &caller);
        assert_eq!(class, Class::Ok);
        let payout = payout.expect("payout kept");
        assert_eq!(payout.id, "p9");
        assert_eq!(payout.provider, "thunes");

        let conflict = reply(StatusCode::CONFLICT, false, json!({}));
        let (class, payout) = classify_new_payout(&conflict, "tmoney", &caller);
        assert_eq!(class, Class::Error("409".to_owned()));
        assert!(payout.is_none());
    }
}
