//! The configuration loader and its checks (every section, `[[webhooks]]` templates and
//! filters, `[[routes]]`, `[egress]`): any text gives a configuration or a list of problems.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use switchhook::config::Config;
use switchhook::pipeline::Compiled;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("a temporary file");
    f.write_all(text.as_bytes()).expect("written");
    match Compiled::load(Some(f.path())) {
        Ok((cfg, _)) => {
            let _ = toml_round_trip(&cfg);
        }
        Err(problems) => assert!(!problems.is_empty(), "an error names at least one problem"),
    }
});

fn toml_round_trip(cfg: &Config) -> String {
    serde_json::to_string(cfg).unwrap_or_default()
}
