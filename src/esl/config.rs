//! `[freeswitch]`: where the event socket is, what to subscribe to, and how the client
//! behaves when FreeSWITCH or the consumer is slow.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::codec::Limits;
use super::command::Command;
use super::connection::Auth;
use super::event::EventFormat;
use crate::problem::{Problem, Problems};

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
    #[serde(deserialize_with = "names")]
    pub events: Vec<String>,
    /// `filter <header> <value>` lines sent after subscribing.
    pub filters: Vec<Filter>,
    /// Events to drop with `nixevent` after subscribing to `ALL`.
    #[serde(deserialize_with = "names")]
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

/// A list of event names, also given as one comma-separated string: how an environment
/// variable carries it (`SWITCHHOOK__FREESWITCH__EVENTS=CHANNEL_CREATE,CHANNEL_ANSWER`).
fn names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Names::deserialize(d)? {
        Names::List(names) => names,
        Names::Text(text) => text
            .split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
    })
}

impl FreeswitchConfig {
    /// `host:port` of mod_event_socket.
    pub(crate) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `auth` or `userauth` credentials.
    pub(crate) fn auth(&self) -> Auth {
        match &self.user {
            Some(user) => Auth::User {
                user: user.clone(),
                password: self.password.clone(),
            },
            None => Auth::Password(self.password.clone()),
        }
    }

    /// Frame size limits.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_header_block: self.max_header_block,
            max_body: self.max_body,
        }
    }

    /// Every problem with the section's values, by key path.
    pub fn check(&self) -> Vec<Problem> {
        let mut bad = Problems::default();
        if self.host.trim().is_empty() {
            bad.add("freeswitch.host", "must not be empty");
        }
        if self.port == 0 {
            bad.add("freeswitch.port", "must be 1-65535");
        }
        if let Err(e) = Command::auth(&self.password) {
            bad.add("freeswitch.password", e);
        }
        if let Some(user) = &self.user {
            if !user.contains('@') {
                bad.add("freeswitch.user", format!("{user:?} is not user@domain"));
            } else if let Err(e) = Command::user_auth(user, &self.password) {
                bad.add("freeswitch.user", e);
            }
        }
        if self.events.is_empty() {
            bad.add("freeswitch.events", "must list at least one event (or ALL)");
        }
        for (i, ev) in self.events.iter().enumerate() {
            let upper_ok = ev.starts_with("CUSTOM ")
                || ev
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit());
            if !upper_ok || Command::event(self.format, std::slice::from_ref(ev)).is_err() {
                bad.add(
                    format!("freeswitch.events[{i}]"),
                    format!(
                        "{ev:?} is not an event name (like CHANNEL_ANSWER or CUSTOM callcenter::info)"
                    ),
                );
            }
        }
        for (i, f) in self.filters.iter().enumerate() {
            if let Err(e) = Command::filter(&f.header, &f.value) {
                bad.add(format!("freeswitch.filters[{i}]"), e);
            }
        }
        if let Err(e) = Command::nixevent(&self.nixevents) {
            bad.add("freeswitch.nixevents", e);
        }
        if self.reconnect_min.is_zero() {
            bad.add("freeswitch.reconnect_min", "must be more than 0");
        }
        if self.reconnect_max < self.reconnect_min {
            bad.add(
                "freeswitch.reconnect_max",
                "must not be less than reconnect_min",
            );
        }
        if self.silence_timeout < Duration::from_secs(21) {
            bad.add(
                "freeswitch.silence_timeout",
                "must exceed the 20 s HEARTBEAT interval",
            );
        }
        if self.queue == 0 {
            bad.add("freeswitch.queue", "must be at least 1");
        }
        if self.queue_bytes < self.max_body.min(1 << 20) {
            bad.add(
                "freeswitch.queue_bytes",
                "must be at least 1 MiB (or max_body, if smaller)",
            );
        }
        if self.max_header_block < 4096 {
            bad.add("freeswitch.max_header_block", "must be at least 4096");
        }
        bad.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let cfg = FreeswitchConfig {
            password: "hunter2".into(),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn the_defaults_pass_their_check() {
        assert_eq!(FreeswitchConfig::default().check(), vec![]);
    }
}
