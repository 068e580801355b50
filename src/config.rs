//! Configuration: a TOML file, overridden by `SWITCHHOOK__SECTION__KEY` environment variables.
//!
//! Each section belongs to the module that uses it (its type, its defaults, the checks of its
//! values); [`Config`] is their sum, declared once in [`sections!`]. Reading never stops at
//! the first mistake: each key is tried on its own, a section with a bad key is replaced by
//! its defaults so the rest can still be checked, and every problem comes back with its key
//! path. Compiling the sections ([`crate::pipeline::Compiled`]) finds the rest.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};

const ENV_PREFIX: &str = "SWITCHHOOK";

/// Declares the sections once: the [`Config`] struct, the list of section names and the
/// reading of each.
macro_rules! sections {
    ($( $(#[$doc:meta])* $kind:ident $key:ident : $ty:ty ),* $(,)?) => {
        /// The whole configuration: one field per section.
        #[derive(Debug, Clone, Default, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Config {
            $( $(#[$doc])* pub $key: sections!(@type $kind $ty), )*
        }

        /// The sections a configuration file may have.
        const SECTIONS: &[&str] = &[$(stringify!($key)),*];

        impl Config {
            fn read_sections(built: &config::Config, problems: &mut Problems) -> Config {
                Config {
                    $( $key: sections!(@read $kind $ty, built, stringify!($key), problems), )*
                }
            }
        }
    };
    (@type table $ty:ty) => { $ty };
    (@type list $ty:ty) => { Vec<$ty> };
    (@read table $ty:ty, $built:expr, $key:expr, $problems:expr) => {
        read_table::<$ty>($built, $key, $problems)
    };
    (@read list $ty:ty, $built:expr, $key:expr, $problems:expr) => {
        read_list::<$ty>($built, $key, $problems)
    };
}

sections! {
    /// `[freeswitch]`: the event socket to connect to.
    table freeswitch: crate::esl::FreeswitchConfig,
    /// `[log]`.
    table log: crate::logging::LogConfig,
    /// `[sessions]`: call assembly thresholds and labels.
    table sessions: crate::session::SessionsConfig,
    /// `[mapping]`: which headers feed which CDR field.
    table mapping: crate::session::mapping::MappingConfig,
    /// `[numbers]`: how numbers are read.
    table numbers: crate::session::numbers::NumbersConfig,
    /// `[directory]`: the contact directory.
    table directory: crate::session::directory::DirectoryConfig,
    /// `[rates]`: the rate table.
    table rates: crate::session::rates::RatesConfig,
    /// `[[outcomes]]`: how a finished call's `outcome` is named.
    list outcomes: crate::session::outcome::OutcomeRule,
    /// `[[tenants]]`: which customer a call belongs to.
    list tenants: crate::session::tenants::TenantConfig,
    /// `[store]`: the webhook outbox.
    table store: crate::hooks::store::StoreConfig,
    /// `[[webhooks]]`: lifecycle webhooks.
    list webhooks: crate::hooks::WebhookConfig,
    /// `[egress]`: where webhooks may be sent.
    table egress: crate::hooks::egress::EgressConfig,
    /// `[routing]`: the routing server (outbound socket).
    table routing: crate::routing::RoutingConfig,
    /// `[[routes]]`: routing steps.
    list routes: crate::routing::RouteConfig,
    /// `[admin]`: the admin endpoint and live page.
    table admin: crate::admin::AdminConfig,
    /// `[call_store]`: the PostgreSQL call store.
    table call_store: crate::call_store::CallStoreConfig,
    /// `[nats]`: publishing to NATS JetStream.
    table nats: crate::bus::NatsConfig,
    /// `[worker]`: a `switchhook deliver` process.
    table worker: crate::bus::WorkerConfig,
}

fn sources(path: Option<&Path>) -> config::ConfigBuilder<config::builder::DefaultState> {
    let mut b = config::Config::builder();
    if let Some(p) = path {
        b = b.add_source(config::File::from(p).format(config::FileFormat::Toml));
    }
    // Values from the environment stay the strings they were given (`0123` is a password,
    // not 123); each key's type reads its own value, and the event lists also take a
    // comma-separated string.
    b.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__"),
    )
}

impl Config {
    /// Reads the file (if any) and the environment. Every section that reads cleanly is
    /// kept; one with a problem is replaced by its defaults, and the problems are returned
    /// beside the result, so the caller can go on to compile and report everything at once.
    pub fn read(path: Option<&Path>) -> (Config, Vec<Problem>) {
        let whole_file = |e: config::ConfigError| {
            let at = path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<env>".into());
            (Config::default(), vec![Problem::new(at, e)])
        };
        let built = match sources(path).build() {
            Ok(b) => b,
            Err(e) => return whole_file(e),
        };
        let top = match built
            .clone()
            .try_deserialize::<config::Map<String, config::Value>>()
        {
            Ok(t) => t,
            Err(e) => return whole_file(e),
        };
        let mut problems = Problems::default();
        for key in top.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.add(key.clone(), "unknown section");
            }
        }
        let cfg = Config::read_sections(&built, &mut problems);
        (cfg, name_variables(problems.into_vec()))
    }
}

