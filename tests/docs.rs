//! The reference in `docs/` is tied to the code: a field, a trigger or a configuration key
//! added to one and not the other fails here.

fn doc(name: &str) -> String {
    let path = format!("{}/docs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_cdr_reference_names_every_field() {
    let text = doc("cdr.md");
    let fields = switchhook::session::Cdr::field_names();
    assert_eq!(fields.len(), 83);
    for f in fields {
        assert!(
            text.contains(&format!("| `{f}` |")),
            "docs/cdr.md lacks `{f}`"
        );
    }
}

#[test]
fn the_webhook_reference_names_every_trigger() {
    let text = doc("webhooks.md");
    for t in switchhook::session::Trigger::ALL {
        assert!(
            text.contains(&format!("| `{}` |", t.name())),
            "docs/webhooks.md lacks {}",
            t.name()
        );
    }
}

#[test]
fn the_configuration_reference_is_the_example_file() {
    let text = doc("configuration.md");
    let start = text.find("```toml\n").expect("a toml block") + 8;
    let end = start + text[start..].find("```").unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/switchhook.example.toml"
    ))
    .unwrap();
    // The file opens with a few lines of comment about itself.
    let body = example.trim_start_matches(|c| c != '[');
    assert_eq!(&text[start..end], body);
}

#[test]
fn the_call_store_reference_names_every_column() {
    let text = doc("call-store.md");
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/call_store/migrations/V1__calls.sql"
    ))
    .unwrap();
    let columns: Vec<&str> = schema
        .lines()
        .filter(|l| l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(columns.len() > 80, "{columns:?}");
    for c in columns {
        assert!(
            text.contains(&format!("| `{c}` |")),
            "docs/call-store.md lacks the column `{c}`"
        );
    }
}

/// `cliState`'s area-code table is exactly what its generator makes of libphonenumber's data
/// (run where Python has `phonenumbers` and `pycountry`, as `.ci/run` installs them).
#[test]
fn the_us_area_code_table_is_generated_from_libphonenumber() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/tools/us-area-codes.py"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "tools/us-area-codes.py needs the Python packages phonenumbers and pycountry (.ci/run installs them): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = std::fs::read_to_string(format!("{root}/src/session/us_area_codes.txt")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        kept,
        "the table differs from the data: refresh it with tools/us-area-codes.py"
    );
}
