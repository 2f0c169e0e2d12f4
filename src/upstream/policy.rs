//! Which hosts tidemark may send upstream requests to: the operator's allowlist
//! (`TIDEMARK_UPSTREAM_ALLOW`, any host when empty) minus the addresses it never requests,
//! whatever the list says: link-local and cloud metadata endpoints, where a registered
//! `base_url` could otherwise read the credentials of the machine tidemark runs on (SSRF).
//!
//! The host of a URL is checked as written ([`HostPolicy::check`]) and again after DNS
//! resolution ([`GuardedResolver`]), because a name can resolve to a refused address and
//! DNS answers change after a source was registered.

use std::error::Error;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Names of cloud metadata services; their addresses are refused as well, but a name is
/// refused before it is even looked up.
const METADATA_NAMES: &[&str] = &["metadata.google.internal"];

/// The AWS instance metadata service over IPv6.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Whether tidemark refuses to connect to `ip`, whatever the allowlist says: IPv4
/// link-local (169.254.0.0/16, where AWS, GCP, Azure and others serve instance metadata),
/// IPv6 link-local (fe80::/10) and AWS's IPv6 metadata address (fd00:ec2::254); IPv4
/// addresses written as IPv6 (`::ffff:169.254.169.254`, or NAT64's `64:ff9b::/96`) are
/// judged by the IPv4 address they reach. Loopback and private ranges stay allowed: the
/// allowlist is how an operator closes those.
pub fn forbidden_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4.is_link_local();
            }
            if nat64 {
                let [.., a, b, c, d] = v6.octets();
                return std::net::Ipv4Addr::new(a, b, c, d).is_link_local();
            }
            (segments[0] & 0xffc0) == 0xfe80 || v6 == AWS_METADATA_V6
        }
    }
}

fn metadata_name(domain: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    METADATA_NAMES
        .iter()
        .any(|name| domain.eq_ignore_ascii_case(name))
}

/// Why a host was refused. Its text is the detail of a 422 at registration and of a
/// failed job's `upstream-forbidden-host` problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    host: String,
    why: Why,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    /// Not on the operator's allowlist.
    NotAllowed,
    /// A link-local or metadata address, or a metadata service's name.
    Metadata,
    /// A name that resolves to such an address.
    ResolvesTo(IpAddr),
    /// Not a URL with a host.
    NoHost,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = &self.host;
        match &self.why {
            Why::NotAllowed => write!(
                f,
                "the host `{host}` is not allowed: it is not in TIDEMARK_UPSTREAM_ALLOW"
            ),
            Why::Metadata => write!(
                f,
                "the host `{host}` is not allowed: tidemark never requests link-local or cloud \
                 metadata addresses"
            ),
            Why::ResolvesTo(ip) => write!(
                f,
                "the host `{host}` is not allowed: it resolves to {ip}, a link-local or cloud \
                 metadata address, which tidemark never requests"
            ),
            Why::NoHost => write!(f, "`{host}` is not a URL with a host"),
        }
    }
}

impl Error for Refused {}

/// The refusal behind a failed request, if the guarded resolver refused its host.
pub(crate) fn refusal<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a Refused> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = e.source();
    }
    None
}

/// One allowlist entry: a host (or `*.` and a domain suffix) and optionally a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A host exactly, in `url`'s canonical form (so `0x7f.1` is `127.0.0.1`).
    Exact(Host<String>),
    /// Any name under this domain (not the domain itself).
    Under(String),
}

