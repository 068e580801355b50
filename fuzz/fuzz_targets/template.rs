//! Webhook templates: any text parses; rendered with hostile field values, a URL part stays
//! percent-encoded, a header value has no line break, and a JSON body that passes the
//! configuration check (`Template::check_json`) stays valid JSON once filled in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use switchhook::template::{Escape, Template};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let t = Template::parse(text);
    let hostile = "a\"b\\c\r\nX-Injected: 1\n{cli}&x=1#/../%00\u{202e}";
    let mut fields = Map::new();
    let mut empty = Map::new();
    for f in t.fields() {
        fields.insert(f.to_owned(), Value::String(hostile.into()));
        empty.insert(f.to_owned(), Value::String(String::new()));
    }
    let header = t.render(&fields, Escape::Header);
    let literal = t.render(&Map::new(), Escape::Header);
    if !literal.contains(['\r', '\n']) {
        assert!(!header.contains(['\r', '\n']), "{header:?}");
    }
    let url = t.render(&fields, Escape::Url);
    if !t
        .render(&empty, Escape::Url)
        .contains(['\r', '\n', ' ', '"'])
    {
        assert!(!url.contains(['\r', '\n', ' ', '"']), "{url:?}");
    }
    let _ = t.render(&fields, Escape::Form);
    // A body that passes the configuration check gives JSON whatever the values.
    if t.check_json().is_ok() {
        let json = t.render(&fields, Escape::Json);
        assert!(serde_json::from_str::<Value>(&json).is_ok(), "{json}");
    }
});
