//! The routing server's reply judge: whatever the body and its content type, and with a loose
//! destination pattern such as an operator might write, nothing FreeSWITCH would expand or
//! split reaches a value that goes to the channel.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchhook::routing::{judge, ReplyRules};

fn unsafe_for_freeswitch(c: char) -> bool {
    matches!(
        c,
        '$' | '{' | '}' | '\'' | '"' | '\\' | '\u{202e}' | '\u{200b}' | '\u{feff}'
    ) || c.is_control()
}

fuzz_target!(|data: &[u8]| {
    let strict = ReplyRules::default();
    let loose = ReplyRules::new(r"[0-9]+|sales.*|.*", 64).expect("compiles");
    for rules in [&strict, &loose] {
        for content_type in [
            None,
            Some("application/x-www-form-urlencoded"),
            Some("text/plain; charset=utf-8"),
            Some("application/json"),
        ] {
            let d = judge(200, content_type, data, rules);
            for v in d.destination.iter().chain(d.callername.iter()) {
                assert!(!v.chars().any(unsafe_for_freeswitch), "{v:?} from {d:?}");
            }
            if let Some(name) = &d.callername {
                assert!(name.chars().count() <= rules.callername_max(), "{name:?}");
            }
        }
    }
});
