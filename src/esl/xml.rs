//! The `text/event-xml` format, as written by FreeSWITCH's `switch_event_xmlize`:
//! `<event><headers><Name>value</Name>…</headers><Content-Length>n</Content-Length><body>…</body></event>`.
//! Header values are percent-encoded and then XML-escaped; the body is XML-escaped only.

use percent_encoding::percent_decode_str;
use quick_xml::events::Event as Xml;
use quick_xml::Reader;

/// The headers (decoded, in order, repeated names kept) and body of one XML event.
pub(crate) struct XmlEvent {
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

enum Place {
    Top,
    Headers,
    Header(String),
    Body,
    Other,
}

pub(crate) fn parse_event(data: &[u8]) -> Result<XmlEvent, String> {
    let mut reader = Reader::from_reader(data);
    let mut headers = Vec::new();
    let mut body: Option<String> = None;
    let mut stack: Vec<Place> = Vec::new();
    let mut text = String::new();
    let mut saw_event = false;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match ev {
            Xml::Start(start) => {
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                let place = match (stack.last(), name.as_str()) {
                    (None, "event") => {
                        saw_event = true;
                        Place::Top
                    }
                    (None, other) => return Err(format!("root element is <{other}>, not <event>")),
                    (Some(Place::Top), "headers") => Place::Headers,
                    (Some(Place::Top), "body") => Place::Body,
                    (Some(Place::Headers), _) => Place::Header(name),
                    _ => Place::Other,
                };
                text.clear();
                stack.push(place);
            }
            Xml::Empty(start) => {
                if let Some(Place::Headers) = stack.last() {
                    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                    headers.push((name, String::new()));
                }
            }
            Xml::Text(t) => {
                let s = t.unescape().map_err(|e| e.to_string())?;
                text.push_str(&s);
            }
            Xml::CData(c) => text.push_str(&String::from_utf8_lossy(&c)),
            Xml::End(_) => match stack.pop() {
                Some(Place::Header(name)) => {
                    let value = percent_decode_str(&text).decode_utf8_lossy().into_owned();
                    headers.push((name, value));
                    text.clear();
                }
                Some(Place::Body) => {
                    body = Some(std::mem::take(&mut text));
                }
                Some(_) => text.clear(),
                None => return Err("unbalanced end tag".into()),
            },
            Xml::Eof => break,
            _ => {}
        }
    }
    if !saw_event {
        return Err("no <event> element".into());
    }
    if !stack.is_empty() {
        return Err("document ends inside an element".into());
    }
    Ok(XmlEvent { headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_then_xml_escaped_values_and_body() {
        let doc = "<event>\n  <headers>\n    <Event-Name>CUSTOM</Event-Name>\n    \
                   <Caller-Caller-ID-Name>Tom%20%26%20Jerry%20%3Cx%3E</Caller-Caller-ID-Name>\n    \
                   <variable_a>1</variable_a>\n    <variable_a>2</variable_a>\n  </headers>\n  \
                   <Content-Length>12</Content-Length>\n  <body>a &lt;b&gt; &amp; c</body>\n</event>";
        let ev = parse_event(doc.as_bytes()).unwrap();
        assert_eq!(
            ev.headers[1],
            ("Caller-Caller-ID-Name".into(), "Tom & Jerry <x>".into())
        );
        assert_eq!(ev.headers.len(), 4);
        assert_eq!(ev.body.as_deref(), Some("a <b> & c"));
    }

    #[test]
    fn wrong_root_and_truncation_are_errors() {
        assert!(parse_event(b"<nope/>").is_err());
        assert!(parse_event(b"<event><headers><A>1</A>").is_err());
    }
}
