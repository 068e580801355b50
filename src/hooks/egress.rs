//! Where webhooks may be sent: `[egress]`.
//!
//! A webhook URL is configuration, and in a hosted setup it is typed by customers, so it must
//! not reach what sits beside switchhook: loopback (the admin endpoint, the event socket),
//! the private networks, link-local addresses (cloud metadata services). Those are refused
//! unless allowed by address range or host name. The check happens where the address is
//! known: at configuration time for an address in the URL, and when a host name is resolved
//! (each attempt), so a name that later resolves to a private address is refused as well.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;

/// `[egress]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Refuse loopback, private (RFC 1918, CGNAT, IPv6 unique local), link-local,
    /// unspecified, multicast and broadcast addresses unless `allow` names them.
    pub deny_private: bool,
    /// Address ranges (`10.20.0.0/16`), addresses or host names webhooks may reach although
    /// `deny_private` or `deny` would refuse them.
    pub allow: Vec<String>,
    /// More address ranges or addresses to refuse.
    pub deny: Vec<String>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            deny_private: true,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// The compiled policy. The default lets everything through (library use without a
/// configuration); `run` compiles `[egress]`, which refuses private addresses by default.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    deny_private: bool,
    allow_nets: Vec<IpNet>,
    allow_hosts: Vec<String>,
    deny_nets: Vec<IpNet>,
}

/// An address range, or one address as a range of one.
fn net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

impl Egress {
    /// Compiles `[egress]`; problems carry their key paths.
    pub fn compile(cfg: &EgressConfig) -> Result<Egress, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut egress = Egress {
            deny_private: cfg.deny_private,
            ..Egress::default()
        };
        for (i, a) in cfg.allow.iter().enumerate() {
            let a = a.trim();
            if let Some(n) = net(a) {
                egress.allow_nets.push(n);
            } else if is_host_name(a) {
                egress.allow_hosts.push(a.to_ascii_lowercase());
            } else {
                problems.push(Problem::new(
                    format!("egress.allow[{i}]"),
                    format!("{a:?} is not an address, an address range or a host name"),
                ));
            }
        }
        for (i, d) in cfg.deny.iter().enumerate() {
            match net(d.trim()) {
                Some(n) => egress.deny_nets.push(n),
                None => problems.push(Problem::new(
                    format!("egress.deny[{i}]"),
                    format!("{d:?} is not an address or an address range"),
                )),
            }
        }
        if problems.is_empty() {
            Ok(egress)
        } else {
            Err(problems)
        }
    }

    /// Why `ip` may not be reached, if it may not.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = ip.to_canonical();
        if self.allow_nets.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if let Some(n) = self.deny_nets.iter().find(|n| n.contains(&ip)) {
            return Err(Refused::Denied { ip, net: *n });
        }
        match reserved(ip).filter(|_| self.deny_private) {
            Some(kind) => Err(Refused::Private { ip, kind }),
            None => Ok(()),
        }
    }

    /// Whether `host` is allowed by name, whatever it resolves to.
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Checks a URL whose host is an address (a host name is checked when it is resolved).
    pub fn check_url(&self, url: &str) -> Result<(), Refused> {
        let Ok(url) = reqwest::Url::parse(url) else {
            return Ok(());
        };
        let host = url.host_str().unwrap_or_default();
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => self.check_ip(ip),
            Err(_) => Ok(()),
        }
    }
}

/// Why an address may not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It is in a range of `egress.deny`.
    #[error("{ip} is in {net}, denied by egress.deny")]
    Denied {
        /// The address.
        ip: IpAddr,
        /// The denied range it is in.
        net: IpNet,
    },
    /// It is loopback, private, link-local or otherwise not public, and `deny_private` is on.
    #[error("{ip} is {kind}, denied by egress.deny_private (allow it with egress.allow)")]
    Private {
        /// The address.
        ip: IpAddr,
        /// What kind of address it is.
        kind: &'static str,
    },
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What kind of address this is, when it is not a public unicast one.
fn reserved(ip: IpAddr) -> Option<&'static str> {
    let in_net = |n: &str| n.parse::<IpNet>().is_ok_and(|n| n.contains(&ip));
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_private() => Some("a private address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(_) if in_net("100.64.0.0/10") => Some("a shared (CGNAT) address"),
        IpAddr::V4(_) if in_net("0.0.0.0/8") => Some("a this-network address"),
        IpAddr::V6(_) if in_net("fc00::/7") => Some("a unique local address"),
        IpAddr::V6(_) if in_net("fe80::/10") => Some("a link-local address"),
        _ => None,
    }
}

/// Resolves host names for the webhook client and keeps only the addresses the current
/// policy lets through, so a name that resolves to a private address is refused at the
/// attempt that would reach it.
#[derive(Debug, Clone)]
pub(crate) struct Resolver {
    policy: Arc<RwLock<Arc<Egress>>>,
}

impl Resolver {
    pub(crate) fn new(policy: Arc<RwLock<Arc<Egress>>>) -> Resolver {
        Resolver { policy }
    }
}

/// A resolution refused by `[egress]` (the delivery's error shows it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveRefused {
    /// Every address the name resolves to is refused.
    #[error("{host}: {why}")]
    Refused {
        /// The name.
        host: String,
        /// Why the first address was refused.
        why: Refused,
    },
    /// The name resolves to nothing.
    #[error("{0}: no address")]
    NoAddress(String),
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let policy = self
            .policy
            .read()
            .map(|p| Arc::clone(&p))
            .unwrap_or_default();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.host_allowed(&host) {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let mut why = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        why.get_or_insert(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let refused = match why {
                    Some(why) => ResolveRefused::Refused { host, why },
                    None => ResolveRefused::NoAddress(host),
                };
                return Err(Box::new(refused) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> Egress {
        Egress::compile(&EgressConfig {
            deny_private: true,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let p = policy(&[], &[]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(p.check_ip(ip.parse().unwrap()).is_err(), "{ip}");
        }
        for ip in ["203.0.113.7", "8.8.8.8", "2001:4860::8888"] {
            assert!(p.check_ip(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        let p = policy(&["127.0.0.0/8", "10.20.0.0/16"], &["203.0.113.0/24"]);
        assert!(p.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check_ip("10.20.3.4".parse().unwrap()).is_ok());
        assert!(p.check_ip("10.21.3.4".parse().unwrap()).is_err());
        let e = p.check_ip("203.0.113.7".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("egress.deny"), "{e}");
        assert!(Egress::default()
            .check_ip("127.0.0.1".parse().unwrap())
            .is_ok());
    }

    #[test]
    fn urls_with_an_address_are_checked_and_names_wait_for_resolution() {
        let p = policy(&[], &[]);
        assert!(p.check_url("http://127.0.0.1:9464/metrics").is_err());
        assert!(p.check_url("http://[::1]/x").is_err());
        assert!(p.check_url("https://crm.example.com/x").is_ok());
    }

    #[test]
    fn bad_entries_are_reported_by_key_path() {
        let e = Egress::compile(&EgressConfig {
            deny_private: true,
            allow: vec!["10.0.0.0/33".into(), "crm.internal".into()],
            deny: vec!["nope".into()],
        })
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(keys, ["egress.allow[0]", "egress.deny[0]"]);
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed_by_name() {
        use reqwest::dns::Resolve;
        let refusing = Resolver::new(Arc::new(RwLock::new(Arc::new(policy(&[], &[])))));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match refusing.resolve(name).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("loopback"), "{err}");
        let allowing = Resolver::new(Arc::new(RwLock::new(Arc::new(policy(&["localhost"], &[])))));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = allowing.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
