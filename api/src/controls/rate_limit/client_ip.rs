//! The client address that the per-IP limits count: the TCP peer, or the
//! address that a trusted reverse proxy puts in a header
//! (TRUST_PROXY_HEADERS).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};

pub const FLY_CLIENT_IP: HeaderName = HeaderName::from_static("fly-client-ip");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Source of the client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIpSource {
    /// The TCP peer address. Behind a reverse proxy this is the proxy, so
    /// every client shares one bucket.
    #[default]
    Socket,
    /// `Fly-Client-IP`, which Fly.io's proxy sets to the address it accepted
    /// the connection from.
    FlyClientIp,
    /// The right-most `X-Forwarded-For` entry, which one trusted proxy
    /// appends. Not for Fly.io, whose proxy appends the app's own address.
    XForwardedFor,
}

impl ClientIpSource {
    /// Parses TRUST_PROXY_HEADERS: unset for the socket, or a header name,
    /// compared without regard to case as HTTP does.
    pub fn parse(value: Option<&str>, problems: &mut Vec<String>) -> ClientIpSource {
        let Some(value) = value.map(str::trim) else {
            return ClientIpSource::Socket;
        };
        if value.eq_ignore_ascii_case(FLY_CLIENT_IP.as_str()) {
            ClientIpSource::FlyClientIp
        } else if value.eq_ignore_ascii_case(X_FORWARDED_FOR.as_str()) {
            ClientIpSource::XForwardedFor
        } else {
            problems.push(
                "TRUST_PROXY_HEADERS must be Fly-Client-IP or X-Forwarded-For, or unset to use the socket address"
                    .to_owned(),
            );
            ClientIpSource::Socket
        }
    }

    /// Returns the variable's value as /debug/config shows it, `None` for the
    /// socket.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            ClientIpSource::Socket => None,
            ClientIpSource::FlyClientIp => Some("Fly-Client-IP"),
            ClientIpSource::XForwardedFor => Some("X-Forwarded-For"),
        }
    }

    /// Returns the client address of a request from `peer`. A missing or
    /// invalid header value falls back to `peer`, the proxy's address, so
    /// all such requests share one bucket and a forged value cannot escape
    /// the limit.
    pub fn client_ip(self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let from_header = match self {
            ClientIpSource::Socket => return peer,
            // Fly's proxy sets the header
            // (https://fly.io/docs/networking/request-headers/). Of several
            // values the last counts, where a proxy that appends puts its own.
            ClientIpSource::FlyClientIp => headers
                .get_all(&FLY_CLIENT_IP)
                .iter()
                .next_back()
                .and_then(|value| value.to_str().ok())
                .and_then(parse_address),
            ClientIpSource::XForwardedFor => rightmost_forwarded_for(headers),
        };
        from_header.unwrap_or_else(|| {
            tracing::debug!(
                source = ?self,
                "client address header missing or invalid; counting the socket address"
            );
            peer
        })
    }
}

/// The right-most `X-Forwarded-For` entry. Each proxy appends the address it
/// received the request from, so the right-most entry is the one the
/// trusted proxy wrote, and everything left of it came from the client and
/// may be forged. Taking the left-most entry would let a caller choose its
/// own key, to escape its limit or to spend another address's budget. With
/// several field lines, the entry is the last one of the last line.
fn rightmost_forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last_line = headers.get_all(&X_FORWARDED_FOR).iter().next_back()?;
    let last_entry = last_line.to_str().ok()?.rsplit(',').next()?;
    parse_address(last_entry)
}

/// Parses an address, with or without a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`).
fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
}

