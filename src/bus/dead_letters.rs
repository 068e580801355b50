//! Dead letters announced on the bus: each delivery a worker gives up on is published to
//! `PREFIX.dead.TENANT.WEBHOOK`, so a fleet's dead letters are seen in one place whichever
//! worker holds them.
//!
//! The worker's outbox remains where a dead letter lives (`deliveries retry` works on it);
//! the announcement follows it. How far announcing has got is kept in the outbox and moved
//! on only once the stream has acknowledged, so a worker killed in between announces again
//! and the stream keeps one copy (the id is the delivery's and its attempts').

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;

use super::config::NatsConfig;
use super::message::dead_letter;
use super::webhook_state::with_admin;

/// Dead letters read and published at once.
const BATCH: usize = 256;

/// Publishes the dead letters not yet announced. Err: NATS failed (tried again at the next
/// call); an outbox that cannot be read is logged and tried again then too.
pub(crate) async fn announce(
    js: &jetstream::Context,
    nats: &NatsConfig,
    outbox: &Path,
    worker: &str,
) -> Result<usize, String> {
    let mut total = 0;
    loop {
        let read = with_admin(outbox, |a| {
            let from = a.dead_announced()?;
            a.dead_after(from, BATCH)
        })
        .await;
        let dead = match read {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read dead letters from the outbox; announced later");
                return Ok(total);
            }
        };
        let Some(last) = dead.last().map(|d| d.cursor) else {
            return Ok(total);
        };
        let mut acks = Vec::with_capacity(dead.len());
        for d in &dead {
            let (subject, id, body) = dead_letter(nats, d, worker);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            headers.insert("Content-Type", "application/json");
            let payload = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
            let ack = js
                .publish_with_headers(subject.clone(), headers, payload.into())
                .await
                .map_err(|e| format!("publish {subject}: {e}"))?;
            acks.push((subject, ack));
        }
        for (subject, ack) in acks {
            match tokio::time::timeout(nats.timeout + Duration::from_millis(100), ack).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("publish {subject}: {e}")),
                Err(_) => return Err(format!("publish {subject}: no acknowledgement in time")),
            }
        }
        total += dead.len();
        if let Err(e) = with_admin(outbox, move |a| a.set_dead_announced(last)).await {
            // Announced again next time; the stream keeps one copy.
            tracing::warn!(error = %e, "cannot note the dead letters announced");
            return Ok(total);
        }
        if dead.len() < BATCH {
            return Ok(total);
        }
    }
}
