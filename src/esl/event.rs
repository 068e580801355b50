//! FreeSWITCH events in one model, whichever format (`plain`, `json`, `xml`) carried them.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::headers::{join_array, split_array, HeaderError, Headers, ARRAY_PREFIX};
use super::names::EventName;

/// The wire format an event arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    /// `text/event-plain`: percent-encoded `Name: value` lines.
    Plain,
    /// `text/event-json`: one JSON object.
    Json,
    /// `text/event-xml`: `<event><headers>…</headers><body>…</body></event>`.
    Xml,
}

impl EventFormat {
    /// The word used in `event <format> …` subscriptions.
    pub fn as_str(self) -> &'static str {
        match self {
            EventFormat::Plain => "plain",
            EventFormat::Json => "json",
            EventFormat::Xml => "xml",
        }
    }
}

/// Why an event body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// A malformed header line in a plain event.
    #[error("event headers: {0}")]
    Headers(#[from] HeaderError),
    /// The inner `Content-Length` is not a number.
    #[error("event Content-Length {0:?} is not a non-negative number")]
    BadContentLength(String),
    /// The inner `Content-Length` runs past the end of the frame.
    #[error("event body of {declared} bytes runs past the frame ({available} bytes left)")]
    TruncatedBody {
        /// Length the event declared.
        declared: usize,
        /// Bytes actually left in the frame.
        available: usize,
    },
    /// The JSON body is not an object of strings/arrays.
    #[error("event json: {0}")]
    Json(#[from] serde_json::Error),
    /// The XML body is malformed.
    #[error("event xml: {0}")]
    Xml(String),
}

/// One FreeSWITCH event: ordered headers (duplicates kept) and an optional body.
#[derive(Clone)]
pub struct Event {
    headers: Headers,
    body: Option<Bytes>,
    format: EventFormat,
    /// Parsed from a `text/event-plain` frame: `headers` then hold the frame body as it
    /// arrived, which `record` writes back.
    plain: bool,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name())
            .field("unique_id", &self.unique_id())
            .field("headers", &self.headers.len())
            .field("body", &self.body.as_ref().map(|b| b.len()))
            .finish()
    }
}

impl Event {
    /// Parses a `text/event-plain` body: percent-encoded header lines, a blank line, and a body
    /// of the inner `Content-Length` when the event has one. Zero-copy: `data` is shared.
    pub fn parse_plain(data: Bytes) -> Result<Self, EventError> {
        let (block_end, body_start) = match memchr::memmem::find(&data, b"\n\n") {
            Some(i) => (i + 1, i + 2),
            None => (data.len(), data.len()),
        };
        let headers = Headers::parse(data.clone(), 0..block_end, true)?;
        let body = match headers.get_raw("Content-Length") {
            None => None,
            Some(raw) => {
                let declared = parse_length(raw).ok_or_else(|| {
                    EventError::BadContentLength(String::from_utf8_lossy(raw).into())
                })?;
                let available = data.len() - body_start;
                if declared > available {
                    return Err(EventError::TruncatedBody {
                        declared,
                        available,
                    });
                }
                Some(data.slice(body_start..body_start + declared))
            }
        };
        Ok(Event {
            headers,
            body,
            format: EventFormat::Plain,
            plain: true,
        })
    }

    /// Builds an event from an already-parsed envelope whose headers *are* the event (the
    /// outbound `connect` reply carries the channel data this way).
    pub fn from_envelope(headers: Headers) -> Self {
        Event {
            headers: headers.with_encoding(true),
            body: None,
            format: EventFormat::Plain,
            plain: false,
        }
    }

    /// Parses a `text/event-json` body. Values are strings or arrays of strings (arrays become
    /// FreeSWITCH `ARRAY::` values); duplicate keys are kept; `_body` is the body.
    pub fn parse_json(data: &[u8]) -> Result<Self, EventError> {
        let JsonEvent(pairs) = serde_json::from_slice(data)?;
        let mut body = None;
        let mut kept = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            if k == "_body" {
                body = Some(Bytes::from(v.into_owned()));
            } else {
                kept.push((k, v));
            }
        }
        let headers = Headers::from_pairs(kept.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
        Ok(Event {
            headers,
            body,
            format: EventFormat::Json,
            plain: false,
        })
    }

