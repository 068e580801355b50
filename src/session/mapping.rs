//! `[mapping]`: which channel variables and headers feed which CDR field. Telecom engineers
//! tune this per PBX; the defaults work on a stock FreeSWITCH configuration (directory users,
//! `user/` dial strings, mod_callcenter, a `public` context and an `external` profile for the
//! carrier).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::esl::Event;
use crate::problem::Problem;

/// The mapping configuration. Each list names headers (`variable_x` for channel variable `x`),
/// first present wins; a leg keeps the best value any of its events carried.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    /// A rung or answering device's number (`1001`).
    pub device_number: Vec<String>,
    /// A device's name (the phone model by default).
    pub device_name: Vec<String>,
    /// The user behind a device.
    pub user_number: Vec<String>,
    /// The user's display name (`Alice Smith`).
    pub user_name: Vec<String>,
    /// A queue agent (`1003@default`; see `strip_domain`).
    pub agent_number: Vec<String>,
    /// The agent's name.
    pub agent_name: Vec<String>,
    /// The ring group or queue a leg was rung for; a multi-target bridge without one is named
    /// after the extension that dialled it.
    pub group_name: Vec<String>,
    /// The DID the caller dialled (read on the caller's leg).
    pub ddi_number: Vec<String>,
    /// The DID's name (read on the caller's leg; `ddi_names` is consulted after).
    pub ddi_name: Vec<String>,
    /// Names for DIDs, by E.164 number.
    pub ddi_names: BTreeMap<String, String>,
    /// `rteID`: a prefix added to the caller's number while routing.
    pub route_prefix: Vec<String>,
    /// `rteName`: a prefix added to the caller's name while routing.
    pub route_name: Vec<String>,
    /// `routeStep`: the routing step (`[[routes]]` name) the call went through.
    #[serde(default)]
    pub route_step: Vec<String>,
    /// `routeStatus`: what the routing step decided (ACK, NAK, ERR, TIMEOUT, INVALID).
    #[serde(default)]
    pub route_status: Vec<String>,
    /// `routeDest`: the destination the routing step returned.
    #[serde(default)]
    pub route_destination: Vec<String>,
    /// `routeCallerName`: the caller name the routing step set.
    #[serde(default)]
    pub route_caller_name: Vec<String>,
    /// `routeReason`: why the routing step decided so.
    #[serde(default)]
    pub route_reason: Vec<String>,
    /// `routeSource`: server, cache, circuit_open, menu or switchhook.
    #[serde(default)]
    pub route_source: Vec<String>,
    /// `routeLatencyMs`: time spent asking the routing server.
    #[serde(default)]
    pub route_latency_ms: Vec<String>,
    /// `routeUrl`: the routing URL asked (scheme, host and path: no query, no credentials).
    #[serde(default)]
    pub route_url: Vec<String>,
    /// Headers starting with this become tags (`variable_switchhook_tag_Support: step1` →
    /// `{"Support": "step1"}`). Empty disables tags.
    pub tag_prefix: String,
    /// Drop `@domain` from user and agent values (`1003@default` → `1003`).
    pub strip_domain: bool,
    /// Sofia profiles whose legs are trunks (the carrier side).
    pub trunk_profiles: Vec<String>,
    /// Dial-plan contexts whose inbound legs are trunks.
    pub trunk_contexts: Vec<String>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl MappingConfig {
    /// Every problem with the section's values, by key path: header names must be plain
    /// tokens.
    pub fn check(&self) -> Vec<Problem> {
        let mut bad = Vec::new();
        for attr in Attr::ALL {
            for (i, h) in attr.sources(self).iter().enumerate() {
                if h.is_empty() || h.bytes().any(|b| b.is_ascii_whitespace() || b == b':') {
                    bad.push(Problem::new(
                        format!("mapping.{}[{i}]", attr.key()),
                        format!("{h:?} is not a header name (like variable_dialed_user)"),
                    ));
                }
            }
        }
        bad
    }
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            device_number: strings(&["variable_dialed_user"]),
            device_name: strings(&["variable_sip_user_agent"]),
            user_number: strings(&[
                "variable_effective_caller_id_number",
                "variable_dialed_user",
            ]),
            user_name: strings(&["variable_effective_caller_id_name"]),
            agent_number: strings(&["variable_cc_agent"]),
            agent_name: strings(&["variable_effective_caller_id_name"]),
            group_name: strings(&["variable_switchhook_group"]),
            ddi_number: strings(&["variable_inbound_did"]),
            ddi_name: strings(&["variable_switchhook_ddi_name"]),
            ddi_names: BTreeMap::new(),
            route_prefix: strings(&["variable_switchhook_route_prefix"]),
            route_name: strings(&["variable_switchhook_route_name"]),
            route_step: strings(&["variable_switchhook_route"]),
            route_status: strings(&["variable_switchhook_status"]),
            route_destination: strings(&["variable_switchhook_destination"]),
            route_caller_name: strings(&["variable_switchhook_callername"]),
            route_reason: strings(&["variable_switchhook_reason"]),
            route_source: strings(&["variable_switchhook_source"]),
            route_latency_ms: strings(&["variable_switchhook_latency_ms"]),
            route_url: strings(&["variable_switchhook_url"]),
            tag_prefix: "variable_switchhook_tag_".into(),
            strip_domain: true,
            trunk_profiles: strings(&["external"]),
            trunk_contexts: strings(&["public"]),
        }
    }
}

