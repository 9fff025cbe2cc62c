//! Which endpoint URLs the platform posts to.
//!
//! A merchant chooses the URL, so without rules it could make the platform call its own
//! network: a database's HTTP port, a cloud metadata address. [`check_url`] checks the URL's
//! form; [`resolve_checked`] resolves its host at creation time and refuses it if any address
//! is not public; [`SafeResolver`] is the sender's DNS resolver, which drops such addresses on
//! every connection, so a name that resolved to a public address at creation cannot later be
//! pointed at a private one.
//!
//! Loopback addresses (and plain HTTP to them) are allowed only where the caller says so: in
//! tests and local development, never in production.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Why an endpoint URL was refused. The texts read after `url: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is {0} bytes long; at most 2048 are allowed")]
    TooLong(usize),
    #[error("is not a valid absolute URL ({0})")]
    Parse(String),
    #[error("scheme {0:?} is not allowed; endpoints use https")]
    Scheme(String),
    #[error("must not carry a user name or password")]
    Userinfo,
    #[error("has no host")]
    NoHost,
    #[error("host {0} is a loopback name; endpoints must be reachable on the internet")]
    LoopbackName(String),
    #[error("address {0} is private, loopback or reserved; endpoints must have public addresses")]
    RefusedAddress(IpAddr),
    #[error(
        "host {host} resolves to {addr}, which is private, loopback or reserved; endpoints must have public addresses"
    )]
    ResolvesToRefused { host: String, addr: IpAddr },
    #[error("host {host} could not be resolved ({reason})")]
    Unresolved { host: String, reason: String },
    #[error("host {0} resolves to no address")]
    NoAddress(String),
}

/// Checks an endpoint URL's form: at most 2048 bytes; absolute; `https` (or `http` when
/// `allow_loopback_http` is set and the host is a loopback address or `localhost`); no user
/// name or password; a host. A host that is an IP address must be one [`allowed`] accepts, and
/// a `localhost` name is refused unless `allow_loopback_http` is set. Names are not resolved
/// here: see [`resolve_checked`].
pub fn check_url(raw: &str, allow_loopback_http: bool) -> Result<Url, UrlError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(UrlError::TooLong(raw.len()));
    }
    let url = Url::parse(raw).map_err(|e| UrlError::Parse(e.to_string()))?;
    let loopback_host = match host_ip(&url) {
        Some(ip) => {
            if !allowed(ip, allow_loopback_http) {
                return Err(UrlError::RefusedAddress(ip));
            }
            ip.is_loopback()
        }
        None => match url.host_str() {
            Some(host) if is_localhost_name(host) => {
                if !allow_loopback_http {
                    return Err(UrlError::LoopbackName(host.to_owned()));
                }
                true
            }
            _ => false,
        },
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback_http && loopback_host => {}
        other => return Err(UrlError::Scheme(other.to_owned())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Userinfo);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    Ok(url)
}

/// The URL's host when it is an IP address (IPv6 without its brackets).
fn host_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.parse().ok()
}

/// `localhost` and the names under it, which resolve to loopback (RFC 6761).
fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// IPv4 ranges never posted to: "this network", private, shared (CGNAT), link-local, IETF
/// protocol assignments, documentation, 6to4 relay, benchmarking, multicast, reserved and
/// broadcast. Loopback is handled apart.
const REFUSED_V4: [Ipv4Net; 14] = [
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 88, 99, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
    // 240.0.0.0/4 holds 255.255.255.255, the broadcast address.
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
];

const LOOPBACK_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);

/// IPv6 ranges never posted to: discard-only, local-use NAT64, Teredo, documentation (both),
/// unique-local, link-local, the old site-local, and multicast. `::` and `::1` and the forms
/// that embed an IPv4 address are handled apart.
const REFUSED_V6: [Ipv6Net; 9] = [
    Ipv6Net::new_assert(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),
    Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32),
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    Ipv6Net::new_assert(Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
    Ipv6Net::new_assert(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    Ipv6Net::new_assert(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
    Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// Whether the platform may post to `ip`: not private (10/8, 172.16/12, 192.168/16), not
/// loopback (unless `allow_loopback`), not link-local (169.254/16, fe80::/10), not unique-local
/// (fc00::/7), not shared (100.64/10), not unspecified, multicast or broadcast, not in a
/// documentation or other reserved range, not in 0/8. IPv6 forms that carry an IPv4 address
/// (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4
/// `2002:aabb:ccdd::`) are judged by that address.
pub fn allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => allowed_v4(v4, allow_loopback),
        IpAddr::V6(v6) => allowed_v6(v6, allow_loopback),
    }
}

fn allowed_v4(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    if LOOPBACK_V4.contains(&ip) {
        return allow_loopback;
    }
    !REFUSED_V4.iter().any(|net| net.contains(&ip))
}

fn allowed_v6(ip: Ipv6Addr, allow_loopback: bool) -> bool {
    if ip == Ipv6Addr::LOCALHOST {
        return allow_loopback;
    }
    if ip.is_unspecified() {
        return false;
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // IPv4-mapped (::ffff:0:0/96) and IPv4-compatible (::/96, deprecated).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return allowed_v4(embedded(s[6], s[7]), allow_loopback);
    }
    // NAT64 well-known prefix (64:ff9b::/96).
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return allowed_v4(embedded(s[6], s[7]), false);
    }
    // 6to4 (2002::/16): the IPv4 address follows the prefix.
    if s[0] == 0x2002 {
        return allowed_v4(embedded(s[1], s[2]), false);
    }
    !REFUSED_V6.iter().any(|net| net.contains(&ip))
}

