//! `[routing]` and `[[routes]]`: a configuration contract users script against.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::reply::{ReplyRules, DEFAULT_DESTINATION};
use crate::problem::Problem;
use crate::template::Template;

/// `[routing]`: the outbound-socket server and the rules every step shares.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Where FreeSWITCH's `socket` application connects; empty: no routing server.
    pub listen: String,
    /// A destination from a reply must match this (anchored).
    pub destination_pattern: String,
    /// Longest caller name taken from a reply, in characters.
    pub callername_max: usize,
    /// Consecutive failures (timeouts, connection errors, HTTP 5xx) of one routing URL that
    /// open its circuit breaker; 0 turns breakers off.
    pub breaker_failures: u32,
    /// How long an open breaker sends calls straight to the failure branch before one probe.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Most entries per route in the last-known-good cache.
    pub cache_max: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            listen: String::new(),
            destination_pattern: DEFAULT_DESTINATION.into(),
            callername_max: 64,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            cache_max: 10_000,
        }
    }
}

/// Which number the callee sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerIdForwarding {
    /// The caller's number.
    #[default]
    Caller,
    /// The called number (the DID).
    Called,
    /// Suppressed (privacy).
    Suppressed,
}

/// What happens to the caller name on ACK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerNameMode {
    /// The name the routing server returned.
    #[default]
    Webhook,
    /// `caller_name_text` in front of the caller's name.
    Prepend,
    /// `caller_name_text` instead of the caller's name.
    Replace,
}

/// `[routes.menu]`: collecting a code first (FreeSWITCH's `play_and_get_digits`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MenuConfig {
    /// Collect a code before calling the URL.
    pub enabled: bool,
    /// Time to enter the code.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Tries.
    pub attempts: u32,
    /// Played first.
    pub start_message: String,
    /// Played after a wrong entry.
    pub error_message: String,
    /// Played when nothing was entered in time.
    pub timeout_message: String,
    /// Fewest digits.
    pub min_digits: u32,
    /// Most digits.
    pub max_digits: u32,
    /// Keys that end the entry.
    pub terminators: String,
    /// Let webhooks see the code (as `call.dtmf` and `department-selection`); a PIN is
    /// private by default.
    pub share_digits: bool,
}

impl Default for MenuConfig {
    fn default() -> Self {
        MenuConfig {
            enabled: false,
            timeout: Duration::from_secs(5),
            attempts: 3,
            start_message: "ivr/ivr-please_enter_extension_followed_by_pound.wav".into(),
            error_message: "ivr/ivr-that_was_an_invalid_entry.wav".into(),
            timeout_message: "ivr/ivr-no_valid_entry.wav".into(),
            min_digits: 1,
            max_digits: 10,
            terminators: "#".into(),
            share_digits: false,
        }
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Selected by the channel variable `switchhook_route`.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// URL template: `{code}`, `{did}`, `{callerid}`, `{callername}`.
    pub url: String,
    /// GET or POST.
    #[serde(default = "get")]
    pub method: String,
    /// Which number the callee sees.
    #[serde(default)]
    pub caller_id_forwarding: CallerIdForwarding,
    /// What happens to the caller name.
    #[serde(default)]
    pub caller_name: CallerNameMode,
    /// The text for prepend / replace.
    #[serde(default)]
    pub caller_name_text: String,
    /// The whole step's deadline, retries included.
    #[serde(default = "two_s", with = "humantime_serde")]
    pub deadline: Duration,
    /// Further tries after a connection error or HTTP 5xx/429, within the deadline.
    #[serde(default = "one")]
    pub retries: u32,
    /// Keep ACK answers per (did, callerid, code) this long and use them when the routing
    /// server fails; 0 (the default) turns the last-known-good cache off.
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Transfer target on success (else the dial plan continues).
    #[serde(default)]
    pub on_success: String,
    /// Transfer target on failure.
    #[serde(default)]
    pub on_failure: String,
    /// The digit menu.
    #[serde(default)]
    pub menu: MenuConfig,
}

fn get() -> String {
    "GET".into()
}
fn one() -> u32 {
    1
}
fn two_s() -> Duration {
    Duration::from_secs(2)
}

/// The placeholders a route URL may use. Any channel-data header may be named too:
/// `{variable_sip_h_X-Account}`, `{Caller-ANI}`, `{Channel-Destination-Number}`.
pub(crate) const ROUTE_FIELDS: [&str; 4] = ["code", "did", "callerid", "callername"];

/// Whether a URL placeholder names a channel-data header (see [`ROUTE_FIELDS`]).
pub(crate) fn is_channel_field(f: &str) -> bool {
    ["variable_", "Caller-", "Channel-"]
        .iter()
        .any(|p| f.len() > p.len() && f.starts_with(p))
        && f.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// A sound path or transfer target safe as an application argument: no whitespace, quotes,
/// variable expansion or separators.
fn is_plain_arg(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'$' | b'{' | b'}' | b'\'' | b'"' | b'\\' | b'|' | b';' | b'^'
                )
        })
}

