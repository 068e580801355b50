//! `switchhook deliver`: a worker that takes lifecycle moments from the stream and delivers
//! the webhooks they make, with the same rules as `run` (its own outbox, retries, schedules,
//! dead letters, order per call).
//!
//! Work is shared by partition. A call's moments are all in one partition, and a partition
//! is consumed by one worker at a time: the one holding its lease, a key in a KV bucket
//! (`STREAM_leases`) that expires unless renewed. Each worker takes its fair share of the
//! partitions (or `max_partitions`) among the live workers, which announce themselves in
//! the same bucket; when one dies, its leases expire and the others take its partitions
//! over. A moment is acknowledged once its requests are committed to the worker's outbox,
//! so a worker killed before that gets it again, and the outbox drops what it already has
//! (the webhook-id is its key).

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, AckKind};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{NatsConfig, WorkerConfig};
use super::jetstream::JetStream;
use crate::hooks::moment_data::MomentData;
use crate::hooks::{DeliveryQueue, WebhookSet};

/// The first pause after NATS failed; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The most moments taken from a partition at once (all handled before the next batch, so
/// a partition handed over leaves nothing taken and not acknowledged behind).
const BATCH: usize = 64;

/// A worker.
pub struct Worker {
    nats: NatsConfig,
    cfg: WorkerConfig,
    name: String,
    hooks: Arc<WebhookSet>,
    queue: Arc<DeliveryQueue>,
}

/// A partition this worker holds: its lease's revision and its consumer.
struct Held {
    revision: u64,
    stop: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

impl Worker {
    /// A worker rendering with `hooks` and delivering through `queue`.
    pub fn new(
        nats: NatsConfig,
        cfg: WorkerConfig,
        hooks: Arc<WebhookSet>,
        queue: Arc<DeliveryQueue>,
    ) -> Worker {
        let name = cfg.name();
        Worker {
            nats,
            cfg,
            name,
            hooks,
            queue,
        }
    }

    /// Works until `stop`; reconnects with a growing pause while NATS fails.
    pub async fn run(&self, stop: CancellationToken) {
        tracing::info!(worker = %self.name, partitions = self.nats.partitions, "delivering webhooks from NATS");
        let mut pause = RETRY_MIN;
        loop {
            match self.session(&stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(worker = %self.name, error = %e, "NATS: connecting again after a pause");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// One connection: leases and consumers until stopped (Ok) or NATS fails (Err). The
    /// partitions held are handed back either way.
    async fn session(&self, stop: &CancellationToken) -> Result<(), String> {
        let js = JetStream(self.nats.clone())
            .context()
            .await
            .map_err(|e| e.to_string())?;
        let leases = self.leases(&js).await?;
        let stream = js
            .get_stream(&self.nats.stream)
            .await
            .map_err(|e| e.to_string())?;
        let mut held: BTreeMap<u32, Held> = BTreeMap::new();
        let result = loop {
            if let Err(e) = self.tick(&leases, &stream, &mut held).await {
                break Err(e);
            }
            if let Some(p) = held
                .iter()
                .find(|(_, h)| h.task.is_finished())
                .map(|(p, _)| *p)
            {
                let ended = held.remove(&p).map(|h| h.task);
                let why = match ended {
                    Some(task) => match task.await {
                        Ok(Err(e)) => e,
                        _ => "its consumer ended".into(),
                    },
                    None => "its consumer ended".into(),
                };
                break Err(format!("partition {p}: {why}"));
            }
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = tokio::time::sleep(self.cfg.lease / 3) => {}
            }
        };
        if result.is_ok() {
            // Stopping: the partitions go to the others at once.
            for (p, h) in std::mem::take(&mut held) {
                self.release(&leases, p, h).await;
            }
            let _ = leases.delete(self.worker_key()).await;
        } else {
            // NATS failed: the leases cannot be given back; they expire.
            for (_, h) in std::mem::take(&mut held) {
                h.stop.cancel();
                let _ = h.task.await;
            }
        }
        result
    }

    /// The lease bucket, made when missing. Its stream is made here, as the key-value
    /// convention lays it out, rather than by the client's bucket call, which asks for
    /// account details that servers before 2.10 answer in a form it cannot read.
    async fn leases(&self, js: &jetstream::Context) -> Result<kv::Store, String> {
        let bucket = format!("{}_leases", self.nats.stream);
        js.get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: self.cfg.lease,
            num_replicas: self.nats.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("lease bucket {bucket}: {e}"))?;
        js.get_key_value(&bucket)
            .await
            .map_err(|e| format!("lease bucket {bucket}: {e}"))
    }

    fn worker_key(&self) -> String {
        format!("w.{}", self.name)
    }

    /// Announces the worker, renews its leases, and sheds or takes partitions to hold its
    /// share.
    async fn tick(
        &self,
        leases: &kv::Store,
        stream: &jetstream::stream::Stream,
        held: &mut BTreeMap<u32, Held>,
    ) -> Result<(), String> {
        let name = bytes::Bytes::from(self.name.clone());
        leases
            .put(self.worker_key(), name.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut live = 0u32;
        let mut keys = leases.keys().await.map_err(|e| e.to_string())?;
        while let Some(k) = keys.next().await {
            if k.map_err(|e| e.to_string())?.starts_with("w.") {
                live += 1;
            }
        }
        let all = self.nats.partitions;
        let share = match self.cfg.max_partitions {
            0 => all.div_ceil(live.max(1)),
            n => n.min(all),
        } as usize;
        let mut lost = Vec::new();
        for (p, h) in held.iter_mut() {
            match leases.update(lease_key(*p), name.clone(), h.revision).await {
                Ok(rev) => h.revision = rev,
                Err(e) => lost.push((*p, e.to_string())),
            }
        }
        for (p, why) in lost {
            tracing::warn!(worker = %self.name, partition = p, error = %why, "lost the partition's lease; another worker has it");
            if let Some(h) = held.remove(&p) {
                h.stop.cancel();
                let _ = h.task.await;
            }
        }
        while held.len() > share {
            let Some((p, h)) = held.pop_last() else { break };
            tracing::info!(worker = %self.name, partition = p, live, "handing a partition over");
            self.release(leases, p, h).await;
        }
        // Each worker starts looking at a place of its own, so they do not all race for
        // the same partitions.
        let mut h = fnv::FnvHasher::default();
        h.write(self.name.as_bytes());
        let start = (h.finish() % u64::from(all)) as u32;
        for i in 0..all {
            if held.len() >= share {
                break;
            }
            let p = (start + i) % all;
            if held.contains_key(&p) {
                continue;
            }
            let taken = match leases.create(lease_key(p), name.clone()).await {
                Ok(revision) => Some(revision),
                // Still ours from before a reconnect or a restart under the same name.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match leases.entry(lease_key(p)).await {
                        Ok(Some(entry)) if entry.value == name => leases
                            .update(lease_key(p), name.clone(), entry.revision)
                            .await
                            .ok(),
                        _ => None,
                    }
                }
                Err(e) => return Err(e.to_string()),
            };
            let Some(revision) = taken else { continue };
            tracing::info!(worker = %self.name, partition = p, "took a partition");
            let stop = CancellationToken::new();
            let task = tokio::spawn(consume(
                stream.clone(),
                self.nats.subject_prefix.clone(),
                self.cfg.ack_wait,
                p,
                Arc::clone(&self.hooks),
                Arc::clone(&self.queue),
                stop.clone(),
            ));
            held.insert(
                p,
                Held {
                    revision,
                    stop,
                    task,
                },
            );
        }
        Ok(())
    }

