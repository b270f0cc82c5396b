//! The egress policy: every request to an address a tenant or a third party
//! chose (an LLM key's base URL now; tool webhooks and media URLs later)
//! goes through it. Deny by default, in development too.
//!
//! Refused: loopback, private, link-local (cloud metadata lives at
//! 169.254.169.254), shared (carrier-grade NAT), multicast, unspecified,
//! broadcast, reserved and documentation ranges, in IPv4 and IPv6, including
//! IPv4 addresses embedded in IPv6 (mapped, NAT64). `CREWMESH_EGRESS_ALLOW`
//! opens exceptions: CIDRs (`10.1.0.0/16`, a self-hosted vLLM's network) and
//! `host:port` entries (`ollama.internal:11434`), a named host then being
//! reachable on its listed ports only.
//!
//! The check happens where it cannot be dodged:
//! - an IP literal (in any spelling the URL parser normalizes: `127.1`,
//!   `2130706433`, `[::1]`) is checked before the request;
//! - a host name is checked when it is resolved, by the client's own
//!   resolver, and the connection is made to exactly the addresses checked —
//!   so DNS rebinding cannot swap an address between check and connect;
//! - redirects are not followed, proxies from the environment are not used,
//!   and response bodies are read up to a cap.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use crate::config::{ConfigError, var};

pub const ALLOW_ENV: &str = "CREWMESH_EGRESS_ALLOW";
/// The most a response body may hold: past it the answer is refused.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("must be an http:// or https:// URL")]
    NotHttp,
    #[error("must not carry a user name or password; send credentials as the key")]
    Userinfo,
    #[error(
        "points at a private, loopback, link-local or metadata address; \
         an operator can allow it with {ALLOW_ENV}"
    )]
    Forbidden,
    #[error("names an internal host; an operator can allow it with {ALLOW_ENV}")]
    InternalName,
}

/// A network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What an operator opened; empty means nothing internal is reachable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    networks: Vec<Cidr>,
    /// (lower-case host, port).
    hosts: Vec<(String, u16)>,
}

/// An IPv4 address hidden in an IPv6 one is judged as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) carries the IPv4 address in its last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let bits = u128::from(v6) as u32;
                return IpAddr::V4(Ipv4Addr::from(bits));
            }
            IpAddr::V6(v6)
        }
        v4 @ IpAddr::V4(_) => v4,
    }
}

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn v6_forbidden(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed internally)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || first == 0x0100 // discard-only
}

/// Whether `ip` is an address no tenant-chosen request may reach.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_forbidden(v4),
        IpAddr::V6(v6) => v6_forbidden(v6),
    }
}

/// Names that are internal by construction, whatever they resolve to today.
fn internal_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".local")
        || host.ends_with(".internal")
        || host.ends_with(".cluster.local")
        || host.ends_with(".svc")
        || host == "metadata"
        || !host.contains('.')
}

impl EgressPolicy {
    /// Nothing internal is reachable.
    pub fn deny_all() -> EgressPolicy {
        EgressPolicy::default()
    }

    /// `CREWMESH_EGRESS_ALLOW`: comma-separated CIDRs and `host:port` entries.
    pub fn from_env() -> Result<EgressPolicy, ConfigError> {
        EgressPolicy::parse(&var(ALLOW_ENV).unwrap_or_default()).map_err(|reason| {
            ConfigError::Invalid {
                name: ALLOW_ENV,
                reason,
            }
        })
    }