/// Every problem in `[routing]` and `[[routes]]`, as (key path, message).
pub(crate) fn check(routing: &RoutingConfig, routes: &[RouteConfig]) -> Vec<Problem> {
    let mut bad = Vec::new();
    if !routing.listen.is_empty() && routing.listen.parse::<std::net::SocketAddr>().is_err() {
        bad.push(Problem::new(
            "routing.listen",
            format!("{:?} is not ip:port", routing.listen),
        ));
    }
    if let Err(e) = ReplyRules::new(&routing.destination_pattern, routing.callername_max) {
        bad.push(Problem::new("routing.destination_pattern", e));
    }
    let mut names = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let at = |k: &str| format!("routes[{i}].{k}");
        if r.name.is_empty()
            || !r
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            bad.push(Problem::new(
                at("name"),
                format!("{:?}: use letters, digits, _ - .", r.name),
            ));
        }
        if !names.insert(r.name.as_str()) {
            bad.push(Problem::new(
                at("name"),
                format!("{:?} is used twice", r.name),
            ));
        }
        let t = Template::parse(&r.url);
        for f in t.fields() {
            if !ROUTE_FIELDS.contains(&f) && !is_channel_field(f) {
                bad.push(Problem::new(at("url"), format!("unknown placeholder {{{f}}}; use {{code}}, {{did}}, {{callerid}}, {{callername}} or a channel-data header such as {{variable_inbound_did}}")));
            }
        }
        let sample = serde_json::Map::new();
        match reqwest::Url::parse(&t.render(&sample, crate::template::Escape::Url)) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => bad.push(Problem::new(
                at("url"),
                format!("{:?} is not an http(s) URL", r.url),
            )),
        }
        if !matches!(r.method.as_str(), "GET" | "POST") {
            bad.push(Problem::new(at("method"), "GET or POST"));
        }
        if r.deadline < Duration::from_millis(50) || r.deadline > Duration::from_secs(30) {
            bad.push(Problem::new(
                at("deadline"),
                "between 50 ms and 30 s: a caller is waiting",
            ));
        }
        if super::reply::clean_name(&r.caller_name_text, 256) != r.caller_name_text.trim() {
            bad.push(Problem::new(
                at("caller_name_text"),
                "no control characters, quotes, $ { } \\ | ^ (FreeSWITCH would expand them)",
            ));
        }
        if r.retries > 5 {
            bad.push(Problem::new(
                at("retries"),
                "0-5 (the deadline bounds them anyway)",
            ));
        }
        if r.cache_ttl > Duration::from_secs(7 * 24 * 3600) {
            bad.push(Problem::new(at("cache_ttl"), "at most 7 days"));
        }
        if r.caller_name != CallerNameMode::Webhook && r.caller_name_text.is_empty() {
            bad.push(Problem::new(
                at("caller_name_text"),
                "prepend and replace need a text",
            ));
        }
        for (k, v) in [("on_success", &r.on_success), ("on_failure", &r.on_failure)] {
            if !v.is_empty() && !is_plain_arg(v) {
                bad.push(Problem::new(
                    at(k),
                    format!("{v:?} is not a plain transfer target"),
                ));
            }
        }
        let m = &r.menu;
        if m.enabled {
            for (k, v) in [
                ("menu.start_message", &m.start_message),
                ("menu.error_message", &m.error_message),
                ("menu.timeout_message", &m.timeout_message),
            ] {
                if !is_plain_arg(v) {
                    bad.push(Problem::new(
                        at(k),
                        format!("{v:?} is not a plain sound path"),
                    ));
                }
            }
            if m.attempts == 0 || m.attempts > 10 {
                bad.push(Problem::new(at("menu.attempts"), "1-10"));
            }
            if m.min_digits == 0 || m.max_digits < m.min_digits || m.max_digits > 32 {
                bad.push(Problem::new(
                    at("menu.max_digits"),
                    "need 1 <= min_digits <= max_digits <= 32",
                ));
            }
            if m.timeout.is_zero() || m.timeout > Duration::from_secs(60) {
                bad.push(Problem::new(at("menu.timeout"), "between 1 ms and 60 s"));
            }
            if !m
                .terminators
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'#' || b == b'*')
            {
                bad.push(Problem::new(at("menu.terminators"), "digits, # or *"));
            }
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(url: &str) -> RouteConfig {
        serde_json::from_value(serde_json::json!({"name": "crm-lookup", "url": url})).unwrap()
    }

    #[test]
    fn the_contract_defaults_are_valid() {
        let r = route("https://crm.example/route?code={code}&did={did}&callerid={callerid}&callername={callername}");
        assert_eq!(r.deadline, Duration::from_secs(2));
        assert_eq!(r.method, "GET");
        assert!(check(&RoutingConfig::default(), &[r]).is_empty());
    }

    #[test]
    fn mistakes_are_reported_by_key() {
        let mut r = route("https://crm.example/route?x={nope}");
        r.on_failure = "1003 XML default; hangup".into();
        r.caller_name = CallerNameMode::Prepend;
        r.menu.enabled = true;
        r.menu.start_message = "${system(x)}".into();
        r.menu.attempts = 0;
        let routing = RoutingConfig {
            listen: "localhost".into(),
            ..Default::default()
        };
        let keys: Vec<String> = check(&routing, &[r.clone(), r])
            .into_iter()
            .map(|p| p.path)
            .collect();
        for want in [
            "routing.listen",
            "routes[0].url",
            "routes[0].on_failure",
            "routes[0].caller_name_text",
            "routes[0].menu.start_message",
            "routes[0].menu.attempts",
            "routes[1].name",
        ] {
            assert!(
                keys.iter().any(|k| k == want),
                "{want} missing from {keys:?}"
            );
        }
    }
}
