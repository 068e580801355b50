//! What a fleet's workers share, read back for a person (`switchhook deliveries fleet`):
//! the webhooks disabled or failing on every worker and the dead letters they announced,
//! whichever worker's outbox holds them.

use super::config::NatsConfig;
use super::dead_letters::{recent, DeadFilter};
use super::jetstream::JetStream;
use super::message::DeadLetterNotice;
use super::webhook_state::{shared, DisabledWebhook, FailingWebhook};

/// The fleet's shared state as of now.
#[derive(Debug)]
pub struct FleetView {
    /// Webhooks disabled on every worker.
    pub disabled: Vec<DisabledWebhook>,
    /// Webhooks failing, not yet disabled.
    pub failing: Vec<FailingWebhook>,
    /// Dead letters as announced, oldest first.
    pub dead: Vec<DeadLetterNotice>,
}

impl FleetView {
    /// Reads it from NATS (the filter's webhook applies to all three parts). Changes
    /// nothing: the stream and the buckets are read, never made.
    pub async fn read(nats: &NatsConfig, filter: &DeadFilter) -> Result<FleetView, String> {
        let js = JetStream(nats.clone())
            .connect_only()
            .await
            .map_err(|e| e.to_string())?;
        let (mut disabled, mut failing) = shared(&js, nats).await?;
        if let Some(w) = &filter.webhook {
            disabled.retain(|d| &d.webhook == w);
            failing.retain(|f| &f.webhook == w);
        }
        let dead = recent(&js, nats, filter).await?;
        Ok(FleetView {
            disabled,
            failing,
            dead,
        })
    }
}