    pub fn parse(text: &str) -> Result<EgressPolicy, String> {
        let mut policy = EgressPolicy::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Some(cidr) = Cidr::parse(entry) {
                policy.networks.push(cidr);
                continue;
            }
            let parsed = entry
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .filter(|(host, _)| {
                    !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                });
            match parsed {
                Some((host, port)) => policy.hosts.push((host.to_ascii_lowercase(), port)),
                None => {
                    return Err(format!(
                        "`{entry}` is neither a CIDR (10.0.0.0/8, 127.0.0.1) nor host:port"
                    ));
                }
            }
        }
        Ok(policy)
    }

    fn host_entry(&self, host: &str) -> impl Iterator<Item = u16> + '_ {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts
            .iter()
            .filter(move |(h, _)| *h == host)
            .map(|(_, port)| *port)
    }

    /// Whether a connection to `addr` (reached as `host`) may be made.
    fn allows(&self, host: Option<&str>, addr: SocketAddr) -> bool {
        if !is_internal(addr.ip()) || self.networks.iter().any(|n| n.contains(addr.ip())) {
            return true;
        }
        // Resolved addresses carry no port yet (the URL's is set later): a
        // named host's port was checked against its entry before the request.
        match host {
            Some(host) => self.host_entry(host).next().is_some(),
            None => false,
        }
    }

    /// The checks a URL can pass before anything is resolved or connected:
    /// scheme, no credentials, an IP literal's address, a listed host's port.
    /// Host names that are internal by construction (`localhost`, `*.internal`,
    /// single labels) are refused unless listed — what `strict` adds for
    /// validating input at the door; at request time, resolution decides.
    pub fn check_url(&self, url: &str, strict: bool) -> Result<reqwest::Url, EgressError> {
        let parsed = reqwest::Url::parse(url.trim()).map_err(|_| EgressError::NotHttp)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EgressError::NotHttp);
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(EgressError::Userinfo);
        }
        let port = parsed.port_or_known_default().ok_or(EgressError::NotHttp)?;
        match parsed.host() {
            None => Err(EgressError::NotHttp),
            Some(url::Host::Ipv4(ip)) => self
                .check_literal(IpAddr::V4(ip), port)
                .map(|()| parsed.clone()),
            Some(url::Host::Ipv6(ip)) => self
                .check_literal(IpAddr::V6(ip), port)
                .map(|()| parsed.clone()),
            Some(url::Host::Domain(host)) => {
                let listed: Vec<u16> = self.host_entry(host).collect();
                if !listed.is_empty() {
                    // A listed host is reachable on its listed ports only.
                    return if listed.contains(&port) {
                        Ok(parsed.clone())
                    } else {
                        Err(EgressError::Forbidden)
                    };
                }
                if strict && internal_name(&host.to_ascii_lowercase()) {
                    return Err(EgressError::InternalName);
                }
                Ok(parsed.clone())
            }
        }
    }

    fn check_literal(&self, ip: IpAddr, port: u16) -> Result<(), EgressError> {
        let host = ip.to_string();
        let listed = self.host_entry(&host).any(|p| p == port);
        if listed || self.allows(None, SocketAddr::new(ip, port)) {
            Ok(())
        } else {
            Err(EgressError::Forbidden)
        }
    }

    /// An HTTP client that enforces the policy on every connection it makes.
    pub fn client(&self, builder: reqwest::ClientBuilder) -> reqwest::Result<reqwest::Client> {
        builder
            .dns_resolver(Arc::new(Resolver {
                policy: self.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
    }
}

/// Resolves with the system resolver and keeps only what the policy allows;
/// the client connects to exactly these addresses.
struct Resolver {
    policy: EgressPolicy,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "every address of {0} is private, loopback, link-local or metadata; an operator can allow it with {ALLOW_ENV}"
)]
pub struct ForbiddenAddress(String);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| policy.allows(Some(&host), *addr))
                .collect();
            if allowed.is_empty() {
                tracing::warn!(host = %host, "egress refused: the host resolves to internal addresses only");
                return Err(
                    Box::new(ForbiddenAddress(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a failed request was refused by the policy (rather than by the network).
pub fn is_forbidden(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<ForbiddenAddress>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// The body, read up to `max` bytes: a third party's answer is untrusted
/// input, and an endless one must not exhaust memory.
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn internal_ranges_are_refused_in_both_families() {
        for internal in [
            "127.0.0.1",
            "127.255.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "fec0::1",
        ] {
            assert!(is_internal(ip(internal)), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip(public)), "{public}");
        }
    }

    #[test]
    fn every_spelling_of_loopback_is_caught_before_connecting() {
        let deny = EgressPolicy::deny_all();
        for url in [
            "http://127.0.0.1:50051/",
            "http://127.1:50051/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://[::1]:6379/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0/",
        ] {
            assert_eq!(
                deny.check_url(url, false),
                Err(EgressError::Forbidden),
                "{url}"
            );
        }
        assert_eq!(
            deny.check_url("http://localhost:8080/", true),
            Err(EgressError::InternalName)
        );
        assert_eq!(
            deny.check_url("http://redis/", true),
            Err(EgressError::InternalName)
        );
        assert_eq!(
            deny.check_url("http://metadata.google.internal/", true),
            Err(EgressError::InternalName)
        );
        assert_eq!(
            deny.check_url("https://user:pw@api.openai.com/v1", true),
            Err(EgressError::Userinfo)
        );
        assert_eq!(
            deny.check_url("ftp://api.openai.com/", true),
            Err(EgressError::NotHttp)
        );
        assert_eq!(deny.check_url("not a url", true), Err(EgressError::NotHttp));
        assert!(deny.check_url("https://api.openai.com/v1", true).is_ok());
        // At request time the resolver judges names, not their spelling.
        assert!(deny.check_url("http://localhost:8080/", false).is_ok());
    }

    #[test]
    fn the_allowlist_opens_networks_and_named_ports_only() {
        let policy =
            EgressPolicy::parse(" 10.1.0.0/16, 127.0.0.1:41234 ,ollama.internal:11434,::1 ")
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(policy.check_url("http://10.1.2.3:8000/v1", true).is_ok());
        assert_eq!(
            policy.check_url("http://10.2.0.1/", true),
            Err(EgressError::Forbidden)
        );
        assert!(policy.check_url("http://127.0.0.1:41234/v1", true).is_ok());
        assert_eq!(
            policy.check_url("http://127.0.0.1:50051/", true),
            Err(EgressError::Forbidden)
        );
        assert!(
            policy
                .check_url("http://ollama.internal:11434/v1", true)
                .is_ok()
        );
        assert_eq!(
            policy.check_url("http://ollama.internal:6379/", true),
            Err(EgressError::Forbidden),
            "a listed host on another port"
        );
        assert!(
            policy.check_url("http://[::1]:9/", true).is_ok(),
            "a bare address is a /32 or /128"
        );
        assert!(policy.allows(
            Some("ollama.internal"),
            "10.9.9.9:11434".parse().unwrap_or_else(|e| panic!("{e}"))
        ));
        assert!(!policy.allows(
            Some("evil.example"),
            "10.9.9.9:80".parse().unwrap_or_else(|e| panic!("{e}"))
        ));
        assert!(EgressPolicy::parse("10.0.0.0/33").is_err());
        assert!(EgressPolicy::parse("host:port").is_err());
        assert_eq!(
            EgressPolicy::parse("").unwrap_or_else(|e| panic!("{e}")),
            EgressPolicy::deny_all()
        );
    }
}