/// Returns the key an address is counted under. An IPv6 host is usually
/// assigned a whole /64 and can send from any address in it, so IPv6
/// addresses count per /64 prefix. An IPv4-mapped IPv6 address counts as
/// its IPv4 address.
pub fn limit_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                (*name).clone(),
                HeaderValue::from_str(value).expect("valid header value"),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn parse_accepts_two_header_names() {
        let mut problems = Vec::new();
        assert_eq!(
            ClientIpSource::parse(None, &mut problems),
            ClientIpSource::Socket
        );
        assert_eq!(
            ClientIpSource::parse(Some("Fly-Client-IP"), &mut problems),
            ClientIpSource::FlyClientIp
        );
        assert_eq!(
            ClientIpSource::parse(Some("x-forwarded-for"), &mut problems),
            ClientIpSource::XForwardedFor
        );
        assert!(problems.is_empty(), "{problems:?}");

        for value in [
            "Forwarded",
            "X-Real-IP",
            "yes",
            "Fly-Client-IP,X-Forwarded-For",
        ] {
            let mut problems = Vec::new();
            ClientIpSource::parse(Some(value), &mut problems);
            assert_eq!(problems.len(), 1, "{value} was accepted");
            assert!(problems[0].contains("TRUST_PROXY_HEADERS"), "{problems:?}");
        }
    }

    #[test]
    fn socket_source_ignores_headers() {
        let spoofed = headers(&[
            (&FLY_CLIENT_IP, "203.0.113.5"),
            (&X_FORWARDED_FOR, "203.0.113.6"),
        ]);
        assert_eq!(ClientIpSource::Socket.client_ip(&spoofed, PEER), PEER);
    }

    #[test]
    fn forwarded_for_takes_rightmost_entry() {
        let source = ClientIpSource::XForwardedFor;
        let cases = [
            ("198.51.100.7", "198.51.100.7"),
            ("1.1.1.1, 198.51.100.7", "198.51.100.7"),
            ("1.1.1.1,198.51.100.7:5123", "198.51.100.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::2]:443", "2001:db8::2"),
        ];
        for (value, expected) in cases {
            let map = headers(&[(&X_FORWARDED_FOR, value)]);
            assert_eq!(source.client_ip(&map, PEER), ip(expected), "{value}");
        }

        let two_lines = headers(&[
            (&X_FORWARDED_FOR, "1.1.1.1, 2.2.2.2"),
            (&X_FORWARDED_FOR, "198.51.100.7"),
        ]);
        assert_eq!(source.client_ip(&two_lines, PEER), ip("198.51.100.7"));
    }

    #[test]
    fn invalid_header_falls_back_to_peer() {
        let cases: [(ClientIpSource, &[(&HeaderName, &str)]); 7] = [
            (ClientIpSource::XForwardedFor, &[]),
            (ClientIpSource::XForwardedFor, &[(&X_FORWARDED_FOR, "")]),
            (
                ClientIpSource::XForwardedFor,
                &[(&X_FORWARDED_FOR, "198.51.100.7, ")],
            ),
            (
                ClientIpSource::XForwardedFor,
                &[(&X_FORWARDED_FOR, "198.51.100.7, unknown")],
            ),
            (ClientIpSource::FlyClientIp, &[]),
            (
                ClientIpSource::FlyClientIp,
                &[(&FLY_CLIENT_IP, "not-an-ip")],
            ),
            (
                ClientIpSource::FlyClientIp,
                &[(&X_FORWARDED_FOR, "198.51.100.7")],
            ),
        ];
        for (source, pairs) in cases {
            let map = headers(pairs);
            assert_eq!(source.client_ip(&map, PEER), PEER, "{source:?} {pairs:?}");
        }
    }

    #[test]
    fn fly_client_ip_takes_last_value() {
        let source = ClientIpSource::FlyClientIp;
        let one = headers(&[(&FLY_CLIENT_IP, "198.51.100.7")]);
        assert_eq!(source.client_ip(&one, PEER), ip("198.51.100.7"));
        let two = headers(&[
            (&FLY_CLIENT_IP, "203.0.113.5"),
            (&FLY_CLIENT_IP, "198.51.100.7"),
        ]);
        assert_eq!(source.client_ip(&two, PEER), ip("198.51.100.7"));
    }

    #[test]
    fn ipv6_counts_per_64_prefix() {
        assert_eq!(limit_key(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
    }
}
