//! The admin endpoint: `/metrics` (Prometheus text, prometheus-client), `/healthz` (the
//! process is alive) and `/readyz` (the event socket is connected and subscribed, the outbox
//! answers), and a live page of the calls in progress, the last calls and the latest
//! deliveries (`/`). Off unless `[admin] listen` is set; keep it on loopback or behind a
//! firewall.

pub(crate) mod auth;
pub mod live;
pub(crate) mod metrics;
pub(crate) mod server;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};
use crate::secrets::SecretError;

pub use live::LiveView;
pub(crate) use metrics::{PipelineStats, Sources};
pub(crate) use server::AdminServer;

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `ip:port` of the admin endpoint; empty (the default): off.
    pub listen: String,
    /// The environment variable holding a password: when set, `/`, `/live.json` and
    /// `/metrics` require HTTP Basic authentication as `user` (`/healthz` and `/readyz` stay
    /// open for probes). Empty (the default): no authentication.
    pub password_env: String,
    /// The Basic-auth user name.
    pub user: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: String::new(),
            password_env: String::new(),
            user: "switchhook".into(),
        }
    }
}

impl AdminConfig {
    /// The Basic-auth credentials, read from the environment; Err names the variable (never
    /// a value). None: no authentication.
    pub fn credentials(&self) -> Result<Option<auth::Credentials>, SecretError> {
        if self.password_env.is_empty() {
            return Ok(None);
        }
        let password = crate::secrets::from_env(&self.password_env)?;
        Ok(Some(auth::Credentials::new(&self.user, &password)))
    }

    /// Every problem with the section's values, by key path (the password variable must be
    /// set where it is named).
    pub fn check(&self) -> Vec<Problem> {
        let mut bad = Problems::default();
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            bad.add("admin.listen", format!("{:?} is not ip:port", self.listen));
        }
        if let Err(e) = self.credentials() {
            bad.add("admin.password_env", e);
        }
        if self.user.is_empty() || self.user.contains(':') {
            bad.add("admin.user", "must be non-empty and without ':'");
        }
        bad.into_vec()
    }
}
