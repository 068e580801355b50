//! `[nats]`: the NATS servers, the credentials (from the environment) and the stream.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};

/// `[nats]`. Off unless `servers` names at least one server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// `nats://host:port` of each server of the cluster. Empty (the default): no bus.
    pub servers: Vec<String>,
    /// The user name, with the password in `password_env`.
    pub user: String,
    /// The environment variable holding the user's password.
    pub password_env: String,
    /// The environment variable holding a token, instead of a user.
    pub token_env: String,
    /// A NATS credentials file (`.creds`: a user JWT and its key), instead of both.
    pub credentials_file: String,
    /// The JetStream stream the messages go to; made when it does not exist.
    pub stream: String,
    /// The first subject token: messages are published under `PREFIX.>`.
    pub subject_prefix: String,
    /// How many partitions calls are spread over (a subject token), so consumers can share
    /// the work and still see each call in order.
    pub partitions: u32,
    /// How long the stream remembers message ids to drop a message published twice.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long the stream keeps messages (when it is made here).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Copies of each message in a cluster (when the stream is made here).
    pub replicas: usize,
    /// The most messages published before their acknowledgements are awaited.
    pub batch_max: usize,
    /// How long to wait for a connection or an acknowledgement.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Who delivers webhooks: `local` (this process, from its outbox) or `workers`
    /// (`switchhook deliver` processes consuming from the stream; `run` only publishes).
    pub webhooks: WebhookDelivery,
}

/// `[nats] webhooks`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookDelivery {
    /// `run` delivers them.
    #[default]
    Local,
    /// `switchhook deliver` processes do.
    Workers,
}

/// `[worker]`: a `switchhook deliver` process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Its name among the workers (letters, digits, `_` and `-`): the partitions it holds
    /// are leased under it. Empty: the host name and the process id.
    pub name: String,
    /// The most partitions it delivers; 0: its fair share of them among the live workers.
    pub max_partitions: u32,
    /// How long a partition's lease lasts unless renewed (it is renewed every third of
    /// that): a worker that dies hands its partitions over after this long.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long JetStream waits for a sign of life about a moment taken before it offers it
    /// again (the worker tells it every third of that while the moment's webhooks are being
    /// delivered).
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// A moment is acknowledged once its webhooks are finished with (delivered, dead or
    /// parked), or after this long at the latest: its deliveries then stay with this
    /// worker's outbox alone.
    #[serde(with = "humantime_serde")]
    pub ack_after: Duration,
    /// The most moments of a partition taken and not yet acknowledged: beyond, the partition
    /// waits (a receiver down holds up its partition's other webhooks once this many wait).
    pub max_unfinished: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: String::new(),
            max_partitions: 0,
            lease: Duration::from_secs(15),
            ack_wait: Duration::from_secs(30),
            ack_after: Duration::from_secs(600),
            max_unfinished: 1000,
        }
    }
}

impl WorkerConfig {
    /// Every problem with the section's values, by key path.
    pub fn check(&self) -> Vec<Problem> {
        let mut bad = Problems::default();
        if !self.name.is_empty() && !is_token(&self.name) {
            bad.add("worker.name", "use letters, digits, _ and -");
        }
        if self.lease < Duration::from_secs(3) {
            bad.add("worker.lease", "must be at least 3 s");
        }
        if self.ack_wait < Duration::from_secs(1) {
            bad.add("worker.ack_wait", "must be at least 1 s");
        }
        if self.ack_after < self.ack_wait {
            bad.add("worker.ack_after", "must be at least ack_wait");
        }
        if !(1..=100_000).contains(&self.max_unfinished) {
            bad.add("worker.max_unfinished", "must be 1-100000");
        }
        bad.into_vec()
    }

    /// Its name: `name`, or the host name and the process id.
    pub(crate) fn name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{host}-{}", std::process::id())
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: Vec::new(),
            user: String::new(),
            password_env: String::new(),
            token_env: String::new(),
            credentials_file: String::new(),
            stream: "SWITCHHOOK".into(),
            subject_prefix: "switchhook".into(),
            partitions: 16,
            duplicate_window: Duration::from_secs(600),
            max_age: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
            batch_max: 256,
            timeout: Duration::from_secs(5),
            webhooks: WebhookDelivery::Local,
        }
    }
}

