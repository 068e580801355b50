//! The admin endpoint: `/metrics` (Prometheus text, prometheus-client), `/healthz` (the
//! process is alive) and `/readyz` (the event socket is connected and subscribed, the outbox
//! answers), and a live page of the calls in progress, the last calls and the latest
//! deliveries (`/`). Off unless `[admin] listen` is set; keep it on loopback or behind a
//! firewall.

pub mod live;
pub mod metrics;
pub mod server;

use serde::{Deserialize, Serialize};

pub use live::LiveView;
pub use metrics::{PipelineStats, Sources};
pub use server::AdminServer;

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `ip:port` of the admin endpoint; empty (the default): off.
    pub listen: String,
}