/// Names the `SWITCHHOOK__…` variable behind each problem whose key one set.
pub(crate) fn name_variables(mut problems: Vec<Problem>) -> Vec<Problem> {
    for p in &mut problems {
        p.variable = variable_for(&p.path);
    }
    problems
}

/// The `SWITCHHOOK__…` variable that set key `path` (or, for a section, one of its keys), if
/// one is set: a mistake there is named as the variable, not blamed on the file.
fn variable_for(path: &str) -> Option<String> {
    if path.contains('[') {
        return None;
    }
    let key = format!("{ENV_PREFIX}__{}", path.replace('.', "__")).to_ascii_uppercase();
    let section = format!("{key}__");
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .find(|k| {
            let k = k.to_ascii_uppercase();
            k == key || k.starts_with(&section)
        })
}

/// A table section, key by key: each key the user set is tried on its own over the
/// defaults, so two bad keys give two problems (serde alone stops at the first).
fn read_table<T: DeserializeOwned + Serialize + Default>(
    built: &config::Config,
    section: &str,
    problems: &mut Problems,
) -> T {
    let Ok(table) = built.get_table(section) else {
        if built.get::<config::Value>(section).is_ok() {
            problems.add(section, "must be a table");
        }
        return T::default();
    };
    let mut clean = true;
    for (key, value) in table {
        let attempt = config::Config::builder()
            .set_override(format!("{section}.{key}"), value)
            .and_then(|b| b.build())
            .and_then(|c| c.get::<T>(section));
        if let Err(e) = attempt {
            problems.add(format!("{section}.{key}"), without_key(&e.to_string()));
            clean = false;
        }
    }
    if !clean {
        return T::default();
    }
    built.get::<T>(section).unwrap_or_else(|e| {
        // Each key read on its own, but not all together: say so rather than guess.
        problems.add(section, without_key(&e.to_string()));
        T::default()
    })
}

/// A list of tables (`[[webhooks]]`, `[[routes]]`), entry by entry, with serde's path to the
/// bad key (`webhooks[1].filters[0].op`). Entries that read cleanly are kept.
fn read_list<T: DeserializeOwned>(
    built: &config::Config,
    key: &str,
    problems: &mut Problems,
) -> Vec<T> {
    let Ok(value) = built.get::<serde_json::Value>(key) else {
        return Vec::new();
    };
    let serde_json::Value::Array(entries) = value else {
        problems.add(key, format!("must be a list of tables: [[{key}]]"));
        return Vec::new();
    };
    let mut good = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        match serde_path_to_error::deserialize::<_, T>(entry) {
            Ok(t) => good.push(t),
            Err(e) => {
                let inner = e.path().to_string();
                let at = if inner == "." {
                    format!("{key}[{i}]")
                } else {
                    format!("{key}[{i}].{inner}")
                };
                problems.add(at, e.into_inner());
            }
        }
    }
    good
}

/// config's messages end in "for key `x`"; the path is printed already.
fn without_key(msg: &str) -> String {
    match msg.find(" for key `") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|i| i.path.as_str()).collect()
    }

    #[test]
    fn defaults_read_cleanly() {
        let f = file("");
        let (cfg, problems) = Config::read(Some(f.path()));
        assert_eq!(problems, vec![]);
        assert_eq!(cfg.freeswitch.port, 8021);
    }

    #[test]
    fn every_type_error_is_reported_with_its_path() {
        let f = file(
            "[freeswitch]\nport = \"eighty\"\nhots = \"x\"\nformat = \"yaml\"\n\
             silence_timeout = \"forever\"\n[log]\nformat = \"xml\"\n[webhookz]\nx = 1\n\
             [[routes]]\nname = \"a\"\nbogus = 1\n",
        );
        let (_, problems) = Config::read(Some(f.path()));
        let paths = paths(&problems);
        for want in [
            "freeswitch.port",
            "freeswitch.hots",
            "freeswitch.format",
            "freeswitch.silence_timeout",
            "log.format",
            "webhookz",
            "routes[0].bogus",
        ] {
            assert!(paths.contains(&want), "{want} missing from {problems:#?}");
        }
    }

    #[test]
    fn a_section_with_a_bad_key_falls_back_to_its_defaults_and_others_stay() {
        let f = file("[freeswitch]\nport = \"eighty\"\n[sessions]\ntime_zone = \"Europe/Paris\"\n");
        let (cfg, problems) = Config::read(Some(f.path()));
        assert_eq!(paths(&problems), vec!["freeswitch.port"]);
        assert_eq!(cfg.freeswitch.port, 8021);
        assert_eq!(cfg.sessions.time_zone, "Europe/Paris");
    }
}
