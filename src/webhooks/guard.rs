//! The SSRF guard for per-user webhook URLs: https only (http when `WEBHOOK_ALLOW_HTTP`), and
//! every address the host name resolves to — checked at every delivery, at connect time, so a
//! name that later resolves elsewhere (DNS rebinding) is caught — must be public: not loopback,
//! private, link-local (cloud metadata at 169.254.169.254), CGNAT, multicast, unspecified,
//! broadcast, documentation, IPv6 unique-local or site-local, an IPv4-compatible IPv6 address
//! (`::a.b.c.d`), or a 6to4 address embedding a non-public IPv4 one, unless inside
//! `WEBHOOK_ALLOW_NETWORKS`. The client that makes these requests uses no proxy
//! (`webhooks/dispatch.rs`): through a proxy, the guard would judge the proxy, not the target.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Which networks and schemes per-user webhooks may reach.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub allow_http: bool,
    /// Networks allowed even though they are not public (e.g. an internal receiver).
    pub allow_networks: Vec<IpNet>,
}

impl Guard {
    /// Checks a URL when it is saved: scheme and shape (its addresses are checked at delivery).
    pub fn check_url(&self, raw: &str) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err("webhook URLs must be https:// (WEBHOOK_ALLOW_HTTP is off)".into())
            }
            other => return Err(format!("unsupported scheme {other:?}")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not allowed".into());
        }
        if raw.len() > 2048 {
            return Err("the URL is longer than 2048 characters".into());
        }
        // A literal address can be judged now.
        if let Some(ip) = literal_ip(&url) {
            self.check_ip(ip)?;
        }
        Ok(url)
    }

    /// Whether a delivery may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allow_networks.iter().any(|n| n.contains(&ip)) || is_public(ip) {
            Ok(())
        } else {
            Err(format!(
                "{ip} is not a public address (WEBHOOK_ALLOW_NETWORKS can allow it)"
            ))
        }
    }
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// A globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..=127).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let first = seg[0];
    // 6to4 (2002:AABB:CCDD::/48) routes to the IPv4 address it embeds: judged by that one.
    if first == 0x2002 {
        let [a, b] = seg[1].to_be_bytes();
        let [c, d] = seg[2].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(seg[..6].iter().all(|s| *s == 0) // ::/96: unspecified, loopback, IPv4-compatible ::a.b.c.d
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still routed by some)
        || (first == 0x2001 && seg[1] == 0x0db8) // documentation
        || first == 0x0064) // NAT64 64:ff9b::/96 maps to anything
}

/// reqwest's resolver for per-user webhooks: the system's answer, minus every address the guard
/// refuses (all refused: the connection fails with the guard's reason).
pub struct GuardedResolver(pub Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match guard.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("{host} has no address"));
                return Err(format!("{host}: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        let g = Guard::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "ff02::1",
            "::127.0.0.1",
            "::10.0.0.1",
            "fec0::1",
            "feff::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
        ] {
            assert!(g.check_ip(bad.parse().unwrap()).is_err(), "{bad}");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "2002:5db8:d822::1",
        ] {
            assert!(g.check_ip(good.parse().unwrap()).is_ok(), "{good}");
        }
        let allowed = Guard {
            allow_http: false,
            allow_networks: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert!(allowed.check_ip("10.9.9.9".parse().unwrap()).is_ok());
        assert!(allowed.check_ip("192.168.1.1".parse().unwrap()).is_err());
    }

    #[test]
    fn urls_are_https_without_credentials() {
        let g = Guard::default();
        assert!(g.check_url("https://hooks.example.com/wa").is_ok());
        assert!(g.check_url("http://hooks.example.com/wa").is_err());
        assert!(g.check_url("https://user:pw@hooks.example.com/").is_err());
        assert!(g
            .check_url("https://169.254.169.254/latest/meta-data")
            .is_err());
        assert!(g.check_url("https://[::1]/x").is_err());
        assert!(g.check_url("https://[::127.0.0.1]/x").is_err());
        assert!(g.check_url("https://[fec0::1]/x").is_err());
        assert!(g.check_url("ftp://x.example.com/").is_err());
        assert!(g.check_url("not a url").is_err());
        let http = Guard {
            allow_http: true,
            ..Guard::default()
        };
        assert!(http.check_url("http://hooks.example.com/wa").is_ok());
    }
}
