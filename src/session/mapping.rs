//! `[mapping]`: which channel variables and headers feed which CDR field. Telecom engineers
//! tune this per PBX; the defaults work on a stock FreeSWITCH configuration (directory users,
//! `user/` dial strings, mod_callcenter, a `public` context and an `external` profile for the
//! carrier).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::esl::{Event, EventName};
use crate::problem::Problem;

/// Declares the mapped attributes once: each is a `[mapping]` key (a list of headers, first
/// present wins), an [`Attr`], and its default headers. The section's other keys follow.
macro_rules! mapping_section {
    (
        attributes { $( $(#[$adoc:meta])* $attr:ident $key:ident = [$($header:literal),*], )* }
        others { $( $(#[$odoc:meta])* $okey:ident : $oty:ty = $odefault:expr, )* }
    ) => {
        /// The mapping configuration. Each list names headers (`variable_x` for channel variable `x`),
        /// first present wins; a leg keeps the best value any of its events carried.
        #[derive(Debug, Clone, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct MappingConfig {
            $( $(#[$adoc])* pub $key: Vec<String>, )*
            $( $(#[$odoc])* pub $okey: $oty, )*
        }

        impl Default for MappingConfig {
            fn default() -> Self {
                MappingConfig {
                    $( $key: vec![$($header.to_owned()),*], )*
                    $( $okey: $odefault, )*
                }
            }
        }

        /// A mapped per-leg attribute.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Attr {
            $( #[doc = concat!("`mapping.", stringify!($key), "`.")] $attr, )*
        }

        impl Attr {
            const ALL: [Attr; [$(stringify!($attr)),*].len()] = [$(Attr::$attr),*];

            /// The configuration key.
            pub fn key(self) -> &'static str {
                match self {
                    $( Attr::$attr => stringify!($key), )*
                }
            }

            fn sources(self, m: &MappingConfig) -> &[String] {
                match self {
                    $( Attr::$attr => &m.$key, )*
                }
            }
        }
    };
}

mapping_section! {
    attributes {
        /// A rung or answering device's number (`1001`).
        DeviceNumber device_number = ["variable_dialed_user"],
        /// A device's name (the phone model by default).
        DeviceName device_name = ["variable_sip_user_agent"],
        /// The user behind a device.
        UserNumber user_number = ["variable_effective_caller_id_number", "variable_dialed_user"],
        /// The user's display name (`Alice Smith`).
        UserName user_name = ["variable_effective_caller_id_name"],
        /// A queue agent (`1003@default`; see `strip_domain`).
        AgentNumber agent_number = ["variable_cc_agent"],
        /// The agent's name.
        AgentName agent_name = ["variable_effective_caller_id_name"],
        /// The ring group or queue a leg was rung for; a multi-target bridge without one is
        /// named after the extension that dialled it.
        Group group_name = ["variable_switchhook_group"],
        /// The DID the caller dialled (read on the caller's leg).
        DdiNumber ddi_number = ["variable_inbound_did"],
        /// The DID's name (read on the caller's leg; `ddi_names` is consulted after).
        DdiName ddi_name = ["variable_switchhook_ddi_name"],
        /// `rteID`: a prefix added to the caller's number while routing.
        RoutePrefix route_prefix = ["variable_switchhook_route_prefix"],
        /// `rteName`: a prefix added to the caller's name while routing.
        RouteName route_name = ["variable_switchhook_route_name"],
        /// `routeStep`: the routing step (`[[routes]]` name) the call went through.
        RouteStep route_step = ["variable_switchhook_route"],
        /// `routeStatus`: what the routing step decided (ACK, NAK, ERR, TIMEOUT, INVALID).
        RouteStatus route_status = ["variable_switchhook_status"],
        /// `routeDest`: the destination the routing step returned.
        RouteDestination route_destination = ["variable_switchhook_destination"],
        /// `routeCallerName`: the caller name the routing step set.
        RouteCallerName route_caller_name = ["variable_switchhook_callername"],
        /// `routeReason`: why the routing step decided so.
        RouteReason route_reason = ["variable_switchhook_reason"],
        /// `routeSource`: server, cache, circuit_open, menu or switchhook.
        RouteSource route_source = ["variable_switchhook_source"],
        /// `routeLatencyMs`: time spent asking the routing server.
        RouteLatency route_latency_ms = ["variable_switchhook_latency_ms"],
        /// `routeUrl`: the routing URL asked (scheme, host and path: no query, no
        /// credentials).
        RouteUrl route_url = ["variable_switchhook_url"],
        /// The call's tenant, set by the dial plan (read on the caller's leg; `[[tenants]]`
        /// are consulted after).
        Tenant tenant = ["variable_switchhook_tenant"],
        /// The domain `[[tenants]] domains` are matched against (read on the caller's leg).
        Domain domain = ["variable_domain_name", "variable_sip_req_host"],
    }
    others {
        /// Names for DIDs, by E.164 number.
        ddi_names: BTreeMap<String, String> = BTreeMap::new(),
        /// Headers starting with this become tags (`variable_switchhook_tag_Support: step1` →
        /// `{"Support": "step1"}`). Empty disables tags.
        tag_prefix: String = "variable_switchhook_tag_".into(),
        /// Drop `@domain` from user and agent values (`1003@default` → `1003`).
        strip_domain: bool = true,
        /// Sofia profiles whose legs are trunks (the carrier side).
        trunk_profiles: Vec<String> = vec!["external".into()],
        /// Dial-plan contexts whose inbound legs are trunks.
        trunk_contexts: Vec<String> = vec!["public".into()],
    }
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

impl Attr {
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
    pub fn apply(&self, ev: &Event, event: EventName, at_us: i64, attrs: &mut LegAttrs) {
        let event_name = event.as_str();
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
            EventName::ChannelCreate,
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
            EventName::ChannelHangupComplete,
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
            EventName::ChannelExecuteComplete,
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
