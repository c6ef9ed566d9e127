//! Checks of the URLs that notifications may be sent to.
//!
//! A client chooses the URL, so without these checks a notification could
//! reach the service's own network: another service on loopback, a private
//! address, or the cloud metadata endpoint. A URL is checked when it is
//! registered and again before every delivery. At delivery time the check
//! runs inside the HTTP client's DNS resolver, so the connection goes only to
//! the addresses that passed it, even if the name resolves differently later.

use std::error::Error;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::AppEnv;

/// Maximum length of a notification URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// The AWS, GCP and Azure instance metadata address on IPv4.
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The AWS instance metadata address on IPv6.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Destinations that an environment allows for notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Whether `http` URLs are allowed, or only `https`.
    pub allow_http: bool,
    /// Whether loopback addresses (127.0.0.0/8, ::1) and names that resolve
    /// to them are allowed.
    pub allow_loopback: bool,
    /// Whether the host may be an IP literal instead of a name.
    pub allow_ip_literal: bool,
}

impl EgressPolicy {
    /// Returns the policy of `app_env`. In prod only https URLs with a host
    /// name that resolves to public addresses are allowed. Dev and staging
    /// also allow http and loopback, so a test can run a receiver on the
    /// same machine. Private, link-local, shared (CGNAT), unspecified and
    /// metadata addresses are rejected everywhere.
    pub fn for_env(app_env: AppEnv) -> EgressPolicy {
        match app_env {
            AppEnv::Prod => EgressPolicy {
                allow_http: false,
                allow_loopback: false,
                allow_ip_literal: false,
            },
            AppEnv::Dev | AppEnv::Staging => EgressPolicy {
                allow_http: true,
                allow_loopback: true,
                allow_ip_literal: true,
            },
        }
    }
}

/// Rejection of a URL or an address as a destination. The message names
/// the problem and never contains a secret, so it can go to the client and
/// to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressError(pub String);

impl fmt::Display for EgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for EgressError {}

/// Parses a notification URL and checks everything that can be checked
/// without DNS: length, scheme, credentials, host, and the address when the
/// host is an IP literal.
pub fn parse_url(raw: &str, policy: EgressPolicy) -> Result<Url, EgressError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(EgressError(format!(
            "url must be at most {MAX_URL_BYTES} bytes long"
        )));
    }
    let url = Url::parse(raw).map_err(|error| {
        EgressError(format!(
            "url is not a valid absolute URL ({error}); send e.g. https://example.com/nepxy"
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(EgressError(format!(
            "url scheme {:?} is not supported; use https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EgressError(
            "url must not contain a user name or password; receivers authenticate notifications by their signature".to_owned(),
        ));
    }
    let Some(host) = url.host_str().filter(|host| !host.is_empty()) else {
        return Err(EgressError("url has no host".to_owned()));
    };
    if let Some(ip) = ip_literal(host) {
        check_ip_literal(ip, policy)?;
    }
    // Checked after the host, because https would not fix a forbidden
    // address.
    if url.scheme() == "http" && !policy.allow_http {
        return Err(EgressError(
            "url must use https; http is allowed only in dev and staging".to_owned(),
        ));
    }
    Ok(url)
}

/// Returns the address of a host that is an IP literal. The URL parser has already
/// normalized forms such as `0x7f.1` to `127.0.0.1` and put IPv6 literals in
/// brackets.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn check_ip_literal(ip: IpAddr, policy: EgressPolicy) -> Result<(), EgressError> {
    if let Some(reason) = blocked_reason(ip, policy) {
        return Err(EgressError(format!(
            "url host {ip} is not allowed: it is a {reason} address"
        )));
    }
    if !policy.allow_ip_literal {
        return Err(EgressError(
            "url host must be a DNS name, not an IP address".to_owned(),
        ));
    }
    Ok(())
}

/// Resolves the host of a URL that passed [`parse_url`] and checks every
/// address it resolves to. An IP literal needs no lookup.
pub async fn check_resolved(url: &Url, policy: EgressPolicy) -> Result<(), EgressError> {
    let Some(name) = url.host_str() else {
        return Ok(());
    };
    if ip_literal(name).is_some() {
        return Ok(());
    }
    let addresses = resolve(name).await?;
    check_addresses(name, &addresses, policy)
}

/// Looks `name` up with the system resolver.
async fn resolve(name: &str) -> Result<Vec<SocketAddr>, EgressError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
        .await
        .map_err(|error| EgressError(format!("url host {name} could not be resolved: {error}")))?
        .collect();
    if addresses.is_empty() {
        return Err(EgressError(format!(
            "url host {name} resolves to no address"
        )));
    }
    Ok(addresses)
}

/// Fails when any of the addresses is not allowed, because a connection may
/// go to any of them.
fn check_addresses(
    name: &str,
    addresses: &[SocketAddr],
    policy: EgressPolicy,
) -> Result<(), EgressError> {
    for address in addresses {
        if let Some(reason) = blocked_reason(address.ip(), policy) {
            return Err(EgressError(format!(
                "url host {name} resolves to {}, a {reason} address, which is not allowed",
                address.ip()
            )));
        }
    }
    Ok(())
}

/// Returns the kind of address that makes `ip` a forbidden destination, or
/// `None` when it is allowed. IPv6 forms that embed an IPv4 address
/// (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96 and 6to4 2002::/16) are
/// judged by that IPv4 address.
pub fn blocked_reason(ip: IpAddr, policy: EgressPolicy) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => blocked_v4(ip, policy),
        IpAddr::V6(ip) => blocked_v6(ip, policy),
    }
}

