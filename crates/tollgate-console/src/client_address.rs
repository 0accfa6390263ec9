//! Which address a Console request comes from, for the sign-in limit per client: the
//! connection's peer, or, when the peer is one of the configured trusted proxies, the
//! address that proxy put in its forwarding header. A header from any other peer is
//! ignored, so nobody can pick a fresh address per guess by writing one; and without a
//! trusted proxy every request behind a proxy would share the proxy's address, so one
//! guesser would lock everyone out.
//!
//! Pure: parsing the configuration and choosing the address take strings and addresses in
//! and do no I/O.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};

/// The header proxies put the client's address in when nothing else is configured.
const DEFAULT_HEADER: &str = "x-forwarded-for";

/// Proxies whose forwarding header is believed, and the header they write.
#[derive(Clone, Debug)]
pub struct TrustedProxies {
    networks: Vec<Network>,
    header: HeaderName,
}

impl Default for TrustedProxies {
    fn default() -> TrustedProxies {
        TrustedProxies {
            networks: Vec::new(),
            header: HeaderName::from_static(DEFAULT_HEADER),
        }
    }
}

/// An address, or a network written as `address/prefix-length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix_length: u8,
}

impl Network {
    fn parse(text: &str) -> Result<Network, String> {
        let (address_text, prefix_text) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address_text
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is not an IP address or network"))?;
        let address = address.to_canonical();
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix_length = match prefix_text {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|length| *length <= bits)
                .ok_or_else(|| format!("'{text}' has a prefix length outside 0..={bits}"))?,
        };
        Ok(Network {
            address,
            prefix_length,
        })
    }

    fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => same_prefix(
                u128::from(network.to_bits()) << 96,
                u128::from(address.to_bits()) << 96,
                self.prefix_length,
            ),
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                same_prefix(network.to_bits(), address.to_bits(), self.prefix_length)
            }
            _ => false,
        }
    }
}

/// Whether two addresses, aligned to the top bits of a `u128`, share their first
/// `prefix_length` bits.
fn same_prefix(network: u128, address: u128, prefix_length: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix_length)).unwrap_or(0);
    network & mask == address & mask
}

impl TrustedProxies {
    /// `networks`: addresses or networks (`10.0.0.0/8`, `::1`), separated by commas or
    /// spaces; empty trusts no one. `header`: the header those proxies write the client's
    /// address in (`x-forwarded-for`, or one holding a single address such as `x-real-ip`);
    /// empty means `x-forwarded-for`.
    pub fn parse(networks: &str, header: &str) -> Result<TrustedProxies, String> {
        let networks = networks
            .split([',', ' '])
            .filter(|text| !text.trim().is_empty())
            .map(Network::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let header = header.trim();
        let header = if header.is_empty() {
            HeaderName::from_static(DEFAULT_HEADER)
        } else {
            HeaderName::try_from(header.to_ascii_lowercase())
                .map_err(|_| format!("'{header}' is not a header name"))?
        };
        Ok(TrustedProxies { networks, header })
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(address))
    }

    /// The client's address for a request from `peer` with these headers.
    pub(crate) fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all(&self.header)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        forwarded_client(peer, &hops.join(","), |address| self.trusts(address))
    }
}

/// Walks a forwarding list from its right end (the hop nearest to us, written by the
/// trusted peer) leftwards past trusted proxies: the first address that is not one is the
/// client. What lies further left was written by the client and is never read. A hop that
/// cannot be read stops the walk at the last address known.
fn forwarded_client(peer: IpAddr, forwarded: &str, trusts: impl Fn(IpAddr) -> bool) -> IpAddr {
    let mut client = peer;
    for hop in forwarded.rsplit(',').map(str::trim).filter(|hop| !hop.is_empty()) {
        let Some(address) = hop_address(hop) else {
            return client;
        };
        client = address;
        if !trusts(address) {
            return address;
        }
    }
    client
}

/// An address as proxies write it: `203.0.113.7`, `2001:db8::1`, or with a port
/// (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

#[cfg(test)]
mod tests;