/// A mapped per-leg attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attr {
    /// [`MappingConfig::device_number`].
    DeviceNumber,
    /// [`MappingConfig::device_name`].
    DeviceName,
    /// [`MappingConfig::user_number`].
    UserNumber,
    /// [`MappingConfig::user_name`].
    UserName,
    /// [`MappingConfig::agent_number`].
    AgentNumber,
    /// [`MappingConfig::agent_name`].
    AgentName,
    /// [`MappingConfig::group_name`].
    Group,
    /// [`MappingConfig::ddi_number`].
    DdiNumber,
    /// [`MappingConfig::ddi_name`].
    DdiName,
    /// [`MappingConfig::route_prefix`].
    RoutePrefix,
    /// [`MappingConfig::route_name`].
    RouteName,
    /// [`MappingConfig::route_step`].
    RouteStep,
    /// [`MappingConfig::route_status`].
    RouteStatus,
    /// [`MappingConfig::route_destination`].
    RouteDestination,
    /// [`MappingConfig::route_caller_name`].
    RouteCallerName,
    /// [`MappingConfig::route_reason`].
    RouteReason,
    /// [`MappingConfig::route_source`].
    RouteSource,
    /// [`MappingConfig::route_latency_ms`].
    RouteLatency,
    /// [`MappingConfig::route_url`].
    RouteUrl,
}

impl Attr {
    const ALL: [Attr; 19] = [
        Attr::DeviceNumber,
        Attr::DeviceName,
        Attr::UserNumber,
        Attr::UserName,
        Attr::AgentNumber,
        Attr::AgentName,
        Attr::Group,
        Attr::DdiNumber,
        Attr::DdiName,
        Attr::RoutePrefix,
        Attr::RouteName,
        Attr::RouteStep,
        Attr::RouteStatus,
        Attr::RouteDestination,
        Attr::RouteCallerName,
        Attr::RouteReason,
        Attr::RouteSource,
        Attr::RouteLatency,
        Attr::RouteUrl,
    ];

