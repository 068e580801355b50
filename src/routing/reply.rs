//! The routing server's reply: `status=ACK|NAK|ERR&destination=...&callername=...`
//! (form-encoded, the documented format) or a JSON object with the same keys, judged into a
//! [`Decision`] whose values are safe to hand to FreeSWITCH.
//!
//! Nothing from the reply is trusted: the status must be one of the bare tokens (a dial plan
//! branches on it with `transfer switchhook-${switchhook_status}`), the destination must
//! match the configured pattern, and the caller name loses control characters and is bounded.

use regex::Regex;
use serde_json::Value;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Where a routing step ended. These tokens, and only these, become `switchhook_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoutingStatus {
    /// The server accepted the input: the success branch.
    Ack,
    /// The server rejected the input.
    Nak,
    /// The server reported an error.
    Err,
    /// No reply within the deadline.
    Timeout,
    /// A reply that could not be used (garbage, a hostile or invalid destination).
    Invalid,
}

impl RoutingStatus {
    /// Every status, in the order of [`RoutingStatus::index`].
    pub const ALL: [RoutingStatus; 5] = [
        RoutingStatus::Ack,
        RoutingStatus::Nak,
        RoutingStatus::Err,
        RoutingStatus::Timeout,
        RoutingStatus::Invalid,
    ];

    /// Its position in [`RoutingStatus::ALL`] (counters per status are arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The channel-variable token.
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingStatus::Ack => "ACK",
            RoutingStatus::Nak => "NAK",
            RoutingStatus::Err => "ERR",
            RoutingStatus::Timeout => "TIMEOUT",
            RoutingStatus::Invalid => "INVALID",
        }
    }

    /// Whether the dial plan takes the success branch.
    pub fn is_success(self) -> bool {
        self == RoutingStatus::Ack
    }
}

/// The default destination pattern: digits with an optional leading `+` (and `*`, `#`), or an
/// extension name of letters and digits; at most 32 characters.
pub(crate) const DEFAULT_DESTINATION: &str =
    r"^(\+?[0-9*#]{1,32}|[A-Za-z0-9][A-Za-z0-9_.-]{0,31})$";

/// How replies are judged.
#[derive(Debug, Clone)]
pub struct ReplyRules {
    destination: Regex,
    callername_max: usize,
    body_max: usize,
}

impl Default for ReplyRules {
    fn default() -> Self {
        ReplyRules::new(DEFAULT_DESTINATION, 64).expect("the default pattern compiles")
    }
}

/// `[routing] destination_pattern` is not a regular expression.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad destination pattern: {0}")]
pub struct PatternError(#[from] regex::Error);

impl ReplyRules {
    /// Rules with a destination pattern and a caller-name bound. The pattern is always
    /// anchored here: one that looks anchored can still match a part (`^[0-9]+|sales$`).
    pub fn new(destination: &str, callername_max: usize) -> Result<ReplyRules, PatternError> {
        let anchored = format!("^(?:{destination})$");
        Ok(ReplyRules {
            destination: Regex::new(&anchored)?,
            callername_max: callername_max.clamp(1, 256),
            body_max: 8192,
        })
    }
}

impl ReplyRules {
    /// The largest reply body read.
    pub fn body_max(&self) -> usize {
        self.body_max
    }

    /// The longest caller name kept, in characters.
    pub fn callername_max(&self) -> usize {
        self.callername_max
    }
}

/// What a routing step decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The status token.
    pub status: RoutingStatus,
    /// A validated destination, if the reply gave one.
    pub destination: Option<String>,
    /// A cleaned caller name, if the reply gave one.
    pub callername: Option<String>,
    /// Why, in words (for `switchhook_reason`, logs and the CDR); never contains reply bytes
    /// that failed validation.
    pub reason: String,
}

impl Decision {
    /// A decision without values.
    pub fn bare(status: RoutingStatus, reason: impl Into<String>) -> Decision {
        Decision {
            status,
            destination: None,
            callername: None,
            reason: reason.into(),
        }
    }
}

