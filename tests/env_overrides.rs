//! `SWITCHHOOK__SECTION__KEY` overrides: a string key keeps the string it was given, whatever
//! it looks like; numbers, switches and lists still read. In a test binary of its own: it
//! changes the process's environment.

use switchhook::config::Config;

/// The value at `section.key` of a configuration, as JSON.
fn value(cfg: &Config, section: &str, key: &str) -> serde_json::Value {
    serde_json::to_value(cfg).unwrap()[section][key].clone()
}

fn read_with(var: &str, value: &str) -> (Config, Vec<switchhook::problem::Problem>) {
    std::env::set_var(var, value);
    let read = Config::read(None);
    std::env::remove_var(var);
    read
}

#[test]
fn environment_overrides_keep_strings_as_given_and_still_read_numbers_and_lists() {
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let mut string_keys = Vec::new();
    for (section, table) in defaults.as_object().unwrap() {
        let Some(table) = table.as_object() else {
            continue; // [[webhooks]] and [[routes]] are lists of tables
        };
        for (key, v) in table {
            if v.is_string() || v.is_null() {
                string_keys.push((section.clone(), key.clone()));
            }
        }
    }
    let mut kept = Vec::new();
    for (section, key) in &string_keys {
        let var = format!(
            "SWITCHHOOK__{}__{}",
            section.to_ascii_uppercase(),
            key.to_ascii_uppercase()
        );
        for given in ["0123", "007", "True", "1e3", "12.50"] {
            let (cfg, problems) = read_with(&var, given);
            let path = format!("{section}.{key}");
            if problems.iter().any(|p| p.path == path) {
                // Not a free-form string (a duration, a format, an enum): refused, not bent.
                continue;
            }
            assert_eq!(problems, vec![], "{var}={given}");
            assert_eq!(
                value(&cfg, section, key),
                serde_json::Value::String(given.to_owned()),
                "{var}={given} must stay {given:?}"
            );
            kept.push(format!("{path}={given}"));
        }
    }
    // The free-form strings: password, host, user, time zone names aside, paths, names.
    for must in [
        "freeswitch.password=0123",
        "freeswitch.host=007",
        "freeswitch.user=True",
        "sessions.pbx_id=1e3",
        "sessions.pbx_name=12.50",
        "mapping.tag_prefix=0123",
        "admin.password_env=007",
        "admin.user=True",
        "directory.name=1e3",
        "store.path=0123",
    ] {
        assert!(kept.iter().any(|k| k == must), "{must} not kept: {kept:?}");
    }

    // Numbers, switches and durations still read from their strings.
    let (cfg, problems) = read_with("SWITCHHOOK__FREESWITCH__PORT", "8022");
    assert_eq!((cfg.freeswitch.port, problems), (8022, vec![]));
    let (cfg, problems) = read_with("SWITCHHOOK__MAPPING__STRIP_DOMAIN", "false");
    assert_eq!((cfg.mapping.strip_domain, problems), (false, vec![]));
    let (cfg, problems) = read_with("SWITCHHOOK__STORE__KEEP_DELIVERED", "2d");
    assert_eq!(
        (cfg.store.keep_delivered.as_secs(), problems),
        (2 * 86_400, vec![])
    );
    // Event lists are comma-separated.
    let (cfg, problems) = read_with(
        "SWITCHHOOK__FREESWITCH__EVENTS",
        "CHANNEL_CREATE, CHANNEL_ANSWER,CUSTOM callcenter::info",
    );
    assert_eq!(problems, vec![]);
    assert_eq!(
        cfg.freeswitch.events,
        [
            "CHANNEL_CREATE",
            "CHANNEL_ANSWER",
            "CUSTOM callcenter::info"
        ]
    );
    // A number where a number belongs is still checked.
    let (_, problems) = read_with("SWITCHHOOK__FREESWITCH__PORT", "eighty");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "freeswitch.port");
}
