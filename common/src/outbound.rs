//! Where the gateway may send requests to addresses a client chose (status
//! callbacks): the public internet only, unless the operator allows more.
//!
//! A `callback_url` is the client's, and the worker POSTs to it from inside
//! the deployment's network. Without a check, any API key holder could make
//! workers call `127.0.0.1`, the cloud metadata service (`169.254.169.254`),
//! or private services (`10.x`), directly or through a name that resolves
//! there. [`is_global`] says whether an address is on the public internet;
//! [`OutboundPolicy`] adds the operator's allow list
//! (`CALLBACK_ALLOW_PRIVATE_NETWORKS`). The gateway refuses literal
//! addresses and `localhost` names at accept time; the worker checks every
//! address a name resolves to, and connects only to those it checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// IPv4 networks that are not the public internet (RFC 6890 and its
/// updates, IANA's special-purpose registry), as `(address, prefix length)`.
const NON_GLOBAL_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network", unspecified
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (carrier-grade NAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local (cloud metadata services)
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and the broadcast address
];

/// Special-purpose IPv6 networks inside global unicast (`2000::/3`); every
/// address outside `2000::/3` is refused anyway (see [`is_global`]).
const NON_GLOBAL_V6: &[([u16; 8], u8)] = &[
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments (Teredo, benchmarking, ORCHID)
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
];

fn in_v4(ip: Ipv4Addr, (net, len): ([u8; 4], u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, (net, len): ([u16; 8], u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// Whether `ip` is an address on the public internet.
///
/// Refused: unspecified, loopback, private, link-local, carrier-grade NAT,
/// `0.0.0.0/8`, `192.0.0.0/24`, benchmarking, documentation, reserved
/// `240.0.0.0/4` and broadcast, multicast; in IPv6 everything outside global
/// unicast `2000::/3` (so `::`, `::1`, unique local `fc00::/7`, link-local
/// `fe80::/10`, site-local `fec0::/10`, multicast `ff00::/8`, discard
/// `100::/64`, ...) and the special-purpose and documentation networks
/// inside it. An IPv6 address that carries an IPv4 one (IPv4-mapped
/// `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) is judged by that IPv4 address.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => is_global_v4(v4),
            None => is_global_v6(v6),
        },
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    !NON_GLOBAL_V4.iter().any(|&net| in_v4(ip, net))
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    in_v6(ip, ([0x2000, 0, 0, 0, 0, 0, 0, 0], 3))
        && !NON_GLOBAL_V6.iter().any(|&net| in_v6(ip, net))
}

/// The IPv4 address an IPv6 address stands for, in the forms that reach an
/// IPv4 host: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`
/// (deprecated; `::` and `::1` among them), NAT64 `64:ff9b::a.b.c.d` and
/// 6to4 `2002:aabb:ccdd::/48`.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from(bits as u32);
    if in_v6(ip, ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96))
        || in_v6(ip, ([0; 8], 96))
        || in_v6(ip, ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96))
    {
        return Some(low);
    }
    if in_v6(ip, ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16)) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// Whether a host name means this machine: `localhost` and `*.localhost`
/// (RFC 6761), with or without the final dot, in any case.
pub fn is_localhost_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The address a URL's host is, when it is one (not a name).
pub fn host_address<S>(host: &url::Host<S>) -> Option<IpAddr> {
    match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        url::Host::Domain(_) => None,
    }
}

/// The policy for outbound requests to addresses a client chose: public
/// addresses, plus the networks the operator allows
/// (`CALLBACK_ALLOW_PRIVATE_NETWORKS`, empty by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    allowed: Vec<IpNet>,
}

impl OutboundPolicy {
    /// Public addresses and the `allowed` networks.
    pub fn new(allowed: Vec<IpNet>) -> OutboundPolicy {
        OutboundPolicy { allowed }
    }

    /// The operator's allowed networks.
    pub fn allowed_networks(&self) -> &[IpNet] {
        &self.allowed
    }

    /// Whether a request may go to `ip`: it is public, or inside an allowed
    /// network (an IPv4-mapped address also by its IPv4 form, which is
    /// where the connection goes).
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_global(ip)
            || self
                .allowed
                .iter()
                .any(|net| net.contains(&ip) || net.contains(&ip.to_canonical()))
    }

    /// What can be told about a URL's host before resolving it: `Err` with
    /// the reason when it is a refused address or a `localhost` name (which
    /// passes when loopback is allowed). Other names are checked when they
    /// are resolved.
    pub fn check_host<S: AsRef<str>>(&self, host: &url::Host<S>) -> Result<(), Refusal> {
        if let Some(ip) = host_address(host) {
            return if self.allows(ip) {
                Ok(())
            } else {
                Err(Refusal::Address(ip))
            };
        }
        match host {
            url::Host::Domain(name) if is_localhost_name(name.as_ref()) => {
                if self.allows(Ipv4Addr::LOCALHOST.into())
                    || self.allows(Ipv6Addr::LOCALHOST.into())
                {
                    Ok(())
                } else {
                    Err(Refusal::Localhost)
                }
            }
            _ => Ok(()),
        }
    }
}