fn blocked_v4(ip: Ipv4Addr, policy: EgressPolicy) -> Option<&'static str> {
    let [a, b, _, _] = ip.octets();
    if ip == METADATA_V4 {
        Some("cloud metadata")
    } else if ip.is_loopback() {
        (!policy.allow_loopback).then_some("loopback")
    } else if a == 0 {
        // 0.0.0.0/8 is "this network" (RFC 1122), and Linux connects to the
        // local host when asked for 0.0.0.0.
        Some("unspecified")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT, 100.64.0.0/10)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast, broadcast or reserved")
    } else {
        None
    }
}

fn blocked_v6(ip: Ipv6Addr, policy: EgressPolicy) -> Option<&'static str> {
    let segments = ip.segments();
    if ip == METADATA_V6 {
        Some("cloud metadata")
    } else if ip.is_loopback() {
        (!policy.allow_loopback).then_some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if let Some(embedded) = embedded_v4(ip) {
        blocked_v4(embedded, policy)
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local, fc00::/7)")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast, broadcast or reserved")
    } else {
        None
    }
}

/// Returns the IPv4 address inside an IPv6 address that carries one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let octets = ip.octets();
    let last_32_bits = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if let Some(mapped) = ip.to_ipv4_mapped() {
        Some(mapped)
    } else if segments[..6] == [0; 6] {
        // IPv4-compatible ::a.b.c.d, deprecated by RFC 4291, is judged by its
        // IPv4 part in case a stack still maps it. :: and ::1 were handled
        // before.
        Some(last_32_bits)
    } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(last_32_bits)
    } else if segments[0] == 0x2002 {
        Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]))
    } else {
        None
    }
}

/// DNS resolver of the delivery client: it resolves with the system resolver
/// and fails when any address is not allowed, so the client never connects
/// to one. Hosts given as IP literals do not pass through a resolver, so
/// [`parse_url`] checks those before each request.
#[derive(Debug, Clone, Copy)]
pub struct CheckedResolver {
    pub policy: EgressPolicy,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses = resolve(&host).await?;
            check_addresses(&host, &addresses, policy)?;
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prod() -> EgressPolicy {
        EgressPolicy::for_env(AppEnv::Prod)
    }

    fn dev() -> EgressPolicy {
        EgressPolicy::for_env(AppEnv::Dev)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address parses")
    }

    #[test]
    fn blocked_in_every_environment() {
        let cases = [
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "shared (CGNAT, 100.64.0.0/10)"),
            ("100.127.255.254", "shared (CGNAT, 100.64.0.0/10)"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("224.0.0.1", "multicast, broadcast or reserved"),
            ("255.255.255.255", "multicast, broadcast or reserved"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fc00::1", "private (unique local, fc00::/7)"),
            ("fd12:3456::1", "private (unique local, fc00::/7)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast, broadcast or reserved"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::a00:1", "private"),
            ("2002:a00:1::", "private"),
        ];
        for (address, reason) in cases {
            for (name, policy) in [("prod", prod()), ("dev", dev())] {
                assert_eq!(
                    blocked_reason(ip(address), policy),
                    Some(reason),
                    "{address} in {name}"
                );
            }
        }
    }

    #[test]
    fn loopback_blocked_only_in_prod() {
        for address in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                blocked_reason(ip(address), prod()),
                Some("loopback"),
                "{address} in prod"
            );
            assert_eq!(blocked_reason(ip(address), dev()), None, "{address} in dev");
        }
    }

    #[test]
    fn public_addresses_allowed() {
        for address in [
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(blocked_reason(ip(address), prod()), None, "{address}");
        }
    }

    #[test]
    fn prod_rejects_http_and_ip_literals() {
        let cases = [
            ("http://example.com/hook", "https"),
            ("http://10.0.0.1/x", "private"),
            ("https://10.0.0.1/x", "private"),
            ("http://169.254.169.254/", "cloud metadata"),
            (
                "https://169.254.169.254/latest/meta-data/",
                "cloud metadata",
            ),
            ("https://[::1]/", "loopback"),
            ("https://127.0.0.1/", "loopback"),
            ("https://0x7f.1/", "loopback"),
            ("https://[fd00:ec2::254]/", "cloud metadata"),
            ("https://8.8.8.8/", "DNS name"),
        ];
        for (url, expected) in cases {
            let error = parse_url(url, prod()).expect_err(url);
            assert!(error.0.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn dev_allows_loopback_but_not_private() {
        assert!(parse_url("http://127.0.0.1:8080/hook", dev()).is_ok());
        assert!(parse_url("http://[::1]:8080/hook", dev()).is_ok());
        assert!(parse_url("http://localhost:8080/hook", dev()).is_ok());
        for url in [
            "http://10.0.0.1/",
            "http://169.254.169.254/",
            "http://192.168.0.10:8080/",
            "http://[fe80::1]/",
            "http://0.0.0.0:8080/",
        ] {
            assert!(parse_url(url, dev()).is_err(), "{url}");
        }
    }

    #[test]
    fn rejects_malformed_and_other_schemes() {
        for url in [
            "",
            "not a url",
            "/relative/path",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pass@example.com/",
            "https://user@example.com/",
        ] {
            assert!(parse_url(url, dev()).is_err(), "{url:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(parse_url(&long, dev()).is_err());
    }

    #[test]
    fn prod_accepts_https_name() {
        let url = parse_url("https://hooks.example.com/nepxy?x=1", prod()).expect("valid");
        assert_eq!(url.host_str(), Some("hooks.example.com"));
    }
}
