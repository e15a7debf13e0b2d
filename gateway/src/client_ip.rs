//! Who the client is, by address: the connection's peer or, when the peer is
//! a proxy trusted with `FORWARDED_ALLOW_IPS`, the address it forwarded.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Reads `X-Forwarded-For` from the right: each proxy appends the address it
/// was connected from, so the first address that is not a trusted proxy is
/// the client. Anything left of it may be made up by the client itself.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|network| network.contains(ip));
    let mut client = peer;
    if !is_trusted(&client) {
        return client;
    }
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return client;
        };
        for entry in value.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !is_trusted(&client) {
                return client;
            }
        }
    }
    client
}

/// The address a per-address limit counts for this request (see
/// [`limited_as`]), when the connection's peer is known.
pub fn client_address(request: &axum::extract::Request, trusted: &[IpNet]) -> Option<String> {
    let axum::extract::ConnectInfo(peer) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?;
    Some(limited_as(client_ip(peer.ip(), request.headers(), trusted)))
}

/// The client a per-address limit counts. An IPv6 client usually holds a
/// whole /64 (and can pick any address in it), so it is its /64; an
/// IPv4-mapped address is its IPv4 address.
pub fn limited_as(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => ipnet::Ipv6Net::new(v6, 64)
                .map(|net| net.trunc().to_string())
                .unwrap_or_else(|_| v6.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a = limited_as("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = limited_as("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        let other = limited_as("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(limited_as("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(limited_as("192.0.2.7".parse().unwrap()), "192.0.2.7");
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let headers = forwarded(&["203.0.113.7"]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(client_ip(ip("10.0.0.2"), &headers, &[]), ip("10.0.0.2"));
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_address_from_the_right_is_the_client() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        // The client made up the first entry; the load balancer and an inner
        // proxy (both trusted) appended the rest.
        let headers = forwarded(&["192.0.2.66, 203.0.113.7", "10.0.0.5"]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers, &trusted),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn no_header_or_a_garbled_entry_leaves_the_last_address_known() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        let headers = forwarded(&["203.0.113.7, not-an-address, 10.0.0.5"]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers, &trusted),
            ip("10.0.0.5")
        );
    }
}
