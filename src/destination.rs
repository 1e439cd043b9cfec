//! Where upstream connections may go: the operator's `url_allow` and `url_deny` lists under
//! `[upstreams]`, over built-in refusals of link-local addresses and cloud metadata services
//! (the registration API must not become a way to read the host's cloud credentials).
//!
//! A rule is an address (`169.254.169.254`), a network (`10.0.0.0/8`, `fe80::/10`) or a host
//! name with the policy's globs (`metadata.google.internal`, `*.internal`, `*`; see
//! [`crate::access::glob`]). Names are judged by the
//! name rules, addresses by the address rules, and a connection must pass both: the URL's host
//! at registration ([`UrlPolicy::check_host`]) and, when a name is dialled, every address it
//! resolves to just before the connection is made ([`UrlPolicy::check_ip`]), so a name that
//! resolves to a metadata address is never dialled. An allow rule wins over a deny rule and
//! over the built-in ones; loopback and private addresses are allowed unless denied.

use std::net::IpAddr;

use crate::access::glob::Glob;

/// Networks refused unless `url_allow` names them, and why.
const BUILTIN_NETS: &[(&str, &str)] = &[
    (
        "169.254.0.0/16",
        "IPv4 link-local, where cloud metadata services answer",
    ),
    ("fe80::/10", "IPv6 link-local"),
    (
        "64:ff9b::a9fe:0/112",
        "IPv4 link-local through the well-known NAT64 prefix",
    ),
    ("fd00:ec2::254/128", "the AWS IPv6 metadata service"),
    ("100.100.100.200/32", "the Alibaba Cloud metadata service"),
];

/// Host names refused unless `url_allow` names them: cloud metadata services.
const BUILTIN_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
];

/// Why an upstream destination is refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} is refused by {rule}; {remedy}")]
pub struct Refused {
    /// The host or address refused.
    pub what: String,
    /// The rule, described with where it comes from.
    pub rule: String,
    /// The setting to change.
    pub remedy: &'static str,
}

/// Why a rule of the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("'{rule}' is neither an address, a network (ADDR/BITS) nor a host name with * globs")]
pub struct RuleError {
    /// As written.
    pub rule: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Builtin(&'static str),
    Deny,
    Allow,
}

#[derive(Debug, Clone)]
enum Pattern {
    Net { net: IpAddr, bits: u8 },
    Host(Glob),
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: Pattern,
    text: String,
    source: Source,
}

/// The upstream URL policy: where registrations and connections may go.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    allow: Vec<Rule>,
    /// `url_deny`, then the built-in rules.
    deny: Vec<Rule>,
}

impl Default for UrlPolicy {
    /// The built-in refusals alone.
    fn default() -> Self {
        Self::new(&[], &[]).unwrap_or_else(|_| unreachable!("the built-in rules parse"))
    }
}

impl UrlPolicy {
    /// The policy of `url_allow` and `url_deny` (as written in the configuration) over the
    /// built-in refusals.
    pub fn new(allow: &[String], deny: &[String]) -> Result<Self, RuleError> {
        let parse_all = |texts: &[String], source| {
            texts
                .iter()
                .map(|t| parse(t, source))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut deny = parse_all(deny, Source::Deny)?;
        for (net, why) in BUILTIN_NETS {
            deny.push(parse(net, Source::Builtin(why))?);
        }
        for host in BUILTIN_HOSTS {
            deny.push(parse(host, Source::Builtin("a cloud metadata service"))?);
        }
        Ok(Self {
            allow: parse_all(allow, Source::Allow)?,
            deny,
        })
    }

    /// Whether a URL's host may be connected to: a name by the name rules, an address by the
    /// address rules.
    pub fn check_host(&self, host: &url::Host<&str>) -> Result<(), Refused> {
        match host {
            url::Host::Domain(name) => self.check_name(name),
            url::Host::Ipv4(ip) => self.check_ip(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => self.check_ip(IpAddr::V6(*ip)),
        }
    }

    /// Whether a host name may be connected to (its addresses are judged when it is dialled).
    pub fn check_name(&self, name: &str) -> Result<(), Refused> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let matches =
            |rule: &&Rule| matches!(&rule.pattern, Pattern::Host(glob) if glob.matches(&name));
        self.judge(&name, matches)
    }

    /// Whether an address may be connected to (an IPv4-mapped IPv6 address is judged as the
    /// IPv4 address it carries).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = ip.to_canonical();
        let matches = |rule: &&Rule| matches!(rule.pattern, Pattern::Net { net, bits } if contains(net, bits, ip));
        self.judge(&ip.to_string(), matches)
    }