/// Why a host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A literal address that is neither public nor allowed.
    Address(IpAddr),
    /// `localhost` or a name under it, with loopback not allowed.
    Localhost,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Address(ip) => write!(f, "a non-global address ({ip})"),
            Refusal::Localhost => f.write_str("localhost"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn refused(addresses: &[&str]) {
        for a in addresses {
            assert!(!is_global(ip(a)), "{a} must not be global");
        }
    }

    #[test]
    fn public_addresses_are_global() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81c::200e",
            "2001:200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::8.8.8.8",
        ] {
            assert!(is_global(ip(a)), "{a} is global");
        }
    }

    #[test]
    fn unspecified_and_loopback() {
        refused(&["0.0.0.0", "127.0.0.1", "127.255.255.254", "::", "::1"]);
    }

    #[test]
    fn private_networks() {
        refused(&[
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "192.168.255.255",
        ]);
    }

    #[test]
    fn link_local() {
        refused(&["169.254.169.254", "169.254.0.1", "fe80::1", "febf::1"]);
    }

    #[test]
    fn carrier_grade_nat() {
        refused(&["100.64.0.1", "100.127.255.255"]);
    }

    #[test]
    fn this_network_and_protocol_assignments() {
        refused(&["0.1.2.3", "0.255.255.255", "192.0.0.1", "192.0.0.255"]);
    }

    #[test]
    fn benchmarking() {
        refused(&["198.18.0.1", "198.19.255.255", "2001:2::1"]);
    }

    #[test]
    fn documentation() {
        refused(&[
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "2001:db8::1",
            "3fff::1",
        ]);
    }

    #[test]
    fn reserved_and_broadcast() {
        refused(&["240.0.0.1", "254.1.2.3", "255.255.255.255"]);
    }

    #[test]
    fn multicast() {
        refused(&["224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1"]);
    }

    #[test]
    fn unique_local_and_site_local() {
        refused(&["fc00::1", "fd12:3456:789a::1", "fec0::1", "feff::1"]);
    }

    #[test]
    fn ipv6_outside_global_unicast() {
        refused(&["100::1", "64:ff9b:1::1", "5f00::1", "1000::1", "4000::1"]);
    }

    #[test]
    fn embedded_ipv4_is_judged_by_its_ipv4_address() {
        // IPv4-mapped.
        refused(&[
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
        ]);
        // IPv4-compatible.
        refused(&["::127.0.0.1", "::10.0.0.1", "::169.254.169.254"]);
        // NAT64.
        refused(&["64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe"]);
        // 6to4: 2002:7f00:1:: carries 127.0.0.1.
        refused(&["2002:7f00:1::1", "2002:a00:1::", "2002:a9fe:a9fe::1"]);
        assert_eq!(
            embedded_ipv4("2002:c000:0204::1".parse().unwrap()),
            Some(Ipv4Addr::new(192, 0, 2, 4))
        );
        assert_eq!(
            embedded_ipv4("::ffff:1.2.3.4".parse().unwrap()),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(embedded_ipv4("2606:4700::1".parse().unwrap()), None);
    }

    #[test]
    fn localhost_names() {
        for name in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "api.localhost",
            "a.b.localhost.",
        ] {
            assert!(is_localhost_name(name), "{name}");
        }
        for name in ["localhost.example", "mylocalhost", "example.com"] {
            assert!(!is_localhost_name(name), "{name}");
        }
    }

    #[test]
    fn the_allow_list_lets_chosen_networks_through() {
        let nets =
            |list: &[&str]| OutboundPolicy::new(list.iter().map(|n| n.parse().unwrap()).collect());
        let none = OutboundPolicy::default();
        assert!(none.allows(ip("8.8.8.8")));
        assert!(!none.allows(ip("127.0.0.1")) && !none.allows(ip("10.1.2.3")));

        let policy = nets(&["127.0.0.0/8", "::1/128", "10.1.0.0/16"]);
        for a in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "10.1.2.3",
            "::ffff:127.0.0.1",
            "8.8.8.8",
        ] {
            assert!(policy.allows(ip(a)), "{a}");
        }
        for a in [
            "10.2.0.1",
            "169.254.169.254",
            "192.168.1.1",
            "fe80::1",
            "::2",
        ] {
            assert!(!policy.allows(ip(a)), "{a}");
        }
        assert_eq!(policy.allowed_networks().len(), 3);
    }

    #[test]
    fn hosts_are_checked_before_resolution() {
        let host = |url: &str| url::Url::parse(url).unwrap().host().unwrap().to_owned();
        let none = OutboundPolicy::default();
        let check = |policy: &OutboundPolicy, url: &str| policy.check_host(&host(url));
        assert_eq!(
            check(&none, "http://127.0.0.1:9/x"),
            Err(Refusal::Address(ip("127.0.0.1")))
        );
        assert_eq!(check(&none, "http://localhost/"), Err(Refusal::Localhost));
        assert_eq!(
            check(&none, "http://Api.LocalHost./"),
            Err(Refusal::Localhost)
        );
        // Names are resolved later; public addresses pass.
        assert_eq!(check(&none, "https://client.example/hook"), Ok(()));
        assert_eq!(check(&none, "https://8.8.8.8/hook"), Ok(()));
        // The url crate reads every IPv4 spelling as the address it is.
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
        ] {
            assert!(
                matches!(check(&none, url), Err(Refusal::Address(a)) if a.to_canonical() == ip("127.0.0.1")),
                "{url}: {:?}",
                host(url)
            );
        }
        let loopback = OutboundPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(check(&loopback, "http://localhost/"), Ok(()));
        assert_eq!(check(&loopback, "http://2130706433/"), Ok(()));
        assert_eq!(
            check(&loopback, "http://[::1]/"),
            Err(Refusal::Address(ip("::1")))
        );
    }
}
