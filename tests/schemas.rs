//! The payload contract: a JSON Schema per trigger and one for the CDR in `docs/schemas/`,
//! an example payload per trigger beside them, and every webhook `replay --emit webhooks` makes of every bundled capture (a webhook on
//! every trigger, the standard JSON payload) validates against its trigger's schema, formats
//! included; every finished call's CDR validates against the CDR's.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn schema(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schemas")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn captures() -> Vec<PathBuf> {
    common::SCENARIOS
        .iter()
        .map(|(name, _)| common::fixture(&format!("freeswitch-1.10/{name}.esl")))
        .collect()
}

fn replay(emit: &str) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchhook"))
        .args(["replay", "--emit", emit])
        .args(captures())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn validator(schema: &Value, registry: &jsonschema::Registry) -> jsonschema::Validator {
    jsonschema::options()
        .with_registry(registry)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("an invalid schema: {e}"))
}

fn problems(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_cdr_schema_names_every_field() {
    let cdr = schema("cdr.schema.json");
    let named: BTreeSet<&str> = cdr["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let fields: BTreeSet<&str> = switchhook::session::Cdr::field_names()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(named, fields);
}

#[test]
fn every_replayed_webhook_and_cdr_validates_against_its_schema() {
    let cdr = schema("cdr.schema.json");
    let registry = jsonschema::Registry::new()
        .add(cdr["$id"].as_str().unwrap(), cdr.clone())
        .unwrap()
        .prepare()
        .unwrap();
    let by_trigger: HashMap<&str, jsonschema::Validator> = switchhook::session::Trigger::ALL
        .iter()
        .map(|t| {
            (
                t.name(),
                validator(&schema(&format!("{}.schema.json", t.name())), &registry),
            )
        })
        .collect();

    let requests = replay("webhooks");
    let mut seen = BTreeSet::new();
    for r in &requests {
        let trigger = r["trigger"].as_str().unwrap();
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        let bad = problems(&by_trigger[trigger], &body);
        assert!(
            bad.is_empty(),
            "{trigger} of call {}: {bad:#?}",
            r["call_id"]
        );
        seen.insert(trigger.to_owned());
    }
    // The captures reach every trigger.
    assert_eq!(
        seen.len(),
        switchhook::session::Trigger::ALL.len(),
        "{seen:?}"
    );

    // The documented example of each trigger is a real one and keeps to its schema.
    for t in switchhook::session::Trigger::ALL {
        let example = schema(&format!("examples/{}.json", t.name()));
        let bad = problems(&by_trigger[t.name()], &example);
        assert!(
            bad.is_empty(),
            "docs/schemas/examples/{}.json: {bad:#?}",
            t.name()
        );
    }

    let cdrs = validator(&cdr, &registry);
    let records = replay("cdr");
    assert!(records.len() >= 30);
    for c in &records {
        let bad = problems(&cdrs, c);
        assert!(bad.is_empty(), "CDR {}: {bad:#?}", c["id"]);
    }

    // A payload that breaks the contract is caught (the schemas are not vacuous).
    let mut broken: Value = serde_json::from_str(requests[0]["body"].as_str().unwrap()).unwrap();
    broken["cdr"]["ans"] = 2.into();
    broken["surprise"] = true.into();
    assert_eq!(
        problems(
            &by_trigger[requests[0]["trigger"].as_str().unwrap()],
            &broken
        )
        .len(),
        2
    );
}