    /// Stops consuming partition `p` (after the batch in hand) and gives its lease back.
    async fn release(&self, leases: &kv::Store, p: u32, h: Held) {
        h.stop.cancel();
        let _ = h.task.await;
        let _ = leases.delete(lease_key(p)).await;
    }
}

fn lease_key(p: u32) -> String {
    format!("p.{p}")
}

/// Consumes partition `p`'s moments in order, each acknowledged once its requests are
/// committed to the outbox, until `stop` (between batches).
async fn consume(
    stream: jetstream::stream::Stream,
    prefix: String,
    ack_wait: Duration,
    p: u32,
    hooks: Arc<WebhookSet>,
    queue: Arc<DeliveryQueue>,
    stop: CancellationToken,
) -> Result<(), String> {
    let name = format!("deliver-p{p}");
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: format!("{prefix}.moment.*.*.{p}.>"),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: BATCH as i64 * 4,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    while !stop.is_cancelled() {
        let mut batch = consumer
            .batch()
            .max_messages(BATCH)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| e.to_string())?;
            deliver(&m, &hooks, &queue).await?;
        }
    }
    Ok(())
}

/// One moment: its requests committed to the outbox, then acknowledged.
async fn deliver(
    m: &jetstream::Message,
    hooks: &WebhookSet,
    queue: &DeliveryQueue,
) -> Result<(), String> {
    let data = serde_json::from_slice::<serde_json::Value>(&m.payload)
        .ok()
        .and_then(|mut v| serde_json::from_value::<MomentData>(v["moment"].take()).ok());
    let ack = match data {
        Some(data) => {
            if queue
                .submit_committed(hooks.plan_data(&Arc::new(data)))
                .await
            {
                AckKind::Ack
            } else {
                // Not committed (the outbox's disk is failing): offered again later.
                AckKind::Nak(Some(Duration::from_secs(5)))
            }
        }
        None => {
            tracing::error!(subject = %m.subject, "NATS: not a lifecycle moment; dropped");
            AckKind::Term
        }
    };
    m.ack_with(ack).await.map_err(|e| e.to_string())
}