/// Judges an HTTP reply: its status code, `Content-Type` and body.
pub fn judge(
    http_status: u16,
    content_type: Option<&str>,
    body: &[u8],
    rules: &ReplyRules,
) -> Decision {
    if !(200..300).contains(&http_status) {
        return Decision::bare(
            RoutingStatus::Err,
            format!("the routing server answered HTTP {http_status}"),
        );
    }
    if body.len() > rules.body_max {
        return Decision::bare(
            RoutingStatus::Invalid,
            format!("reply longer than {} bytes", rules.body_max),
        );
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Decision::bare(RoutingStatus::Invalid, "reply is not UTF-8");
    };
    let text = text.trim();
    let is_json = content_type.is_some_and(|c| c.to_ascii_lowercase().contains("json"))
        || text.starts_with('{');
    let fields = if is_json {
        json_fields(text)
    } else {
        form_fields(text)
    };
    let fields = match fields {
        Ok(f) => f,
        Err(why) => return Decision::bare(RoutingStatus::Invalid, why),
    };
    let status = match fields
        .status
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("ACK") => RoutingStatus::Ack,
        Some("NAK") => RoutingStatus::Nak,
        Some("ERR") => RoutingStatus::Err,
        Some(_) => return Decision::bare(RoutingStatus::Invalid, "status is not ACK, NAK or ERR"),
        None => return Decision::bare(RoutingStatus::Invalid, "reply has no status"),
    };
    let destination = match fields.destination.filter(|d| !d.is_empty()) {
        Some(d) if rules.destination.is_match(&d) && safe_destination(&d) => Some(d),
        Some(_) => {
            return Decision::bare(
                RoutingStatus::Invalid,
                "destination does not match the allowed pattern",
            )
        }
        None => None,
    };
    let callername = fields
        .callername
        .map(|n| clean_name(&n, rules.callername_max))
        .filter(|n| !n.is_empty());
    Decision {
        status,
        destination,
        callername,
        reason: format!("the routing server answered {}", status.as_str()),
    }
}

/// Whether a destination is safe on a `set` line and in a dial string, whatever the
/// configured pattern allows: nothing FreeSWITCH expands (`${…}`), quotes or escapes, no
/// dial-string separators or channel-variable brackets, no whitespace or control characters.
fn safe_destination(d: &str) -> bool {
    // Printable ASCII only: no control, space, line, direction or zero-width character.
    d.chars().all(|c| {
        c.is_ascii_graphic()
            && !matches!(
                c,
                '$' | '{'
                    | '}'
                    | '['
                    | ']'
                    | '<'
                    | '>'
                    | '\''
                    | '"'
                    | '`'
                    | '\\'
                    | '|'
                    | ','
                    | ';'
                    | '^'
            )
    })
}