    /// Parses a `text/event-xml` body: header values are percent-encoded, then XML-escaped;
    /// an array header appears as one element per item; the body is XML-escaped only.
    pub fn parse_xml(data: &[u8]) -> Result<Self, EventError> {
        let parsed = super::xml::parse_event(data).map_err(EventError::Xml)?;
        let decoded: Vec<(String, String)> = merge_repeated(parsed.headers);
        let headers = Headers::from_pairs(decoded.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Ok(Event {
            headers,
            body: parsed.body.map(Bytes::from),
            format: EventFormat::Xml,
            plain: false,
        })
    }

    /// The `text/event-plain` frame body exactly as FreeSWITCH sent it (None for an event
    /// that arrived as JSON or XML, or was built).
    pub fn plain_bytes(&self) -> Option<&Bytes> {
        self.plain.then(|| self.headers.buffer())
    }

    /// The wire format this event came in.
    pub fn format(&self) -> EventFormat {
        self.format
    }

    /// All headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// A header's decoded value (see [`Headers::get`]).
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers.get(name)
    }

    /// A channel variable (`variable_<name>`).
    pub fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut key = String::with_capacity(9 + name.len());
        key.push_str("variable_");
        key.push_str(name);
        self.headers.get(&key)
    }

    /// `Event-Name`; for `CUSTOM` events callers usually want [`Event::subclass`] too.
    pub fn name(&self) -> Option<Cow<'_, str>> {
        self.headers.get("Event-Name")
    }

    /// `Event-Name` as switchhook tells names apart ([`EventName::Other`] when absent).
    pub fn kind(&self) -> EventName {
        self.name()
            .map(|n| EventName::of(&n))
            .unwrap_or(EventName::Other)
    }

    /// `Event-Subclass` of a CUSTOM event (`callcenter::info`, `valet_parking::info`, …).
    pub fn subclass(&self) -> Option<Cow<'_, str>> {
        self.headers.get("Event-Subclass")
    }

    /// The channel the event is about.
    pub fn unique_id(&self) -> Option<Cow<'_, str>> {
        self.headers.get("Unique-ID")
    }

    /// `Event-Date-Timestamp`: microseconds since the Unix epoch, FreeSWITCH's own clock.
    pub fn timestamp_us(&self) -> Option<i64> {
        self.headers.get("Event-Date-Timestamp")?.parse().ok()
    }

    /// `Event-Sequence`.
    pub fn sequence(&self) -> Option<u64> {
        self.headers.get("Event-Sequence")?.parse().ok()
    }

    /// About how many bytes the event holds (what a queue of events is bounded by).
    pub fn memory(&self) -> usize {
        std::mem::size_of::<Event>()
            + self.headers.memory()
            + self.body.as_ref().map_or(0, |b| b.len())
    }

    /// The event body (BACKGROUND_JOB results, CUSTOM payloads, MESSAGE text…).
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// The body as text (lossy for non-UTF-8).
    pub fn body_text(&self) -> Option<Cow<'_, str>> {
        self.body.as_ref().map(|b| String::from_utf8_lossy(b))
    }
}

/// Serialises as the NDJSON object `replay --emit events` prints: decoded names → values in
/// wire order (duplicates kept), `ARRAY::` values as JSON arrays, `_undef_` as null, the body
/// as `_body`.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map =
            s.serialize_map(Some(self.headers.len() + usize::from(self.body.is_some())))?;
        for (name, value) in self.headers.iter() {
            if value == super::headers::UNDEFINED {
                map.serialize_entry(name, &serde_json::Value::Null)?;
            } else if value.starts_with(ARRAY_PREFIX) {
                map.serialize_entry(name, &split_array(&value))?;
            } else {
                map.serialize_entry(name, &value)?;
            }
        }
        if let Some(body) = self.body_text() {
            map.serialize_entry("_body", &body)?;
        }
        map.end()
    }
}

/// Repeated XML elements are how FreeSWITCH writes an array header; fold them back.
fn merge_repeated(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        match out.last_mut() {
            Some((last, items)) if *last == k => items.push(v),
            _ => out.push((k, vec![v])),
        }
    }
    out.into_iter()
        .map(|(k, items)| (k, join_array(&items)))
        .collect()
}

