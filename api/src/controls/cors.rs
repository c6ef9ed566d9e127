//! CORS from an exact allow-list of origins (CORS_ALLOWED_ORIGINS).
//!
//! An allowed origin is echoed byte for byte in Access-Control-Allow-Origin
//! with credentials allowed. Any other origin, including `null`, a longer host
//! that ends like an allowed one, another scheme or another port, gets no
//! CORS headers, so the browser withholds the response from the page.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Methods that a preflight allows.
pub const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE";
/// Request headers that a preflight allows.
pub const ALLOWED_HEADERS: &str = "authorization, content-type, idempotency-key, x-request-id";
/// Response headers that the page may read besides the CORS-safelisted ones.
const EXPOSED_HEADERS: &str = "x-request-id, idempotent-replayed, retry-after";
/// Seconds a browser may cache a preflight response.
const PREFLIGHT_MAX_AGE_SECONDS: u32 = 600;

/// Origins allowed to read responses from a browser.
#[derive(Clone, Debug, Default)]
pub enum AllowedOrigins {
    /// CORS_ALLOWED_ORIGINS is unset: no CORS headers at all.
    #[default]
    None,
    /// `*`, accepted in dev and staging only: every origin may read
    /// responses, but without credentials.
    Any,
    /// Exact origins such as `https://app.nepxy.com`.
    List(Vec<String>),
}

/// The CORS headers granted to one request's origin.
enum Grant {
    Echo(HeaderValue),
    Wildcard,
}

impl AllowedOrigins {
    /// Parses a comma-separated list of origins. Each entry must be an origin
    /// as browsers serialize it in the Origin header: scheme, lowercase host,
    /// and a port only when it is not the default, with no path or trailing
    /// slash. The comparison is byte for byte, so any other form would never
    /// match. Problems name the entry's position, not its value.
    pub fn parse(raw: Option<&str>, problems: &mut Vec<String>) -> AllowedOrigins {
        let Some(raw) = raw else {
            return AllowedOrigins::None;
        };
        let mut origins = Vec::new();
        let mut any = false;
        let entries = raw
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for (index, entry) in entries.enumerate() {
            if entry == "*" {
                any = true;
            } else if is_serialized_origin(entry) {
                origins.push(entry.to_owned());
            } else {
                problems.push(format!(
                    "CORS_ALLOWED_ORIGINS entry {} is not an origin; use the form https://host or https://host:port, without a path or trailing slash",
                    index + 1
                ));
            }
        }
        if any {
            AllowedOrigins::Any
        } else if origins.is_empty() {
            AllowedOrigins::None
        } else {
            AllowedOrigins::List(origins)
        }
    }

    pub fn is_wildcard(&self) -> bool {
        matches!(self, AllowedOrigins::Any)
    }

    /// Returns the grant for an Origin header value, or `None` when it is
    /// not allowed.
    fn grant(&self, origin: &HeaderValue) -> Option<Grant> {
        match self {
            AllowedOrigins::None => None,
            AllowedOrigins::Any => Some(Grant::Wildcard),
            AllowedOrigins::List(origins) => origins
                .iter()
                .any(|allowed| allowed.as_bytes() == origin.as_bytes())
                .then(|| Grant::Echo(origin.clone())),
        }
    }
}

/// Returns whether `entry` is an http or https origin exactly as a browser
/// serializes it.
fn is_serialized_origin(entry: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(entry) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.origin().ascii_serialization() == entry
}

/// Middleware: responds to preflights from allowed origins, and adds the
/// CORS headers to other responses sent to those origins.
pub async fn apply(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let allowed = &state.config.controls.cors;
    if matches!(allowed, AllowedOrigins::None) {
        return next.run(request).await;
    }
    let grant = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| allowed.grant(origin));

    if let Some(grant) = &grant
        && is_preflight(&request)
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        add_grant(headers, grant);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE_SECONDS),
        );
        add_vary(headers);
        return response;
    }

    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // Every response depends on the Origin header once CORS is configured,
    // so shared caches must key on it even when no CORS header was added.
    add_vary(headers);
    if let Some(grant) = &grant {
        add_grant(headers, grant);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    response
}

/// Returns whether the request is a CORS preflight: OPTIONS with
/// Access-Control-Request-Method.
fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn add_grant(headers: &mut HeaderMap, grant: &Grant) {
    match grant {
        Grant::Echo(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        // Browsers reject credentials together with `*`.
        Grant::Wildcard => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
}

fn add_vary(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> (AllowedOrigins, Vec<String>) {
        let mut problems = Vec::new();
        let origins = AllowedOrigins::parse(Some(raw), &mut problems);
        (origins, problems)
    }

    #[test]
    fn exact_origins_are_accepted() {
        let (origins, problems) = parse("https://app.nepxy.com, http://127.0.0.1:5173");
        assert!(problems.is_empty(), "{problems:?}");
        let AllowedOrigins::List(list) = origins else {
            panic!("expected a list, got {origins:?}");
        };
        assert_eq!(list, ["https://app.nepxy.com", "http://127.0.0.1:5173"]);
    }

    #[test]
    fn non_origins_are_rejected_by_position() {
        for entry in [
            "https://app.nepxy.com/",
            "https://app.nepxy.com/path",
            "https://APP.nepxy.com",
            "https://app.nepxy.com:443",
            "app.nepxy.com",
            "ftp://app.nepxy.com",
            "https://user@app.nepxy.com",
            "null",
        ] {
            let (_, problems) = parse(&format!("https://ok.nepxy.com,{entry}"));
            assert_eq!(problems.len(), 1, "{entry}: {problems:?}");
            assert!(problems[0].contains("entry 2"), "{entry}: {problems:?}");
            assert!(
                !problems[0].contains(entry),
                "{entry}: the value is not printed: {problems:?}"
            );
        }
    }

    #[test]
    fn star_means_any_origin() {
        let (origins, problems) = parse("*");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(origins.is_wildcard());
    }
}