/// Resolves the URL's host (an IP address stands for itself) and refuses it, naming the
/// address, if any address it resolves to is one [`allowed`] refuses; for the checks when an
/// endpoint is created or its URL changed. The addresses carry the URL's port.
pub async fn resolve_checked(url: &Url, allow_loopback: bool) -> Result<Vec<SocketAddr>, UrlError> {
    let port = url.port_or_known_default().unwrap_or(443);
    if let Some(ip) = host_ip(url) {
        return if allowed(ip, allow_loopback) {
            Ok(vec![SocketAddr::new(ip, port)])
        } else {
            Err(UrlError::RefusedAddress(ip))
        };
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or(UrlError::NoHost)?;
    if !allow_loopback && is_localhost_name(host) {
        return Err(UrlError::LoopbackName(host.to_owned()));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| UrlError::Unresolved { host: host.to_owned(), reason: e.to_string() })?
        .collect();
    if addrs.is_empty() {
        return Err(UrlError::NoAddress(host.to_owned()));
    }
    if let Some(bad) = addrs.iter().find(|a| !allowed(a.ip(), allow_loopback)) {
        return Err(UrlError::ResolvesToRefused { host: host.to_owned(), addr: bad.ip() });
    }
    Ok(addrs)
}

/// A DNS resolver for the sender's HTTP client: resolves with the system resolver (through
/// tokio) and keeps only the addresses [`allowed`] accepts, failing when none is left.
///
/// A URL whose host is an IP address never reaches a resolver; the sender checks those itself.
#[derive(Debug, Clone, Copy)]
pub struct SafeResolver {
    allow_loopback: bool,
}

impl SafeResolver {
    pub fn new(allow_loopback: bool) -> SafeResolver {
        SafeResolver { allow_loopback }
    }
}

impl Resolve for SafeResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| UrlError::Unresolved { host: host.clone(), reason: e.to_string() })?
                .collect();
            let Some(first) = found.first().copied() else {
                return Err(UrlError::NoAddress(host).into());
            };
            let kept: Vec<SocketAddr> = found.into_iter().filter(|a| allowed(a.ip(), allow_loopback)).collect();
            if kept.is_empty() {
                return Err(UrlError::ResolvesToRefused { host, addr: first.ip() }.into());
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_addresses() {
        let refused = [
            // "this network" and unspecified
            "0.0.0.0",
            "0.1.2.3",
            // private
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.0.1",
            "192.168.255.255",
            // shared (CGNAT)
            "100.64.0.1",
            "100.127.255.255",
            // link-local, including the cloud metadata address
            "169.254.169.254",
            "169.254.0.1",
            // loopback
            "127.0.0.1",
            "127.255.255.254",
            // IETF protocol assignments, documentation, 6to4 relay, benchmarking
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            // multicast, reserved, broadcast
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "2001::1",
            "64:ff9b:1::1",
            // IPv6 forms of refused IPv4 addresses
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:192.168.1.1",
            "::ffff:0.0.0.0",
            "::10.0.0.1",
            "::127.0.0.1",
            "::192.168.1.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "2002:c0a8:0101::1",
            "2002:7f00:0001::",
        ];
        for a in refused {
            assert!(!allowed(ip(a), false), "{a} should be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.255.255",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
            "fbff:ffff::1",
        ];
        for a in public {
            assert!(allowed(ip(a), false), "{a} should be allowed");
        }
    }

    #[test]
    fn loopback_only_when_allowed_and_nothing_else_with_it() {
        for a in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(allowed(ip(a), true), "{a}");
            assert!(!allowed(ip(a), false), "{a}");
        }
        for a in ["10.0.0.1", "169.254.169.254", "fe80::1", "0.0.0.0", "::", "64:ff9b::127.0.0.1"] {
            assert!(!allowed(ip(a), true), "{a} stays refused with loopback allowed");
        }
    }

    #[test]
    fn good_urls_pass_unchanged_in_meaning() {
        let u = check_url("https://hooks.example.com/autodebit?tenant=7", false).unwrap();
        assert_eq!(u.host_str(), Some("hooks.example.com"));
        assert_eq!(u.query(), Some("tenant=7"));
        assert!(check_url("https://8.8.8.8:8443/x", false).is_ok());
        assert!(check_url("https://[2606:4700:4700::1111]/x", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
        assert!(check_url("http://[::1]:8080/hook", true).is_ok());
        assert!(check_url("http://localhost:8080/hook", true).is_ok());
        assert!(check_url("https://localhost/hook", true).is_ok());
    }

    #[test]
    fn refused_urls_say_why() {
        let long = format!("https://example.com/{}", "a".repeat(2030));
        let cases: &[(&str, bool, &str)] = &[
            ("not a url", false, "is not a valid absolute URL (relative URL without a base)"),
            ("/relative/path", false, "is not a valid absolute URL (relative URL without a base)"),
            ("http://example.com/hook", false, "scheme \"http\" is not allowed; endpoints use https"),
            ("http://example.com/hook", true, "scheme \"http\" is not allowed; endpoints use https"),
            ("ftp://example.com/hook", false, "scheme \"ftp\" is not allowed; endpoints use https"),
            ("https://user:pw@example.com/", false, "must not carry a user name or password"),
            ("https://user@example.com/", false, "must not carry a user name or password"),
            ("mailto:someone@example.com", false, "scheme \"mailto\" is not allowed; endpoints use https"),
            ("https://10.1.2.3/", false, "address 10.1.2.3 is private, loopback or reserved"),
            ("https://169.254.169.254/latest/meta-data", true, "address 169.254.169.254 is private"),
            ("https://[::ffff:10.0.0.1]/", false, "address ::ffff:10.0.0.1 is private"),
            ("http://127.0.0.1:8080/", false, "address 127.0.0.1 is private, loopback or reserved"),
            ("https://127.1/", false, "address 127.0.0.1 is private"),
            ("https://0x7f000001/", false, "address 127.0.0.1 is private"),
            ("https://localhost/", false, "host localhost is a loopback name"),
            ("https://api.LOCALHOST./", false, "host api.localhost. is a loopback name"),
            (&long, false, "is 2050 bytes long; at most 2048 are allowed"),
        ];
        for (raw, allow, want) in cases {
            let err = check_url(raw, *allow).expect_err(raw).to_string();
            assert!(err.starts_with(want), "{raw}: {err:?} should start with {want:?}");
        }
        // A URL of exactly the limit passes.
        let edge = format!("https://example.com/{}", "a".repeat(2048 - 20));
        assert_eq!(edge.len(), 2048);
        assert!(check_url(&edge, false).is_ok());
    }

    #[test]
    fn https_without_a_host_is_refused() {
        // The URL parser fills in a host for https when it can; this is the case it cannot.
        assert!(check_url("https://", false).is_err());
        assert!(check_url("https://:443/", false).is_err());
    }

    #[tokio::test]
    async fn resolving_refuses_hosts_with_a_refused_address() {
        let u = Url::parse("https://localhost:9443/x").unwrap();
        assert_eq!(resolve_checked(&u, false).await, Err(UrlError::LoopbackName("localhost".into())));
        let addrs = resolve_checked(&u, true).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9443), "{addrs:?}");

        let u = Url::parse("https://10.0.0.5/").unwrap();
        assert_eq!(resolve_checked(&u, true).await, Err(UrlError::RefusedAddress(ip("10.0.0.5"))));
        let u = Url::parse("https://8.8.8.8/").unwrap();
        assert_eq!(resolve_checked(&u, false).await.unwrap(), vec!["8.8.8.8:443".parse().unwrap()]);

        let u = Url::parse("https://no-such-host.invalid/").unwrap();
        let err = resolve_checked(&u, false).await.unwrap_err();
        assert!(matches!(&err, UrlError::Unresolved { host, .. } if host == "no-such-host.invalid"), "{err:?}");
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        let refused = SafeResolver::new(false).resolve("localhost".parse().unwrap()).await;
        let err = refused.err().expect("localhost resolves only to loopback").to_string();
        assert!(err.starts_with("host localhost resolves to "), "{err}");
        assert!(err.contains("private, loopback or reserved"), "{err}");

        let kept: Vec<SocketAddr> = SafeResolver::new(true)
            .resolve("localhost".parse().unwrap())
            .await
            .map_err(|e| e.to_string())
            .unwrap()
            .collect();
        assert!(!kept.is_empty());
        assert!(kept.iter().all(|a| a.ip().is_loopback()), "{kept:?}");
    }
}