impl Pattern {
    fn matches(&self, host: &Host<&str>, port: Option<u16>) -> bool {
        if self.port.is_some() && self.port != port {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Exact(Host::Domain(want)), Host::Domain(have)) => {
                want.trim_end_matches('.') == have.trim_end_matches('.')
            }
            (HostPattern::Exact(want), have) => *want == have.to_owned(),
            (HostPattern::Under(suffix), Host::Domain(have)) => have
                .trim_end_matches('.')
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Under(_), _) => false,
        }
    }
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{entry}`: {why}");
        let (host, port) = match entry.strip_prefix('[') {
            Some(rest) => {
                let (inside, after) = rest
                    .split_once(']')
                    .ok_or_else(|| bad("an IPv6 address needs its closing `]`"))?;
                match after {
                    "" => (format!("[{inside}]"), None),
                    after => match after.strip_prefix(':') {
                        Some(port) => (format!("[{inside}]"), Some(port)),
                        None => return Err(bad("expected `:port` after `]`")),
                    },
                }
            }
            None => match entry.split(':').count() {
                1 => (entry.to_owned(), None),
                2 => entry
                    .split_once(':')
                    .map(|(host, port)| (host.to_owned(), Some(port)))
                    .ok_or_else(|| bad("expected host:port"))?,
                _ => return Err(bad("write an IPv6 address in brackets, e.g. `[::1]:8080`")),
            },
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port must be a number from 1 to 65535"))
            })
            .transpose()?;
        let host = match host.strip_prefix("*.") {
            Some(suffix) => match Host::parse(suffix) {
                Ok(Host::Domain(domain)) if !domain.contains('*') => {
                    HostPattern::Under(domain.trim_end_matches('.').to_owned())
                }
                _ => return Err(bad("a wildcard is `*.` followed by a domain name")),
            },
            None => match Host::parse(&host) {
                Ok(Host::Domain(domain)) if domain.contains('*') => {
                    return Err(bad(
                        "a wildcard may only start an entry, as in `*.example.com`",
                    ));
                }
                Ok(host) => HostPattern::Exact(host),
                Err(e) => return Err(bad(&format!("not a host name or address ({e})"))),
            },
        };
        Ok(Pattern { host, port })
    }
}

/// The hosts upstream requests may go to, as `TIDEMARK_UPSTREAM_ALLOW` writes them:
/// comma-separated exact hosts (`api.example.com`, `127.0.0.1`, `[::1]`), wildcards
/// (`*.example.com`: any name under it) and either with a port (`host:8443`: only that
/// port). Empty: any host. Link-local and metadata addresses are refused either way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    allow: Vec<Pattern>,
}

impl FromStr for HostPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let allow = s
            .split(',')
            .map(|entry| entry.trim().to_ascii_lowercase())
            .filter(|entry| !entry.is_empty())
            .map(|entry| entry.parse())
            .collect::<Result<_, _>>()?;
        Ok(HostPolicy { allow })
    }
}

impl HostPolicy {
    /// Whether a request to `url` may be sent, judging the host as written (its addresses
    /// are judged again when it is resolved).
    pub fn check(&self, url: &str) -> Result<(), Refused> {
        match Url::parse(url) {
            Ok(parsed) => self.check_url(&parsed),
            Err(_) => Err(Refused {
                host: url.to_owned(),
                why: Why::NoHost,
            }),
        }
    }

    /// [`HostPolicy::check`] for a parsed URL.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let Some(host) = url.host() else {
            return Err(Refused {
                host: url.to_string(),
                why: Why::NoHost,
            });
        };
        let metadata = match host {
            Host::Domain(domain) => metadata_name(domain),
            Host::Ipv4(ip) => forbidden_address(IpAddr::V4(ip)),
            Host::Ipv6(ip) => forbidden_address(IpAddr::V6(ip)),
        };
        let port = url.port_or_known_default();
        let why = if metadata {
            Why::Metadata
        } else if self.allow.is_empty() || self.allow.iter().any(|p| p.matches(&host, port)) {
            return Ok(());
        } else {
            Why::NotAllowed
        };
        Err(Refused {
            host: host.to_string(),
            why,
        })
    }
}

/// Asks the system resolver (`getaddrinfo`, on a blocking thread).
pub(crate) struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The resolver of tidemark's HTTP client: refuses a name whose addresses include a
/// refused one (all of them, not only the first: a rebinding answer can mix them), so no
/// connection to such an address is ever opened, whichever URL, redirect or token
/// endpoint led there. (A URL with an IP address is never resolved; those are judged by
/// [`HostPolicy::check_url`] before the request.)
pub(crate) struct GuardedResolver {
    inner: Arc<dyn Resolve>,
}

impl GuardedResolver {
    pub(crate) fn new(inner: Arc<dyn Resolve>) -> Self {
        Self { inner }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        if metadata_name(&host) {
            return Box::pin(async move {
                Err(Box::new(Refused {
                    host,
                    why: Why::Metadata,
                }) as _)
            });
        }
        let lookup = self.inner.resolve(name);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup.await?.collect();
            if let Some(bad) = addrs.iter().find(|a| forbidden_address(a.ip())) {
                return Err(Box::new(Refused {
                    host,
                    why: Why::ResolvesTo(bad.ip()),
                }) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &str) -> HostPolicy {
        list.parse().unwrap()
    }

    fn allowed(policy: &HostPolicy, url: &str) -> bool {
        policy.check(url).is_ok()
    }

    #[test]
    fn metadata_and_link_local_addresses_are_always_refused() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(forbidden_address(ip), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "192.168.1.1",
            "169.253.255.255",
            "169.255.0.1",
            "fec0::1",
            "fd00:ec2::253",
            "::ffff:127.0.0.1",
            "93.184.216.34",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!forbidden_address(ip), "{ip}");
        }
        // The empty list allows any host but these, in every spelling of the address.
        let any = HostPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://0xa9fea9fe/",
            "http://2852039166/",
            "http://169.254.169.254.:80/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fe80::1]:8080/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
        ] {
            let refused = any.check(url).unwrap_err();
            assert!(refused.to_string().contains("metadata"), "{url}: {refused}");
        }
        for url in [
            "http://127.0.0.1:9000",
            "http://[::1]/",
            "https://api.example.com",
        ] {
            assert!(allowed(&any, url), "{url}");
        }
        // An allowlist cannot open them either.
        assert!(!allowed(
            &policy("169.254.169.254"),
            "http://169.254.169.254/"
        ));
    }

    #[test]
    fn the_allowlist_matches_hosts_wildcards_and_ports() {
        let list = policy(" api.example.com, *.shop.example:8443,127.0.0.1:9000, [::1] ,");
        for url in [
            "https://api.example.com/v1",
            "http://API.Example.com:8080/",
            "https://eu.shop.example:8443/",
            "https://a.b.shop.example:8443/",
            "http://127.0.0.1:9000/x",
            "http://[::1]:1234/",
            "https://api.example.com./",
        ] {
            assert!(allowed(&list, url), "{url}");
        }
        for url in [
            "https://example.com/",
            "https://api.example.com.evil.net/",
            "https://evilapi.example.com/",
            "https://shop.example:8443/",
            "https://eu.shop.example/",
            "https://eu.shop.example:9443/",
            "https://eushop.example:8443/",
            "http://127.0.0.1:9001/",
            "http://localhost:9000/",
            "http://[::2]/",
        ] {
            let refused = list.check(url).unwrap_err();
            assert!(
                refused.to_string().contains("TIDEMARK_UPSTREAM_ALLOW"),
                "{url}: {refused}"
            );
        }
        // Default ports count as the URL's port.
        assert!(allowed(&policy("example.com:443"), "https://example.com/"));
        assert!(!allowed(&policy("example.com:443"), "http://example.com/"));
        // Addresses are compared in their canonical form.
        assert!(allowed(&policy("127.0.0.1"), "http://0x7f.1/"));
        assert!(allowed(&policy("[0:0::1]"), "http://[::1]/"));
        // `localhost` is a name; the address it stands for is another host.
        assert!(!allowed(&policy("localhost"), "http://127.0.0.1:9000/"));
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        for bad in [
            "::1",
            "[::1",
            "[::1]x",
            "host:0",
            "host:99999",
            "host:port",
            "*.",
            "*",
            "a.*.example.com",
            "*.*.example.com",
            "exa mple.com",
            "*.1.2.3.4",
        ] {
            let e = bad.parse::<HostPolicy>().unwrap_err();
            assert!(e.contains(bad.trim()), "{bad}: {e}");
        }
        assert_eq!(policy(""), HostPolicy::default());
        assert_eq!(policy(" , ,"), HostPolicy::default());
    }

    /// Maps every name to fixed addresses, as a DNS server under an attacker's control
    /// would.
    struct Fixed(Vec<IpAddr>);

    impl Resolve for Fixed {
        fn resolve(&self, _: Name) -> Resolving {
            let addrs: Vec<SocketAddr> = self.0.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
            Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
        }
    }

    async fn resolve(addrs: &[&str], name: &str) -> Result<Vec<SocketAddr>, String> {
        let inner = Fixed(addrs.iter().map(|a| a.parse().unwrap()).collect());
        let guarded = GuardedResolver::new(Arc::new(inner));
        match guarded.resolve(name.parse().unwrap()).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(e) => {
                assert!(refusal(e.as_ref()).is_some(), "{e}");
                Err(e.to_string())
            }
        }
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused() {
        let e = resolve(&["169.254.169.254"], "innocent.example")
            .await
            .unwrap_err();
        assert!(
            e.contains("innocent.example") && e.contains("169.254.169.254"),
            "{e}"
        );
        // One bad address among good ones (DNS rebinding) refuses the name.
        assert!(
            resolve(&["127.0.0.1", "fd00:ec2::254"], "mixed.example")
                .await
                .is_err()
        );
        assert!(
            resolve(&["127.0.0.1"], "metadata.google.internal")
                .await
                .is_err()
        );
        let fine = resolve(&["127.0.0.1", "::1"], "localhost").await.unwrap();
        assert_eq!(fine.len(), 2);
    }
}
