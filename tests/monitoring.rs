//! The Prometheus alerting rules and the Grafana dashboard in `deploy/` stay true to what
//! `/metrics` exports: the rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), and every series the rules and the dashboard name is one switchhook
//! exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn deploy(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)")
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_tests() {
    for args in [
        &["check", "rules", "switchhook-rules.yml"][..],
        &["test", "rules", "switchhook-rules.test.yml"][..],
    ] {
        let out = promtool(args);
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The metric families `/metrics` can carry, from the collector's source: every quoted
/// `switchhook_…` and `process_…` name.
fn exported() -> BTreeSet<String> {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin/metrics.rs"))
            .unwrap();
    src.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("switchhook_") || s.starts_with("process_"))
        .filter(|s| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// Every metric name in `text`, its series suffix taken off.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts = (rest.starts_with("switchhook_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(base.to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_rules_and_the_dashboard_name_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("switchhook_esl_connected") && exported.contains("process_open_fds"));
    let rules = std::fs::read_to_string(deploy("prometheus/switchhook-rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(deploy("grafana/switchhook-dashboard.json")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<&str> = parsed["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 10);
    for (what, text) in [("rules", rules), ("dashboard", exprs.join("\n"))] {
        let names = named(&text);
        assert!(!names.is_empty());
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "the {what} name series switchhook does not export: {unknown:?}"
        );
    }
}