/// Whether `s` may be one subject token (and a stream name): letters, digits, `_` and `-`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl NatsConfig {
    /// Whether the bus is on.
    pub fn enabled(&self) -> bool {
        !self.servers.is_empty()
    }

    /// Every problem with the section's values, by key path. The messages name variables,
    /// never their values.
    pub fn check(&self) -> Vec<Problem> {
        let mut bad = Problems::default();
        if !self.enabled() {
            return bad.into_vec();
        }
        for (i, s) in self.servers.iter().enumerate() {
            match reqwest::Url::parse(s) {
                Ok(u) if matches!(u.scheme(), "nats" | "tls") && u.host().is_some() => {
                    if !u.username().is_empty() || u.password().is_some() {
                        bad.add(
                            format!("nats.servers[{i}]"),
                            "carries credentials: use nats.user with nats.password_env, or nats.token_env",
                        );
                    }
                }
                _ => bad.add(
                    format!("nats.servers[{i}]"),
                    format!("{s:?}: use nats://host:port"),
                ),
            }
        }
        let ways = [
            !self.user.is_empty(),
            !self.token_env.is_empty(),
            !self.credentials_file.is_empty(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            bad.add("nats", "use one of user, token_env and credentials_file");
        }
        if self.user.is_empty() != self.password_env.is_empty() {
            bad.add("nats.password_env", "user and password_env go together");
        }
        for (key, var) in [
            ("password_env", &self.password_env),
            ("token_env", &self.token_env),
        ] {
            if !var.is_empty() {
                if let Err(e) = crate::secrets::from_env(var) {
                    bad.add(format!("nats.{key}"), e);
                }
            }
        }
        if !self.credentials_file.is_empty()
            && !std::path::Path::new(&self.credentials_file).is_file()
        {
            bad.add("nats.credentials_file", "no such file");
        }
        if !is_token(&self.stream) {
            bad.add("nats.stream", "use letters, digits, _ and -");
        }
        if !self.subject_prefix.split('.').all(is_token) {
            bad.add(
                "nats.subject_prefix",
                "use tokens of letters, digits, _ and -, separated by dots",
            );
        }
        if !(1..=1024).contains(&self.partitions) {
            bad.add("nats.partitions", "must be 1 to 1024");
        }
        if self.duplicate_window < Duration::from_secs(1) {
            bad.add("nats.duplicate_window", "must be at least 1 s");
        }
        if self.max_age < self.duplicate_window {
            bad.add("nats.max_age", "must be at least the duplicate window");
        }
        if !(1..=5).contains(&self.replicas) {
            bad.add("nats.replicas", "must be 1 to 5");
        }
        if self.batch_max == 0 || self.batch_max > 10_000 {
            bad.add("nats.batch_max", "must be 1 to 10000");
        }
        if self.timeout.is_zero() {
            bad.add("nats.timeout", "must be more than 0");
        }
        bad.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(c: &NatsConfig) -> Vec<String> {
        c.check().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn off_by_default_and_each_mistake_named_by_its_key() {
        assert!(!NatsConfig::default().enabled());
        assert!(NatsConfig::default().check().is_empty());
        let good = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..NatsConfig::default()
        };
        assert!(paths(&good).is_empty());
        let bad = NatsConfig {
            servers: vec!["nats://me:hunter2@127.0.0.1:4222".into(), "http://x".into()],
            user: "me".into(),
            token_env: "SWITCHHOOK_TEST_UNSET_NATS_TOKEN".into(),
            stream: "a.b".into(),
            subject_prefix: "sw.*".into(),
            partitions: 0,
            ..NatsConfig::default()
        };
        assert_eq!(
            paths(&bad),
            [
                "nats.servers[0]",
                "nats.servers[1]",
                "nats",
                "nats.password_env",
                "nats.token_env",
                "nats.stream",
                "nats.subject_prefix",
                "nats.partitions"
            ]
        );
        assert!(!bad
            .check()
            .iter()
            .any(|p| p.to_string().contains("hunter2")));
    }
}
