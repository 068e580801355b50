//! Configuration: a TOML file, overridden by `SWITCHHOOK__SECTION__KEY` environment variables.
//!
//! [`Config::load`] stops at nothing: [`check`] collects *every* problem with its key path
//! (`freeswitch.port: invalid type…`), which is what `switchhook check-config` prints.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::esl::{Command, EventFormat};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The FreeSWITCH event socket to connect to.
    pub freeswitch: FreeswitchConfig,
    /// Logging.
    pub log: LogConfig,
    /// Call assembly thresholds and labels.
    pub sessions: crate::session::SessionsConfig,
    /// Which headers feed which CDR field.
    pub mapping: crate::session::mapping::MappingConfig,
    /// How numbers are read.
    pub numbers: crate::session::numbers::NumbersConfig,
    /// The contact directory.
    pub directory: crate::session::directory::DirectoryConfig,
    /// The rate table.
    pub rates: crate::session::rates::RatesConfig,
    /// The webhook outbox.
    pub store: crate::hooks::store::StoreConfig,
    /// Lifecycle webhooks (`[[webhooks]]`).
    pub webhooks: Vec<crate::hooks::WebhookConfig>,
    /// Where webhooks may be sent (`[egress]`).
    pub egress: crate::hooks::egress::EgressConfig,
    /// The routing server (outbound socket).
    pub routing: crate::routing::RoutingConfig,
    /// Routing steps (`[[routes]]`).
    pub routes: Vec<crate::routing::RouteConfig>,
    /// The admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub admin: crate::admin::AdminConfig,
}