    /// The configuration key.
    pub fn key(self) -> &'static str {
        match self {
            Attr::DeviceNumber => "device_number",
            Attr::DeviceName => "device_name",
            Attr::UserNumber => "user_number",
            Attr::UserName => "user_name",
            Attr::AgentNumber => "agent_number",
            Attr::AgentName => "agent_name",
            Attr::Group => "group_name",
            Attr::DdiNumber => "ddi_number",
            Attr::DdiName => "ddi_name",
            Attr::RoutePrefix => "route_prefix",
            Attr::RouteName => "route_name",
            Attr::RouteStep => "route_step",
            Attr::RouteStatus => "route_status",
            Attr::RouteDestination => "route_destination",
            Attr::RouteCallerName => "route_caller_name",
            Attr::RouteReason => "route_reason",
            Attr::RouteSource => "route_source",
            Attr::RouteLatency => "route_latency_ms",
            Attr::RouteUrl => "route_url",
        }
    }

    fn sources(self, m: &MappingConfig) -> &[String] {
        match self {
            Attr::DeviceNumber => &m.device_number,
            Attr::DeviceName => &m.device_name,
            Attr::UserNumber => &m.user_number,
            Attr::UserName => &m.user_name,
            Attr::AgentNumber => &m.agent_number,
            Attr::AgentName => &m.agent_name,
            Attr::Group => &m.group_name,
            Attr::DdiNumber => &m.ddi_number,
            Attr::DdiName => &m.ddi_name,
            Attr::RoutePrefix => &m.route_prefix,
            Attr::RouteName => &m.route_name,
            Attr::RouteStep => &m.route_step,
            Attr::RouteStatus => &m.route_status,
            Attr::RouteDestination => &m.route_destination,
            Attr::RouteCallerName => &m.route_caller_name,
            Attr::RouteReason => &m.route_reason,
            Attr::RouteSource => &m.route_source,
            Attr::RouteLatency => &m.route_latency_ms,
            Attr::RouteUrl => &m.route_url,
        }
    }

    fn strips_domain(self) -> bool {
        matches!(
            self,
            Attr::UserNumber | Attr::AgentNumber | Attr::DeviceNumber
        )
    }
}

/// One resolved attribute value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced {
    /// The value.
    pub value: String,
    /// Position of the source in its list (lower is preferred).
    pub rank: u8,
    /// The header it was read from.
    pub header: &'static str,
    /// The event that carried it (name and timestamp, µs).
    pub event: (&'static str, i64),
}

/// The mapped attributes of one leg.
#[derive(Debug, Clone, Default)]
pub struct LegAttrs {
    values: Vec<(Attr, Sourced)>,
    /// Tags found on the leg.
    pub tags: BTreeMap<String, String>,
}

impl LegAttrs {
    /// An attribute's value.
    pub fn get(&self, attr: Attr) -> Option<&str> {
        self.sourced(attr).map(|s| s.value.as_str())
    }

    /// An attribute with its provenance.
    pub fn sourced(&self, attr: Attr) -> Option<&Sourced> {
        self.values.iter().find(|(a, _)| *a == attr).map(|(_, s)| s)
    }

    fn offer(&mut self, attr: Attr, s: Sourced) {
        match self.values.iter_mut().find(|(a, _)| *a == attr) {
            Some((_, old)) if s.rank <= old.rank => *old = s,
            Some(_) => {}
            None => self.values.push((attr, s)),
        }
    }
}

/// The mapping compiled for one-pass lookups over an event's headers.
#[derive(Debug)]
pub struct Mapper {
    /// Header name → the attributes it feeds, with its rank in each list.
    by_header: HashMap<&'static str, Vec<(Attr, u8)>>,
    tag_prefix: &'static str,
    strip_domain: bool,
    /// The configuration it was built from.
    pub config: MappingConfig,
}

impl Mapper {
    /// Compiles `cfg`. Header names are leaked once: a mapper lives as long as its config.
    pub fn new(cfg: &MappingConfig) -> Self {
        let mut by_header: HashMap<&'static str, Vec<(Attr, u8)>> = HashMap::new();
        for attr in Attr::ALL {
            for (rank, h) in attr.sources(cfg).iter().enumerate() {
                let name: &'static str = intern(h);
                by_header
                    .entry(name)
                    .or_default()
                    .push((attr, rank.min(250) as u8));
            }
        }
        Mapper {
            by_header,
            tag_prefix: intern(&cfg.tag_prefix),
            strip_domain: cfg.strip_domain,
            config: cfg.clone(),
        }
    }

