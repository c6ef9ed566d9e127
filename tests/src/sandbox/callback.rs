//! Callback delivery: loopback targets only, signed the way each provider's
//! webhook adapter in `nepxy_api::webhooks` verifies, with bounded retries.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use nepxy_ledger::Provider;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder, Url};
use sha2::Sha256;
use uuid::Uuid;

/// Timeout of one callback request, connection included.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Maximum deliveries of one callback: the first and two retries.
pub const MAX_CALLBACK_ATTEMPTS: u32 = 3;
/// Pause before the first retry. It grows by this much for each retry.
pub const RETRY_BACKOFF_STEP: Duration = Duration::from_millis(500);

/// Hosts that callbacks may go to, as `Url::host_str` writes them.
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

/// How a callback is authenticated.
#[derive(Debug, Clone)]
pub enum Signing {
    /// MTN MoMo: no signature. The receiver trusts the token in the URL.
    Unsigned,
    /// TMoney: `x-timestamp`, `x-nonce` and `x-signature`, the hex
    /// HMAC-SHA256 of `{timestamp}.{nonce}.{body}`. Every delivery gets a
    /// new nonce.
    Tmoney,
    /// Thunes, Standard Webhooks v1: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature: v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}>`.
    /// The id stays the same across the retries and repeats of one event.
    StandardWebhooks { event_id: String },
}

/// One callback to send.
#[derive(Debug, Clone)]
pub struct Callback {
    pub provider: Provider,
    pub reference: String,
    pub method: Method,
    pub url: String,
    pub body: Vec<u8>,
    pub signing: Signing,
}

/// Sends callbacks with one shared HTTP client.
pub struct CallbackSender {
    client: reqwest::Client,
    tmoney_secret: Option<Vec<u8>>,
    thunes_key: Option<Vec<u8>>,
}

impl CallbackSender {
    /// Builds the client: no proxy and no redirects, so that a request can
    /// only reach the loopback address in its URL, and `localhost` resolves
    /// to 127.0.0.1 and ::1 without a DNS lookup.
    pub fn new(
        tmoney_secret: Option<Vec<u8>>,
        thunes_key: Option<Vec<u8>>,
    ) -> reqwest::Result<Self> {
        let loopback_addresses = [
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        ];
        let client = reqwest::Client::builder()
            .timeout(CALLBACK_TIMEOUT)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs("localhost", &loopback_addresses)
            .build()?;
        Ok(CallbackSender {
            client,
            tmoney_secret,
            thunes_key,
        })
    }

    /// Sends the callback up to [`MAX_CALLBACK_ATTEMPTS`] times until the
    /// receiver responds with a 2xx status, and returns whether it did. A
    /// URL that is not a loopback http URL is rejected without any request.
    /// Every attempt and its response status is logged.
    pub async fn deliver(&self, callback: &Callback) -> bool {
        let provider = callback.provider;
        let reference = callback.reference.as_str();
        let url = match loopback_url(&callback.url) {
            Ok(url) => url,
            Err(reason) => {
                tracing::warn!(
                    %provider,
                    reference,
                    url = callback.url,
                    "callback refused: {reason}"
                );
                return false;
            }
        };

        for attempt in 1..=MAX_CALLBACK_ATTEMPTS {
            let request = self
                .client
                .request(callback.method.clone(), url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(callback.body.clone());
            let Some(request) = self.sign(request, callback) else {
                let option = match provider {
                    Provider::Thunes => "--thunes-secret (THUNES_WEBHOOK_SECRET)",
                    _ => "--tmoney-secret (TMONEY_WEBHOOK_SECRET)",
                };
                tracing::warn!(
                    %provider,
                    reference,
                    "callback not sent because {option} is not set"
                );
                return false;
            };

            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(
                        %provider,
                        reference,
                        %url,
                        method = %callback.method,
                        attempt,
                        status = response.status().as_u16(),
                        "callback delivered"
                    );
                    return true;
                }
                Ok(response) => tracing::warn!(
                    %provider,
                    reference,
                    %url,
                    method = %callback.method,
                    attempt,
                    status = response.status().as_u16(),
                    "callback answered with a non-2xx status"
                ),
                Err(error) => tracing::warn!(
                    %provider,
                    reference,
                    %url,
                    method = %callback.method,
                    attempt,
                    error = error_chain(&error),
                    "callback request failed"
                ),
            }
            if attempt < MAX_CALLBACK_ATTEMPTS {
                tokio::time::sleep(RETRY_BACKOFF_STEP * attempt).await;
            }
        }
        tracing::warn!(
            %provider,
            reference,
            %url,
            attempts = MAX_CALLBACK_ATTEMPTS,
            "callback given up"
        );
        false
    }

    /// Adds the provider's signature headers for a delivery made now, or
    /// returns `None` when the provider's secret is not configured.
    fn sign(&self, request: RequestBuilder, callback: &Callback) -> Option<RequestBuilder> {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        match &callback.signing {
            Signing::Unsigned => Some(request),
            Signing::Tmoney => {
                let secret = self.tmoney_secret.as_deref()?;
                let nonce = Uuid::new_v4().simple().to_string();
                let mac = hmac_sha256(secret, &[&timestamp, ".", &nonce, "."], &callback.body);
                Some(
                    request
                        .header("x-timestamp", &timestamp)
                        .header("x-nonce", nonce)
                        .header("x-signature", hex::encode(mac)),
                )
            }
            Signing::StandardWebhooks { event_id } => {
                let key = self.thunes_key.as_deref()?;
                let mac = hmac_sha256(key, &[event_id, ".", &timestamp, "."], &callback.body);
                Some(
                    request
                        .header("webhook-id", event_id)
                        .header("webhook-timestamp", &timestamp)
                        .header("webhook-signature", format!("v1,{}", STANDARD.encode(mac))),
                )
            }
        }
    }
}

/// Parses `text` and checks that it is an http URL whose host is 127.0.0.1,
/// localhost or [::1]. The error message gives the reason when it is not.
pub fn loopback_url(text: &str) -> Result<Url, String> {
    let url =
        Url::parse(text).map_err(|error| format!("{text:?} is not an absolute URL: {error}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "scheme {} is not supported, because the sandbox sends callbacks over plain http only",
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or_default();
    if !LOOPBACK_HOSTS.contains(&host) {
        return Err(format!(
            "host {host:?} is not 127.0.0.1, localhost or [::1], and the sandbox sends callbacks to loopback only"
        ));
    }
    Ok(url)
}

/// Joins an error and its sources, because reqwest's own message leaves out
/// the cause, such as "connection refused".
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

/// HMAC-SHA256 of the text parts followed by the body.
fn hmac_sha256(key: &[u8], prefix_parts: &[&str], body: &[u8]) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    for part in prefix_parts {
        mac.update(part.as_bytes());
    }
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_pass() {
        for url in [
            "http://127.0.0.1:8001/v1/webhooks/tmoney",
            "http://localhost:8001/v1/webhooks/thunes",
            "http://LOCALHOST/x",
            "http://[::1]:9000/x",
            "http://[0:0:0:0:0:0:0:1]/x",
        ] {
            assert!(loopback_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn other_hosts_are_rejected() {
        for url in [
            "http://192.0.2.10/x",
            "http://10.0.0.1/x",
            "http://169.254.169.254/latest",
            "http://example.com/x",
            "http://localhost.example.com/x",
            "http://127.0.0.2/x",
            "https://127.0.0.1/x",
            "/v1/webhooks/tmoney",
        ] {
            assert!(loopback_url(url).is_err(), "{url}");
        }
    }
}