/// `[freeswitch]`: where the event socket is and what to subscribe to.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreeswitchConfig {
    /// Host of mod_event_socket.
    pub host: String,
    /// Port of mod_event_socket (8021).
    pub port: u16,
    /// The `auth` password (`ClueCon` on a stock install: change it).
    pub password: String,
    /// `user@domain` for `userauth` instead of `auth` (the password is then the user's).
    pub user: Option<String>,
    /// Event format: `plain`, `json` or `xml`.
    pub format: EventFormat,
    /// Events to subscribe to (`ALL`, or names; `CUSTOM a::b` for subclasses). HEARTBEAT is
    /// always added: the connection watchdog feeds on it.
    pub events: Vec<String>,
    /// `filter <header> <value>` lines sent after subscribing.
    pub filters: Vec<Filter>,
    /// Events to drop with `nixevent` after subscribing to `ALL`.
    pub nixevents: Vec<String>,
    /// Give up a connection attempt after this long.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a command waits for its reply.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Reconnect when nothing at all arrives for this long (HEARTBEAT comes every 20 s).
    #[serde(with = "humantime_serde")]
    pub silence_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`, with full jitter.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Events buffered for consumers before `overflow` applies.
    pub queue: usize,
    /// Bytes of events buffered for consumers (and while subscribing) before `overflow`
    /// applies.
    pub queue_bytes: usize,
    /// What to do when consumers fall behind: `block` (backpressure onto the socket;
    /// FreeSWITCH queues) or `drop` (drop, count, and signal a gap so calls are marked partial).
    pub overflow: Overflow,
    /// Largest envelope accepted, bytes.
    pub max_header_block: usize,
    /// Largest body accepted, bytes.
    pub max_body: usize,
}

impl fmt::Debug for FreeswitchConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreeswitchConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &"<redacted>")
            .field("user", &self.user)
            .field("format", &self.format)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Default for FreeswitchConfig {
    fn default() -> Self {
        FreeswitchConfig {
            host: "127.0.0.1".into(),
            port: 8021,
            password: "ClueCon".into(),
            user: None,
            format: EventFormat::Plain,
            events: vec!["ALL".into()],
            filters: Vec::new(),
            nixevents: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            silence_timeout: Duration::from_secs(65),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            queue: 65_536,
            queue_bytes: 256 << 20,
            overflow: Overflow::Block,
            max_header_block: 1 << 20,
            max_body: 32 << 20,
        }
    }
}

/// A `filter` line.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Header name.
    pub header: String,
    /// Value to match.
    pub value: String,
}

/// The policy when event consumers fall behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Stop reading the socket until consumers catch up.
    Block,
    /// Drop the event, count it, and tell consumers there was a gap.
    Drop,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `switchhook=debug`…); `RUST_LOG` wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// One configuration problem at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path (`freeswitch.port`), or the file for whole-file problems.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The configuration could not be loaded; every problem found is listed.
#[derive(Debug, thiserror::Error)]
#[error("{} configuration error(s):\n{}", .0.len(), .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

const ENV_PREFIX: &str = "SWITCHHOOK";

/// A secret kept out of the configuration file: the value of environment variable `var`,
/// trimmed. The error names the variable, never a value.
pub fn from_env(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        Ok(_) => Err(format!("the environment variable {var:?} is empty")),
        Err(_) => Err(format!("the environment variable {var:?} is not set")),
    }
}

fn sources(path: Option<&Path>) -> config::ConfigBuilder<config::builder::DefaultState> {
    let mut b = config::Config::builder();
    if let Some(p) = path {
        b = b.add_source(config::File::from(p).format(config::FileFormat::Toml));
    }
    b.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("freeswitch.events")
            .with_list_parse_key("freeswitch.nixevents")
            .try_parsing(true),
    )
}

impl Config {
    /// Loads the file (if any) and the environment, and validates. On failure every problem
    /// found is returned.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let issues = check(path);
        if !issues.is_empty() {
            return Err(ConfigErrors(issues));
        }
        let built = sources(path).build().map_err(|e| one(path, e))?;
        built.try_deserialize::<Config>().map_err(|e| one(path, e))
    }
}

fn one(path: Option<&Path>, e: config::ConfigError) -> ConfigErrors {
    ConfigErrors(vec![ConfigIssue {
        path: path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<env>".into()),
        message: e.to_string(),
    }])
}

/// The sections a configuration file may have.
const SECTIONS: [&str; 13] = [
    "freeswitch",
    "log",
    "sessions",
    "mapping",
    "numbers",
    "directory",
    "rates",
    "store",
    "webhooks",
    "egress",
    "routing",
    "routes",
    "admin",
];

/// Every problem in the configuration, each with its key path; empty when it is valid.
pub fn check(path: Option<&Path>) -> Vec<ConfigIssue> {
    let built = match sources(path).build() {
        Ok(b) => b,
        Err(e) => return one(path, e).0,
    };
    let mut issues = Vec::new();
    let top = match built
        .clone()
        .try_deserialize::<config::Map<String, config::Value>>()
    {
        Ok(t) => t,
        Err(e) => return one(path, e).0,
    };
    for key in top.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            issues.push(ConfigIssue {
                path: key.clone(),
                message: "unknown section".into(),
            });
        }
    }
    check_section::<FreeswitchConfig>(&built, "freeswitch", &mut issues);
    check_section::<LogConfig>(&built, "log", &mut issues);
    check_section::<crate::session::SessionsConfig>(&built, "sessions", &mut issues);
    check_section::<crate::session::mapping::MappingConfig>(&built, "mapping", &mut issues);
    check_section::<crate::session::numbers::NumbersConfig>(&built, "numbers", &mut issues);
    check_section::<crate::session::directory::DirectoryConfig>(&built, "directory", &mut issues);
    check_section::<crate::session::rates::RatesConfig>(&built, "rates", &mut issues);
    check_section::<crate::hooks::store::StoreConfig>(&built, "store", &mut issues);
    check_list::<crate::hooks::WebhookConfig>(&built, "webhooks", &mut issues);
    check_section::<crate::hooks::egress::EgressConfig>(&built, "egress", &mut issues);
    check_section::<crate::admin::AdminConfig>(&built, "admin", &mut issues);
    check_section::<crate::routing::RoutingConfig>(&built, "routing", &mut issues);
    check_list::<crate::routing::RouteConfig>(&built, "routes", &mut issues);
    if issues.is_empty() {
        if let Ok(cfg) = built.try_deserialize::<Config>() {
            validate(&cfg, &mut issues);
        }
    }
    issues
}

/// Checks a section field by field: each key the user set is tried on its own over the
/// defaults, so two bad keys give two errors (serde alone stops at the first).
fn check_section<T: DeserializeOwned + Serialize + Default>(
    built: &config::Config,
    section: &str,
    issues: &mut Vec<ConfigIssue>,
) {
    let Ok(table) = built.get_table(section) else {
        if built.get::<config::Value>(section).is_ok() {
            issues.push(ConfigIssue {
                path: section.into(),
                message: "must be a table".into(),
            });
        }
        return;
    };
    for (key, value) in table {
        let attempt = config::Config::builder()
            .set_override(format!("{section}.{key}"), value)
            .and_then(|b| b.build())
            .and_then(|c| c.get::<T>(section));
        if let Err(e) = attempt {
            issues.push(ConfigIssue {
                path: format!("{section}.{key}"),
                message: clean(&e.to_string()),
            });
        }
    }
}

/// A list of tables (`[[webhooks]]`, `[[routes]]`): each entry is checked on its own, with
/// serde's path to the bad key (`webhooks[1].filters[0].op`).
fn check_list<T: DeserializeOwned>(
    built: &config::Config,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) {
    let Ok(value) = built.get::<serde_json::Value>(key) else {
        return;
    };
    let serde_json::Value::Array(entries) = value else {
        issues.push(ConfigIssue {
            path: key.into(),
            message: format!("must be a list of tables: [[{key}]]"),
        });
        return;
    };
    for (i, entry) in entries.into_iter().enumerate() {
        if let Err(e) = serde_path_to_error::deserialize::<_, T>(entry) {
            let inner = e.path().to_string();
            issues.push(ConfigIssue {
                path: if inner == "." {
                    format!("{key}[{i}]")
                } else {
                    format!("{key}[{i}].{inner}")
                },
                message: e.into_inner().to_string(),
            });
        }
    }
}

/// config's messages end in "for key `x`"; the path is printed already.
fn clean(msg: &str) -> String {
    match msg.find(" for key `") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn validate(cfg: &Config, issues: &mut Vec<ConfigIssue>) {
    let mut bad = |path: &str, message: String| {
        issues.push(ConfigIssue {
            path: path.into(),
            message,
        })
    };
    let fs = &cfg.freeswitch;
    if fs.host.trim().is_empty() {
        bad("freeswitch.host", "must not be empty".into());
    }
    if fs.port == 0 {
        bad("freeswitch.port", "must be 1-65535".into());
    }
    if let Err(e) = Command::auth(&fs.password) {
        bad("freeswitch.password", e.to_string());
    }
    if let Some(user) = &fs.user {
        if !user.contains('@') {
            bad("freeswitch.user", format!("{user:?} is not user@domain"));
        } else if let Err(e) = Command::user_auth(user, &fs.password) {
            bad("freeswitch.user", e.to_string());
        }
    }
    if fs.events.is_empty() {
        bad(
            "freeswitch.events",
            "must list at least one event (or ALL)".into(),
        );
    }
    for (i, ev) in fs.events.iter().enumerate() {
        let upper_ok = ev.starts_with("CUSTOM ")
            || ev
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit());
        if !upper_ok || Command::event(fs.format, std::slice::from_ref(ev)).is_err() {
            bad(
                &format!("freeswitch.events[{i}]"),
                format!(
                    "{ev:?} is not an event name (like CHANNEL_ANSWER or CUSTOM callcenter::info)"
                ),
            );
        }
    }
    for (i, f) in fs.filters.iter().enumerate() {
        if let Err(e) = Command::filter(&f.header, &f.value) {
            bad(&format!("freeswitch.filters[{i}]"), e.to_string());
        }
    }
    if let Err(e) = Command::nixevent(&fs.nixevents) {
        bad("freeswitch.nixevents", e.to_string());
    }
    if fs.reconnect_min.is_zero() {
        bad("freeswitch.reconnect_min", "must be more than 0".into());
    }
    if fs.reconnect_max < fs.reconnect_min {
        bad(
            "freeswitch.reconnect_max",
            "must not be less than reconnect_min".into(),
        );
    }
    if fs.silence_timeout < Duration::from_secs(21) {
        bad(
            "freeswitch.silence_timeout",
            "must exceed the 20 s HEARTBEAT interval".into(),
        );
    }
    if fs.queue == 0 {
        bad("freeswitch.queue", "must be at least 1".into());
    }
    if fs.queue_bytes < fs.max_body.min(1 << 20) {
        bad(
            "freeswitch.queue_bytes",
            "must be at least 1 MiB (or max_body, if smaller)".into(),
        );
    }
    if fs.max_header_block < 4096 {
        bad(
            "freeswitch.max_header_block",
            "must be at least 4096".into(),
        );
    }
    if tracing_subscriber::EnvFilter::try_new(&cfg.log.level).is_err() {
        bad(
            "log.level",
            format!("{:?} is not a tracing filter", cfg.log.level),
        );
    }
    if jiff::tz::TimeZone::get(&cfg.sessions.time_zone).is_err() {
        bad(
            "sessions.time_zone",
            format!(
                "{:?} is not an IANA time zone (like Europe/London)",
                cfg.sessions.time_zone
            ),
        );
    }
    if cfg.sessions.expire_after < Duration::from_secs(60) {
        bad("sessions.expire_after", "must be at least 1 minute".into());
    }
    if let Err(e) = crate::session::numbers::NumberReader::check(&cfg.numbers) {
        bad("numbers.default_region", e);
    }
    for (path, message) in crate::session::mapping::Mapper::check(&cfg.mapping) {
        bad(&path, message);
    }
    let numbers = crate::session::numbers::NumberReader::new(&cfg.numbers);
    if let Err(e) = crate::session::directory::Directory::load(&cfg.directory, &numbers) {
        bad("directory.path", e.message);
    }
    if let Err(e) = crate::session::rates::RateTable::load(&cfg.rates) {
        bad("rates.path", e);
    }
    if let Err(problems) = crate::hooks::WebhookSet::compile(&cfg.webhooks, &cfg.egress, &numbers) {
        for (path, message) in problems {
            bad(&path, message);
        }
    }
    for (path, message) in crate::routing::config::check(&cfg.routing, &cfg.routes) {
        bad(&path, message);
    }
    if !cfg.admin.listen.is_empty() && cfg.admin.listen.parse::<std::net::SocketAddr>().is_err() {
        bad(
            "admin.listen",
            format!("{:?} is not ip:port", cfg.admin.listen),
        );
    }
    if let Err(e) = cfg.admin.credentials() {
        bad("admin.password_env", e);
    }
    if cfg.admin.user.is_empty() || cfg.admin.user.contains(':') {
        bad("admin.user", "must be non-empty and without ':'".into());
    }
    if cfg.store.path.as_os_str().is_empty() {
        bad("store.path", "must name a file".into());
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

    #[test]
    fn defaults_are_valid() {
        let f = file("");
        assert!(check(Some(f.path())).is_empty());
        let cfg = Config::load(Some(f.path())).unwrap();
        assert_eq!(cfg.freeswitch.port, 8021);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let f = file(
            "[freeswitch]\nport = \"eighty\"\nhots = \"x\"\nformat = \"yaml\"\nevents = [\"CHANNEL_ANSWER\", \"bad name\"]\n\
             silence_timeout = \"forever\"\n[log]\nformat = \"xml\"\n[webhookz]\nx = 1\n",
        );
        let issues = check(Some(f.path()));
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for want in [
            "freeswitch.port",
            "freeswitch.hots",
            "freeswitch.format",
            "freeswitch.silence_timeout",
            "log.format",
            "webhookz",
        ] {
            assert!(paths.contains(&want), "{want} missing from {issues:#?}");
        }
    }

    #[test]
    fn semantic_errors_after_types_are_right() {
        let f = file("[freeswitch]\nevents = [\"CHANNEL_ANSWER\", \"bad name\"]\nreconnect_min = \"2s\"\nreconnect_max = \"1s\"\n");
        let issues = check(Some(f.path()));
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["freeswitch.events[1]", "freeswitch.reconnect_max"],
            "{issues:#?}"
        );
    }

    #[test]
    fn debug_redacts_the_password() {
        let cfg = FreeswitchConfig {
            password: "hunter2".into(),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