    /// Reads every mapped header of `ev` into `attrs` in one pass over the headers.
    pub fn apply(&self, ev: &Event, event_name: &'static str, at_us: i64, attrs: &mut LegAttrs) {
        let headers = ev.headers();
        for (i, name) in headers.names() {
            if let Some((&header, targets)) = self.by_header.get_key_value(name) {
                let Some(value) = headers.value_at(i) else {
                    continue;
                };
                if value.trim().is_empty() {
                    continue;
                }
                for &(attr, rank) in targets {
                    let mut v = value.trim().to_owned();
                    if self.strip_domain && attr.strips_domain() {
                        if let Some(at) = v.find('@') {
                            v.truncate(at);
                        }
                    }
                    attrs.offer(
                        attr,
                        Sourced {
                            value: v,
                            rank,
                            header,
                            event: (event_name, at_us),
                        },
                    );
                }
            } else if !self.tag_prefix.is_empty() {
                if let Some(key) = name.strip_prefix(self.tag_prefix) {
                    if let Some(v) = headers.value_at(i) {
                        attrs.tags.insert(key.to_owned(), v.into_owned());
                    }
                }
            }
        }
    }
}

/// Header names live for the whole run; interning keeps provenance records allocation-free.
fn intern(s: &str) -> &'static str {
    use std::sync::{Mutex, OnceLock};
    static POOL: OnceLock<Mutex<std::collections::HashSet<&'static str>>> = OnceLock::new();
    let mut pool = POOL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(k) = pool.get(s) {
        return k;
    }
    let k: &'static str = Box::leak(s.to_owned().into_boxed_str());
    pool.insert(k);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esl::Headers;

    fn event(pairs: &[(&str, &str)]) -> Event {
        Event::from_envelope(Headers::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn first_listed_source_wins_and_later_events_fill_in() {
        let m = Mapper::new(&MappingConfig::default());
        let mut a = LegAttrs::default();
        m.apply(
            &event(&[("variable_dialed_user", "1001")]),
            "CHANNEL_CREATE",
            1,
            &mut a,
        );
        assert_eq!(a.get(Attr::UserNumber), Some("1001"));
        assert_eq!(a.get(Attr::UserName), None);
        m.apply(
            &event(&[
                ("variable_effective_caller_id_number", "1001"),
                ("variable_effective_caller_id_name", "Alice Smith"),
                ("variable_cc_agent", "1003@default"),
                ("variable_switchhook_tag_Support", "step1"),
            ]),
            "CHANNEL_HANGUP_COMPLETE",
            2,
            &mut a,
        );
        assert_eq!(a.get(Attr::UserName), Some("Alice Smith"));
        let s = a.sourced(Attr::UserNumber).unwrap();
        assert_eq!(s.header, "variable_effective_caller_id_number");
        assert_eq!(s.event, ("CHANNEL_HANGUP_COMPLETE", 2));
        assert_eq!(a.get(Attr::AgentNumber), Some("1003"));
        assert_eq!(a.tags.get("Support").map(String::as_str), Some("step1"));
    }

    #[test]
    fn the_routing_variables_feed_the_route_fields() {
        let m = Mapper::new(&MappingConfig::default());
        let mut a = LegAttrs::default();
        m.apply(
            &event(&[
                ("variable_switchhook_status", "ACK"),
                ("variable_switchhook_latency_ms", "12"),
                ("variable_switchhook_url", "https://crm.example/route"),
            ]),
            "CHANNEL_EXECUTE_COMPLETE",
            1,
            &mut a,
        );
        assert_eq!(a.get(Attr::RouteStatus), Some("ACK"));
        assert_eq!(a.get(Attr::RouteLatency), Some("12"));
        assert_eq!(a.get(Attr::RouteUrl), Some("https://crm.example/route"));
        assert_eq!(Attr::RouteUrl.key(), "route_url");
    }

    #[test]
    fn bad_header_names_are_reported_with_their_key() {
        let cfg = MappingConfig {
            user_name: vec!["variable ok".into()],
            ..Default::default()
        };
        let bad = cfg.check();
        assert_eq!(bad[0].path, "mapping.user_name[0]");
    }
}