    fn judge(&self, what: &str, matches: impl Fn(&&Rule) -> bool) -> Result<(), Refused> {
        if self.allow.iter().any(|r| matches(&r)) {
            return Ok(());
        }
        match self.deny.iter().find(|r| matches(r)) {
            None => Ok(()),
            Some(rule) => Err(Refused {
                what: what.to_owned(),
                rule: match rule.source {
                    Source::Builtin(why) => format!("the built-in rule '{}' ({why})", rule.text),
                    _ => format!("the rule '{}' of `url_deny`", rule.text),
                },
                remedy: match rule.source {
                    Source::Builtin(_) => {
                        "to allow it, add it to `url_allow` under [upstreams] in mcpgw.toml"
                    }
                    _ => "change `url_deny` (or `url_allow`) under [upstreams] in mcpgw.toml",
                },
            }),
        }
    }
}

fn parse(text: &str, source: Source) -> Result<Rule, RuleError> {
    let err = || RuleError {
        rule: text.to_owned(),
    };
    let trimmed = text.trim();
    let pattern = if let Some((addr, bits)) = trimmed.split_once('/') {
        let net: IpAddr = addr.parse().map_err(|_| err())?;
        let bits: u8 = bits.parse().map_err(|_| err())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        if bits > max {
            return Err(err());
        }
        Pattern::Net {
            net: net.to_canonical(),
            bits: if net.is_ipv6() && net.to_canonical().is_ipv4() {
                bits.saturating_sub(96)
            } else {
                bits
            },
        }
    } else if let Ok(ip) = trimmed
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        let ip = ip.to_canonical();
        Pattern::Net {
            net: ip,
            bits: if ip.is_ipv4() { 32 } else { 128 },
        }
    } else if !trimmed.is_empty()
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.*?_".contains(&b))
    {
        Pattern::Host(Glob::new(
            &trimmed.trim_end_matches('.').to_ascii_lowercase(),
        ))
    } else {
        return Err(err());
    };
    Ok(Rule {
        pattern,
        text: trimmed.to_owned(),
        source,
    })
}

/// Whether `ip` lies in `net`/`bits` (both of the same family).
fn contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    let (net, ip, width) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(n.to_bits()), u128::from(i.to_bits()), 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (n.to_bits(), i.to_bits(), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    bits == 0 || (net >> shift) == (ip >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn metadata_and_link_local_are_refused_by_default_loopback_and_private_are_not() {
        let policy = UrlPolicy::default();
        for refused in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            let err = policy.check_ip(ip(refused)).unwrap_err();
            assert!(err.to_string().contains("url_allow"), "{err}");
        }
        for allowed in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "93.184.216.34",
        ] {
            policy.check_ip(ip(allowed)).unwrap();
        }
        let err = policy.check_name("Metadata.Google.Internal.").unwrap_err();
        assert!(err.to_string().contains("cloud metadata"), "{err}");
        policy.check_name("localhost").unwrap();
    }

    /// The check made on every address a dialled name resolves to: a name that resolves to the
    /// metadata address is refused there even though the name itself passes.
    #[test]
    fn a_resolved_address_is_judged_by_the_address_rules() {
        let policy = UrlPolicy::new(&[], &["10.0.0.0/8".into(), "*.corp.example".into()]).unwrap();
        policy.check_name("rebind.example.com").unwrap();
        assert!(policy.check_ip(ip("169.254.169.254")).is_err());
        let err = policy.check_ip(ip("10.9.8.7")).unwrap_err();
        assert!(
            err.to_string().contains("'10.0.0.0/8' of `url_deny`"),
            "{err}"
        );
        assert!(policy.check_name("db.corp.example").is_err());
        assert!(policy.check_name("corp.example").is_ok());
    }

    #[test]
    fn an_allow_rule_wins_over_deny_and_the_built_in_rules() {
        let policy = UrlPolicy::new(
            &["169.254.10.0/24".into(), "api.example.com".into()],
            &["*".into(), "0.0.0.0/0".into(), "::/0".into()],
        )
        .unwrap();
        policy.check_ip(ip("169.254.10.5")).unwrap();
        assert!(policy.check_ip(ip("169.254.169.254")).is_err());
        assert!(policy.check_ip(ip("127.0.0.1")).is_err());
        policy.check_name("api.example.com").unwrap();
        assert!(policy.check_name("other.example.com").is_err());
    }

    #[test]
    fn bad_rules_are_named() {
        for bad in ["10.0.0.0/33", "not a host", "", "1.2.3.4/x", "http://x"] {
            let err = UrlPolicy::new(&[bad.into()], &[]).unwrap_err();
            assert!(
                err.to_string().contains(&format!("'{}'", bad.trim())),
                "{err}"
            );
        }
    }
}