/// Parses a Content-Length value: ASCII digits only, no sign, bounded.
pub(crate) fn parse_length(raw: &[u8]) -> Option<usize> {
    let raw = trim_ascii(raw);
    if raw.is_empty() || raw.len() > 12 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

fn trim_ascii(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// A JSON event object with duplicate keys preserved.
struct JsonEvent<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de> Deserialize<'de> for JsonEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event object of string or string-array values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(128));
                while let Some(k) = m.next_key::<CowStr<'de>>()? {
                    let JsonValue(v) = m.next_value()?;
                    out.push((k.0, v));
                }
                Ok(JsonEvent(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A string borrowed from the input where it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A header value: a string, an array of strings (joined the FreeSWITCH way), or a scalar
/// some modules emit unquoted.
struct JsonValue<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for JsonValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number, boolean or array of strings")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonValue(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonValue(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonValue(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JsonValue(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JsonValue(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JsonValue(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(JsonValue(Cow::Borrowed(if v { "true" } else { "false" })))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(JsonValue(Cow::Borrowed(super::headers::UNDEFINED)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut items: Vec<Cow<'de, str>> = Vec::new();
                while let Some(CowStr(item)) = s.next_element()? {
                    items.push(item);
                }
                Ok(JsonValue(Cow::Owned(join_array(&items))))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_event_with_body_containing_blank_lines_and_header_like_lines() {
        let body = "line one\n\nFake-Header: not a header\n";
        let text = format!(
            "Event-Name: BACKGROUND_JOB\nJob-UUID: abc\nContent-Length: {}\n\n{}",
            body.len(),
            body
        );
        let e = Event::parse_plain(Bytes::from(text)).unwrap();
        assert_eq!(e.name().unwrap(), "BACKGROUND_JOB");
        assert_eq!(e.body_text().unwrap(), body);
        assert!(e.get("Fake-Header").is_none());
    }

    #[test]
    fn plain_event_body_past_frame_is_an_error() {
        let e = Event::parse_plain(Bytes::from_static(
            b"Event-Name: X\nContent-Length: 50\n\nshort",
        ));
        assert!(matches!(
            e,
            Err(EventError::TruncatedBody {
                declared: 50,
                available: 5
            })
        ));
    }

    #[test]
    fn json_duplicate_keys_arrays_body_and_scalars() {
        let data = br#"{"Event-Name":"COMMAND","Hangup-Cause":"NORMAL_CLEARING","Event-Name":"PRIVATE_COMMAND","variable_x":["a","b"],"variable_y":["only"],"n":5,"_body":"+OK 1\n"}"#;
        let e = Event::parse_json(data).unwrap();
        assert_eq!(e.name().unwrap(), "PRIVATE_COMMAND");
        assert_eq!(e.headers().len(), 6);
        assert_eq!(e.headers().get_list("variable_x").unwrap(), vec!["a", "b"]);
        assert_eq!(e.get("variable_y").unwrap(), "only");
        assert_eq!(e.get("n").unwrap(), "5");
        assert_eq!(e.body_text().unwrap(), "+OK 1\n");
    }

    #[test]
    fn json_event_that_is_not_an_object_is_an_error() {
        assert!(Event::parse_json(b"[1,2]").is_err());
        assert!(Event::parse_json(b"{\"a\":{\"nested\":1}}").is_err());
    }

    #[test]
    fn ndjson_form_has_arrays_nulls_and_body() {
        let e = Event::parse_plain(Bytes::from_static(
            b"Event-Name: X\nvariable_a: ARRAY%3A%3A1%7C%3A2\nvariable_u: _undef_\nContent-Length: 2\n\nhi",
        ))
        .unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["variable_a"], serde_json::json!(["1", "2"]));
        assert_eq!(v["variable_u"], serde_json::Value::Null);
        assert_eq!(v["_body"], "hi");
    }

    #[test]
    fn content_length_parsing_rejects_signs_and_garbage() {
        assert_eq!(parse_length(b"67"), Some(67));
        assert_eq!(parse_length(b" 67 "), Some(67));
        assert_eq!(parse_length(b"-1"), None);
        assert_eq!(parse_length(b"+5"), None);
        assert_eq!(parse_length(b"abc"), None);
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"99999999999999999999"), None);
    }
}
