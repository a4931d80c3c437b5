//! Which address a call comes from, for limits per client address.
//!
//! The peer's address, unless the peer is a proxy the operator trusts
//! (`TRUSTED_PROXIES`): then the proxy's `x-forwarded-for` says who called
//! it. Each proxy appends the address it saw, so the list is read from the
//! right, skipping trusted proxies; the first entry that is not trusted is
//! the client. Entries further left were written by the client itself and
//! are never believed. A malformed entry ends the walk at the last hop
//! known to be real, the trusted proxy that forwarded it.

use std::net::IpAddr;

use tonic::metadata::MetadataMap;

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Parses `<address>/<prefix length>`, or a bare address (one host).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max_len = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max_len,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= max_len)
                .ok_or_else(|| {
                    format!("{text:?}: the prefix length must be from 0 to {max_len}")
                })?,
        };
        Ok(Self {
            network: mask(network, prefix_len),
            prefix_len,
        })
    }

    /// Whether `address` is inside the block. An IPv4-mapped IPv6 address
    /// counts as the IPv4 address it maps.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        address.is_ipv4() == self.network.is_ipv4()
            && mask(address, self.prefix_len) == self.network
    }
}

/// `address` with all but its first `prefix_len` bits cleared.
fn mask(address: IpAddr, prefix_len: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack listener reports
/// for IPv4 peers) as plain IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// The proxies whose `x-forwarded-for` is believed. Empty by default: then
/// the peer's address is always the client's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses a comma-separated list of CIDR blocks or addresses; an empty
    /// text trusts no one.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `address` is a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(address))
    }

    /// The client's address: the peer's, or, when the peer is trusted, the
    /// right-most `x-forwarded-for` entry that is not trusted. `None` when
    /// there is no peer address (a Unix socket, an in-process test).
    pub fn client_address(&self, peer: Option<IpAddr>, metadata: &MetadataMap) -> Option<IpAddr> {
        let mut client = canonical(peer?);
        if !self.contains(client) {
            return Some(client);
        }
        // Several headers read as one list, in order.
        let forwarded: Vec<&str> = metadata
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.to_str().ok().into_iter().flat_map(|v| v.split(',')))
            .collect();
        for entry in forwarded.iter().rev() {
            let Some(hop) = parse_forwarded_entry(entry) else {
                return Some(client);
            };
            client = hop;
            if !self.contains(client) {
                return Some(client);
            }
        }
        // Every hop is trusted: the left-most is as close to the client as
        // anyone can tell.
        Some(client)
    }
}

/// One `x-forwarded-for` entry: an address, possibly with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|socket| canonical(socket.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(values: &[&str]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for value in values {
            metadata.append("x-forwarded-for", value.parse().expect("ascii"));
        }
        metadata
    }

    fn proxies(text: &str) -> TrustedProxies {
        TrustedProxies::parse(text).expect("parses")
    }

    #[test]
    fn cidrs_parse_and_match() {
        let block = Cidr::parse("10.1.0.0/16").expect("parses");
        assert!(block.contains(ip("10.1.255.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(block.contains(ip("::ffff:10.1.0.9")));
        assert!(
            Cidr::parse("10.1.2.3/16")
                .expect("host bits are cleared")
                .contains(ip("10.1.9.9"))
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("203.0.113.1"))
        );
        assert!(
            !Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("2001:db8::1"))
        );
        let v6 = Cidr::parse("2001:db8::/32").expect("parses");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let host = Cidr::parse("192.0.2.1").expect("a bare address");
        assert!(host.contains(ip("192.0.2.1")) && !host.contains(ip("192.0.2.2")));
    }

    #[test]
    fn malformed_cidrs_are_refused() {
        for text in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "10.0.0.0/-1",
            "proxy",
        ] {
            assert!(Cidr::parse(text).is_err(), "{text:?}");
        }
        assert!(TrustedProxies::parse("10.0.0.0/8, bad").is_err());
        assert_eq!(
            TrustedProxies::parse(" , ").expect("empty"),
            TrustedProxies::default()
        );
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_sends() {
        let spoofed = forwarded(&["1.2.3.4"]);
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_address(Some(ip("203.0.113.9")), &spoofed),
            Some(ip("203.0.113.9"))
        );
        let some = proxies("10.0.0.0/8");
        assert_eq!(
            some.client_address(Some(ip("203.0.113.9")), &spoofed),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(some.client_address(None, &spoofed), None);
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_entry_is_the_client() {
        let trusted = proxies("10.0.0.0/8,192.168.1.1");
        let peer = Some(ip("10.0.0.5"));
        // The client prepended a made-up address; the proxy appended the real one.
        let spoofed = forwarded(&["1.2.3.4, 198.51.100.7"]);
        assert_eq!(
            trusted.client_address(peer, &spoofed),
            Some(ip("198.51.100.7"))
        );
        // Two proxies: the inner one's own entry is skipped.
        let chained = forwarded(&["1.2.3.4", "198.51.100.7, 192.168.1.1"]);
        assert_eq!(
            trusted.client_address(peer, &chained),
            Some(ip("198.51.100.7"))
        );
        // Ports and mapped addresses.
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["[2001:db8::1]:443"])),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["198.51.100.7:5000"])),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            trusted.client_address(
                Some(ip("::ffff:10.0.0.5")),
                &forwarded(&["::ffff:198.51.100.7"])
            ),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn missing_malformed_or_all_trusted_entries_fall_back_to_the_last_real_hop() {
        let trusted = proxies("10.0.0.0/8");
        let peer = Some(ip("10.0.0.5"));
        assert_eq!(trusted.client_address(peer, &MetadataMap::new()), peer);
        assert_eq!(trusted.client_address(peer, &forwarded(&["garbage"])), peer);
        assert_eq!(trusted.client_address(peer, &forwarded(&[""])), peer);
        // A malformed entry left of a good one is never reached.
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["unknown, 198.51.100.7"])),
            Some(ip("198.51.100.7"))
        );
        // A malformed entry right of a trusted hop: that hop is the answer.
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["198.51.100.7, 10.9.9.9, nonsense"])),
            peer
        );
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["198.51.100.7, 10.9.9.9, _"])),
            peer
        );
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["10.1.1.1, 10.2.2.2"])),
            Some(ip("10.1.1.1"))
        );
    }
}
