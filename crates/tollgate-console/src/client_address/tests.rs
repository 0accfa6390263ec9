//! The client's address: a forwarding header counts only from a trusted proxy, and only
//! its part written by trusted proxies.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};

use crate::client_address::TrustedProxies;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn headers(name: &'static str, values: &[&'static str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(name, HeaderValue::from_static(value));
    }
    headers
}

#[test]
fn without_trusted_proxies_the_peer_is_the_client() {
    let trusted = TrustedProxies::default();
    let forged = headers("x-forwarded-for", &["192.0.2.1"]);
    assert_eq!(trusted.client_address(ip("127.0.0.1"), &forged), ip("127.0.0.1"));
}

#[test]
fn an_untrusted_peer_cannot_name_another_client() {
    let trusted = TrustedProxies::parse("10.0.0.0/8", "").unwrap();
    let forged = headers("x-forwarded-for", &["192.0.2.1"]);
    assert_eq!(
        trusted.client_address(ip("198.51.100.4"), &forged),
        ip("198.51.100.4")
    );
}

#[test]
fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
    let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1", "").unwrap();
    // The client wrote the leftmost entry itself; the proxies appended the rest.
    let chain = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.7", "10.1.2.3"]);
    assert_eq!(trusted.client_address(ip("127.0.0.1"), &chain), ip("203.0.113.7"));
    let with_port = headers("x-forwarded-for", &["[2001:db8::7]:4711"]);
    assert_eq!(
        trusted.client_address(ip("10.9.9.9"), &with_port),
        ip("2001:db8::7")
    );
    let missing = HeaderMap::new();
    assert_eq!(trusted.client_address(ip("10.9.9.9"), &missing), ip("10.9.9.9"));
    let unreadable = headers("x-forwarded-for", &["not-an-address"]);
    assert_eq!(
        trusted.client_address(ip("10.9.9.9"), &unreadable),
        ip("10.9.9.9")
    );
}

#[test]
fn the_header_can_be_another_one() {
    let trusted = TrustedProxies::parse("::1", "X-Real-IP").unwrap();
    let real_ip = headers("x-real-ip", &["203.0.113.9"]);
    assert_eq!(trusted.client_address(ip("::1"), &real_ip), ip("203.0.113.9"));
    let ignored = headers("x-forwarded-for", &["203.0.113.9"]);
    assert_eq!(trusted.client_address(ip("::1"), &ignored), ip("::1"));
}

#[test]
fn networks_match_by_prefix_and_mapped_addresses_as_ipv4() {
    let trusted = TrustedProxies::parse("172.16.0.0/12 fd00::/8", "").unwrap();
    let forwarded = headers("x-forwarded-for", &["203.0.113.7"]);
    for proxy in ["172.16.0.1", "172.31.255.255", "::ffff:172.20.0.1", "fd12::1"] {
        assert_eq!(
            trusted.client_address(ip(proxy), &forwarded),
            ip("203.0.113.7"),
            "{proxy}"
        );
    }
    for stranger in ["172.32.0.1", "fe80::1"] {
        assert_eq!(
            trusted.client_address(ip(stranger), &forwarded),
            ip(stranger),
            "{stranger}"
        );
    }
    let everyone = TrustedProxies::parse("0.0.0.0/0", "").unwrap();
    assert_eq!(
        everyone.client_address(ip("192.0.2.1"), &forwarded),
        ip("203.0.113.7")
    );
}

#[test]
fn bad_configuration_is_refused() {
    assert!(TrustedProxies::parse("10.0.0.0/33", "").is_err());
    assert!(TrustedProxies::parse("proxy.example.com", "").is_err());
    assert!(TrustedProxies::parse("", "bad header").is_err());
    assert!(TrustedProxies::parse("", "").is_ok());
}