/// Drops control characters and characters that mean something to FreeSWITCH's variable
/// expansion and application arguments, collapses whitespace, bounds the length (in chars).
pub(crate) fn clean_name(name: &str, max: usize) -> String {
    let kept: String = name
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        // Format characters (direction overrides, zero-width spaces, the BOM) would let a
        // name display as something other than what it is.
        .filter(|c| {
            !c.is_control()
                && c.general_category() != GeneralCategory::Format
                && !matches!(c, '$' | '{' | '}' | '\'' | '"' | '\\' | '|' | '^')
        })
        .collect();
    kept.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(max)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

#[derive(Default)]
struct Fields {
    status: Option<String>,
    destination: Option<String>,
    callername: Option<String>,
}

fn set(slot: &mut Option<String>, key: &str, value: String) -> Result<(), String> {
    match slot {
        Some(old) if *old != value => Err(format!("{key} given twice with different values")),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn form_fields(text: &str) -> Result<Fields, String> {
    let mut f = Fields::default();
    if !text.contains('=') {
        return Err("reply is neither form-encoded nor JSON".into());
    }
    for (k, v) in form_urlencoded::parse(text.as_bytes()) {
        match k.as_ref() {
            "status" => set(&mut f.status, "status", v.into_owned())?,
            "destination" => set(&mut f.destination, "destination", v.into_owned())?,
            "callername" => set(&mut f.callername, "callername", v.into_owned())?,
            _ => {}
        }
    }
    Ok(f)
}

fn json_fields(text: &str) -> Result<Fields, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("reply is not valid JSON: {e}"))?;
    let Value::Object(o) = v else {
        return Err("JSON reply is not an object".into());
    };
    let get = |k: &str| -> Result<Option<String>, String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(format!("{k} is not a string")),
        }
    };
    Ok(Fields {
        status: get("status")?,
        destination: get("destination")?,
        callername: get("callername")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(body: &str) -> Decision {
        judge(200, None, body.as_bytes(), &ReplyRules::default())
    }

    #[test]
    fn the_documented_replies() {
        assert_eq!(j("status=ACK").status, RoutingStatus::Ack);
        let d = j("status=ACK&destination=%2B31502102544");
        assert_eq!(d.destination.as_deref(), Some("+31502102544"));
        assert_eq!(
            j("status=ACK&destination=215").destination.as_deref(),
            Some("215")
        );
        let d = j("status=ACK&callername=VoysPartners\n");
        assert_eq!(d.callername.as_deref(), Some("VoysPartners"));
        assert_eq!(j("status=NAK").status, RoutingStatus::Nak);
        assert_eq!(j("status=ERR").status, RoutingStatus::Err);
        let d = j(r#"{"status": "ack", "destination": 1003, "callername": "Acme Ltd"}"#);
        assert_eq!(
            (d.status, d.destination.as_deref(), d.callername.as_deref()),
            (RoutingStatus::Ack, Some("1003"), Some("Acme Ltd"))
        );
    }

    #[test]
    fn garbage_and_failures_are_not_success() {
        for body in [
            "",
            "OK",
            "<html>500</html>",
            "status=MAYBE",
            "destination=1003",
            "{\"status\": [1]}",
            "{nope",
            "status=ACK&status=NAK",
        ] {
            let d = j(body);
            assert_eq!(d.status, RoutingStatus::Invalid, "{body:?}");
            assert!(d.destination.is_none());
        }
        assert_eq!(
            judge(503, None, b"status=ACK", &ReplyRules::default()).status,
            RoutingStatus::Err
        );
        assert_eq!(
            judge(200, None, &[0xff, 0xfe], &ReplyRules::default()).status,
            RoutingStatus::Invalid
        );
        let huge = format!("status=ACK&callername={}", "x".repeat(10_000));
        assert_eq!(j(&huge).status, RoutingStatus::Invalid);
    }

    #[test]
    fn direction_and_zero_width_characters_leave_caller_names() {
        assert_eq!(
            clean_name("Jo\u{202e}sselB\u{200b} \u{feff}Bloggs\u{2066}", 64),
            "JosselB Bloggs"
        );
        assert_eq!(clean_name("Zoë Ærø 山田", 64), "Zoë Ærø 山田");
    }

    #[test]
    fn a_loose_pattern_cannot_let_an_expansion_through() {
        // Looks anchored, is not: the alternation leaves each side open.
        let loose = ReplyRules::new(r"^[0-9]+|sales$", 64).unwrap();
        let permissive = ReplyRules::new(r".*", 64).unwrap();
        for dest in [
            "1${system(touch /tmp/pwned)}",
            "1003 XML default",
            "1003\nexit",
            "1003,sofia/gateway/x/1",
            "[origination_caller_id_number=1]1003",
            "1003'",
            "1003\"",
            "1003\\",
            "\u{7f}1003",
            "1003\u{202e}",
            "\u{200b}1003",
            "1003\u{feff}",
        ] {
            let body = format!(
                "status=ACK&destination={}",
                form_urlencoded::byte_serialize(dest.as_bytes()).collect::<String>()
            );
            for rules in [&loose, &permissive] {
                let d = judge(200, None, body.as_bytes(), rules);
                assert_eq!(d.status, RoutingStatus::Invalid, "{dest:?}");
            }
        }
        // What the loose pattern means to allow still passes.
        for ok in ["1003", "sales"] {
            let body = format!("status=ACK&destination={ok}");
            let d = judge(200, None, body.as_bytes(), &loose);
            assert_eq!(d.destination.as_deref(), Some(ok));
        }
        assert_eq!(
            judge(200, None, b"status=ACK&destination=1sales", &loose).status,
            RoutingStatus::Invalid
        );
    }

    #[test]
    fn hostile_destinations_never_pass() {
        for dest in [
            "1003 XML default",
            "1003;hangup",
            "1003%0Aapi%20shutdown",
            "${system(rm -rf /)}",
            "1003&destination=1",
            "1003|bridge",
            "+",
            "../etc/passwd",
            "sofia/gateway/x/1",
            &"9".repeat(33),
        ] {
            let body = format!(
                "status=ACK&destination={}",
                form_urlencoded::byte_serialize(dest.as_bytes()).collect::<String>()
            );
            let d = j(&body);
            assert_eq!(d.status, RoutingStatus::Invalid, "{dest:?}");
            assert!(
                d.destination.is_none() && !d.reason.contains(dest),
                "{dest:?}: {d:?}"
            );
        }
        for ok in [
            "+441610000000",
            "*98",
            "#1",
            "sales",
            "1003",
            &"9".repeat(32),
        ] {
            assert_eq!(
                j(&format!(
                    "status=ACK&destination={}",
                    form_urlencoded::byte_serialize(ok.as_bytes()).collect::<String>()
                ))
                .destination
                .as_deref(),
                Some(ok)
            );
        }
    }

    #[test]
    fn caller_names_are_cleaned_and_bounded() {
        let d = j("status=ACK&callername=Evil%0D%0Aapi%20x%20${hangup}%27%22");
        assert_eq!(d.callername.as_deref(), Some("Evil api x hangup"));
        let long = j(&format!("status=ACK&callername={}", "ab ".repeat(100)));
        assert!(long.callername.unwrap().chars().count() <= 64);
        assert_eq!(clean_name("  Ann\tLee  ", 64), "Ann Lee");
        assert_eq!(clean_name("Zoë Ørsted", 4), "Zoë");
    }

    #[test]
    fn statuses_are_bare_tokens() {
        for (i, st) in RoutingStatus::ALL.iter().enumerate() {
            assert_eq!(st.index(), i, "counters are indexed by ALL's order");
        }
        for s in [
            RoutingStatus::Ack,
            RoutingStatus::Nak,
            RoutingStatus::Err,
            RoutingStatus::Timeout,
            RoutingStatus::Invalid,
        ] {
            assert!(s.as_str().bytes().all(|b| b.is_ascii_uppercase()));
        }
        assert!(ReplyRules::new("(", 10).is_err());
        let r = ReplyRules::new("[0-9]{4}", 10).unwrap();
        assert_eq!(
            judge(200, None, b"status=ACK&destination=12345", &r).status,
            RoutingStatus::Invalid
        );
    }
}
