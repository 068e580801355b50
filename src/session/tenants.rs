//! `[[tenants]]`: which customer a call belongs to, for a provider hosting many on one
//! platform. A call's tenant is, in order: the `[mapping] tenant` header on its caller's leg
//! (a channel variable the dial plan sets); else the first `[[tenants]]` entry whose
//! `domains` hold the caller leg's domain (`[mapping] domain`), or whose `numbers` hold the
//! DID dialled (inbound) or the number presented (outbound); else none, and the call's
//! `pbxId` stands for it.

use serde::{Deserialize, Serialize};

use super::numbers::NumberReader;
use crate::problem::{Problem, Problems};

/// One `[[tenants]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's id, as records and messages carry it (`tenantId`).
    pub id: String,
    /// FreeSWITCH domains whose calls are the tenant's (`acme.pbx.example`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Its numbers: each one number (any form; compared in E.164), a range of numbers of
    /// the same length (`+13125550100-+13125550199`), or a prefix (`+1312555*`).
    #[serde(default)]
    pub numbers: Vec<String>,
}

/// A number, a range or a prefix, in E.164.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NumberRule {
    One(String),
    Range(String, String),
    Prefix(String),
}

impl NumberRule {
    fn holds(&self, e164: &str) -> bool {
        match self {
            NumberRule::One(n) => n == e164,
            // Numbers of one length compare as their digits do.
            NumberRule::Range(lo, hi) => {
                e164.len() == lo.len() && lo.as_str() <= e164 && e164 <= hi.as_str()
            }
            NumberRule::Prefix(p) => e164.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct Tenant {
    id: String,
    domains: Vec<String>,
    numbers: Vec<NumberRule>,
}

/// The compiled `[[tenants]]`.
#[derive(Debug, Clone, Default)]
pub struct Tenants(Vec<Tenant>);

fn e164(numbers: &NumberReader, n: &str) -> Option<String> {
    let info = numbers.read(n);
    info.is_e164.then_some(info.e164)
}

impl Tenants {
    /// Compiles the entries; every problem comes back by key path.
    pub fn new(configs: &[TenantConfig], numbers: &NumberReader) -> Result<Tenants, Vec<Problem>> {
        let mut bad = Problems::default();
        let mut out = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let at = format!("tenants[{i}]");
            if c.id.trim().is_empty() || c.id.chars().any(char::is_control) {
                bad.add(format!("{at}.id"), "name the tenant");
            }
            if out.iter().any(|t: &Tenant| t.id == c.id) {
                bad.add(format!("{at}.id"), format!("{:?} is used twice", c.id));
            }
            let mut rules = Vec::new();
            for (j, n) in c.numbers.iter().enumerate() {
                let n = n.trim();
                let rule = if let Some(p) = n.strip_suffix('*') {
                    (p.starts_with('+') && p[1..].bytes().all(|b| b.is_ascii_digit()))
                        .then(|| NumberRule::Prefix(p.to_owned()))
                } else if let Some((lo, hi)) = n.split_once("-+") {
                    match (e164(numbers, lo), e164(numbers, &format!("+{hi}"))) {
                        (Some(lo), Some(hi)) if lo.len() == hi.len() && lo <= hi => {
                            Some(NumberRule::Range(lo, hi))
                        }
                        _ => None,
                    }
                } else {
                    e164(numbers, n).map(NumberRule::One)
                };
                match rule {
                    Some(r) => rules.push(r),
                    None => bad.add(
                        format!("{at}.numbers[{j}]"),
                        format!(
                            "{n:?}: a number, a range of one length (+13125550100-+13125550199) or an E.164 prefix (+1312555*)"
                        ),
                    ),
                }
            }
            out.push(Tenant {
                id: c.id.clone(),
                domains: c
                    .domains
                    .iter()
                    .map(|d| d.trim().to_ascii_lowercase())
                    .collect(),
                numbers: rules,
            });
        }
        bad.or(Tenants(out))
    }

    /// The tenant of a call: from its domain, else from its DID or presented number (both
    /// in E.164).
    pub fn of(&self, domain: Option<&str>, numbers: &[&str]) -> Option<&str> {
        let domain = domain.map(|d| d.trim().to_ascii_lowercase());
        if let Some(d) = &domain {
            if let Some(t) = self.0.iter().find(|t| t.domains.contains(d)) {
                return Some(&t.id);
            }
        }
        self.0
            .iter()
            .find(|t| {
                numbers
                    .iter()
                    .filter(|n| !n.is_empty())
                    .any(|n| t.numbers.iter().any(|r| r.holds(n)))
            })
            .map(|t| t.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(entries: serde_json::Value) -> Result<Tenants, Vec<Problem>> {
        let configs: Vec<TenantConfig> = serde_json::from_value(entries).unwrap();
        let numbers = NumberReader::new(&Default::default());
        Tenants::new(&configs, &numbers)
    }

    #[test]
    fn a_domain_comes_first_then_numbers_ranges_and_prefixes() {
        let t = tenants(serde_json::json!([
            {"id": "acme", "domains": ["Acme.PBX.example"], "numbers": ["+13125550100-+13125550199"]},
            {"id": "globex", "numbers": ["+44161*", "+442071234567"]},
        ]))
        .unwrap();
        assert_eq!(
            t.of(Some("acme.pbx.example"), &["+442071234567"]),
            Some("acme")
        );
        assert_eq!(t.of(None, &["+13125550150"]), Some("acme"));
        assert_eq!(t.of(None, &["+13125550200"]), None);
        assert_eq!(
            t.of(None, &["+131255501500"]),
            None,
            "longer: not in the range"
        );
        assert_eq!(t.of(Some("other"), &["", "+441615550000"]), Some("globex"));
        assert_eq!(t.of(None, &["+442071234567"]), Some("globex"));
        assert_eq!(t.of(None, &[]), None);
    }

    #[test]
    fn mistakes_are_named_by_key_path() {
        let problems = tenants(serde_json::json!([
            {"id": "acme", "numbers": ["+1312555019-+13125550199", "12*", "not a number"]},
            {"id": "acme"},
        ]))
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "tenants[0].numbers[0]",
                "tenants[0].numbers[1]",
                "tenants[0].numbers[2]",
                "tenants[1].id"
            ]
        );
    }
}
