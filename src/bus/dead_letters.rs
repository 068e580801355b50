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
use futures::StreamExt;

use super::message::{dead_letter, token, DeadLetterNotice};
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
            let (subject, body) = dead_letter(nats, d, worker);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, body.id.as_str());
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

/// Which announced dead letters to read back.
#[derive(Debug, Default, Clone)]
pub struct DeadFilter {
    /// Only this tenant's (`""`: calls of no tenant).
    pub tenant: Option<String>,
    /// Only this webhook's.
    pub webhook: Option<String>,
    /// Only those announced since this instant (unix ms).
    pub since_ms: Option<i64>,
    /// The newest this many (0: all).
    pub limit: usize,
}

/// The dead letters the fleet announced, as published, oldest first: the newest
/// `filter.limit` of those the stream still holds. Read through an ephemeral consumer that
/// acknowledges nothing, so reading changes nothing for the workers.
pub(crate) async fn recent(
    js: &jetstream::Context,
    nats: &NatsConfig,
    filter: &DeadFilter,
) -> Result<Vec<DeadLetterNotice>, String> {
    use jetstream::consumer;
    let Some(stream) = super::jetstream::existing_stream(js, &nats.stream).await? else {
        return Ok(Vec::new());
    };
    let subject = format!(
        "{}.dead.{}.{}",
        nats.subject_prefix,
        filter.tenant.as_deref().map_or("*".into(), token),
        filter.webhook.as_deref().map_or("*".into(), token),
    );
    let deliver_policy = match filter.since_ms {
        Some(ms) => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .map_err(|e| format!("--since: {e}"))?,
        },
        None => consumer::DeliverPolicy::All,
    };
    let fail = |e: &dyn std::fmt::Display| format!("reading {subject}: {e}");
    let reader = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.clone(),
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| fail(&e))?;
    let mut out = std::collections::VecDeque::new();
    let mut left = reader.cached_info().num_pending;
    while left > 0 {
        let mut batch = reader
            .fetch()
            .max_messages(BATCH)
            .messages()
            .await
            .map_err(|e| fail(&e))?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| fail(&e))?;
            got += 1;
            left = m.info().map_err(|e| fail(&e))?.pending;
            match serde_json::from_slice(&m.payload) {
                Ok(v) => out.push_back(v),
                Err(e) => {
                    tracing::warn!(subject = %m.subject, error = %e, "an announcement that is not a dead letter; left out")
                }
            }
            if filter.limit > 0 && out.len() > filter.limit {
                out.pop_front();
            }
        }
        if got == 0 {
            break;
        }
    }
    Ok(out.into())
}
